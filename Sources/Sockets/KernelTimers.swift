import Synchronization
import SystemPackage

// How a call waits, and why it costs no system call of its own.
//
// A blocking call on Linux can sleep inside the kernel bounded by the descriptor's
// SO_RCVTIMEO (accept, recv) or SO_SNDTIMEO (connect, send). That is the cheapest wait
// there is — one system call, as plain blocking C — but the kernel's timer is coarse: it
// runs on the jiffy wheel (4 ms at HZ=250), can fire up to a jiffy early, and the wheel
// rounds long timers up by as much as an eighth. So the library never lets the kernel's
// timer decide a timeout. It sets the timer *shorter* than the socket's timeout
// (`KernelTimer.for`), so that it always fires before the call's instant, and finishes the
// wait with a precise `ppoll` for what is left (`WaitBudget.wait`). The timer is set once
// while the socket's timeout stays the same: a ping-pong with a timeout armed on every
// wait makes exactly one recv and one send per round trip.
//
// A timer is set only when a call must wait. The first recv or send in a direction after
// the timeout is set tries without waiting (MSG_DONTWAIT) and sets the timer only if that
// does not complete (`Plan.tryFirst`, `Socket.takeKernelPath`): a short connection whose
// request is already there, or whose reply fits the send buffer, never pays a setsockopt.
// `sendAll` with no deadline goes further: every one tries a non-blocking send before it
// reads the clock or looks at a timer, since a send that finds room never waits; its time
// limit starts when it must wait.
//
// A call takes the kernel path only for one attempt, and only when the timer in effect is
// sure to fire before the call's instant (a timeout of at least 50 ms, or no timeout at
// all). Everything else takes the poll path — try the call without waiting (MSG_DONTWAIT;
// accept and connect need O_NONBLOCK on the descriptor), then `ppoll` for the time left:
// a per-call deadline, a short timeout, a retry after EINTR (which would otherwise restart
// the kernel's timer from zero), after a partial send, or after the kernel's timer fired.
//
// Several threads may use one socket, so the descriptor's settings change only under the
// socket's lock and only in ways that keep every call in flight within its own instant:
// a timer is never lengthened while a call may be about to sleep on it (`Usage.kernelCall`:
// Linux reads the timer when the call enters the kernel), and O_NONBLOCK is never cleared
// while an accept or connect relies on it (`pollCalls`).
//
// Once a call has planned under the lock and found the descriptor blocking with its
// direction's timer set for the socket's timeout, it marks that direction ready in the
// socket's `ticket`. Later calls with no deadline then start without the lock: one
// compare-and-swap counts them as a user and a kernel call (`Socket.beginCall`), and
// ending is one atomic subtraction. Anything that would change the picture — a new
// timeout, a timer to change, O_NONBLOCK to set — clears the ticket first, under the lock.

/// Which kernel timer bounds a call.
enum WaitDirection {
    /// SO_RCVTIMEO: accept, recv, recvfrom.
    case receive
    /// SO_SNDTIMEO: connect, send, sendto.
    case send
}

enum KernelTimer {
    /// Below this (50 ms), a timeout is waited for by `ppoll` alone.
    static let minimumTimeout: Int64 = 50_000_000

    /// The kernel timer, in nanoseconds, that is sure to fire before `timeout` has passed:
    /// jiffy rounding (up to 10 ms at HZ=100, early or late) and the timer wheel's
    /// granularity (up to 1/8 late) leave `timeout - 30 ms` shortened by 1/8 always early.
    /// Nil below ``minimumTimeout``.
    @inline(__always)
    static func `for`(nanoseconds timeout: Int64) -> Int64? {
        guard timeout >= minimumTimeout else { return nil }
        return (timeout - 30_000_000) / 8 * 7
    }
}

/// The kernel-side settings of one descriptor and the calls that rely on them. Part of
/// `Socket.State`: read and changed only under the socket's lock.
struct DescriptorMode {
    /// SO_RCVTIMEO and SO_SNDTIMEO in effect, in nanoseconds (nil: none, sleep until ready;
    /// ``unknown``: perhaps one inherited from a listener).
    var receiveTimer: Int64?
    var sendTimer: Int64?
    /// Directions (`Ticket.ready` bits) in which a call has put off setting the timer its
    /// timeout wants since the timeout was set: the next such call sets it at once.
    var deferred: UInt64 = 0
    /// O_NONBLOCK in effect.
    var nonblocking: Bool
    /// accept and connect calls on the poll path: while any is, O_NONBLOCK stays set.
    var pollCalls = 0

    /// A timer that may be set and may not be: a socket accepted from a listener that has
    /// had timers inherits the listener's at the time of the handshake (Linux copies
    /// SO_RCVTIMEO and SO_SNDTIMEO to the new socket). Taken as the longest timer there is,
    /// it is never relied on to end a wait in time, and the first call that wants a timer
    /// of its own sets it.
    static let unknown = Int64.max

    /// The mode of a socket accepted from a listener; `inherits`: the listener has had a
    /// timer set at some time.
    static func accepted(inherits: Bool) -> DescriptorMode {
        DescriptorMode(
            receiveTimer: inherits ? unknown : nil, sendTimer: inherits ? unknown : nil,
            nonblocking: !Sys.kernelTimers)
    }

    func timer(_ direction: WaitDirection) -> Int64? {
        direction == .receive ? receiveTimer : sendTimer
    }
}

/// `Socket.usage`, one atomic word: the calls using the descriptor and the socket's life.
enum Usage {
    /// One call using the descriptor (bits 0-23).
    static let user: UInt64 = 1
    /// One call that may be asleep in the kernel on a SO_RCVTIMEO/SO_SNDTIMEO timer, which
    /// must then not be lengthened (bits 24-47).
    static let kernelCall: UInt64 = 1 << 24
    /// A timer has been set on the descriptor at some time: sockets accepted from it may
    /// have inherited one.
    static let timersSet: UInt64 = 1 << 61
    /// ``Socket/close()`` has been called: no call may start.
    static let closing: UInt64 = 1 << 62
    /// The descriptor has been closed.
    static let released: UInt64 = 1 << 63

    private static let field: UInt64 = (1 << 24) - 1
    static func users(_ word: UInt64) -> UInt64 { word & field }
    static func kernelCalls(_ word: UInt64) -> UInt64 { (word >> 24) & field }
}

/// `Socket.ticket`, one atomic word: bit 0 (receive) and bit 1 (send) say that a call in
/// that direction with no deadline may start on the kernel path without the lock; the
/// rest is the socket's timeout, 0 for none, else whole nanoseconds.
enum Ticket {
    static func ready(_ direction: WaitDirection) -> UInt64 { direction == .receive ? 1 : 2 }
    static let readyBits: UInt64 = 3

    /// The ticket for `timeout` with no direction ready, or nil when calls with it never
    /// take the kernel path on their own (non-blocking, shorter than
    /// ``KernelTimer/minimumTimeout``, or over 2^61 ns, about 73 years).
    static func field(_ timeout: SocketTimeout) -> UInt64? {
        switch timeout.mode {
        case .never:
            return 0
        case .nonBlocking:
            return nil
        case .after:
            guard timeout.kernelTimer != nil, timeout.nanoseconds < 1 << 61 else { return nil }
            return UInt64(timeout.nanoseconds) << 2
        }
    }
}

extension WaitBudget {
    /// The budget of a call that started on the fast path with this ticket.
    @inline(__always)
    init(ticket: UInt64, _ operation: SocketError.Operation) {
        let nanoseconds = Int64(ticket >> 2)
        self.init(
            nanoseconds == 0 ? .forever : .until(later(Sys.now(), by: nanoseconds)),
            allotted: nanoseconds == 0 ? -1 : nanoseconds, operation)
    }
}

extension Socket {
    /// How a call waits (see the comment at the top of this file).
    enum Plan {
        /// Its first attempt may sleep in the kernel (counted as a kernel call).
        case kernel
        /// It tries without waiting first; the timer it would sleep on is set only if it
        /// must wait.
        case tryFirst
        /// It waits by ppoll (counted in `pollCalls` if it needs O_NONBLOCK).
        case poll
    }

    /// Decides how a call starting now waits, adjusting the descriptor if that is safe.
    /// A nil `direction` asks for the poll path. `byTimeout`: the call has no deadline of
    /// its own. Called under the lock.
    func plan(
        _ s: inout State, _ budget: WaitBudget, _ direction: WaitDirection?, needsNonblocking: Bool, byTimeout: Bool
    ) throws(Errno) -> Plan {
        if Sys.kernelTimers, let direction {
            switch try planKernel(&s, budget, direction, allotted: budget.allotted, mayDefer: !needsNonblocking) {
            case .kernel:
                // Calls like this one may now start without the lock, if the timer is exactly
                // the one the socket's timeout asks for (the ticket's timeout is the socket's:
                // both change only under the lock).
                if byTimeout, Ticket.field(s.timeout) != nil, s.mode.timer(direction) == s.timeout.kernelTimer {
                    ticket.bitwiseOr(Ticket.ready(direction), ordering: .sequentiallyConsistent)
                }
                return .kernel
            case .tryFirst:
                return .tryFirst
            case .poll:
                break
            }
        }
        if needsNonblocking { try holdNonblocking(&s.mode) }
        return .poll
    }

    /// A call that tried without waiting (`Plan.tryFirst`) must wait: sets the timer, and
    /// puts the call on the kernel path if there is still time for it (its next attempt
    /// then sleeps in the kernel), or leaves it to ppoll.
    @inline(never)
    func takeKernelPath(_ call: inout Call) throws(SocketError) {
        call.kernelPending = false
        guard let direction = call.direction else { return }
        let allotted: Int64
        switch call.budget.limit {
        case .none: return
        case .forever: allotted = -1
        case .until(let end): allotted = end - Sys.now()
        }
        let plan: Plan
        do throws(Errno) {
            plan = try state.withLock { s throws(Errno) -> Plan in
                try planKernel(&s, call.budget, direction, allotted: allotted, mayDefer: false)
            }
        } catch {
            throw failure(call.budget.operation, error, address: nil)
        }
        guard plan == .kernel else { return }
        call.onKernelPath = true
        call.kernelAttemptMade = false
    }

    /// Returns `.kernel` with the call already counted as a kernel call.
    /// `allotted`: the time the call has left, for the check that the timer fires first.
    /// `mayDefer`: the call can try without waiting (recv, send: MSG_DONTWAIT), so a timer
    /// it needs need not be set before it knows it must wait.
    private func planKernel(
        _ s: inout State, _ budget: WaitBudget, _ direction: WaitDirection, allotted: Int64, mayDefer: Bool
    ) throws(Errno) -> Plan {
        // The timer this socket's timeout asks for: none (.never), a shorter one (long
        // timeouts), or no opinion (short timeouts, non-blocking: they never use it).
        var current = s.mode.timer(direction)
        let wanted: Int64??
        switch s.timeout.mode {
        case .never: wanted = .some(nil)
        case .after: wanted = s.timeout.kernelTimer.map { .some($0) }
        case .nonBlocking: wanted = nil
        }
        if let wanted, wanted != current {
            // The first call in a direction after the timeout is set tries without the
            // timer: a connection whose data (or buffer space) is already there then never
            // pays the setsockopt. The next one sets it.
            if mayDefer, s.mode.deferred & Ticket.ready(direction) == 0, budget.limit != .none {
                s.mode.deferred |= Ticket.ready(direction)
                return .tryFirst
            }
            // No call starts on this timer without the lock from now on; then, any that
            // did before shows in the count.
            ticket.bitwiseAnd(~Ticket.ready(direction), ordering: .sequentiallyConsistent)
            let lengthens = wanted == nil || (current != nil && wanted! > current!)
            if !lengthens || Usage.kernelCalls(usage.load(ordering: .sequentiallyConsistent)) == 0 {
                try Sys.setTimer(fd, direction == .receive ? Sys.receiveTimer : Sys.sendTimer, nanoseconds: wanted)
                current = wanted
                if direction == .receive { s.mode.receiveTimer = wanted } else { s.mode.sendTimer = wanted }
                if wanted != nil { usage.bitwiseOr(Usage.timersSet, ordering: .relaxed) }
            }
        }
        switch budget.limit {
        case .none:
            return .poll
        case .forever:
            break  // any timer will do: if it fires, the call goes on by poll
        case .until:
            guard let current, let bound = KernelTimer.for(nanoseconds: allotted),
                  current <= bound else { return .poll }
        }
        if s.mode.nonblocking {
            guard s.mode.pollCalls == 0 else { return .poll }
            try Sys.setNonblocking(fd, false)
            s.mode.nonblocking = false
        }
        // Counted before the lock is let go: no planner may lengthen the timer between
        // this decision and the call's sleep.
        usage.wrappingAdd(Usage.kernelCall, ordering: .sequentiallyConsistent)
        return .kernel
    }

    /// Sets O_NONBLOCK (if it is not) for an accept or connect on the poll path. Called
    /// under the lock.
    func holdNonblocking(_ mode: inout DescriptorMode) throws(Errno) {
        if !mode.nonblocking {
            // Calls that start without the lock expect a blocking descriptor.
            ticket.bitwiseAnd(~Ticket.readyBits, ordering: .sequentiallyConsistent)
            try Sys.setNonblocking(fd, true)
            mode.nonblocking = true
        }
        mode.pollCalls += 1
    }
}

/// One blocking call in progress: its descriptor, its budget, and how it waits. Made by
/// `Socket.beginCall`, ended by `Socket.endCall`.
struct Call {
    let budget: WaitBudget
    /// Which kernel timer could bound the call (nil: none, it waits by ppoll).
    let direction: WaitDirection?
    /// accept and connect: the poll path needs O_NONBLOCK on the descriptor.
    let needsNonblocking: Bool
    /// Counted as a kernel call in `Socket.usage`.
    var onKernelPath: Bool
    /// Counted in `DescriptorMode.pollCalls`.
    var holdsNonblocking: Bool
    /// The timer this call would sleep on is not set yet: it tries without waiting first,
    /// and sets the timer only if it must wait (`Socket.takeKernelPath`).
    var kernelPending = false
    /// The first attempt has been made (on the kernel path, the one allowed to sleep there).
    var kernelAttemptMade = false

    /// True if the next attempt may sleep in the kernel.
    var mayBlock: Bool { onKernelPath && !kernelAttemptMade }
}
