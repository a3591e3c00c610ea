import Foundation
import Sockets
import Testing

// Connect to a full accept queue (times out) and to a closed port (refused at once) are in
// ConnectTests; a true black hole (SYNs dropped in a network namespace) is in sockTests.

@Suite("fault suite: peers that fail")
struct PeerFaultTests {
    @Test("a reset in the middle of a stream: the data before it, then .connectionReset")
    func resetMidStream() throws {
        // Small fixed buffers (smallBufferPair, IOTests.swift): with default ones, whether the
        // whole payload fitted in the client's receive queue — so that no reset could come
        // "in the middle" — depended on tcp_rmem and on autotuning.
        let (client, server) = try smallBufferPair()
        client.timeout = try .after(.seconds(5))
        let payload = [UInt8](repeating: 42, count: 1 << 20)
        let capacity = try client.option(.receiveBufferSize) + server.option(.sendBufferSize)
        try #require(10_000 + capacity < payload.count / 4, "the path holds \(capacity) bytes, not far below the payload")
        let sender = Background { () -> Bool in
            // The buffers cannot take the payload: this gives up at its deadline, the rest unsent.
            do { try server.sendAll(payload, deadline: .now + .milliseconds(500)) } catch { return false }
            return true
        }
        #expect(try client.receive(exactly: 10_000).count == 10_000)
        #expect(try sender.value() == false, "the whole payload went out before the reset")
        try server.setOption(.linger, .zero)
        server.close()
        var received = 10_000
        var ending: SocketError?
        for _ in 0..<10_000 {  // bounded: 1 MiB in reads of up to 64 KiB needs far fewer
            do throws(SocketError) {
                let chunk = try client.receive(upTo: 65_536)
                if chunk.isEmpty { break }
                received += chunk.count
            } catch {
                ending = error
                break
            }
        }
        #expect(ending?.kind == .connectionReset, "ended with \(ending.map { "\($0)" } ?? "end of stream")")
        #expect(received < payload.count)
        // The kernel has forgotten the peer by now; the message still names it.
        let text = ending.map { "\($0)" } ?? ""
        #expect(text.hasPrefix("receive from 127.0.0.1:") && text.contains("ECONNRESET"), "\(text)")
    }

    @Test("half-close in either direction: EOF at once on one side, the other side still flows",
          arguments: ["client", "server"])
    func halfClose(closer: String) throws {
        let (client, server) = try connectedPair()
        let (closing, other) = closer == "client" ? (client, server) : (server, client)
        for socket in [closing, other] { socket.timeout = try .after(.seconds(5)) }
        try closing.sendAll(Array("last words".utf8))
        try closing.shutdown(.write)
        let start = ContinuousClock.now
        #expect(try other.receive(exactly: 10) == Array("last words".utf8))
        #expect(try other.receive(upTo: 16).isEmpty)  // EOF, not a timeout
        #expect(ContinuousClock.now - start < .seconds(1))
        try other.sendAll(Array("reply".utf8))
        #expect(try closing.receive(exactly: 5) == Array("reply".utf8))
        expectFailure(.brokenPipe) { try closing.sendAll([1]) }
        try other.shutdown(.write)
        #expect(try closing.receive(upTo: 16).isEmpty)
    }

    @Test("the peer closes during a long sendAll: the error says how it ended and how far it got")
    func peerClosesDuringSendAll() throws {
        // Small fixed buffers (smallBufferPair, IOTests.swift): with default ones, a machine
        // whose tcp_wmem[2] + tcp_rmem[2] reach 64 MiB could finish the sendAll before the close.
        let (client, server) = try smallBufferPair()
        let total = 64 << 20
        let capacity = try client.option(.sendBufferSize) + server.option(.receiveBufferSize)
        try #require(100_000 + capacity < total / 16, "the path holds \(capacity) bytes, not far below the payload")
        let writer = Background { () -> SocketError? in
            do throws(SocketError) {
                try client.sendAll([UInt8](repeating: 1, count: total), deadline: .now + .seconds(20))
                return nil
            } catch {
                return error
            }
        }
        _ = try server.receive(exactly: 100_000, deadline: .now + .seconds(5))
        server.close()  // with unread data: the kernel answers with a reset
        let error = try writer.value(within: .seconds(20))
        #expect(error?.kind == .connectionReset || error?.kind == .brokenPipe, "sendAll ended with \(error.map { "\($0)" } ?? "success")")
        let sent = error?.bytesTransferred ?? 0
        #expect(sent >= 100_000 && sent < total, "\(sent) bytes reported sent")
        let text = error.map { "\($0)" } ?? ""
        #expect(text.hasPrefix("sendAll to 127.0.0.1:"), "\(text)")
        #expect(text.contains("ECONNRESET") || text.contains("EPIPE"), "\(text)")
        #expect(text.contains("\(sent) bytes transferred"), "\(text)")
    }
}
