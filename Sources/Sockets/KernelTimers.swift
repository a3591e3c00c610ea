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
// wait with a precise `ppoll` for what is left (`WaitBudget.wait`). The timer is set once,
// lazily, while the socket's timeout stays the same: a ping-pong with a timeout armed on
// every wait makes exactly one recv and one send per round trip.
//
// A call takes the kernel path only for its first attempt, and only when the timer in
// effect is sure to fire before the call's instant (a timeout of at least 50 ms, or no
// timeout at all). Everything else takes the poll path — try the call without waiting
// (MSG_DONTWAIT; accept and connect need O_NONBLOCK on the descriptor), then `ppoll` for
// the time left — exactly as before: a per-call deadline, a short timeout, a retry after
// EINTR (which would otherwise restart the kernel's timer from zero), after a partial
// send, or after the kernel's timer fired early.
//
// Several threads may use one socket, so the descriptor's settings change only under the
// socket's lock and only in ways that keep every call in flight within its own instant:
// a timer is never lengthened while a call may be sleeping on it (`kernelCalls`), and
// O_NONBLOCK is never cleared while an accept or connect relies on it (`pollCalls`).

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
    /// SO_RCVTIMEO and SO_SNDTIMEO in effect, in nanoseconds (nil: none, sleep until ready).
    var receiveTimer: Int64?
    var sendTimer: Int64?
    /// O_NONBLOCK in effect.
    var nonblocking: Bool
    /// Calls that may be asleep in the kernel, bounded by the timers: while any is, a
    /// timer is not lengthened.
    var kernelCalls = 0
    /// accept and connect calls on the poll path: while any is, O_NONBLOCK stays set.
    var pollCalls = 0

    /// Decides how a call starting now waits, adjusting the descriptor if that is safe.
    /// Returns true for the kernel path (the call is then counted in `kernelCalls`);
    /// false for the poll path (counted in `pollCalls` if `needsNonblocking`).
    /// A nil `direction` asks for the poll path.
    mutating func plan(
        _ fd: CInt, _ timeout: SocketTimeout, _ budget: WaitBudget,
        _ direction: WaitDirection?, needsNonblocking: Bool
    ) throws(Errno) -> Bool {
        if Sys.kernelTimers, let direction, try planKernel(fd, timeout, budget, direction) {
            kernelCalls += 1
            return true
        }
        if needsNonblocking { try holdNonblocking(fd) }
        return false
    }

    private mutating func planKernel(
        _ fd: CInt, _ timeout: SocketTimeout, _ budget: WaitBudget, _ direction: WaitDirection
    ) throws(Errno) -> Bool {
        // The timer this socket's timeout asks for: none (.never), a shorter one (long
        // timeouts), or no opinion (short timeouts, non-blocking: they never use it).
        var current = direction == .receive ? receiveTimer : sendTimer
        let wanted: Int64??
        switch timeout.mode {
        case .never: wanted = .some(nil)
        case .after: wanted = timeout.kernelTimer.map { .some($0) }
        case .nonBlocking: wanted = nil
        }
        if let wanted, wanted != current {
            let lengthens = wanted == nil || (current != nil && wanted! > current!)
            if !lengthens || kernelCalls == 0 {
                try Sys.setTimer(fd, direction == .receive ? Sys.receiveTimer : Sys.sendTimer, nanoseconds: wanted)
                current = wanted
                if direction == .receive { receiveTimer = wanted } else { sendTimer = wanted }
            }
        }
        switch budget.limit {
        case .none:
            return false
        case .forever:
            break  // any timer will do: if it fires, the call goes on by poll
        case .until:
            guard let current, let bound = KernelTimer.for(nanoseconds: budget.allotted),
                  current <= bound else { return false }
        }
        if nonblocking {
            guard pollCalls == 0 else { return false }
            try Sys.setNonblocking(fd, false)
            nonblocking = false
        }
        return true
    }

    /// Sets O_NONBLOCK (if it is not) for an accept or connect on the poll path.
    mutating func holdNonblocking(_ fd: CInt) throws(Errno) {
        if !nonblocking {
            try Sys.setNonblocking(fd, true)
            nonblocking = true
        }
        pollCalls += 1
    }
}

/// One blocking call in progress: its descriptor, its budget, and how it waits. Made by
/// `Socket.beginCall`, ended by `Socket.endCall`.
struct Call {
    let fd: CInt
    let budget: WaitBudget
    /// accept and connect: the poll path needs O_NONBLOCK on the descriptor.
    let needsNonblocking: Bool
    /// Counted in `DescriptorMode.kernelCalls`.
    var onKernelPath: Bool
    /// Counted in `DescriptorMode.pollCalls`.
    var holdsNonblocking: Bool
    /// The first attempt has been made (on the kernel path, the one allowed to sleep there).
    var kernelAttemptMade = false

    /// True if the next attempt may sleep in the kernel.
    var mayBlock: Bool { onKernelPath && !kernelAttemptMade }
}
