import Foundation
import Sockets
import Synchronization
import Testing

/// The kernel-timer path (see Calls/KernelTimerPolicy.swift): calls sleep in the kernel bounded by
/// SO_RCVTIMEO/SO_SNDTIMEO set shorter than the timeout, then finish by ppoll. These tests
/// check what can go wrong with that: a coarse kernel timer firing early or late, and
/// threads that mix modes, deadlines and timeout changes on one socket.
@Suite("kernel timers: precise, and safe across threads", .serialized)
struct KernelPathTests {
    @Test("second-long timeouts, where the kernel's timer wheel is coarsest, are never early", arguments: [1.0, 1.6])
    func longTimeouts(seconds: Double) throws {
        let (client, server) = try connectedPair()
        defer { server.close() }
        let (listener, _) = try makeListener()
        let timeout = try SocketTimeout.seconds(seconds)
        client.timeout = timeout
        listener.timeout = timeout
        // Both at once: a receive and an accept, each on its own thread.
        let accepting = Background { expectFailure(.timedOut) { _ = try listener.accept() }.1 }
        let (_, receiveElapsed) = expectFailure(.timedOut) { _ = try client.receive(upTo: 1) }
        let acceptElapsed = try accepting.value(within: .seconds(10))
        expectTiming(receiveElapsed, atLeast: .seconds(seconds))
        expectTiming(acceptElapsed, atLeast: .seconds(seconds))
    }

    @Test("a deadline accept next to a blocking accept on one listener ends by its deadline")
    func mixedAccepts() throws {
        let (listener, address) = try makeListener()
        listener.timeout = .never
        // A: sleeps in the kernel's accept, no timer at all.
        let blocking = Background { () throws -> Bool in
            do { _ = try listener.accept(); return true } catch let e as SocketError where e.kind == .closed { return false }
        }
        pause(.milliseconds(50))
        // B: a per-call deadline, so it waits by ppoll with O_NONBLOCK held. The connection
        // arriving wakes both; if A takes it, B's accept must not block on a blocking listener.
        let deadline = Background { () throws -> (SocketError.Kind?, Duration) in
            let start = ContinuousClock.now
            do { _ = try listener.accept(deadline: .now + .milliseconds(500)) } catch let e as SocketError {
                return (e.kind, ContinuousClock.now - start)
            }
            return (nil, ContinuousClock.now - start)
        }
        pause(.milliseconds(100))
        let client = try Socket(.ipv4)
        try client.connect(to: address)
        let (kind, elapsed) = try deadline.value(within: .seconds(5))
        if kind == nil {
            // B took the connection; A is still waiting until the close.
            #expect(elapsed < .milliseconds(500) + .milliseconds(1500))
            listener.close()
            #expect(try blocking.value(within: .seconds(5)) == false)
        } else {
            #expect(kind == .timedOut)
            expectTiming(elapsed, atLeast: .milliseconds(500))
            #expect(try blocking.value(within: .seconds(5)) == true)
            listener.close()
        }
    }

    @Test("lengthening the timeout while another thread waits does not stretch that wait")
    func lengtheningWhileWaiting() throws {
        let (client, server) = try connectedPair()
        defer { server.close() }
        client.timeout = try .after(.milliseconds(400))
        let waiter = Background { expectFailure(.timedOut) { _ = try client.receive(upTo: 1) }.1 }
        pause(.milliseconds(50))
        // Now block forever from a second thread on the same socket, until the close below.
        client.timeout = .never
        let second = Background { expectFailure(.closed) { _ = try client.receive(upTo: 1) }.1 }
        let firstElapsed = try waiter.value(within: .seconds(5))
        expectTiming(firstElapsed, atLeast: .milliseconds(400))
        pause(.milliseconds(100))
        client.close()
        _ = try second.value(within: .seconds(5))
    }

    @Test("shortening the timeout applies to the next call at once")
    func shortening() throws {
        let (client, server) = try connectedPair()
        defer { server.close() }
        client.timeout = try .after(.seconds(30))
        let waiter = Background { expectFailure(.closed) { _ = try client.receive(upTo: 1) }.1 }
        pause(.milliseconds(50))
        client.timeout = try .after(.milliseconds(200))
        let (_, elapsed) = expectFailure(.timedOut) { _ = try client.receive(upTo: 1) }
        expectTiming(elapsed, atLeast: .milliseconds(200))
        client.close()
        _ = try waiter.value(within: .seconds(5))
    }

    @Test("every mode in turn on one socket: forever, timed, deadline, non-blocking, timed again")
    func modesInTurn() throws {
        let (client, server) = try connectedPair()
        defer { server.close() }
        for round in 0..<3 {
            client.timeout = .never
            try server.sendAll([UInt8(round)])
            #expect(try client.receive(upTo: 1) == [UInt8(round)])
            client.timeout = try .after(.milliseconds(120))
            expectTiming(expectFailure(.timedOut) { _ = try client.receive(upTo: 1) }.1, atLeast: .milliseconds(120))
            expectTiming(expectFailure(.timedOut) { _ = try client.receive(upTo: 1, deadline: .now + .milliseconds(60)) }.1,
                         atLeast: .milliseconds(60))
            client.timeout = .nonBlocking
            expectFailure(.wouldBlock) { _ = try client.receive(upTo: 1) }
            client.timeout = try .after(.milliseconds(10))
            expectTiming(expectFailure(.timedOut) { _ = try client.receive(upTo: 1) }.1, atLeast: .milliseconds(10))
        }
    }
}
