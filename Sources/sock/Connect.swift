import ArgumentParser
import Sockets

struct Connect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect to HOST:PORT and copy stdin to it and it to stdout.",
        discussion: """
            End of stdin shuts down the write side; the command ends when the peer closes
            (input still being sent gets 0.5 s more).
            --timeout bounds the connect (resolution included) and then each wait on the peer.
            """
    )

    @Argument(help: "HOST:PORT, [IPv6]:PORT, or a Unix socket path.")
    var endpoint: String

    @Option(help: "Give up on connecting, or on a silent peer, after this long.", transform: parseDuration)
    var timeout: DurationArgument?

    func run() throws {
        do {
            let socket = try Socket.connect(to: endpoint, timeout: timeout?.timeout ?? .never)
            if let error = Relay(socket: socket, endWhenPeerCloses: true).run() {
                throw Exit.report(error)
            }
        } catch let error as SocketError {
            throw Exit.report(error)
        }
    }
}
