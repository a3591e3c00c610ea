import SystemPackage

/// The time one call may spend waiting, fixed when the call starts: one instant on the
/// monotonic clock, the earlier of (start + the socket's timeout) and the caller's
/// deadline. Every retry inside the call (EINTR, a spurious wake-up, EAGAIN after
/// readiness) waits only for what is left, so a signal can neither shorten nor lengthen it.
///
/// Times are whole nanoseconds of `Sys.now()` (the clock `ContinuousClock` reads), kept as
/// plain integers: a call does no `Duration` arithmetic unless it was given a deadline.
struct WaitBudget {
    enum Limit: Equatable {
        /// Wait as long as it takes.
        case forever
        /// Do not wait: the socket is non-blocking.
        case none
        /// Wait until this instant of `Sys.now()`.
        case until(Int64)
    }

    let limit: Limit
    /// How long the call was allowed in all, in nanoseconds (-1: no limit), for the timeout
    /// message and for the kernel-timer check.
    let allotted: Int64
    /// For errors; the caller adds the address (`withCall`), which keeps this struct, and
    /// every call's `Call`, trivially copyable.
    let operation: SocketError.Operation

    /// The call runs on a reactor's thread, where it must not wait: its limit is `.none`,
    /// and its would-block error says why.
    let onReactorThread: Bool

    /// The caller's deadline, not the socket's timeout, set `limit`: the timeout message
    /// says "the deadline passed" rather than a duration the user never gave.
    let byDeadline: Bool

    init(_ limit: Limit, allotted: Int64, _ operation: SocketError.Operation, onReactorThread: Bool = false,
         byDeadline: Bool = false) {
        (self.limit, self.allotted, self.operation) = (limit, allotted, operation)
        (self.onReactorThread, self.byDeadline) = (onReactorThread, byDeadline)
    }

    /// This budget for a blocking call made on a reactor's thread, which would stall every
    /// socket the reactor serves if it waited: the call completes if it can at once and
    /// fails with `.wouldBlock` otherwise (see ``Reactor``).
    var forReactorThread: WaitBudget {
        WaitBudget(.none, allotted: -1, operation, onReactorThread: true)
    }

    /// The direction whose socket deadline (Socket+Deadlines.swift) bounds this call: receive
    /// for receives and accept, send for sends, none for connect (which has its own).
    var socketDeadlineDirection: WaitDirection? {
        switch operation {
        case .receive, .receiveFrom, .accept: .receive
        case .send, .sendAll, .sendTo: .send
        default: nil
        }
    }

    /// The instant this call's own limit ends (`Int64.max`: none), for a limit that waits.
    @inline(__always)
    var end: Int64 {
        if case .until(let end) = limit { return end }
        return .max
    }

    /// `deadlineLeft`: the nanoseconds left until the caller's deadline when the call began
    /// (``nanosecondsLeft(until:)``), nil for none.
    ///
    /// - Throws: ``SocketError/Kind/timedOut`` at once, before any system call, when
    ///   the deadline has already passed (even if the operation could complete now).
    @inline(__always)
    init(_ timeout: SocketTimeout, deadlineLeft: Int64?, _ operation: SocketError.Operation) throws(SocketError) {
        self.operation = operation
        onReactorThread = false
        guard let leftNanoseconds = deadlineLeft else {
            byDeadline = false
            switch timeout.mode {
            case .never: (limit, allotted) = (.forever, -1)
            case .nonBlocking: (limit, allotted) = (.none, -1)
            case .after: (limit, allotted) = (.until(saturatingSum(Sys.now(), timeout.nanoseconds)), timeout.nanoseconds)
            }
            return
        }
        guard leftNanoseconds > 0 else {
            throw SocketError(timedOut: operation, after: .zero, .deadline)
        }
        let now = Sys.now()
        switch timeout.mode {
        case .never:
            (limit, allotted, byDeadline) = (.until(saturatingSum(now, leftNanoseconds)), leftNanoseconds, true)
        case .nonBlocking:
            (limit, allotted, byDeadline) = (.none, -1, false)
        case .after:
            let t = min(timeout.nanoseconds, leftNanoseconds)
            (limit, allotted, byDeadline) = (.until(saturatingSum(now, t)), t, leftNanoseconds < timeout.nanoseconds)
        }
    }

    /// How long is left until `deadline`, in whole nanoseconds rounded up (0 or less: it has
    /// passed), or nil for no deadline. Called once where a public call hands its deadline
    /// in: `ContinuousClock.Instant` is resilient, so every look at an optional one costs
    /// value-witness calls (some 80 instructions), and nothing below this point carries it.
    @inline(__always)
    static func nanosecondsLeft(until deadline: ContinuousClock.Instant?) -> Int64? {
        switch deadline {
        case .none: return nil
        case .some(let instant):
            let left = instant - ContinuousClock.now
            return left > .zero ? wholeNanoseconds(left) : 0
        }
    }

    /// How long to ask `ppoll` to sleep when `remaining` is left.
    ///
    /// Linux lets a poll sleep longer than asked by its timer slack
    /// (`select_estimate_accuracy`): 0.1% of the sleep, at most 100 ms, and never less
    /// than the thread's timer slack, 50 µs unless someone changed it. Its timer fires
    /// anywhere in [asked, asked + slack], and on a quiet machine at the end. So a wait asks
    /// for what is left minus that slack: it wakes at the instant rather than up to a slack
    /// after it, and if some other interrupt wakes it a little early, the loop (where the
    /// clock, not the wake-up, decides) sleeps out the rest. The last 100 µs are asked for
    /// whole.
    @inline(__always)
    static func pollSpan(_ remaining: Int64) -> Int64 {
        let slack = max(50_000, min(remaining / 1000 + 1, 100_000_000))
        return remaining > 2 * slack ? remaining - slack : remaining
    }

    /// The error for a budget that has run out.
    var timedOut: SocketError {
        SocketError(timedOut: operation, after: allotted >= 0 ? .nanoseconds(allotted) : nil, byDeadline ? .deadline : .timeout)
    }

    /// The error when the instant has passed: the call's own, or the socket's deadline
    /// `socketEnd` if that came first (its ``SocketError/timeout`` is nil: the socket's
    /// deadline may have been set while the call waited).
    func expired(socketEnd: Int64) -> SocketError {
        guard socketEnd < end, let direction = socketDeadlineDirection else { return timedOut }
        return SocketError(timedOut: operation, after: nil, .socketDeadline(direction))
    }

    /// The error for a non-blocking socket whose operation would have waited.
    func wouldBlock(_ errno: Errno = .resourceTemporarilyUnavailable) -> SocketError {
        SocketError(.wouldBlock, operation, errno: errno, detail: onReactorThread ? WaitBudget.reactorThreadDetail : nil)
    }

    static let reactorThreadDetail =
        "a blocking call on a reactor's thread may not wait (it would stall every socket the reactor serves): use its async form"

    /// Blocks until `fd` is ready for `events` (or reports an error or hang-up, which the
    /// next attempt of the operation will surface), `waker` is written (``Socket/close()``,
    /// or a new socket deadline), `slice` nanoseconds have passed (then it returns 0 for the
    /// caller to look again), or the earlier of the budget's instant and `socketEnd` (the
    /// socket's deadline, `Int64.max` for none) comes. Returns what poll saw on the
    /// descriptor (`revents`; 0 when woken by the waker or at the end of a slice).
    ///
    /// The kernel's wake-up decides nothing: after every return from `poll` the clock is
    /// read again, so the call never gives up before its instant, and EINTR simply loops
    /// with the time that is left.
    ///
    /// - Throws: ``SocketError/Kind/timedOut`` when the instant passes (``expired(socketEnd:)``),
    ///   ``SocketError/Kind/wouldBlock`` for a non-blocking socket.
    func wait(_ fd: CInt, for events: Int16, waker: CInt, slice: Int64?, socketEnd: Int64) throws(SocketError) -> Int16 {
        if case .none = limit { throw wouldBlock() }
        let end = min(self.end, socketEnd)
        let sliceEnd = slice.map { saturatingSum(Sys.now(), $0) } ?? .max
        while true {
            var span: Int64?
            if end != .max || sliceEnd != .max {
                let now = Sys.now()
                if now >= end { throw expired(socketEnd: socketEnd) }
                if now >= sliceEnd { return 0 }
                span = end <= sliceEnd ? WaitBudget.pollSpan(end - now) : sliceEnd - now
            }
            switch Sys.poll(fd, events: events, waker: waker, nanoseconds: span) {
            case .success(let seen):
                if seen.revents != 0 || seen.woken { return seen.revents }
            case .failure(let e):
                if e != .interrupted { throw SocketError(operation, errno: e) }
            }
        }
    }

    /// How often a wait with no waker looks whether the socket was closed.
    static let noWakerSlice: Int64 = 10_000_000

    /// Sleeps for `nanoseconds` (less if the budget or `socketEnd` ends sooner), or until
    /// `waker` is written (`close()`, a new socket deadline): the wait of a call that has
    /// nothing reliable to poll for (a Unix datagram send to a full receiver, a Unix connect
    /// to a full listener — poll calls both sockets writable, and an unconnected Unix stream
    /// socket hung up). The caller tries again after it.
    ///
    /// - Throws: ``SocketError/Kind/timedOut`` when the instant has passed,
    ///   ``SocketError/Kind/wouldBlock`` for a non-blocking socket.
    func pause(_ nanoseconds: Int64, waker: CInt, socketEnd: Int64) throws(SocketError) {
        var span = nanoseconds
        if case .none = limit { throw wouldBlock() }
        let end = min(self.end, socketEnd)
        if end != .max {
            let left = end - Sys.now()
            if left <= 0 { throw expired(socketEnd: socketEnd) }
            span = min(span, left)
        }
        _ = Sys.poll(-1, events: 0, waker: waker, nanoseconds: span)  // EINTR: the caller tries again early
    }
}

/// `instant + nanoseconds`, saturating at `Int64.max`: an instant that far ahead is
/// "never" in practice.
@inline(__always)
func saturatingSum(_ instant: Int64, _ nanoseconds: Int64) -> Int64 {
    let (sum, overflow) = instant.addingReportingOverflow(nanoseconds)
    return overflow ? Int64.max : sum
}

/// A positive duration in whole nanoseconds, rounded up, saturating at `Int64.max`.
/// (Quotient and remainder rather than adding 10⁹ − 1 first, which could overflow the
/// 128-bit attoseconds of the longest durations.)
func wholeNanoseconds(_ d: Duration) -> Int64 {
    let (whole, part) = d.attoseconds.quotientAndRemainder(dividingBy: 1_000_000_000)
    return Int64(clamping: part > 0 ? whole + 1 : whole)
}
