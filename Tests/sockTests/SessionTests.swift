import Foundation
import Testing

/// Python peers for the session tests. Each prints `port N` first (a listener) and, at the
/// end, what it saw; every socket wait in them has a limit.
enum Peer {
    /// What every peer starts with: `read_to_end`, `chunk` bytes at a time with `pause` between.
    /// A slow reader keeps its receive buffer to `chunk` bytes, so that what it has not read
    /// yet waits in the sender's queue, where the sender can see it go (as SIOCOUTQ), and not
    /// in a large receive buffer, acknowledged long before it is read.
    static let prelude = """
        import socket, struct, sys, time
        def read_to_end(c, chunk, pause):
            if pause: c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, chunk)
            data = b""
            while True:
                d = c.recv(chunk)
                if not d: return data
                data += d
                if pause: time.sleep(pause)

        """

    /// Listens on a free loopback port, prints it, accepts one connection as `c`.
    static let acceptOne = prelude + """
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
        print("port", s.getsockname()[1])
        s.settimeout(10); c, _ = s.accept(); c.settimeout(10)

        """

    /// Accepts one connection; `half-close` first shuts down its write side (as `ncat -l
    /// </dev/null` does); reads to end of stream, `chunk` bytes at a time with `pause` seconds
    /// between reads; prints `got BYTES LINES`.
    static let reader = acceptOne + """
        halfClose, chunk, pause = sys.argv[1] == "half-close", int(sys.argv[2]), float(sys.argv[3])
        if halfClose: c.shutdown(socket.SHUT_WR)
        data = read_to_end(c, chunk, pause)
        print("got", len(data), data.count(b"\\n")); c.close()
        """

    /// Connects to port `argv[1]`, sends `argv[2]` (may be empty), shuts down its write side
    /// (`half-close`; `keep-open`: only after end of stream), reads to end of stream `chunk`
    /// bytes at a time with `pause` between reads; prints `got BYTES LINES` and `closed`.
    static let client = prelude + """
        port, message, halfClose = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3] == "half-close"
        chunk, pause = int(sys.argv[4]), float(sys.argv[5])
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(message)
        if halfClose: c.shutdown(socket.SHUT_WR)
        data = read_to_end(c, chunk, pause)
        print("got", len(data), data.count(b"\\n")); print("closed")
        """

    /// Accepts one connection and does nothing with it for 10 s (or until the peer closes).
    static let silent = acceptOne + """
        try:
            while c.recv(100): pass
        except socket.timeout: pass
        print("closed")
        """

    /// A server that ends the conversation when the client half-closes, as `ncat -l -c
    /// 'read x; sleep .5; echo reply'` does: reads a line, then for 0.5 s watches for end of
    /// stream; if it comes, closes without replying.
    static let hangsUpOnHalfClose = acceptOne + """
        line = b""
        while not line.endswith(b"\\n"):
            d = c.recv(100)
            if not d: break
            line += d
        c.settimeout(0.5)
        try:
            if c.recv(100) == b"": print("saw end of stream"); c.close(); raise SystemExit
        except socket.timeout: pass
        c.sendall(b"reply\\n"); print("replied"); c.close()
        """

    /// Sends a banner and keeps the connection open for 10 s, also after the client's half-close.
    static let banner = acceptOne + """
        c.sendall(b"banner\\n")
        try:
            while c.recv(100): pass
            time.sleep(10)
        except socket.timeout: pass
        print("closed")
        """

    /// Reads 1 MiB, then resets the connection (SO_LINGER 0).
    static let resetter = acceptOne + """
        n = 0
        while n < 1 << 20:
            d = c.recv(65536)
            if not d: break
            n += len(d)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); c.close()
        print("reset after", n)
        """

    /// Starts `script` with `arguments` and returns it with the port it listens on.
    static func listening(_ script: String, _ arguments: [String] = []) throws -> (ChildProcess, String) {
        let peer = try ChildProcess(python: script, arguments)
        let line = try peer.waitForOutputLine(startingWith: "port ")
        return (peer, "127.0.0.1:\(line.dropFirst("port ".count))")
    }
}

/// A file of `count` zero bytes (sparse: nothing is written), removed by the caller.
func zeroFile(_ count: Int) throws -> String {
    let path = NSTemporaryDirectory() + "sock-\(getpid())-\(count).zeros"
    guard FileManager.default.createFile(atPath: path, contents: nil),
          let handle = FileHandle(forWritingAtPath: path) else { throw CLIFailure("cannot create \(path)") }
    try handle.truncate(atOffset: UInt64(count))
    try handle.close()
    return path
}

@Suite("sock sessions end as netcat's do and never lose data silently", .serialized)
struct SessionTests {
    @Test("reproduction 1: an upload to a peer that half-closed first arrives whole, line by line and in bulk")
    func uploadAfterPeerHalfClose() throws {
        // Lines, 0.2 s apart, after the peer has shut down its side (the old connect gave up 0.5 s later).
        let (peer, address) = try Peer.listening(Peer.reader, ["half-close", "65536", "0"])
        defer { peer.kill() }
        let client = try ChildProcess(["connect", address])
        defer { client.kill() }
        for i in 1...10 {
            client.send("line\(i)\n", thenClose: false)
            usleep(200_000)
        }
        try? client.stdin.fileHandleForWriting.close()
        let (status, _, err) = try client.finish(within: .seconds(10))
        #expect(status == 0, "\(err)")
        _ = try peer.finish(within: .seconds(5))
        #expect(peer.out.contains("got 61 10\n"), "\(peer.out)")  // "line1\n"..."line10\n": 61 bytes

        // 16 MiB to a reader that takes more than a second over it.
        let size = 16 << 20
        let file = try zeroFile(size)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let (slow, slowAddress) = try Peer.listening(Peer.reader, ["half-close", "65536", "0.004"])
        defer { slow.kill() }
        let upload = try ChildProcess(["connect", slowAddress], stdinFile: file)
        defer { upload.kill() }
        let (uploadStatus, _, uploadErr) = try upload.finish(within: .seconds(20))
        #expect(uploadStatus == 0, "\(uploadErr)")
        _ = try slow.finish(within: .seconds(5))
        #expect(slow.out.contains("got \(size) 0\n"), "\(slow.out)")
    }

    @Test("reproduction 2: listen ends once the peer has finished, though its stdin is still open")
    func listenEndsWhenPeerFinishes() throws {
        let listener = try ChildProcess(["listen", "0", "--timeout", "1"])  // stdin: a pipe never closed
        defer { listener.kill() }
        let line = try listener.waitForLine(startingWith: "listening on ")
        let port = String(line.split(separator: ":").last!)
        let client = try ChildProcess(python: Peer.client, [port, "hi\n", "half-close", "65536", "0"])
        defer { client.kill() }
        let (status, out, err) = try listener.finish(within: .seconds(5))
        #expect(status == 0, "\(err)")
        #expect(out == "hi\n")
        _ = try client.finish(within: .seconds(5))
        #expect(client.out.contains("closed"), "the peer did not see the end: \(client.out)")
    }

    @Test("reproduction 3: a busy transfer outlives the idle timeout", arguments: ["connect", "listen"])
    func busyTransferIsNotIdle(_ command: String) throws {
        let size = 8 << 20
        let file = try zeroFile(size)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let start = ContinuousClock.now
        let sock: ChildProcess
        let peer: ChildProcess
        if command == "connect" {
            // The peer reads at most 64 KiB every 10 ms and never replies: at least 1.28 s for 8 MiB.
            let (reader, address) = try Peer.listening(Peer.reader, ["keep-open", "65536", "0.01"])
            peer = reader
            sock = try ChildProcess(["connect", address, "--timeout", "1"], stdinFile: file)
        } else {
            // The client keeps its side open until it has read everything, slowly.
            sock = try ChildProcess(["listen", "0", "--timeout", "1"], stdinFile: file)
            let line = try sock.waitForLine(startingWith: "listening on ")
            peer = try ChildProcess(python: Peer.client, [String(line.split(separator: ":").last!), "", "keep-open", "65536", "0.01"])
        }
        defer { sock.kill(); peer.kill() }
        let (status, _, err) = try sock.finish(within: .seconds(20))
        let elapsed = ContinuousClock.now - start
        #expect(status == 0, "\(err)")
        _ = try peer.finish(within: .seconds(5))
        #expect(peer.out.contains("got \(size) 0\n"), "\(peer.out)")
        #expect(elapsed > .seconds(1), "precondition: the transfer took \(elapsed), not longer than the idle timeout")
    }

    @Test("the idle timeout ends a session where nothing moves either way: exit 124, after it, never before",
          arguments: ["connect", "listen"])
    func idleTimeout(_ command: String) throws {
        let sock: ChildProcess
        let peer: ChildProcess
        let start: ContinuousClock.Instant
        if command == "connect" {
            let (silent, address) = try Peer.listening(Peer.silent)
            peer = silent
            start = .now
            sock = try ChildProcess(["connect", address, "--idle-timeout", "300ms"])  // stdin stays open
        } else {
            sock = try ChildProcess(["listen", "0", "--timeout", "300ms"])
            let line = try sock.waitForLine(startingWith: "listening on ")
            start = .now
            // A client that sends nothing and never closes its side (it reads for 10 s).
            peer = try ChildProcess(python: """
                import socket, sys
                c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
                try:
                    while c.recv(100): pass
                except socket.timeout: pass
                print("closed")
                """, [String(line.split(separator: ":").last!)])
        }
        defer { sock.kill(); peer.kill() }
        let (status, _, err) = try sock.finish(within: .seconds(10))
        let elapsed = ContinuousClock.now - start
        #expect(status == 124, "\(err)")
        #expect(err.contains("idle for 300ms: nothing moved either way (sent 0 bytes, received 0 bytes)"), "\(err)")
        #expect(elapsed >= .milliseconds(300))
        #expect(elapsed < .seconds(5))
    }

    @Test("reproduction 5: --no-shutdown keeps the write side open for a server that takes a half-close for a hang-up")
    func noShutdown() throws {
        // The default half-close: this server sees it and hangs up without a reply.
        let (first, address) = try Peer.listening(Peer.hangsUpOnHalfClose)
        defer { first.kill() }
        let plain = try ChildProcess(["connect", address])
        defer { plain.kill() }
        plain.send("hello\n")
        let (plainStatus, plainOut, _) = try plain.finish(within: .seconds(10))
        #expect(plainStatus == 0 && plainOut.isEmpty)
        _ = try first.finish(within: .seconds(5))
        #expect(first.out.contains("saw end of stream"), "\(first.out)")

        let (second, address2) = try Peer.listening(Peer.hangsUpOnHalfClose)
        defer { second.kill() }
        let kept = try ChildProcess(["connect", address2, "--no-shutdown"])
        defer { kept.kill() }
        kept.send("hello\n")
        let (status, out, err) = try kept.finish(within: .seconds(10))
        #expect(status == 0, "\(err)")
        #expect(out == "reply\n")
        _ = try second.finish(within: .seconds(5))
        #expect(second.out.contains("replied"), "\(second.out)")
    }

    @Test("--quit-after D ends D after the end of stdin though the peer has not finished; 0 at once",
          arguments: ["300ms", "0"])
    func quitAfter(_ delay: String) throws {
        let (peer, address) = try Peer.listening(Peer.banner)
        defer { peer.kill() }
        let client = try ChildProcess(["connect", address, "--quit-after", delay])
        defer { client.kill() }
        _ = try client.waitFor(.seconds(10), "the banner") { client.out.contains("banner\n") ? true : nil }
        let start = ContinuousClock.now
        try? client.stdin.fileHandleForWriting.close()
        let (status, out, err) = try client.finish(within: .seconds(10))
        let elapsed = ContinuousClock.now - start
        #expect(status == 0, "\(err)")
        #expect(out == "banner\n")
        if delay == "300ms" { #expect(elapsed >= .milliseconds(300)) }
        #expect(elapsed < .seconds(5))
    }

    @Test("a closed stdin (<&-) is an empty one: the session runs, nothing is read from a descriptor that took its number")
    func closedStdin() throws {
        let (peer, address) = try Peer.listening(Peer.banner)
        defer { peer.kill() }
        // exec: the PID is sock's.
        let client = try ChildProcess(command: ["/bin/sh", "-c", "exec \"$0\" connect \"$1\" --quit-after 200ms <&-", sockPath, address])
        defer { client.kill() }
        let (status, out, err) = try client.finish(within: .seconds(10))
        #expect(status == 0, "\(err)")
        #expect(out == "banner\n")
    }

    @Test("a peer that resets the connection mid-upload: exit 1, and the message says what was not sent")
    func resetMidUpload() throws {
        let file = try zeroFile(64 << 20)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let (peer, address) = try Peer.listening(Peer.resetter)
        defer { peer.kill() }
        let client = try ChildProcess(["connect", address], stdinFile: file)
        defer { client.kill() }
        let (status, _, err) = try client.finish(within: .seconds(10))
        #expect(status == 1, "\(err)")
        #expect(err.contains("Connection reset") || err.contains("Broken pipe"), "\(err)")
        #expect(err.contains("stdin not read to its end"), "\(err)")
    }

    @Test("reproduction 4: listen --keep-open --accept-timeout stops accepting, and a live connection finishes")
    func acceptTimeoutLetsConnectionsFinish() throws {
        let listener = try ChildProcess(["listen", "0", "--keep-open", "--accept-timeout", "300ms"])
        defer { listener.kill() }
        let line = try listener.waitForLine(startingWith: "listening on ")
        // 14 lines 0.45 s apart: the client streams for about 6 s, longer than the 5 s that
        // serve's default grace period gave live connections after the accept timeout.
        let client = try ChildProcess(python: """
            import socket, sys, time
            c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
            for i in range(1, 15):
                c.sendall(b"line%d\\n" % i); time.sleep(0.45)
            c.close(); print("closed")
            """, [String(line.split(separator: ":").last!)])
        defer { client.kill() }
        let (status, out, err) = try listener.finish(within: .seconds(15))
        #expect(status == 124, "\(err)")
        #expect(err.contains("timed out after 300ms"), "\(err)")
        #expect(out == (1...14).map { "line\($0)\n" }.joined(), "\(out)")
        _ = try client.finish(within: .seconds(5))
        #expect(client.out.contains("closed"), "\(client.out)")
    }

    @Test("-v says when the connection is made and ended, with addresses and bytes each way; --quiet says nothing but errors")
    func verboseAndQuiet() throws {
        let (peer, address) = try Peer.listening(Peer.reader, ["keep-open", "65536", "0"])
        defer { peer.kill() }
        let client = try ChildProcess(["connect", address, "-v"])
        defer { client.kill() }
        client.send("hello\n")
        let (status, _, err) = try client.finish(within: .seconds(10))
        #expect(status == 0, "\(err)")
        #expect(err.contains("sock: connected to \(address) from 127.0.0.1:"), "\(err)")
        #expect(err.contains("sock: closed \(address) after "), "\(err)")
        #expect(err.contains("sent 6 bytes (of 6 bytes read), received 0 bytes (0 bytes written); both sides done"), "\(err)")

        let listener = try ChildProcess(["listen", "0", "--quiet"])
        defer { listener.kill() }
        try? listener.stdin.fileHandleForWriting.close()
        // No 'listening on' line to read the port from: find it in /proc/net/tcp by sock's socket.
        let port = try listener.waitFor(.seconds(10), "sock's listening port") { listeningPort(of: listener.pid) }
        let sender = try ChildProcess(python: Peer.client, ["\(port)", "quiet\n", "half-close", "65536", "0"])
        defer { sender.kill() }
        let (quietStatus, out, quietErr) = try listener.finish(within: .seconds(10))
        #expect(quietStatus == 0 && out == "quiet\n")
        #expect(quietErr.isEmpty, "\(quietErr)")
    }
}

/// Tests of connect's source address.
@Suite("sock connect --source")
struct SourceAddressTests {
    @Test("connect --source ADDRESS and --source ADDRESS:PORT: the peer sees that address and port")
    func sourceAddress() throws {
        let peer = try ChildProcess(python: Peer.prelude + """
            s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(2); s.settimeout(10)
            print("port", s.getsockname()[1])
            for _ in range(2):
                c, a = s.accept(); print("from %s:%d" % a); c.close()
            """)
        defer { peer.kill() }
        let address = "127.0.0.1:\(try peer.waitForOutputLine(startingWith: "port ").dropFirst("port ".count))"
        let (first, _) = try LoopbackPorts.refusing()  // a free port, released for sock to bind
        let port = try first.localAddress.port!
        first.close()
        for source in ["127.0.0.2", "127.0.0.3:\(port)"] {
            let client = try ChildProcess(["connect", address, "--source", source])
            defer { client.kill() }
            try? client.stdin.fileHandleForWriting.close()
            let (status, _, err) = try client.finish(within: .seconds(10))
            #expect(status == 0, "\(source): \(err)")
        }
        _ = try peer.finish(within: .seconds(5))
        #expect(peer.out.contains("from 127.0.0.2:"), "\(peer.out)")
        #expect(peer.out.contains("from 127.0.0.3:\(port)\n"), "\(peer.out)")
    }
}

/// The port of the TCP socket listening on 127.0.0.1 that process `pid` holds, if any.
private func listeningPort(of pid: pid_t) -> Int? {
    guard let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return nil }
    let inodes = Set(fds.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)") }
        .filter { $0.hasPrefix("socket:[") }.map { String($0.dropFirst(8).dropLast()) })
    guard let table = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return nil }
    for line in table.split(separator: "\n").dropFirst() {
        let f = line.split(separator: " ")
        // local_address "0100007F:PORT", st "0A" (LISTEN), inode is field 9.
        if f.count > 9, f[3] == "0A", f[1].hasPrefix("0100007F:"), inodes.contains(String(f[9])) {
            return Int(f[1].dropFirst(9), radix: 16)
        }
    }
    return nil
}
