import Foundation
import Sockets
import Synchronization
import Testing

// Cancellation ends any wait at once with .cancelled and loses nothing: a cancelled receive
// or accept has consumed nothing, a cancelled transfer says exactly how much moved, and a
// task already cancelled fails before any system call.

@Suite("async: cancellation")
struct AsyncCancellationTests {
    @Test("a task already cancelled fails before any system call, even with data ready, and consumes nothing")
    func alreadyCancelled() async throws {
        let (client, server) = try await asyncConnectedPair()
        try await server.sendAll([42])
        try #require(try becameReadable(client), "the byte never arrived")
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            _ = try await client.receive(upTo: 1)
        }
        let result = await task.result
        #expect((try? result.get()) == nil)
        if case .failure(let error as SocketError) = result { #expect(error.kind == .cancelled) }
        #expect(try await client.receive(upTo: 1) == [42])
    }

    @Test("cancelling a waiting receive ends it at once, and the bytes sent after go to the next receive")
    func receiveLosesNothing() async throws {
        let (client, server) = try await asyncConnectedPair()
        let waiting = Task { try await client.receive(upTo: 100) }
        await nap(.milliseconds(100))
        let start = ContinuousClock.now
        waiting.cancel()
        let result = await waiting.result
        #expect(ContinuousClock.now - start < .seconds(1))
        guard case .failure(let error as SocketError) = result else {
            Issue.record("expected .cancelled, got \(result)")
            return
        }
        #expect(error.kind == .cancelled)
        #expect("\(error)".contains("receive") && "\(error)".contains("cancelled"))
        try await server.sendAll(Array("every byte".utf8))
        #expect(try await client.receive(exactly: 10, deadline: .now + .seconds(5)) == Array("every byte".utf8))
    }

    @Test("cancellation racing data: every byte sent is received, by the cancelled call or the next")
    func raceWithData() async throws {
        let (client, server) = try await asyncConnectedPair()
        var received: [UInt8] = []
        var sent: [UInt8] = []
        for round in 0..<200 {
            let byte = UInt8(round & 0xff)
            let waiting = Task { try await client.receive(upTo: 10) }
            if round % 3 != 0 { await Task.yield() }
            async let send: Void = server.sendAll([byte])
            waiting.cancel()
            try await send
            sent.append(byte)
            if case .success(let bytes) = await waiting.result { received += bytes }
            // Whatever the cancelled call did not take is still there.
            while received.count < sent.count {
                received += try await client.receive(upTo: 10, deadline: .now + .seconds(5))
            }
        }
        #expect(received == sent)
    }

    @Test("cancelling a waiting accept ends it; a connection that comes later goes to the next accept")
    func acceptLosesNothing() async throws {
        let (listener, address) = try makeListener()
        let waiting = Task { try await listener.accept() }
        await nap(.milliseconds(50))
        waiting.cancel()
        if case .failure(let error as SocketError) = await waiting.result {
            #expect(error.kind == .cancelled)
        } else {
            Issue.record("the accept was not cancelled")
        }
        let client = try Socket(.ipv4)
        try await client.connect(to: address, deadline: .now + .seconds(5))
        let (accepted, peer) = try await listener.accept(deadline: .now + .seconds(5))
        #expect(peer == (try client.localAddress))
        accepted.close()
    }

    @Test("a cancelled sendAll reports exactly the bytes that reach the peer")
    func sendAllCount() async throws {
        let (client, server) = try await asyncConnectedPair()
        try smallBuffers(client, server)
        let big = [UInt8](repeating: 7, count: 4 << 20)
        let sending = Task { try await client.sendAll(big) }
        await nap(.milliseconds(150))
        sending.cancel()
        guard case .failure(let error as SocketError) = await sending.result else {
            Issue.record("sendAll was not cancelled")
            return
        }
        #expect(error.kind == .cancelled)
        let sent = try #require(error.bytesTransferred)
        #expect(sent > 0 && sent < big.count)
        client.close()
        #expect(try await byteCountUntilEndOfStream(server) == sent)
    }

    @Test("a cancelled receive(exactly:) reports what had arrived")
    func exactlyCount() async throws {
        let (client, server) = try await asyncConnectedPair()
        try await server.sendAll([1, 2, 3])
        let receiving = Task { try await client.receive(exactly: 10) }
        await nap(.milliseconds(150))
        receiving.cancel()
        guard case .failure(let error as SocketError) = await receiving.result else {
            Issue.record("receive(exactly:) was not cancelled")
            return
        }
        #expect(error.kind == .cancelled)
        #expect(error.bytesTransferred == 3)
    }

    @Test("a cancelled connect ends at once and leaves no descriptor behind once closed")
    func connectLeavesNothing() async throws {
        let (server, fillers, address) = try fullQueueListener()
        defer { server.close(); fillers.forEach { $0.close() } }
        let before = try await openDescriptorsAfterWarmUp()
        let connecting = Task {
            let socket = try Socket(.ipv4)
            defer { socket.close() }
            try await socket.connect(to: address)
        }
        await nap(.milliseconds(100))
        let start = ContinuousClock.now
        connecting.cancel()
        guard case .failure(let error as SocketError) = await connecting.result else {
            Issue.record("connect was not cancelled")
            return
        }
        #expect(ContinuousClock.now - start < .seconds(1))
        #expect(error.kind == .cancelled)
        #expect(try descriptorsLeaked(since: before).isEmpty)
    }

    @Test("Socket.connect(to: \"HOST:PORT\") cancelled while connecting throws .cancelled and closes its socket")
    func connectByNameCancelled() async throws {
        let (server, fillers, address) = try fullQueueListener()
        defer { server.close(); fillers.forEach { $0.close() } }
        let before = try await openDescriptorsAfterWarmUp()
        let connecting = Task { _ = try await Socket.connect(to: "127.0.0.1:\(address.port!)", timeout: .never) }
        await nap(.milliseconds(100))
        connecting.cancel()
        guard case .failure(let error as SocketError) = await connecting.result else {
            Issue.record("connect was not cancelled")
            return
        }
        #expect(error.kind == .cancelled)
        #expect(try descriptorsLeaked(since: before).isEmpty)
    }
}
