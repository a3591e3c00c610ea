import ArgumentParser
import Sockets

/// `sock probe`: nc -z's job, each port's outcome and how long it took.
struct Probe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Try a connection to each port and say open, refused or no answer, with the time each took.",
        discussion: """
            Connects to HOST on each PORT (up to 64 at once), closes at once with nothing \
            sent, and prints one line per port in order: open, refused (nothing listens: the \
            answer is a reset), no answer (nothing came back within --timeout: dropped SYNs, a \
            full accept queue), unreachable, or the error. Exits 0 when every port is open, \
            1 when one is refused, unreachable or failed, else 124 (some gave no answer).
            """
    )

    @Argument(help: "A host name or address (IPv6 without brackets).")
    var host: String

    @Argument(help: "Ports and ranges: 22 80 8000-8100.")
    var ports: [String]

    @Option(help: "How long each port may take to answer (default 1s).", transform: parseDuration)
    var timeout: DurationArgument?

    /// At most this many connects in flight.
    static let parallel = 64

    enum Outcome: Sendable {
        case open, refused, noAnswer, unreachable
        case failed(SocketError)

        var text: String {
            switch self {
            case .open: "open"
            case .refused: "refused"
            case .noAnswer: "no answer"
            case .unreachable: "unreachable"
            case .failed(let error): "\(error)"
            }
        }
    }

    func validate() throws {
        _ = try Probe.expand(ports)
    }

    func run() async throws {
        let list = try Probe.expand(ports)
        let limit = timeout?.duration ?? .seconds(1)
        let address: SocketAddress
        do throws(SocketError) {
            address = try SocketAddress.resolve(host: host, port: list[0], deadline: .now + limit)[0]
        } catch {
            throw Exit.report(error)
        }
        var results = [(Outcome, Duration)?](repeating: nil, count: list.count)
        var printed = 0
        await withTaskGroup(of: (Int, Outcome, Duration).self) { group in
            var next = 0
            func start() {
                let index = next, target = address.withPort(list[index])
                next += 1
                group.addTask {
                    let began = ContinuousClock.now
                    let outcome = await Probe.probe(target, limit: limit)
                    return (index, outcome, ContinuousClock.now - began)
                }
            }
            while next < min(list.count, Probe.parallel) { start() }
            for await (index, outcome, elapsed) in group {
                results[index] = (outcome, elapsed)
                if next < list.count { start() }
                // Lines in port order, each as soon as those before it are known.
                while printed < list.count, let (outcome, elapsed) = results[printed] {
                    let target = "\(address.withPort(list[printed]))"
                    printOut(padded(target, to: max(24, target.count + 1))
                        + padded(outcome.text, to: 11) + formatElapsed(elapsed))
                    printed += 1
                }
            }
        }
        let outcomes = results.compactMap { $0?.0 }
        if outcomes.contains(where: { if case .open = $0 { false } else if case .noAnswer = $0 { false } else { true } }) {
            throw Exit.network
        }
        if outcomes.contains(where: { if case .noAnswer = $0 { true } else { false } }) { throw Exit.timedOut }
    }

    /// One connect to `target`, closed at once.
    static func probe(_ target: SocketAddress, limit: Duration) async -> Outcome {
        do throws(SocketError) {
            let socket = try await Socket.connect(to: target, timeout: .never, deadline: .now + limit)
            socket.close()
            return .open
        } catch {
            switch error.kind {
            case .connectionRefused: return .refused
            case .timedOut: return .noAnswer
            case .unreachable: return .unreachable
            default: return .failed(error)
            }
        }
    }

    /// `["22", "8000-8002"]` → `[22, 8000, 8001, 8002]`; a message naming the bad one otherwise.
    static func expand(_ arguments: [String]) throws -> [UInt16] {
        var ports: [UInt16] = []
        for argument in arguments {
            let bounds = argument.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
            let numbers = bounds.map { UInt16($0) }
            guard !numbers.contains(nil), let low = numbers.first!, let high = numbers.last!, low > 0 else {
                throw ValidationError("'\(argument)' is not a port (1-65535) or a range of them (8000-8100)")
            }
            guard low <= high else { throw ValidationError("'\(argument)': the range ends before it starts") }
            ports += Array(low...high)
        }
        return ports
    }
}
