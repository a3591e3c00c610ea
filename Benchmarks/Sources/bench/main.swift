// One executable for the three Swift implementations, with the command line of ../c/cbench.c:
//   bench IMPL server pingpong|bulk|connect [MODE]       prints "PORT n", then serves
//   bench IMPL client pingpong PORT COUNT [MODE]         64 B round trips, TCP_NODELAY
//   bench IMPL client bulk PORT BYTES [MODE]             64 KiB writes, waits for the server's ack
//   bench IMPL client connect PORT COUNT [MODE]          connect, wait for the server's close, close
//   bench sockets precision recv|accept SECONDS COUNT THREADS timeout|deadline
//   bench sockets server|client|async ...                the async workloads (AsyncBench.swift)
//   bench sockets server|client tls-...                 the TLS workloads (TLSBench.swift)
//   bench echo-server nio-handlers|nio-async|flyingsocks TIMEOUT   their peers (AsyncPeers.swift)
// IMPL: sockets (this library; MODE none | timeout | deadline), nio (SwiftNIO's NIOPosix
// bootstraps, as NIO users write them), flyingsocks (FlyingFox's AsyncSocket).
// Results: one JSON object on stdout.
import Foundation

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("bench: \(message)\n".utf8))
    exit(64)
}

/// Unbuffered, so the driver sees the line at once.
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

func announce(port: Int) { emit("PORT \(port)") }

func report(_ fields: [(String, Double)]) {
    emit("{" + fields.map { "\"\($0.0)\": \(String(format: "%.3f", $0.1))" }.joined(separator: ", ") + "}")
}

/// Round-trip times in nanoseconds → median and p99 in microseconds; `{}` for the
/// zero-operation run that W5 subtracts.
func reportRoundTrips(_ histogram: RoundTrips) {
    guard histogram.count > 0 else { return emit("{}") }
    report([("median_us", histogram.percentile(50) / 1e3), ("p99_us", histogram.percentile(99) / 1e3)])
}

func seconds(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

let arguments = CommandLine.arguments
guard arguments.count >= 4 else { fail("usage: see the comment at the top of main.swift") }
let implementation = arguments[1], role = arguments[2], workload = arguments[3]

if implementation == "echo-server" {  // bench echo-server IMPL TIMEOUT (seconds, 0 = none)
    guard let timeout = Double(workload) else { fail("bad timeout: \(workload)") }
    asyncPeerServer(role, timeout: timeout)
}

func argument(_ index: Int, default value: String? = nil) -> String {
    if index < arguments.count { return arguments[index] }
    if let value { return value }
    fail("missing argument \(index) for \(role) \(workload)")
}

func integer(_ index: Int) -> Int {
    guard let value = Int(argument(index)), value >= 0 else { fail("bad number: \(argument(index))") }
    return value
}

if implementation == "sockets" && workload.hasPrefix("tls-") {  // TLSBench.swift
    if role == "server" { TLSBench.server(workload, mode: argument(4, default: "none")) }
    guard role == "client" else { fail("unknown role \(role)") }
    TLSBench.client(workload, port: integer(4), count: integer(5), mode: argument(6, default: "none"),
                    seconds: Double(argument(7, default: "0")) ?? 0)
}

let implementations: [String: any Implementation] = [
    "sockets": OursBench(), "nio": NIOBench(), "flyingsocks": FlyingSocksBench(),
]
guard let bench = implementations[implementation] else { fail("unknown implementation \(implementation)") }

switch role {
case "server":
    bench.server(workload, mode: argument(4, default: "none"))
case "client":
    bench.client(workload, port: integer(4), count: integer(5), mode: argument(6, default: "none"))
case "precision":
    guard let ours = bench as? OursBench else { fail("precision is measured for sockets only") }
    guard let seconds = Double(argument(4)), seconds > 0 else { fail("bad seconds: \(argument(4))") }
    ours.precision(workload, seconds: seconds, count: integer(5), threads: integer(6), mode: argument(7))
case "async":
    guard bench is OursBench else { fail("the async workloads are measured for sockets only") }
    switch workload {
    case "cancel": cancellationLatency(count: integer(4), load: integer(5), from: argument(6, default: "task"))
    case "precision":
        guard let seconds = Double(argument(4)), seconds > 0 else { fail("bad seconds: \(argument(4))") }
        asyncPrecision(seconds: seconds, count: integer(5), concurrent: max(1, integer(6)))
    case "close": closeWhileWaiting(count: integer(4))
    default: fail("unknown async workload \(workload)")
    }
default:
    fail("unknown role \(role)")
}

protocol Implementation: Sendable {
    func server(_ workload: String, mode: String)
    func client(_ workload: String, port: Int, count: Int, mode: String)
}
