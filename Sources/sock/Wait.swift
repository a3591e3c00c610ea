#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import Sockets

/// `sock wait`: the wait-for-it replacement. Each endpoint is tried until it accepts a
/// connection, which is then closed at once, nothing sent.
struct Wait: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Wait until every HOST:PORT accepts a connection.",
        discussion: """
            Tries each endpoint, all at once, until it accepts a connection, which is closed \
            at once with nothing sent; a refused, unanswered (at most 1 s per attempt), \
            unreachable or unresolved endpoint is tried again --interval later. Exits 0 when \
            every endpoint is up, 124 when --timeout runs out first, with each endpoint's last \
            reason on stderr: refused (nothing listens yet), timed out (no answer: dropped \
            SYNs, a full accept queue), unreachable, name not resolved, no socket file (a \
            Unix path). Bad input exits 64 before anything is tried.
            """
    )

    @Argument(help: "HOST:PORT, [IPv6]:PORT or a Unix socket path; one or more.")
    var endpoints: [String]

    @Option(help: "Give up after this long (default 30s).", transform: parseDuration)
    var timeout: DurationArgument?

    @Option(help: "Pause between two attempts on one endpoint (default 100ms).", transform: parseDuration)
    var interval: DurationArgument?

    @Flag(help: "Say nothing on success.")
    var quiet = false

    /// How waiting for one endpoint ended.
    struct Outcome: Sendable {
        var up: Bool
        var elapsed: Duration
        var attempts: Int
        var last: SocketError?
    }

    func run() async throws {
        for endpoint in endpoints {
            // Syntax only: a numeric address comes back at once, a name is not looked up.
            do throws(SocketError) {
                _ = try await SocketAddress.resolve(endpoint, deadline: .now)
            } catch where error.kind == .invalidArgument {
                throw Exit.report(error)
            } catch {}
        }
        let limit = timeout?.duration ?? .seconds(30)
        let pause = interval?.duration ?? .milliseconds(100)
        let deadline = ContinuousClock.now + limit
        let outcomes = await withTaskGroup(of: (Int, Outcome).self) { group in
            for (index, endpoint) in endpoints.enumerated() {
                group.addTask { (index, await Wait.waitFor(endpoint, until: deadline, pause: pause)) }
            }
            var outcomes = [Outcome?](repeating: nil, count: endpoints.count)
            for await (index, outcome) in group { outcomes[index] = outcome }
            return outcomes.map { $0! }  // every task has reported
        }
        for (endpoint, outcome) in zip(endpoints, outcomes) {
            let tries = "\(outcome.attempts) attempt\(outcome.attempts == 1 ? "" : "s")"
            if outcome.up {
                if !quiet { printError("sock: \(endpoint) is up after \(formatElapsed(outcome.elapsed)) (\(tries))") }
            } else {
                let reason = outcome.last.map { "\(Wait.reason($0)) (\($0))" } ?? "not tried"
                printError("sock: \(endpoint) not up within \(formatDuration(limit)): \(reason); \(tries)")
            }
        }
        if !outcomes.allSatisfy(\.up) { throw Exit.timedOut }
    }

    /// Tries `endpoint` until it accepts a connection or `deadline` passes.
    static func waitFor(_ endpoint: String, until deadline: ContinuousClock.Instant, pause: Duration) async -> Outcome {
        let start = ContinuousClock.now
        var outcome = Outcome(up: false, elapsed: .zero, attempts: 0)
        while ContinuousClock.now < deadline {
            outcome.attempts += 1
            do throws(SocketError) {
                // A fresh SYN each second rather than the kernel's retransmits (1 s, 3 s, 7 s,
                // ...), so a listener that frees its queue is seen within a second.
                let socket = try await Socket.connect(to: endpoint, timeout: .never,
                                                      deadline: min(deadline, .now + .seconds(1)))
                socket.close()
                outcome.up = true
                break
            } catch {
                outcome.last = error
            }
            let left = deadline - .now
            if left <= .zero { break }
            try? await Task.sleep(for: min(pause, left))
        }
        outcome.elapsed = ContinuousClock.now - start
        return outcome
    }

    /// A connect's failure in one or two words.
    static func reason(_ error: SocketError) -> String {
        switch error.kind {
        case .connectionRefused: "refused"
        case .timedOut: "timed out"
        case .unreachable: "unreachable"
        case .nameResolution: "name not resolved"
        case _ where error.errno?.rawValue == ENOENT: "no socket file"
        default: "\(error.kind)"
        }
    }
}
