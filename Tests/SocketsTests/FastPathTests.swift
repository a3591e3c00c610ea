import Foundation
import Synchronization
import Testing

@testable import Sockets

/// The lock-free start of a call and the lazily set kernel timers (KernelTimers.swift):
/// what the kernel and the socket's ticket say after each kind of call, and that a call
/// which started without the lock keeps its time limit while other threads change things.
@Suite("calls that start without the lock, and timers set only when a call must wait", .serialized)
struct FastPathTests {
    @Test("once one call has set the timer, the next with no deadline starts without the lock; a new timeout takes that back")
    func ticket() throws {
        let (a, b) = try Socket.pair()
        defer { b.close() }
        func ready() -> (receive: Bool, send: Bool) {
            let t = a.ticket.load(ordering: .relaxed)
            return (t & Ticket.ready(.receive) != 0, t & Ticket.ready(.send) != 0)
        }
        a.timeout = try .after(.seconds(5))
        #expect(ready() == (false, false))
        // The first receive finds data: it never set a timer, so nothing is ready yet.
        try b.sendAll([1])
        #expect(try a.receive(upTo: 1) == [1])
        #expect(ready() == (false, false))
        // The next one must wait: it sets the timer and marks the direction ready.
        let sender = Background { pause(.milliseconds(50)); try b.sendAll([2]) }
        #expect(try a.receive(upTo: 1) == [2])
        try sender.value()
        try b.sendAll([3])
        #expect(try a.receive(upTo: 1) == [3])
        #expect(ready() == (true, false))
        // A call with its own deadline neither uses nor clears the ticket.
        try b.sendAll([4])
        #expect(try a.receive(upTo: 1, deadline: .now + .seconds(1)) == [4])
        #expect(ready() == (true, false))
        // A new timeout clears it; so does every timeout that waits by ppoll alone.
        a.timeout = try .after(.seconds(6))
        #expect(ready() == (false, false))
        a.timeout = try .after(.milliseconds(20))
        expectTiming(expectFailure(.timedOut) { _ = try a.receive(upTo: 1) }.1, atLeast: .milliseconds(20))
        expectTiming(expectFailure(.timedOut) { _ = try a.receive(upTo: 1) }.1, atLeast: .milliseconds(20))
        #expect(ready() == (false, false))
        a.timeout = .nonBlocking
        expectFailure(.wouldBlock) { _ = try a.receive(upTo: 1) }
        #expect(ready() == (false, false))
    }

    @Test("a waiter that started without the lock keeps its limit while another thread asks for none")
    func lengtheningUnderALockFreeWaiter() throws {
        let (client, server) = try connectedPair()
        defer { server.close() }
        client.timeout = try .after(.milliseconds(400))
        // Two receives that must wait: the second one leaves the receive direction ready.
        for byte: UInt8 in [1, 2] {
            let sender = Background { pause(.milliseconds(20)); try server.sendAll([byte]) }
            #expect(try client.receive(upTo: 1) == [byte])
            try sender.value()
        }
        #expect(client.ticket.load(ordering: .relaxed) & Ticket.ready(.receive) != 0)
        let waiter = Background { expectFailure(.timedOut) { _ = try client.receive(upTo: 1) }.1 }
        pause(.milliseconds(50))
        // No limit from now on: this receive wants no kernel timer, but must not lengthen
        // the one the waiter sleeps on. (Linux reads SO_RCVTIMEO as a call enters the
        // kernel; what the count of kernel calls protects is the moment between a call's
        // plan and that read, too short to hit on purpose. This checks the outcome.)
        client.timeout = .never
        let second = Background { expectFailure(.closed) { _ = try client.receive(upTo: 1) }.1 }
        expectTiming(try waiter.value(within: .seconds(5)), atLeast: .milliseconds(400))
        pause(.milliseconds(100))
        client.close()
        _ = try second.value(within: .seconds(5))
    }

    @Test("a kernel timer is set only when a call must wait, and then below the timeout")
    func timersOnlyWhenWaiting() throws {
        let (client, server) = try connectedPair()
        defer { server.close(); client.close() }
        client.timeout = try .after(.seconds(5))
        try server.sendAll([1, 2, 3])
        #expect(try client.receive(upTo: 3) == [1, 2, 3])
        try client.sendAll(Array(repeating: 7, count: 1000))
        #expect(try kernelTimer(client, SO_RCVTIMEO) == nil)
        #expect(try kernelTimer(client, SO_SNDTIMEO) == nil)
        #expect(try server.receive(exactly: 1000).count == 1000)
        // Now a receive that must wait: it sets SO_RCVTIMEO, shorter than the timeout.
        let sender = Background { pause(.milliseconds(100)); try server.sendAll([4]) }
        #expect(try client.receive(upTo: 1) == [4])
        try sender.value()
        let timer = try #require(try kernelTimer(client, SO_RCVTIMEO))
        #expect(timer > .seconds(4) && timer < .seconds(5), "SO_RCVTIMEO \(timer) for a 5 s timeout")
        #expect(try kernelTimer(client, SO_SNDTIMEO) == nil)
    }

    @Test("a socket accepted from a listener that had timers clears the one it inherited before it sleeps on it")
    func inheritedTimers() throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        listener.timeout = try .after(.milliseconds(300))
        // Two accepts that time out: the second sleeps in the kernel on SO_RCVTIMEO.
        for _ in 0..<2 { expectTiming(expectFailure(.timedOut) { _ = try listener.accept() }.1, atLeast: .milliseconds(300)) }
        #expect(try kernelTimer(listener, SO_RCVTIMEO) != nil)
        let client = try Socket(.ipv4)
        defer { client.close() }
        try client.connect(to: address)
        let (accepted, _) = try withDefaultTimeout(.never) { try listener.accept() }
        defer { accepted.close() }
        #expect(accepted.timeout == .never)
        // Linux copies the listener's SO_RCVTIMEO to the new socket.
        #expect(try kernelTimer(accepted, SO_RCVTIMEO) != nil)
        // With no limit, a receive that waits longer than that timer gets the data ...
        let sender = Background { pause(.milliseconds(600)); try client.sendAll([9]) }
        #expect(try accepted.receive(upTo: 1) == [9])
        try sender.value()
        // ... and has cleared the inherited timer rather than woken up on it.
        #expect(try kernelTimer(accepted, SO_RCVTIMEO) == nil)
    }

    @Test("ppoll is asked for the time left minus the kernel's slack for it, and the last 100 µs whole")
    func pollSpans() {
        #expect(WaitBudget.pollSpan(10_000_000) == 10_000_000 - 50_000)
        #expect(WaitBudget.pollSpan(1_000_000_000) == 1_000_000_000 - 1_000_001)
        #expect(WaitBudget.pollSpan(1_000_000_000_000) == 1_000_000_000_000 - 100_000_000)
        #expect(WaitBudget.pollSpan(100_000) == 100_000)
        #expect(WaitBudget.pollSpan(1) == 1)
    }
}

/// SO_RCVTIMEO or SO_SNDTIMEO as the kernel has it (nil: none).
private func kernelTimer(_ socket: Socket, _ name: CInt) throws -> Duration? {
    try socket.withUnsafeDescriptor { fd in
        var tv = timeval()
        var length = socklen_t(MemoryLayout<timeval>.size)
        guard getsockopt(fd, SOL_SOCKET, name, &tv, &length) == 0 else { throw TestFailure("getsockopt: errno \(errno)") }
        return tv.tv_sec == 0 && tv.tv_usec == 0 ? nil : .seconds(tv.tv_sec) + .microseconds(tv.tv_usec)
    }
}
