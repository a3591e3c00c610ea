import SystemPackage

// The loop every async call runs through — the twin of WaitLoop.swift, with the same budget
// (one instant per call; a deadline already past fails before any system call; a
// non-blocking socket fails with .wouldBlock instead of waiting) and the same accounting
// (the call is a user of the descriptor, so close() cannot release it under the call).
//
// begin: check cancellation, count the call, fix its budget, register the socket with a
// reactor on its first async call. attempt: the system call, never waiting (MSG_DONTWAIT,
// O_NONBLOCK) — made only when the socket's readiness bit for the direction is set (or
// unknown), so that after a short read the next receive waits for the edge instead of
// paying an EAGAIN read (Registration.swift). wait: park on the reactor until readiness,
// the call's instant, cancellation or close(); the clock, not the wake-up, decides a
// timeout. end: uncount.
//
// A socket an async call has registered keeps O_NONBLOCK for good (the reactor holds it in
// `DescriptorMode.nonblockingHolders`): blocking calls on it still work, with the same
// rules, by polling.

/// One async call in progress.
struct AsyncCall {
    let budget: WaitBudget
    let registration: Registration
    /// The call's number among the socket's async calls: its waiter's identity.
    let id: UInt64
    /// The next paced wait in nanoseconds (0: not pacing).
    var pace: Int64 = 0
}

extension Socket {
    /// Starts an async call: `.cancelled` if the task is cancelled, `.closed`, `.timedOut`
    /// for a deadline already past — each before any system call — then counts the call and
    /// registers the socket with a reactor if this is its first async call.
    @inline(__always)
    func beginAsyncCall(
        _ operation: SocketError.Operation, address: SocketAddress?, deadlineLeft: Int64?
    ) throws(SocketError) -> AsyncCall {
        if Task.isCancelled { throw SocketError(.cancelled, operation, address: address) }
        do throws(SocketError) {
            return try state.withLock { s throws(SocketError) -> AsyncCall in
                if s.closing { throw SocketError(.closed, operation) }
                let budget = try WaitBudget(s.timeout, deadlineLeft: deadlineLeft, operation)
                _ = try socketDeadline(s.deadlines, budget)  // one already past fails here; the reactor keeps it
                let registration: Registration
                if let existing = s.registration { registration = existing } else { registration = try register(&s, operation) }
                if operation == .connect { s.peer = address }
                s.users += 1
                s.asyncCalls &+= 1
                return AsyncCall(budget: budget, registration: registration, id: s.asyncCalls)
            }
        } catch {
            // A connected socket's peer, as every later error names it (no system call:
            // the descriptor may already be released).
            throw error.at(address ?? state.withLock { $0.peer })
        }
    }

    /// Registers the socket with the reactor of this thread, or the next one (under the lock).
    private func register(_ s: inout State, _ operation: SocketError.Operation) throws(SocketError) -> Registration {
        let reactor: Reactor
        if let current = Reactor.current { reactor = current } else { reactor = try Reactor.next() }
        do throws(Errno) {
            if !s.mode.nonblocking || shared {
                try Sys.setNonblocking(fd, true)
                s.mode.nonblocking = true
            }
            let registration = try reactor.register(fd)
            s.mode.nonblockingHolders += 1  // the reactor's hold, for the socket's life
            s.registration = registration
            var none: [Resumption] = []  // nobody waits on a new registration
            if s.deadlines.receiveUsed { reactor.setSocketDeadline(registration, .receive, s.deadlines.receive, waking: &none) }
            if s.deadlines.sendUsed { reactor.setSocketDeadline(registration, .send, s.deadlines.send, waking: &none) }
            return registration
        } catch {
            throw SocketError(operation, errno: error, detail: "could not register the socket with a reactor")
        }
    }

    /// Ends an async call; the last user of a closed socket releases it.
    @inline(__always)
    func endAsyncCall(_ call: AsyncCall) {
        endUse()
    }

    /// Runs `attempt` until it completes, waiting on the reactor between tries within the
    /// call's budget. `attempt(observed)` makes the system call without waiting and returns
    /// nil for would-block; `observed` is the readiness word read before it (an attempt that
    /// learns the socket is drained — a short read — clears its bit with it).
    ///
    /// - Parameters:
    ///   - connecting: a connect, whose first attempt starts the operation whatever the
    ///     readiness says, and for which only writability counts (not the hang-up Linux
    ///     reports for a socket not yet connected).
    ///   - paced: a Unix connect or datagram send, for which readiness says nothing about the
    ///     peer's queue: its waits are timed retries (1 ms doubling to 32 ms), ended early by
    ///     any event on the socket.
    @inline(__always)
    nonisolated(nonsending) func performAsync<R>(
        _ call: inout AsyncCall, _ direction: WaitDirection, connecting: Bool = false, paced: Bool = false,
        _ attempt: (_ observed: UInt64) throws(Errno) -> R?
    ) async throws(SocketError) -> R {
        let mask = connecting ? Registration.writable : Registration.readyMask(direction)
        // A call that may not wait (a non-blocking socket) tries whatever the bits say: the
        // reactor may not have recorded yet the event that made the socket ready.
        var force = connecting || call.budget.limit == .none
        while true {
            let observed = call.registration.observe()
            if force || observed & mask != 0 {
                let result: R?
                do throws(Errno) {
                    result = try attempt(observed)
                } catch {
                    throw errorOrClosed(call.budget.operation, error, address: nil)
                }
                if let result { return result }
                call.registration.clearAfterWouldBlock(direction, ifUnchangedSince: observed)
                if paced && call.pace == 0 { call.pace = 1_000_000 }
            }
            force = try await waitAsync(&call, direction, observed: observed, readyMask: mask) == .timer
        }
    }

    /// Parks the call on its reactor until `direction` may be ready (an event since
    /// `observed` was read, or a bit of `readyMask` set), its pace, its budget's instant or
    /// the socket's deadline comes (or that deadline changes), its task is cancelled or the
    /// socket closed. Returns `.ready` or `.timer` (a paced retry) for the caller to
    /// try again.
    ///
    /// - Throws: `.timedOut` when the instant has passed (by the clock, read after every
    ///   wake-up), `.wouldBlock` for a non-blocking socket, `.cancelled`, `.closed`.
    nonisolated(nonsending) func waitAsync(
        _ call: inout AsyncCall, _ direction: WaitDirection, observed: UInt64, readyMask: UInt64
    ) async throws(SocketError) -> Wake {
        var deadline = Int64.max
        switch call.budget.limit {
        case .none:
            throw call.budget.wouldBlock()
        case .forever:
            break
        case .until(let end):
            if Sys.now() >= end { throw call.budget.timedOut }
            deadline = end
        }
        let pacing = call.pace > 0
        if pacing {
            deadline = min(deadline, saturatingSum(Sys.now(), call.pace))
            call.pace = min(call.pace * 2, 32_000_000)
        }
        let registration = call.registration
        let id = call.id
        let governed = call.budget.socketDeadlineDirection != nil
        let wake = await withTaskCancellationHandler {
            await suspendForWake { continuation in
                let waiter = Waiter(id: id, continuation: continuation, deadline: deadline, governed: governed)
                registration.reactor.park(registration, direction, waiter,
                                          observed: observed, readyMask: pacing ? 0 : readyMask)
            }
        } onCancel: {
            registration.reactor.cancel(registration, direction, id: id)
        }
        switch wake {
        case .ready:
            return .ready
        case .timer:
            // Its own instant, or the socket's deadline, which may have come or changed
            // (Socket+Deadlines.swift): the clock decides.
            let socketEnd = governed ? state.withLock { $0.deadlines.end(direction) } : Int64.max
            if Sys.now() >= min(call.budget.end, socketEnd) { throw call.budget.expired(socketEnd: socketEnd) }
            return .timer
        case .cancelled:
            throw SocketError(.cancelled, call.budget.operation)
        case .closed:
            throw SocketError(.closed, call.budget.operation)
        }
    }
}
