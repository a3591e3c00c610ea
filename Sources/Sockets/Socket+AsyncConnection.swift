import SystemPackage

// The async forms of accept and connect: the same names, rules and errors as the blocking
// forms in Socket+Connection.swift and Socket+Dial.swift.

extension Socket {
    /// Accepts a connection (`accept4(2)` with `SOCK_CLOEXEC | SOCK_NONBLOCK`), suspending
    /// until one arrives — for at most the socket's ``timeout``, and not past `deadline`.
    ///
    /// The async form of ``accept(deadline:)-7i7wg``, with the same rules: connections that died
    /// in the queue are skipped; the new socket takes the process ``defaultTimeout``.
    /// Cancelling the task ends the wait with `.cancelled`; a connection already accepted is
    /// returned, never dropped.
    ///
    /// - Throws: ``SocketError`` — `.timedOut`, `.wouldBlock`, `.tooManyOpenFiles` (the
    ///   connection stays queued: back off before retrying), `.closed`, `.cancelled`,
    ///   `.invalidArgument` if the socket is not listening or is a datagram socket.
    public nonisolated(nonsending) func accept(deadline: ContinuousClock.Instant?) async throws(SocketError) -> (Socket, SocketAddress) {
        try await accept(deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
    }

    /// Accepts a connection with no deadline; see ``accept(deadline:)-4pnqf``.
    public nonisolated(nonsending) func accept() async throws(SocketError) -> (Socket, SocketAddress) {
        try await accept(deadlineLeft: nil)
    }

    nonisolated(nonsending) func accept(deadlineLeft: Int64?) async throws(SocketError) -> (Socket, SocketAddress) {
        guard type == .stream else {
            throw SocketError(.invalidArgument, .accept, address: try? localAddress,
                              detail: "a datagram socket cannot accept connections")
        }
        var call = try beginAsyncCall(.accept, address: nil, deadlineLeft: deadlineLeft)
        defer { endAsyncCall(call) }
        do throws(SocketError) {
            let (newFD, peer) = try await performAsync(&call, .receive) { _ throws(Errno) -> (CInt, SocketAddress)? in
                // O_NONBLOCK belongs to the open file, which the holders of an adopted socket share.
                if shared { try Sys.setNonblocking(fd, true) }
                // A connection that died in the queue is skipped at once: the others queued
                // behind it bring no new edge. After 1,024 in a row the call reports one
                // (its readiness kept: the next accept tries at once).
                for _ in 0..<1024 {
                    do throws(Errno) {
                        return try Attempt.run(mayWait: false) { Sys.accept(fd, mayWait: false, nonblocking: true) }
                    } catch where Socket.diedInQueue(error) {
                        continue
                    }
                }
                throw Errno.connectionAbort
            }
            let inherits = state.withLock { $0.mode.timersSet }
            let mode = DescriptorMode.accepted(inherits: inherits, nonblocking: true)
            return (Socket(fd: newFD, family: family, type: type, timeout: Socket.defaultTimeout, mode: mode, peer: peer), peer)
        } catch {
            throw error.at(try? Sys.localAddress(fd))
        }
    }

    /// Connects to `address`: a non-blocking `connect(2)`, then (while the handshake goes on)
    /// a suspension until the socket is writable, and `SO_ERROR`, within the call's limit.
    ///
    /// The async form of ``connect(to:deadline:)-94vdi``, with the same rules: refused at once on
    /// Linux whatever the timeout; a Unix listener with a full queue is tried again (1 ms
    /// doubling to 32 ms). After a timeout or a cancellation the socket is half-way through
    /// a handshake and good only for closing.
    ///
    /// - Throws: ``SocketError`` — `.timedOut`, `.connectionRefused`, `.unreachable`,
    ///   `.wouldBlock`, `.closed`, `.cancelled`, `.invalidArgument`.
    public nonisolated(nonsending) func connect(to address: SocketAddress, deadline: ContinuousClock.Instant?) async throws(SocketError) {
        try await connect(to: address, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
    }

    /// Connects to `address` with no deadline; see ``connect(to:deadline:)-3avau``.
    public nonisolated(nonsending) func connect(to address: SocketAddress) async throws(SocketError) {
        try await connect(to: address, deadlineLeft: nil)
    }

    nonisolated(nonsending) func connect(to address: SocketAddress, deadlineLeft: Int64?) async throws(SocketError) {
        try checkFamily(address, .connect)
        var call = try beginAsyncCall(.connect, address: address, deadlineLeft: deadlineLeft)
        defer { endAsyncCall(call) }
        let nonBlocking = call.budget.limit == .none
        var inProgress = false
        do throws(SocketError) {
            let registration = call.registration
            try await performAsync(&call, .send, connecting: true, paced: family == .unix) { _ throws(Errno) -> Void? in
                if inProgress {
                    // Writable: the handshake is over, or the readiness is stale. SO_ERROR
                    // says how it failed; a peer name says it succeeded (Go's netFD.connect).
                    if let outcome = try Sys.pendingError(fd), outcome != .socketIsConnected { throw outcome }
                    if (try? Sys.peerAddress(fd)) == nil { return nil }
                    registration.forgetFinalStates()
                    return ()
                }
                // O_NONBLOCK belongs to the open file, which the holders of an adopted socket share.
                if shared { try Sys.setNonblocking(fd, true) }
                switch Sys.connect(fd, address) {
                case .success:
                    registration.forgetFinalStates()
                    return ()
                case .failure(let e):
                    inProgress = try connectUnderWay(after: e)
                    if nonBlocking && inProgress { throw Errno.nowInProgress }
                    return nil
                }
            }
        } catch {
            throw error.at(address)
        }
        if isClosed { throw SocketError(.closed, .connect, address: address) }
    }

    /// Connects a new socket to `address`; the async form of
    /// ``connect(to:type:timeout:deadline:)-4pvdx``, with the same rules.
    ///
    /// - Throws: ``SocketError`` — as the blocking form, and `.cancelled`; the socket is closed.
    public nonisolated(nonsending) static func connect(
        to address: SocketAddress, type: SocketType = .stream, timeout: SocketTimeout = Socket.defaultTimeout,
        deadline: ContinuousClock.Instant? = nil
    ) async throws(SocketError) -> Socket {
        let start = ContinuousClock.now
        let overall = try dialDeadline("\(address)", timeout: timeout, deadline: deadline, start: start)
        let socket = try Socket(address.family, type)  // closes itself if connect throws
        socket.timeout = .never  // the overall deadline bounds the wait
        do throws(SocketError) {
            try await socket.connect(to: address, deadline: overall)
        } catch {
            throw asTheCallerSees(error, timeout: timeout, deadline: deadline, start: start)
        }
        socket.timeout = timeout
        return socket
    }

    /// Resolves `hostPort` and connects a new stream socket to it with Happy Eyeballs v2;
    /// the async form of ``connect(to:timeout:deadline:attemptDelay:)-7qins``, with
    /// the same rules: `timeout` bounds the whole call, resolution included, and becomes the
    /// socket's ``timeout``. The lookups run on the library's resolver threads and each
    /// attempt waits on the reactor, never on the task's thread; cancelling the task ends
    /// every attempt and closes its socket.
    ///
    /// - Throws: ``SocketError`` — as the blocking form, and `.cancelled`.
    public nonisolated(nonsending) static func connect(
        to hostPort: String, timeout: SocketTimeout = Socket.defaultTimeout,
        deadline: ContinuousClock.Instant? = nil, attemptDelay: Duration = .milliseconds(250)
    ) async throws(SocketError) -> Socket {
        if Task.isCancelled { throw SocketError(.cancelled, .connect, detail: "'\(hostPort)'") }
        switch try dialTarget(hostPort) {
        case .address(let address):
            return try await connect(to: address, timeout: timeout, deadline: deadline)
        case .name(let host, let port):
            return try await dialAsync(target: hostPort, lookup: (host, port), addresses: [], timeout: timeout,
                                       deadline: deadline, attemptDelay: attemptDelay)
        }
    }

    /// Connects a new stream socket to the first of `addresses` that accepts, with Happy
    /// Eyeballs v2; the async form of ``connect(to:timeout:deadline:attemptDelay:)-2c46``.
    ///
    /// - Throws: ``SocketError`` — as the blocking form, and `.cancelled`.
    public nonisolated(nonsending) static func connect(
        to addresses: [SocketAddress], timeout: SocketTimeout = Socket.defaultTimeout,
        deadline: ContinuousClock.Instant? = nil, attemptDelay: Duration = .milliseconds(250)
    ) async throws(SocketError) -> Socket {
        guard let first = addresses.first else {
            throw SocketError(.invalidArgument, .connect, detail: "no address to connect to")
        }
        if addresses.count == 1 { return try await connect(to: first, timeout: timeout, deadline: deadline) }
        return try await dialAsync(target: dialTarget(addresses), lookup: nil, addresses: addresses, timeout: timeout,
                                   deadline: deadline, attemptDelay: attemptDelay)
    }
}
