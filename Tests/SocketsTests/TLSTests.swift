import Foundation
import Sockets
import SocketsTLS
import Testing

// TLS against Python's ssl module as the independent peer (Tests/Fixtures/tls/peer.py), with
// the fixtures of Tests/Fixtures/tls/make.sh; loopback only.

private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/tls").path
private func fixture(_ name: String) -> String { "\(fixtures)/\(name)" }

/// peer.py MODE ARGS as a child process, ended by its PID when the test is done with it (and
/// bounded on its own: every wait in peer.py has a limit of 30 s at most). Python runs
/// directly, not under timeout(1), so that its PID is the one killed.
private final class Peer {
    let process = Process()
    private let output = Pipe()
    private let errors = Pipe()

    init(_ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", fixture("peer.py")] + arguments
        process.standardOutput = output
        process.standardError = errors
        try process.run()
    }

    /// The first line the peer prints (its port), waited for 10 s at most.
    func line() throws -> String {
        let handle = output.fileHandleForReading
        let reading = Background { () -> String in
            var bytes: [UInt8] = []
            while !bytes.contains(0x0A) {
                let data = handle.availableData
                if data.isEmpty { break }
                bytes += data
            }
            return String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return try reading.value(within: .seconds(10))
    }

    func port() throws -> UInt16 {
        let text = try line()
        guard let port = UInt16(text) else { throw TestFailure("peer printed '\(text)', not a port") }
        return port
    }

    /// Waits for the peer to exit (killing it after `limit`); its exit status.
    @discardableResult
    func finish(within limit: Duration = .seconds(20)) -> Int32 {
        let end = ContinuousClock.now + limit
        while process.isRunning && ContinuousClock.now < end { pause(.milliseconds(10)) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Ends the peer now (by its PID), for one whose part is over.
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
}

/// 64 KiB send and receive buffers, asserted: 2 MiB cannot fit in the path (and tiny
/// buffers would crawl on delayed acknowledgements).
private func bounded(_ socket: Socket) throws {
    try socket.setOption(.sendBufferSize, 65_536)
    try socket.setOption(.receiveBufferSize, 65_536)
    #expect(try socket.option(.receiveBufferSize) <= 262_144)
}

/// Accepts one connection and handshakes as its server, on the connection's clock (10 s);
/// `bounded`: 64 KiB buffers first.
private func serveOne(_ listener: Socket, _ configuration: TLSConfiguration, bounded small: Bool = false) throws -> TLSSocket {
    let (connection, _) = try listener.accept(deadline: .now + .seconds(10))
    if small { try bounded(connection) }
    connection.timeout = try .after(.seconds(10))
    let tls = try TLSSocket(serving: connection, configuration: configuration)
    try tls.handshake()
    return tls
}

private func trustingTestCA() throws -> TLSConfiguration {
    try TLSConfiguration.client(trusting: .authorities(file: fixture("ca.pem")))
}

/// A client TLS connection to 127.0.0.1:port, not yet handshaken.
private func client(_ port: UInt16, _ configuration: TLSConfiguration, name: String = "localhost",
                    timeout: SocketTimeout? = nil) throws -> TLSSocket {
    let socket = try Socket.connect(to: SocketAddress.ipv4(.loopback, port: port), timeout: try .after(.seconds(10)))
    socket.timeout = try timeout ?? .after(.seconds(10))
    return try TLSSocket(client: socket, configuration: configuration, serverName: name)
}

@Suite("TLS over the same sockets and deadlines", .serialized)
struct TLSTests {
    @Test("client against Python's ssl server: handshake, echo, TLS 1.3, close_notify")
    func clientEcho() throws {
        let peer = try Peer(["echo", fixture("good.pem"), fixture("good.key")])
        let port = try peer.port()
        let tls = try client(port, try trustingTestCA())
        try tls.handshake()
        #expect(tls.protocolVersion == "TLSv1.3")
        try tls.sendAll(Array("hello over TLS".utf8))
        var got: [UInt8] = []
        while got.count < 14 {
            let chunk = try tls.receive(upTo: 100, deadline: .now + .seconds(5))
            if chunk.isEmpty { break }
            got += chunk
        }
        #expect(String(decoding: got, as: UTF8.self) == "hello over TLS")
        tls.close()
        #expect(peer.finish() == 0)
    }

    @Test("connect by name: one limit for lookup, connect and handshake; an RSA certificate works too")
    func connectByName() throws {
        let peer = try Peer(["echo", fixture("rsa.pem"), fixture("rsa.key")])
        let port = try peer.port()
        let tls = try TLSSocket.connect(to: "127.0.0.1:\(port)", configuration: try trustingTestCA(),
                                        serverName: "localhost", timeout: try .after(.seconds(5)))
        #expect(tls.socket.timeout == (try .after(.seconds(5))))
        try tls.sendAll([1, 2, 3])
        #expect(try tls.receive(upTo: 10) == [1, 2, 3])
        tls.close()
        peer.finish()
    }

    @Test("server side against Python's ssl client, the handshake on the accepted connection's clock")
    func serverEcho() throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let configuration = try TLSConfiguration.server(certificateChain: fixture("good.pem"), privateKey: fixture("good.key"))
        let peer = try Peer(["client", "\(address.port!)", fixture("ca.pem")])
        let tls = try serveOne(listener, configuration)
        let request = try tls.receive(upTo: 100, deadline: .now + .seconds(10))
        try tls.sendAll(request)
        #expect(try peer.line() == "ping")
        tls.close()
        peer.finish()
    }

    @Test("certificate problems are rejected with the reason: expired, wrong host, unknown authority")
    func certificateRejected() throws {
        for (leaf, trust, why) in [
            ("expired", try trustingTestCA(), "certificate has expired"),
            ("wronghost", try trustingTestCA(), "hostname mismatch"),
            ("good", try TLSConfiguration.client(trusting: .system), "unable to get local issuer certificate"),
        ] {
            let peer = try Peer(["echo", fixture("\(leaf).pem"), fixture("\(leaf).key")])
            let tls = try client(try peer.port(), trust)
            let (error, _) = expectFailure(.certificateRejected) { try tls.handshake() }
            #expect(error?.operation == .handshake)
            #expect(error?.detail == why, "\(leaf): \(String(describing: error))")
            tls.close()
            peer.finish()
        }
    }

    @Test("a peer that is not speaking TLS, and one that closes after the ClientHello: said so, not a timeout")
    func notTLS() throws {
        let http = try Peer(["http"])
        let tls = try client(try http.port(), try trustingTestCA())
        let (error, elapsed) = expectFailure(.tlsProtocol) { try tls.handshake() }
        #expect(error?.detail?.hasPrefix("the peer is not speaking TLS") == true, "\(String(describing: error))")
        #expect(elapsed < .seconds(5))
        tls.close()
        http.stop()

        let eof = try Peer(["eof"])
        let tls2 = try client(try eof.port(), try trustingTestCA())
        let (closed, _) = expectFailure(.endOfStream) { try tls2.handshake() }
        #expect(closed.map { "\($0)" }?.hasPrefix("handshake with 127.0.0.1:") == true, "\(String(describing: closed))")
        tls2.close()
        eof.stop()
    }

    @Test("the handshake has one limit: a silent peer, half a ServerHello, and a peer dripping a real handshake a byte every 20 ms")
    func oneLimit() throws {
        let silent = try Peer(["silent"])
        let tls = try client(try silent.port(), try trustingTestCA(), timeout: try .after(.milliseconds(300)))
        let (error, elapsed) = expectFailure(.timedOut) { try tls.handshake() }
        expectTiming(elapsed, atLeast: .milliseconds(300))
        #expect(error.map { "\($0)" }?.hasSuffix("timed out after 300ms") == true, "\(String(describing: error))")
        #expect(error?.operation == .handshake)
        tls.close()
        silent.stop()

        // The slow drip: every wait is short (a byte comes each 20 ms), so a per-wait timeout
        // of 1 s would never fire and the handshake would finish after many seconds.
        let upstream = try Peer(["echo", fixture("good.pem"), fixture("good.key")])
        let drip = try Peer(["drip", "\(try upstream.port())", "20"])
        let dripped = try client(try drip.port(), try trustingTestCA(), timeout: try .after(.seconds(1)))
        let (dripError, dripElapsed) = expectFailure(.timedOut) { try dripped.handshake() }
        expectTiming(dripElapsed, atLeast: .seconds(1))
        #expect(dripError?.operation == .handshake)
        print("TLS: a handshake dripped a byte every 20 ms was cut at its 1 s limit after \(dripElapsed)")
        dripped.close()
        drip.stop()
        upstream.stop()

        let upstream2 = try Peer(["echo", fixture("good.pem"), fixture("good.key")])
        let half = try Peer(["half", "\(try upstream2.port())", "60"])
        let halfTLS = try client(try half.port(), try trustingTestCA())
        let (halfError, halfElapsed) = expectFailure(.timedOut) { try halfTLS.handshake(deadline: .now + .milliseconds(400)) }
        expectTiming(halfElapsed, atLeast: .milliseconds(400))
        #expect(halfError.map { "\($0)" }?.hasSuffix("timed out: the deadline passed") == true, "\(String(describing: halfError))")
        halfTLS.close()
        half.stop()
        upstream2.stop()
    }

    @Test("TLS 1.3 and a required client certificate: the handshake succeeds, the first read says the server wanted one")
    func clientCertificate() throws {
        let peer = try Peer(["echo", fixture("good.pem"), fixture("good.key"), fixture("ca.pem")])
        let tls = try client(try peer.port(), try trustingTestCA())
        try tls.handshake()
        let (error, _) = expectFailure(.tlsAlert) { _ = try tls.receive(upTo: 10, deadline: .now + .seconds(5)) }
        #expect(error?.detail == "the peer sent the alert 'certificate required'", "\(String(describing: error))")
        tls.close()
        peer.finish()

        let peer2 = try Peer(["echo", fixture("good.pem"), fixture("good.key"), fixture("ca.pem")])
        let withCertificate = try TLSConfiguration.client(trusting: .authorities(file: fixture("ca.pem")),
                                                          certificateChain: fixture("client.pem"), privateKey: fixture("client.key"))
        let tls2 = try client(try peer2.port(), withCertificate)
        try tls2.handshake()
        try tls2.sendAll([7])
        #expect(try tls2.receive(upTo: 10, deadline: .now + .seconds(5)) == [7])
        tls2.close()
        peer2.finish()
    }

    @Test("close() from another thread ends a handshake that waits")
    func closeEndsHandshake() throws {
        let silent = try Peer(["silent"])
        let tls = try client(try silent.port(), try trustingTestCA(), timeout: .never)
        let closer = Background { pause(.milliseconds(150)); tls.close() }
        let (_, elapsed) = expectFailure(.closed) { try tls.handshake() }
        #expect(elapsed < .seconds(2))
        try closer.value()
        silent.stop()
    }

    @Test("ALPN: the server picks from what the client offers; both sides see the choice")
    func alpn() throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let server = try TLSConfiguration.server(certificateChain: fixture("good.pem"), privateKey: fixture("good.key"),
                                                 protocols: ["h2", "http/1.1"])
        let clientConfiguration = try TLSConfiguration.client(trusting: .authorities(file: fixture("ca.pem")),
                                                              protocols: ["http/1.1"])
        let serving = Background { () -> String? in
            let tls = try serveOne(listener, server)
            defer { tls.close() }
            return tls.negotiatedProtocol
        }
        let tls = try client(address.port!, clientConfiguration)
        try tls.handshake()
        #expect(tls.negotiatedProtocol == "http/1.1")
        #expect(try serving.value() == "http/1.1")
        tls.close()
    }

    @Test("a timed-out send keeps the session: what it could not deliver goes first with the next send")
    func sendTimeoutRecoverable() throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let server = try TLSConfiguration.server(certificateChain: fixture("good.pem"), privateKey: fixture("good.key"))
        let startReading = DispatchSemaphore(value: 0)
        let serving = Background { () -> [UInt8] in
            let tls = try serveOne(listener, server, bounded: true)
            defer { tls.close() }
            guard startReading.wait(timeout: .now() + 20) == .success else { throw TestFailure("never told to read") }
            var all: [UInt8] = []
            while true {
                let chunk = try tls.receive(upTo: 65_536)
                if chunk.isEmpty { return all }
                all += chunk
            }
        }
        let tls = try client(address.port!, try trustingTestCA())
        try bounded(tls.socket)
        try tls.handshake()
        let first = (0..<(2 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let (error, elapsed) = expectFailure(.timedOut) { try tls.sendAll(first, deadline: .now + .milliseconds(200)) }
        expectTiming(elapsed, atLeast: .milliseconds(200))
        #expect(error?.bytesTransferred == nil)
        startReading.signal()
        let second = Array("and the rest".utf8)
        try tls.sendAll(second, deadline: .now + .seconds(10))
        tls.close()
        let received = try serving.value(within: .seconds(20))
        #expect(received.count == first.count + second.count)
        #expect(received == first + second, "the stream is not the bytes sent, in order")
    }

    @Test("close() from another thread while a send waits on a peer that does not read: close returns at once, the send ends")
    func closeDuringSend() throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let server = try TLSConfiguration.server(certificateChain: fixture("good.pem"), privateKey: fixture("good.key"))
        let done = DispatchSemaphore(value: 0)
        let serving = Background {
            let tls = try serveOne(listener, server, bounded: true)
            _ = done.wait(timeout: .now() + 20)  // never reads
            tls.close()
        }
        let tls = try client(address.port!, try trustingTestCA(), timeout: .never)
        try bounded(tls.socket)
        try tls.handshake()
        let sending = Background { () -> SocketError.Kind? in
            do throws(SocketError) { try tls.sendAll([UInt8](repeating: 5, count: 8 << 20)); return nil } catch { return error.kind }
        }
        pause(.milliseconds(200))  // the send is waiting for room
        let start = ContinuousClock.now
        tls.close()
        #expect(ContinuousClock.now - start < .milliseconds(500), "close() waited \(ContinuousClock.now - start)")
        #expect(try sending.value(within: .seconds(5)) == .closed)
        done.signal()
        try serving.value(within: .seconds(20))
    }

    @Test("bad input: a missing file, a server configuration on the client side, no server name")
    func badInput() throws {
        let (e1, _) = expectFailure(.invalidArgument) {
            _ = try TLSConfiguration.server(certificateChain: "/nonexistent.pem", privateKey: "/nonexistent.key")
        }
        #expect(e1?.detail?.hasPrefix("cannot use certificate '/nonexistent.pem'") == true, "\(String(describing: e1))")
        let (a, b) = try Socket.pair()
        defer { a.close(); b.close() }
        let (e2, _) = expectFailure(.invalidArgument) { _ = try TLSSocket(client: a, configuration: try trustingTestCA(), serverName: nil) }
        #expect(e2?.detail == "serverName is required: the name the server's certificate must carry")
        let server = try TLSConfiguration.server(certificateChain: fixture("good.pem"), privateKey: fixture("good.key"))
        _ = expectFailure(.invalidArgument) { _ = try TLSSocket(client: a, configuration: server, serverName: "x") }
    }

    @Test("200 handshakes against peers that are not TLS or hang up: no descriptor left")
    func noLeaks() throws {
        let (listener, address) = try makeListener(backlog: 64)
        defer { listener.close() }
        let configuration = try trustingTestCA()
        let before = try openDescriptors()
        let server = Background {
            for i in 0..<200 {
                let (c, _) = try listener.accept(deadline: .now + .seconds(10))
                if i % 2 == 0 { try? c.sendAll(Array("HTTP/1.1 400 Bad Request\r\n\r\n".utf8)) }
                c.close()
            }
        }
        var kinds: [SocketError.Kind: Int] = [:]
        for _ in 0..<200 {
            let socket = try Socket.connect(to: address, timeout: try .after(.seconds(5)))
            let tls = try TLSSocket(client: socket, configuration: configuration, serverName: "localhost")
            do throws(SocketError) {
                try tls.handshake()
            } catch {
                kinds[error.kind, default: 0] += 1
            }
            tls.close()
        }
        try server.value(within: .seconds(30))
        #expect(kinds.values.reduce(0, +) == 200, "\(kinds)")
        #expect(try descriptorsLeaked(since: before).isEmpty)
    }
}
