import Foundation
@testable import Sockets
import Synchronization
import Testing

// The reactor's run order: a job woken by the job running on the same reactor runs next
// (the "LIFO slot"), so that a cancellation or a hand-over between tasks does not wait
// behind a busy turn; but tasks that keep waking each other cannot starve the rest.

/// Names in the order they were recorded, from any task.
private final class Order: Sendable {
    private let names = Mutex<[String]>([])
    func record(_ name: String) { names.withLock { $0.append(name) } }
    var all: [String] { names.withLock { $0 } }
}

@Suite("async: the reactor's run order", .serialized)
struct AsyncSchedulingTests {
    @Test("a receive cancelled by a task on its reactor resumes before jobs queued earlier in the turn")
    func cancelledRunsNext() async throws {
        let reactor = try Reactor.next()
        let (a, b) = try Socket.pair()
        defer { a.close(); b.close() }
        let order = Order()
        let waiter = Task(executorPreference: reactor) {
            do {
                _ = try await a.receive(upTo: 1)
            } catch {
                order.record("cancelled receive")
            }
        }
        // A task parked on a plain continuation, for the canceller to wake first.
        let parked = Box(Mutex<CheckedContinuation<Void, Never>?>(nil))
        let other = Task(executorPreference: reactor) {
            await withCheckedContinuation { c in parked.value.withLock { $0 = c } }
            order.record("woken earlier")
        }
        let deadline = ContinuousClock.now + .seconds(5)
        while parked.value.withLock({ $0 == nil }) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(1)) }
        try await Task.sleep(for: .milliseconds(50))  // the receive is parked by now (nothing can arrive)
        await Task(executorPreference: reactor) {
            parked.value.withLock { $0!.resume() }  // queued first ...
            waiter.cancel()                   // ... but the cancelled receive runs first
        }.value
        await waiter.value
        await other.value
        #expect(order.all == ["cancelled receive", "woken earlier"])
    }

    @Test("two tasks waking each other for good do not starve a third on the same reactor")
    func chainsAreBounded() async throws {
        let reactor = try Reactor.next()
        let (fromA, toB) = AsyncStream<Int>.makeStream()
        let (fromB, toA) = AsyncStream<Int>.makeStream()
        let stopFlag = Box(Atomic<Bool>(false)), progressCount = Box(Atomic<Int>(0))
        let pingA = Task(executorPreference: reactor) {
            toB.yield(0)
            for await n in fromB { if stopFlag.value.load(ordering: .relaxed) { break }; toB.yield(n + 1) }
            toB.finish()
        }
        let pingB = Task(executorPreference: reactor) {
            for await n in fromA { if stopFlag.value.load(ordering: .relaxed) { break }; toA.yield(n + 1) }
            toA.finish()
        }
        let third = Task(executorPreference: reactor) {
            while !stopFlag.value.load(ordering: .relaxed) {
                progressCount.value.add(1, ordering: .relaxed)
                await Task.yield()
            }
        }
        // Watched from a plain thread's clock: if the ping-pong starved the reactor, the
        // third task's count would stay at 0 however long we wait.
        let end = ContinuousClock.now + .milliseconds(300)
        while ContinuousClock.now < end { try await Task.sleep(for: .milliseconds(10)) }
        let made = progressCount.value.load(ordering: .relaxed)
        stopFlag.value.store(true, ordering: .relaxed)
        toA.yield(0)
        toB.yield(0)
        await pingA.value
        await pingB.value
        await third.value
        #expect(made >= 100, "the third task ran \(made) times in 300 ms")
    }
}

/// A reference to a value, for a task's closure. Safe to send: it holds only atomics here.
private final class Box<T: ~Copyable & Sendable>: Sendable {
    let value: T
    init(_ value: consuming T) { self.value = value }
}
