#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSocketsTLS
import Sockets

// A TLS session over a Socket, with the socket's own waits: the engine (OpenSSL) reads and
// writes two memory buffers, and every wait for the network is the Socket's receive or
// sendAll — so the time rules, close() from another thread and the errors are the plain
// socket's. What TLS adds:
// - the handshake has ONE limit, fixed when it starts (the earlier of the socket's timeout
//   from then and the deadline given), passed to every receive and send it makes: a peer
//   that drips its handshake a byte at a time cannot stretch it (per-wait timeouts would
//   never fire);
// - the engine is touched under a lock (OpenSSL allows one thread at a time per session),
//   never while waiting; ciphertext leaves in the order the engine made it (senders hold
//   the send lock while they send), and what a timed-out send could not deliver stays
//   queued, to go first with the next send: the session stays usable (Go's breaks).

/// A TLS connection over a ``Socket``: the same calls, time rules and errors.
///
/// ```swift
/// let tls = try TLSSocket.connect(to: "example.org:443", configuration: .client(),
///                                 timeout: try .after(.seconds(5)))   // lookup + connect + handshake: 5 s in all
/// try tls.sendAll(Array("GET / HTTP/1.1\r\nHost: example.org\r\n\r\n".utf8))
/// let reply = try tls.receive(upTo: 65_536)
/// ```
///
/// A server handshakes on each accepted connection, on that connection's clock — never
/// inside `accept`, so one silent client cannot stall the listener:
/// ```swift
/// let (connection, _) = try listener.accept()
/// let tls = TLSSocket(serving: connection, configuration: serverConfiguration)
/// try tls.handshake(deadline: .now + .seconds(5))
/// ```
///
/// Thread safety: one thread may receive while another sends; ``close()`` from any thread
/// ends every wait, the handshake's included, with ``SocketError/Kind/closed``.
public final class TLSSocket: @unchecked Sendable {
    // @unchecked Sendable is safe: the engine is reached only under `engine`'s lock, and
    // `queued` only while `sendLock` is held; the other stored properties never change.

    /// The connection underneath. Its ``Socket/timeout`` applies to TLS calls as to its own;
    /// do not send or receive on it directly once TLS has begun.
    public let socket: Socket
    /// The name the server's certificate must carry (client side), also sent as SNI.
    public let serverName: String?

    private let engine: Locked<Engine>
    /// Held by a sender for the whole of its send, so ciphertext leaves in the order it was
    /// made (the library's `Locked` may not be held across a wait).
    private let sendLock = SendLock()
    /// Ciphertext made but not yet sent (a timed-out send's rest): sent first by the next
    /// send. Only while `sendLock` is held.
    private var queued: [UInt8] = []

    private final class Engine: @unchecked Sendable {
        // @unchecked Sendable is safe: reached only under TLSSocket.engine's lock.
        let ssl: OpaquePointer
        var handshakeDone = false
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
        engine = Locked(Engine(OpaquePointer(ssl)))
    }

    /// The client side of TLS over a connected socket (a fresh connection, or STARTTLS on
    /// one that has spoken plain text). Call ``handshake(deadline:)`` next.
    ///
    /// - Parameter serverName: the name the server's certificate must carry, also sent as
    ///   SNI. Required unless the configuration trusts `.anything`.
    /// - Throws: ``SocketError`` — `.invalidArgument` for a server configuration or a missing name.
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

    /// The server side of TLS over an accepted connection. Call ``handshake(deadline:)``
    /// next — on this connection's clock, never inside the listener's `accept`.
    ///
    /// - Throws: ``SocketError`` — `.invalidArgument` for a client configuration.
    public convenience init(serving socket: Socket, configuration: TLSConfiguration) throws(SocketError) {
        guard configuration.isServer else {
            throw SocketError(.invalidArgument, .handshake, detail: "a client configuration on the server side")
        }
        try self.init(socket: socket, configuration: configuration, server: true, serverName: nil)
    }

    /// Resolves `hostPort`, connects (Happy Eyeballs, ``Socket/connect(to:timeout:deadline:attemptDelay:)-(String,_,_,_)``)
    /// and handshakes, all within **one** limit: `timeout` (which becomes the socket's) or
    /// `deadline`, whichever comes first.
    ///
    /// - Parameter serverName: the name to verify and send as SNI; defaults to the host in
    ///   `hostPort` (give it when connecting to a numeric address).
    /// - Throws: ``SocketError`` — the connect's errors, then the handshake's (see
    ///   ``handshake(deadline:)``); the socket is closed.
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
            try tls.handshake(deadline: overall, start: start, userTimeout: timeout, userDeadline: deadline)
            return tls
        } catch {
            socket.close()
            throw error
        }
    }

    // MARK: the handshake

    /// Performs the TLS handshake, within **one** limit for all of it: the socket's
    /// ``Socket/timeout`` from now, or `deadline`, whichever is earlier (a peer that sends
    /// its part a byte at a time cannot stretch it past that, however short each wait).
    ///
    /// - Throws: ``SocketError`` with operation `handshake`: `.timedOut`;
    ///   `.certificateRejected` (the detail says why: `certificate has expired`,
    ///   `Hostname mismatch`, `unable to get local issuer certificate`, ...); `.tlsAlert`
    ///   (the peer refused: `handshake failure`, `certificate required`, ...);
    ///   `.tlsProtocol` (`the peer is not speaking TLS`, ...); `.endOfStream` (the peer
    ///   closed during the handshake); `.closed`; `.connectionReset`; `.tlsUnavailable`.
    public func handshake(deadline: ContinuousClock.Instant? = nil) throws(SocketError) {
        let start = ContinuousClock.now
        let timeout = socket.timeout
        let end = timeout.end(from: start, deadline: deadline)
        try handshake(deadline: end, start: start, userTimeout: timeout, userDeadline: deadline)
    }

    private func handshake(
        deadline end: ContinuousClock.Instant?, start: ContinuousClock.Instant, userTimeout: SocketTimeout,
        userDeadline: ContinuousClock.Instant?
    ) throws(SocketError) {
        if socket.timeout == .nonBlocking {
            throw SocketError(.invalidArgument, .handshake, detail: "TLS needs a blocking or timed socket")
        }
        var buffer = [UInt8](repeating: 0, count: 17_408)  // one TLS record and its overhead
        do throws(SocketError) {
            while true {
                let (code, outgoing) = engine.withLock { e in
                    (cstls_handshake(e.raw), Self.takeOutgoing(e))
                }
                if !outgoing.isEmpty { try send(outgoing, deadline: end) }
                switch Int(code) {
                case CSTLS_OK:
                    engine.withLock { $0.handshakeDone = true }
                    return
                case CSTLS_WANT_READ:
                    let n = try socket.receive(into: &buffer, deadline: end)
                    if n == 0 {
                        throw SocketError(.endOfStream, .handshake, address: peer,
                                          detail: "the peer closed the connection during the handshake")
                    }
                    engine.withLock { e in _ = buffer.withUnsafeBytes { cstls_feed(e.raw, $0.baseAddress, Int32(n)) } }
                case CSTLS_WANT_WRITE:
                    continue
                default:
                    throw engineFailure(code, .handshake)
                }
            }
        } catch {
            throw asHandshake(error, start: start, userTimeout: userTimeout, userDeadline: userDeadline)
        }
    }

    // MARK: records

    /// Receives up to `maxCount` bytes of application data; an empty array means the peer
    /// ended the session (`close_notify`, or the connection closed without it, which is
    /// treated the same, as Python's default does). Waits as the socket's ``Socket/receive(upTo:deadline:)``:
    /// one limit for the call.
    ///
    /// - Throws: ``SocketError`` — as a socket's receive, and `.tlsAlert` (in TLS 1.3 a
    ///   server that required a client certificate says so here, on the first read, with
    ///   `certificate required`), `.tlsProtocol`.
    public func receive(upTo maxCount: Int, deadline: ContinuousClock.Instant? = nil) throws(SocketError) -> [UInt8] {
        guard maxCount > 0 else { return [] }
        let end = callEnd(deadline)
        // Neither buffer is zeroed first: the engine and recv write what is read.
        var cipher: [UInt8] = []
        while true {
            var code: Int32 = 0
            var outgoing: [UInt8] = []
            let plain = [UInt8](unsafeUninitializedCapacity: maxCount) { storage, count in
                engine.withLock { e in
                    var n: Int32 = 0
                    code = cstls_read(e.raw, storage.baseAddress, Int32(maxCount), &n)
                    count = code == CSTLS_OK ? Int(n) : 0
                    outgoing = Self.takeOutgoing(e)
                }
            }
            if !outgoing.isEmpty { try send(outgoing, deadline: end) }  // a post-handshake reply (key update)
            switch Int(code) {
            case CSTLS_OK:
                return plain
            case CSTLS_ZERO_RETURN:
                return []
            case CSTLS_WANT_READ:
                // Up to four full records at once: the next calls find them in the engine.
                if cipher.isEmpty { cipher = [UInt8](unsafeUninitializedCapacity: 65_536) { $1 = $0.count } }
                let n = try socket.receive(into: &cipher, deadline: end)
                engine.withLock { e in
                    if n == 0 {
                        cstls_feed_eof(e.raw)
                    } else {
                        _ = cipher.withUnsafeBytes { cstls_feed(e.raw, $0.baseAddress, Int32(n)) }
                    }
                }
                if n == 0 { return [] }
            case CSTLS_WANT_WRITE:
                continue
            default:
                let failure = engineFailure(code, .receive)
                if failure.kind == .tlsProtocol && failure.detail?.contains("unexpected eof") == true { return [] }
                throw failure
            }
        }
    }

    /// Sends all of `bytes` as application data, within one limit for the call (the
    /// socket's ``Socket/sendAll(_:deadline:)`` rules).
    ///
    /// If the time runs out, TLS has taken all of `bytes`: what it made of them and could not
    /// send stays queued and goes first with the next send, so the session stays usable
    /// (Go's breaks) and nothing is lost as long as you send again (a ``close()`` drops it).
    ///
    /// - Throws: ``SocketError`` — as a socket's sendAll, without `bytesTransferred` (the
    ///   bytes sent are encrypted ones).
    public func sendAll(_ bytes: some Collection<UInt8>, deadline: ContinuousClock.Instant? = nil) throws(SocketError) {
        let plain = Array(bytes)
        guard !plain.isEmpty else { return }
        let end = callEnd(deadline)
        let (code, outgoing) = engine.withLock { e in
            var count: Int32 = 0
            let code = plain.withUnsafeBytes { cstls_write(e.raw, $0.baseAddress, Int32(plain.count), &count) }
            return (code, Self.takeOutgoing(e))
        }
        if Int(code) != CSTLS_OK { throw engineFailure(code, .sendAll) }
        do throws(SocketError) {
            try send(outgoing, deadline: end)
        } catch {
            throw error.kind == .closed ? error
                : error.withoutCount(detail: "TLS took all the data; what is not sent yet goes first with the next send")
        }
    }

    /// Ends the session: a `close_notify` alert if it can go without waiting, then the
    /// socket's ``Socket/close()`` (after reading away, without waiting, what has arrived
    /// unread, so that the close is a FIN and not a reset that could cost the peer the last
    /// data sent). Idempotent, never blocks, from any thread.
    public func close() {
        if !socket.isClosed {
            let outgoing = engine.withLock { e -> [UInt8] in
                guard e.handshakeDone else { return [] }
                _ = cstls_shutdown(e.raw)
                return Self.takeOutgoing(e)
            }
            socket.timeout = .nonBlocking  // from here on nothing waits
            // close_notify only if no send is under way (never wait for one: close() is
            // what ends it) and nothing is queued before it.
            if !outgoing.isEmpty, sendLock.tryLock() {
                if queued.isEmpty { _ = try? socket.send(outgoing) }
                sendLock.unlock()
            }
            // Read away what has come and was never read (TLS 1.3 session tickets, most
            // often): a close(2) with unread data sends a reset, and the peer may then lose
            // what we sent last. A read that does not fill the buffer has emptied the queue:
            // no further read to see EAGAIN (one system call less per connection).
            var sink = [UInt8](repeating: 0, count: 16_384)
            for _ in 0..<64 {
                guard let n = try? socket.receive(into: &sink), n == sink.count else { break }
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

    // MARK: helpers

    private var peer: SocketAddress? { try? socket.peerAddress }

    /// One limit for a call: the socket's timeout from now, or `deadline`, whichever first.
    private func callEnd(_ deadline: ContinuousClock.Instant?) -> ContinuousClock.Instant? {
        socket.timeout.end(from: .now, deadline: deadline)
    }

    /// Sends `bytes` after anything queued, in order; a timed-out send keeps the rest queued.
    private func send(_ bytes: [UInt8], deadline: ContinuousClock.Instant?) throws(SocketError) {
        sendLock.lock()
        defer { sendLock.unlock() }
        if queued.isEmpty {  // the usual case: sent as made, no copy into the queue
            do throws(SocketError) {
                return try socket.sendAll(bytes, deadline: deadline)
            } catch {
                queued = Array(bytes[min(error.bytesTransferred ?? 0, bytes.count)...])
                throw error
            }
        }
        queued += bytes
        do throws(SocketError) {
            try socket.sendAll(queued, deadline: deadline)
            queued.removeAll(keepingCapacity: true)
        } catch {
            queued.removeFirst(min(error.bytesTransferred ?? 0, queued.count))
            throw error
        }
    }

    private static func takeOutgoing(_ e: Engine) -> [UInt8] {
        let pending = Int(cstls_outgoing(e.raw))
        guard pending > 0 else { return [] }
        return [UInt8](unsafeUninitializedCapacity: pending) { $1 = max(0, Int(cstls_take(e.raw, $0.baseAddress, Int32(pending)))) }
    }

    /// What a failed engine call means, in the library's vocabulary.
    private func engineFailure(_ code: Int32, _ operation: SocketError.Operation) -> SocketError {
        let verify = engine.withLock { cstls_verify_result($0.raw) }
        let error = OpenSSL.takeError()
        if verify != 0 {
            let why = String(cString: cstls_verify_text(verify))
            return SocketError(.certificateRejected, operation, address: peer, detail: why)
        }
        guard let error else {
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
        case 294:
            return SocketError(.tlsProtocol, operation, address: peer, detail: "unexpected eof: \(error.text)")
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

    /// A wait's error as the handshake's: `handshake with HOST timed out after 5s` (the
    /// limit the user gave), the rest renamed.
    private func asHandshake(
        _ error: SocketError, start: ContinuousClock.Instant, userTimeout: SocketTimeout, userDeadline: ContinuousClock.Instant?
    ) -> SocketError {
        guard error.operation != .handshake else { return error }
        let address = error.address ?? peer
        if error.kind == .timedOut {
            let (allowed, cause) = userTimeout.limit(from: start, deadline: userDeadline)
            return SocketError(timedOut: .handshake, after: allowed, cause, address: address)
        }
        return SocketError(error.kind, .handshake, address: address, errno: error.errno, detail: error.detail)
    }
}

/// A mutex that may be held across a blocking send (`pthread_mutex_t`, which ThreadSanitizer
/// sees), with a try-lock for `close()`, which must never wait for a sender.
final class SendLock: @unchecked Sendable {
    // @unchecked Sendable is safe: the mutex is allocated once, never moves, and is only
    // used through pthread_mutex_* calls, which are thread-safe.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
    func tryLock() -> Bool { pthread_mutex_trylock(mutex) == 0 }
}
