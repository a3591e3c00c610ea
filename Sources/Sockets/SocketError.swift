// Re-exported: `SocketError.errno` is swift-system's `Errno`, and a user who writes
// `catch Errno.connectionRefused` or `error.errno == .connectionRefused` should not need a
// dependency of their own to name it.
@_exported import SystemPackage

/// The one error every `Sockets` call throws: what happened (``kind``), during which
/// operation, with which address, the `errno` underneath if there was one, and for a
/// timeout how long the operation was allowed.
///
/// Match on the kind, never on the message:
/// ```swift
/// do throws(SocketError) {
///     try socket.connect(to: address)
/// } catch {
///     switch error.kind {
///     case .timedOut: ...           // nobody answered in time
///     case .connectionRefused: ...  // nothing listens there
///     default: throw error
///     }
/// }
/// ```
/// `catch SocketError.Kind.timedOut` also matches (through `~=`), and so does
/// `catch where error.kind == .timedOut`.
///
/// The ``description`` is written for a person, and names the limit you gave:
/// `connect to 127.0.0.1:1717 timed out after 3s` (a timeout),
/// `receive from 127.0.0.1:8080 timed out: the deadline passed` (a `deadline:`),
/// `receive from 127.0.0.1:8080 timed out: the socket's receive deadline passed`
/// (``Socket/setReceiveDeadline(_:)``),
/// `connect to 127.0.0.1:9 failed: Connection refused (ECONNREFUSED)`.
public struct SocketError: Error, Sendable, CustomStringConvertible {
    /// What happened, as a value to match on. Open like `Errno`: compare with `==` or
    /// match with `~=`; do not switch exhaustively.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        let name: String
        init(_ name: String) { self.name = name }
        /// The kind's name as messages show it: `timed out`, `connection refused`, ...
        public var description: String { name }

        /// The operation's time ran out: the socket's timeout or the caller's deadline,
        /// whichever came first. The library's own condition: it has no errno, and it is
        /// not the kernel's `ETIMEDOUT` (which is ``system``).
        public static let timedOut = Kind("timed out")
        /// The socket is non-blocking and the operation would have had to wait
        /// (`EAGAIN`/`EWOULDBLOCK`, or `EINPROGRESS` for connect).
        public static let wouldBlock = Kind("would block")
        /// Nothing accepts connections at that address (`ECONNREFUSED`). On Linux this is
        /// reported at once, whatever the timeout.
        public static let connectionRefused = Kind("connection refused")
        /// The peer reset the connection (`ECONNRESET`).
        public static let connectionReset = Kind("connection reset")
        /// A connection died before it was accepted or while in use (`ECONNABORTED`).
        public static let connectionAborted = Kind("connection aborted")
        /// Writing to a connection whose other end is gone or whose write side was shut
        /// down (`EPIPE`). The process never receives SIGPIPE.
        public static let brokenPipe = Kind("broken pipe")
        /// The socket is not connected (`ENOTCONN`).
        public static let notConnected = Kind("not connected")
        /// The socket was closed: before the call, or by another thread while the call waited.
        public static let closed = Kind("socket closed")
        /// The task making an async call was cancelled: before the call (which then made no
        /// system call), or while it waited. What a transfer had moved by then is in
        /// ``SocketError/bytesTransferred``; a receive or accept has consumed nothing.
        public static let cancelled = Kind("cancelled")
        /// The peer ended the stream before the expected number of bytes arrived.
        public static let endOfStream = Kind("end of stream")
        /// A line or record did not end within the limit the reader was given
        /// (``BufferedReader/maxLineLength``); the detail says the limit.
        public static let tooLong = Kind("too long")
        /// The address is already bound (`EADDRINUSE`).
        public static let addressInUse = Kind("address in use")
        /// The address is not local to this machine (`EADDRNOTAVAIL`).
        public static let addressNotAvailable = Kind("address not available")
        /// No route to the network or host (`ENETUNREACH`, `EHOSTUNREACH`).
        public static let unreachable = Kind("unreachable")
        /// The process or system is out of descriptors (`EMFILE`, `ENFILE`).
        public static let tooManyOpenFiles = Kind("too many open files")
        /// The OS refused the operation (`EACCES`, `EPERM`), such as a privileged port.
        public static let permissionDenied = Kind("permission denied")
        /// A host name could not be resolved (`getaddrinfo` failed).
        public static let nameResolution = Kind("name resolution failed")
        /// The caller passed something that cannot work: a bad address, port, duration,
        /// path, or an operation this kind of socket does not support. ``detail`` says which.
        public static let invalidArgument = Kind("invalid argument")
        /// TLS (the `SocketsTLS` module): the peer's certificate was not accepted — expired,
        /// for another host, signed by an unknown authority; ``detail`` says which.
        public static let certificateRejected = Kind("certificate rejected")
        /// TLS: the peer ended the handshake or the session with an alert (``detail`` names
        /// it: `handshake failure`, `certificate required`, ...).
        public static let tlsAlert = Kind("TLS alert")
        /// TLS: what the peer sent is not TLS, or breaks the protocol (``detail`` says what).
        public static let tlsProtocol = Kind("TLS protocol error")
        /// TLS is not available: OpenSSL 3 (`libssl.so.3`) could not be loaded (``detail``
        /// says why).
        public static let tlsUnavailable = Kind("TLS unavailable")
        /// Any other system error; ``errno`` says which.
        public static let system = Kind("system error")
    }

    /// The operation that failed, as it appears in messages (`connect`, `accept`, ...).
    public struct Operation: Hashable, Sendable, CustomStringConvertible {
        // Stored as a small number, so that carrying one through every call costs nothing.
        let code: UInt8
        private init(_ code: UInt8) { self.code = code }

        private static let names: [(name: String, preposition: String)] = [
            ("socket", "for"),
            ("bind", "to"),
            ("listen", "on"),
            ("accept", "on"),
            ("connect", "to"),
            ("send", "to"),
            ("sendAll", "to"),
            ("receive", "from"),
            ("send", "to"),  // send(_:to:): messages use the public names
            ("receive", "from"),  // receive(from:), receiveDatagram: the address is a connected peer
            ("shutdown", "of"),
            ("setOption", "on"),
            ("getOption", "on"),
            ("address lookup", "of"),  // localAddress, peerAddress
            ("resolve", "of"),
            ("parse", "of"),
            ("set timeout", "on"),
            ("handshake", "with"),
        ]

        /// The operation's name.
        public var name: String { Self.names[Int(code)].name }
        var preposition: String { Self.names[Int(code)].preposition }
        /// The same as ``name``.
        public var description: String { name }

        /// The `socket` step.
        public static let create = Operation(0)
        /// The `bind` step.
        public static let bind = Operation(1)
        /// The `listen` step.
        public static let listen = Operation(2)
        /// The `accept` step.
        public static let accept = Operation(3)
        /// The `connect` step.
        public static let connect = Operation(4)
        /// The `send` step.
        public static let send = Operation(5)
        /// The `sendAll` step.
        public static let sendAll = Operation(6)
        /// The `receive` step.
        public static let receive = Operation(7)
        /// `send(_:to:)`; named `send` in messages.
        public static let sendTo = Operation(8)
        /// `receive(from:)` and `receiveDatagram`; named `receive` in messages.
        public static let receiveFrom = Operation(9)
        /// The `shutdown` step.
        public static let shutdown = Operation(10)
        /// The `setOption` step.
        public static let setOption = Operation(11)
        /// The `getOption` step.
        public static let getOption = Operation(12)
        /// ``Socket/localAddress`` and ``Socket/peerAddress`` (`getsockname(2)`,
        /// `getpeername(2)`); named `address lookup` in messages.
        public static let address = Operation(13)
        /// The `resolve` step.
        public static let resolve = Operation(14)
        /// The `parse` step.
        public static let parse = Operation(15)
        /// The `set timeout` step.
        public static let setTimeout = Operation(16)
        /// A TLS handshake (the `SocketsTLS` module).
        public static let handshake = Operation(17)
    }

    // The fields live in one allocation, so that a `SocketError` is one word. An async
    // function keeps a slot in its frame for every error value it may hold across a
    // suspension, and a task keeps the largest frame its calls ever needed for as long as it
    // lives: with the ~110-byte error stored inline, the async receive's frame was 2.3 KB, and
    // every idle connection of a server kept that much. Errors are rare; the allocation is
    // paid only when one is made.
    private final class Fields: Sendable {
        let kind: Kind
        let operation: Operation
        let address: SocketAddress?
        let errno: Errno?
        let timeout: Duration?
        let bytesTransferred: Int?
        let detail: String?
        let cause: TimeoutCause?
        /// What the operation was aimed at when no single address says it: `host:port`.
        let target: String?
        let attempts: [SocketError]

        init(_ kind: Kind, _ operation: Operation, _ address: SocketAddress?, _ errno: Errno?,
             _ timeout: Duration?, _ bytesTransferred: Int?, _ detail: String?, _ cause: TimeoutCause?,
             target: String? = nil, attempts: [SocketError] = []) {
            self.kind = kind
            self.operation = operation
            self.address = address
            self.errno = errno
            self.timeout = timeout
            self.bytesTransferred = bytesTransferred
            self.detail = detail
            self.cause = cause
            self.target = target
            self.attempts = attempts
        }
    }

    /// Which of the user's limits ended a timed-out call: it decides the message, which
    /// names the limit the user gave rather than the share of it the call had left.
    package enum TimeoutCause {
        /// The socket's ``Socket/timeout`` (or a `timeout:` argument): "timed out after 2s".
        case timeout
        /// The call's `deadline:`: "the deadline passed".
        case deadline
        /// The socket's receive or send deadline (``Socket/setReceiveDeadline(_:)``).
        case socketDeadline(WaitDirection)
    }

    private let fields: Fields

    /// Which limit ended a timed-out call (nil for other errors, and for users' own).
    package var timeoutCause: TimeoutCause? { fields.cause }

    /// The same error with another count of bytes transferred (TLS: the caller's bytes, not
    /// the ciphertext the socket sent) and detail.
    package func withCount(_ count: Int?, detail: String?) -> SocketError {
        SocketError(copying: fields, address: address, bytesTransferred: count, detail: detail)
    }

    /// What happened.
    public var kind: Kind { fields.kind }
    /// The operation that failed.
    public var operation: Operation { fields.operation }
    /// The address involved: the peer for connect/send/receive, the local address for
    /// bind/listen/accept, when known.
    public var address: SocketAddress? { fields.address }
    /// The system error underneath, if any. Nil for ``Kind/timedOut``, ``Kind/closed``,
    /// ``Kind/endOfStream`` and most ``Kind/invalidArgument`` errors.
    public var errno: Errno? { fields.errno }
    /// For ``Kind/timedOut``: how long the operation was allowed, from its start to the
    /// earlier of the socket's timeout and the caller's deadline; zero when a deadline had
    /// already passed when the call began; nil when the socket's deadline ended it (which
    /// may have been set while the call waited). The message names the
    /// limit that ended the call: `timed out after 2s` for a timeout, `the deadline passed`
    /// for a `deadline:`, `the socket's receive deadline passed` for
    /// ``Socket/setReceiveDeadline(_:)``.
    public var timeout: Duration? { fields.timeout }
    /// For `sendAll` and `receive(exactly:)`: how many bytes had been transferred before
    /// the failure.
    public var bytesTransferred: Int? { fields.bytesTransferred }
    /// Extra words for a person: what was invalid, which name failed to resolve, ...
    public var detail: String? { fields.detail }
    /// For a connect to several addresses that all failed (``Socket/connect(to:timeout:deadline:attemptDelay:)-7qins``
    /// and the list form): each address's own error, in the order they were tried — refused,
    /// timed out, unreachable, ... Empty for every other error. The message sums them up.
    public var attempts: [SocketError] { fields.attempts }

    /// Makes an error in the library's vocabulary: for code that wraps sockets and reports
    /// its own failures with the same type, so that a `throws(SocketError)` helper can throw
    /// them.
    /// ```swift
    /// func readHeader(from connection: Socket) throws(SocketError) -> [UInt8] {
    ///     let bytes = try connection.receive(upTo: 512)
    ///     guard bytes.starts(with: Array("HTTP/1.1".utf8)) else {
    ///         throw SocketError(.invalidArgument, .receive, address: try? connection.peerAddress,
    ///                           detail: "not an HTTP/1.1 response")
    ///     }
    ///     return bytes
    /// }
    /// ```
    /// The message is built as for the library's own errors:
    /// `receive from 127.0.0.1:8080 failed: invalid argument: not an HTTP/1.1 response`.
    public init(
        _ kind: Kind, _ operation: Operation, address: SocketAddress? = nil, errno: Errno? = nil,
        timeout: Duration? = nil, bytesTransferred: Int? = nil, detail: String? = nil
    ) {
        fields = Fields(kind, operation, address, errno, timeout, bytesTransferred, detail, nil)
    }

    /// A timeout, with the limit that ended it.
    package init(timedOut operation: Operation, after timeout: Duration?, _ cause: TimeoutCause, address: SocketAddress? = nil) {
        fields = Fields(.timedOut, operation, address, nil, timeout, nil, nil, cause)
    }

    /// The error of a connect to several addresses, or of the lookup before it: aimed at
    /// `target` (`host:port`), with every attempt's own error.
    init(_ kind: Kind, _ operation: Operation, target: String, errno: Errno?, timeout: Duration?,
         cause: TimeoutCause?, attempts: [SocketError], detail: String?) {
        fields = Fields(kind, operation, nil, errno, timeout, nil, detail, cause, target: target, attempts: attempts)
    }

    private init(copying f: Fields, address: SocketAddress?, bytesTransferred: Int?, detail: String?) {
        fields = Fields(f.kind, f.operation, address, f.errno, f.timeout, bytesTransferred, detail, f.cause,
                        target: f.target, attempts: f.attempts)
    }

    /// An error from a system call, classified by its errno.
    init(_ operation: Operation, errno: Errno, address: SocketAddress? = nil, detail: String? = nil) {
        self.init(Kind(errno: errno), operation, address: address, errno: errno, detail: detail)
    }

    /// The same error with the number of bytes transferred before it.
    func transferred(_ count: Int) -> SocketError {
        SocketError(copying: fields, address: address, bytesTransferred: count, detail: detail)
    }

    /// The same error with `detail` put before any it had.
    package func with(detail: String) -> SocketError {
        SocketError(copying: fields, address: address, bytesTransferred: bytesTransferred,
                    detail: self.detail.map { "\(detail): \($0)" } ?? detail)
    }

    /// The same error with an address filled in where it had none.
    package func at(_ address: SocketAddress?) -> SocketError {
        guard self.address == nil, let address else { return self }
        return SocketError(copying: fields, address: address, bytesTransferred: bytesTransferred, detail: detail)
    }

    /// The message for a person: the operation, the address, what happened and the limit
    /// or errno behind it, as `connect to 127.0.0.1:9 failed: Connection refused (ECONNREFUSED)`.
    public var description: String {
        var text = operation.name
        if let address {
            text += " \(operation.preposition) \(address)"
        } else if let target = fields.target {
            text += " \(operation.preposition) \(target)"
        }
        switch kind {
        case .timedOut:
            let passed = timeout == .zero ? "had already passed" : "passed"
            switch fields.cause {
            case .deadline?:
                text += " timed out: the deadline \(passed)"
            case .socketDeadline(let direction)?:
                text += " timed out: the socket's \(direction == .receive ? "receive" : "send") deadline \(passed)"
            case .timeout?, nil:
                if let timeout, timeout > .zero {
                    text += " timed out after \(formatDuration(timeout))"
                } else {
                    text += " timed out: the deadline had already passed"
                }
            }
        case .closed:
            text += " failed: the socket was closed"
        case .cancelled:
            text += " was cancelled"
        case .endOfStream:
            text += " failed: the peer closed the connection early"
        default:
            if let errno {
                text += " failed: \(errno.description) (\(errno.symbolicName))"
            } else {
                text += " failed: \(kind)"
            }
        }
        if let bytesTransferred {
            text += " (\(bytesTransferred) byte\(bytesTransferred == 1 ? "" : "s") transferred)"
        }
        if let detail { text += ": \(detail)" }
        return text
    }

}

extension Errno {
    /// Lets `catch Errno.connectionRefused` match a ``SocketError`` whose ``SocketError/errno``
    /// it is (as well as a thrown `Errno` itself).
    public static func ~= (errno: Errno, error: any Error) -> Bool {
        if let error = error as? SocketError { return error.errno == errno }
        return (error as? Errno) == errno
    }
}

extension SocketError.Kind {
    /// Lets `catch SocketError.Kind.timedOut` match a ``SocketError`` by its kind.
    public static func ~= (kind: SocketError.Kind, error: any Error) -> Bool {
        (error as? SocketError)?.kind == kind
    }
}

extension SocketError.Kind {
    /// Classifies an errno.
    init(errno: Errno) {
        switch errno {
        case Errno.resourceTemporarilyUnavailable, Errno.wouldBlock, Errno.nowInProgress, Errno.alreadyInProcess:
            self = .wouldBlock
        case Errno.connectionRefused: self = .connectionRefused
        case Errno.connectionReset: self = .connectionReset
        case Errno.connectionAbort: self = .connectionAborted
        case Errno.brokenPipe: self = .brokenPipe
        case Errno.socketNotConnected: self = .notConnected
        case Errno.addressInUse: self = .addressInUse
        case Errno.addressNotAvailable: self = .addressNotAvailable
        case Errno.networkUnreachable, Errno.noRouteToHost, Errno.networkDown, Errno.hostIsDown: self = .unreachable
        case Errno.tooManyOpenFiles, Errno.tooManyOpenFilesInSystem: self = .tooManyOpenFiles
        case Errno.permissionDenied, Errno.notPermitted: self = .permissionDenied
        case Errno.badFileDescriptor: self = .closed
        case Errno.invalidArgument, Errno.addressFamilyNotSupported, Errno.protocolNotSupported,
             Errno.notSupported, Errno.notSupportedOnSocket, Errno.protocolWrongTypeForSocket,
             Errno.socketTypeNotSupported, Errno.protocolNotAvailable, Errno.fileNameTooLong,
             Errno.addressRequired, Errno.messageTooLong:
            self = .invalidArgument
        default: self = .system
        }
    }
}

/// `3s`, `250ms`, `1.5s`, `12µs`: the shortest exact-enough form for messages.
func formatDuration(_ d: Duration) -> String {
    let (s, atto) = d.components
    let ns = s * 1_000_000_000 + atto / 1_000_000_000
    func trim(_ value: Double) -> String { String(format3: value) }
    if ns % 1_000_000_000 == 0 { return "\(ns / 1_000_000_000)s" }
    if ns >= 1_000_000_000 { return "\(trim(Double(ns) / 1e9))s" }
    if ns % 1_000_000 == 0 { return "\(ns / 1_000_000)ms" }
    if ns >= 1_000_000 { return "\(trim(Double(ns) / 1e6))ms" }
    if ns % 1_000 == 0 { return "\(ns / 1_000)µs" }
    if ns >= 1_000 { return "\(trim(Double(ns) / 1e3))µs" }
    return "\(ns)ns"
}

extension String {
    /// Up to three decimals, trailing zeros removed: 1.5, 0.125, 2.333.
    init(format3 value: Double) {
        let scaled = (value * 1000).rounded()
        let whole = Int(scaled / 1000)
        var frac = Int(scaled) % 1000
        if frac == 0 { self = "\(whole)"; return }
        var digits = 3
        while frac % 10 == 0 { frac /= 10; digits -= 1 }
        let padded = String(repeating: "0", count: digits - String(frac).count) + String(frac)
        self = "\(whole).\(padded)"
    }
}
