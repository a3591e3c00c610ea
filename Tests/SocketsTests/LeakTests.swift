import Foundation
import Sockets
import Testing

@Suite("no descriptor leaks")
struct LeakTests {
    @Test("thousands of failed and timed-out operations leave the descriptor count unchanged")
    func noLeaks() throws {
        // Counted before the long-lived sockets exist and compared after they are closed:
        // a socket's waker (the eventfd close() writes to) is made by its first wait in
        // poll and lives as long as the socket.
        let before = try openDescriptors()
        let (holder, refused) = try refusingPort()
        let (server, _) = try makeListener()
        let (client, peer) = try connectedPair()
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
        [holder, server, client, peer].forEach { $0.close() }
        #expect(try descriptorsLeaked(since: before).isEmpty)
    }
    // Close-on-exec: DescriptorAccountingTests checks it across a real posix_spawn.
}

/// 1 if `body` throws, else 0.
private func failed(_ body: () throws -> Void) -> Int {
    do { try body(); return 0 } catch { return 1 }
}
