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

struct Listen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Accept a connection on [HOST:]PORT and copy stdin to it and it to stdout.",
        discussion: """
            HOST defaults to 127.0.0.1 (never every interface unless you ask: 0.0.0.0:PORT). \
            Prints 'listening on HOST:PORT' on stderr with the real port, also for port 0. \
            On a Unix socket path, a socket file nobody serves is replaced, and its own is \
            removed when it ends, also on SIGINT, SIGTERM and SIGHUP.

            Without --keep-open: one connection. The session ends when the peer has finished \
            sending (end of stream) and everything it sent is on stdout. Input that stdin has \
            ready, or goes on delivering with no pause of 250 ms, is still sent (the peer may \
            only have half-closed); stdin is not waited for beyond that, so a terminal or \
            `sleep 30 |` does not keep the session open. What could not be delivered ends \
            with a non-zero exit and a message saying how many bytes. --no-shutdown and \
            --quit-after as for connect.

            --timeout D (or --idle-timeout D): end with exit 124 once nothing has moved in \
            either direction for D. --accept-timeout D: exit 124 if no connection came \
            within D.

            With --keep-open: serves connections at once, each in its own task on the \
            library's reactors (no thread per connection), their data to stdout (stdin is not \
            read), with a backlog of 4096 (capped by the kernel's somaxconn); a connection \
            silent for the idle timeout is closed. --accept-timeout D stops accepting once no \
            new connection came within D, lets the live connections finish, then exits 124. \
            At the descriptor limit (EMFILE) it backs off (5 ms doubling to 1 s) and resumes.
            """
    )

    @Argument(help: "[HOST:]PORT, or a Unix socket path.")
    var endpoint: String

    @Option(name: .customLong("accept-timeout"), help: "Give up if no connection arrives within this long.", transform: parseDuration)
    var acceptTimeout: DurationArgument?

    @Option(help: "The idle timeout (nc -w): the same as --idle-timeout.", transform: parseDuration)
    var timeout: DurationArgument?

    @Flag(name: .customLong("keep-open"), help: "Keep accepting connections.")
    var keepOpen = false

    @OptionGroup var session: SessionOptions

    @OptionGroup(title: "TLS") var tls: ServerTLSOptions

    /// The idle timeout: --idle-timeout, else --timeout.
    private var idleTimeout: SocketTimeout? { (session.idleTimeout ?? timeout)?.timeout }

    func validate() throws {
        if session.udp && keepOpen { throw ValidationError("--keep-open serves stream connections: not with --udp") }
        try tls.validate(udp: session.udp)
    }

    func run() async throws {
        do {
            let tlsConfiguration = try tls.configuration()  // before listening: bad files are bad input
            let server = try makeServer()
            // Closed here, so that a Unix listener's socket file is gone before the process
            // exits (a datagram socket's file is not the library's to remove: it never listened).
            defer { server.close() }
            // And also when the process is interrupted.
            let file = try OwnSocketFile(server)
            defer { file?.remove() }
            if !session.quiet { printError("listening on \(try server.localAddress)") }
            server.timeout = acceptTimeout?.timeout ?? .never
            if session.udp {
                try serveDatagrams(server)
                return
            }
            if keepOpen {
                try await serve(server, tls: tlsConfiguration)
                return
            }
            try serveOne(server, tls: tlsConfiguration)
        } catch let error as SocketError {
            throw Exit.report(error)
        }
    }

    /// One connection, relayed both ways with blocking calls on threads (Relay.swift).
    private func serveOne(_ server: Socket, tls configuration: TLSConfiguration?) throws {
        let (connection, peer) = try server.accept()
        server.close()
        if !session.quiet && !session.verbose { printError("connection from \(peer)") }
        let relayed: RelayConnection = if let configuration {
            .tls(try serveTLS(connection, configuration: configuration, limit: tls.limit(idle: idleTimeout),
                              verbose: session.verbose, peer: peer))
        } else {
            .plain(connection)
        }
        let code = Relay(connection: relayed, rules: session.rules(.listener, timeout: timeout)).run()
        if code != .success { throw code }
    }

    /// UDP, as nc -u -l: the first datagram's sender becomes the peer (the socket is
    /// connected to it), and the session is relayed as for a connection.
    ///
    /// A Unix datagram path: stdin goes to whoever sent the last datagram (the socket is not
    /// connected), so a client that comes back from another temporary path — as `nc -uU` and
    /// `sock connect --udp` bind a fresh one each run — is answered, not refused.
    private func serveDatagrams(_ server: Socket) throws {
        let (first, peer) = try server.receiveDatagram(upTo: 65_536)  // within --accept-timeout
        let unix = server.family == .unix
        if !unix { try server.connect(to: peer) }
        let announce = !session.quiet && !session.verbose
        if announce { printError("datagram from \(peer)") }
        guard writeAll(1, first) else {
            printError("sock: writing to stdout failed: \(String(cString: strerror(errno))); \(bytes(first.count)) received not written to stdout")
            throw Exit.network
        }
        let relay = Relay(socket: server, rules: session.rules(.listener, timeout: timeout), received: first.count,
                          replyingTo: unix ? peer : nil, announceSenders: announce)
        let code = relay.run()
        if code != .success { throw code }
    }

    private func makeServer() throws(SocketError) -> Socket {
        let text = endpoint.allSatisfy(\.isNumber) ? "127.0.0.1:\(endpoint)" : endpoint
        let type: SocketType = session.udp ? .datagram : .stream
        let address = try SocketAddress.resolve(text, type: type)[0]  // resolve throws rather than return none
        let server = try Socket(address.family, type)
        if address.family != .unix { try server.setOption(.reuseAddress, true) }
        // A socket file that nobody serves (left by a listener that was killed) is replaced.
        try server.bind(to: address, removingStaleSocketFile: address.family == .unix)
        if session.udp { return server }
        // With --keep-open, room for bursts (the kernel caps it at net.core.somaxconn): with
        // the usual 128, a burst overflows the queue and Linux drops the handshake's last ACK,
        // so clients that think they are connected wait a second or more to be accepted.
        try server.listen(backlog: keepOpen ? 4096 : 128)
        return server
    }

    /// The --keep-open server: `Socket.serve`, a task per connection. Returns only by
    /// throwing (the accept timeout, or an error that is not about descriptors).
    private func serve(_ server: Socket, tls configuration: TLSConfiguration?) async throws(SocketError) {
        // A pthread mutex (the library's lock) held across a blocking write: what a shared stdout
        // needs, and no Foundation for it.
        let stdoutLock = Locked(())
        let verbose = session.verbose
        let handshakeLimit = tls.limit(idle: idleTimeout)
        // The accept timeout stops accepting; the live connections finish (each still ends
        // after its idle timeout), however long that takes.
        try await server.serve(connectionTimeout: idleTimeout ?? .never, gracePeriod: .seconds(Int64.max), events: { event in
            switch event {
            case .backingOff(let error, let retryIn) where retryIn == .milliseconds(5):
                printError("sock: \(error); backing off")
            case .backingOff:
                break
            case .acceptingAgain:
                printError("sock: accepting again")
            case .handlerFailed(let peer, let error):
                printError("sock: connection from \(peer): \(error); closed")
            }
        }) { connection, peer in
            let start = ContinuousClock.now
            var received = 0
            if verbose { printError("sock: connection from \(peer)") }
            do {
                let stream = try await KeepOpenConnection.open(connection, configuration: configuration, limit: handshakeLimit)
                defer { stream.close() }
                while true {
                    let chunk = try await stream.receive(upTo: 65_536)
                    if chunk.isEmpty {
                        if verbose { printError("sock: closed \(peer) after \(formatElapsed(.now - start)): received \(bytes(received))") }
                        return
                    }
                    received += chunk.count
                    // A write to stdout may block this reactor's thread while the reader is
                    // slow; the other connections on it wait with it, as they would for the
                    // lock of a shared stdout.
                    stdoutLock.withLock { _ in _ = writeAll(1, chunk) }
                }
            } catch {
                printError("sock: connection from \(peer): \(error); closed")
            }
        }
    }
}
