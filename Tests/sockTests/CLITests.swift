import Foundation
import Sockets
import Testing

/// Runs `sock` with empty stdin and returns its exit status and output.
private func sock(_ arguments: String..., within limit: Duration = .seconds(20)) throws -> (status: Int32, out: String, err: String) {
    let p = try ChildProcess(arguments)
    try? p.stdin.fileHandleForWriting.close()
    return try p.finish(within: limit)
}

@Suite("the sock command", .serialized)
struct CLITests {
    @Test("sock demo plays every scenario with real outcomes")
    func demo() throws {
        let start = ContinuousClock.now
        let (status, out, _) = try sock("demo", "--timeout", "200ms", within: .seconds(30))
        #expect(status == 0)
        #expect(ContinuousClock.now - start < .seconds(15))
        #expect(out.components(separatedBy: "refused at once (ECONNREFUSED)").count - 1 == 3, "\(out)")
        #expect(out.components(separatedBy: "timed out after 200ms").count - 1 == 3, "\(out)")  // 4, 5, 7a
        #expect(out.contains("still waiting after 600ms: every byte within"), "\(out)")
        #expect(out.contains("not applied (timeout: never): stopped by close()"), "\(out)")
        #expect(out.contains("accepted; echoed \"hello\""), "\(out)")
        for scenario in ["1 ", "2 ", "3a", "3b", "4 ", "5 ", "6 ", "7a", "7b"] {
            #expect(out.contains("\n\(scenario)"), "scenario \(scenario) missing")
        }
    }

    @Test("connect to a port with nothing listening: exit 1 at once, the message names ECONNREFUSED")
    func refused() throws {
        let (holder, address) = try LoopbackPorts.refusing()
        let start = ContinuousClock.now
        let (status, _, err) = try sock("connect", "\(address)", "--timeout", "20s")
        #expect(status == 1)
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(err.contains("connect to \(address) failed: Connection refused (ECONNREFUSED)"), "\(err)")
        _ = holder
    }

    @Test("connect to a full accept queue: exit 124 after the timeout")
    func connectTimesOut() throws {
        let (server, fillers, address) = try LoopbackPorts.silent()
        let start = ContinuousClock.now
        let (status, _, err) = try sock("connect", "\(address)", "--timeout", "300ms")
        let elapsed = ContinuousClock.now - start
        #expect(status == 124)
        #expect(elapsed >= .milliseconds(300))
        #expect(err.contains("connect to \(address) timed out after 300ms"), "\(err)")
        _ = (server, fillers)
    }

    @Test("listen with an accept timeout and nobody coming: exit 124, the real port printed")
    func listenAcceptTimeout() throws {
        let (status, _, err) = try sock("listen", "0", "--accept-timeout", "200ms")
        #expect(status == 124)
        #expect(err.contains("listening on 127.0.0.1:"), "\(err)")
        #expect(!err.contains("listening on 127.0.0.1:0\n"), "printed port 0, not the real one: \(err)")
        #expect(err.contains("timed out after 200ms"), "\(err)")
    }

    @Test("connect --timeout to a silent peer: the idle timeout, exit 124 after it")
    func silentPeer() throws {
        let server = try Socket(.ipv4)
        try server.bind(to: .ipv4(.loopback, port: 0))
        try server.listen()
        let address = try server.localAddress
        let p = try ChildProcess(["connect", "\(address)", "--timeout", "300ms"])  // stdin stays open
        let (connection, _) = try server.accept(deadline: .now + .seconds(10))
        let (status, _, err) = try p.finish()
        #expect(status == 124)
        #expect(err.contains("idle for 300ms: nothing moved either way"), "\(err)")
        _ = connection
    }

    @Test("bad input exits 64 with a message naming what was wrong", arguments: [
        (["connect", "127.0.0.1:70000"], "out of range"),
        (["connect", "127.0.0.1"], "missing ':PORT'"),
        (["connect", "::1:80"], "brackets"),
        (["connect", "127.0.0.1:80", "--timeout", "abc"], "not a duration"),
        (["connect", "127.0.0.1:80", "--timeout=-1"], "not a duration"),
        (["connect", "127.0.0.1:80", "--timeout", "0"], "must be positive"),
        (["listen", "0", "--accept-timeout", "1e999"], "not a duration"),
        (["listen", "99999"], "out of range"),
        (["connect", "127.0.0.1:80", "--idle-timeout", "0"], "must be positive"),
        (["connect", "127.0.0.1:80", "--connect-timeout", "later"], "not a duration"),
        (["connect", "127.0.0.1:80", "--quit-after=-1"], "not a duration"),
        (["listen", "0", "-q", "1x"], "not a duration"),
        (["connect", "127.0.0.1:80", "-v", "--quiet"], "cannot be used together"),
        (["listen", "0", "--udp", "--keep-open"], "not with --udp"),
        (["connect", "/tmp/x.sock", "--udp", "--source", "127.0.0.1"], "a Unix datagram client binds a temporary path of its own"),
        (["connect", "127.0.0.1:80", "--source", "nowhere"], "--source: missing ':PORT'"),
        (["connect", "127.0.0.1:80", "--source", "::1"], "has no IPv6 address to reach from [::1]:0"),
        (["wait", "127.0.0.1"], "missing ':PORT'"),
        (["wait"], "Missing expected argument"),
        (["wait", "127.0.0.1:80", "--timeout", "0"], "must be positive"),
        (["probe", "127.0.0.1", "80-70"], "the range ends before it starts"),
        (["probe", "127.0.0.1", "http"], "'http' is not a port"),
        (["probe", "127.0.0.1", "0"], "'0' is not a port"),
        (["demo", "--timeout", "soon"], "not a duration"),
        (["frobnicate"], "Unexpected argument"),
    ])
    func badInput(_ arguments: [String], _ reason: String) throws {
        let p = try ChildProcess(arguments)
        try? p.stdin.fileHandleForWriting.close()
        let (status, _, err) = try p.finish()
        #expect(status == 64, "\(arguments): \(err)")
        #expect(err.contains(reason), "\(arguments): \(err)")
    }

    @Test("listen and connect relay both ways and exit 0 when both sides are done")
    func relay() throws {
        let listener = try ChildProcess(["listen", "0", "--timeout", "10s"])
        let line = try listener.waitForLine(startingWith: "listening on ")
        let address = String(line.dropFirst("listening on ".count))
        listener.send("from the server\n")
        let client = try ChildProcess(["connect", address, "--timeout", "10s"])
        client.send("from the client\n")
        let (clientStatus, clientOut, clientErr) = try client.finish()
        let (listenStatus, listenOut, listenErr) = try listener.finish()
        #expect(clientStatus == 0, "\(clientErr)")
        #expect(listenStatus == 0, "\(listenErr)")
        #expect(clientOut == "from the server\n")
        #expect(listenOut == "from the client\n")
    }

    @Test("listen --keep-open serves several clients and drops one that idles past --timeout")
    func keepOpen() throws {
        let listener = try ChildProcess(["listen", "0", "--keep-open", "--timeout", "300ms"])
        defer { listener.kill() }
        let line = try listener.waitForLine(startingWith: "listening on ")
        let address = try SocketAddress(String(line.dropFirst("listening on ".count)))
        let idle = try Socket(.ipv4)
        try idle.connect(to: address)
        for word in ["one", "two"] {
            let client = try Socket(.ipv4)
            try client.connect(to: address)
            try client.sendAll(Array("\(word)\n".utf8))
            client.close()
        }
        // The idle client is cut off by the server after its 300 ms timeout: we see EOF.
        idle.timeout = try .after(.seconds(5))
        let start = ContinuousClock.now
        #expect(try idle.receive(upTo: 10).isEmpty)
        #expect(ContinuousClock.now - start >= .milliseconds(200))
        #expect(listener.process.isRunning)
        listener.kill()
        let (_, out, err) = try listener.finish()
        #expect(out.contains("one\n") && out.contains("two\n"), "\(out)")
        #expect(err.contains("timed out after 300ms; closed"), "\(err)")
    }
}
