import Synchronization

// One socket's place in a reactor: its readiness, and the async calls waiting on it.
//
// Readiness is one atomic word: a bit per direction and a "tick" that counts the events the
// reactor has delivered (Tokio's `ScheduledIo`). A call reads the word, tries its system
// call if its bit is set, and after a would-block — or a short read, which says the socket
// is drained — clears the bit only if the tick has not moved since it read the word: an
// event that came in meanwhile keeps the bit, so the next call tries rather than waits for
// an edge that has already passed. A ping-pong therefore never pays a read that fails with
// EAGAIN: the short read clears the bit, and the next receive waits for the edge.
//
// Everything else (the waiters, their timers, closing) is guarded by the reactor's lock.
// Four parties can end a wait — readiness, the timer, cancellation, `close()` — and
// whoever takes a waiter out of its list under that lock resumes it, outside the lock; the
// others no longer find it. So each continuation is resumed exactly once.

/// Why a parked call was resumed.
enum Wake {
    /// Its direction became ready (or was ready when it came to park): try again.
    case ready
    /// Its timer fired: the call's clock decides whether its time is up (a paced retry's
    /// timer is not the call's end).
    case timer
    /// Its task was cancelled.
    case cancelled
    /// ``Socket/close()`` was called.
    case closed
}

#if DEBUG
/// Checked in debug builds (a second resume traps, a lost one is reported); unchecked in
/// release, where it costs 38 ns instead of 97 (ASYNC.md).
typealias WakeContinuation = CheckedContinuation<Wake, Never>
#else
typealias WakeContinuation = UnsafeContinuation<Wake, Never>
#endif

/// Suspends the current task until `park` has handed its continuation to whoever resumes it.
@inline(__always)
func suspendForWake(_ park: (WakeContinuation) -> Void) async -> Wake {
    #if DEBUG
    await withCheckedContinuation { park($0) }
    #else
    await withUnsafeContinuation { park($0) }
    #endif
}

/// A continuation taken out of a wait list, to be resumed once the lock is let go.
struct Resumption {
    let continuation: WakeContinuation
    let wake: Wake
}

/// One parked call.
struct Waiter {
    /// Unique among the socket's calls (`Socket.State.asyncCalls`): what cancellation looks for.
    let id: UInt64
    let continuation: WakeContinuation
    /// When its timer fires, in `Sys.now()` nanoseconds (`Int64.max`: none).
    let deadline: Int64
    /// The socket's deadline for the direction bounds it (all but connect).
    let governed: Bool
}

/// The waiters of one direction and its timer entry.
struct WaitList {
    var waiters: [Waiter] = []
    /// The sequence number of the live timer entry for this direction (0: none).
    var timerSequence: UInt64 = 0
    /// When that entry comes due (`Int64.max`: no entry).
    var timerWhen = Int64.max
    /// The socket's deadline for this direction (Socket+Deadlines.swift; `Int64.max`: none).
    var socketDeadline = Int64.max
}

/// A descriptor registered with a reactor (see the comment at the top).
final class Registration: @unchecked Sendable {
    // @unchecked Sendable is safe: `fd`, `token` and `reactor` never change; `readiness` is
    // atomic; every other field is read and written only under `reactor.shared`'s lock.

    static let readable: UInt64 = 1
    static let writable: UInt64 = 2
    /// Final states (end of stream, hang-up, error): set by an event, never cleared.
    static let readClosed: UInt64 = 4
    static let writeClosed: UInt64 = 8
    static let tickUnit: UInt64 = 1 << 32

    let fd: CInt
    let reactor: Reactor
    /// The epoll/kqueue tag: generation << 32 | slot. An event whose token no longer names
    /// a live registration (a closed socket, a descriptor number since reused) is dropped.
    let token: UInt64
    /// Readiness bits and the tick. Both bits start set: the state before registration is
    /// unknown, so the first call tries.
    let readiness = Atomic<UInt64>(readable | writable)

    /// Under the reactor's lock.
    var receive = WaitList()
    var send = WaitList()
    var closed = false
    /// Rung by ``Socket/close()``: a server waiting for a free place (not a socket call)
    /// learns that its listener was closed.
    var closeAlarm: Alarm?

    init(fd: CInt, reactor: Reactor, token: UInt64) {
        (self.fd, self.reactor, self.token) = (fd, reactor, token)
    }

    static func bit(_ direction: WaitDirection) -> UInt64 { direction == .receive ? readable : writable }

    /// The bits that say `direction` may be ready: its own, and its final state.
    @inline(__always)
    static func readyMask(_ direction: WaitDirection) -> UInt64 {
        direction == .receive ? readable | readClosed : writable | writeClosed
    }

    /// Forgets the final states: a socket that has just connected, whose registration may
    /// have seen the hang-up of a socket not yet connected (Linux reports `EPOLLHUP` for a
    /// TCP socket in the CLOSE state when it is registered).
    func forgetFinalStates() {
        readiness.bitwiseAnd(~(Registration.readClosed | Registration.writeClosed), ordering: .acquiringAndReleasing)
    }

    /// The word now.
    @inline(__always)
    func observe() -> UInt64 { readiness.load(ordering: .acquiring) }

    /// After a short read or a short send: clears `direction`'s bit (the socket is drained,
    /// or full) unless an event has come since `observed` was read. Its final state stays: a
    /// FIN may have come with the data just drained.
    @inline(__always)
    func clearAfterShort(_ direction: WaitDirection, ifUnchangedSince observed: UInt64) {
        clear(Registration.bit(direction), ifUnchangedSince: observed)
    }

    /// After a would-block: clears `direction`'s bit and its final state unless an event has
    /// come since `observed` was read. EAGAIN proves the state is not final (an end of stream
    /// reads 0, a reset fails): a hang-up or error that is stale or already reported (a Unix
    /// socket's from before its connect, a UDP socket's ICMP error, a listener shut down)
    /// must not make every later wait return at once.
    @inline(__always)
    func clearAfterWouldBlock(_ direction: WaitDirection, ifUnchangedSince observed: UInt64) {
        clear(Registration.readyMask(direction), ifUnchangedSince: observed)
    }

    @inline(__always)
    private func clear(_ bits: UInt64, ifUnchangedSince observed: UInt64) {
        var current = observed
        while current >> 32 == observed >> 32 && current & bits != 0 {
            let (exchanged, original) = readiness.compareExchange(
                expected: current, desired: current & ~bits, ordering: .acquiringAndReleasing)
            if exchanged { return }
            current = original
        }
    }

    /// Records an event (on the reactor thread, under the lock) and takes the waiters it wakes.
    func deliver(_ event: PollerEvent, into resumptions: inout [Resumption]) {
        let bits = (event.readable ? Registration.readable : 0) | (event.writable ? Registration.writable : 0)
            | (event.readClosed ? Registration.readClosed : 0) | (event.writeClosed ? Registration.writeClosed : 0)
        var current = readiness.load(ordering: .relaxed)
        while true {
            let (exchanged, original) = readiness.compareExchange(
                expected: current, desired: (current | bits) &+ Registration.tickUnit, ordering: .acquiringAndReleasing)
            if exchanged { break }
            current = original
        }
        if event.readable { Registration.takeAll(&receive, .ready, into: &resumptions) }
        if event.writable { Registration.takeAll(&send, .ready, into: &resumptions) }
    }

    static func takeAll(_ list: inout WaitList, _ wake: Wake, into resumptions: inout [Resumption]) {
        if list.waiters.isEmpty { return }
        for waiter in list.waiters { resumptions.append(Resumption(continuation: waiter.continuation, wake: wake)) }
        list.waiters.removeAll(keepingCapacity: true)
    }

    func withList<R>(_ direction: WaitDirection, _ body: (inout WaitList) -> R) -> R {
        direction == .receive ? body(&receive) : body(&send)
    }

    /// Whether the timer entry with `sequence` is this registration's live one (not replaced
    /// by an earlier one, nor fired). Under the lock.
    func holdsTimer(_ sequence: UInt64) -> Bool {
        withList(Registration.direction(ofTimer: sequence)) { $0.timerSequence == sequence }
    }

    /// A timer entry's sequence carries its direction in the low bit.
    static func direction(ofTimer sequence: UInt64) -> WaitDirection { sequence & 1 == 0 ? .receive : .send }

    /// Its live timer entry (``holdsTimer(_:)``) came due at `now` (under the lock): resumes
    /// the waiters whose time has come and returns the instant of the earliest left, for a
    /// new entry.
    func timerFired(sequence: UInt64, now: Int64, into resumptions: inout [Resumption]) -> Int64? {
        withList(Registration.direction(ofTimer: sequence)) { list -> Int64? in
            list.timerSequence = 0
            list.timerWhen = .max
            var next = Int64.max
            var kept = 0
            for i in list.waiters.indices {
                let waiter = list.waiters[i]
                if waiter.deadline <= now {
                    resumptions.append(Resumption(continuation: waiter.continuation, wake: .timer))
                } else {
                    next = min(next, waiter.deadline)
                    list.waiters[kept] = waiter
                    kept += 1
                }
            }
            list.waiters.removeLast(list.waiters.count - kept)
            return next == .max ? nil : next
        }
    }
}
