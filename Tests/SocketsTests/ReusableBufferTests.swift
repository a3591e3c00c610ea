import Foundation
import Sockets
import Testing

// Receiving into one [UInt8] reused for every call: safe (no pointers), and the array's
// storage is the same after each call (nothing allocated or copied per call).

private func storage(_ array: [UInt8]) -> UnsafeRawPointer? { array.withUnsafeBytes { $0.baseAddress } }

@Suite("receive into a reusable buffer")
struct ReusableBufferTests {
    @Test("stream: fills from the start, leaves the rest, keeps the same storage; 0 at end of stream")
    func stream() throws {
        let (client, server) = try connectedPair()
        var buffer = [UInt8](repeating: 0xEE, count: 8)
        let before = storage(buffer)
        try server.sendAll(Array("abc".utf8))
        #expect(try client.receive(into: &buffer, deadline: .now + .seconds(5)) == 3)
        #expect(buffer == Array("abc".utf8) + [UInt8](repeating: 0xEE, count: 5))
        try server.sendAll(Array("0123456789".utf8))
        var got: [UInt8] = []
        while got.count < 10 {
            let n = try client.receive(into: &buffer, deadline: .now + .seconds(5))
            got += buffer[..<n]
        }
        #expect(got == Array("0123456789".utf8))
        #expect(storage(buffer) == before, "the array was reallocated")
        server.close()
        #expect(try client.receive(into: &buffer, deadline: .now + .seconds(5)) == 0)
    }

    @Test("stream: a timeout leaves the buffer as it was, with the usual message")
    func timeout() throws {
        let (client, server) = try connectedPair()
        defer { server.close() }
        client.timeout = try .after(.milliseconds(100))
        var buffer = [UInt8](repeating: 7, count: 4)
        let (error, elapsed) = expectFailure(.timedOut) { _ = try client.receive(into: &buffer) }
        expectTiming(elapsed, atLeast: .milliseconds(100))
        #expect(error.map { "\($0)" } == "receive from \(try server.localAddress) timed out after 100ms")
        #expect(buffer == [7, 7, 7, 7])
    }

    @Test("datagrams: each one from the start, cut to the buffer, with its sender")
    func datagrams() throws {
        let receiver = try Socket(.ipv4, .datagram)
        try receiver.bind(to: .ipv4(.loopback, port: 0))
        let sender = try Socket(.ipv4, .datagram)
        try sender.bind(to: .ipv4(.loopback, port: 0))
        var buffer = [UInt8](repeating: 0, count: 4)
        let before = storage(buffer)
        _ = try sender.send(Array("hello".utf8), to: try receiver.localAddress)
        _ = try sender.send(Array("hi".utf8), to: try receiver.localAddress)
        let first = try receiver.receive(from: &buffer, deadline: .now + .seconds(5))
        #expect(first.count == 4 && buffer == Array("hell".utf8))
        #expect(first.sender == (try sender.localAddress))
        let second = try receiver.receive(from: &buffer, deadline: .now + .seconds(5))
        #expect(second.count == 2 && buffer[..<2] == ArraySlice("hi".utf8))
        #expect(storage(buffer) == before)
    }

    @Test("async: the same, and a cancelled receive consumes nothing")
    func async() async throws {
        let (client, server) = try await asyncConnectedPair()
        defer { server.close() }
        var buffer = [UInt8](repeating: 0, count: 16)
        let before = storage(buffer)
        try await server.sendAll(Array("ping".utf8))
        let n = try await client.receive(into: &buffer, deadline: .now + .seconds(5))
        #expect(buffer[..<n] == ArraySlice("ping".utf8))
        #expect(storage(buffer) == before)
        let waiting = Task { () -> SocketError? in
            var own = [UInt8](repeating: 0, count: 16)
            do throws(SocketError) { _ = try await client.receive(into: &own); return nil } catch { return error }
        }
        try await Task.sleep(for: .milliseconds(50))
        waiting.cancel()
        #expect(await waiting.value?.kind == .cancelled)
        try await server.sendAll(Array("pong".utf8))
        let m = try await client.receive(into: &buffer, deadline: .now + .seconds(5))
        #expect(buffer[..<m] == ArraySlice("pong".utf8))

        let receiver = try Socket(.ipv4, .datagram)
        try receiver.bind(to: .ipv4(.loopback, port: 0))
        let sender = try Socket(.ipv4, .datagram)
        _ = try await sender.send(Array("dgram".utf8), to: try receiver.localAddress)
        var small = [UInt8](repeating: 0, count: 8)
        let (count, _) = try await receiver.receive(from: &small, deadline: .now + .seconds(5))
        #expect(small[..<count] == ArraySlice("dgram".utf8))
    }
}
