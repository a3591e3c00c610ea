import Foundation
import Sockets
import Synchronization
import Testing

/// `close()` from another thread ends **every** waiting call, whatever the call, family, type
/// and way of waiting, promptly and with ``SocketError/Kind/closed`` — never success, never a
/// timeout (SEMANTICS.md, "Closing").
///
/// One row per combination that makes sense: accept and connect on streams; send, sendAll,
/// receive(upTo:) and receive(exactly:) on streams; send(_:to:) and receiveDatagram on
/// datagram sockets; each with the socket's timeout `.never`, a 30 s socket timeout, and a
/// 30 s per-call deadline on a socket whose timeout is `.never`. Each row first makes the call
/// truly wait (and checks that it does), closes the socket from this thread, and measures the
/// time from `close()` until the call returns, in the waiting thread itself. It also checks
/// that the call was asleep, not spinning: its thread may use at most 50 ms of CPU
/// (`getrusage(RUSAGE_THREAD)`) over its ~100 ms wait.
///
/// UDP `send(_:to:)` has no row: on loopback a UDP send never waits (the loopback device
/// orphans every packet at once, so the send buffer never fills), and no test can make it.
@Suite("close wakes every waiting call: each call × family and type × way of waiting", .serialized)
struct CloseEveryWaitTests {
    enum Call: String, Sendable, CaseIterable {
        case accept, connect, send, sendAll
        case receiveUpTo = "receive(upTo:)"
        case receiveExactly = "receive(exactly:)"
        case sendTo = "send(_:to:)"
        case receiveDatagram
    }

    enum Transport: String, Sendable, CaseIterable {
        case tcp4 = "TCP IPv4"
        case tcp6 = "TCP IPv6"
        case udp4 = "UDP IPv4"
        case unixStream = "Unix stream"
        case unixDatagram = "Unix datagram"

        var isStream: Bool { self == .tcp4 || self == .tcp6 || self == .unixStream }
        var family: SocketAddress.Family {
            switch self {
            case .tcp4, .udp4: .ipv4
            case .tcp6: .ipv6
            case .unixStream, .unixDatagram: .unix
            }
        }
    }

    enum Mode: String, Sendable, CaseIterable {
        case never = "timeout .never"
        case timeout = "timeout 30 s"
        case deadline = "deadline 30 s"
    }

    struct Row: Sendable, CustomTestStringConvertible {
        let call: Call
        let transport: Transport
        let mode: Mode
        var testDescription: String { "\(call.rawValue), \(transport.rawValue), \(mode.rawValue)" }
    }

    /// Every combination that makes sense (see the suite's comment).
    static let rows: [Row] = Transport.allCases.flatMap { transport -> [Row] in
        let calls: [Call] = switch transport {
        case .tcp4, .tcp6, .unixStream: [.accept, .connect, .send, .sendAll, .receiveUpTo, .receiveExactly]
        case .udp4: [.receiveDatagram]
        case .unixDatagram: [.sendTo, .receiveDatagram]
        }
        return calls.flatMap { call in Mode.allCases.map { Row(call: call, transport: transport, mode: $0) } }
    }

    @Test("close() from another thread ends the waiting call with .closed within 1 s", arguments: rows)
    func closeEndsTheWait(_ row: Row) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let scene = try Scene.make(row, in: directory.path)
        defer { scene.others.forEach { $0.close() } }

        switch row.mode {
        case .never, .deadline: scene.socket.timeout = .never
        case .timeout: scene.socket.timeout = try .after(.seconds(30))
        }
        let perCall = row.mode == .deadline
        let call = scene.call
        let waiter = Background { () -> (Ending, Duration) in
            let cpu = threadCPU()
            let ending = Ending.of { try call(perCall ? .now + .seconds(30) : nil) }
            return (ending, threadCPU() - cpu)
        }
        pause(.milliseconds(100))  // long enough for the call to be asleep
        let closedAt = ContinuousClock.now
        scene.socket.close()

        guard let (ending, cpu) = try? waiter.value(within: .seconds(2)) else {
            // Still asleep: close() did not reach it. Free it by other means, so that the
            // thread ends and the row can say what the call would have reported.
            scene.unstick()
            let late = try? waiter.value(within: .seconds(5))
            Issue.record("\(row.testDescription): still waiting 2 s after close(); once unstuck it ended with: \(late?.0.summary ?? "nothing (abandoned)")")
            return
        }
        let latency = ending.at - closedAt
        #expect(ending.at >= closedAt, "\(row.testDescription): the call returned before close() (it never waited): \(ending.summary)")
        #expect(ending.error?.kind == .closed, "\(row.testDescription): expected .closed, got \(ending.summary)")
        #expect(latency < .seconds(1), "\(row.testDescription): returned \(latency) after close()")
        // Asleep, not spinning: a wait of some 100 ms costs the waiting thread next to no CPU.
        #expect(cpu < .milliseconds(50), "\(row.testDescription): the waiting thread used \(cpu) of CPU in its ~100 ms wait")
        let (count, median, maximum) = latencies.withLock { all in
            all.append(latency)
            let sorted = all.sorted()
            return (sorted.count, sorted[sorted.count / 2], sorted.last!)
        }
        print("close latency [\(row.testDescription)]: \(microseconds(latency)) µs (\(count) rows so far: median \(microseconds(median)) µs, max \(microseconds(maximum)) µs)")
    }
}

/// Every row's time from close() to the call's return, for the running median and maximum.
private let latencies = Mutex<[Duration]>([])

private func microseconds(_ d: Duration) -> Int64 {
    d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000
}

// MARK: - scenes

/// A call set up to wait, and what it needs.
private struct Scene {
    /// The socket whose call waits and which the test closes.
    var socket: Socket
    /// The waiting call, given the per-call deadline (nil: none).
    var call: @Sendable (ContinuousClock.Instant?) throws -> Void
    /// Ends the wait by other means (data, a connection, room), for a call close() failed to
    /// end, so that its thread can finish.
    var unstick: () -> Void
    /// Everything else to close afterwards.
    var others: [Socket]

    static func make(_ row: CloseEveryWaitTests.Row, in directory: String) throws -> Scene {
        let family = row.transport.family
        switch (row.call, row.transport) {
        case (.accept, let transport) where transport.isStream:
            let (listener, address) = try family == .unix ? unixListener(at: directory + "/listener", backlog: 16) : makeListener(family)
            return Scene(
                socket: listener, call: { deadline in _ = try listener.accept(deadline: deadline) },
                unstick: { _ = try? Socket(family).connect(to: address, deadline: .now + .seconds(1)) }, others: [])

        case (.connect, let transport) where transport.isStream:
            let (listener, fillers, address) = try family == .unix
                ? fullUnixListener(at: directory + "/listener") : fullTCPListener(family)
            let client = try Socket(family)
            return Scene(
                socket: client, call: { deadline in try client.connect(to: address, deadline: deadline) },
                unstick: { acceptAll(listener) }, others: [listener] + fillers)

        case (.send, let transport) where transport.isStream, (.sendAll, let transport) where transport.isStream:
            let (sender, receiver) = try smallBufferPair(transport)
            let filled = try fillSendPath(sender)
            #expect(filled > 0)
            let chunk = [UInt8](repeating: 1, count: 65_536)
            let all = row.call == .sendAll
            return Scene(
                socket: sender,
                call: { deadline in
                    if all { try sender.sendAll(chunk, deadline: deadline) } else { _ = try sender.send(chunk, deadline: deadline) }
                },
                unstick: { drain(receiver, within: .seconds(1)) }, others: [receiver])

        case (.receiveUpTo, let transport) where transport.isStream, (.receiveExactly, let transport) where transport.isStream:
            let (client, server) = try transport == .unixStream ? Socket.pair() : connectedPair(family)
            let exactly = row.call == .receiveExactly
            if exactly { try server.sendAll([1, 2, 3]) }  // a part arrives; the rest never does
            return Scene(
                socket: client,
                call: { deadline in
                    if exactly { _ = try client.receive(exactly: 10, deadline: deadline) } else { _ = try client.receive(upTo: 10, deadline: deadline) }
                },
                unstick: { try? server.sendAll([UInt8](repeating: 4, count: 10)) }, others: [server])

        case (.receiveDatagram, .udp4), (.receiveDatagram, .unixDatagram):
            let receiver = try Socket(family, .datagram)
            let address: SocketAddress = family == .unix ? .unix(path: directory + "/receiver") : .ipv4(.loopback, port: 0)
            try receiver.bind(to: address)
            let bound = try receiver.localAddress
            return Scene(
                socket: receiver, call: { deadline in _ = try receiver.receiveDatagram(deadline: deadline) },
                unstick: { _ = try? Socket(family, .datagram).send([1], to: bound) }, others: [])

        case (.sendTo, .unixDatagram):
            let (receiver, fillers, address) = try fullUnixDatagramReceiver(at: directory + "/receiver")
            let sender = try Socket(.unix, .datagram)
            return Scene(
                socket: sender, call: { deadline in _ = try sender.send([1], to: address, deadline: deadline) },
                unstick: { drain(receiver, within: .seconds(1)) }, others: [receiver] + fillers)

        default:
            throw TestFailure("no scene for \(row.testDescription)")
        }
    }
}

// MARK: - helpers (this file's own)

/// A listening Unix stream socket bound at `path`.
private func unixListener(at path: String, backlog: Int) throws -> (Socket, SocketAddress) {
    let listener = try Socket(.unix)
    listener.timeout = .never
    let address = SocketAddress.unix(path: path)
    try listener.bind(to: address)
    try listener.listen(backlog: backlog)
    return (listener, address)
}

/// A TCP listener (IPv4 or IPv6) with a backlog of 0 whose queue is full: a further SYN is
/// dropped, so a connect hears nothing (checked: a filler's connect timed out).
private func fullTCPListener(_ family: SocketAddress.Family) throws -> (Socket, [Socket], SocketAddress) {
    let (listener, address) = try makeListener(family, backlog: 0)
    var fillers: [Socket] = []
    for _ in 0..<16 {
        let filler = try Socket(family)
        fillers.append(filler)
        switch attempt({ () throws(SocketError) in try filler.connect(to: address, deadline: .now + .milliseconds(100)) }) {
        case .success: continue
        case .failure(let error) where error.kind == .timedOut: return (listener, fillers, address)
        case .failure(let error): throw error
        }
    }
    throw TestFailure("the \(family) accept queue was not full after 16 connects")
}

/// A connected stream pair (`transport`: TCP IPv4/IPv6 or Unix stream) whose sender has a
/// small send buffer and whose receiver has a small receive buffer, both set explicitly
/// (which also turns off the kernel's autotuning for them): (sender, receiver).
private func smallBufferPair(_ transport: CloseEveryWaitTests.Transport) throws -> (Socket, Socket) {
    if transport == .unixStream {
        let (sender, receiver) = try Socket.pair()
        try sender.setOption(.sendBufferSize, 4096)
        try receiver.setOption(.receiveBufferSize, 4096)
        return (sender, receiver)
    }
    let family = transport.family
    let listener = try Socket(family)
    defer { listener.close() }
    listener.timeout = .never
    try listener.setOption(.receiveBufferSize, 4096)  // inherited by the accepted socket
    try listener.bind(to: family == .ipv6 ? .ipv6(.loopback, port: 0) : .ipv4(.loopback, port: 0))
    try listener.listen(backlog: 1)
    let sender = try Socket(family)
    sender.timeout = .never
    try sender.setOption(.sendBufferSize, 4096)
    try sender.connect(to: try listener.localAddress, deadline: .now + .seconds(5))
    let (receiver, _) = try listener.accept(deadline: .now + .seconds(5))
    receiver.timeout = .never
    #expect(try receiver.option(.receiveBufferSize) <= 16_384)
    return (sender, receiver)
}

/// Sends without waiting until the kernel takes nothing more, and goes on trying every 10 ms
/// until it has taken nothing for 300 ms: on TCP over loopback, delayed acknowledgements and
/// window updates make a little room some 50-100 ms after the path first fills, which a
/// single send would take and return. Returns how many bytes went in. Bounded: throws if the
/// path does not stay full within 5 s.
private func fillSendPath(_ sender: Socket) throws -> Int {
    let saved = sender.timeout
    sender.timeout = .nonBlocking
    defer { sender.timeout = saved }
    let chunk = [UInt8](repeating: 0, count: 1024)
    var total = 0
    let giveUp = ContinuousClock.now + .seconds(5)
    var lastProgress = ContinuousClock.now
    while ContinuousClock.now < giveUp {
        var full = false
        fill: for _ in 0..<10_000 {
            switch attempt({ () throws(SocketError) in try sender.send(chunk) }) {
            case .success(let n): total += n; lastProgress = .now
            case .failure(let error) where error.kind == .wouldBlock: full = true; break fill
            case .failure(let error): throw error
            }
        }
        guard full else { throw TestFailure("the send path took 10,000 KB without filling") }
        if ContinuousClock.now - lastProgress >= .milliseconds(300) { return total }
        pause(.milliseconds(10))
    }
    throw TestFailure("the send path did not stay full for 300 ms within 5 s")
}
