import Foundation
import Sockets
import SocketsTLS
import Testing

// TLS against Python's ssl module as the independent peer; helpers in TLSHelpers.swift.

@Suite("TLS over the same sockets and deadlines", .serialized)
struct TLSTests {
    @Test("client against Python's ssl server: handshake, echo, TLS 1.3, close_notify")
    func clientEcho() throws {
        let peer = try TLSPeer(["echo", tlsFixture("good.pem"), tlsFixture("good.key")])
        let port = try peer.port()
        let tls = try tlsClient(port, try trustingTestCA())
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
        let peer = try TLSPeer(["echo", tlsFixture("rsa.pem"), tlsFixture("rsa.key")])
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
        let configuration = try TLSConfiguration.server(certificateChain: tlsFixture("good.pem"), privateKey: tlsFixture("good.key"))
        let peer = try TLSPeer(["client", "\(address.port!)", tlsFixture("ca.pem")])
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
            let peer = try TLSPeer(["echo", tlsFixture("\(leaf).pem"), tlsFixture("\(leaf).key")])
            let tls = try tlsClient(try peer.port(), trust)
            let (error, _) = expectFailure(.certificateRejected) { try tls.handshake() }
            #expect(error?.operation == .handshake)
            #expect(error?.detail == why, "\(leaf): \(String(describing: error))")
            tls.close()
            peer.finish()
        }
    }

    @Test("a peer that is not speaking TLS, and one that closes after the ClientHello: said so, not a timeout")
    func notTLS() throws {
        let http = try TLSPeer(["http"])
        let tls = try tlsClient(try http.port(), try trustingTestCA())
        let (error, elapsed) = expectFailure(.tlsProtocol) { try tls.handshake() }
        #expect(error?.detail?.hasPrefix("the peer is not speaking TLS") == true, "\(String(describing: error))")
        #expect(elapsed < .seconds(5))
        tls.close()
        http.stop()

        let eof = try TLSPeer(["eof"])
        let tls2 = try tlsClient(try eof.port(), try trustingTestCA())
        let (closed, _) = expectFailure(.endOfStream) { try tls2.handshake() }
        #expect(closed.map { "\($0)" }?.hasPrefix("handshake with 127.0.0.1:") == true, "\(String(describing: closed))")
        tls2.close()
        eof.stop()
    }

    @Test("the handshake has one limit: a silent peer, half a ServerHello, and a peer dripping a real handshake a byte every 20 ms")
    func oneLimit() throws {
        let silent = try TLSPeer(["silent"])
        let tls = try tlsClient(try silent.port(), try trustingTestCA(), timeout: try .after(.milliseconds(300)))
        let (error, elapsed) = expectFailure(.timedOut) { try tls.handshake() }
        expectTiming(elapsed, atLeast: .milliseconds(300))
        #expect(error.map { "\($0)" }?.hasSuffix("timed out after 300ms") == true, "\(String(describing: error))")
        #expect(error?.operation == .handshake)
        tls.close()
        silent.stop()

        // The slow drip: every wait is short (a byte comes each 20 ms), so a per-wait timeout
        // of 1 s would never fire and the handshake would finish after many seconds.
        let upstream = try TLSPeer(["echo", tlsFixture("good.pem"), tlsFixture("good.key")])
        let drip = try TLSPeer(["drip", "\(try upstream.port())", "20"])
        let dripped = try tlsClient(try drip.port(), try trustingTestCA(), timeout: try .after(.seconds(1)))
        let (dripError, dripElapsed) = expectFailure(.timedOut) { try dripped.handshake() }
        expectTiming(dripElapsed, atLeast: .seconds(1))
        #expect(dripError?.operation == .handshake)
        print("TLS: a handshake dripped a byte every 20 ms was cut at its 1 s limit after \(dripElapsed)")
        dripped.close()
        drip.stop()
        upstream.stop()

        let upstream2 = try TLSPeer(["echo", tlsFixture("good.pem"), tlsFixture("good.key")])
        let half = try TLSPeer(["half", "\(try upstream2.port())", "60"])
        let halfTLS = try tlsClient(try half.port(), try trustingTestCA())
        let (halfError, halfElapsed) = expectFailure(.timedOut) { try halfTLS.handshake(deadline: .now + .milliseconds(400)) }
        expectTiming(halfElapsed, atLeast: .milliseconds(400))
        #expect(halfError.map { "\($0)" }?.hasSuffix("timed out: the deadline passed") == true, "\(String(describing: halfError))")
        halfTLS.close()
        half.stop()
        upstream2.stop()
    }

    @Test("TLS 1.3 and a required client certificate: the handshake succeeds, the first read says the server wanted one")
    func clientCertificate() throws {
        let peer = try TLSPeer(["echo", tlsFixture("good.pem"), tlsFixture("good.key"), tlsFixture("ca.pem")])
        let tls = try tlsClient(try peer.port(), try trustingTestCA())
        try tls.handshake()
        let (error, _) = expectFailure(.tlsAlert) { _ = try tls.receive(upTo: 10, deadline: .now + .seconds(5)) }
        #expect(error?.detail == "the peer sent the alert 'certificate required'", "\(String(describing: error))")
        tls.close()
        peer.finish()

        let peer2 = try TLSPeer(["echo", tlsFixture("good.pem"), tlsFixture("good.key"), tlsFixture("ca.pem")])
        let withCertificate = try TLSConfiguration.client(trusting: .authorities(file: tlsFixture("ca.pem")),
                                                          certificateChain: tlsFixture("client.pem"), privateKey: tlsFixture("client.key"))
        let tls2 = try tlsClient(try peer2.port(), withCertificate)
        try tls2.handshake()
        try tls2.sendAll([7])
        #expect(try tls2.receive(upTo: 10, deadline: .now + .seconds(5)) == [7])
        tls2.close()
        peer2.finish()
    }

    @Test("close() from another thread ends a handshake that waits")
    func closeEndsHandshake() throws {
        let silent = try TLSPeer(["silent"])
        let tls = try tlsClient(try silent.port(), try trustingTestCA(), timeout: .never)
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
        let server = try TLSConfiguration.server(certificateChain: tlsFixture("good.pem"), privateKey: tlsFixture("good.key"),
                                                 protocols: ["h2", "http/1.1"])
        let clientConfiguration = try TLSConfiguration.client(trusting: .authorities(file: tlsFixture("ca.pem")),
                                                              protocols: ["http/1.1"])
        let serving = Background { () -> String? in
            let tls = try serveOne(listener, server)
            defer { tls.close() }
            return tls.negotiatedProtocol
        }
        let tls = try tlsClient(address.port!, clientConfiguration)
        try tls.handshake()
        #expect(tls.negotiatedProtocol == "http/1.1")
        #expect(try serving.value() == "http/1.1")
        tls.close()
    }

    @Test("a timed-out send keeps the session: what it could not deliver goes first with the next send")
    func sendTimeoutRecoverable() throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let server = try TLSConfiguration.server(certificateChain: tlsFixture("good.pem"), privateKey: tlsFixture("good.key"))
        let startReading = DispatchSemaphore(value: 0)
        let serving = Background { () -> [UInt8] in
            let tls = try serveOne(listener, server, bounded: true)
            defer { tls.close() }
            guard startReading.wait(timeout: .now() + 20) == .success else { throw TestFailure("never told to read") }
            return try receiveUntilEnd(tls)
        }
        let tls = try tlsClient(address.port!, try trustingTestCA())
        try boundBuffers(tls.socket)
        try tls.handshake()
        let first = (0..<(2 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let (error, elapsed) = expectFailure(.timedOut) { try tls.sendAll(first, deadline: .now + .milliseconds(200)) }
        expectTiming(elapsed, atLeast: .milliseconds(200))
        // TLS took the first `taken` bytes (whole pieces); the caller sends the rest.
        let taken = error?.bytesTransferred ?? -1
        #expect(taken > 0 && taken < first.count, "\(String(describing: error))")
        #expect(error?.detail?.hasPrefix("TLS took \(taken) bytes") == true, "\(String(describing: error))")
        startReading.signal()
        let second = Array("and the rest".utf8)
        try tls.sendAll(first[max(0, taken)...] + second, deadline: .now + .seconds(10))
        tls.close()
        let received = try serving.value(within: .seconds(20))
        #expect(received.count == first.count + second.count)
        #expect(received == first + second, "the stream is not the bytes sent, in order")
    }

    @Test("close() from another thread while a send waits on a peer that does not read: close returns at once, the send ends")
    func closeDuringSend() throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let (serving, done) = try nonReadingTLSServer(listener)
        let tls = try tlsClient(address.port!, try trustingTestCA(), timeout: .never)
        try boundBuffers(tls.socket)
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
        let server = try TLSConfiguration.server(certificateChain: tlsFixture("good.pem"), privateKey: tlsFixture("good.key"))
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
