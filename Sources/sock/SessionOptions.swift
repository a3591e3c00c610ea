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

    /// The rules for `role`; `timeout` is the command's `--timeout`, which sets the idle timeout
    /// unless `--idle-timeout` is given.
    func rules(_ role: SessionRules.Role, timeout: DurationArgument?) -> SessionRules {
        SessionRules(role: role, shutdownAtEndOfInput: !noShutdown, quitAfter: quitAfter,
                     idleTimeout: (idleTimeout ?? timeout)?.duration)
    }
}
