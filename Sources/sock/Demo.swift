import ArgumentParser
import Sockets

/// `sock demo`: the accept/connect-timeout scenarios that Python tutorials teach, played
/// live on loopback, with what the tutorials claim beside what this OS really does.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Play the classic accept/connect-timeout scenarios live on loopback.",
        discussion: """
            Every scenario runs for real on 127.0.0.1 and is bounded: nothing in the demo can
            wait longer than a few times --timeout.
            """
    )

    @Option(help: "The timeout the scenarios use (default 500ms).", transform: parseDuration)
    var timeout: DurationArgument?

    @Option(help: "Port for the scenario servers (default: a free port for each).")
    var port: UInt16?

    struct Row {
        let number: String
        let scenario: String
        let claim: String
        let outcome: String
        let elapsed: Duration
    }

    func run() throws {
        let timeout = self.timeout?.timeout ?? (try! SocketTimeout.after(.milliseconds(500)))  // a valid constant
        let t = timeout.duration!  // parseDuration only makes timed values
        printOut("sock demo: accept, connect and TLS handshake timeouts on \(systemName()), loopback, timeout \(timeout)")
        printOut("")
        let columns = [3, 50, 28]
        printRow(["#", "Scenario", "Tutorials say", "What happened here", "Elapsed"], columns)
        printRow(["-", String(repeating: "-", count: 48), String(repeating: "-", count: 26), String(repeating: "-", count: 56), "-------"], columns)
        do throws(SocketError) {
            let scenarios = Scenarios(t: t, timeout: timeout, port: port)
            for play in [scenarios.one, scenarios.two, scenarios.threeA, scenarios.threeB,
                         scenarios.four, scenarios.five, scenarios.six, scenarios.sevenA, scenarios.sevenB] {
                let row = try play()
                printRow([row.number, row.scenario, row.claim, row.outcome, formatElapsed(row.elapsed)], columns)
            }
        } catch {
            throw Exit.report(error)
        }
        printOut("")
        printOut("Refused is not timed out: on Linux a port with nothing listening answers at once with")
        printOut("RST, whatever the timeout. A connect times out only when nobody answers at all (here: a")
        printOut("full accept queue, where the kernel drops the SYN). A default timeout applies only to")
        printOut("sockets created after it is set. A TLS handshake has one limit in all (7a): a timeout")
        printOut("per wait (7b) never fires against a peer that sends its part a byte at a time.")
    }

    private func printRow(_ cells: [String], _ widths: [Int]) {
        var line = ""
        for (index, cell) in cells.enumerated() {
            if index < widths.count {
                line += padded(cell, to: max(widths[index], cell.count + 1))
            } else if index == cells.count - 1 {
                line += cell
            } else {
                line += padded(cell, to: max(58, cell.count + 1))
            }
        }
        printOut(line)
    }
}

/// `0.1 ms`, `500.3 ms`, `1.502 s`.
func formatElapsed(_ d: Duration) -> String {
    let ms = Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15
    return ms < 1000 ? fixed(ms, decimals: 1) + " ms" : fixed(ms / 1000, decimals: 3) + " s"
}

/// The scenarios, each a real exchange on loopback.
struct Scenarios {
    let t: Duration
    let timeout: SocketTimeout
    let port: UInt16?

    /// Nothing in the demo may wait past this, even where the OS would wait forever.
    var safety: Duration { t * 3 }

    private var bindAddress: SocketAddress { .ipv4(.loopback, port: port ?? 0) }

    /// A server that has bound its port but never called listen.
    private func boundOnly() throws(SocketError) -> Socket {
        let server = try Socket(.ipv4)
        try server.setOption(.reuseAddress, true)
        try server.bind(to: bindAddress)
        return server
    }

    /// A server listening on the scenario port with `backlog`.
    func listening(backlog: Int = 128) throws(SocketError) -> Socket {
        let server = try boundOnly()
        try server.listen(backlog: backlog)
        return server
    }

    /// Times `body`.
    func timed<R>(_ body: () throws(SocketError) -> R) -> (Duration, Result<R, SocketError>) {
        let start = ContinuousClock.now
        let result: Result<R, SocketError>
        do throws(SocketError) { result = .success(try body()) } catch { result = .failure(error) }
        return (ContinuousClock.now - start, result)
    }

    /// What a connect or accept outcome means, in a few words.
    func describe(_ result: Result<Void, SocketError>, elapsed: Duration) -> String {
        switch result {
        case .success:
            return "connected"
        case .failure(let error) where error.kind == .connectionRefused:
            return elapsed < t ? "refused at once (ECONNREFUSED)" : "refused (ECONNREFUSED)"
        case .failure(let error) where error.kind == .timedOut:
            if error.timeout == safety { return "still waiting after \(formatDuration(safety)): stopped by the demo" }
            let late = elapsed - (error.timeout ?? .zero)
            return "timed out after \(formatDuration(error.timeout ?? .zero)) (\(formatElapsed(late)) late)"
        case .failure(let error):
            return "\(error.kind)"
        }
    }

    /// Connects, with a client made by `makeClient`, to a port that is bound but not
    /// listening, and reports what happened.
    private func connectToBoundOnly(
        _ number: String, _ scenario: String, claim: String,
        makeClient: () throws(SocketError) -> Socket
    ) throws(SocketError) -> Demo.Row {
        let server = try boundOnly()
        defer { server.close() }
        let target = try server.localAddress
        let client = try makeClient()
        defer { client.close() }
        let (elapsed, result) = timed { () throws(SocketError) in try client.connect(to: target, deadline: .now + safety) }
        return .init(number: number, scenario: scenario, claim: claim,
                     outcome: describe(result, elapsed: elapsed), elapsed: elapsed)
    }

    func one() throws(SocketError) -> Demo.Row {
        try connectToBoundOnly("1", "connect, no timeout; port bound, not listening", claim: "waits forever") {
            () throws(SocketError) in
            let client = try Socket(.ipv4)
            client.timeout = .never
            return client
        }
    }

    func two() throws(SocketError) -> Demo.Row {
        try connectToBoundOnly("2", "the same, client timeout \(timeout)", claim: "TimeoutError after \(timeout)") {
            () throws(SocketError) in
            let client = try Socket(.ipv4)
            client.timeout = timeout
            return client
        }
    }

    func threeA() throws(SocketError) -> Demo.Row {
        try connectToBoundOnly("3a", "the same, default timeout set before the socket", claim: "TimeoutError after \(timeout)") {
            () throws(SocketError) in
            let saved = Socket.defaultTimeout
            defer { Socket.defaultTimeout = saved }
            Socket.defaultTimeout = timeout
            return try Socket(.ipv4)  // created after the default was set: it applies
        }
    }

    /// The common mistake: the default is set after the socket exists, so it does not
    /// apply. Against a peer that never answers, the connect would wait forever; the demo
    /// stops it by closing the socket from another thread.
    func threeB() throws(SocketError) -> Demo.Row {
        let (server, fillers, target) = try fullQueue()
        defer { server.close(); fillers.forEach { $0.close() } }
        let saved = Socket.defaultTimeout
        defer { Socket.defaultTimeout = saved }
        let client = try Socket(.ipv4)
        Socket.defaultTimeout = timeout  // too late for `client`
        let applied = client.timeout
        startThread { [safety] in
            sleepThread(for: safety)
            client.close()
        }
        let (elapsed, result) = timed { () throws(SocketError) in try client.connect(to: target) }
        let outcome: String
        switch result {
        case .failure(let error) where error.kind == .closed:
            outcome = "not applied (timeout: \(applied)): stopped by close() at \(formatDuration(safety))"
        default:
            outcome = describe(result, elapsed: elapsed)
        }
        return .init(number: "3b", scenario: "default set after the socket; peer never answers",
                     claim: "TimeoutError after \(timeout)", outcome: outcome, elapsed: elapsed)
    }

    func four() throws(SocketError) -> Demo.Row {
        let server = try listening()
        defer { server.close() }
        server.timeout = timeout
        let (elapsed, result) = timed { () throws(SocketError) in _ = try server.accept(deadline: .now + safety) }
        return .init(number: "4", scenario: "accept with timeout \(timeout), nobody connects",
                     claim: "TimeoutError after \(timeout)", outcome: describe(result, elapsed: elapsed), elapsed: elapsed)
    }

    func five() throws(SocketError) -> Demo.Row {
        let (server, fillers, target) = try fullQueue()
        defer { server.close(); fillers.forEach { $0.close() } }
        let client = try Socket(.ipv4)
        defer { client.close() }
        client.timeout = timeout
        let (elapsed, result) = timed { () throws(SocketError) in try client.connect(to: target, deadline: .now + safety) }
        return .init(number: "5", scenario: "connect with timeout \(timeout); accept queue full",
                     claim: "TimeoutError after \(timeout)", outcome: describe(result, elapsed: elapsed), elapsed: elapsed)
    }

    func six() throws(SocketError) -> Demo.Row {
        let server = try listening()
        defer { server.close() }
        server.timeout = timeout
        let target = try server.localAddress
        let message = Array("hello".utf8)
        let (elapsed, result) = timed { () throws(SocketError) -> [UInt8] in
            let client = try Socket(.ipv4)
            defer { client.close() }
            client.timeout = timeout
            try client.connect(to: target)  // completes in the kernel's queue; accept follows
            let (connection, _) = try server.accept()
            defer { connection.close() }
            connection.timeout = timeout
            try client.sendAll(message)
            try connection.sendAll(try connection.receive(exactly: message.count))
            return try client.receive(exactly: message.count)
        }
        let outcome: String
        switch result {
        case .success(let echoed): outcome = "accepted; echoed \"\(String(decoding: echoed, as: UTF8.self))\""
        case .failure(let error): outcome = "\(error)"
        }
        return .init(number: "6", scenario: "accept within the timeout, echo a message",
                     claim: "works", outcome: outcome, elapsed: elapsed)
    }

    /// A listener with a backlog of 0 whose queue has been filled: Linux queues one
    /// connection, then drops further SYNs, so the next connect hears nothing at all.
    private func fullQueue() throws(SocketError) -> (Socket, [Socket], SocketAddress) {
        let server = try listening(backlog: 0)
        let target = try server.localAddress
        var fillers: [Socket] = []
        for _ in 0..<16 {  // bounded: Linux needs one or two
            let filler = try Socket(.ipv4)
            fillers.append(filler)
            do {
                try filler.connect(to: target, deadline: .now + .milliseconds(50))
            } catch where error.kind == .timedOut {
                return (server, fillers, target)
            }
        }
        return (server, fillers, target)
    }
}
