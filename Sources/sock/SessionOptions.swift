import ArgumentParser

/// The options that say when a `connect` or `listen` session ends, shared by both.
struct SessionOptions: ParsableArguments {
    @Option(name: .customLong("idle-timeout"),
            help: "End with exit 124 once nothing has moved in either direction for this long (nc -w, ncat -i, socat -T).",
            transform: parseDuration)
    var idleTimeout: DurationArgument?

    @Flag(name: .customLong("no-shutdown"),
          help: "At the end of stdin keep the write side open (no half-close) until the peer finishes: for servers that take a half-close for a hang-up.")
    var noShutdown = false

    @Option(name: [.customShort("q"), .customLong("quit-after")],
            help: "End this long after the end of stdin even if the peer has not finished (nc -q); 0: at once.",
            transform: parseDelay)
    var quitAfter: Duration?

    @Flag(name: [.customShort("u"), .customLong("udp")],
          help: "UDP, or a Unix datagram socket for a path: each read of stdin is one datagram; the session ends only at --quit-after, the idle timeout or an error.")
    var udp = false

    @Flag(name: .shortAndLong,
          help: "Say on stderr when the connection is made and when it ends, with both addresses, the bytes each way and the time.")
    var verbose = false

    @Flag(help: "No status lines on stderr (listening on, connection from): errors only.")
    var quiet = false

    func validate() throws {
        if verbose && quiet { throw ValidationError("--verbose and --quiet cannot be used together") }
    }

    /// The rules for `role`; `timeout` is the command's `--timeout`, which sets the idle timeout
    /// unless `--idle-timeout` is given.
    func rules(_ role: SessionRules.Role, timeout: DurationArgument?) -> SessionRules {
        SessionRules(role: role, shutdownAtEndOfInput: !noShutdown, quitAfter: quitAfter,
                     idleTimeout: (idleTimeout ?? timeout)?.duration, verbose: verbose)
    }
}
