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

    init(_ limit: Limit, allotted: Int64, _ operation: SocketError.Operation, onReactorThread: Bool = false) {
        (self.limit, self.allotted, self.operation, self.onReactorThread) = (limit, allotted, operation, onReactorThread)
    }

    /// This budget for a blocking call made on a reactor's thread, which would stall every
    /// socket the reactor serves if it waited: the call completes if it can at once and
    /// fails with `.wouldBlock` otherwise (see ``Reactor``).
    var forReactorThread: WaitBudget {
        WaitBudget(.none, allotted: -1, operation, onReactorThread: true)
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
            switch timeout.mode {
            case .never: (limit, allotted) = (.forever, -1)
            case .nonBlocking: (limit, allotted) = (.none, -1)
            case .after: (limit, allotted) = (.until(saturatingSum(Sys.now(), timeout.nanoseconds)), timeout.nanoseconds)
            }
            return
        }
        guard leftNanoseconds > 0 else {
            throw SocketError(.timedOut, operation, timeout: .zero)
        }
        let now = Sys.now()
        switch timeout.mode {
        case .never:
            (limit, allotted) = (.until(saturatingSum(now, leftNanoseconds)), leftNanoseconds)
        case .nonBlocking:
            (limit, allotted) = (.none, -1)
        case .after:
            let t = min(timeout.nanoseconds, leftNanoseconds)
            (limit, allotted) = (.until(saturatingSum(now, t)), t)
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
        SocketError(.timedOut, operation, timeout: allotted >= 0 ? .nanoseconds(allotted) : nil)
    }

    /// The error for a non-blocking socket whose operation would have waited.
    func wouldBlock(_ errno: Errno = .resourceTemporarilyUnavailable) -> SocketError {
        SocketError(.wouldBlock, operation, errno: errno, detail: onReactorThread ? WaitBudget.reactorThreadDetail : nil)
    }

    static let reactorThreadDetail =
        "a blocking call on a reactor's thread may not wait (it would stall every socket the reactor serves): use its async form"

    /// Blocks until `fd` is ready for `events` (or reports an error or hang-up, which the
    /// next attempt of the operation will surface), `waker` is written (``Socket/close()``),
    /// or the budget runs out. Returns what poll saw on the descriptor (`revents`; 0 when
    /// woken by the waker).
    ///
    /// The kernel's wake-up decides nothing: after every return from `poll` the clock is
    /// read again, so the call never gives up before its instant, and EINTR simply loops
    /// with the time that is left. `sliced` (an adopted socket for which no waker could be
    /// made: no descriptor to spare): it polls in slices of ``noWakerSlice`` and asks
    /// `stillOpen` between them.
    ///
    /// - Throws: ``SocketError/Kind/timedOut`` when the instant passes,
    ///   ``SocketError/Kind/wouldBlock`` for a non-blocking socket.
    func wait(_ fd: CInt, for events: Int16, waker: CInt, sliced: Bool, stillOpen: () -> Bool) throws(SocketError) -> Int16 {
        if case .none = limit { throw wouldBlock() }
        while true {
            var span: Int64?
            if case .until(let end) = limit {
                let now = Sys.now()
                if now >= end { throw timedOut }
                span = WaitBudget.pollSpan(end - now)
            }
            if sliced {
                if !stillOpen() { return 0 }
                span = min(span ?? WaitBudget.noWakerSlice, WaitBudget.noWakerSlice)
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

    /// Sleeps for `nanoseconds` (less if the budget ends sooner), or until `waker` is
    /// written (`close()`): the wait of a call that has nothing reliable to poll for (a
    /// Unix datagram send to a full receiver, a Unix connect to a full listener — poll
    /// calls both sockets writable, and an unconnected Unix stream socket hung up). The
    /// caller tries again after it.
    ///
    /// - Throws: ``SocketError/Kind/timedOut`` when the instant has passed,
    ///   ``SocketError/Kind/wouldBlock`` for a non-blocking socket.
    func pause(_ nanoseconds: Int64, waker: CInt) throws(SocketError) {
        var span = nanoseconds
        switch limit {
        case .none:
            throw wouldBlock()
        case .forever:
            break
        case .until(let end):
            let left = end - Sys.now()
            if left <= 0 { throw timedOut }
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
