import Synchronization
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
/// `SO_SNDTIMEO`, set — the first time a call must wait — to a little less than the
/// timeout, then finishes the wait with `ppoll(2)` for the time left: one system call per
/// operation, as plain blocking C, and the precision of `ppoll`. Per-call deadlines, short
/// timeouts and retries try the call without waiting (`MSG_DONTWAIT`, or `O_NONBLOCK` for
/// accept and connect) and wait in `ppoll`. Calls with no deadline start and end without
/// a lock once the timer is set (two atomic operations). On Darwin the descriptor is
/// non-blocking and every wait is `poll(2)`, rounded up to whole milliseconds. No call ever
/// raises SIGPIPE (`MSG_NOSIGNAL` on Linux, `SO_NOSIGPIPE` on Darwin); the library never
/// installs a signal handler.
public final class Socket: Sendable, CustomStringConvertible {
    /// The address family chosen at creation.
    public let family: SocketAddress.Family
    /// Stream or datagram, chosen at creation.
    public let type: SocketType

    /// The descriptor. It never changes; it is closed once (``close()`` with no call in
    /// flight, the last call to end after ``close()``, or `deinit`), and only a call counted
    /// in `usage` may touch it.
    let fd: CInt

    /// Calls using `fd`, calls that may be asleep on a kernel timer, and the socket's life,
    /// in one word (``Usage``): a call starts and ends without the lock.
    let usage: Atomic<UInt64>

    /// Whether a call may start on the kernel path without the lock, and the timeout it then
    /// waits for (``Ticket``).
    let ticket: Atomic<UInt64>

    /// What calls plan with, under the lock: the timeout, the descriptor's mode, the peer.
    struct State {
        var timeout: SocketTimeout
        /// The descriptor's blocking mode and kernel timers (see KernelTimers.swift).
        var mode: DescriptorMode
        /// The peer this socket was connected to or accepted from, for error messages once
        /// the kernel has forgotten it (`getpeername` fails after a reset).
        var peer: SocketAddress?
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
        self.fd = fd
        usage = Atomic(mode.receiveTimer != nil || mode.sendTimer != nil ? Usage.timersSet : 0)
        ticket = Atomic(Ticket.field(timeout) ?? 0)
        state = Locked(State(timeout: timeout, mode: mode, peer: peer))
    }

    deinit {
        // Nobody can be inside a call (each holds a reference), so this is the last owner.
        if usage.load(ordering: .acquiring) & Usage.released == 0 { Sys.close(fd) }
    }

    // MARK: timeouts

    /// How long each blocking call on this socket may wait. Setting it affects calls that
    /// start afterwards. Initially the process ``defaultTimeout`` as it was when the socket
    /// was created.
    public var timeout: SocketTimeout {
        get { state.withLock { $0.timeout } }
        set {
            state.withLock { s in
                s.timeout = newValue
                s.mode.deferred = 0
                // No call starts on the fast path until one has planned with the new timeout.
                ticket.store(Ticket.field(newValue) ?? 0, ordering: .sequentiallyConsistent)
            }
        }
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
        var word = usage.load(ordering: .relaxed)
        while true {  // retried only when another call started or ended in between
            if word & Usage.closing != 0 { return }
            // With calls in flight, close() counts itself as one more user while it wakes
            // them, so the last of them cannot close the descriptor (and free its number
            // for reuse) under the shutdown.
            let busy = Usage.users(word) != 0
            let (done, seen) = usage.compareExchange(
                expected: word, desired: (word | Usage.closing) &+ (busy ? Usage.user : 0),
                ordering: .sequentiallyConsistent)
            if done { break }
            word = seen
        }
        if Usage.users(word) == 0 {
            closeDescriptor()
        } else {
            try? Sys.shutdown(fd, how: Sys.shutBoth)
            release(Usage.user)
        }
    }

    /// True once ``close()`` has been called.
    public var isClosed: Bool { usage.load(ordering: .acquiring) & Usage.closing != 0 }

    /// Runs `body` with the descriptor, which stays open until `body` returns even if
    /// another thread calls ``close()``. This is the escape hatch for system calls the
    /// library does not wrap. Do not close it, and leave its blocking mode, `SO_RCVTIMEO`
    /// and `SO_SNDTIMEO` alone: the library manages them for ``timeout``.
    ///
    /// - Throws: ``SocketError/Kind/closed`` if the socket is closed; whatever `body` throws.
    public func withUnsafeDescriptor<R, E: Error>(_ body: (CInt) throws(E) -> R) throws -> R {
        try register(.getOption, address: nil, Usage.user)
        defer { release(Usage.user) }
        return try body(fd)
    }

    // MARK: counting calls

    /// Counts a call in `usage` (`delta`: one user, and one kernel call for the fast path),
    /// or throws `.closed` once ``close()`` has been called.
    @inline(__always)
    func register(_ operation: SocketError.Operation, address: SocketAddress?, _ delta: UInt64) throws(SocketError) {
        var word = usage.load(ordering: .relaxed)
        while true {  // retried only when another call started or ended in between
            if word & Usage.closing != 0 { throw SocketError(.closed, operation, address: address) }
            let (done, seen) = usage.compareExchange(expected: word, desired: word &+ delta, ordering: .sequentiallyConsistent)
            if done { return }
            word = seen
        }
    }

    /// Uncounts a call; the last user of a closed socket closes the descriptor.
    @inline(__always)
    func release(_ delta: UInt64) {
        let before = usage.wrappingSubtract(delta, ordering: .sequentiallyConsistent).oldValue
        if Usage.users(before) == 1 && before & Usage.closing != 0 { closeDescriptor() }
    }

    /// Closes `fd`: called exactly once, by whoever saw the last user leave a closing socket.
    @inline(never)
    func closeDescriptor() {
        usage.bitwiseOr(Usage.released, ordering: .sequentiallyConsistent)
        Sys.close(fd)
    }

    /// Runs one call that does not wait (bind, options, addresses) on the descriptor.
    @inline(__always)
    func withDescriptor<R>(
        _ operation: SocketError.Operation, address: SocketAddress?,
        _ body: (CInt) throws(SocketError) -> R
    ) throws(SocketError) -> R {
        try register(operation, address: address, Usage.user)
        defer { release(Usage.user) }
        return try body(fd)
    }

    // MARK: blocking calls

    /// Starts a call that may wait: counts it, fixes its budget (throwing `.timedOut` for a
    /// deadline already past, before any system call) and how it waits.
    ///
    /// The fast path takes no lock: with no deadline, when the ticket says the descriptor is
    /// blocking with this direction's timer set for the socket's timeout, the call counts
    /// itself as a user and a kernel call in one compare-and-swap and reads the ticket
    /// again. A planner that would lengthen the timer clears the ticket first and then reads
    /// the count (both sequentially consistent), so either it sees this call and leaves the
    /// timer alone, or this call sees the cleared ticket and plans under the lock instead.
    @inline(__always)
    func beginCall(
        _ operation: SocketError.Operation, address: SocketAddress?, deadlineLeft: Int64?,
        _ direction: WaitDirection?, needsNonblocking: Bool = false
    ) throws(SocketError) -> Call {
        if deadlineLeft == nil, let direction, operation != .connect {
            let ready = Ticket.ready(direction)
            if ticket.load(ordering: .relaxed) & ready != 0 {
                try register(operation, address: address, Usage.user + Usage.kernelCall)
                let field = ticket.load(ordering: .sequentiallyConsistent)
                if field & ready != 0 {
                    return Call(
                        budget: WaitBudget(ticket: field, operation), direction: direction,
                        needsNonblocking: needsNonblocking, onKernelPath: true, holdsNonblocking: false)
                }
                usage.wrappingSubtract(Usage.kernelCall, ordering: .sequentiallyConsistent)
                return try beginUnderLock(operation, address: address, deadlineLeft: nil, direction, needsNonblocking: needsNonblocking)
            }
        }
        try register(operation, address: address, Usage.user)
        return try beginUnderLock(operation, address: address, deadlineLeft: deadlineLeft, direction, needsNonblocking: needsNonblocking)
    }

    /// The slow start of a call already counted as a user: under the lock, fixes its budget
    /// and how it waits, adjusting the descriptor if need be (see KernelTimers.swift).
    @inline(never)
    func beginUnderLock(
        _ operation: SocketError.Operation, address: SocketAddress?, deadlineLeft: Int64?,
        _ direction: WaitDirection?, needsNonblocking: Bool
    ) throws(SocketError) -> Call {
        do throws(SocketError) {
            return try state.withLock { s throws(SocketError) -> Call in
                let budget: WaitBudget
                do throws(SocketError) {
                    budget = try WaitBudget(s.timeout, deadlineLeft: deadlineLeft, operation)
                } catch {
                    throw error.at(address)
                }
                let how: Plan
                do throws(Errno) {
                    how = try plan(&s, budget, direction, needsNonblocking: needsNonblocking, byTimeout: deadlineLeft == nil)
                } catch {
                    throw SocketError(operation, errno: error, address: address)
                }
                if operation == .connect { s.peer = address }
                return Call(
                    budget: budget, direction: direction, needsNonblocking: needsNonblocking,
                    onKernelPath: how == .kernel, holdsNonblocking: how == .poll && needsNonblocking,
                    kernelPending: how == .tryFirst)
            }
        } catch {
            release(Usage.user)
            throw error
        }
    }

    /// Ends a call begun by `beginCall`; the last user of a closed socket closes the descriptor.
    @inline(__always)
    func endCall(_ call: Call) {
        if call.holdsNonblocking { state.withLock { $0.mode.pollCalls -= 1 } }
        release(call.onKernelPath ? Usage.user + Usage.kernelCall : Usage.user)
    }

    /// Runs one blocking call between `beginCall` and `endCall`.
    @inline(__always)
    func withCall<R>(
        _ operation: SocketError.Operation, address: SocketAddress?, deadlineLeft: Int64?,
        _ direction: WaitDirection?, needsNonblocking: Bool = false,
        _ body: (inout Call) throws(SocketError) -> R
    ) throws(SocketError) -> R {
        var call = try beginCall(operation, address: address, deadlineLeft: deadlineLeft, direction, needsNonblocking: needsNonblocking)
        defer { endCall(call) }
        do throws(SocketError) {
            return try body(&call)
        } catch {
            throw error.at(address)  // errors from the budget and the wait loop carry none
        }
    }

    /// Moves a call from the kernel path to the poll path once its kernel attempt is made.
    func leaveKernelPath(_ call: inout Call) throws(SocketError) {
        usage.wrappingSubtract(Usage.kernelCall, ordering: .sequentiallyConsistent)
        call.onKernelPath = false
        guard call.needsNonblocking else { return }
        let failed: Errno? = state.withLock { s in
            do throws(Errno) { try holdNonblocking(&s.mode) } catch { return error }
            return nil
        }
        if let failed { throw failure(call.budget.operation, failed, address: nil) }
        call.holdsNonblocking = true
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
            // A call that tried without waiting must wait after all: set its timer, and
            // sleep in the kernel on the next attempt if there is time for that.
            if call.kernelPending {
                try takeKernelPath(&call)
                if call.onKernelPath { continue }
            }
            // Not ready: the kernel's timer fired, a signal came, or the descriptor is
            // non-blocking. Either way, wait by ppoll for what is left, then try again.
            try call.budget.wait(fd, for: events)
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
        isClosed ? "Socket(\(family) \(type), closed)" : "Socket(\(family) \(type), fd \(fd))"
    }
}
