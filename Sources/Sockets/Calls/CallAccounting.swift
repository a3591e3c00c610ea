import SystemPackage

// Who may touch the descriptor, and how close() ends every call waiting on it.
//
// Every call that uses the descriptor is counted in `State.users` under the socket's lock
// while it does; `close()` only marks the socket closing and wakes the calls in flight, and
// the last of them to leave closes the descriptor — so no call ever passes a descriptor
// number that has been closed and perhaps reused.
//
// Waking: on a descriptor that is the library's alone, `close()` with calls in flight
// issues `shutdown(2)`, which ends every wait on the socket at once — a call asleep in the
// kernel (the kernel path is taken only by calls that `shutdown` wakes; see
// KernelTimerPolicy.swift) and a call in `ppoll`, which then sees POLLHUP. A call between
// its check for `closing` (under the lock) and its system call finds the socket already
// shut down and returns at once. An adopted descriptor may be shared with other processes,
// for which `shutdown` would end the socket too: there, every wait is a `ppoll` that also
// watches the socket's waker, an eventfd (a pipe on Darwin) that `close()` writes to. So is
// every wait on Darwin, whose `shutdown` does nothing to a socket that is not connected. So is
// the paced wait of a Unix connect or datagram send (WaitLoop.swift), which has nothing on
// the socket to poll for.

extension Socket {
    /// All that calls plan with and account in, under the socket's lock.
    struct State {
        var timeout: SocketTimeout
        /// The descriptor's blocking mode, kernel timers and the calls relying on them.
        var mode: DescriptorMode
        /// The peer this socket was connected to or accepted from, for error messages once
        /// the kernel has forgotten it (`getpeername` fails after a reset).
        var peer: SocketAddress?
        /// Calls using the descriptor, and `close()` while it wakes them.
        var users = 0
        /// ``Socket/close()`` has been called: no call may start.
        var closing = false
        /// The descriptor has been closed (exactly once).
        var released = false
        /// Written by `close()`; made by the first call that waits in poll on an adopted
        /// socket, or paces.
        var waker: Sys.Waker?
        /// The socket's place in a reactor, made by its first async call (Reactor/).
        var registration: Registration?
        /// Async calls begun so far: each one's number identifies its waiter to cancellation.
        var asyncCalls: UInt64 = 0
        /// The receive and send deadlines and the blocking calls watching them (Socket+Deadlines.swift).
        var deadlines = SocketDeadlines()
        /// The path this Unix socket was bound to by ``Socket/bind(to:)``.
        var boundPath: String?
        /// The socket file this Unix listener made (set by ``Socket/listen(backlog:)``),
        /// removed when the socket is released if ``Socket/removesSocketFileOnClose``.
        var socketFile: SocketFile?
        var removesSocketFile = true

        init(timeout: SocketTimeout, mode: DescriptorMode, peer: SocketAddress?) {
            (self.timeout, self.mode, self.peer) = (timeout, mode, peer)
        }

        /// Uncounts a user; returns what to release (and marks the socket released) when it
        /// was the last of a closing socket, whose descriptors the caller must then close.
        mutating func leave() -> Held? {
            users -= 1
            guard closing && users == 0 && !released else { return nil }
            released = true
            return held
        }

        var held: Held { Held(waker: waker, registration: registration, socketFile: removesSocketFile ? socketFile : nil) }
    }

    /// What releasing a socket closes or forgets besides its descriptor.
    struct Held {
        let waker: Sys.Waker?
        let registration: Registration?
        /// A Unix listener's socket file, to remove (if it is still the same file).
        let socketFile: SocketFile?
    }

    /// The socket file a Unix listener made: its path and identity.
    struct SocketFile {
        let path: String
        let identity: (device: UInt64, inode: UInt64)
    }

    /// Marks the socket closing and wakes every call in flight (see the comment at the top).
    func closeAndWake() {
        enum Action { case nothing, release(Held), wake(Held, shutdown: Bool) }
        let action = state.withLock { s -> Action in
            if s.closing { return .nothing }
            s.closing = true
            if s.users == 0 {
                s.released = true
                return .release(s.held)
            }
            // close() counts itself as a user while it wakes the others, so the last of
            // them cannot close the descriptor (and free its number) under the shutdown.
            s.users += 1
            return .wake(s.held, shutdown: !needsWaker)
        }
        switch action {
        case .nothing:
            return
        case .release(let held):
            releaseDescriptors(held)
        case .wake(let held, let shutdown):
            if shutdown { try? Sys.shutdown(fd, how: Sys.shutBoth) }
            if let waker = held.waker { Sys.wake(waker) }
            // Async calls parked on the reactor, and every later one, end with .closed.
            if let registration = held.registration { registration.reactor.close(registration) }
            endUse()
        }
    }

    /// Counts a use of the descriptor that does not wait (see ``withDescriptor(_:address:_:)``).
    /// `deadline`: the use is a send or receive, which a passed socket deadline for that
    /// direction refuses (Socket+Deadlines.swift).
    ///
    /// - Throws: `.closed` once `close()` has been called; `.timedOut` for such a deadline.
    func beginUse(_ operation: SocketError.Operation, address: SocketAddress?, deadline: WaitDirection? = nil) throws(SocketError) {
        try state.withLock { s throws(SocketError) in
            if s.closing { throw SocketError(.closed, operation, address: address) }
            if let deadline, let passed = s.deadlines.passed(deadline, operation) { throw passed.at(address) }
            s.users += 1
        }
    }

    /// Uncounts a use; the last user of a closed socket closes the descriptor.
    func endUse() {
        if let last = state.withLock({ $0.leave() }) { releaseDescriptors(last) }
    }

    /// Closes the socket's descriptor and its waker and forgets its registration: called
    /// exactly once, by whoever saw the last user leave a closing socket (or by `deinit`).
    func releaseDescriptors(_ held: Held) {
        if let registration = held.registration { registration.reactor.deregister(registration, shared: shared) }
        if let waker = held.waker { Sys.close(waker) }
        // Only if the path still names the file this listener made: another's is left alone.
        if let file = held.socketFile { Sys.removeSocketFile(file.path, ifStill: file.identity) }
        // A lingering close(2) blocks until the unsent data is out or the time is up: never
        // on a reactor's thread, where it would stall every socket the reactor serves. The
        // option is read, not remembered: Linux copies it from a listener to the sockets it
        // accepts, and it may have been set through withUnsafeDescriptor.
        let fd = self.fd
        if Reactor.isReactorThread, let (on, seconds) = try? Sys.lingerOption(fd), on && seconds > 0,
           Sys.spawnDetached({ Sys.close(fd) }) {
            return
        }
        Sys.close(fd)
    }

    /// Runs one call that does not wait (bind, options, addresses) on the descriptor.
    ///
    /// - Throws: `.closed` once `close()` has been called; whatever `body` throws.
    @inline(__always)
    func withDescriptor<R>(
        _ operation: SocketError.Operation, address: SocketAddress?,
        _ body: (CInt) throws(SocketError) -> R
    ) throws(SocketError) -> R {
        try beginUse(operation, address: address)
        defer { endUse() }
        return try body(fd)
    }

    /// Whether waits in poll must watch the waker: on an adopted descriptor (no
    /// `shutdown(2)`), and on Darwin, whose `shutdown(2)` does nothing to a socket that is
    /// not connected (a listener, an unconnected datagram socket), so wakes no poll on it.
    var needsWaker: Bool { shared || !Sys.kernelTimers }

    /// The socket's waker, for a call about to wait on it: made on first need.
    /// -1 when none could be made (no descriptor to spare): such waits poll in short slices.
    /// Called under the lock, after the check for `closing` (a waker made after `close()`
    /// would never be written).
    func waker(_ s: inout State) -> CInt {
        if let waker = s.waker { return waker.readFD }
        guard let waker = try? Sys.makeWaker() else { return -1 }
        s.waker = waker
        return waker.readFD
    }

    /// The error for a failed system call, or `.closed` if the socket was closed meanwhile
    /// (a call woken by `close()` sees an error from the shutdown, not the truth).
    func errorOrClosed(_ operation: SocketError.Operation, _ errno: Errno, address: SocketAddress?) -> SocketError {
        if isClosed { return SocketError(.closed, operation, address: address) }
        return SocketError(operation, errno: errno, address: address)
    }
}
