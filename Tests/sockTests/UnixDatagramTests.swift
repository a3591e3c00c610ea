import Foundation
import Sockets
import Testing

/// `sock connect --udp PATH` and `sock listen --udp PATH` against Python's
/// `socket.AF_UNIX, SOCK_DGRAM`. Each test works in a fresh directory with a short path
/// (sun_path holds 108 bytes), gives it to sock as $TMPDIR (where a client binds its own
/// socket), and checks that sock leaves no socket file there.
@Suite("sock --udp on a Unix datagram path", .serialized)
struct UnixDatagramTests {
    /// A fresh, empty directory such as /tmp/sk.Ab12Cd.
    private func shortDirectory() throws -> String {
        var template = Array("/tmp/sk.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw CLIFailure("mkdtemp failed") }
        return String(cString: made)
    }

    private func contents(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
    }

    /// `sock` with $TMPDIR set to `directory` (through env, which execs: the PID is sock's).
    private func sock(_ arguments: [String], in directory: String) throws -> ChildProcess {
        try ChildProcess(arguments, prefix: ["/usr/bin/env", "TMPDIR=\(directory)"])
    }

    @Test("connect --udp PATH: binds a temporary path the peer can answer, relays both ways, removes the path")
    func connectUnixDatagram() throws {
        let dir = try shortDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let peer = try ChildProcess(python: """
            import os, socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.settimeout(10)
            print("ready")
            d, a = s.recvfrom(65536); print("from", a, os.path.exists(a))
            s.sendto(d.upper(), a); s.close(); os.unlink(sys.argv[1])
            """, [dir + "/peer"])
        defer { peer.kill() }
        _ = try peer.waitForOutputLine(startingWith: "ready")
        let client = try sock(["connect", "--udp", dir + "/peer", "--quit-after", "500ms", "-v"], in: dir)
        defer { client.kill() }
        client.send("ping\n")
        let (status, out, err) = try client.finish(within: .seconds(10))
        #expect(status == 0, "\(err)")
        #expect(out == "PING\n")
        #expect(err.contains("sock: connected to \(dir)/peer from \(dir)/sock-"), "\(err)")
        #expect(err.contains("sent 5 bytes (of 5 bytes read), received 5 bytes"), "\(err)")
        _ = try peer.finish(within: .seconds(5))
        #expect(peer.out.contains("from \(dir)/sock-"), "\(peer.out)")
        #expect(peer.out.contains(".sock True"), "the client's path was not there while it ran: \(peer.out)")
        #expect(contents(dir) == [], "left behind: \(contents(dir))")
    }

    @Test("listen --udp PATH: replies go to the last sender; the file is removed at the end")
    func listenUnixDatagram() throws {
        let dir = try shortDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/l"
        let listener = try sock(["listen", "--udp", path, "--quit-after", "500ms"], in: dir)
        defer { listener.kill() }
        _ = try listener.waitForLine(startingWith: "listening on \(path)")
        let peers = try ChildProcess(python: """
            import os, socket, sys
            d = sys.argv[1]
            def named(name):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(d + "/" + name); s.settimeout(10); return s
            a, b = named("a"), named("b")
            a.sendto(b"from a\\n", d + "/l"); print("a got", a.recv(100))
            b.sendto(b"from b\\n", d + "/l")
            print("b got", b.recv(100))
            for s, name in ((a, "a"), (b, "b")): s.close(); os.unlink(d + "/" + name)
            """, [dir])
        defer { peers.kill() }
        listener.send("one\n", thenClose: false)  // goes to a, the only sender yet
        _ = try peers.waitForOutputLine(startingWith: "a got")
        _ = try listener.waitForOutputLine(startingWith: "from b")  // b is now the last sender
        listener.send("two\n")
        let (status, out, err) = try listener.finish(within: .seconds(10))
        #expect(status == 0, "\(err)")
        #expect(out == "from a\nfrom b\n")
        #expect(err.contains("datagram from \(dir)/a\n"), "\(err)")
        #expect(err.contains("datagram from \(dir)/b\n"), "\(err)")
        _ = try peers.finish(within: .seconds(5))
        #expect(peers.out.contains("a got b'one\\n'"), "\(peers.out)")
        #expect(peers.out.contains("b got b'two\\n'"), "\(peers.out)")
        #expect(contents(dir) == [], "left behind: \(contents(dir))")
    }

    @Test("listen --udp PATH replaces a file nobody is bound to; --accept-timeout exits 124 and removes its own")
    func staleDatagramFile() throws {
        let dir = try shortDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/stale"
        let dead = try ChildProcess(python: """
            import socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.close()
            """, [path])
        defer { dead.kill() }
        _ = try dead.finish(within: .seconds(5))
        try #require(contents(dir) == ["stale"], "precondition: the stale file is there")
        let (status, _, err) = try sock(["listen", "--udp", path, "--accept-timeout", "300ms"], in: dir).finish(within: .seconds(10))
        #expect(status == 124, "\(err)")
        #expect(err.contains("listening on \(path)"), "\(err)")
        #expect(contents(dir) == [], "left behind: \(contents(dir))")
    }

    @Test("connect --udp: SIGINT, SIGTERM and SIGHUP remove the client's path; the exit status says which signal",
          arguments: [SIGINT, SIGTERM, SIGHUP])
    func signalRemovesClientPath(_ number: Int32) throws {
        let dir = try shortDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let peer = try ChildProcess(python: """
            import socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.settimeout(10)
            print("ready"); d, a = s.recvfrom(100); print("from", a); s.recv(100)  # until killed
            """, [dir + "/peer"])
        defer { peer.kill() }
        _ = try peer.waitForOutputLine(startingWith: "ready")
        let client = try sock(["connect", "--udp", dir + "/peer"], in: dir)
        defer { client.kill() }
        client.send("hi\n", thenClose: false)  // stdin stays open: only the signal ends it
        let from = try peer.waitForOutputLine(startingWith: "from ")
        #expect(from.hasPrefix("from \(dir)/sock-"), "\(from)")
        kill(client.pid, number)
        let (status, _, err) = try client.finish(within: .seconds(10))
        #expect(status == 128 + number, "\(err)")
        #expect(contents(dir) == ["peer"], "left behind: \(contents(dir))")
    }

    @Test("connect --udp errors: no file (1), a stream socket (64), a path too long (64); nothing left behind")
    func connectErrors() throws {
        let dir = try shortDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stream = try Socket.listen(on: .unix(path: dir + "/stream"))
        defer { stream.close() }
        let cases: [(arguments: [String], status: Int32, message: String)] = [
            (["connect", "--udp", dir + "/missing"], 1, "no socket file at \(dir)/missing"),
            (["connect", "--udp", dir + "/stream"], 64, "\(dir)/stream is a stream socket: connect without --udp"),
            (["connect", "--udp", dir + "/" + String(repeating: "x", count: 120)], 64, "the limit on this OS is 107"),
            (["listen", "--udp", dir + "/" + String(repeating: "x", count: 120)], 64, "the limit on this OS is 107"),
            (["listen", "--udp", dir + "/stream", "--accept-timeout", "300ms"], 1, "a live socket serves it, so it was not removed"),
        ]
        for c in cases {
            let child = try sock(c.arguments, in: dir)
            defer { child.kill() }
            child.send("x\n")
            let (status, _, err) = try child.finish(within: .seconds(10))
            #expect(status == c.status, "\(c.arguments): \(err)")
            #expect(err.contains(c.message), "\(c.arguments): \(err)")
            #expect(contents(dir) == ["stream"], "\(c.arguments) left behind: \(contents(dir))")
        }
    }
}
