import CSocketsTLS
import Sockets

// The engine is OpenSSL 3, bound at run time by the CSocketsTLS shim (`dlopen` of
// libssl.so.3): building needs no OpenSSL headers and adds no build time, and a machine
// without libssl3 gets `.tlsUnavailable` at the first TLS call, never a build or load failure.

/// OpenSSL, loaded once per process on first use.
enum OpenSSL {
    static let loaded: Result<Void, SocketError> = {
        var message = [CChar](repeating: 0, count: 256)
        if cstls_load(&message, message.count) == 0 { return .success(()) }
        let text = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return .failure(SocketError(.tlsUnavailable, .handshake,
                                    detail: "OpenSSL 3 could not be loaded (\(text)); install libssl3"))
    }()

    static func load() throws(SocketError) { try loaded.get() }

    /// The oldest queued OpenSSL error's text and reason code (the queue is then empty).
    static func takeError() -> (text: String, reason: Int32)? {
        var text = [CChar](repeating: 0, count: 256)
        var reason: Int32 = 0
        guard cstls_error(&text, text.count, &reason) != 0 else { return nil }
        return (String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self), reason)
    }
}

/// How TLS connections of one kind are made: trust, certificates, protocols. Make one per
/// kind of connection and share it: it is immutable and safe to use from any thread. A
/// client configuration also keeps the sessions its connections were given, so that the next
/// connection to the same server resumes one (an abbreviated handshake).
///
/// ```swift
/// let client = try TLSConfiguration.client()                       // the system's trust store
/// let server = try TLSConfiguration.server(certificateChain: "cert.pem", privateKey: "key.pem")
/// ```
public final class TLSConfiguration: @unchecked Sendable {
    // @unchecked Sendable is safe: the OpenSSL context (and `alpnList`) are set up by the
    // static factories before the configuration is returned, and never changed afterwards;
    // OpenSSL allows SSL_new on a configured SSL_CTX from any number of threads at once;
    // `sessions` is a lock-guarded store.
    let context: OpaquePointer
    /// A client's: SNI and certificate names are checked against the host connected to.
    let isServer: Bool
    let verifiesHost: Bool
    /// Whether clients keep and offer sessions (``client(trusting:certificateChain:privateKey:protocols:resumesSessions:)``).
    let resumesSessions: Bool
    /// Sessions for resumption, by server name (else address).
    let sessions = SessionStore()
    /// The ALPN list the context points to: freed after the context.
    private var alpnList: UnsafeMutableRawPointer?

    /// Whom a client trusts.
    public enum Trust: Sendable {
        /// The system's trust store (`/etc/ssl/certs`; `SSL_CERT_FILE` and `SSL_CERT_DIR`
        /// are honoured).
        case system
        /// Only the certificate authorities in this PEM file (a private CA, a test CA).
        case authorities(file: String)
        /// No verification at all: any certificate, any host. For tests against
        /// self-signed peers only; never for anything that matters.
        case anything
    }

    private init(server: Bool, verify: Int32, verifiesHost: Bool, resumesSessions: Bool = false) throws(SocketError) {
        try OpenSSL.load()
        guard let context = cstls_ctx_new(server ? 1 : 0, verify) else {
            throw SocketError(.system, .handshake, detail: "SSL_CTX_new failed: \(OpenSSL.takeError()?.text ?? "?")")
        }
        self.context = OpaquePointer(context)
        self.isServer = server
        self.verifiesHost = verifiesHost
        self.resumesSessions = resumesSessions
        if resumesSessions { cstls_ctx_resume(UnsafeMutableRawPointer(context)) }
    }

    deinit {
        cstls_ctx_free(UnsafeMutableRawPointer(context))
        if let alpnList { cstls_protocols_free(alpnList) }
    }

    /// A client configuration: TLS 1.2 or 1.3; the server's certificate verified against
    /// `trust`, and (unless `trust` is `.anything`) its name against the host connected to.
    ///
    /// - Parameters:
    ///   - trust: whom to trust: the system's store (the default), a PEM file of
    ///     authorities, or (for tests only) anything.
    ///   - certificateChain: a PEM file with this client's certificate and its chain, for a
    ///     server that asks for a client certificate (nil: none).
    ///   - privateKey: the PEM file with that certificate's private key.
    ///   - protocols: ALPN protocols to offer, most preferred first (`["h2", "http/1.1"]`).
    ///   - resumesSessions: keep the session each connection is given (by server name, or
    ///     address where there is none; for the newest 256 servers) and offer it, once, to the next connection to
    ///     the same server: a resumed handshake skips the certificate and costs about half.
    /// - Throws: ``/Sockets/SocketError`` — `.tlsUnavailable` without OpenSSL 3,
    ///   `.invalidArgument` for a file that cannot be read or used (the detail says which).
    public static func client(
        trusting trust: Trust = .system, certificateChain: String? = nil, privateKey: String? = nil,
        protocols: [String] = [], resumesSessions: Bool = true
    ) throws(SocketError) -> TLSConfiguration {
        let configuration = try TLSConfiguration(server: false, verify: trust == .anything ? 0 : 1,
                                                 verifiesHost: trust != .anything, resumesSessions: resumesSessions)
        switch trust {
        case .system:
            if cstls_ctx_default_trust(UnsafeMutableRawPointer(configuration.context)) != 1 {
                throw failure("the system's trust store could not be loaded")
            }
        case .authorities(let file):
            if cstls_ctx_trust_file(UnsafeMutableRawPointer(configuration.context), file) != 1 {
                throw failure("cannot use '\(file)' as certificate authorities")
            }
        case .anything:
            break
        }
        try configuration.use(certificateChain: certificateChain, privateKey: privateKey)
        try configuration.offer(protocols)
        return configuration
    }

    /// A server configuration: its certificate chain and private key (PEM files); TLS 1.2
    /// or 1.3.
    ///
    /// - Parameters:
    ///   - certificateChain: a PEM file with the server's certificate, then the
    ///     intermediate certificates that lead to a trusted authority.
    ///   - privateKey: the PEM file with the certificate's private key.
    ///   - clientAuthorities: require every client to present a certificate signed by an
    ///     authority in this PEM file (nil: ask for none).
    ///   - protocols: ALPN protocols accepted, most preferred first.
    /// - Throws: ``/Sockets/SocketError`` — `.tlsUnavailable`, `.invalidArgument` for a file
    ///   that cannot be read, a key that does not match the certificate.
    public static func server(
        certificateChain: String, privateKey: String, clientAuthorities: String? = nil, protocols: [String] = []
    ) throws(SocketError) -> TLSConfiguration {
        let configuration = try TLSConfiguration(server: true, verify: clientAuthorities == nil ? 0 : 2, verifiesHost: false)
        try configuration.use(certificateChain: certificateChain, privateKey: privateKey)
        if let clientAuthorities, cstls_ctx_trust_file(UnsafeMutableRawPointer(configuration.context), clientAuthorities) != 1 {
            throw failure("cannot use '\(clientAuthorities)' as client certificate authorities")
        }
        try configuration.offer(protocols)
        return configuration
    }

    private func use(certificateChain: String?, privateKey: String?) throws(SocketError) {
        guard let certificateChain else { return }
        guard let privateKey else {
            throw SocketError(.invalidArgument, .handshake, detail: "a certificate chain needs its private key")
        }
        if cstls_ctx_certificate(UnsafeMutableRawPointer(context), certificateChain, privateKey) != 1 {
            throw TLSConfiguration.failure("cannot use certificate '\(certificateChain)' with key '\(privateKey)'")
        }
    }

    private func offer(_ protocols: [String]) throws(SocketError) {
        guard !protocols.isEmpty else { return }
        var wire: [UInt8] = []
        for name in protocols {
            let bytes = Array(name.utf8)
            guard !bytes.isEmpty && bytes.count < 256 else {
                throw SocketError(.invalidArgument, .handshake, detail: "ALPN protocol names are 1 to 255 bytes, got '\(name)'")
            }
            wire.append(UInt8(bytes.count))
            wire += bytes
        }
        guard let kept = cstls_protocols_new(wire, UInt32(wire.count)) else {
            throw SocketError(.system, .handshake, detail: "out of memory for the ALPN list")
        }
        alpnList = kept
        if cstls_ctx_alpn(UnsafeMutableRawPointer(context), kept) != 1 {
            throw TLSConfiguration.failure("ALPN could not be set")
        }
    }

    private static func failure(_ what: String) -> SocketError {
        let why = OpenSSL.takeError().map { ": \($0.text)" } ?? ""
        return SocketError(.invalidArgument, .handshake, detail: what + why)
    }
}

extension TLSConfiguration.Trust: Equatable {}

extension TLSConfiguration {
    /// A session OpenSSL gave a client connection, freed with the last reference.
    final class Session: @unchecked Sendable {
        // @unchecked Sendable is safe: the pointer never changes; OpenSSL sessions are
        // reference-counted and may be offered to a connection (SSL_set_session, which takes
        // its own reference) from any thread.
        let pointer: UnsafeMutableRawPointer
        init(_ pointer: UnsafeMutableRawPointer) { self.pointer = pointer }
        deinit { cstls_session_free(pointer) }
    }

    /// The sessions of a client configuration: one per server (name, else address), each
    /// offered once (TLS 1.3 tickets are meant for one use; the resumed connection gets new
    /// ones), the oldest dropped past `capacity`.
    final class SessionStore: Sendable {
        static let capacity = 256
        private let store = Locked<(sessions: [String: Session], order: [String])>(([:], []))

        func keep(_ session: Session, for key: String) {
            store.withLock { s in
                if s.sessions.updateValue(session, forKey: key) == nil {
                    s.order.append(key)
                    if s.order.count > Self.capacity { s.sessions[s.order.removeFirst()] = nil }
                }
            }
        }

        func take(_ key: String) -> Session? {
            store.withLock { s in
                guard let session = s.sessions.removeValue(forKey: key) else { return nil }
                s.order.removeAll { $0 == key }
                return session
            }
        }
    }
}
