import Foundation
import Sockets
import Synchronization
import Testing

// A 1 kHz setitimer storm: SIGALRM every millisecond to the whole process. The test runner's
// threads block signals, but a thread that does not (the main thread, perhaps) may take one;
// the handler passes those on to the thread under test, so every alarm interrupts it.

/// The thread the storm is aimed at (a pthread_t), 0 when none; alarms it took.
private let stormTarget = Atomic<UInt>(0)
private let alarmsTaken = Atomic<Int>(0)

/// Installs the SIGALRM handler, with or without SA_RESTART. Async-signal-safe: atomics,
/// pthread_self and pthread_kill (tgkill) only.
private func installAlarmHandler(restart: Bool) {
    var action = sigaction()
    action.__sigaction_handler.sa_handler = { _ in
        let target = stormTarget.load(ordering: .relaxed)
        if target == 0 { return }
        if pthread_self() == target {
            alarmsTaken.add(1, ordering: .relaxed)
        } else {
            pthread_kill(target, SIGALRM)
        }
    }
    sigemptyset(&action.sa_mask)
    action.sa_flags = restart ? SA_RESTART : 0
    sigaction(SIGALRM, &action, nil)
}

private func setAlarmInterval(microseconds: Int) {
    var value = itimerval()
    value.it_interval.tv_usec = microseconds
    value.it_value.tv_usec = microseconds
    setitimer(__itimer_which_t(ITIMER_REAL.rawValue), &value, nil)
}

/// Makes the calling thread take SIGALRM and be the storm's target, and starts the 1 kHz
/// storm if `storm`; returns the alarms taken so far, for `endStorm`.
private func aimStorm(_ storm: Bool) -> Int {
    setSignal(SIGALRM, SIG_UNBLOCK)
    let before = alarmsTaken.load(ordering: .relaxed)
    stormTarget.store(UInt(pthread_self()), ordering: .relaxed)
    if storm { setAlarmInterval(microseconds: 1000) }
    return before
}

/// Stops the storm and blocks SIGALRM again on the calling thread; returns the alarms it took
/// since `aimStorm` returned `before`.
private func endStorm(since before: Int) -> Int {
    setAlarmInterval(microseconds: 0)
    stormTarget.store(0, ordering: .relaxed)
    setSignal(SIGALRM, SIG_BLOCK)
    return alarmsTaken.load(ordering: .relaxed) - before
}

/// Runs `operation` on a thread that takes SIGALRM, under a 1 kHz storm or not; returns how
/// it ended, how long it took, and the alarms it took.
private func measure(
    storm: Bool, _ operation: @escaping @Sendable () throws -> Void
) throws -> (kind: SocketError.Kind?, elapsed: Duration, alarms: Int) {
    let run = Background { () -> (SocketError.Kind?, Duration, Int) in
        let before = aimStorm(storm)
        let start = ContinuousClock.now
        var kind: SocketError.Kind?
        do { try operation() } catch let error as SocketError { kind = error.kind }
        let elapsed = ContinuousClock.now - start
        return (kind, elapsed, endStorm(since: before))
    }
    let (kind, elapsed, alarms) = try run.value(within: .seconds(20))
    return (kind, elapsed, alarms)
}

/// Fills `client`'s send path with non-blocking sends until one fails with `.wouldBlock`,
/// then restores `timeout`. Throws unless the path ends up full — the precondition the
/// sendAll case relies on.
private func fillSendPath(_ client: Socket, chunk: [UInt8], then timeout: SocketTimeout) throws {
    client.timeout = .nonBlocking
    defer { client.timeout = timeout }
    for _ in 0..<4096 {
        do throws(SocketError) {
            _ = try client.send(chunk)
        } catch {
            guard error.kind == .wouldBlock else { throw error }
            return  // full: the next send would wait
        }
    }
    throw TestFailure("the send path took 4096 × \(chunk.count) bytes without filling: are the buffers still growing?")
}

private func median(_ values: [Duration]) -> Duration { values.sorted()[values.count / 2] }

private func ms(_ d: Duration) -> String { String(format: "%.3f ms", Double(d / .microseconds(1)) / 1000) }

@Suite("fault suite: a 1 kHz setitimer storm", .serialized)
struct SignalStormTests {
    static let timeout = Duration.milliseconds(100)
    static let trials = 7

    /// Each operation, set up to time out after `timeout` (the kernel-timer path: a first
    /// sleep in the kernel, then ppoll for the rest, which the storm interrupts a hundred times).
    enum Operation: String, CaseIterable, CustomStringConvertible {
        case accept, connect, receive, sendAll
        var description: String { rawValue }
    }

    @Test("timed accept, connect, receive and sendAll: no spurious error, never early, median lateness within 1 ms of a quiet run",
          arguments: [false, true], Operation.allCases)
    func storm(restart: Bool, operation: Operation) throws {
        installAlarmHandler(restart: restart)
        let timeout = try SocketTimeout.after(Self.timeout)
        let (listener, _) = try makeListener()
        listener.timeout = timeout
        let (server, fillers, fullAddress) = try fullQueueListener()
        // The peer never sends and never reads; both ends have small, fixed buffers (see
        // smallBufferPair in IOTests.swift), so the path holds a few KiB whatever the
        // machine's tcp_wmem/tcp_rmem and however autotuning would have grown them.
        let (client, peer) = try smallBufferPair()
        defer { ([listener, server, client, peer] + fillers).forEach { $0.close() } }
        let chunk = [UInt8](repeating: 7, count: 65_536)
        // Even a path that drained to empty could not take one chunk: sendAll can never
        // succeed, only time out. (Bytes in flight are counted in the sender's queue.)
        let capacity = try client.option(.sendBufferSize) + peer.option(.receiveBufferSize)
        try #require(capacity < chunk.count / 2, "the path holds \(capacity) bytes, not far below one \(chunk.count)-byte chunk")
        client.timeout = timeout

        let body: @Sendable () throws -> Void = switch operation {
        case .accept: { _ = try listener.accept() }
        case .connect: {
            let socket = try Socket(.ipv4)
            socket.timeout = timeout
            try socket.connect(to: fullAddress)
        }
        case .receive: { _ = try client.receive(upTo: 16) }
        case .sendAll: { try client.sendAll(chunk) }
        }
        var quiet: [Duration] = []
        var stormy: [Duration] = []
        var alarms = 0
        for _ in 0..<Self.trials {  // interleaved, so that load on the machine hits both alike
            for storm in [false, true] {
                // Fill the send path before every sendAll, and check it is full, so that each
                // one must wait from its first byte (a timed-out sendAll may have left room).
                if operation == .sendAll { try fillSendPath(client, chunk: chunk, then: timeout) }

                let (kind, elapsed, taken) = try measure(storm: storm, body)
                #expect(kind == .timedOut, "\(operation) ended in \(kind.map { "\($0)" } ?? "success") (storm: \(storm))")
                #expect(elapsed >= Self.timeout, "\(operation) fired early: \(elapsed) (storm: \(storm))")
                if storm { stormy.append(elapsed - Self.timeout); alarms += taken } else { quiet.append(elapsed - Self.timeout) }
            }
        }
        #expect(alarms >= Self.trials * 30, "only \(alarms) alarms reached the thread in \(Self.trials) storms")
        #expect(median(stormy) <= median(quiet) + .milliseconds(1),
                "median lateness \(ms(median(stormy))) under the storm, \(ms(median(quiet))) without")
        print("fault suite: storm SA_RESTART=\(restart) \(operation): \(alarms) alarms over \(Self.trials) × \(Self.timeout); "
            + "median late \(ms(median(quiet))) quiet, \(ms(median(stormy))) storm")
    }

    @Test("async: a timed receive and accept on a reactor thread that takes the storm: no spurious error, never early, median lateness within 1 ms of a quiet run",
          arguments: [false, true], [Operation.accept, .receive])
    func asyncStorm(restart: Bool, operation: Operation) async throws {
        installAlarmHandler(restart: restart)
        let reactor = try Reactor.next()
        let timeout = try SocketTimeout.after(Self.timeout)
        var quiet: [Duration] = []
        var stormy: [Duration] = []
        var alarms = 0
        for _ in 0..<Self.trials {
            for storm in [false, true] {
                // On the reactor's thread, which unblocks SIGALRM and is the storm's target
                // while the task waits: its epoll_pwait2 is interrupted a hundred times.
                let trial = Task(executorPreference: reactor) { () -> (SocketError.Kind?, Duration, Int) in
                    let (listener, _) = try makeListener()
                    let (client, peer) = try Socket.pair()
                    defer { [listener, client, peer].forEach { $0.close() } }
                    listener.timeout = timeout
                    client.timeout = timeout
                    let before = aimStorm(storm)
                    let start = ContinuousClock.now
                    var kind: SocketError.Kind?
                    do throws(SocketError) {
                        if operation == .accept { _ = try await listener.accept() } else { _ = try await client.receive(upTo: 16) }
                    } catch {
                        kind = error.kind
                    }
                    let elapsed = ContinuousClock.now - start
                    return (kind, elapsed, endStorm(since: before))
                }
                let (kind, elapsed, taken) = try await value(of: trial, within: .seconds(20))
                #expect(kind == .timedOut, "\(operation) ended in \(kind.map { "\($0)" } ?? "success") (storm: \(storm))")
                #expect(elapsed >= Self.timeout, "\(operation) fired early: \(elapsed) (storm: \(storm))")
                if storm { stormy.append(elapsed - Self.timeout); alarms += taken } else { quiet.append(elapsed - Self.timeout) }
            }
        }
        #expect(alarms >= Self.trials * 30, "only \(alarms) alarms reached the reactor thread in \(Self.trials) storms")
        #expect(median(stormy) <= median(quiet) + .milliseconds(1),
                "median lateness \(ms(median(stormy))) under the storm, \(ms(median(quiet))) without")
        print("fault suite: async storm SA_RESTART=\(restart) \(operation): \(alarms) alarms over \(Self.trials) × \(Self.timeout); "
            + "median late \(ms(median(quiet))) quiet, \(ms(median(stormy))) storm")
    }

    @Test("writing to a peer that reset the connection fails with an error, with SIGPIPE left at its default (fatal) action")
    func noSigpipeWithoutIgnoring() throws {
        // The process-wide action is SIG_DFL for the whole test: if the library let one
        // SIGPIPE through, it would kill this process. The writing thread unblocks SIGPIPE.
        var previous = sigaction()
        var fatal = sigaction()
        fatal.__sigaction_handler.sa_handler = SIG_DFL
        sigaction(SIGPIPE, &fatal, &previous)
        defer { sigaction(SIGPIPE, &previous, nil) }

        let outcome = Background { () -> [SocketError.Kind?] in
            setSignal(SIGPIPE, SIG_UNBLOCK)
            var kinds: [SocketError.Kind?] = []
            func attempt(_ body: () throws -> Void) {
                do { try body(); kinds.append(nil) } catch let error as SocketError { kinds.append(error.kind) } catch {}
            }
            // TCP reset by the peer (SO_LINGER 0), then every way of writing.
            let (client, server) = try connectedPair()
            try server.setOption(.linger, .zero)
            server.close()
            pause(.milliseconds(20))  // the RST is in
            attempt { _ = try client.receive(upTo: 1, deadline: .now + .seconds(1)) }
            attempt { _ = try client.send([1]) }
            attempt { try client.sendAll([UInt8](repeating: 1, count: 100_000)) }
            // A Unix stream pair whose other end is gone.
            let (a, b) = try Socket.pair()
            b.close()
            attempt { _ = try a.send([1]) }
            attempt { try a.sendAll([1, 2, 3]) }
            client.close()
            a.close()
            var pending = sigset_t()
            sigpending(&pending)
            if sigismember(&pending, SIGPIPE) == 1 { kinds.append(.system) }  // one is waiting to kill us
            return kinds
        }
        let kinds = try outcome.value()
        #expect(kinds == [.connectionReset, .brokenPipe, .brokenPipe, .brokenPipe, .brokenPipe])
    }
}
