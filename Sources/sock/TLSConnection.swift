import Dispatch
import Sockets
import SocketsTLS

// The connections `connect` and `listen` relay: a socket, or TLS over one.

/// A --keep-open connection's reads: plain, or TLS after a handshake in the connection's own
/// task (async: a client that stays silent holds up nobody else).
enum KeepOpenConnection: Sendable {
    case plain(Socket)
    case tls(TLSSocket)

    /// `connection` as it is, or TLS on it once its handshake is done within `limit`; the
    /// socket's timeout (the idle timeout) is kept for what follows.
    static func open(_ connection: Socket, configuration: TLSConfiguration?, limit: SocketTimeout) async throws(SocketError) -> KeepOpenConnection {
        guard let configuration else { return .plain(connection) }
        let idle = connection.timeout
        let tls = try TLSSocket(serving: connection, configuration: configuration)
        connection.timeout = limit
        try await tls.handshake()
        connection.timeout = idle
        return .tls(tls)
    }

    func receive(upTo maxCount: Int) async throws(SocketError) -> [UInt8] {
        switch self {
        case .plain(let socket): try await socket.receive(upTo: maxCount)
        case .tls(let tls): try await tls.receive(upTo: maxCount)
        }
    }

    /// For TLS, a `close_notify` if it can go at once (the server closes the socket anyway).
    func close() {
        if case .tls(let tls) = self { tls.close() }
    }
}

/// What `Relay` sends on and receives from: a socket, or TLS over one.
final class RelayConnection: Sendable {
    /// The socket underneath (addresses, `SIOCOUTQ`, its type).
    let socket: Socket
    /// TLS over `socket`, if the session is TLS.
    private let tls: TLSSocket?
    /// How the receiving side ended, for the sending side (TLS only).
    private let verdict = PeerVerdict()

    private init(socket: Socket, tls: TLSSocket?) {
        self.socket = socket
        self.tls = tls
    }

    static func plain(_ socket: Socket) -> RelayConnection { RelayConnection(socket: socket, tls: nil) }
    static func tls(_ tls: TLSSocket) -> RelayConnection { RelayConnection(socket: tls.socket, tls: tls) }

    /// Sends some of `bytes` (a socket), or all of them (TLS: a record is all or nothing to
    /// the caller); the count sent.
    func send(_ bytes: ArraySlice<UInt8>) throws(SocketError) -> Int {
        guard let tls else { return try socket.send(bytes) }
        do throws(SocketError) {
            try tls.sendAll(bytes)
        } catch {
            // A peer that refuses the session says why in an alert, then closes; the send may
            // see the close first. TLS 1.3's client certificate refusal comes so
            // (`certificate required`): the receive that reads the alert says it.
            if error.kind == .connectionReset || error.kind == .brokenPipe,
               let why = verdict.wait(upTo: .milliseconds(500)), why.isTLSRefusal {
                throw why
            }
            throw error
        }
        return bytes.count
    }

    func receive(upTo maxCount: Int) throws(SocketError) -> [UInt8] {
        guard let tls else { return try socket.receive(upTo: maxCount) }
        do throws(SocketError) {
            let chunk = try tls.receive(upTo: maxCount)
            if chunk.isEmpty { verdict.tell(nil) }
            return chunk
        } catch {
            verdict.tell(error)
            throw error
        }
    }

    /// The half-close: a TCP FIN, or for TLS `close_notify` and then the FIN.
    func shutdownWrite() throws(SocketError) {
        if let tls { try tls.shutdown(.write) } else { try socket.shutdown(.write) }
    }

    /// Ends every wait on it, from any thread.
    func close() {
        if let tls { tls.close() } else { socket.close() }
    }
}

/// How the receiving side of a TLS relay ended, for the sending side: told once.
final class PeerVerdict: Sendable {
    private let ending = Locked<(told: Bool, error: SocketError?)>((false, nil))
    private let told = DispatchSemaphore(value: 0)

    /// The receive ended: with `error`, or (nil) at the end of the stream.
    func tell(_ error: SocketError?) {
        let first = ending.withLock { e -> Bool in
            guard !e.told else { return false }
            e = (true, error)
            return true
        }
        if first { told.signal() }
    }

    /// The receive's error once it has ended, waiting for that at most `limit`.
    func wait(upTo limit: Duration) -> SocketError? {
        if !ending.withLock({ $0.told }) {
            _ = told.wait(timeout: .now() + .nanoseconds(Int(clamping: nanoseconds(limit))))
            told.signal()  // for any other waiter
        }
        return ending.withLock { $0.error }
    }
}

extension SocketError {
    /// The peer's TLS refused or broke the session: an alert, a certificate, the protocol.
    var isTLSRefusal: Bool { kind == .tlsAlert || kind == .certificateRejected || kind == .tlsProtocol }
}
