// Socket deadlines (Go's SetReadDeadline / SetWriteDeadline): an instant stored on the
// socket that bounds every receive (and accept) or send, including the calls already
// waiting when it is set — the way to end a waiting call from another thread or task
// without closing the socket.
//
// How a change reaches a waiting call:
// - An async call is parked on its reactor with a timer at the earliest of its own instant
//   and the socket's deadline for its direction, which the reactor keeps beside the waiters
//   (`WaitList.socketDeadline`). Setting a deadline updates that copy and resumes the
//   direction's parked calls with `.timer`: each looks at the clock and the new deadline and
//   either fails or parks again until the new instant.
// - A blocking call can sleep in the kernel (recv with SO_RCVTIMEO), where nothing but its
//   timer, a signal or `shutdown(2)` ends the sleep — and the library installs no signal
//   handler and shuts a socket down only to close it. So once a deadline has been set for a
//   direction, that direction's blocking calls wait in `ppoll` with the socket's waker (an
//   eventfd) instead, and a change writes the waker (`SocketDeadlines.watchers`). A call that
//   was already asleep in the kernel when the direction's *first* deadline was set sees it
//   when its kernel timer fires: that timer is never longer than `KernelTimer.reach`
//   (250 ms), and a call that waits in poll without the waker looks again as often.
// - The waker is drained (under the socket's lock) by the last of the calls that were
//   watching when the change was made, once each has woken and left; never after `close()`,
//   which may rely on it staying readable.

/// A socket's receive and send deadlines and the blocking calls that watch them. Part of
/// `Socket.State`: under the socket's lock.
struct SocketDeadlines {
    /// The deadlines, in `Sys.now()` nanoseconds (`Int64.max`: none).
    var receive = Int64.max
    var send = Int64.max
    /// A deadline has been set for the direction at some time: its blocking calls wait where
    /// a change can reach them (in poll, with the waker).
    var receiveUsed = false
    var sendUsed = false
    /// Blocking calls in a poll that watches the waker for a change, by direction.
    var receiveWatchers = 0
    var sendWatchers = 0
    var watchers: Int { receiveWatchers + sendWatchers }
    /// The waker was written for a change and is not drained yet.
    var rung = false
    /// Counts the changes made while calls watched; a watcher notes it when it starts.
    var generation: UInt64 = 0
    /// Watchers that started before the last change and have not yet left (each leaves once
    /// woken): the last of them drains the waker. Those that start after it may find the
    /// waker still readable and look once more, no harm.
    var unseen = 0

    func end(_ direction: WaitDirection) -> Int64 { direction == .receive ? receive : send }
    func used(_ direction: WaitDirection) -> Bool { direction == .receive ? receiveUsed : sendUsed }

    /// The error for a call in `direction` that starts after its deadline has passed (nil:
    /// none has, or none is set): it fails at once, before any system call.
    func passed(_ direction: WaitDirection, _ operation: SocketError.Operation) -> SocketError? {
        guard used(direction) else { return nil }
        let end = self.end(direction)
        guard end != .max && Sys.now() >= end else { return nil }
        return SocketError(timedOut: operation, after: .zero, .socketDeadline(direction))
    }

    mutating func set(_ direction: WaitDirection, _ end: Int64) {
        if direction == .receive { (receive, receiveUsed) = (end, true) } else { (send, sendUsed) = (end, true) }
    }
}

extension Socket {
    /// Sets the instant after which every receive on this socket fails with
    /// ``SocketError/Kind/timedOut`` — the calls that start later **and the calls already
    /// waiting**, in any thread or task — like Go's `SetReadDeadline`. `nil` removes it.
    ///
    /// It covers `receive` in all its forms (``BufferedReader`` too), `receive(from:)`
    /// and ``accept(deadline:)-7i7wg``, blocking and async. A call's limit is the earliest of its
    /// start plus the socket's ``timeout``, its own `deadline:`, and this deadline. A
    /// deadline that has already passed makes those calls fail at once, before any system
    /// call, even when data is waiting; setting one from another thread is the way to end a
    /// waiting receive without closing the socket (which then stays usable: set a later
    /// deadline, or `nil`, and receive again; nothing was consumed). Moving it later makes a
    /// waiting call wait until the new instant.
    ///
    /// ```swift
    /// connection.setReceiveDeadline(.now + .seconds(30))   // this request, however many reads
    /// let line = try reader.readLine()
    /// // elsewhere: connection.setReceiveDeadline(.now)    // end a waiting read at once
    /// ```
    ///
    /// A waiting call sees the change within a millisecond — except, on Linux, a blocking
    /// call that was already waiting when this direction's *first* deadline was set: it may
    /// be asleep in the kernel (`SO_RCVTIMEO`), and sees the change within about 250 ms
    /// (the kernel's timer, which may run a few milliseconds over); so does a blocking call
    /// when the process has no descriptor to spare for the eventfd. From the
    /// first deadline on, this direction's blocking calls wait in `ppoll(2)` on the socket
    /// and an eventfd that a change writes to (one more descriptor; one more system call per
    /// wait than the kernel's own sleep). To have even the first change reach a waiting call
    /// at once, set a deadline (`nil` counts) before the call starts.
    ///
    /// Never blocks; never fails (on a closed socket it does nothing).
    public func setReceiveDeadline(_ deadline: ContinuousClock.Instant?) {
        setSocketDeadline(deadline, receive: true, send: false)
    }

    /// Sets the instant after which every send on this socket fails with
    /// ``SocketError/Kind/timedOut`` — the calls that start later and the calls already
    /// waiting for room in the send buffer — like Go's `SetWriteDeadline`. `nil` removes it.
    ///
    /// It covers `send`, `sendAll` (whose error then says how much was sent) and
    /// `send(_:to:)`, blocking and async; not ``connect(to:deadline:)-94vdi``, which has its own
    /// limits. Otherwise the rules of ``setReceiveDeadline(_:)``.
    public func setSendDeadline(_ deadline: ContinuousClock.Instant?) {
        setSocketDeadline(deadline, receive: false, send: true)
    }

    /// Sets both the receive and the send deadline (Go's `SetDeadline`); see
    /// ``setReceiveDeadline(_:)``.
    public func setDeadline(_ deadline: ContinuousClock.Instant?) {
        setSocketDeadline(deadline, receive: true, send: true)
    }

    private func setSocketDeadline(_ deadline: ContinuousClock.Instant?, receive: Bool, send: Bool) {
        let end = deadline.map { saturatingSum(Sys.now(), WaitBudget.nanosecondsLeft(until: $0) ?? 0) } ?? Int64.max
        var woken: [Resumption] = []
        state.withLock { s in
            if s.closing { return }
            if receive { s.deadlines.set(.receive, end) }
            if send { s.deadlines.set(.send, end) }
            // Only a change that concerns a waiting call rings the waker (which wakes them all).
            let concerned = (receive ? s.deadlines.receiveWatchers : 0) + (send ? s.deadlines.sendWatchers : 0)
            if concerned > 0, let waker = s.waker {
                s.deadlines.generation &+= 1
                s.deadlines.unseen = s.deadlines.watchers
                if !s.deadlines.rung {
                    s.deadlines.rung = true
                    Sys.wake(waker)
                }
            }
            if let registration = s.registration {
                if receive { registration.reactor.setSocketDeadline(registration, .receive, end, waking: &woken) }
                if send { registration.reactor.setSocketDeadline(registration, .send, end, waking: &woken) }
            }
        }
        for r in woken { r.continuation.resume(returning: r.wake) }
    }

    /// For a call about to wait (under the lock): the socket's deadline for its direction,
    /// `Int64.max` for none.
    ///
    /// - Throws: `.timedOut` if it has passed.
    @inline(__always)
    func socketDeadline(_ deadlines: SocketDeadlines, _ budget: WaitBudget) throws(SocketError) -> Int64 {
        guard let direction = budget.socketDeadlineDirection, deadlines.used(direction) else { return .max }
        if let passed = deadlines.passed(direction, budget.operation) { throw passed }
        return deadlines.end(direction)
    }

    /// A blocking call starts watching the waker for a change (under the lock).
    func startWatchingDeadlines(_ s: inout State, _ call: inout Call, _ direction: WaitDirection) {
        if direction == .receive { s.deadlines.receiveWatchers += 1 } else { s.deadlines.sendWatchers += 1 }
        call.watchesDeadlines = true
        call.watchGeneration = s.deadlines.generation
    }

    /// A blocking call stops watching the waker (under the lock). The last of those that
    /// were watching when the last change was made drains the waker — never after
    /// `close()`, which may rely on it staying readable.
    func stopWatchingDeadlines(_ s: inout State, _ call: inout Call) {
        if call.kind.direction == .receive { s.deadlines.receiveWatchers -= 1 } else { s.deadlines.sendWatchers -= 1 }
        call.watchesDeadlines = false
        guard call.watchGeneration != s.deadlines.generation, s.deadlines.rung else { return }
        s.deadlines.unseen -= 1
        if s.deadlines.unseen == 0 && !s.closing, let waker = s.waker {
            s.deadlines.rung = false
            Sys.drain(waker)
        }
    }
}
