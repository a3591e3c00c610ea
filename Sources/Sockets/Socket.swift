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

    /// `stream` or `datagram`.
    public var description: String { self == .stream ? "stream" : "datagram" }
}

/// A socket in which every wait has a limit you choose.
///
/// A `Socket` owns one descriptor. Each call that can wait — ``accept(deadline:)-7i7wg``,
/// ``connect(to:deadline:)-94vdi``, `send`, `receive` and their relatives, blocking or
/// async — waits according to the socket's ``timeout`` (``SocketTimeout/never``,
/// ``SocketTimeout/nonBlocking`` or ``SocketTimeout/after(_:)``), shortened by the call's
/// `deadline:` if one is given and by the socket's own deadlines
/// (``setReceiveDeadline(_:)``, ``setSendDeadline(_:)``): the call fails with
/// ``SocketError/Kind/timedOut`` at the earliest of them, never before. A deadline that
/// has already passed fails at once, before any system call.
///
/// New sockets start with the process-wide ``defaultTimeout``; so do sockets returned by
/// ``accept(deadline:)-7i7wg`` — they do *not* copy the listener's timeout.
///
/// ```swift
/// let server = try Socket(.ipv4)
/// try server.bind(to: .ipv4(.loopback, port: 0))
/// try server.listen()
/// server.timeout = try .after(.seconds(5))
/// let (client, peer) = try server.accept()        // .timedOut after 5 s if nobody comes
/// ```
///
/// Thread safety: a `Socket` may be used from several threads and tasks at once (typically
/// one reading and one writing). ``close()`` from any thread ends every call waiting on the
/// socket, which then fails with ``SocketError/Kind/closed``; the descriptor itself is
/// released only after the last such call has returned, so no call ever touches a
/// descriptor number that has been reused.
///
/// Underneath: `socket(2)` with `SOCK_CLOEXEC`, `accept4(2)`, `connect(2)`, `send(2)`,
/// `recv(2)`, `sendto(2)` and `recvfrom(2)`. A blocking call waits in the kernel (bounded
/// by `SO_RCVTIMEO` / `SO_SNDTIMEO`) or in `ppoll(2)`; an async call waits on a
/// ``Reactor`` (`epoll`). On Darwin every wait is `poll(2)`, rounded up to whole
/// milliseconds. No call ever raises SIGPIPE (`MSG_NOSIGNAL` on Linux, `SO_NOSIGPIPE` on
/// Darwin); the library never installs a signal handler.
public final class Socket: Sendable, CustomStringConvertible {
    // How a blocking call waits (design: Calls/KernelTimerPolicy.swift). On Linux a receive,
    // send or accept with a time limit of 50 ms or more (or none) sleeps in the kernel bounded
    // by SO_RCVTIMEO / SO_SNDTIMEO, set — the first time a call must wait — to a little less
    // than the time it has (and never more than 250 ms, so that a socket deadline set
    // meanwhile reaches it), then finishes the wait with ppoll(2) for the time left: one system
    // call per operation, as plain blocking C, and the precision of ppoll. Connects, short
    // timeouts and retries try the call without waiting (MSG_DONTWAIT, or O_NONBLOCK for
    // accept and connect) and wait in ppoll.

    /// The address family chosen at creation.
    public let family: SocketAddress.Family
    /// Stream or datagram, chosen at creation.
    public let type: SocketType

    /// The descriptor. It never changes; it is closed once, by the last call to leave a
    /// closed socket, by ``close()`` when no call is in flight, or by `deinit`
    /// (CallAccounting.swift).
    let fd: CInt

    /// Adopted (``init(adopting:)``): other processes may hold the same socket, so the
    /// library never acts on it as a whole — no `shutdown(2)`, no kernel timers, and
    /// O_NONBLOCK only while an accept or connect needs it.
    let shared: Bool

    /// The timeout, the descriptor's mode and the calls in flight (CallAccounting.swift).
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
    /// parent process, or passed by a service manager). The socket closes it, and takes the
    /// process ``defaultTimeout``. The descriptor is made close-on-exec (`fcntl(2)`; on
    /// Darwin also non-blocking).
    ///
    /// Other processes may hold the same socket (socket activation, pre-fork servers), so
    /// the library leaves alone what they would see: ``close()`` never calls `shutdown(2)`
    /// (it wakes this socket's own waiters through an eventfd), and `SO_RCVTIMEO` /
    /// `SO_SNDTIMEO` are never set (every wait is a `ppoll`, and receives and sends use
    /// `MSG_DONTWAIT`). `O_NONBLOCK`, which belongs to the open file they share, is set by
    /// the first ``accept(deadline:)-7i7wg`` or ``connect(to:deadline:)-94vdi`` and left set, as Go's
    /// `net.FileListener` does: a holder that accepts in blocking mode sees `EAGAIN`
    /// instead of waiting, and a holder that clears it can leave this socket's accept asleep
    /// in the kernel past ``close()`` and its deadline.
    ///
    /// - Throws: ``SocketError`` if the descriptor is not an open socket of a supported
    ///   family. The descriptor is left open (and still yours) when this throws.
    public convenience init(adopting descriptor: CInt) throws(SocketError) {
        let local: SocketAddress
        let rawType: CInt
        let nonblocking: Bool
        do throws(Errno) {
            local = try Sys.localAddress(descriptor)
            rawType = try Sys.intOption(descriptor, level: Sys.solSocket, name: Sys.soType)
            nonblocking = try Sys.prepareDescriptor(descriptor)
        } catch {
            throw SocketError(.create, errno: error, detail: "descriptor \(descriptor) is not an open socket")
        }
        let type: SocketType = rawType == Sys.datagramType ? .datagram : .stream
        let mode = DescriptorMode(receiveTimer: KernelTimer.unknown, sendTimer: KernelTimer.unknown,
                                  nonblocking: nonblocking, timersSet: true)
        self.init(fd: descriptor, family: local.family, type: type, timeout: Socket.defaultTimeout, mode: mode,
                  peer: try? Sys.peerAddress(descriptor), shared: true)
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

    /// `mode` defaults to that of a descriptor the library created.
    init(
        fd: CInt, family: SocketAddress.Family, type: SocketType, timeout: SocketTimeout,
        mode: DescriptorMode = .created, peer: SocketAddress? = nil, shared: Bool = false
    ) {
        self.family = family
        self.type = type
        self.fd = fd
        self.shared = shared
        state = Locked(State(timeout: timeout, mode: mode, peer: peer))
    }

    deinit {
        // Nobody can be inside a call (each holds a reference), so this is the last owner.
        let (released, held) = state.withLock { ($0.released, $0.held) }
        if !released { releaseDescriptors(held) }
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
    /// Every call waiting on the socket in another thread ends promptly with
    /// ``SocketError/Kind/closed`` — whatever the call, family or type — and no call that
    /// was still waiting returns success; the descriptor is `close(2)`d when the last of
    /// them has returned (at once if none is in flight). Every later call fails with
    /// ``SocketError/Kind/closed``. A socket that is no longer referenced closes itself.
    ///
    /// Underneath, the waiting calls are woken by `shutdown(2)` of both directions, which
    /// ends a sleep in the kernel and makes `ppoll` report a hang-up (the peer of a
    /// connection sees end of stream then, not when the descriptor is closed). On a socket
    /// made with ``init(adopting:)``, which other processes may hold, the library never
    /// calls `shutdown(2)` and wakes its calls through an eventfd instead (a pipe on
    /// Darwin, where every socket is woken so). A descriptor you share yourself — through
    /// `fork(2)` without `exec`, or a `dup(2)` of ``withUnsafeDescriptor(_:)``'s — is
    /// shut down for every holder; adopt the copy with ``init(adopting:)`` instead.
    public func close() {
        closeAndWake()
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
        try beginUse(.getOption, address: nil)
        defer { endUse() }
        return try body(fd)
    }

    /// `Socket(IPv4 stream, fd 5)`, or `Socket(IPv4 stream, closed)`: for logs.
    public var description: String {
        isClosed ? "Socket(\(family) \(type), closed)" : "Socket(\(family) \(type), fd \(fd))"
    }
}
