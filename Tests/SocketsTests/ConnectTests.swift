import Sockets
import Testing

@Suite("connect: timed out, refused, and the modes")
struct ConnectTests {
    @Test("nothing listening: refused at once even with a long timeout")
    func refusedAtOnce() throws {
        let (holder, address) = try refusingPort()
        defer { holder.close() }
        for timeout in [SocketTimeout.never, try .after(.seconds(30))] {
            let client = try Socket(.ipv4)
            client.timeout = timeout
            let (error, elapsed) = expectFailure(.connectionRefused) { try client.connect(to: address) }
            #expect(elapsed < .seconds(1), "refused took \(elapsed) with timeout \(timeout)")
            #expect(error?.errno == .connectionRefused)
            #expect(error.map { "\($0)" } == "connect to \(address) failed: Connection refused (ECONNREFUSED)")
        }
    }

    @Test("a full accept queue: the connect times out at the timeout, never early")
    func fullQueueTimesOut() throws {
        let (server, fillers, address) = try fullQueueListener()
        defer { server.close(); fillers.forEach { $0.close() } }
        let client = try Socket(.ipv4)
        client.timeout = try .after(.milliseconds(300))
        let (error, elapsed) = expectFailure(.timedOut) { try client.connect(to: address) }
        expectTiming(elapsed, atLeast: .milliseconds(300))
        #expect(error.map { "\($0)" } == "connect to \(address) timed out after 300ms")
    }

    @Test("a blocking connect with a per-call deadline times out at the deadline")
    func deadlineOnBlocking() throws {
        let (server, fillers, address) = try fullQueueListener()
        defer { server.close(); fillers.forEach { $0.close() } }
        let client = try Socket(.ipv4)
        client.timeout = .never
        let (_, elapsed) = expectFailure(.timedOut) { try client.connect(to: address, deadline: .now + .milliseconds(200)) }
        expectTiming(elapsed, atLeast: .milliseconds(200))
    }

    @Test("a non-blocking connect reports wouldBlock (EINPROGRESS) and completes in the background")
    func nonBlocking() throws {
        let (server, address) = try makeListener()
        let client = try Socket(.ipv4)
        client.timeout = .nonBlocking
        do throws(SocketError) {
            try client.connect(to: address)  // loopback may complete at once
        } catch {
            #expect(error.kind == .wouldBlock)
            #expect(error.errno == .nowInProgress)
        }
        let (accepted, _) = try server.accept(deadline: .now + .seconds(5))
        #expect(try client.pendingError() == nil)
        #expect(try accepted.peerAddress == client.localAddress)
    }

    @Test("a deadline already past fails before the connect is attempted")
    func pastDeadline() throws {
        let (server, address) = try makeListener()
        let client = try Socket(.ipv4)
        expectFailure(.timedOut) { try client.connect(to: address, deadline: .now - .seconds(1)) }
        server.timeout = .nonBlocking
        expectFailure(.wouldBlock) { _ = try server.accept() }  // no connection was made
    }

    @Test("IPv6 loopback connects and exchanges data")
    func ipv6() throws {
        let (client, server) = try connectedPair(.ipv6)
        try client.sendAll(Array("six".utf8))
        #expect(try server.receive(exactly: 3) == Array("six".utf8))
        if case .ipv6(let address, _, _) = try client.peerAddress { #expect(address == .loopback) } else {
            Issue.record("peer is not IPv6")
        }
    }

    @Test("connecting with an address of the other family is an invalid argument")
    func familyMismatch() throws {
        let client = try Socket(.ipv4)
        let (error, _) = expectFailure(.invalidArgument) { try client.connect(to: .ipv6(.loopback, port: 1)) }
        #expect(error?.detail?.contains("IPv4 socket") == true)
    }

    @Test("connect by name: resolves, connects, applies the timeout to the new socket")
    func byName() throws {
        let (server, address) = try makeListener()
        let timeout = try SocketTimeout.after(.seconds(3))
        let client = try Socket.connect(to: "127.0.0.1:\(address.port!)", timeout: timeout)
        #expect(client.timeout == timeout)
        let (_, peer) = try server.accept(deadline: .now + .seconds(5))
        #expect(try peer == client.localAddress)
        // The listener is on 127.0.0.1 only: the by-name connect can reach it only if this
        // machine's resolver maps localhost to 127.0.0.1 (/etc/hosts, nss-myhostname); say so
        // rather than fail obscurely where it maps only to ::1.
        let localhost = try SocketAddress.resolve("localhost:\(address.port!)", deadline: .now + .seconds(10))
        try #require(localhost.contains(address), "this test needs localhost to resolve to 127.0.0.1; here it gives \(localhost)")
        let viaLocalhost = try Socket.connect(to: "localhost:\(address.port!)", timeout: timeout)
        #expect(viaLocalhost.family == .ipv4 || viaLocalhost.family == .ipv6)
        // And it reached our listener, not something else on ::1 at the same port number.
        let (_, viaLocalhostPeer) = try server.accept(deadline: .now + .seconds(5))
        #expect(try viaLocalhostPeer == viaLocalhost.localAddress)
    }

    @Test("connect by name: refused at once, timed out at the timeout, bad input named")
    func byNameFailures() throws {
        let (holder, refused) = try refusingPort()
        defer { holder.close() }
        let (_, fast) = expectFailure(.connectionRefused) {
            _ = try Socket.connect(to: "\(refused)", timeout: try .after(.seconds(20)))
        }
        #expect(fast < .seconds(1))
        let (server, fillers, full) = try fullQueueListener()
        defer { server.close(); fillers.forEach { $0.close() } }
        let (error, elapsed) = expectFailure(.timedOut) { _ = try Socket.connect(to: "\(full)", timeout: try .after(.milliseconds(250))) }
        expectTiming(elapsed, atLeast: .milliseconds(250))
        #expect(error?.timeout == .milliseconds(250))
        expectFailure(.invalidArgument) { _ = try Socket.connect(to: "127.0.0.1:99999") }
        expectFailure(.invalidArgument) { _ = try Socket.connect(to: "127.0.0.1:80", timeout: .nonBlocking) }
    }
}
