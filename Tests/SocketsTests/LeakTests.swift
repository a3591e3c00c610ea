import Foundation
import Sockets
import Testing

@Suite("no descriptor leaks, close-on-exec everywhere")
struct LeakTests {
    @Test("thousands of failed and timed-out operations leave the descriptor count unchanged")
    func noLeaks() throws {
        let (holder, refused) = try refusingPort()
        let (server, _) = try makeListener()
        let (client, peer) = try connectedPair()
        let before = try openDescriptorCount()
        let oneMs = try SocketTimeout.after(.milliseconds(1))
        var failures = 0
        for _ in 0..<1000 {
            failures += failed { let s = try Socket(.ipv4); try s.connect(to: refused) }
        }
        server.timeout = oneMs
        client.timeout = oneMs
        for _ in 0..<500 {
            failures += failed { _ = try server.accept() }
            failures += failed { _ = try client.receive(upTo: 10) }
        }
        server.timeout = .nonBlocking
        for _ in 0..<500 {
            failures += failed { _ = try server.accept() }
            failures += failed { _ = try SocketAddress("127.0.0.1:99999") }
            failures += failed { _ = try Socket.connect(to: "\(refused)", timeout: oneMs) }
            failures += failed { let s = try Socket(.ipv4); try s.bind(to: .ipv4(.loopback, port: refused.port!)) }
            failures += failed { let s = try Socket(.ipv4); s.close(); try s.sendAll([1]) }
            failures += failed { _ = try client.receive(upTo: 1, deadline: .now - .seconds(1)) }
        }
        #expect(failures == 1000 + 500 * 2 + 500 * 6)
        #expect(try openDescriptorCount() == before)
        _ = (holder, peer)
    }

    @Test("every descriptor the library creates is close-on-exec")
    func closeOnExec() throws {
        let (listener, address) = try makeListener()
        let client = try Socket(.ipv4)
        try client.connect(to: address)
        let (accepted, _) = try listener.accept()
        let (a, b) = try Socket.pair()
        let udp = try Socket(.ipv6, .datagram)
        let byName = try Socket.connect(to: "\(address)")
        for socket in [listener, client, accepted, a, b, udp, byName] {
            let flags = try socket.withUnsafeDescriptor { fcntl($0, F_GETFD) }
            #expect(flags & FD_CLOEXEC != 0, "\(socket) is not close-on-exec")
        }
    }
}

/// 1 if `body` throws, else 0.
private func failed(_ body: () throws -> Void) -> Int {
    do { try body(); return 0 } catch { return 1 }
}
