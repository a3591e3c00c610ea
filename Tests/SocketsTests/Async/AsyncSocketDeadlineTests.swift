import Foundation
import Sockets
import Testing

// The async twins of SocketDeadlineTests: a deadline set from another task (or thread)
// reaches a parked call at once — no first-time exception, the reactor holds the timers.

@Suite("async: socket deadlines reach parked calls")
struct AsyncSocketDeadlineTests {
    @Test("set from another task while a receive is parked: ends at the new instant, never early; nothing consumed")
    func setWhileParked() async throws {
        let (client, server) = try await asyncConnectedPair()
        defer { server.close() }
        var lateness: [Duration] = []
        for _ in 0..<5 {
            let call = Task { () -> (SocketError?, ContinuousClock.Instant) in
                do throws(SocketError) {
                    _ = try await client.receive(upTo: 100)
                    return (nil, .now)
                } catch {
                    return (error, .now)
                }
            }
            try await Task.sleep(for: .milliseconds(50))
            let instant = ContinuousClock.now + .milliseconds(150)
            client.setReceiveDeadline(instant)
            let (error, at) = await call.value
            #expect(error?.kind == .timedOut, "\(String(describing: error))")
            #expect(error.map { "\($0)" } == "receive from \(try server.localAddress) timed out: the socket's receive deadline passed")
            #expect(at >= instant, "ended \(instant - at) early")
            #expect(at - instant < .milliseconds(500), "far too late: \(at - instant)")
            lateness.append(at - instant)
            client.setReceiveDeadline(nil)
        }
        lateness.sort()
        #expect(lateness[2] < .milliseconds(20), "median lateness \(lateness[2])")
        print("socket deadline set while an async receive is parked: lateness \(lateness), median \(lateness[2])")
        try await server.sendAll(Array("after".utf8))
        #expect(try await client.receive(upTo: 100) == Array("after".utf8))
    }

    @Test("the first deadline, already passed, ends a parked receive at once; a later one extends a wait")
    func firstAndExtended() async throws {
        let (client, server) = try await asyncConnectedPair()
        defer { server.close() }
        let first = Task { () -> SocketError? in
            do throws(SocketError) { _ = try await client.receive(upTo: 100); return nil } catch { return error }
        }
        try await Task.sleep(for: .milliseconds(100))
        let set = ContinuousClock.now
        client.setReceiveDeadline(.now)
        #expect(await first.value?.kind == .timedOut)
        #expect(ContinuousClock.now - set < .milliseconds(200), "took \(ContinuousClock.now - set)")

        let start = ContinuousClock.now
        client.setReceiveDeadline(start + .milliseconds(200))
        let second = Task { () -> SocketError? in
            do throws(SocketError) { _ = try await client.receive(upTo: 100); return nil } catch { return error }
        }
        try await Task.sleep(for: .milliseconds(100))
        client.setReceiveDeadline(start + .milliseconds(600))
        #expect(await second.value?.kind == .timedOut)
        expectTiming(ContinuousClock.now - start, atLeast: .milliseconds(600))
    }

    @Test("a deadline already passed fails an async call before any system call, even with data waiting")
    func pastAtStart() async throws {
        let (client, server) = try await asyncConnectedPair()
        defer { server.close() }
        try await server.sendAll(Array("x".utf8))
        client.setDeadline(.now - .seconds(1))
        let (error, _) = await expectAsyncFailure(.timedOut) { _ = try await client.receive(upTo: 10) }
        #expect(error.map { "\($0)" } == "receive from \(try server.localAddress) timed out: the socket's receive deadline had already passed")
        let (sendError, _) = await expectAsyncFailure(.timedOut) { try await client.sendAll([1, 2, 3]) }
        #expect(sendError?.bytesTransferred == 0)
        client.setDeadline(nil)
        #expect(try await client.receive(upTo: 10) == Array("x".utf8))
    }

    @Test("the send deadline ends a parked sendAll with what was sent; a parked receive on the same socket keeps waiting")
    func sendAllAndReceive() async throws {
        let (client, server) = try await asyncConnectedPair()
        try smallBuffers(client, server)
        let receiving = Task { () -> [UInt8]? in try? await client.receive(upTo: 10) }
        let sending = Task { () -> SocketError? in
            do throws(SocketError) { try await client.sendAll([UInt8](repeating: 1, count: 4 << 20)); return nil } catch { return error }
        }
        try await Task.sleep(for: .milliseconds(150))
        let instant = ContinuousClock.now + .milliseconds(50)
        client.setSendDeadline(instant)
        let error = await sending.value
        #expect(error?.kind == .timedOut)
        #expect(ContinuousClock.now >= instant)
        let sent = error?.bytesTransferred ?? -1
        #expect(sent > 0 && sent < 4 << 20, "sent \(sent)")
        try await Task.sleep(for: .milliseconds(100))
        try await server.sendAll([9])
        #expect(await receiving.value == [9])
        try client.shutdown(.write)
        var total = 0
        while true {
            let chunk = try await server.receive(upTo: 65_536, deadline: .now + .seconds(5))
            if chunk.isEmpty { break }
            total += chunk.count
        }
        #expect(total == sent)
    }

    @Test("the receive deadline ends a parked accept, set from a plain thread")
    func acceptFromThread() async throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let set = Background { () -> ContinuousClock.Instant in
            pause(.milliseconds(100))
            let instant = ContinuousClock.now + .milliseconds(100)
            listener.setReceiveDeadline(instant)
            return instant
        }
        let (error, _) = await expectAsyncFailure(.timedOut) { _ = try await listener.accept() }
        let instant = try set.value()
        #expect(ContinuousClock.now >= instant)
        #expect(error.map { "\($0)" } == "accept on \(address) timed out: the socket's receive deadline passed")
    }

    @Test("a deadline set before the first async call reaches it (the registration copies it)")
    func setBeforeRegistration() async throws {
        let (client, server) = try connectedPair()
        defer { server.close() }
        let start = ContinuousClock.now
        client.setReceiveDeadline(start + .milliseconds(150))
        _ = await expectAsyncFailure(.timedOut) { _ = try await client.receive(upTo: 10) }
        expectTiming(ContinuousClock.now - start, atLeast: .milliseconds(150))
    }
}
