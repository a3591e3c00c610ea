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

    @Argument(help: "HOST:PORT, [IPv6]:PORT, or a Unix socket path.")
    var endpoint: String

    @Option(help: "Both the connect timeout and the idle timeout (nc -w).", transform: parseDuration)
    var timeout: DurationArgument?

    @Option(name: .customLong("connect-timeout"), help: "Give up on connecting (resolution included) after this long.",
            transform: parseDuration)
    var connectTimeout: DurationArgument?

    @OptionGroup var session: SessionOptions

    func validate() throws {
        try session.validate(endpoint: endpoint)
    }

    func run() throws {
        let socket: Socket
        let limit = (connectTimeout ?? timeout)?.timeout ?? .never
        do throws(SocketError) {
            if session.udp {
                // A connected UDP socket: its sends go to the address, it receives only from there.
                let deadline = limit.duration.map { ContinuousClock.now + $0 }
                let address = try SocketAddress.resolve(endpoint, type: .datagram, deadline: deadline)[0]
                socket = try Socket.connect(to: address, type: .datagram, timeout: limit, deadline: deadline)
            } else {
                socket = try Socket.connect(to: endpoint, timeout: limit)
            }
        } catch {
            throw Exit.report(error)
        }
        let code = Relay(socket: socket, rules: session.rules(.client, timeout: timeout)).run()
        if code != .success { throw code }
    }
}
