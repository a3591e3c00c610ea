import SystemPackage

/// Stream (TCP, or Unix stream) or datagram (UDP, or Unix datagram).
public enum SocketType: Hashable, Sendable, CustomStringConvertible {
    /// `SOCK_STREAM`: a reliable byte stream (TCP, or Unix stream).
    case stream
    /// `SOCK_DGRAM`: separate messages (UDP, or Unix datagram).
    case datagram

    var rawValue: CInt {
        switch self {
        case .stream: Sys.streamType
        case .datagram: Sys.datagramType
        }
    }

    public var description: String { self == .stream ? "stream" : "datagram" }
}

/// A socket in which every wait has a limit you choose.
///
/// A `Socket` owns one descriptor. Each blocking call — ``accept(deadline:)``,
/// ``connect(to:deadline:)``, `send`, `receive` and their relatives — waits according to
/// the socket's ``timeout`` (``SocketTimeout/never``, ``SocketTimeout/nonBlocking`` or
/// ``SocketTimeout/after(_:)``), shortened by the call's `deadline:` if one is given:
/// the call fails with ``SocketError/Kind/timedOut`` at the earlier of the two, never
/// before. A deadline that has already passed fails at once, before any system call.
///
/// New sockets start with the process-wide ``defaultTimeout``; so do sockets returned by
/// ``accept(deadline:)`` — they do *not* copy the listener's timeout.
///
/// ```swift
/// let server = try Socket(.ipv4)
/// try server.bind(to: .ipv4(.loopback, port: 0))
/// try server.listen()
/// server.timeout = try .after(.seconds(5))
/// let (client, peer) = try server.accept()        // .timedOut after 5 s if nobody comes
/// ```
///
/// Thread safety: a `Socket` may be used from several threads at once (typically one
/// reading and one writing). ``close()`` from any thread wakes every call waiting on the
/// socket, which then fails with ``SocketError/Kind/closed``; the descriptor itself is
/// released only after the last such call has returned, so no call ever touches a
/// descriptor number that has been reused.
///
/// Underneath, the descriptor is close-on-exec. On Linux it is blocking, and a call with a
/// timeout of 50 ms or more (or none) sleeps in the kernel bounded by `SO_RCVTIMEO` /
/// `SO_SNDTIMEO`, set once to a little less than the timeout, then finishes the wait with
/// `ppoll(2)` for the time left: one system call per operation, as plain blocking C, and
/// the precision of `ppoll`. Per-call deadlines, short timeouts and retries try the call
/// without waiting (`MSG_DONTWAIT`, or `O_NONBLOCK` for accept and connect) and wait in
/// `ppoll`. On Darwin the descriptor is non-blocking and every wait is `poll(2)`, rounded up
/// to whole milliseconds. No call ever raises SIGPIPE (`MSG_NOSIGNAL` on Linux,
/// `SO_NOSIGPIPE` on Darwin); the library never installs a signal handler.
public final class Socket: Sendable, CustomStringConvertible {
    /// The address family chosen at creation.
    public let family: SocketAddress.Family
    /// Stream or datagram, chosen at creation.
    public let type: SocketType

    struct State {
        /// -1 once the descriptor has been closed.
        var fd: CInt
        /// Calls currently using `fd`.
        var users: Int
        /// Set by `close()`; new calls fail, and the last user closes `fd`.
        var closing: Bool
        var timeout: SocketTimeout
        /// The descriptor's blocking mode and kernel timers (see KernelTimers.swift).
        var mode: DescriptorMode
        /// The peer this socket was connected to or accepted from, for error messages once
        /// the kernel has forgotten it (`getpeername` fails after a reset).
        var peer: SocketAddress?

        /// One user leaves; returns the descriptor to close if it was the last user of a
        /// closed socket (the caller closes it outside the lock).
        mutating func release() -> CInt? {
            users -= 1
            guard users == 0 && closing && fd >= 0 else { return nil }
            defer { fd = -1 }
            return fd
        }
    }

    let state: Locked<State>

    // MARK: creation

    /// Creates a socket (`socket(2)`), close-on-exec, with the process ``defaultTimeout``.
    ///
    /// - Parameters:
    ///   - family: IPv4, IPv6 or Unix domain.
    ///   - type: stream (the default) or datagram.
    ///   - protocol: the protocol number; 0 picks the usual one (TCP for IP streams, UDP
    ///     for IP datagrams).
    /// - Throws: ``SocketError`` (`.tooManyOpenFiles` at the descriptor limit,
    ///   `.invalidArgument` for an unsupported combination).
    public convenience init(_ family: SocketAddress.Family, _ type: SocketType = .stream, protocol: CInt = 0) throws(SocketError) {
        let fd: CInt
        do throws(Errno) {
            fd = try Sys.socket(domain: family.domain, type: type.rawValue, protocol: `protocol`)
        } catch {
            throw SocketError(.create, errno: error, detail: "\(family) \(type) socket")
        }
        self.init(fd: fd, family: family, type: type, timeout: Socket.defaultTimeout)
    }

    /// Takes ownership of a descriptor created elsewhere (for example inherited from a
    /// parent process). The socket closes it. The descriptor is made close-on-exec
    /// (`fcntl(2)`; on Darwin also non-blocking), its blocking mode and `SO_RCVTIMEO` /
    /// `SO_SNDTIMEO` are read, and the socket takes the process ``defaultTimeout``.
    ///
    /// - Throws: ``SocketError`` if the descriptor is not an open socket of a supported
    ///   family. The descriptor is left open (and still yours) when this throws.
    public convenience init(adopting descriptor: CInt) throws(SocketError) {
        let local: SocketAddress
        let rawType: CInt
        var mode: DescriptorMode
        do throws(Errno) {
            local = try Sys.localAddress(descriptor)
            rawType = try Sys.intOption(descriptor, level: Sys.solSocket, name: Sys.soType)
            mode = DescriptorMode(nonblocking: try Sys.prepareDescriptor(descriptor))
            mode.receiveTimer = try Sys.timer(descriptor, Sys.receiveTimer)
            mode.sendTimer = try Sys.timer(descriptor, Sys.sendTimer)
        } catch {
            throw SocketError(.create, errno: error, detail: "descriptor \(descriptor) is not an open socket")
        }
        let type: SocketType = rawType == Sys.datagramType ? .datagram : .stream
        self.init(fd: descriptor, family: local.family, type: type, timeout: Socket.defaultTimeout, mode: mode,
                  peer: try? Sys.peerAddress(descriptor))
    }

    /// A connected pair of Unix-domain sockets (`socketpair(2)`), both with the process
    /// ``defaultTimeout``.
    public static func pair(_ type: SocketType = .stream) throws(SocketError) -> (Socket, Socket) {
        do throws(Errno) {
            let (a, b) = try Sys.socketPair(type: type.rawValue)
            let timeout = defaultTimeout
            return (Socket(fd: a, family: .unix, type: type, timeout: timeout),
                    Socket(fd: b, family: .unix, type: type, timeout: timeout))
        } catch {
            throw SocketError(.create, errno: error, detail: "socketpair")
        }
    }

    /// `mode` defaults to that of a descriptor the library created: blocking with no
    /// kernel timers on Linux, non-blocking on Darwin.
    init(
        fd: CInt, family: SocketAddress.Family, type: SocketType, timeout: SocketTimeout,
        mode: DescriptorMode = DescriptorMode(nonblocking: !Sys.kernelTimers), peer: SocketAddress? = nil
    ) {
        self.family = family
        self.type = type
        state = Locked(State(fd: fd, users: 0, closing: false, timeout: timeout, mode: mode, peer: peer))
    }

    deinit {
        // Nobody can be inside a call (each holds a reference), so this is the last owner.
        let fd = state.withLock { $0.fd }
        if fd >= 0 { Sys.close(fd) }
    }

    // MARK: timeouts

    /// How long each blocking call on this socket may wait. Setting it affects calls that
    /// start afterwards. Initially the process ``defaultTimeout`` as it was when the socket
    /// was created.
    public var timeout: SocketTimeout {
        get { state.withLock { $0.timeout } }
        set { state.withLock { $0.timeout = newValue } }
    }

    private static let defaultStorage = Locked(SocketTimeout.never)

    /// The timeout given to every socket created (or accepted, or adopted) from now on,
    /// like Python's `socket.setdefaulttimeout`. Sockets that already exist keep theirs.
    /// Initially ``SocketTimeout/never``. Safe to read and set from any thread.
    public static var defaultTimeout: SocketTimeout {
        get { defaultStorage.withLock { $0 } }
        set { defaultStorage.withLock { $0 = newValue } }
    }

    // MARK: closing

    /// Closes the socket. Idempotent, never throws, never blocks on other threads.
    ///
    /// If other threads are waiting in a call on this socket, they are woken
    /// (`shutdown(2)` of both directions) and fail with ``SocketError/Kind/closed``; the
    /// descriptor is `close(2)`d when the last of them returns. Otherwise it is closed
    /// at once. Every later call fails with ``SocketError/Kind/closed``.
    /// A socket that is no longer referenced closes itself.
    public func close() {
        let toClose: CInt? = state.withLock { s in
            if s.closing { return nil }
            s.closing = true
            if s.users == 0 {
                let fd = s.fd
                s.fd = -1
                return fd
            }
            // Wake the waiters; the last one out closes the descriptor. Done under the lock
            // so the descriptor cannot be closed (and its number reused) in between.
            try? Sys.shutdown(s.fd, how: Sys.shutBoth)
            return nil
        }
        if let toClose, toClose >= 0 { Sys.close(toClose) }
    }

    /// True once ``close()`` has been called.
    public var isClosed: Bool { state.withLock { $0.closing } }

    /// Runs `body` with the descriptor, which stays open until `body` returns even if
    /// another thread calls ``close()``. This is the escape hatch for system calls the
    /// library does not wrap. Do not close it, and leave its blocking mode, `SO_RCVTIMEO`
    /// and `SO_SNDTIMEO` alone: the library manages them for ``timeout``.
    ///
    /// - Throws: ``SocketError/Kind/closed`` if the socket is closed; whatever `body` throws.
    public func withUnsafeDescriptor<R, E: Error>(_ body: (CInt) throws(E) -> R) throws -> R {
        let (fd, _) = try enter(.getOption, address: nil)
        defer { leave() }
        return try body(fd)
    }

    /// Marks the start of a call: returns the descriptor and the timeout, or throws
    /// `.closed`. Every `enter` is paired with one `leave`.
    @inline(__always)
    func enter(_ operation: SocketError.Operation, address: SocketAddress?) throws(SocketError) -> (CInt, SocketTimeout) {
        let entered: (CInt, SocketTimeout)? = state.withLock { s in
            if s.closing { return nil }
            s.users += 1
            return (s.fd, s.timeout)
        }
        guard let entered else { throw SocketError(.closed, operation, address: address) }
        return entered
    }

    @inline(__always)
    func leave() {
        let toClose: CInt? = state.withLock { $0.release() }
        if let toClose { Sys.close(toClose) }
    }

    /// Runs one call on the descriptor between `enter` and `leave`.
    @inline(__always)
    func withDescriptor<R>(
        _ operation: SocketError.Operation, address: SocketAddress?,
        _ body: (CInt, SocketTimeout) throws(SocketError) -> R
    ) throws(SocketError) -> R {
        let (fd, timeout) = try enter(operation, address: address)
        defer { leave() }
        return try body(fd, timeout)
    }

    // MARK: blocking calls

    /// Starts a call that may wait: like `enter`, and fixes the call's budget (throwing
    /// `.timedOut` for a deadline already past, before any system call) and how it waits.
    @inline(__always)
    func beginCall(
        _ operation: SocketError.Operation, address: SocketAddress?, deadlineLeft: Int64?,
        _ direction: WaitDirection?, needsNonblocking: Bool = false
    ) throws(SocketError) -> Call {
        let started: Result<Call, SocketError> = state.withLock { s in
            if s.closing { return .failure(SocketError(.closed, operation, address: address)) }
            let budget: WaitBudget
            do throws(SocketError) {
                budget = try WaitBudget(s.timeout, deadlineLeft: deadlineLeft, operation)
            } catch {
                return .failure(error.at(address))
            }
            let kernel: Bool
            do throws(Errno) {
                kernel = try s.mode.plan(s.fd, s.timeout, budget, direction, needsNonblocking: needsNonblocking)
            } catch {
                return .failure(SocketError(operation, errno: error, address: address))
            }
            s.users += 1
            if operation == .connect { s.peer = address }  // folded away for every other call
            return .success(Call(
                fd: s.fd, budget: budget, needsNonblocking: needsNonblocking,
                onKernelPath: kernel, holdsNonblocking: !kernel && needsNonblocking))
        }
        return try started.get()
    }

    /// Ends a call begun by `beginCall`; the last user of a closed socket closes the descriptor.
    @inline(__always)
    func endCall(_ call: Call) {
        let toClose: CInt? = state.withLock { s in
            if call.onKernelPath { s.mode.kernelCalls -= 1 }
            if call.holdsNonblocking { s.mode.pollCalls -= 1 }
            return s.release()
        }
        if let toClose { Sys.close(toClose) }
    }

    /// Runs one blocking call between `beginCall` and `endCall`.
    @inline(__always)
    func withCall<R>(
        _ operation: SocketError.Operation, address: SocketAddress?, deadline: ContinuousClock.Instant?,
        _ direction: WaitDirection?, needsNonblocking: Bool = false,
        _ body: (inout Call) throws(SocketError) -> R
    ) throws(SocketError) -> R {
        let left = WaitBudget.nanosecondsLeft(until: deadline)
        var call = try beginCall(operation, address: address, deadlineLeft: left, direction, needsNonblocking: needsNonblocking)
        defer { endCall(call) }
        do throws(SocketError) {
            return try body(&call)
        } catch {
            throw error.at(address)  // errors from the budget and the wait loop carry none
        }
    }

    /// Moves a call from the kernel path to the poll path once its kernel attempt is made.
    func leaveKernelPath(_ call: inout Call) throws(SocketError) {
        let failed: Errno? = state.withLock { s in
            s.mode.kernelCalls -= 1
            guard call.needsNonblocking else { return nil }
            do throws(Errno) { try s.mode.holdNonblocking(call.fd) } catch { return error }
            return nil
        }
        call.onKernelPath = false
        if let failed { throw failure(call.budget.operation, failed, address: nil) }
        call.holdsNonblocking = call.needsNonblocking
    }

    /// Starts the next attempt of a call: returns whether it may sleep in the kernel (only
    /// the first attempt on the kernel path), and moves a call whose kernel attempt is made
    /// to the poll path.
    @inline(__always)
    func nextAttempt(_ call: inout Call) throws(SocketError) -> Bool {
        if call.onKernelPath && call.kernelAttemptMade { try leaveKernelPath(&call) }
        defer { call.kernelAttemptMade = true }
        return call.mayBlock
    }

    /// Runs `attempt` until it completes, waiting for `events` between tries within the
    /// call's budget. `attempt(mayBlock)` returns nil when the operation did not complete;
    /// it may sleep in the kernel only when `mayBlock` is true (the call's first attempt on
    /// the kernel path).
    @inline(__always)
    func perform<R>(
        _ call: inout Call, events: Int16, _ attempt: (_ mayBlock: Bool) throws(Errno) -> R?
    ) throws(SocketError) -> R {
        while true {
            let mayBlock = try nextAttempt(&call)
            let result: R?
            do throws(Errno) {
                result = try attempt(mayBlock)
            } catch {
                throw failure(call.budget.operation, error, address: nil)
            }
            if let result { return result }
            // Not ready: the kernel's timer fired, a signal came, or the descriptor is
            // non-blocking. Either way, wait by ppoll for what is left, then try again.
            try call.budget.wait(call.fd, for: events)
            if isClosed { throw SocketError(.closed, call.budget.operation) }
        }
    }

    /// The error for a failed system call, or `.closed` if the socket was closed meanwhile
    /// (a call woken by `close()` sees EOF or an error from the shutdown, not the truth).
    func failure(_ operation: SocketError.Operation, _ errno: Errno, address: SocketAddress?) -> SocketError {
        if isClosed { return SocketError(.closed, operation, address: address) }
        return SocketError(operation, errno: errno, address: address)
    }

    public var description: String {
        let fd = state.withLock { $0.fd }
        return fd >= 0 ? "Socket(\(family) \(type), fd \(fd))" : "Socket(\(family) \(type), closed)"
    }
}
