import Foundation
import Sockets  // not @testable: what a user writes
import Testing

// Sockets ready in one call: a listener from an address, a connection to a SocketAddress
// (stream or datagram), blocking and async, under the same timeout rules as by name.

@Suite("one-call listening and connecting")
struct ConvenienceTests {
    @Test("listen(on:) from a string and from an address; connect(to: SocketAddress) with a timeout that the socket keeps")
    func listenAndConnect() throws {
        let listener = try Socket.listen(on: "127.0.0.1:0")
        defer { listener.close() }
        let address = try listener.localAddress
        #expect(address.port != 0)
        let client = try Socket.connect(to: address, timeout: try .after(.seconds(2)))
        defer { client.close() }
        #expect(client.timeout == (try .after(.seconds(2))))
        let (server, _) = try listener.accept(deadline: .now + .seconds(5))
        defer { server.close() }
        try client.sendAll(Array("one call".utf8))
        #expect(try server.receive(exactly: 8, deadline: .now + .seconds(5)) == Array("one call".utf8))
        // A second listener on the same port fails, and says where.
        let (error, _) = expectFailure(.addressInUse) { _ = try Socket.listen(on: address) }
        #expect(error?.address == address)
        // Bad input names what was wrong.
        let (bad, _) = expectFailure(.invalidArgument) { _ = try Socket.listen(on: "localhost:80") }
        #expect(bad?.detail?.contains("not a numeric IP address") == true)
    }

    @Test("connect(to: SocketAddress) to a closed port is refused at once; a past deadline fails before any attempt")
    func refusedAndPastDeadline() throws {
        let closed = try Socket.listen(on: "127.0.0.1:0")
        let address = try closed.localAddress
        closed.close()
        expectFailure(.connectionRefused) { _ = try Socket.connect(to: address, timeout: try .after(.seconds(2))) }
        expectFailure(.timedOut) { _ = try Socket.connect(to: address, deadline: .now - .seconds(1)) }
        expectFailure(.invalidArgument) { _ = try Socket.connect(to: address, timeout: .nonBlocking) }
    }

    @Test("connect(to:type: .datagram) gives a connected UDP socket")
    func connectedDatagram() throws {
        let receiver = try Socket(.ipv4, .datagram)
        defer { receiver.close() }
        try receiver.bind(to: .ipv4(.loopback, port: 0))
        let sender = try Socket.connect(to: try receiver.localAddress, type: .datagram)
        defer { sender.close() }
        _ = try sender.send(Array("datagram".utf8))
        let (bytes, from) = try receiver.receiveDatagram(upTo: 64, deadline: .now + .seconds(5))
        #expect(bytes == Array("datagram".utf8))
        #expect(from == (try sender.localAddress))
    }

    @Test("the async connect(to: SocketAddress) connects, keeps the timeout, and is refused at once")
    func asyncConnect() async throws {
        let listener = try Socket.listen(on: "[::1]:0")
        defer { listener.close() }
        let address = try listener.localAddress
        let client = try await Socket.connect(to: address, timeout: try .after(.seconds(2)))
        defer { client.close() }
        #expect(client.timeout == (try .after(.seconds(2))))
        let (server, _) = try await listener.accept(deadline: .now + .seconds(5))
        server.close()
        let closed = try Socket.listen(on: "127.0.0.1:0")
        let gone = try closed.localAddress
        closed.close()
        do {
            _ = try await Socket.connect(to: gone, timeout: try .after(.seconds(2)))
            Issue.record("expected connectionRefused")
        } catch {
            #expect(error.kind == .connectionRefused)
        }
    }
}
