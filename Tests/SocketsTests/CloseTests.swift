import Foundation
import Sockets
import Testing

@Suite("close: idempotent, and it wakes waiters")
struct CloseTests {
    @Test("close is idempotent and every later call fails with .closed")
    func idempotent() throws {
        let (client, _) = try connectedPair()
        client.close()
        client.close()
        #expect(client.isClosed)
        expectFailure(.closed) { _ = try client.receive(upTo: 1) }
        expectFailure(.closed) { try client.sendAll([1]) }
        expectFailure(.closed) { try client.shutdown(.both) }
        expectFailure(.closed) { _ = try client.localAddress }
        expectFailure(.closed) { try client.setOption(.noDelay, true) }
        let (error, _) = expectFailure(.closed) { try client.connect(to: .ipv4(.loopback, port: 1)) }
        #expect(error.map { "\($0)".contains("the socket was closed") } == true)
    }

    @Test("close from another thread wakes a blocked accept, which reports .closed promptly")
    func wakesAccept() throws {
        let (server, _) = try makeListener()
        server.timeout = .never
        let waiter = Background { () -> SocketError.Kind? in
            do { _ = try server.accept(); return nil } catch let e as SocketError { return e.kind }
        }
        pause(.milliseconds(100))
        let start = ContinuousClock.now
        server.close()
        #expect(try waiter.value(within: .seconds(5)) == .closed)
        #expect(ContinuousClock.now - start < .seconds(2))
    }

    @Test("close from another thread wakes a blocked receive with .closed, not EOF")
    func wakesReceive() throws {
        let (client, server) = try connectedPair()
        defer { server.close() }  // kept open: the wake-up must come from close(), not the peer
        client.timeout = .never
        let waiter = Background { () -> SocketError.Kind? in
            do { _ = try client.receive(upTo: 10); return nil } catch let e as SocketError { return e.kind }
        }
        pause(.milliseconds(100))
        client.close()
        #expect(try waiter.value(within: .seconds(5)) == .closed)
    }

    @Test("close from another thread wakes a blocked connect")
    func wakesConnect() throws {
        let (server, fillers, address) = try fullQueueListener()
        defer { server.close(); fillers.forEach { $0.close() } }
        let client = try Socket(.ipv4)
        client.timeout = .never
        let waiter = Background { () -> SocketError.Kind? in
            do { try client.connect(to: address); return nil } catch let e as SocketError { return e.kind }
        }
        pause(.milliseconds(100))
        client.close()
        #expect(try waiter.value(within: .seconds(5)) == .closed)
    }

    @Test("the descriptor is released once the woken waiter has left")
    func releasesDescriptor() throws {
        let before = try openDescriptors()
        do {
            let (server, _) = try makeListener()
            let waiter = Background { () -> Bool in
                do { _ = try server.accept(); return false } catch { return true }
            }
            pause(.milliseconds(50))
            server.close()
            #expect(try waiter.value())
        }
        #expect(try descriptorsLeaked(since: before).isEmpty)
    }

    @Test("a socket nobody references closes its descriptor")
    func deinitCloses() throws {
        let before = try openDescriptors()
        for _ in 0..<100 { _ = try Socket(.ipv4) }
        #expect(try descriptorsLeaked(since: before).isEmpty)
    }
}
