import CSockets
import SystemPackage

// The async engine: one thread per reactor that waits on an epoll instance (a kqueue on
// Darwin) for the readiness of its sockets and for its timers, resumes the calls those
// wake, and runs the tasks it resumed itself — it is their `TaskExecutor` (SE-0417), so a
// task that prefers it never hops to the global pool and back.
//
// One loop turn: run the jobs queued on this thread (those enqueued during the turn wait
// for the next, so I/O is never starved); move in the jobs other threads sent; sleep in
// `epoll_pwait2` until an event, the earliest timer (minus the kernel's timer slack, as
// the blocking layer's `ppoll` does: `WaitBudget.pollSpan`), or a job from another thread
// (which writes the reactor's eventfd only when it sleeps); then, under the lock, record
// the events and fire the due timers; resume the calls they end, outside the lock.
//
// Jobs enqueued from the reactor's own thread go to `local`, which only that thread
// touches: no lock, no wake-up. Jobs from other threads go to the locked inbox.

/// A thread that waits for socket readiness and timers and runs the tasks it wakes.
///
/// Async socket calls wait on a reactor: the first async call on a socket registers it with
/// the reactor of the thread it runs on, or else with the next one in turn (``next()``), and
/// the socket stays with it. A task that prefers that reactor as its executor — the tasks
/// ``Socket/serve(maxConnections:connectionTimeout:gracePeriod:events:handler:)`` starts, or
/// `Task(executorPreference: reactor) { ... }` — is resumed and run on the reactor's own
/// thread when its socket is ready; any other task is resumed on its own executor (one
/// thread hop).
///
/// A reactor whose epoll instance fails (only a bug can do that: its descriptor closed behind
/// the library's back) stops the process with a message rather than spin without ever
/// delivering an event.
///
/// There is one reactor per usable CPU (``count``), each started on first use, living as long as the
/// process. A reactor's thread must never block: a blocking `Socket` call made on it acts
/// as if the socket were non-blocking (it fails with ``SocketError/Kind/wouldBlock`` rather
/// than wait), and any other blocking work there stalls every socket the reactor serves.
public final class Reactor: TaskExecutor, @unchecked Sendable, CustomStringConvertible {
    // @unchecked Sendable is safe: `number`, `poller` and `waker` never change; `shared` is
    // reached only under its lock; `local`, `events` and `resumptions` are touched only on
    // the reactor's own thread (`enqueue` appends to `local` only when it runs there).

    /// 1-based, for descriptions.
    let number: CInt
    let poller: Poller
    let waker: Sys.Waker
    let shared: Locked<Shared>
    private var local: [UnownedJob] = []
    private var running: [UnownedJob] = []
    /// The job the running job has just woken on this reactor (a task resuming or starting
    /// another: a cancellation, a hand-over): it runs next, before the rest of the turn, as
    /// in Tokio's "LIFO slot", so that it does not wait behind every job of a busy turn.
    /// At most `chainLimit` such jobs run in a row, so that tasks waking each other cannot
    /// starve the others; a job that enqueues itself (a yield) goes to the back.
    private var wokenNext: UnownedJob?
    private var currentJob: UnownedJob?
    private static let chainLimit = 3
    private var events = Poller.Events()
    private var resumptions: [Resumption] = []

    /// The token of the reactor's own waker in the poller.
    static let wakerToken = UInt64.max

    struct Shared {
        /// Jobs enqueued from other threads.
        var inbox: [UnownedJob] = []
        /// The reactor is in (or about to enter) its wait, until `sleepUntil`.
        var sleeping = false
        var sleepUntil = Int64.max
        /// The waker has been written since the reactor began to sleep.
        var woken = false
        /// Registrations by slot; `generations` counts each slot's uses.
        var slots: [Registration?] = []
        var generations: [UInt32] = []
        var freeSlots: [Int] = []
        var timers = TimerHeap()
        /// Entries in `timers` known to be stale (their socket released, or replaced by an
        /// earlier one): swept out once they are half of the heap.
        var staleTimers = 0
        var lastSequence: UInt64 = 0
        /// Live registrations, for ``Reactor/description``.
        var registered = 0

        /// A new timer sequence number carrying `direction` in its low bit.
        mutating func nextSequence(_ low: UInt64) -> UInt64 {
            lastSequence &+= 2
            return lastSequence | low
        }

        /// Pushes the live timer entry of `registration`'s `direction` for `when`; the one it
        /// had, if any, is stale from now on.
        mutating func armTimer(_ registration: Registration, _ direction: WaitDirection, at when: Int64) {
            let sequence = nextSequence(direction == .receive ? 0 : 1)
            registration.withList(direction) { list in
                if list.timerSequence != 0 { staleTimers += 1 }
                list.timerSequence = sequence
                list.timerWhen = when
            }
            timers.push(TimerEntry(when: when, sequence: sequence, token: registration.token, alarm: nil))
        }

        /// The registration in `slots` whose live timer entry `entry` is, or nil for a stale
        /// entry (its socket released, or the entry replaced or fired).
        static func owner(ofTimer entry: TimerEntry, in slots: [Registration?]) -> Registration? {
            guard let registration = slots[Int(entry.token & 0xffff_ffff)], registration.token == entry.token,
                  registration.holdsTimer(entry.sequence) else { return nil }
            return registration
        }
    }

    private init(number: CInt) throws(Errno) {
        self.number = number
        poller = try Poller.make()
        do throws(Errno) {
            waker = try Sys.makeWaker()
        } catch {
            Sys.close(poller.fd)
            throw error
        }
        shared = Locked(Shared())
        do throws(Errno) {
            try poller.register(waker.readFD, token: Reactor.wakerToken, readOnly: true)
        } catch {
            Sys.close(poller.fd)
            Sys.close(waker)
            throw error
        }
    }

    // MARK: the reactors

    private struct Pool {
        var reactors: [Reactor] = []
        var next = 0
    }

    private static let pool = Locked(Pool())

    /// How many reactors there are once all are started: one per CPU the process may run on
    /// (its affinity mask on Linux, so `taskset -c 0` means one reactor).
    public static let count: Int = max(1, Sys.usableCPUs())

    /// The next reactor in turn, started if it was not yet. Sockets and tasks spread over
    /// the reactors this way.
    ///
    /// - Throws: ``SocketError`` if a reactor could not be started (no descriptors left for
    ///   its epoll instance and eventfd, or no thread).
    public static func next() throws(SocketError) -> Reactor {
        try pool.withLock { p throws(SocketError) -> Reactor in
            let index = p.next % count
            p.next &+= 1
            if index < p.reactors.count { return p.reactors[index] }
            let reactor: Reactor
            do throws(Errno) {
                reactor = try Reactor(number: CInt(p.reactors.count + 1))
            } catch {
                throw SocketError(.create, errno: error, detail: "could not start a reactor")
            }
            guard Sys.spawnDetached({ reactor.run() }) else {
                Sys.close(reactor.poller.fd)
                Sys.close(reactor.waker)
                throw SocketError(.system, .create, detail: "could not start a reactor thread")
            }
            p.reactors.append(reactor)
            return reactor
        }
    }

    /// The reactor whose thread this is, or nil. A thread-local read.
    public static var current: Reactor? {
        guard let pointer = csockets_current_reactor() else { return nil }
        return Unmanaged<Reactor>.fromOpaque(pointer).takeUnretainedValue()
    }

    /// True on a reactor's own thread. A thread-local read.
    @inline(__always)
    public static var isReactorThread: Bool { csockets_current_reactor() != nil }

    /// True on this reactor's own thread.
    @inline(__always)
    var isCurrent: Bool { csockets_current_reactor() == Unmanaged.passUnretained(self).toOpaque() }

    /// `Reactor(0, 12 sockets)`: its number and how many sockets are registered with it, for logs.
    public var description: String {
        let registered = shared.withLock { $0.registered }
        return "Reactor(\(number), \(registered) socket\(registered == 1 ? "" : "s"))"
    }

    // MARK: TaskExecutor

    /// Runs `job` on the reactor's thread: at once after the current turn's jobs when
    /// enqueued from that thread, else after the reactor next wakes (which this causes).
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if isCurrent {
            if let current = currentJob, !Self.same(job, current) {
                if let previous = wokenNext { local.append(previous) }
                wokenNext = job
            } else {
                local.append(job)
            }
            return
        }
        let wake = shared.withLock { s -> Bool in
            s.inbox.append(job)
            if s.sleeping && !s.woken {
                s.woken = true
                return true
            }
            return false
        }
        if wake { Sys.wake(waker) }
    }

    /// Whether two jobs are the same (a task's job is the task itself).
    @inline(__always)
    private static func same(_ a: UnownedJob, _ b: UnownedJob) -> Bool {
        unsafeBitCast(a, to: UnsafeRawPointer.self) == unsafeBitCast(b, to: UnsafeRawPointer.self)
    }

    // MARK: registration

    /// Registers `fd` (see `Poller.register`): one `epoll_ctl` for the socket's life.
    func register(_ fd: CInt) throws(Errno) -> Registration {
        let registration = shared.withLock { s -> Registration in
            let slot = s.freeSlots.popLast() ?? {
                s.slots.append(nil)
                s.generations.append(0)
                return s.slots.count - 1
            }()
            s.generations[slot] &+= 1
            let token = UInt64(s.generations[slot]) << 32 | UInt64(slot)
            let registration = Registration(fd: fd, reactor: self, token: token)
            s.slots[slot] = registration
            s.registered += 1
            return registration
        }
        do throws(Errno) {
            try poller.register(fd, token: registration.token)
        } catch {
            deregister(registration, shared: false)
            throw error
        }
        return registration
    }

    /// Forgets a registration whose socket is being released (no call is in flight).
    /// `shared`: other holders keep the descriptor open, so the kernel would keep the epoll
    /// entry: remove it.
    /// Also rings its close alarm (a socket released by `close()` with no call in flight
    /// is closed here).
    func deregister(_ registration: Registration, shared descriptorShared: Bool) {
        if descriptorShared { poller.deregister(registration.fd) }
        let alarm = shared.withLock { s -> Alarm? in
            let slot = Int(registration.token & 0xffff_ffff)
            s.slots[slot] = nil
            s.freeSlots.append(slot)
            s.registered -= 1
            registration.closed = true
            s.staleTimers += (registration.receive.timerSequence != 0 ? 1 : 0) + (registration.send.timerSequence != 0 ? 1 : 0)
            if s.staleTimers > 64 && s.staleTimers > s.timers.count / 2 { sweepTimers(&s) }
            defer { registration.closeAlarm = nil }
            return registration.closeAlarm
        }
        alarm?.ring()
    }

    /// Drops the stale entries from the heap (under the lock).
    private func sweepTimers(_ s: inout Shared) {
        let slots = s.slots
        s.timers.keep { entry in
            if let alarm = entry.alarm { return alarm.sequence == entry.sequence && alarm.continuation != nil }
            return Shared.owner(ofTimer: entry, in: slots) != nil
        }
        s.staleTimers = 0
    }

    // MARK: waiting

    /// Parks `waiter` on `direction` of `registration` — unless the socket is closed, the
    /// task cancelled, or (for a non-zero `readyMask`) an event came since `observed` was
    /// read or a bit of `readyMask` is set — and arms its timer, at the earlier of its
    /// deadline and, for a waiter the socket's deadline governs, that deadline. Called
    /// inside the continuation's closure, on the task.
    func park(_ registration: Registration, _ direction: WaitDirection, _ waiter: Waiter,
              observed: UInt64, readyMask: UInt64) {
        let outcome = shared.withLock { s -> (Wake?, wakeReactor: Bool) in
            if registration.closed { return (.closed, false) }
            if Task.isCancelled { return (.cancelled, false) }
            if readyMask != 0 {
                let now = registration.observe()
                if now & readyMask != 0 || now >> 32 != observed >> 32 { return (.ready, false) }
            }
            var waiter = waiter
            let timerWhen = registration.withList(direction) { list in
                if waiter.governed && list.socketDeadline < waiter.deadline {
                    waiter = Waiter(id: waiter.id, continuation: waiter.continuation, deadline: list.socketDeadline, governed: true)
                }
                list.waiters.append(waiter)
                return list.timerWhen
            }
            guard waiter.deadline < timerWhen else { return (nil, false) }  // the entry there comes first
            s.armTimer(registration, direction, at: waiter.deadline)
            return (nil, wakeIfSleepingPast(waiter.deadline, &s))
        }
        if let wake = outcome.0 { waiter.continuation.resume(returning: wake) }
        if outcome.wakeReactor { Sys.wake(waker) }
    }

    /// Whether a timer at `when`, armed from another thread, needs the sleeping reactor woken
    /// to shorten its sleep (under the lock).
    private func wakeIfSleepingPast(_ when: Int64, _ s: inout Shared) -> Bool {
        guard s.sleeping && when < s.sleepUntil && !s.woken else { return false }
        s.woken = true
        return true
    }

    /// Records the socket's new deadline for `direction` and takes the waiters it governs, to
    /// be resumed with `.timer` once every lock is let go: each looks at the clock and the
    /// new deadline, and fails or parks again. From the thread that sets it, under the
    /// socket's lock (Socket+Deadlines.swift).
    func setSocketDeadline(_ registration: Registration, _ direction: WaitDirection, _ end: Int64,
                           waking resumptions: inout [Resumption]) {
        shared.withLock { _ in
            registration.withList(direction) { list in
                list.socketDeadline = end
                guard !list.waiters.isEmpty else { return }
                var kept = 0
                for i in list.waiters.indices {
                    let waiter = list.waiters[i]
                    if waiter.governed {
                        resumptions.append(Resumption(continuation: waiter.continuation, wake: .timer))
                    } else {
                        list.waiters[kept] = waiter
                        kept += 1
                    }
                }
                list.waiters.removeLast(list.waiters.count - kept)
            }
        }
    }

    /// Ends the wait of call `id` with `.cancelled`, if it is still parked. From the
    /// cancelling thread (a task cancellation handler).
    func cancel(_ registration: Registration, _ direction: WaitDirection, id: UInt64) {
        let taken = shared.withLock { s -> WakeContinuation? in
            registration.withList(direction) { list in
                guard let i = list.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return list.waiters.remove(at: i).continuation
            }
        }
        taken?.resume(returning: .cancelled)
    }

    /// Ends every wait on `registration` with `.closed`, and every later one at once; rings
    /// its close alarm.
    func close(_ registration: Registration) {
        var taken: [Resumption] = []
        let alarm = shared.withLock { s -> Alarm? in
            registration.closed = true
            Registration.takeAll(&registration.receive, .closed, into: &taken)
            Registration.takeAll(&registration.send, .closed, into: &taken)
            defer { registration.closeAlarm = nil }
            return registration.closeAlarm
        }
        for r in taken { r.continuation.resume(returning: r.wake) }
        alarm?.ring()
    }

    /// Rings `alarm` when `registration`'s socket is closed (at once if it is).
    func ringOnClose(_ registration: Registration, _ alarm: Alarm) {
        let closed = shared.withLock { s -> Bool in
            if !registration.closed { registration.closeAlarm = alarm }
            return registration.closed
        }
        if closed { alarm.ring() }
    }

    /// Arms `alarm` for `when` (under the lock); see ``Alarm``.
    func arm(_ alarm: Alarm, at when: Int64, _ s: inout Shared) -> Bool {
        let sequence = s.nextSequence(0)
        alarm.sequence = sequence
        s.timers.push(TimerEntry(when: when, sequence: sequence, token: 0, alarm: alarm))
        return wakeIfSleepingPast(when, &s)
    }

    // MARK: the loop

    private func run() {
        csockets_set_current_reactor(Unmanaged.passUnretained(self).toOpaque())
        loop()
    }

    private func loop() -> Never {
        let executor = asUnownedTaskExecutor()
        while true {
            // The jobs queued so far; those they enqueue wait for the next turn.
            swap(&local, &running)
            for job in running {
                currentJob = job
                job.runSynchronously(on: executor)
                var chained = 0
                while let woken = wokenNext {
                    wokenNext = nil
                    if chained == Self.chainLimit {
                        local.append(woken)
                        break
                    }
                    chained += 1
                    currentJob = woken
                    woken.runSynchronously(on: executor)
                }
            }
            currentJob = nil
            running.removeAll(keepingCapacity: true)

            let span = shared.withLock { s -> Int64? in
                if !s.inbox.isEmpty {
                    local.append(contentsOf: s.inbox)
                    s.inbox.removeAll(keepingCapacity: true)
                }
                if !local.isEmpty { return 0 }
                s.sleeping = true
                guard let next = s.timers.earliest else {
                    s.sleepUntil = .max
                    return nil
                }
                s.sleepUntil = next
                let left = next - Sys.now()
                return left <= 0 ? 0 : WaitBudget.pollSpan(left)
            }
            let outcome = poller.wait(&events, nanoseconds: span)
            if case .failure(let e) = outcome, e != .interrupted {
                // EBADF, EFAULT, EINVAL: the reactor's own descriptors are broken, which only a
                // bug can do; going on would spin without ever delivering an event.
                fatalError("Sockets: the reactor's epoll_pwait2 failed: \(e)")
            }
            shared.withLock { s in
                s.sleeping = false
                s.woken = false
                // Jobs from other threads, run after this turn's resumptions are enqueued.
                if !s.inbox.isEmpty {
                    local.append(contentsOf: s.inbox)
                    s.inbox.removeAll(keepingCapacity: true)
                }
                if case .success(let n) = outcome {
                    for i in 0..<n {
                        let event = events.event(i)
                        if event.token == Reactor.wakerToken {
                            Sys.drain(waker)
                            continue
                        }
                        let slot = Int(event.token & 0xffff_ffff)
                        // A stale event (the socket released, its slot perhaps reused) is dropped.
                        guard slot < s.slots.count, let registration = s.slots[slot],
                              registration.token == event.token else { continue }
                        registration.deliver(event, into: &resumptions)
                    }
                }
                if !s.timers.isEmpty {
                    let now = Sys.now()
                    while let entry = s.timers.popDue(now: now) {
                        if let alarm = entry.alarm {
                            alarm.timerFired(sequence: entry.sequence, into: &resumptions)
                            continue
                        }
                        guard let registration = Shared.owner(ofTimer: entry, in: s.slots) else {
                            s.staleTimers = max(0, s.staleTimers - 1)
                            continue
                        }
                        if let next = registration.timerFired(sequence: entry.sequence, now: now, into: &resumptions) {
                            s.armTimer(registration, Registration.direction(ofTimer: entry.sequence), at: next)
                        }
                    }
                }
            }
            // Resumed outside the lock: a task preferring this reactor lands in `local`.
            for r in resumptions { r.continuation.resume(returning: r.wake) }
            resumptions.removeAll(keepingCapacity: true)
        }
    }
}

/// A one-shot wait on a reactor's timer that anyone may also end early: the back-off of an
/// accept loop at the descriptor limit, a server's grace period.
final class Alarm: @unchecked Sendable {
    // @unchecked Sendable is safe: `reactor` never changes; every other field is read and
    // written only under `reactor.shared`'s lock.
    let reactor: Reactor
    var continuation: WakeContinuation?
    var sequence: UInt64 = 0
    /// ``ring()`` came (before or during the wait).
    var rung = false

    init(on reactor: Reactor) { self.reactor = reactor }

    /// Its timer came due (under the lock).
    func timerFired(sequence: UInt64, into resumptions: inout [Resumption]) {
        guard sequence == self.sequence, let continuation else { return }
        self.continuation = nil
        resumptions.append(Resumption(continuation: continuation, wake: .timer))
    }

    /// Waits until `deadline` (`Sys.now()` nanoseconds; `Int64.max`: none), ``ring()``, or
    /// — if `cancellable` — the task's cancellation; says which (`.timer`, `.ready`,
    /// `.cancelled`). One wait per alarm.
    func wait(until deadline: Int64, cancellable: Bool = true) async -> Wake {
        if !cancellable { return await park(until: deadline, cancellable: false) }
        return await withTaskCancellationHandler {
            await park(until: deadline, cancellable: true)
        } onCancel: {
            end(.cancelled)
        }
    }

    private func park(until deadline: Int64, cancellable: Bool) async -> Wake {
        await suspendForWake { continuation in
            let outcome = reactor.shared.withLock { s -> (Wake?, Bool) in
                if rung { return (.ready, false) }
                if cancellable && Task.isCancelled { return (.cancelled, false) }
                if deadline <= Sys.now() { return (.timer, false) }
                self.continuation = continuation
                return (nil, deadline == .max ? false : reactor.arm(self, at: deadline, &s))
            }
            if let wake = outcome.0 { continuation.resume(returning: wake) }
            if outcome.1 { Sys.wake(reactor.waker) }
        }
    }

    /// Ends the wait early (or makes it end at once) with `.ready`. From any thread.
    func ring() {
        end(.ready)
    }

    private func end(_ wake: Wake) {
        let taken = reactor.shared.withLock { _ -> WakeContinuation? in
            if wake == .ready { rung = true }
            defer { continuation = nil }
            return continuation
        }
        taken?.resume(returning: wake)
    }
}
