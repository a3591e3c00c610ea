import ArgumentParser
import Sockets

struct Connect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect to HOST:PORT and copy stdin to it and it to stdout.",
        discussion: """
            The session ends when both directions are done: all of stdin has been sent, and \
            the peer has finished sending (end of stream) and everything it sent is on \
            stdout. A peer that finishes first does not cut an upload short. What could not \
            be delivered (the peer reset the connection, stdout closed, an idle timeout) ends \
            with a non-zero exit and a message saying how many bytes.

            At the end of stdin the write side is shut down (a half-close: the peer reads end \
            of stream, the only way it can tell the input is complete). --no-shutdown keeps \
            it open, for servers that take a half-close for a hang-up; --quit-after D ends \
            the session D after the end of stdin even if the peer has not finished (0: at \
            once), with exit 0.

            --timeout D is nc's -w: it bounds the connect (name resolution included) and is \
            the idle timeout; --connect-timeout and --idle-timeout set one of the two. The \
            idle timeout counts from the last byte moved in either direction (also bytes the \
            kernel is still delivering), so a busy transfer is never cut; it ends the session \
            with exit 124.
            """
    )

    @Argument(help: "HOST:PORT, [IPv6]:PORT, or a Unix socket path (with --udp, a Unix datagram socket's).")
    var endpoint: String

    @Option(help: "Both the connect timeout and the idle timeout (nc -w).", transform: parseDuration)
    var timeout: DurationArgument?

    @Option(name: .customLong("connect-timeout"), help: "Give up on connecting (resolution included) after this long.",
            transform: parseDuration)
    var connectTimeout: DurationArgument?

    @Option(name: [.customShort("s"), .customLong("source")],
            help: "Connect from this local address, and port if given: 127.0.0.2, 127.0.0.2:5000, ::1, [::1]:5000 (nc -s, -p).")
    var source: String?

    @OptionGroup var session: SessionOptions

    @OptionGroup(title: "TLS") var tls: ClientTLSOptions

    func validate() throws {
        try tls.validate(endpoint: endpoint, udp: session.udp)
    }

    func run() throws {
        let connection: RelayConnection
        let limit = (connectTimeout ?? timeout)?.timeout ?? .never
        // A Unix datagram client's own socket file, removed on every way out.
        var ownFile: OwnSocketFile?
        defer { ownFile?.remove() }
        do throws(SocketError) {
            let configuration = try tls.configuration()  // before connecting: bad files are bad input
            let socket: Socket
            // Parsed without any lookup: a name is resolved by dial(), within the connect timeout.
            if session.udp, case .unix? = try? SocketAddress(endpoint) {
                (socket, ownFile) = try dialUnixDatagram()
            } else {
                socket = try dial(timeout: limit)
            }
            connection = if let configuration {
                .tls(try tls.handshake(over: socket, configuration: configuration, endpoint: endpoint,
                                       limit: tls.handshakeTimeout?.timeout ?? limit, verbose: session.verbose))
            } else {
                .plain(socket)
            }
        } catch {
            throw Exit.report(error)
        }
        let code = Relay(connection: connection, rules: session.rules(.client, timeout: timeout)).run()
        if code != .success { throw code }
    }

    /// A Unix datagram socket bound to a fresh temporary path — without one the listener could
    /// not reply, as with `nc -uU` — and connected to `endpoint`'s path: its sends go there and
    /// it receives only from there. The file is removed when the process ends, however.
    private func dialUnixDatagram() throws(SocketError) -> (Socket, OwnSocketFile?) {
        if source != nil {
            throw SocketError(.invalidArgument, .parse, detail: "--source takes an IP address; a Unix datagram client binds a temporary path of its own")
        }
        let target = try SocketAddress.resolve(endpoint)[0]
        let socket = try Socket(.unix, .datagram)
        var attempts = 0
        while true {
            do throws(SocketError) {
                try socket.bind(to: .unix(path: temporarySocketPath()))
                break
            } catch where error.kind == .addressInUse && attempts < 10 {
                attempts += 1  // a name another process took: draw another
            } catch {
                socket.close()
                throw error
            }
        }
        let file: OwnSocketFile?
        do throws(SocketError) {
            file = try OwnSocketFile(socket)
        } catch {
            socket.close()
            throw error
        }
        do throws(SocketError) {
            try socket.connect(to: target)
            return (socket, file)
        } catch {
            file?.remove()
            socket.close()
            throw Connect.explainUnixDatagram(error, path: endpoint)
        }
    }

    /// What a failed connect to a Unix datagram path means, in the operator's terms.
    static func explainUnixDatagram(_ error: SocketError, path: String) -> SocketError {
        if error.kind == .connectionRefused {
            return error.with(detail: "nothing is bound to \(path) (a file left by a listener that is gone)")
        }
        switch error.errno {
        case .noSuchFileOrDirectory?: return error.with(detail: "no socket file at \(path)")
        case .protocolWrongTypeForSocket?: return error.with(detail: "\(path) is a stream socket: connect without --udp")
        default: return error
        }
    }

    /// The connected socket: `Socket.connect` (every address the name has, in turn) for a
    /// plain TCP connect; otherwise the first address, from `--source` if given. A UDP socket
    /// is connected: its sends go to the address, and it receives only from there.
    private func dial(timeout: SocketTimeout) throws(SocketError) -> Socket {
        let type: SocketType = session.udp ? .datagram : .stream
        if source == nil && type == .stream { return try Socket.connect(to: endpoint, timeout: timeout) }
        let deadline = timeout.duration.map { ContinuousClock.now + $0 }
        let targets = try SocketAddress.resolve(endpoint, type: type, deadline: deadline)
        guard let source else { return try Socket.connect(to: targets[0], type: type, timeout: timeout, deadline: deadline) }
        let local = try sourceAddress(source, type: type, deadline: deadline)
        guard let target = targets.first(where: { $0.family == local.family }) else {
            throw SocketError(.invalidArgument, .connect,
                              detail: "'\(endpoint)' has no \(local.family) address to reach from \(local)")
        }
        let socket = try Socket(target.family, type)
        try socket.setOption(.reuseAddress, true)  // a fixed source port may still be in TIME_WAIT
        try socket.bind(to: local)
        socket.timeout = .never  // the deadline bounds the connect
        try socket.connect(to: target, deadline: deadline)
        socket.timeout = timeout
        return socket
    }

    /// `--source`: an address alone (port 0: any), or HOST:PORT / [IPv6]:PORT.
    private func sourceAddress(_ text: String, type: SocketType, deadline: ContinuousClock.Instant?) throws(SocketError) -> SocketAddress {
        if let ipv4 = IPv4Address(text) { return .ipv4(ipv4, port: 0) }
        if let ipv6 = IPv6Address(text) { return .ipv6(ipv6, port: 0) }
        do throws(SocketError) {
            return try SocketAddress.resolve(text, type: type, deadline: deadline)[0]
        } catch where error.kind == .invalidArgument {
            throw SocketError(.invalidArgument, .parse, detail: "--source: \(error.detail ?? "\(error)")")
        }
    }
}
