import SystemPackage

extension Socket {
    /// Binds the socket to a local address (`bind(2)`). Port 0 asks the OS for a free
    /// port; read it back with ``localAddress``. Does not block.
    ///
    /// A Unix socket bound to a path creates a socket file there; once the socket has
    /// listened, closing it removes that file (see ``removesSocketFileOnClose``). A file left
    /// by a listener that died fails the bind with `.addressInUse`: see
    /// ``bind(to:removingStaleSocketFile:)``.
    ///
    /// - Throws: ``SocketError`` — `.addressInUse`, `.addressNotAvailable` (not a local
    ///   address), `.permissionDenied` (a privileged port), `.invalidArgument` (an address
    ///   of another family, or the socket is already bound), `.closed`.
    public func bind(to address: SocketAddress) throws(SocketError) {
        try checkFamily(address, .bind)
        try withDescriptor(.bind, address: address) { fd throws(SocketError) in
            do throws(Errno) {
                try Sys.bind(fd, address)
            } catch {
                throw errorOrClosed(.bind, error, address: address)
            }
        }
        if case .unix(let path) = address, !path.isEmpty {
            state.withLock { $0.boundPath = path }
        }
    }

    /// Binds a Unix socket to `address`, first removing a socket file there that nobody
    /// serves — what a listener that crashed, or was killed, leaves behind — when
    /// `removingStaleSocketFile` is true. A file that a live socket serves is never
    /// removed: the bind then fails with `.addressInUse`, as does one that is not a socket.
    ///
    /// Whether anybody serves the file is asked the only way the kernel answers: a
    /// connection attempt to it (non-blocking, the same socket type as this one). Refused
    /// means nobody; accepted, or a full listen queue, means a live listener. For IP
    /// addresses this is ``bind(to:)``.
    ///
    /// - Throws: ``SocketError`` — as ``bind(to:)``; `.addressInUse` with a detail saying
    ///   why the file was kept.
    public func bind(to address: SocketAddress, removingStaleSocketFile: Bool) throws(SocketError) {
        do throws(SocketError) {
            try bind(to: address)
        } catch {
            guard removingStaleSocketFile, error.kind == .addressInUse, case .unix(let path) = address, !path.isEmpty else {
                throw error
            }
            guard let identity = Sys.socketFileIdentity(path) else {
                throw error.with(detail: "the file there is not a socket, so it was not removed")
            }
            guard try !Socket.isServed(address, type: type) else {
                throw error.with(detail: "a live socket serves it, so it was not removed")
            }
            Sys.removeSocketFile(path, ifStill: identity)
            try bind(to: address)
        }
    }

    /// Whether a socket serves the Unix path `address`: a non-blocking connection attempt
    /// that is not refused.
    private static func isServed(_ address: SocketAddress, type: SocketType) throws(SocketError) -> Bool {
        let probe = try Socket(.unix, type)
        defer { probe.close() }
        probe.timeout = .nonBlocking
        do throws(SocketError) {
            try probe.connect(to: address)
            return true
        } catch {
            // Refused: nobody; gone meanwhile: nobody either (the bind will tell).
            if error.kind == .connectionRefused || error.errno == .noSuchFileOrDirectory { return false }
            return true  // a full queue (would block), or anything else: treat as alive
        }
    }

    /// Whether closing this socket removes the socket file it made by binding to a Unix
    /// path and listening (true unless set otherwise, as Go's Unix listeners do). Only if
    /// the path still names that file: one made there since, by anyone, is left alone.
    /// Sockets accepted from the listener, and sockets that never listened, remove nothing.
    public var removesSocketFileOnClose: Bool {
        get { state.withLock { $0.removesSocketFile } }
        set { state.withLock { $0.removesSocketFile = newValue } }
    }

    /// Starts accepting connections (`listen(2)`). Does not block.
    ///
    /// - Parameter backlog: how many connections the kernel may hold complete but not yet
    ///   accepted; the kernel caps it (`net.core.somaxconn` on Linux). Linux holds one
    ///   more than asked: with a backlog of 0, one connection completes and the next waits.
    /// - Throws: ``SocketError`` — `.invalidArgument` for a negative backlog, a datagram
    ///   socket, or a Unix socket that was never bound (Linux gives IP sockets a free port
    ///   when they listen unbound; Unix sockets have no such default).
    public func listen(backlog: Int = 128) throws(SocketError) {
        guard backlog >= 0, backlog <= Int(CInt.max) else {
            throw SocketError(.invalidArgument, .listen, detail: "backlog must be from 0 to \(CInt.max), got \(backlog)")
        }
        try withDescriptor(.listen, address: nil) { fd throws(SocketError) in
            do throws(Errno) {
                try Sys.listen(fd, backlog: CInt(backlog))
                // The socket file bind made is this listener's to remove when it closes.
                state.withLock { s in
                    if let path = s.boundPath, s.socketFile == nil, let identity = Sys.socketFileIdentity(path) {
                        s.socketFile = SocketFile(path: path, identity: identity)
                    }
                }
            } catch {
                var detail: String?
                if error == .invalidArgument && family == .unix {
                    detail = "a Unix socket must be bound before it listens"
                } else if error == .notSupportedOnSocket || type == .datagram {
                    detail = "a datagram socket cannot listen"
                }
                throw SocketError(.listen, errno: error, address: try? Sys.localAddress(fd), detail: detail)
            }
        }
    }

    /// A new stream socket listening on `address`, in one call: `Socket(address.family)`,
    /// `SO_REUSEADDR` for an IP address (so a restarted server can bind at once, the
    /// convention of Go's and Python's servers), ``bind(to:)`` and ``listen(backlog:)``.
    /// Port 0 takes a free port: read it from ``localAddress``. Does not block.
    ///
    /// - Throws: ``SocketError`` — `.addressInUse`, `.addressNotAvailable`,
    ///   `.permissionDenied`, `.invalidArgument`; the socket is closed.
    public static func listen(on address: SocketAddress, backlog: Int = 128) throws(SocketError) -> Socket {
        let socket = try Socket(address.family)
        do throws(SocketError) {
            if address.family != .unix { try socket.setOption(.reuseAddress, true) }
            try socket.bind(to: address)
            try socket.listen(backlog: backlog)
            return socket
        } catch {
            socket.close()
            throw error
        }
    }

    /// A new stream socket listening on `address` — `"127.0.0.1:0"`, `"[::1]:8080"`, a Unix
    /// path — parsed without any lookup (see ``SocketAddress/init(_:)``); see
    /// ``listen(on:backlog:)-(SocketAddress,_)``.
    ///
    /// - Throws: ``SocketError`` — `.invalidArgument` for an address that does not parse,
    ///   and the errors of ``listen(on:backlog:)-(SocketAddress,_)``.
    public static func listen(on address: String, backlog: Int = 128) throws(SocketError) -> Socket {
        try listen(on: SocketAddress(address), backlog: backlog)
    }

    /// Accepts a connection (`accept4(2)` with `SOCK_CLOEXEC`).
    ///
    /// Blocks until a connection arrives, for at most the socket's ``timeout``, and not
    /// past `deadline` if one is given. A connection that died in the queue
    /// (`ECONNABORTED`, and on Linux the network errors `accept(2)` lists) is skipped and
    /// the wait goes on within the same time.
    ///
    /// The new socket takes the process-wide ``defaultTimeout`` — not this listener's
    /// timeout (as in CPython; on BSD-derived systems the kernel would otherwise let the
    /// new descriptor inherit the listener's non-blocking flag).
    ///
    /// Underneath: `accept4(2)` sleeping in the kernel under `SO_RCVTIMEO` (see ``Socket``),
    /// or with `O_NONBLOCK` after `ppoll`.
    ///
    /// - Returns: the connected socket and the peer's address.
    /// - Throws: ``SocketError`` — `.timedOut`, `.wouldBlock` (non-blocking listener),
    ///   `.tooManyOpenFiles` (the connection stays queued: back off before retrying),
    ///   `.closed`, `.invalidArgument` if the socket is not listening or is a datagram socket.
    public func accept(deadline: ContinuousClock.Instant?) throws(SocketError) -> (Socket, SocketAddress) {
        try accept(deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
    }

    /// Accepts a connection with no deadline: the same as ``accept(deadline:)-7i7wg`` with
    /// `deadline: nil`, waiting at most the socket's ``timeout``.
    public func accept() throws(SocketError) -> (Socket, SocketAddress) {
        try accept(deadlineLeft: nil)
    }

    /// The body of both forms: the deadline in nanoseconds left (nil: none).
    func accept(deadlineLeft: Int64?) throws(SocketError) -> (Socket, SocketAddress) {
        guard type == .stream else {
            // accept(2) says EOPNOTSUPP, which on a stream socket means a connection that
            // died in the queue: say what is wrong before the kernel is asked.
            throw SocketError(.invalidArgument, .accept, address: try? localAddress,
                              detail: "a datagram socket cannot accept connections")
        }
        return try withCall(.accept, address: nil, deadlineLeft: deadlineLeft, .accept) { call throws(SocketError) in
            do throws(SocketError) {
                let (newFD, peer) = try perform(&call) { mayWait, _ throws(Errno) -> (CInt, SocketAddress)? in
                    do throws(Errno) {
                        return try Attempt.run(mayWait: mayWait) { Sys.accept(fd, mayWait: mayWait) }
                    } catch where Socket.diedInQueue(error) {
                        // That connection is gone; the next attempt (without sleeping in the
                        // kernel on a fresh timer) takes the next, within the same time.
                        return nil
                    }
                }
                let inherits = state.withLock { $0.mode.timersSet }
                let mode = DescriptorMode.accepted(inherits: inherits)
                return (Socket(fd: newFD, family: family, type: type, timeout: Socket.defaultTimeout, mode: mode, peer: peer), peer)
            } catch {
                // Errors name the listening address; successes never pay for getsockname.
                throw error.at(try? Sys.localAddress(fd))
            }
        }
    }

    /// Connects to `address`: a non-blocking `connect(2)`, then (while the handshake is
    /// going) `ppoll` for writability and `SO_ERROR`, all within the call's time limit.
    ///
    /// Blocks until the handshake finishes, for at most the socket's ``timeout`` and not
    /// past `deadline`. A port where nothing listens is refused at once on Linux, whatever
    /// the timeout; a peer that never answers (a full accept queue, dropped SYNs) is what
    /// times out. A Unix-domain listener whose queue is full is tried again, 1 ms after
    /// the first refusal and then at doubling intervals up to 32 ms. After a timeout the
    /// socket is half-way through a handshake and is good only for closing; so it is after
    /// ``close()`` from another thread, which ends the call with `.closed`.
    ///
    /// On a non-blocking socket this starts the connection and throws `.wouldBlock`
    /// (errno `EINPROGRESS`); wait for writability yourself and read
    /// ``pendingError()`` for the outcome.
    ///
    /// - Throws: ``SocketError`` — `.timedOut`, `.connectionRefused`, `.unreachable`,
    ///   `.wouldBlock`, `.closed`, `.invalidArgument` (an address of another family).
    public func connect(to address: SocketAddress, deadline: ContinuousClock.Instant?) throws(SocketError) {
        try connect(to: address, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
    }

    /// Connects to `address` with no deadline: the same as ``connect(to:deadline:)-94vdi`` with
    /// `deadline: nil`, waiting at most the socket's ``timeout``.
    public func connect(to address: SocketAddress) throws(SocketError) {
        try connect(to: address, deadlineLeft: nil)
    }

    /// The body of both forms: the deadline in nanoseconds left (nil: none).
    func connect(to address: SocketAddress, deadlineLeft: Int64?) throws(SocketError) {
        try checkFamily(address, .connect)
        try withCall(.connect, address: address, deadlineLeft: deadlineLeft, connectKind) { call throws(SocketError) in
            let nonBlocking = call.budget.limit == .none
            var inProgress = false
            try perform(&call) { _, readiness throws(Errno) -> Void? in
                if inProgress {
                    // The wait saw the handshake end. Writable and nothing else is success
                    // (an error would show as POLLERR); otherwise SO_ERROR says what happened.
                    if readiness == Sys.pollOut { return () }
                    if readiness == 0 { return nil }
                    if let outcome = try Sys.pendingError(fd), outcome != .socketIsConnected { throw outcome }
                    return ()
                }
                switch Sys.connect(fd, address) {
                case .success:
                    return ()
                case .failure(let e):
                    inProgress = try connectUnderWay(after: e)
                    if nonBlocking && inProgress { throw Errno.nowInProgress }
                    return nil
                }
            }
            // Connected, but close() came first: the socket is of no use, and the call says so.
            if isClosed { throw SocketError(.closed, .connect) }
        }
    }

    /// What a failed `connect(2)` means, for the blocking and the async connect: true if the
    /// connection is under way (wait for writability), false if connect must be called again
    /// (a Unix listener's full queue, paced; or EINTR on a Unix socket, where nothing is in
    /// progress); any other errno is the outcome, thrown.
    func connectUnderWay(after e: Errno) throws(Errno) -> Bool {
        switch e {
        case .nowInProgress, .alreadyInProcess:
            return true
        case .interrupted where family != .unix:
            return true  // the kernel goes on with it: never call connect again blindly
        case .interrupted:
            return false
        case .resourceTemporarilyUnavailable where family == .unix:
            return false
        default:
            throw e
        }
    }

    /// Which half of a connection ``shutdown(_:)`` ends.
    public enum ShutdownDirection: Sendable {
        /// No more receiving; further receives return end of stream.
        case read
        /// No more sending; the peer reads end of stream (a TCP FIN).
        case write
        /// Both.
        case both
    }

    /// Shuts down one or both directions of a connection (`shutdown(2)`). Does not block
    /// and does not close the socket.
    ///
    /// - Throws: ``SocketError`` — `.notConnected`, `.closed`.
    public func shutdown(_ direction: ShutdownDirection) throws(SocketError) {
        try withDescriptor(.shutdown, address: nil) { fd throws(SocketError) in
            do throws(Errno) {
                switch direction {
                case .read: try Sys.shutdown(fd, how: Sys.shutRead)
                case .write: try Sys.shutdown(fd, how: Sys.shutWrite)
                case .both: try Sys.shutdown(fd, how: Sys.shutBoth)
                }
            } catch {
                throw errorOrClosed(.shutdown, error, address: nil)
            }
        }
    }

    /// The address the socket is bound to (`getsockname(2)`): after binding to port 0,
    /// the port the OS chose.
    ///
    /// - Throws: ``SocketError`` — `.closed`.
    public var localAddress: SocketAddress {
        get throws(SocketError) {
            try withDescriptor(.address, address: nil) { fd throws(SocketError) in
                do throws(Errno) { return try Sys.localAddress(fd) } catch { throw errorOrClosed(.address, error, address: nil) }
            }
        }
    }

    /// The address of the connected peer (`getpeername(2)`).
    ///
    /// - Throws: ``SocketError`` — `.notConnected`, `.closed`.
    public var peerAddress: SocketAddress {
        get throws(SocketError) {
            try withDescriptor(.address, address: nil) { fd throws(SocketError) in
                do throws(Errno) { return try Sys.peerAddress(fd) } catch { throw errorOrClosed(.address, error, address: nil) }
            }
        }
    }

    /// Errors from accept on a stream socket that mean "that connection died in the queue;
    /// take the next": ECONNABORTED, and the pending network errors of the new connection
    /// that Linux reports through accept (accept(2), "Error handling").
    static func diedInQueue(_ e: Errno) -> Bool {
        switch e {
        case .connectionAbort, .protocolError, .protocolNotAvailable, .networkDown, .hostIsDown,
             .noRouteToHost, .networkUnreachable, .notSupportedOnSocket:
            return true
        default:
            return e == Sys.noNetwork
        }
    }

    func checkFamily(_ address: SocketAddress, _ operation: SocketError.Operation) throws(SocketError) {
        guard address.family == family else {
            throw SocketError(
                .invalidArgument, operation, address: address,
                detail: "this is an \(family) socket; the address is \(address.family)")
        }
    }
}
