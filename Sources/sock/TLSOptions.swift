#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import Sockets
import SocketsTLS

// `--tls` for `connect` and `listen`: the options, what they allow, and the handshake.
// SocketsTLS binds OpenSSL only at its first call, so a session without --tls never loads
// libssl.

/// `sock connect --tls` and what goes with it.
struct ClientTLSOptions: ParsableArguments {
    @Flag(help: "Speak TLS over the connection (TLS 1.2 or 1.3), verifying the server's certificate and name.")
    var tls = false

    @Option(name: .customLong("ca"), help: ArgumentHelp("Trust only the certificate authorities in this PEM file (default: the system's trust store).", valueName: "file"))
    var authorities: String?

    @Option(name: .customLong("servername"), help: ArgumentHelp("The name the server's certificate must carry, also sent as SNI (default: the host of HOST:PORT).", valueName: "name"))
    var serverName: String?

    @Flag(help: "Do not verify the server's certificate or name at all (curl -k): anyone in the path can read and change the session. For tests only.")
    var insecure = false

    @Option(help: ArgumentHelp("A client certificate chain (PEM) for servers that ask for one; with --key.", valueName: "file"))
    var cert: String?

    @Option(help: ArgumentHelp("The private key (PEM) of --cert.", valueName: "file"))
    var key: String?

    @Option(name: .customLong("handshake-timeout"),
            help: "Give up on the TLS handshake after this long, on its own clock from when the connection is made (default: the connect timeout, else none); exit 124.",
            transform: parseDuration)
    var handshakeTimeout: DurationArgument?

    func validate() throws {
        if !tls {
            let given = [("--ca", authorities != nil), ("--servername", serverName != nil), ("--insecure", insecure),
                         ("--cert", cert != nil), ("--key", key != nil), ("--handshake-timeout", handshakeTimeout != nil)]
            if let (name, _) = given.first(where: \.1) { throw ValidationError("\(name) needs --tls") }
            return
        }
        if insecure && authorities != nil { throw ValidationError("--insecure verifies nothing: not with --ca") }
        try validateKeyPair(cert: cert, key: key)
        for (option, file) in [("--ca", authorities), ("--cert", cert), ("--key", key)] {
            if let file { try checkReadable(file, option) }
        }
    }

    /// What the options allow for `endpoint` and the session's other options.
    func validate(endpoint: String, udp: Bool) throws {
        guard tls else { return }
        if udp { throw ValidationError("--tls runs over a stream connection: not with --udp") }
        if endpoint.contains("/") && serverName == nil && !insecure {
            throw ValidationError("--tls over a Unix socket path needs --servername NAME (the name the server's certificate must carry), or --insecure")
        }
    }

    /// The client configuration the options ask for (nil without --tls).
    func configuration() throws(SocketError) -> TLSConfiguration? {
        guard tls else { return nil }
        let trust: TLSConfiguration.Trust = insecure ? .anything : authorities.map { .authorities(file: $0) } ?? .system
        // One connection per process: no session to resume.
        return try TLSConfiguration.client(trusting: trust, certificateChain: cert, privateKey: key, resumesSessions: false)
    }

    /// TLS over `socket`, connected to `endpoint`, handshaken within `limit` (from now). The
    /// socket is closed if it fails.
    func handshake(over socket: Socket, configuration: TLSConfiguration, endpoint: String, limit: SocketTimeout,
                   verbose: Bool) throws(SocketError) -> TLSSocket {
        do throws(SocketError) {
            var name = serverName
            if name == nil && !endpoint.contains("/") { name = try HostPort.split(endpoint).host }
            let tls = try TLSSocket(client: socket, configuration: configuration, serverName: name)
            try handshakeReporting(tls, limit: limit, verbose: verbose, with: name ?? endpoint)
            return tls
        } catch {
            socket.close()
            throw error
        }
    }
}

/// `sock listen --tls` and what goes with it.
struct ServerTLSOptions: ParsableArguments {
    @Flag(help: "Speak TLS on the connection (TLS 1.2 or 1.3), as its server; needs --cert and --key.")
    var tls = false

    @Option(help: ArgumentHelp("This server's certificate chain (PEM).", valueName: "file"))
    var cert: String?

    @Option(help: ArgumentHelp("The private key (PEM) of --cert.", valueName: "file"))
    var key: String?

    @Option(name: .customLong("client-ca"), help: ArgumentHelp("Require every client to present a certificate signed by an authority in this PEM file.", valueName: "file"))
    var clientAuthorities: String?

    @Option(name: .customLong("handshake-timeout"),
            help: "Give up on a connection's TLS handshake after this long, on its own clock from the accept (default: the idle timeout, else none); without --keep-open, exit 124.",
            transform: parseDuration)
    var handshakeTimeout: DurationArgument?

    func validate() throws {
        if !tls {
            let given = [("--cert", cert != nil), ("--key", key != nil), ("--client-ca", clientAuthorities != nil),
                         ("--handshake-timeout", handshakeTimeout != nil)]
            if let (name, _) = given.first(where: \.1) { throw ValidationError("\(name) needs --tls") }
            return
        }
        if cert == nil && key == nil { throw ValidationError("listen --tls needs --cert FILE and --key FILE (the server's certificate and its key)") }
        try validateKeyPair(cert: cert, key: key)
        for (option, file) in [("--cert", cert), ("--key", key), ("--client-ca", clientAuthorities)] {
            if let file { try checkReadable(file, option) }
        }
    }

    func validate(udp: Bool) throws {
        if tls && udp { throw ValidationError("--tls runs over a stream connection: not with --udp") }
    }

    /// The server configuration the options ask for (nil without --tls).
    func configuration() throws(SocketError) -> TLSConfiguration? {
        guard tls, let cert, let key else { return nil }
        return try TLSConfiguration.server(certificateChain: cert, privateKey: key, clientAuthorities: clientAuthorities)
    }

    /// The handshake's limit: --handshake-timeout, else `idle`, else none.
    func limit(idle: SocketTimeout?) -> SocketTimeout {
        handshakeTimeout?.timeout ?? idle ?? .never
    }
}

/// The handshake within `limit` from now (the socket's timeout during it, then `.never`
/// again: the relay ends its waits itself); with `verbose`, a line when it is done.
func handshakeReporting(_ tls: TLSSocket, limit: SocketTimeout, verbose: Bool, with name: String) throws(SocketError) {
    let start = ContinuousClock.now
    tls.socket.timeout = limit
    try tls.handshake()
    tls.socket.timeout = .never
    if verbose {
        printError("sock: \(tls.protocolVersion ?? "TLS") handshake with \(name) done in \(formatElapsed(.now - start))")
    }
}

/// The server side of TLS on an accepted connection, handshaken within `limit` from now; the
/// connection is closed if it fails.
func serveTLS(_ connection: Socket, configuration: TLSConfiguration, limit: SocketTimeout, verbose: Bool, peer: SocketAddress) throws(SocketError) -> TLSSocket {
    do throws(SocketError) {
        let tls = try TLSSocket(serving: connection, configuration: configuration)
        try handshakeReporting(tls, limit: limit, verbose: verbose, with: "\(peer)")
        return tls
    } catch {
        connection.close()
        throw error
    }
}

/// --cert and --key come together.
private func validateKeyPair(cert: String?, key: String?) throws {
    if cert != nil && key == nil { throw ValidationError("--cert needs --key FILE (its private key)") }
    if key != nil && cert == nil { throw ValidationError("--key needs --cert FILE (the certificate it belongs to)") }
}

/// A file given for `option` that cannot be opened is bad input, said before anything starts.
private func checkReadable(_ file: String, _ option: String) throws {
    let fd = open(file, O_RDONLY)
    if fd < 0 { throw ValidationError("\(option): cannot read '\(file)': \(String(cString: strerror(errno)))") }
    close(fd)
}
