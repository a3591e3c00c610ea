import SystemPackage

// How a call waits, and why a timeout costs no system call of its own.
//
// A blocking call on Linux can sleep inside the kernel bounded by the descriptor's
// SO_RCVTIMEO (accept, recv) or SO_SNDTIMEO (send). That is the cheapest wait there is —
// one system call, as plain blocking C — but the kernel's timer is coarse: it runs on the
// jiffy wheel (4 ms at HZ=250), can fire up to a jiffy early, and the wheel rounds long
// timers up by as much as an eighth. So the library never lets the kernel's timer decide a
// timeout. It keeps the timer *shorter* than the time the call has (`KernelTimer.for`), so
// that it always fires before the call's instant, and finishes the wait with a precise
// `ppoll` for what is left (`WaitBudget.wait`). A timer is set once and kept while it
// fits: a ping-pong with a timeout armed on every wait makes exactly one recv and one send
// per round trip, and so does one with a fresh per-call deadline (its timer is set to half
// of what the deadline allows, so it is re-set only when a shared deadline has used half).
// No timer is longer than `KernelTimer.reach` (250 ms), so that a socket deadline set while a
// call sleeps reaches it (Socket+Deadlines.swift): an idle call with a long limit wakes four
// times a second, makes one recv and sleeps again.
//
// A call sleeps in the kernel ("the kernel path", `Path.kernel`) only where `close()` can
// wake it: `shutdown(2)` ends a recv, a stream send, a UDP send and an accept at once, but
// not a Unix-domain connect (it sleeps on the *listener's* queue), not a Unix datagram send
// (the receiver's queue), and not a TCP connect that `shutdown` reaches before the SYN goes
// out. Those, and everything on a descriptor the library shares with other processes
// (`Socket(adopting:)`), take the poll path: attempts that never wait (MSG_DONTWAIT, or
// O_NONBLOCK for accept and connect) and `ppoll` on the socket and the socket's waker,
// which `close()` writes to.
//
// The descriptor's settings change only under the socket's lock, in ways that keep every
// call in flight within its own instant: a timer is never lengthened while a call may be
// about to sleep on it (`DescriptorMode.sleepers`: Linux reads the timer when the call
// enters the kernel), and O_NONBLOCK is never cleared while an accept or connect relies on
// it (`nonblockingHolders`). A call that can try without waiting (recv, send) and would
// have to set a timer first tries once without it (`Path.tryFirst`): a short connection
// whose data or buffer space is already there never pays a setsockopt.
//
// Descriptors are created non-blocking on Linux (`SOCK_NONBLOCK`), ready for a connect;
// the first call that may sleep in the kernel clears O_NONBLOCK, once. Accepted sockets,
// which connect to nothing, are born blocking.

/// Which kernel timer bounds a call, and which readiness it waits for.
package enum WaitDirection {
    /// SO_RCVTIMEO, POLLIN: accept, recv, recvfrom.
    case receive
    /// SO_SNDTIMEO, POLLOUT: connect, send, sendto.
    case send
}

enum KernelTimer {
    /// Below this (50 ms), a timeout is waited for by `ppoll` alone.
    static let minimumTimeout: Int64 = 50_000_000

    /// No timer: a call sleeps until the descriptor is ready. The longest timer of all.
    static let none = Int64.max

    /// The longest a call sleeps in the kernel before it looks again (250 ms): a socket
    /// deadline set for the first time while the call sleeps there, which nothing else
    /// could make it see (Socket+Deadlines.swift), reaches it by then. A call with no limit
    /// sleeps on this timer, and an idle one wakes four times a second (one `recv` each).
    static let reach: Int64 = 250_000_000

    /// A timer that may be set and may not be: a socket accepted from a listener that has
    /// had timers inherits the listener's (Linux copies SO_RCVTIMEO and SO_SNDTIMEO to the
    /// new socket), and a descriptor adopted from elsewhere may carry any. Longer than
    /// ``reach``, so no call relies on it: the first that sleeps in the kernel sets its own.
    static let unknown = Int64.max - 1

    /// How much of its time a call may have used since it planned and still sleep on the
    /// timer it planned for (a call that tried first and then set its timer): ``for`` keeps
    /// at least 19 ms in hand at its worst (a timer fired 1/8 late plus a 10 ms jiffy),
    /// so 1 ms of it may go to the call's own attempt.
    static let planningAllowance: Int64 = 1_000_000

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
    /// SO_RCVTIMEO and SO_SNDTIMEO in effect, in nanoseconds, or ``KernelTimer/none`` or
    /// ``KernelTimer/unknown``.
    var receiveTimer: Int64
    var sendTimer: Int64
    /// Calls planned onto the kernel path in each direction that have not yet come back
    /// from their system call: while any may be about to sleep, that timer is not lengthened.
    var receiveSleepers = 0
    var sendSleepers = 0
    /// O_NONBLOCK in effect.
    var nonblocking: Bool
    /// accept and connect calls on the poll path: while any is, O_NONBLOCK stays set.
    var nonblockingHolders = 0
    /// A timer has been set on the descriptor at some time: sockets accepted from it may
    /// have inherited one. Set before the timer itself.
    var timersSet: Bool

    /// A descriptor the library created: non-blocking, with no timers.
    static var created: DescriptorMode {
        DescriptorMode(receiveTimer: KernelTimer.none, sendTimer: KernelTimer.none, nonblocking: true, timersSet: false)
    }

    /// The mode of a socket accepted from a listener; `inherits`: the listener has had a
    /// timer set at some time.
    /// `nonblocking`: accepted with O_NONBLOCK (by an async accept).
    static func accepted(inherits: Bool, nonblocking: Bool = false) -> DescriptorMode {
        let timer = inherits ? KernelTimer.unknown : KernelTimer.none
        return DescriptorMode(receiveTimer: timer, sendTimer: timer, nonblocking: nonblocking || !Sys.kernelTimers, timersSet: inherits)
    }

    func timer(_ direction: WaitDirection) -> Int64 {
        direction == .receive ? receiveTimer : sendTimer
    }

    func sleepers(_ direction: WaitDirection) -> Int {
        direction == .receive ? receiveSleepers : sendSleepers
    }

    mutating func addSleeper(_ direction: WaitDirection, _ delta: Int) {
        if direction == .receive { receiveSleepers += delta } else { sendSleepers += delta }
    }
}

extension Socket {
    /// How much a plan may change the descriptor.
    enum Adjust {
        /// Set the timer or clear O_NONBLOCK if the kernel path needs it.
        case now
        /// The call can try without waiting: if its timer must be set, try first
        /// (`Path.tryFirst`) and set it (and clear O_NONBLOCK, if need be) only if the call
        /// must wait. O_NONBLOCK alone is cleared at once: a descriptor is made blocking
        /// once in its life, by the first call that may sleep in the kernel.
        case afterTrying
        /// Change nothing: the next attempt of a call already under way.
        case never
    }

    /// Decides how a call's next attempt waits: on the kernel path (then counted as a
    /// sleeper), trying first, or on the poll path. Called under the lock.
    ///
    /// - Parameters:
    ///   - allotted: the time the whole call has (-1: no limit), which picks the timer it
    ///     would like; `left`: the time still left, which the timer must fit.
    func plan(
        _ s: inout State, _ kind: WaitKind, _ budget: WaitBudget, allotted: Int64, left: Int64, _ adjust: Adjust
    ) throws(Errno) -> Path {
        guard Sys.kernelTimers, kind.sleepsInKernel, !shared else { return .poll }
        // A direction with a socket deadline waits where a new one can reach it.
        if let direction = budget.socketDeadlineDirection, s.deadlines.used(direction) { return .poll }
        let longest: Int64  // the longest timer sure to fire before the call's instant, and within reach
        let fits: Int64
        switch budget.limit {
        case .none:
            return .poll
        case .forever:
            (longest, fits) = (KernelTimer.reach, KernelTimer.reach)
        case .until:
            guard let a = KernelTimer.for(nanoseconds: allotted),
                  let l = KernelTimer.for(nanoseconds: left + KernelTimer.planningAllowance) else { return .poll }
            (longest, fits) = (min(a, KernelTimer.reach), min(l, KernelTimer.reach))
        }
        let capped = longest == KernelTimer.reach
        let direction = kind.direction
        var timer = s.mode.timer(direction)
        // The timer this call would like: the socket's timeout's if it fits (one value for
        // every call of the socket); else the one in effect if it fits (no change); else
        // ``KernelTimer/reach`` for a call that has longer; else half of what the call
        // allows, so that calls sharing a deadline re-set it only when half of the time is
        // gone.
        let wanted: Int64
        if let own = s.timeout.kernelTimer, own <= longest {
            wanted = own
        } else if timer <= longest {
            wanted = timer
        } else {
            wanted = capped ? longest : longest / 2
        }
        let retime = wanted != timer && (wanted < timer || s.mode.sleepers(direction) == 0)
        let unblock = s.mode.nonblocking && s.mode.nonblockingHolders == 0
        if retime || unblock {
            switch adjust {
            case .afterTrying where retime:
                return .tryFirst
            case .never:
                break
            case .now, .afterTrying:
                if retime {
                    s.mode.timersSet = true  // before the timer: an accept that sees the timer sees this
                    try Sys.setTimer(fd, direction == .receive ? Sys.receiveTimer : Sys.sendTimer,
                                     nanoseconds: wanted == KernelTimer.none ? nil : wanted)
                    if direction == .receive { s.mode.receiveTimer = wanted } else { s.mode.sendTimer = wanted }
                    timer = wanted
                }
                if unblock {
                    try Sys.setNonblocking(fd, false)
                    s.mode.nonblocking = false
                }
            }
        }
        guard timer <= fits, !s.mode.nonblocking else { return .poll }
        s.mode.addSleeper(direction, 1)
        return .kernel
    }

    /// Sets O_NONBLOCK (if it is not) for an accept or connect on the poll path, and counts
    /// the call as relying on it. On an adopted descriptor it is set every time and never
    /// cleared: O_NONBLOCK belongs to the open file, which other holders share (and may have
    /// cleared), and clearing it under another holder's accept would put that accept to
    /// sleep where nothing can wake it — Go's `net.FileListener` makes the same choice.
    /// Called under the lock.
    func holdNonblocking(_ mode: inout DescriptorMode) throws(Errno) {
        if !mode.nonblocking || shared {
            try Sys.setNonblocking(fd, true)
            mode.nonblocking = true
        }
        mode.nonblockingHolders += 1
    }
}
