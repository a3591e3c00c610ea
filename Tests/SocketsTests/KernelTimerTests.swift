import Foundation
import Synchronization
import Testing

@testable import Sockets

/// The kernel-timer policy (Calls/KernelTimerPolicy.swift) as the kernel and the socket's
/// state show it: timers set only when a call must wait, shorter than the time the call has,
/// kept while they fit; inherited timers never relied on; sleepers counted only while they
/// may be asleep in the kernel.
@Suite("kernel timers: set only when a call must wait, and only ever shorter than the call's time", .serialized)
struct KernelTimerTests {
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
        // Never longer than KernelTimer.reach (250 ms), so that a socket deadline reaches the sleeper.
        #expect(aboutReach(timer), "SO_RCVTIMEO \(timer) for a 5 s timeout")
        #expect(try kernelTimer(client, SO_SNDTIMEO) == nil)
    }

    @Test("a fresh per-call deadline sleeps in the kernel: after the first wait, one recv per receive")
    func deadlineOnTheKernelPath() throws {
        let (client, server) = try connectedPair()
        defer { server.close(); client.close() }
        let fd = try client.withUnsafeDescriptor { $0 }
        let attempts = Mutex<[Bool]>([])  // mayWait of each recv on the client
        Seam.install { call, descriptor, mayWait in
            if call == .recv && descriptor == fd { attempts.withLock { $0.append(mayWait) } }
            return nil
        }
        defer { Seam.install(nil) }
        for round: UInt8 in 0..<3 {
            let sender = Background { pause(.milliseconds(30)); try server.sendAll([round]) }
            #expect(try client.receive(upTo: 1, deadline: .now + .seconds(5)) == [round])
            try sender.value()
        }
        // The first tries without waiting, sets the timer and sleeps; the others just sleep.
        #expect(attempts.withLock { $0 } == [false, true, true, true])
        let timer = try #require(try kernelTimer(client, SO_RCVTIMEO))
        // What a 5 s deadline allows ((5 s - 30 ms) * 7/8), capped at KernelTimer.reach.
        #expect(aboutReach(timer), "SO_RCVTIMEO \(timer) for 5 s deadlines")
    }

    @Test("a call whose kernel timer fired is no longer counted as a sleeper while it finishes in ppoll")
    func sleeperUncountedInPoll() throws {
        let (client, server) = try connectedPair()
        defer { server.close(); client.close() }
        client.timeout = try .after(.milliseconds(400))  // kernel timer (400 - 30) * 7/8 ≈ 324 ms
        let sender = Background { pause(.milliseconds(30)); try server.sendAll([1]) }
        #expect(try client.receive(upTo: 1) == [1])  // sets the timer
        try sender.value()
        let started = ContinuousClock.now
        let waiter = Background { expectFailure(.timedOut) { _ = try client.receive(upTo: 1) }.1 }
        pause(.milliseconds(150))
        let asleep = client.state.withLock { $0.mode.receiveSleepers }
        pause(until: started + .milliseconds(360))
        let polling = client.state.withLock { $0.mode.receiveSleepers }
        expectTiming(try waiter.value(within: .seconds(5)), atLeast: .milliseconds(400))
        #expect(asleep == 1, "asleep in recv under the kernel timer")
        #expect(polling == 0, "finishing in ppoll after the kernel timer fired")
    }

    @Test("between a call's plan and its sleep, a longer timeout set elsewhere does not lengthen the timer it sleeps on")
    func plannedSleeperKeepsItsTimer() throws {
        let (client, server) = try connectedPair()
        defer { server.close(); client.close() }
        client.timeout = try .after(.milliseconds(300))
        let sender = Background { pause(.milliseconds(30)); try server.sendAll([1]) }
        #expect(try client.receive(upTo: 1) == [1])  // sets the ~236 ms timer
        try sender.value()
        let fd = try client.withUnsafeDescriptor { $0 }
        let armed = Mutex(true)
        let seenInWindow = Mutex<Duration?>(nil)
        let other = Mutex<Background<Void>?>(nil)
        // The hook runs on the waiting thread after its plan, before its recv: the moment a
        // planner elsewhere could lengthen the timer under it. Another thread sets a 10 s
        // timeout and starts a receive that would like a ~8.7 s timer.
        Seam.install { call, descriptor, mayWait in
            guard call == .recv, descriptor == fd, mayWait, armed.withLock({ let was = $0; $0 = false; return was }) else { return nil }
            client.timeout = try! .after(.seconds(10))
            other.withLock { $0 = Background { expectFailure(.closed) { _ = try client.receive(upTo: 1) } } }
            pause(.milliseconds(100))  // the other receive has planned and is asleep
            seenInWindow.withLock { $0 = try? kernelTimer(client, SO_RCVTIMEO) }
            return nil
        }
        defer { Seam.install(nil) }
        expectTiming(expectFailure(.timedOut) { _ = try client.receive(upTo: 1) }.1, atLeast: .milliseconds(300))
        let window = try #require(seenInWindow.withLock { $0 })
        #expect(window < .milliseconds(300), "SO_RCVTIMEO was \(window) while a 300 ms call was about to sleep on it")
        client.close()
        _ = try other.withLock({ $0 })?.value(within: .seconds(5))
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
        // ... and has replaced the inherited timer with its own (KernelTimer.reach).
        #expect(try kernelTimer(accepted, SO_RCVTIMEO).map(aboutReach) == true)
        // With a limit, a receive never relies on a timer it does not know: it sets its own.
        let (accepted2, _) = try withDefaultTimeout(.after(.seconds(2))) {
            let client2 = try Socket(.ipv4)
            try client2.connect(to: address)
            let sender2 = Background { pause(.milliseconds(300)); try client2.sendAll([8]); return client2 }
            let (socket, peer) = try listener.accept()
            #expect(try socket.receive(upTo: 1) == [8])
            try sender2.value().close()
            return (socket, peer)
        }
        defer { accepted2.close() }
        let timer = try #require(try kernelTimer(accepted2, SO_RCVTIMEO))
        #expect(aboutReach(timer), "SO_RCVTIMEO \(timer) for a 2 s timeout")
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
func kernelTimer(_ socket: Socket, _ name: CInt) throws -> Duration? {
    try socket.withUnsafeDescriptor { fd in
        var tv = timeval()
        var length = socklen_t(MemoryLayout<timeval>.size)
        guard getsockopt(fd, SOL_SOCKET, name, &tv, &length) == 0 else { throw TestFailure("getsockopt: errno \(errno)") }
        return tv.tv_sec == 0 && tv.tv_usec == 0 ? nil : .seconds(tv.tv_sec) + .microseconds(tv.tv_usec)
    }
}

/// KernelTimer.reach (250 ms) as the kernel reports it back, rounded to its jiffies.
func aboutReach(_ timer: Duration) -> Bool { timer >= .milliseconds(240) && timer <= .milliseconds(260) }

/// Sleeps until `instant` (at once if it has passed).
func pause(until instant: ContinuousClock.Instant) {
    let left = instant - .now
    if left > .zero { pause(left) }
}
