import Foundation
import Sockets
import Testing

// The async twins of the blocking timeout tests: the same assertions (never early, a
// generous upper bound, the same error texts), with the calls awaited.

@Suite("async: timeouts and deadlines, as in the blocking calls")
struct AsyncTimeoutTests {
    @Test("a timed receive with no data times out, never early, and is not EOF")
    func receiveTimesOut() async throws {
        let (client, server) = try await asyncConnectedPair()
        client.timeout = try .after(.milliseconds(200))
        let (error, elapsed) = await expectAsyncFailure(.timedOut) { _ = try await client.receive(upTo: 100) }
        expectTiming(elapsed, atLeast: .milliseconds(200))
        #expect(error.map { "\($0)" } == "receive from \(try server.localAddress) timed out after 200ms")
        try await server.sendAll(Array("late".utf8))
        #expect(try await client.receive(upTo: 100) == Array("late".utf8))
    }

    @Test("end of stream is an empty receive, at once, whatever the timeout")
    func endOfStream() async throws {
        let (client, server) = try await asyncConnectedPair()
        client.timeout = try .after(.seconds(30))
        server.close()
        let start = ContinuousClock.now
        #expect(try await client.receive(upTo: 100).isEmpty)
        #expect(ContinuousClock.now - start < .seconds(1))
    }

    @Test("a zero-length receive returns at once")
    func zeroLength() async throws {
        let (client, _) = try await asyncConnectedPair()
        let start = ContinuousClock.now
        #expect(try await client.receive(upTo: 0).isEmpty)
        #expect(ContinuousClock.now - start < .seconds(1))
    }

    @Test("a non-blocking socket fails with wouldBlock instead of suspending")
    func nonBlocking() async throws {
        let (client, server) = try await asyncConnectedPair()
        client.timeout = .nonBlocking
        let (error, _) = await expectAsyncFailure(.wouldBlock) { _ = try await client.receive(upTo: 10) }
        #expect(error?.errno == .resourceTemporarilyUnavailable)
        try await server.sendAll([1, 2, 3])
        try #require(try becameReadable(client), "the 3 bytes never arrived")
        #expect(try await client.receive(upTo: 10) == [1, 2, 3])
    }

    @Test("a receive with no limit waits for data that comes later")
    func waitsForData() async throws {
        let (client, server) = try await asyncConnectedPair()
        let sender = Task {
            await nap(.milliseconds(100))
            try await server.sendAll(Array("hi".utf8))
        }
        #expect(try await client.receive(upTo: 10, deadline: .now + .seconds(10)) == Array("hi".utf8))
        try await value(of: sender)
    }

    @Test("a past deadline fails before the system call, even with data ready, and consumes nothing")
    func pastDeadline() async throws {
        let (client, server) = try await asyncConnectedPair()
        try await server.sendAll([7])
        try #require(try becameReadable(client), "the byte never arrived")
        let (error, _) = await expectAsyncFailure(.timedOut) { _ = try await client.receive(upTo: 1, deadline: .now - .nanoseconds(1)) }
        #expect(error?.timeout == .zero)
        #expect(try await client.receive(upTo: 1) == [7])
    }

    @Test("the earlier of the socket's timeout and the call's deadline ends the call, and the message names it")
    func earlierWins() async throws {
        let (client, server) = try await asyncConnectedPair()
        client.timeout = try .after(.seconds(30))
        let (error, elapsed) = await expectAsyncFailure(.timedOut) {
            _ = try await client.receive(upTo: 10, deadline: .now + .milliseconds(150))
        }
        expectTiming(elapsed, atLeast: .milliseconds(150))
        #expect(error?.timeout ?? .zero <= .milliseconds(150))
        client.timeout = try .after(.milliseconds(120))
        let (second, elapsed2) = await expectAsyncFailure(.timedOut) {
            _ = try await client.receive(upTo: 10, deadline: .now + .seconds(30))
        }
        expectTiming(elapsed2, atLeast: .milliseconds(120))
        #expect(second.map { "\($0)" } == "receive from \(try server.localAddress) timed out after 120ms")
    }

    @Test("receive(exactly:) gathers partial reads, and an early end is endOfStream with the count")
    func exactly() async throws {
        let (client, server) = try await asyncConnectedPair()
        let sender = Task {
            for chunk in [[1, 2], [3], [4, 5, 6]] as [[UInt8]] {
                try await server.sendAll(chunk)
                await nap(.milliseconds(10))
            }
            server.close()
        }
        #expect(try await client.receive(exactly: 4, deadline: .now + .seconds(10)) == [1, 2, 3, 4])
        let (error, _) = await expectAsyncFailure(.endOfStream) { _ = try await client.receive(exactly: 5, deadline: .now + .seconds(10)) }
        #expect(error?.bytesTransferred == 2)
        try await value(of: sender)
    }

    @Test("receive(exactly:) has one limit for the whole transfer, however the bytes trickle in")
    func exactlyOneLimit() async throws {
        let (client, server) = try await asyncConnectedPair()
        client.timeout = try .after(.milliseconds(300))
        let sender = Task {
            for _ in 0..<20 {  // a byte every 50 ms: each wait is short, the whole is not
                try await server.sendAll([1])
                await nap(.milliseconds(50))
            }
        }
        let (error, elapsed) = await expectAsyncFailure(.timedOut) { _ = try await client.receive(exactly: 20) }
        expectTiming(elapsed, atLeast: .milliseconds(300))
        #expect((error?.bytesTransferred ?? 0) > 0)
        sender.cancel()
        _ = await sender.result
    }

    @Test("sendAll to a peer that does not read: one limit for the whole transfer, and the count sent")
    func sendAllTimesOut() async throws {
        let (client, server) = try await asyncConnectedPair()
        try smallBuffers(client, server)
        client.timeout = try .after(.milliseconds(250))
        let big = [UInt8](repeating: 0xab, count: 4 << 20)
        let (error, elapsed) = await expectAsyncFailure(.timedOut) { try await client.sendAll(big) }
        expectTiming(elapsed, atLeast: .milliseconds(250))
        let sent = try #require(error?.bytesTransferred)
        #expect(sent > 0 && sent < big.count)
        // Exactly that much arrives.
        client.close()
        #expect(try await byteCountUntilEndOfStream(server) == sent)
    }

    @Test("accept with a timeout and nobody connecting: timed out, never early, the same message")
    func acceptTimesOut() async throws {
        let (listener, address) = try makeListener()
        listener.timeout = try .after(.milliseconds(200))
        let (error, elapsed) = await expectAsyncFailure(.timedOut) { _ = try await listener.accept() }
        expectTiming(elapsed, atLeast: .milliseconds(200))
        #expect(error.map { "\($0)" } == "accept on \(address) timed out after 200ms")
    }

    @Test("connect to a port where nothing listens is refused at once, whatever the timeout")
    func connectRefused() async throws {
        let (holder, address) = try refusingPort()
        defer { holder.close() }
        let client = try Socket(.ipv4)
        client.timeout = try .after(.seconds(30))
        let (error, elapsed) = await expectAsyncFailure(.connectionRefused) { try await client.connect(to: address) }
        #expect(elapsed < .seconds(2))
        #expect(error.map { "\($0)" } == "connect to \(address) failed: Connection refused (ECONNREFUSED)")
    }

    @Test("connect to a full accept queue times out at the requested time, never early")
    func connectTimesOut() async throws {
        let (server, fillers, address) = try fullQueueListener()
        defer { server.close(); fillers.forEach { $0.close() } }
        let client = try Socket(.ipv4)
        let (error, elapsed) = await expectAsyncFailure(.timedOut) {
            try await client.connect(to: address, deadline: .now + .milliseconds(300))
        }
        expectTiming(elapsed, atLeast: .milliseconds(300))
        #expect(error?.address == address)
    }

    @Test("the process default applies to sockets created after it is set, in async calls too")
    func defaultTimeout() async throws {
        let (listener, _) = try makeListener()
        let saved = Socket.defaultTimeout
        Socket.defaultTimeout = try .after(.milliseconds(150))
        let later = try Socket(.ipv4)
        Socket.defaultTimeout = saved
        defer { later.close() }
        try later.bind(to: .ipv4(.loopback, port: 0))
        try later.listen()
        let (_, elapsed) = await expectAsyncFailure(.timedOut) { _ = try await later.accept() }
        expectTiming(elapsed, atLeast: .milliseconds(150))
        #expect(listener.timeout == .never)
    }

    @Test("datagrams: a round trip, and a timed receive(from:) that times out")
    func datagrams() async throws {
        let a = try Socket(.ipv4, .datagram)
        let b = try Socket(.ipv4, .datagram)
        try a.bind(to: .ipv4(.loopback, port: 0))
        try b.bind(to: .ipv4(.loopback, port: 0))
        _ = try await a.send([1, 2, 3], to: try b.localAddress)
        let (bytes, sender) = try await b.receiveDatagram(upTo: 100, deadline: .now + .seconds(5))
        #expect(bytes == [1, 2, 3])
        #expect(sender == (try a.localAddress))
        b.timeout = try .after(.milliseconds(150))
        let (error, elapsed) = await expectAsyncFailure(.timedOut) {
            let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: 10, alignment: 1)
            defer { storage.deallocate() }
            _ = try await b.receive(from: storage)
        }
        expectTiming(elapsed, atLeast: .milliseconds(150))
        #expect(error?.operation == .receiveFrom)
    }

    @Test("Unix stream and datagram pairs work with the async calls")
    func unix() async throws {
        let (a, b) = try Socket.pair()
        try await a.sendAll(Array("over unix".utf8))
        #expect(try await b.receive(exactly: 9, deadline: .now + .seconds(5)) == Array("over unix".utf8))
        let (c, d) = try Socket.pair(.datagram)
        _ = try await c.send([9, 9])
        #expect(try await d.receive(upTo: 10, deadline: .now + .seconds(5)) == [9, 9])
    }

    @Test("Socket.connect(to: \"HOST:PORT\") resolves and connects; a bad name is a clear error")
    func connectByName() async throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let socket = try await Socket.connect(to: "127.0.0.1:\(address.port!)", timeout: try .after(.seconds(5)))
        #expect(socket.timeout == (try .after(.seconds(5))))
        #expect(try socket.peerAddress == address)
        let (error, _) = await expectAsyncFailure(.invalidArgument) { _ = try await Socket.connect(to: "no-port-here") }
        #expect(error?.detail != nil)
    }
}
