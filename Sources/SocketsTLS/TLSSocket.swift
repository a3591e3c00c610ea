#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSocketsTLS
import Sockets

// A TLS session over a Socket, with the socket's own waits: the engine (OpenSSL) reads and
// writes two memory buffers, and every wait for the network is the Socket's receive or
// sendAll — so the time rules, close() from another thread, cancellation and the errors are
// the plain socket's. What TLS adds:
// - the handshake has ONE limit, fixed when it starts (the earlier of the socket's timeout
//   from then and the deadline given), passed to every receive and send it makes: a peer
//   that drips its handshake a byte at a time cannot stretch it (per-wait timeouts would
//   never fire);
// - the engine is touched under a lock (OpenSSL allows one thread at a time per session),
//   never while waiting;
// - ciphertext leaves in the order the engine made it: only the holder of the send turn
//   (Turn.swift) takes it out of the engine and sends it, and what a timed-out send could not
//   deliver stays queued, to go first with the next send: the session stays usable (Go's
//   breaks). Receivers take the receive turn, so ciphertext is fed in the order it was read.
//   Each turn is waited for within the call's own limit.
//
// The blocking calls are here; their async forms, in TLSSocket+Async.swift, are the same
// loops with `await`.

/// A TLS connection over a ``/Sockets/Socket``: the same calls, time rules and errors, blocking and
/// async.
///
/// ```swift
/// let tls = try TLSSocket.connect(to: "example.org:443", configuration: try .client(),
///                                 timeout: try .after(.seconds(5)))   // lookup + connect + handshake: 5 s in all
/// try tls.sendAll(Array("GET / HTTP/1.1\r\nHost: example.org\r\n\r\n".utf8))
/// let reply = try tls.receive(upTo: 65_536)
/// ```
///
/// A server handshakes on each accepted connection, on that connection's clock — never
/// inside `accept`, so one silent client cannot stall the listener:
/// ```swift
/// let (connection, _) = try listener.accept()
/// let tls = try TLSSocket(serving: connection, configuration: serverConfiguration)
/// try tls.handshake(deadline: .now + .seconds(5))
/// ```
///
/// Thread safety: any number of threads and tasks may call it at once; receives run one at a
/// time, and so do sends (each waits its turn within its own limit), a receive and a send
/// side by side. ``close()`` from any thread ends every wait, the handshake's included, with
/// ``/Sockets/SocketError/Kind-swift.struct/closed``; cancelling a task ends its async call with
/// ``/Sockets/SocketError/Kind-swift.struct/cancelled``.
public final class TLSSocket: @unchecked Sendable {
    // @unchecked Sendable is safe: the engine is reached only under `engine`'s lock; `queued`
    // only by the holder of the `sending` turn (Turn hands over through its lock, which
    // orders the accesses); the other stored properties never change.

    /// The connection underneath. Its ``/Sockets/Socket/timeout`` applies to TLS calls as to its own;
    /// do not send or receive on it directly once TLS has begun.
    public let socket: Socket
    /// The name the server's certificate must carry (client side), also sent as SNI.
    public let serverName: String?

    let configuration: TLSConfiguration
    /// Where this connection's session is kept for resumption (clients that resume only).
    let sessionKey: String?
    let engine: Locked<Engine>
    let sending = Turn()
    let receiving = Turn()
    /// Ciphertext made but not yet sent (a timed-out send's rest): sent first by the next
    /// send. Only while holding `sending`.
    var queued: [UInt8] = []
    /// How much ciphertext one receive from the socket may take: sixteen whole records, which
    /// the next reads then find in the engine. Measured (T3, 1 GiB): the receiver's CPU per GiB
    /// 0.60-0.70 s with this against 0.73-0.79 s with 64 KiB, fewer recv calls and window
    /// updates. A call's own buffer (uninitialised, so only what recv writes is touched),
    /// never kept: an idle connection holds none.
    static let cipherSpace = 262_144
    /// The plaintext handed to the engine at once by sendAll: 8 records. A larger send is
    /// encrypted and sent in pieces of this size, so its ciphertext never sits whole in memory.
    static let sendPiece = 131_072

    final class Engine: @unchecked Sendable {
        // @unchecked Sendable is safe: reached only under TLSSocket.engine's lock.
        let ssl: OpaquePointer
        var handshakeDone = false
        var sentClose = false
        init(_ ssl: OpaquePointer) { self.ssl = ssl }
        deinit { cstls_free(UnsafeMutableRawPointer(ssl)) }
        var raw: UnsafeMutableRawPointer { UnsafeMutableRawPointer(ssl) }
    }

    private init(socket: Socket, configuration: TLSConfiguration, server: Bool, serverName: String?) throws(SocketError) {
        guard let ssl = cstls_new(UnsafeMutableRawPointer(configuration.context), server ? 1 : 0, serverName,
                                  configuration.verifiesHost ? 1 : 0) else {
            throw SocketError(.system, .handshake, detail: "SSL_new failed: \(OpenSSL.takeError()?.text ?? "?")")
        }
        self.socket = socket
        self.serverName = serverName
        self.configuration = configuration
        // Sessions are kept by server name, else by address (as Go's ClientSessionCache):
        // no getpeername(2) per connection for the usual case.
        if !server, configuration.resumesSessions,
           let key = serverName.flatMap({ $0.isEmpty ? nil : $0 }) ?? (try? socket.peerAddress).map({ "\($0)" }) {
            sessionKey = key
            if let session = configuration.sessions.take(key) { cstls_set_session(ssl, session.pointer) }
        } else {
            sessionKey = nil
        }
        engine = Locked(Engine(OpaquePointer(ssl)))
    }

    /// The client side of TLS over a connected socket (a fresh connection, or STARTTLS on
    /// one that has spoken plain text). Call ``handshake(deadline:)-8glr7`` next.
    ///
    /// If the configuration resumes sessions and an earlier connection to the same server
    /// name (or, without one, address) left one, the handshake offers it (``isResumed`` tells whether the
    /// server took it).
    ///
    /// - Parameters:
    ///   - socket: a connected stream socket; the TLS socket owns it from now on.
    ///   - configuration: a client configuration.
    ///   - serverName: the name the server's certificate must carry, also sent as SNI.
    ///     Required unless the configuration trusts `.anything`.
    /// - Throws: ``/Sockets/SocketError`` — `.invalidArgument` for a server configuration or a missing name.
    public convenience init(client socket: Socket, configuration: TLSConfiguration, serverName: String?) throws(SocketError) {
        guard !configuration.isServer else {
            throw SocketError(.invalidArgument, .handshake, detail: "a server configuration on the client side")
        }
        if configuration.verifiesHost && (serverName ?? "").isEmpty {
            throw SocketError(.invalidArgument, .handshake,
                              detail: "serverName is required: the name the server's certificate must carry")
        }
        try self.init(socket: socket, configuration: configuration, server: false, serverName: serverName)
    }

    /// The server side of TLS over an accepted connection. Call ``handshake(deadline:)-8glr7``
    /// next — on this connection's clock, never inside the listener's `accept`.
    ///
    /// - Throws: ``/Sockets/SocketError`` — `.invalidArgument` for a client configuration.
    public convenience init(serving socket: Socket, configuration: TLSConfiguration) throws(SocketError) {
        guard configuration.isServer else {
            throw SocketError(.invalidArgument, .handshake, detail: "a client configuration on the server side")
        }
        try self.init(socket: socket, configuration: configuration, server: true, serverName: nil)
    }

    /// Resolves `hostPort`, connects (Happy Eyeballs, ``/Sockets/Socket/connect(to:timeout:deadline:attemptDelay:)-7qins``)
    /// and handshakes, all within **one** limit: `timeout` (which becomes the socket's) or
    /// `deadline`, whichever comes first.
    ///
    /// - Parameters:
    ///   - hostPort: `HOST:PORT`, as for ``/Sockets/Socket/connect(to:timeout:deadline:attemptDelay:)-7qins``.
    ///   - configuration: a client configuration.
    ///   - serverName: the name to verify and send as SNI; defaults to the host in
    ///     `hostPort` (give it when connecting to a numeric address).
    ///   - timeout: bounds the whole call — lookup, connect and handshake — and becomes the
    ///     socket's ``/Sockets/Socket/timeout``; the process default if not given.
    ///   - deadline: an absolute limit for the whole call; the earlier of the two wins.
    /// - Throws: ``/Sockets/SocketError`` — the connect's errors, then the handshake's (see
    ///   ``handshake(deadline:)-8glr7``); the socket is closed.
    public static func connect(
        to hostPort: String, configuration: TLSConfiguration, serverName: String? = nil,
        timeout: SocketTimeout = Socket.defaultTimeout, deadline: ContinuousClock.Instant? = nil
    ) throws(SocketError) -> TLSSocket {
        let start = ContinuousClock.now
        var name = serverName
        if name == nil { name = try HostPort.split(hostPort).host }
        let overall = timeout.end(from: start, deadline: deadline)
        let socket = try Socket.connect(to: hostPort, timeout: timeout, deadline: overall)
        do throws(SocketError) {
            let tls = try TLSSocket(client: socket, configuration: configuration, serverName: name)
            try tls.handshake(Limit(start: start, timeout: timeout, deadline: deadline))
            return tls
        } catch {
            socket.close()
            throw error
        }
    }

    // MARK: the handshake

    /// Performs the TLS handshake, within **one** limit for all of it: the socket's
    /// ``/Sockets/Socket/timeout`` from now, or `deadline`, whichever is earlier (a peer that sends
    /// its part a byte at a time cannot stretch it past that, however short each wait).
    ///
    /// - Throws: ``/Sockets/SocketError`` with operation `handshake`: `.timedOut`;
    ///   `.certificateRejected` (the detail says why: `certificate has expired`,
    ///   `Hostname mismatch`, `unable to get local issuer certificate`, ...); `.tlsAlert`
    ///   (the peer refused: `handshake failure`, `certificate required`, ...);
    ///   `.tlsProtocol` (`the peer is not speaking TLS`, ...); `.endOfStream` (the peer
    ///   closed during the handshake); `.closed`; `.connectionReset`; `.tlsUnavailable`.
    public func handshake(deadline: ContinuousClock.Instant? = nil) throws(SocketError) {
        try handshake(Limit(start: .now, timeout: socket.timeout, deadline: deadline))
    }

    private func handshake(_ limit: Limit) throws(SocketError) {
        try checkBlocking(.handshake)
        do throws(SocketError) {
            try take(receiving, .handshake, limit)
            defer { receiving.release() }
            var cipher: [UInt8] = []
            while true {
                let (code, outgoing) = engine.withLock { e in (cstls_handshake(e.raw), Self.hasOutgoing(e)) }
                if outgoing { try flush(limit) }
                switch try handshakeStep(code) {
                case .done: return
                case .again: continue
                case .needInput:
                    if cipher.isEmpty { cipher = Self.cipherBuffer() }
                    let n = try socket.receive(into: &cipher, deadline: limit.end)
                    try feedHandshake(cipher, n)
                }
            }
        } catch {
            throw limit.named(error, .handshake, address: peer)
        }
    }

    // MARK: records

    /// Receives up to `maxCount` bytes of application data; an empty array means the peer
    /// ended the session (`close_notify`, or the connection closed without it, which is
    /// treated the same, as Python's default does). Waits as the socket's ``/Sockets/Socket/receive(upTo:deadline:)-81qhn``:
    /// one limit for the call.
    ///
    /// - Throws: ``/Sockets/SocketError`` — as a socket's receive, and `.tlsAlert` (in TLS 1.3 a
    ///   server that required a client certificate says so here, on the first read, with
    ///   `certificate required`), `.tlsProtocol`; `.invalidArgument` before the handshake.
    public func receive(upTo maxCount: Int, deadline: ContinuousClock.Instant? = nil) throws(SocketError) -> [UInt8] {
        guard maxCount > 0 else { return [] }
        var plain = Self.uninitialized(maxCount)
        let count = try receive(Limit(start: .now, timeout: socket.timeout, deadline: deadline)) {
            plain.withUnsafeMutableBytes { read(into: $0) }
        }
        plain.removeLast(maxCount - count)
        return plain
    }

    /// Receives up to `buffer.count` bytes of application data into `buffer`; 0 means the
    /// peer ended the session. The rules and errors of ``receive(upTo:deadline:)-v3n5``. With it
    /// a ``/Sockets/BufferedReader`` reads lines from a TLS connection.
    public func receive(into buffer: UnsafeMutableRawBufferPointer, deadline: ContinuousClock.Instant?) throws(SocketError) -> Int {
        guard buffer.count > 0 else { return 0 }
        return try receive(Limit(start: .now, timeout: socket.timeout, deadline: deadline)) { read(into: buffer) }
    }

    /// The loop of both receives: read what the engine has, else receive ciphertext and
    /// feed it; the count read (0: the end).
    private func receive(_ limit: Limit, _ read: () -> (Result<ReadStep, SocketError>, outgoing: Bool)) throws(SocketError) -> Int {
        do throws(SocketError) {
            try checkReady(.receive)
            try take(receiving, .receive, limit)
            defer { receiving.release() }
            var cipher: [UInt8] = []
            while true {
                let (step, outgoing) = read()
                guard case .success(.needInput) = step else {
                    // Plaintext (or the end, or an error) is in hand: never wait or fail for a send.
                    if outgoing { flushWithoutWaiting() }
                    switch try step.get() {
                    case .data(let count): return count
                    case .end, .needInput: return 0
                    }
                }
                if outgoing { try flush(limit) }  // our reply (post-handshake) may be what the peer waits for
                if cipher.isEmpty { cipher = Self.cipherBuffer() }
                let n = try socket.receive(into: &cipher, deadline: limit.end)
                feed(cipher, n)
            }
        } catch {
            throw limit.named(error, .receive, address: peer)
        }
    }

    /// Sends all of `bytes` as application data, within one limit for the call (the
    /// socket's ``/Sockets/Socket/sendAll(_:deadline:)-4c7go`` rules).
    ///
    /// If the time runs out, TLS has taken the first `bytesTransferred` bytes (of the error;
    /// nil if the call never had its turn behind another send): what it made of them and
    /// could not send stays queued and goes first with the next send, so the session stays
    /// usable (Go's breaks) and nothing is lost as long as you send again (``close()`` sends
    /// what it can without waiting and drops the rest). Send the rest of `bytes` from there.
    ///
    /// - Throws: ``/Sockets/SocketError`` — as a socket's sendAll; `.invalidArgument` before the
    ///   handshake, `.brokenPipe` after ``shutdown(_:deadline:)-3r3nz``.
    public func sendAll(_ bytes: some Collection<UInt8>, deadline: ContinuousClock.Instant? = nil) throws(SocketError) {
        let plain = Array(bytes)
        guard !plain.isEmpty else { return }
        let limit = Limit(start: .now, timeout: socket.timeout, deadline: deadline)
        var taken = 0
        do throws(SocketError) {
            try checkReady(.sendAll)
            try take(sending, .sendAll, limit)  // for the whole call: its pieces go together
            defer { sending.release() }
            while taken < plain.count {
                taken = try encrypt(plain, from: taken)
                try sendQueued(limit)
            }
        } catch {
            throw sendError(limit.named(error, .sendAll, address: peer), taken: taken)
        }
    }

    /// Ends this side's sending: `close_notify` (the peer reads the end of the stream) sent
    /// within the call's limit, then the socket's ``/Sockets/Socket/shutdown(_:)``. Receiving goes on
    /// for `.write`: the TLS half-close of TLS 1.3 (and of most TLS 1.2 peers).
    ///
    /// - Throws: ``/Sockets/SocketError`` — as ``sendAll(_:deadline:)-3v4qe`` for the `close_notify`, then as
    ///   the socket's `shutdown`.
    public func shutdown(_ direction: Socket.ShutdownDirection, deadline: ContinuousClock.Instant? = nil) throws(SocketError) {
        if direction != .read {
            let limit = Limit(start: .now, timeout: socket.timeout, deadline: deadline)
            do throws(SocketError) {
                try checkReady(.shutdown)
                // In turn: a send under way finishes first, and a timed-out shutdown's
                // close_notify goes with the next one.
                try take(sending, .shutdown, limit)
                defer { sending.release() }
                try closeNotify()
                try sendQueued(limit)
            } catch {
                throw limit.named(error, .shutdown, address: peer)
            }
        }
        try socket.shutdown(direction)
    }

    /// Ends the session: a `close_notify` alert if it can go without waiting, then the
    /// socket's ``/Sockets/Socket/close()`` (after reading away, without waiting, what has arrived
    /// unread, so that the close is a FIN and not a reset that could cost the peer the last
    /// data sent). Idempotent, never blocks, from any thread.
    public func close() {
        if !socket.isClosed {
            // From here on nothing waits: one send and reads with MSG_DONTWAIT, never the
            // socket's timeout (changing it would reach other callers' next waits).
            // close_notify (after anything queued) only if no send is under way: never wait
            // for one, close() is what ends it.
            if engine.withLock({ $0.handshakeDone }) {
                try? closeNotify()  // once: a shutdown(.write) may have made it already
                flushWithoutWaiting()
            }
            // Read away what has come and was never read (TLS 1.3 session tickets, most
            // often): a close(2) with unread data sends a reset, and the peer may then lose
            // what we sent last. Not while a receive is under way: close() ends it.
            if receiving.tryAcquire() {
                withUnsafeTemporaryAllocation(byteCount: 16_384, alignment: 16) { sink in
                    for _ in 0..<64 {  // until a read does not fill the sink: nothing more is there
                        let n = try? socket.withUnsafeDescriptor { fd in recv(fd, sink.baseAddress, sink.count, CInt(MSG_DONTWAIT)) }
                        guard let n, n == sink.count else { break }
                    }
                }
                receiving.release()
            }
        }
        socket.close()
    }

    /// The protocol version agreed (`TLSv1.3`), or nil before the handshake.
    public var protocolVersion: String? {
        engine.withLock { e in e.handshakeDone ? String(cString: cstls_version(e.raw)) : nil }
    }

    /// The ALPN protocol agreed, if any.
    public var negotiatedProtocol: String? {
        engine.withLock { e -> String? in
            var length: UInt32 = 0
            guard let data = cstls_alpn_selected(e.raw, &length), length > 0 else { return nil }
            return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
        }
    }

    /// The address of the peer (the socket's ``/Sockets/Socket/peerAddress``).
    ///
    /// - Throws: ``/Sockets/SocketError`` — `.notConnected`, `.closed`.
    public var peerAddress: SocketAddress {
        get throws(SocketError) { try socket.peerAddress }
    }

    /// Whether the handshake resumed an earlier session (an abbreviated handshake: no
    /// certificate sent or verified again). False before the handshake.
    public var isResumed: Bool {
        engine.withLock { e in e.handshakeDone && cstls_resumed(e.raw) == 1 }
    }
}

extension TLSSocket: ByteReceiver {}

// MARK: the steps both forms share

extension TLSSocket {
    /// The limit of one call: the socket's timeout from its start, or its deadline, whichever
    /// first; its timeouts are reported with the limit the user gave.
    struct Limit {
        let start: ContinuousClock.Instant
        let timeout: SocketTimeout
        let deadline: ContinuousClock.Instant?
        let end: ContinuousClock.Instant?

        init(start: ContinuousClock.Instant, timeout: SocketTimeout, deadline: ContinuousClock.Instant?) {
            self.start = start
            self.timeout = timeout
            self.deadline = deadline
            end = timeout.end(from: start, deadline: deadline)
        }

        /// A wait's error as the call's: `handshake with HOST timed out after 5s` (the limit the
        /// user gave, not the instant it became), the operation renamed.
        func named(_ error: SocketError, _ operation: SocketError.Operation, address: SocketAddress?) -> SocketError {
            let address = error.address ?? address
            if error.kind == .timedOut {
                if case .socketDeadline? = error.timeoutCause { return error.at(address) }  // said as is
                let (allowed, cause) = timeout.limit(from: start, deadline: deadline)
                return SocketError(timedOut: operation, after: allowed, cause, address: address)
            }
            guard error.operation != operation else { return error.at(address) }
            // No count: the bytes a socket call moved are ciphertext, not the caller's.
            return SocketError(error.kind, operation, address: address, errno: error.errno, detail: error.detail)
        }

        /// The error of a turn not granted.
        func turnError(_ outcome: Turn.Outcome, _ operation: SocketError.Operation, address: SocketAddress?) -> SocketError {
            if outcome == .cancelled { return SocketError(.cancelled, operation, address: address) }
            let (allowed, cause) = timeout.limit(from: start, deadline: deadline)
            return SocketError(timedOut: operation, after: allowed, cause, address: address)
        }
    }

    enum HandshakeStep { case done, again, needInput }
    enum ReadStep { case data(Int), end, needInput }

    var peer: SocketAddress? { try? socket.peerAddress }

    func checkBlocking(_ operation: SocketError.Operation) throws(SocketError) {
        if socket.timeout == .nonBlocking {
            throw SocketError(.invalidArgument, operation, detail: "TLS needs a blocking or timed socket")
        }
    }

    /// Record calls need a finished handshake and a socket that may wait.
    func checkReady(_ operation: SocketError.Operation) throws(SocketError) {
        try checkBlocking(operation)
        let (done, sentClose) = engine.withLock { e in (e.handshakeDone, e.sentClose) }
        if !done {
            throw SocketError(.invalidArgument, operation, detail: "the TLS handshake has not been done: call handshake() first")
        }
        if sentClose && operation != .receive && operation != .shutdown {
            throw SocketError(.brokenPipe, operation, address: peer, detail: "sending was shut down (close_notify sent)")
        }
    }

    /// Takes a turn within the call's limit (blocking).
    func take(_ turn: Turn, _ operation: SocketError.Operation, _ limit: Limit) throws(SocketError) {
        let outcome = turn.acquire(until: limit.end)
        if outcome != .granted { throw limit.turnError(outcome, operation, address: peer) }
    }

    /// What a handshake answer means; the engine failed if it throws.
    func handshakeStep(_ code: Int32) throws(SocketError) -> HandshakeStep {
        switch Int(code) {
        case CSTLS_OK:
            engine.withLock { e in
                e.handshakeDone = true
                keepSession(e)  // TLS 1.2 has it now
            }
            return .done
        case CSTLS_WANT_READ: return .needInput
        case CSTLS_WANT_WRITE: return .again
        default: throw engineFailure(code, .handshake)
        }
    }

    func feedHandshake(_ cipher: [UInt8], _ n: Int) throws(SocketError) {
        if n == 0 {
            throw SocketError(.endOfStream, .handshake, address: peer,
                              detail: "the peer closed the connection during the handshake")
        }
        feed(cipher, n)
    }

    /// Reads plaintext from the engine: what it means, and whether it made ciphertext to send.
    func read(into plain: UnsafeMutableRawBufferPointer) -> (Result<ReadStep, SocketError>, outgoing: Bool) {
        let (code, count, outgoing) = engine.withLock { e in
            var count: Int32 = 0
            let before = cstls_outgoing(e.raw)  // a concurrent send's ciphertext is its own business
            let code = cstls_read(e.raw, plain.baseAddress, Int32(clamping: plain.count), &count)
            keepSession(e)  // TLS 1.3 tickets come after the handshake
            return (code, Int(count), cstls_outgoing(e.raw) > before)
        }
        switch Int(code) {
        case CSTLS_OK: return (.success(.data(count)), outgoing)
        case CSTLS_ZERO_RETURN: return (.success(.end), outgoing)
        case CSTLS_WANT_READ, CSTLS_WANT_WRITE: return (.success(.needInput), outgoing)
        default:  // (an end without close_notify is CSTLS_ZERO_RETURN: SSL_OP_IGNORE_UNEXPECTED_EOF)
            return (.failure(engineFailure(code, .receive)), outgoing)
        }
    }

    /// A buffer for ciphertext from the socket, not zeroed first (recv writes what it reads).
    static func cipherBuffer() -> [UInt8] { uninitialized(cipherSpace) }

    /// `count` bytes for a call to write into: not zeroed, as `Socket.receive(upTo:)` does.
    static func uninitialized(_ count: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
    }

    /// Feeds the engine the first `n` bytes of `cipher`, just received (0: the end of the stream).
    func feed(_ cipher: [UInt8], _ n: Int) {
        engine.withLock { e in
            if n == 0 {
                cstls_feed_eof(e.raw)
            } else {
                _ = cipher.withUnsafeBytes { cstls_feed(e.raw, $0.baseAddress, Int32(n)) }
            }
        }
    }

    /// Hands the engine the next piece of `plain` from `offset`; the offset after it.
    func encrypt(_ plain: [UInt8], from offset: Int) throws(SocketError) -> Int {
        let end = min(plain.count, offset + Self.sendPiece)
        let code = engine.withLock { e in
            var count: Int32 = 0
            return plain.withUnsafeBytes { all in
                cstls_write(e.raw, all.baseAddress! + offset, Int32(end - offset), &count)
            }
        }
        if Int(code) != CSTLS_OK { throw engineFailure(code, .sendAll) }
        return end
    }

    /// A send's error, with how much of the caller's data TLS took.
    func sendError(_ error: SocketError, taken: Int) -> SocketError {
        guard taken > 0 else { return error }
        let said = "TLS took \(taken == 1 ? "1 byte" : "\(taken) bytes"); what it made of them and could not send yet goes first with the next send"
        return error.withCount(taken, detail: error.detail.map { "\(said): \($0)" } ?? said)
    }

    /// `close_notify` into the engine, once.
    func closeNotify() throws(SocketError) {
        try engine.withLock { e throws(SocketError) in
            guard !e.sentClose else { return }
            e.sentClose = true
            let code = cstls_shutdown(e.raw)
            if Int(code) != CSTLS_OK { throw SocketError(.tlsProtocol, .shutdown, detail: "SSL_shutdown failed (\(code))") }
        }
    }

    /// Sends what the engine has made, after anything queued, in order, holding the send turn
    /// (blocking); a timed-out send keeps the rest queued.
    func flush(_ limit: Limit) throws(SocketError) {
        try take(sending, .send, limit)
        defer { sending.release() }
        try sendQueued(limit)
    }

    /// flush's body, the send turn held.
    func sendQueued(_ limit: Limit) throws(SocketError) {
        engine.withLock { e in Self.drain(e, into: &queued) }
        guard !queued.isEmpty else { return }
        do throws(SocketError) {
            try socket.sendAll(queued, deadline: limit.end)
            queued.removeAll(keepingCapacity: queued.capacity <= 32_768)  // a large send's room is not kept
        } catch {
            queued.removeFirst(min(error.bytesTransferred ?? 0, queued.count))
            throw error
        }
    }

    static func hasOutgoing(_ e: Engine) -> Bool { cstls_outgoing(e.raw) > 0 }

    /// If the send turn is free: what is queued and what the engine has made, sent with one
    /// send that never waits; the rest stays queued (in order) for the next send. Never fails.
    func flushWithoutWaiting() {
        guard sending.tryAcquire() else { return }  // its holder, or the next send, sends it
        defer { sending.release() }
        engine.withLock { e in Self.drain(e, into: &queued) }
        guard !queued.isEmpty else { return }
        let n = (try? socket.withUnsafeDescriptor { fd in
            queued.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, CInt(MSG_DONTWAIT) | CInt(MSG_NOSIGNAL)) }
        }) ?? -1
        if n > 0 { queued.removeFirst(n) }  // what went never goes again
    }

    /// Appends the engine's ciphertext to `queue`.
    static func drain(_ e: Engine, into queue: inout [UInt8]) {
        let pending = Int(cstls_outgoing(e.raw))
        guard pending > 0 else { return }
        let old = queue.count
        queue.append(contentsOf: repeatElement(0, count: pending))
        let n = queue.withUnsafeMutableBytes { Int(cstls_take(e.raw, $0.baseAddress! + old, Int32(pending))) }
        queue.removeLast(pending - max(0, n))
    }

    /// Keeps the session the engine has just been given, for the next connection (clients
    /// that resume only). Under the engine lock.
    func keepSession(_ e: Engine) {
        guard let sessionKey, let session = cstls_take_session(e.raw) else { return }
        configuration.sessions.keep(TLSConfiguration.Session(session), for: sessionKey)
    }

    /// What a failed engine call means, in the library's vocabulary.
    func engineFailure(_ code: Int32, _ operation: SocketError.Operation) -> SocketError {
        let verify = engine.withLock { cstls_verify_result($0.raw) }
        let error = OpenSSL.takeError()
        // A client that trusts `.anything` has a verify result too, which it ignored.
        if verify != 0 && (configuration.verifiesHost || configuration.isServer) {
            let why = String(cString: cstls_verify_text(verify))
            return SocketError(.certificateRejected, operation, address: peer, detail: why)
        }
        guard let error else {
            if Int(code) == CSTLS_ZERO_RETURN {  // a write after the peer ended the session (close_notify or an alert another call read)
                return SocketError(.brokenPipe, operation, address: peer, detail: "the peer has ended the TLS session")
            }
            return SocketError(.tlsProtocol, operation, address: peer, detail: "TLS failed (SSL_get_error \(code))")
        }
        // OpenSSL reports an alert received as reason 1000 + its number.
        if (1000..<1256).contains(error.reason) {
            let name = TLSSocket.alertName(error.reason - 1000)
            return SocketError(.tlsAlert, operation, address: peer, detail: "the peer sent the alert '\(name)'")
        }
        switch error.reason {
        case 267, 156, 155, 198, 150:  // wrong version number, HTTP(S) request, packet length too long, record too long
            return SocketError(.tlsProtocol, operation, address: peer, detail: "the peer is not speaking TLS (\(error.text))")
        default:
            return SocketError(.tlsProtocol, operation, address: peer, detail: error.text)
        }
    }

    /// An alert's name: OpenSSL's, or for the alerts TLS 1.3 added, which OpenSSL 3.0 calls
    /// "unknown", RFC 8446's.
    static func alertName(_ alert: Int32) -> String {
        let tls13: [Int32: String] = [109: "missing extension", 110: "unsupported extension", 112: "unrecognized name",
                                      113: "bad certificate status response", 115: "unknown PSK identity",
                                      116: "certificate required", 120: "no application protocol"]
        if let name = tls13[alert] { return name }
        return String(cString: cstls_alert_text(alert))
    }
}
