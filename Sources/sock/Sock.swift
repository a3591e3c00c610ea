import ArgumentParser
import Sockets

/// `sock`: a netcat-like tool whose every wait has a limit, and a live demo of timeouts.
@main
struct Sock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sock",
        abstract: "Plain sockets with honest timeouts.",
        discussion: """
            Exit codes: 0 success, 1 network error or data not delivered, 64 bad usage or \
            input, 124 timed out (connect, accept, idle, sock wait).
            Durations: 3, 1.5, 250ms, 3s, 500us, 2m (a bare number is seconds).
            """,
        subcommands: [Demo.self, Listen.self, Connect.self, Wait.self, Probe.self]
    )

    /// Before anything opens a descriptor: a stdin, stdout or stderr that was closed
    /// (`<&-`) is /dev/null, or the first socket or the runtime's epoll would take its number
    /// and be read from or written to as if it were one.
    static func main() async {
        openStandardDescriptors()
        await main(nil)
    }
}

/// The exit codes, as documented in the README.
enum Exit {
    static let network = ExitCode(1)
    static let usage = ExitCode(64)
    static let timedOut = ExitCode(124)

    /// Prints `error` on stderr and returns the exit code for it.
    static func report(_ error: SocketError) -> ExitCode {
        printError("sock: \(error)")
        switch error.kind {
        case .timedOut: return timedOut
        case .invalidArgument: return usage
        default: return network
        }
    }
}
