import Foundation
import Sockets
import Testing

// `sock connect --tls` and `sock listen --tls` as processes, against Python's ssl module
// (Tests/Fixtures/tls/peer.py) and against each other; the fixtures of
// Tests/Fixtures/tls/make.sh. Loopback only; every process has a time limit and is killed
// by its PID past it.

private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/tls").path
private func fixture(_ name: String) -> String { "\(fixtures)/\(name)" }

/// peer.py MODE ARGS, python3 run directly (its PID is the one killed).
private func peer(_ arguments: String...) throws -> ChildProcess {
    try ChildProcess(command: ["/usr/bin/env", "python3", "-u", fixture("peer.py")] + arguments)
}

/// A server peer's port: the first line it prints.
private func port(of server: ChildProcess) throws -> String {
    let line = try server.waitForOutputLine(startingWith: "")
    guard UInt16(line) != nil else { throw CLIFailure("peer.py printed '\(line)', not a port; stderr: \(server.err)") }
    return line
}

/// `sock ARGS` with `input` on stdin (then its end); status and output.
private func sock(_ arguments: [String], input: String = "", within limit: Duration = .seconds(20)) throws -> (status: Int32, out: String, err: String) {
    let p = try ChildProcess(arguments)
    p.send(input)
    return try p.finish(within: limit)
}

/// The address `sock listen` says it listens on.
private func listening(_ listener: ChildProcess) throws -> String {
    String(try listener.waitForLine(startingWith: "listening on ").dropFirst("listening on ".count))
}

@Suite("sock --tls", .serialized)
struct TLSCLITests {
    @Test("connect --tls: 1 MB up, then close_notify at the end of stdin; the server's reply after it arrives whole")
    func uploadThenReply() throws {
        // Printable, so that the child's output can be compared as text.
        var generator = SystemRandomNumberGenerator()
        let line = (0..<99).map { _ in Character(UnicodeScalar(UInt8.random(in: 0x21...0x7E, using: &generator))) }
        let text = String((0..<10_500).map { _ in String(line.shuffled()) + "\n" }.joined())  // 1,050,000 bytes
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sock-tls-\(getpid()).txt").path
        try text.write(toFile: file, atomically: false, encoding: .utf8)
        defer { unlink(file) }

        let server = try peer("collect", fixture("good.pem"), fixture("good.key"))
        defer { server.kill() }
        let client = try ChildProcess(["connect", "--tls", "--ca", fixture("ca.pem"), "localhost:\(try port(of: server))",
                                       "--timeout", "10s"], stdinFile: file)
        let (status, out, err) = try client.finish(within: .seconds(30))
        #expect(status == 0, "\(err)")
        #expect(out.utf8.count == text.utf8.count)
        #expect(out == text, "the reply differs from what was sent")
        // The server read everything up to our close_notify before it replied.
        _ = try server.waitForOutputLine(startingWith: "\(text.utf8.count)")
    }

    @Test("connect --tls to an expired certificate: exit 1, the message says it has expired")
    func expired() throws {
        let server = try peer("echo", fixture("expired.pem"), fixture("expired.key"))
        defer { server.kill() }
        let (status, _, err) = try sock(["connect", "--tls", "--ca", fixture("ca.pem"), "localhost:\(try port(of: server))"], input: "hi")
        #expect(status == 1, "\(err)")
        #expect(err.contains("certificate rejected: certificate has expired"), "\(err)")
    }

    @Test("connect --tls to a certificate for another host: exit 1, hostname mismatch")
    func wrongHost() throws {
        let server = try peer("echo", fixture("wronghost.pem"), fixture("wronghost.key"))
        defer { server.kill() }
        let (status, _, err) = try sock(["connect", "--tls", "--ca", fixture("ca.pem"), "localhost:\(try port(of: server))"], input: "hi")
        #expect(status == 1, "\(err)")
        #expect(err.lowercased().contains("hostname mismatch"), "\(err)")
    }

    @Test("connect --tls --insecure accepts the expired certificate; --servername names the host to verify")
    func insecureAndServerName() throws {
        let server = try peer("echo", fixture("expired.pem"), fixture("expired.key"))
        defer { server.kill() }
        let (status, out, err) = try sock(["connect", "--tls", "--insecure", "127.0.0.1:\(try port(of: server))"], input: "hi\n")
        #expect(status == 0, "\(err)")
        #expect(out == "hi\n")

        let good = try peer("echo", fixture("good.pem"), fixture("good.key"))
        defer { good.kill() }
        let named = try sock(["connect", "--tls", "--ca", fixture("ca.pem"), "--servername", "localhost",
                              "127.0.0.1:\(try port(of: good))"], input: "named\n")
        #expect(named.status == 0, "\(named.err)")
        #expect(named.out == "named\n")
    }

    @Test("connect --tls to a server that is not TLS: exit 1, the peer is not speaking TLS")
    func notTLS() throws {
        let server = try peer("http")
        defer { server.kill() }
        let (status, _, err) = try sock(["connect", "--tls", "--ca", fixture("ca.pem"), "localhost:\(try port(of: server))"], input: "hi")
        #expect(status == 1, "\(err)")
        #expect(err.contains("the peer is not speaking TLS"), "\(err)")
    }

    @Test("connect --tls to a silent server with --handshake-timeout 300ms: exit 124 at 300 ms, never before")
    func silentServer() throws {
        let server = try peer("silent")
        defer { server.kill() }
        let address = "127.0.0.1:\(try port(of: server))"
        let start = ContinuousClock.now
        // stdin stays open: only the handshake's limit can end this.
        let client = try ChildProcess(["connect", "--tls", "--ca", fixture("ca.pem"), "--servername", "localhost",
                                       "--handshake-timeout", "300ms", address])
        let (status, _, err) = try client.finish(within: .seconds(10))
        let elapsed = ContinuousClock.now - start
        #expect(status == 124, "\(err)")
        #expect(elapsed >= .milliseconds(300), "ended after \(elapsed)")
        #expect(elapsed < .seconds(5), "ended after \(elapsed)")
        #expect(err.contains("handshake with \(address) timed out after 300ms"), "\(err)")
    }

    @Test("the handshake's limit defaults to the connect timeout")
    func handshakeLimitDefault() throws {
        let server = try peer("silent")
        defer { server.kill() }
        let start = ContinuousClock.now
        let client = try ChildProcess(["connect", "--tls", "--insecure", "--connect-timeout", "300ms", "127.0.0.1:\(try port(of: server))"])
        let (status, _, err) = try client.finish(within: .seconds(10))
        #expect(status == 124, "\(err)")
        #expect(ContinuousClock.now - start >= .milliseconds(300))
        #expect(err.contains("timed out after 300ms"), "\(err)")
    }

    @Test("connect --tls --cert --key to a server that requires a client certificate; without one, exit 1: certificate required")
    func clientCertificate() throws {
        let server = try peer("echo", fixture("good.pem"), fixture("good.key"), fixture("ca.pem"))
        defer { server.kill() }
        let (status, out, err) = try sock(["connect", "--tls", "--ca", fixture("ca.pem"), "--cert", fixture("client.pem"),
                                           "--key", fixture("client.key"), "localhost:\(try port(of: server))"], input: "mine\n")
        #expect(status == 0, "\(err)")
        #expect(out == "mine\n")

        // TLS 1.3: the client's handshake succeeds; the refusal is an alert on the first read.
        let strict = try peer("echo", fixture("good.pem"), fixture("good.key"), fixture("ca.pem"))
        defer { strict.kill() }
        let refused = try sock(["connect", "--tls", "--ca", fixture("ca.pem"), "localhost:\(try port(of: strict))"], input: "none\n")
        #expect(refused.status == 1, "\(refused.err)")
        #expect(refused.err.contains("certificate required"), "\(refused.err)")
    }

    @Test("listen --tls serves a Python ssl client both ways")
    func listenServesPython() throws {
        let listener = try ChildProcess(["listen", "--tls", "--cert", fixture("good.pem"), "--key", fixture("good.key"), "0",
                                         "--timeout", "10s"])
        defer { listener.kill() }
        let address = try listening(listener)
        listener.send("pong\n", thenClose: false)
        let client = try peer("client", String(address.split(separator: ":").last!), fixture("ca.pem"))
        let (clientStatus, clientOut, clientErr) = try client.finish()
        // stdin stays open: the listener ends once the client has finished and stdin has had
        // nothing for 250 ms.
        let (status, out, err) = try listener.finish()
        #expect(clientStatus == 0, "\(clientErr)")
        #expect(clientOut == "pong\n\n")  // print() of the reply, which ends in its own newline
        #expect(status == 0, "\(err)")
        #expect(out == "ping")
    }

    @Test("listen --tls --client-ca: a client with a certificate is served; one without is refused, exit 1")
    func listenRequiresClientCertificate() throws {
        let arguments = ["listen", "--tls", "--cert", fixture("good.pem"), "--key", fixture("good.key"),
                         "--client-ca", fixture("ca.pem"), "0", "--timeout", "10s"]
        let listener = try ChildProcess(arguments)
        defer { listener.kill() }
        try? listener.stdin.fileHandleForWriting.close()
        let port = String(try listening(listener).split(separator: ":").last!)
        let client = try peer("tell", port, fixture("ca.pem"), "with a certificate", fixture("client.pem"), fixture("client.key"))
        let (clientStatus, _, clientErr) = try client.finish()
        let (status, out, err) = try listener.finish()
        #expect(clientStatus == 0, "\(clientErr)")
        #expect(status == 0, "\(err)")
        #expect(out == "with a certificate")

        let strict = try ChildProcess(arguments)
        defer { strict.kill() }
        try? strict.stdin.fileHandleForWriting.close()
        let strictPort = String(try listening(strict).split(separator: ":").last!)
        let anonymous = try peer("client", strictPort, fixture("ca.pem"))
        defer { anonymous.kill() }
        let refused = try strict.finish()
        #expect(refused.status == 1, "\(refused.err)")
        #expect(refused.err.contains("did not return a certificate"), "\(refused.err)")
        #expect(refused.out.isEmpty)
    }

    @Test("listen --tls --keep-open: a client silent in its handshake holds up nobody, and is dropped at --handshake-timeout")
    func keepOpenSilentClient() throws {
        let listener = try ChildProcess(["listen", "--tls", "--cert", fixture("good.pem"), "--key", fixture("good.key"),
                                         "--keep-open", "--handshake-timeout", "2s", "0"])
        defer { listener.kill() }
        let address = try SocketAddress(try listening(listener))
        let silent = try Socket(.ipv4)
        defer { silent.close() }
        try silent.connect(to: address, deadline: .now + .seconds(5))
        let start = ContinuousClock.now
        let client = try peer("tell", "\(address.port!)", fixture("ca.pem"), "not held up\n")
        let (clientStatus, _, clientErr) = try client.finish()
        #expect(clientStatus == 0, "\(clientErr)")
        _ = try listener.waitFor(.seconds(5), "the told line on stdout") { listener.out.contains("not held up\n") ? true : nil }
        // Served while the silent client's handshake was still waiting.
        #expect(!listener.err.contains("timed out"), "\(listener.err)")
        // The silent one: cut off by the server at its handshake's limit, not before.
        silent.timeout = try .after(.seconds(10))
        let received = try silent.receive(upTo: 10)
        #expect(received.isEmpty)
        #expect(ContinuousClock.now - start >= .milliseconds(1900))
        _ = try listener.waitForLine(startingWith: "sock: connection from", within: .seconds(5))
        #expect(listener.err.contains("timed out after 2s; closed"), "\(listener.err)")
        #expect(listener.process.isRunning)
    }

    @Test("connect --tls and listen --tls over a Unix socket path: both ways, exit 0")
    func unixPath() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sock-tls-\(getpid()).sock").path
        unlink(path)
        let listener = try ChildProcess(["listen", "--tls", "--cert", fixture("good.pem"), "--key", fixture("good.key"), path,
                                         "--timeout", "10s"])
        defer { listener.kill() }
        _ = try listening(listener)
        listener.send("from the server\n", thenClose: false)
        let (status, out, err) = try sock(["connect", "--tls", "--ca", fixture("ca.pem"), "--servername", "localhost", path,
                                           "--timeout", "10s"], input: "from the client\n")
        try? listener.stdin.fileHandleForWriting.close()
        let served = try listener.finish()
        #expect(status == 0, "\(err)")
        #expect(out == "from the server\n")
        #expect(served.status == 0, "\(served.err)")
        #expect(served.out == "from the client\n")
    }

    @Test("sock connect without --tls does not load libssl")
    func plainDoesNotLoadOpenSSL() throws {
        let server = try Socket(.ipv4)
        try server.bind(to: .ipv4(.loopback, port: 0))
        try server.listen()
        let client = try ChildProcess(["connect", "\(try server.localAddress)", "--timeout", "10s"])  // stdin stays open
        defer { client.kill() }
        let (connection, _) = try server.accept(deadline: .now + .seconds(10))
        defer { connection.close() }
        let maps = try String(contentsOfFile: "/proc/\(client.pid)/maps", encoding: .utf8)
        #expect(!maps.contains("libssl"), "libssl is mapped")
        #expect(!maps.contains("libcrypto"), "libcrypto is mapped")
    }

    @Test("bad TLS input exits 64 with a message naming what was wrong", arguments: [
        (["connect", "--tls", "-u", "127.0.0.1:80"], "not with --udp"),
        (["listen", "--tls", "--udp", "--cert", fixture("good.pem"), "--key", fixture("good.key"), "0"], "not with --udp"),
        (["listen", "--tls", "0"], "needs --cert FILE and --key FILE"),
        (["connect", "--tls", "--cert", fixture("client.pem"), "127.0.0.1:80"], "--cert needs --key"),
        (["listen", "--tls", "--key", fixture("good.key"), "0"], "--key needs --cert"),
        (["connect", "--ca", fixture("ca.pem"), "127.0.0.1:80"], "--ca needs --tls"),
        (["connect", "--handshake-timeout", "1s", "127.0.0.1:80"], "--handshake-timeout needs --tls"),
        (["listen", "--cert", fixture("good.pem"), "--key", fixture("good.key"), "0"], "--cert needs --tls"),
        (["listen", "--client-ca", fixture("ca.pem"), "0"], "--client-ca needs --tls"),
        (["connect", "--tls", "--insecure", "--ca", fixture("ca.pem"), "127.0.0.1:80"], "not with --ca"),
        (["connect", "--tls", "--ca", "/nonexistent/ca.pem", "127.0.0.1:80"], "--ca: cannot read '/nonexistent/ca.pem'"),
        (["connect", "--tls", "--handshake-timeout", "soon", "127.0.0.1:80"], "not a duration"),
        (["connect", "--tls", "/tmp/x.sock"], "needs --servername"),
        // Readable, but not what it should be: the library's message names the file.
        (["connect", "--tls", "--ca", fixture("peer.py"), "127.0.0.1:80"], "cannot use '\(fixture("peer.py"))' as certificate authorities"),
        (["listen", "--tls", "--cert", fixture("good.pem"), "--key", fixture("client.key"), "0"], "with key '\(fixture("client.key"))'"),
    ])
    func badInput(_ arguments: [String], _ reason: String) throws {
        let (status, _, err) = try sock(arguments)
        #expect(status == 64, "\(arguments): \(err)")
        #expect(err.contains(reason), "\(arguments): \(err)")
    }
}
