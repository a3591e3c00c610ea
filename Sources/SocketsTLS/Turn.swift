#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Sockets

// One caller at a time, in arrival order, for the TLS calls that must not overlap: senders
// (ciphertext must leave in the order the engine made it, and a send may wait for the
// network while it holds its turn) and receivers (ciphertext must be fed to the engine in the
// order it was read). A plain mutex cannot do it: a blocking sender would hold it across its
// wait and make the next caller wait past that caller's own deadline, and an async task may
// not hold a pthread mutex across a suspension (it may resume on another thread).
//
// So the turn is a flag and a queue of waiters, each a thread (a blocking call, parked on
// its own condition variable) or a task (an async call, a continuation). `release` hands the
// turn to the first waiter directly, so a waiter never sees the turn free and loses it to a
// newcomer. Each waiter waits no longer than its call's deadline; a task also leaves the queue
// when it is cancelled. Uncontended, taking and releasing the turn is one lock each.
final class Turn: Sendable {
    enum Outcome: Sendable { case granted, timedOut, cancelled }

    private enum Waiter: Sendable {
        case thread(Parker)
        case task(CheckedContinuation<Outcome, Never>, timer: Task<Void, Never>?)
    }

    private struct State: Sendable {
        var held = false
        var waiters: [(id: UInt64, waiter: Waiter)] = []
        var lastID: UInt64 = 0
    }

    private let state = Locked(State())

    /// Takes the turn, waiting (this thread) until it is handed over or `deadline` passes.
    func acquire(until deadline: ContinuousClock.Instant?) -> Outcome {
        let queued: (UInt64, Parker)? = state.withLock { s in
            if !s.held {
                s.held = true
                return nil
            }
            s.lastID += 1
            let parker = Parker()
            s.waiters.append((s.lastID, .thread(parker)))
            return (s.lastID, parker)
        }
        guard let (id, parker) = queued else { return .granted }
        if parker.wait(until: deadline) { return .granted }
        // Out of time: leave the queue — unless the turn was handed over meanwhile.
        return withdraw(id) == nil ? .granted : .timedOut
    }

    /// Takes the turn, suspending until it is handed over, `deadline` passes, or the task is
    /// cancelled.
    func acquire(until deadline: ContinuousClock.Instant?) async -> Outcome {
        let id: UInt64? = state.withLock { s in
            if !s.held {
                s.held = true
                return nil
            }
            s.lastID += 1
            return s.lastID
        }
        guard let id else { return .granted }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
                let queued = state.withLock { s in
                    if !s.held {
                        s.held = true
                        return false
                    }
                    s.waiters.append((id, .task(continuation, timer: nil)))
                    return true
                }
                guard queued else { return continuation.resume(returning: .granted) }
                if Task.isCancelled {  // cancelled before the handler below could find us
                    return resume(withdraw(id), .cancelled)
                }
                // The timer exists only while waiting behind another caller (the rare case).
                // It is made after the waiter is queued, so it cannot fire before it.
                guard let deadline else { return }
                let timer = Task { [self] in
                    try? await Task.sleep(until: deadline, clock: .continuous)
                    if !Task.isCancelled { resume(withdraw(id), .timedOut) }
                }
                let kept = state.withLock { s in
                    guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return false }
                    s.waiters[i].waiter = .task(continuation, timer: timer)
                    return true
                }
                if !kept { timer.cancel() }  // handed the turn (or withdrawn) meanwhile
            }
        } onCancel: {
            resume(withdraw(id), .cancelled)
        }
    }

    /// Takes the turn if it is free, without waiting.
    func tryAcquire() -> Bool {
        state.withLock { s in
            if s.held { return false }
            s.held = true
            return true
        }
    }

    /// Gives the turn to the first waiter, or frees it.
    func release() {
        let next: Waiter? = state.withLock { s in
            if s.waiters.isEmpty {
                s.held = false
                return nil
            }
            return s.waiters.removeFirst().waiter  // the turn stays held: it passes to `next`
        }
        switch next {
        case .thread(let parker)?: parker.grant()
        case .task(let continuation, let timer)?:
            timer?.cancel()
            continuation.resume(returning: .granted)
        case nil: break
        }
    }

    /// Takes a waiter out of the queue (nil: it was already handed the turn, or withdrawn).
    private func withdraw(_ id: UInt64) -> Waiter? {
        state.withLock { s in
            guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return s.waiters.remove(at: i).waiter
        }
    }

    private func resume(_ waiter: Waiter?, _ outcome: Outcome) {
        if case .task(let continuation, let timer)? = waiter {
            timer?.cancel()
            continuation.resume(returning: outcome)
        }
    }
}

/// One waiting thread: a flag under a `pthread_mutex_t` and a condition variable
/// (ThreadSanitizer sees both).
final class Parker: @unchecked Sendable {
    // @unchecked Sendable is safe: `granted` is read and written only with `mutex` held; the
    // mutex and condition variable are allocated once, never move, and are used only through
    // pthread calls.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var granted = false

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        condition.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func grant() {
        pthread_mutex_lock(mutex)
        granted = true
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Waits until granted (true) or `deadline` passes (false); never returns false early.
    func wait(until deadline: ContinuousClock.Instant?) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !granted {
            guard let deadline else {
                pthread_cond_wait(condition, mutex)
                continue
            }
            let left = ContinuousClock.now.duration(to: deadline)
            if left <= .zero { break }
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            var (seconds, attoseconds) = left.components
            if seconds >= 86_400 { (seconds, attoseconds) = (86_400, 0) }  // a day at a time: the loop waits out the rest
            var nanoseconds = Int(now.tv_nsec) + Int(attoseconds / 1_000_000_000) + 1
            var wake = timespec(tv_sec: now.tv_sec + Int(seconds) + nanoseconds / 1_000_000_000, tv_nsec: 0)
            nanoseconds %= 1_000_000_000
            wake.tv_nsec = nanoseconds
            pthread_cond_timedwait(condition, mutex, &wake)
        }
        return granted
    }
}
