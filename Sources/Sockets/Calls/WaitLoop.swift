import SystemPackage

// The loop every call that may wait runs through: begin (count the call, fix its budget,
// plan its first attempt), attempt, and while the attempt cannot complete, plan the next
// one and wait for it; end (uncount). One lock round trip begins a call and one ends it;
// a call that completes at its first attempt takes no other.

/// How a kind of call waits.
struct WaitKind {
    let direction: WaitDirection
    /// Its attempts may sleep in the kernel: `shutdown(2)` ends such a sleep at once
    /// (recv, recvfrom, accept, stream and UDP sends; see KernelTimerPolicy.swift).
    let sleepsInKernel: Bool
    /// accept and connect: an attempt that must not wait needs O_NONBLOCK on the
    /// descriptor (recv and send have MSG_DONTWAIT).
    let needsNonblocking: Bool
    /// A Unix-domain connect or datagram send: poll calls the socket writable while the
    /// peer's queue is full, so once an attempt finds a reported readiness false the call
    /// waits by pacing (`pause`, 1 ms doubling to 32 ms) rather than spin on poll.
    let pacedAfterFalseReadiness: Bool

    var events: Int16 { direction == .receive ? Sys.pollIn : Sys.pollOut }

    static let receive = WaitKind(direction: .receive, sleepsInKernel: true, needsNonblocking: false, pacedAfterFalseReadiness: false)
    static let accept = WaitKind(direction: .receive, sleepsInKernel: true, needsNonblocking: true, pacedAfterFalseReadiness: false)
}

extension Socket {
    var isUnixDatagram: Bool { family == .unix && type == .datagram }

    var connectKind: WaitKind {
        WaitKind(direction: .send, sleepsInKernel: false, needsNonblocking: true, pacedAfterFalseReadiness: family == .unix)
    }

    /// `sendAll`, `send(_:to:)`: may sleep in the kernel on TCP and UDP. Not on a Unix
    /// socket: a datagram send would sleep on the receiver's queue, and a stream send starts
    /// SO_SNDTIMEO afresh for every buffer it allocates (`sock_alloc_send_pskb`), so a reader
    /// that frees some room now and then keeps it asleep past any timer (TCP counts its timer
    /// down across the whole send).
    var sendKind: WaitKind {
        WaitKind(direction: .send, sleepsInKernel: family != .unix, needsNonblocking: false, pacedAfterFalseReadiness: isUnixDatagram)
    }

    /// `send(_:)`: never sleeps in the kernel, where a blocking send would wait to send
    /// everything; it returns as soon as something is sent.
    var sendSomeKind: WaitKind {
        WaitKind(direction: .send, sleepsInKernel: false, needsNonblocking: false, pacedAfterFalseReadiness: isUnixDatagram)
    }
}

/// Where a call's next attempt waits.
enum Path {
    /// The next attempt may sleep in the kernel; the call is counted as a sleeper.
    case kernel
    /// The last attempt slept in the kernel and came back; still counted as a sleeper
    /// until the call plans again or ends.
    case kernelDone
    /// The call could sleep in the kernel once the descriptor is changed (a timer,
    /// O_NONBLOCK cleared): it tries once without waiting first.
    case tryFirst
    /// Attempts never wait; the call waits in `ppoll` (or paces).
    case poll
}

/// One call in progress. Made by `Socket.beginCall`, ended by `Socket.endCall`.
struct Call {
    let budget: WaitBudget
    let kind: WaitKind
    var path: Path
    /// Counted in `DescriptorMode.nonblockingHolders`.
    var holdsNonblocking = false
    /// The socket's waker, once an adopted socket's call has had to wait in poll or any
    /// call paces (-2: not looked up yet, or not needed; -1: none could be made).
    var waker: CInt = -2
    /// What the last wait saw on the descriptor (`revents`; 0: nothing, or no wait yet).
    var readiness: Int16 = 0
    /// The next paced wait in nanoseconds (0: not pacing).
    var pace: Int64 = 0
    /// The socket's deadline for the call's direction as of the last plan (`Int64.max`: none).
    var socketEnd = Int64.max
    /// Counted in `SocketDeadlines.watchers`: its waits watch the waker for a new deadline.
    var watchesDeadlines = false
    /// `SocketDeadlines.generation` when it started watching.
    var watchGeneration: UInt64 = 0
}

extension Socket {
    /// Starts a call that may wait: counts it, fixes its budget (throwing `.timedOut` for a
    /// deadline already past, before any system call) and plans its first attempt.
    @inline(__always)
    func beginCall(
        _ operation: SocketError.Operation, address: SocketAddress?, deadlineLeft: Int64?, _ kind: WaitKind
    ) throws(SocketError) -> Call {
        do throws(SocketError) {
            return try state.withLock { s throws(SocketError) -> Call in
                if s.closing { throw SocketError(.closed, operation) }
                var budget = try WaitBudget(s.timeout, deadlineLeft: deadlineLeft, operation)
                if Reactor.isReactorThread { budget = budget.forReactorThread }
                var call = Call(budget: budget, kind: kind, path: .poll)
                call.socketEnd = try socketDeadline(s.deadlines, budget)
                do throws(Errno) {
                    call.path = try plan(&s, kind, budget, allotted: budget.allotted, left: budget.allotted,
                                         kind.needsNonblocking ? .now : .afterTrying)
                    if call.path == .poll && kind.needsNonblocking {
                        try holdNonblocking(&s.mode)
                        call.holdsNonblocking = true
                    }
                } catch {
                    throw SocketError(operation, errno: error)
                }
                if operation == .connect { s.peer = address }
                s.users += 1
                return call
            }
        } catch {
            // A connected socket's peer, as every later error names it (no system call:
            // the descriptor may already be released).
            throw error.at(address ?? state.withLock { $0.peer })
        }
    }

    /// Ends a call begun by `beginCall`; the last user of a closed socket closes the descriptor.
    @inline(__always)
    func endCall(_ call: Call) {
        var call = call
        let last = state.withLock { s -> Held? in
            if call.path == .kernel || call.path == .kernelDone { s.mode.addSleeper(call.kind.direction, -1) }
            if call.holdsNonblocking { s.mode.nonblockingHolders -= 1 }
            if call.watchesDeadlines { stopWatchingDeadlines(&s, &call) }
            return s.leave()
        }
        if let last { releaseDescriptors(last) }
    }

    /// Runs one call between `beginCall` and `endCall`.
    @inline(__always)
    func withCall<R>(
        _ operation: SocketError.Operation, address: SocketAddress?, deadlineLeft: Int64?, _ kind: WaitKind,
        _ body: (inout Call) throws(SocketError) -> R
    ) throws(SocketError) -> R {
        var call = try beginCall(operation, address: address, deadlineLeft: deadlineLeft, kind)
        defer { endCall(call) }
        do throws(SocketError) {
            return try body(&call)
        } catch {
            throw error.at(address)  // errors from the budget and the wait loop carry none
        }
    }

    /// Runs `attempt` until it completes, waiting between tries within the call's budget.
    /// `attempt(mayWait, readiness)` returns nil when the operation could not complete yet;
    /// it may sleep in the kernel only when `mayWait` is true (the call is on the kernel
    /// path); `readiness` is what the last wait saw on the descriptor (0: no wait yet).
    @inline(__always)
    func perform<R>(
        _ call: inout Call, _ attempt: (_ mayWait: Bool, _ readiness: Int16) throws(Errno) -> R?
    ) throws(SocketError) -> R {
        while true {
            if call.path == .kernelDone { try planNextAttempt(&call, afterIncomplete: false) }
            let mayWait = call.path == .kernel
            let result: R?
            do throws(Errno) {
                result = try attempt(mayWait, call.readiness)
            } catch {
                let failure = errorOrClosed(call.budget.operation, error, address: nil)
                // A would-block (a non-blocking connect's EINPROGRESS) says why on a reactor's thread.
                throw failure.kind == .wouldBlock ? call.budget.wouldBlock(error) : failure
            }
            if mayWait { call.path = .kernelDone }
            if let result { return result }
            try planNextAttempt(&call, afterIncomplete: true)
            if call.path == .kernel { continue }  // EINTR with time to spare, or the timer just set
            try waitForNextAttempt(&call)
        }
    }

    /// Plans the next attempt of a call under way, under the lock: uncounts it as a
    /// sleeper, makes the change a `tryFirst` call put off (now that it must wait), and puts
    /// it back on the kernel path only if the descriptor's timer still fits the time left.
    /// After an incomplete attempt, throws `.closed` if ``close()`` has begun and fetches
    /// the waker for the wait to come.
    @inline(never)
    func planNextAttempt(_ call: inout Call, afterIncomplete: Bool) throws(SocketError) {
        let failed = state.withLock { s -> SocketError? in
            if call.path == .kernelDone { s.mode.addSleeper(call.kind.direction, -1) }
            if call.watchesDeadlines { stopWatchingDeadlines(&s, &call) }
            let adjust: Adjust = call.path == .tryFirst ? .now : .never
            call.path = .poll
            if afterIncomplete && s.closing { return SocketError(.closed, call.budget.operation) }
            let left: Int64
            switch call.budget.limit {
            case .none: return nil  // the wait throws .wouldBlock
            case .forever: left = -1
            case .until(let end): left = end - Sys.now()
            }
            do throws(Errno) {
                call.path = try plan(&s, call.kind, call.budget, allotted: call.budget.allotted, left: left, adjust)
                if call.path == .poll && call.kind.needsNonblocking && !call.holdsNonblocking {
                    try holdNonblocking(&s.mode)
                    call.holdsNonblocking = true
                }
            } catch {
                return SocketError(call.budget.operation, errno: error)
            }
            if afterIncomplete && call.path == .poll {
                // A call whose direction has a socket deadline watches the waker for a new one.
                let direction = call.budget.socketDeadlineDirection
                let watch = direction.map { s.deadlines.used($0) } ?? false
                if (needsWaker || watch) && call.waker == -2 { call.waker = waker(&s) }
                if watch, let direction {
                    call.socketEnd = s.deadlines.end(direction)
                    // Without a waker (no descriptor to spare) the wait looks again every
                    // KernelTimer.reach instead (waitForNextAttempt).
                    if call.waker >= 0 { startWatchingDeadlines(&s, &call, direction) }
                }
            }
            return nil
        }
        if let failed { throw failed }
    }

    /// Waits for the next attempt of a call on the poll path: `ppoll` on the descriptor and
    /// the waker, or a paced pause once poll has been caught reporting a false readiness.
    ///
    /// - Throws: `.timedOut`, `.wouldBlock` (non-blocking), `.closed`.
    @inline(never)
    func waitForNextAttempt(_ call: inout Call) throws(SocketError) {
        if call.kind.pacedAfterFalseReadiness && call.readiness != 0 && call.pace == 0 {
            // Nothing to poll for from now on: only the waker can end the pauses early.
            call.pace = 1_000_000
            if call.waker == -2 {
                let failed = state.withLock { s -> SocketError? in
                    if s.closing { return SocketError(.closed, call.budget.operation) }
                    call.waker = waker(&s)
                    return nil
                }
                if let failed { throw failed }
            }
        }
        let wakerFD = max(call.waker, -1)
        if call.pace > 0 {
            try call.budget.pause(call.pace, waker: wakerFD, socketEnd: call.socketEnd)
            call.pace = min(call.pace * 2, 32_000_000)
        } else {
            // Without the waker, look again now and then: for close() if nothing else can wake
            // the wait, and for a first socket deadline set while it waits.
            var slice: Int64?
            if needsWaker && wakerFD < 0 {
                slice = WaitBudget.noWakerSlice
            } else if !call.watchesDeadlines && call.budget.socketDeadlineDirection != nil {
                slice = KernelTimer.reach
            }
            do throws(SocketError) {
                call.readiness = try call.budget.wait(fd, for: call.kind.events, waker: wakerFD, slice: slice,
                                                     socketEnd: call.socketEnd)
            } catch {
                // The socket's deadline as last read ran out: a call that no waker tells of a
                // change reads it again before it gives up (it may have been moved or removed).
                guard error.kind == .timedOut, call.socketEnd < call.budget.end, !call.watchesDeadlines,
                      let direction = call.budget.socketDeadlineDirection else { throw error }
                let fresh = state.withLock { $0.deadlines.end(direction) }
                if fresh == call.socketEnd { throw error }
                call.socketEnd = fresh
                call.readiness = 0
            }
        }
        if isClosed { throw SocketError(.closed, call.budget.operation) }
    }
}
