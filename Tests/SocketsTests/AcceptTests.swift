import Sockets
import Testing

@Suite("accept in every mode")
struct AcceptTests {
    @Test("a timed accept with nobody connecting times out, never early")
    func timesOut() throws {
        let (server, address) = try makeListener()
        server.timeout = try .after(.milliseconds(200))
        let (error, elapsed) = expectFailure(.timedOut) { _ = try server.accept() }
        expectTiming(elapsed, atLeast: .milliseconds(200))
        #expect(error?.timeout == .milliseconds(200))
        #expect(error?.address == address)
        #expect(error?.errno == nil)
        #expect(error.map { "\($0)" } == "accept on \(address) timed out after 200ms")
    }

    @Test("a non-blocking accept with nobody connecting fails at once with wouldBlock")
    func nonBlocking() throws {
        let (server, _) = try makeListener()
        server.timeout = .nonBlocking
        let (error, elapsed) = expectFailure(.wouldBlock) { _ = try server.accept() }
        #expect(error?.errno == .resourceTemporarilyUnavailable)
        #expect(elapsed < .milliseconds(200))
    }

    @Test("a blocking accept waits for the connection that comes later")
    func blockingWaits() throws {
        let (server, address) = try makeListener()
        server.timeout = .never
        let client = Background {
            pause(.milliseconds(100))
            let s = try Socket(.ipv4)
            try s.connect(to: address)
            return try s.localAddress
        }
        let (connection, peer) = try server.accept(deadline: .now + .seconds(10))
        #expect(try peer == client.value())
        #expect(try connection.peerAddress == peer)
    }

    @Test("a timed accept returns the connection that arrives within the timeout")
    func timedSucceeds() throws {
        let (server, address) = try makeListener()
        server.timeout = try .after(.seconds(5))
        let client = Background {
            pause(.milliseconds(50))
            let s = try Socket(.ipv4)
            try s.connect(to: address)
            return s
        }
        let start = ContinuousClock.now
        _ = try server.accept()
        #expect(ContinuousClock.now - start < .seconds(4))
        _ = try client.value()
    }

    @Test("a per-call deadline earlier than the timeout wins")
    func deadlineWins() throws {
        let (server, _) = try makeListener()
        server.timeout = try .after(.seconds(30))
        let (error, elapsed) = expectFailure(.timedOut) { _ = try server.accept(deadline: .now + .milliseconds(150)) }
        expectTiming(elapsed, atLeast: .milliseconds(150))
        #expect(error!.timeout! <= .milliseconds(150))
    }

    @Test("a timeout earlier than the per-call deadline wins")
    func timeoutWins() throws {
        let (server, _) = try makeListener()
        server.timeout = try .after(.milliseconds(150))
        let (error, elapsed) = expectFailure(.timedOut) { _ = try server.accept(deadline: .now + .seconds(30)) }
        expectTiming(elapsed, atLeast: .milliseconds(150))
        #expect(error?.timeout == .milliseconds(150))
    }

    @Test("a deadline in the past fails before any system call, even with a connection waiting")
    func pastDeadline() throws {
        let (server, address) = try makeListener()
        let client = try Socket(.ipv4)
        try client.connect(to: address)  // queued, ready to accept ...
        // ... once the kernel has handled the handshake's last ACK, which a loaded machine may defer.
        try #require(try becameReadable(server), "the connection never reached the accept queue")
        let (error, elapsed) = expectFailure(.timedOut) { _ = try server.accept(deadline: .now - .milliseconds(1)) }
        #expect(error?.timeout == .zero)
        #expect(error.map { "\($0)".contains("deadline had already passed") } == true)
        #expect(elapsed < .milliseconds(100))
        // The connection was not consumed.
        server.timeout = .nonBlocking
        let (_, peer) = try server.accept()
        #expect(try peer == client.localAddress)
    }

    @Test("the accepted socket takes the process default, not the listener's timeout")
    func acceptedTakesDefault() throws {
        try withDefaultTimeout(.never) {
            let (server, address) = try makeListener()
            server.timeout = try .after(.seconds(5))
            let client = try Socket(.ipv4)
            try client.connect(to: address)
            let (accepted, _) = try server.accept()
            #expect(accepted.timeout == .never)
        }
        let fallback = try SocketTimeout.after(.milliseconds(150))
        try withDefaultTimeout(fallback) {
            let (server, address) = try makeListener()
            server.timeout = .nonBlocking
            let client = try Socket(.ipv4)
            try client.connect(to: address)
            try #require(try becameReadable(server), "the connection never reached the accept queue")  // not a fixed pause
            let (accepted, _) = try server.accept()
            #expect(accepted.timeout == fallback)
            // And it behaves so: a receive on it times out after the default.
            let (_, elapsed) = expectFailure(.timedOut) { _ = try accepted.receive(upTo: 10) }
            expectTiming(elapsed, atLeast: .milliseconds(150))
        }
    }

    @Test("accept on a socket that is not listening is an invalid argument")
    func notListening() throws {
        let socket = try Socket(.ipv4)
        try socket.bind(to: .ipv4(.loopback, port: 0))
        expectFailure(.invalidArgument) { _ = try socket.accept() }
    }
}
