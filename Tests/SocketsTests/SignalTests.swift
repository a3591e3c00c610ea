import Foundation
import Sockets
import Synchronization
import Testing

/// Signals caught by the test handler (an atomic is async-signal-safe).
private let signalsCaught = Atomic<Int>(0)

/// Installs a SIGUSR1 handler. Without SA_RESTART every signal interrupts whatever system
/// call the target thread is in; with it the kernel restarts some calls itself — but never
/// a socket call bounded by SO_RCVTIMEO/SO_SNDTIMEO (signal(7)), which the library uses.
/// The test configures the process; the library never does.
private func installHandler(restart: Bool) {
    var action = sigaction()
    action.__sigaction_handler.sa_handler = { _ in signalsCaught.add(1, ordering: .relaxed) }
    sigemptyset(&action.sa_mask)
    action.sa_flags = restart ? SA_RESTART : 0
    sigaction(SIGUSR1, &action, nil)
}

/// Runs `body` on a thread that receives SIGUSR1 every millisecond while it runs
/// (`pthread_kill`, at most 10,000 signals). Returns the body's result and the signals sent.
private func underSignalStorm<T: Sendable>(
    restart: Bool = false, _ body: @escaping @Sendable () throws -> T
) throws -> (T, Int) {
    installHandler(restart: restart)
    let target = Mutex<pthread_t?>(nil)
    let finished = Atomic<Bool>(false)
    let work = Background { () throws -> T in
        setSignal(SIGUSR1, SIG_UNBLOCK)  // or the storm would never interrupt anything
        target.withLock { $0 = pthread_self() }
        defer { finished.store(true, ordering: .releasing) }
        return try body()
    }
    var sent = 0
    while !finished.load(ordering: .acquiring) && sent < 10_000 {
        if let thread = target.withLock({ $0 }) {
            pthread_kill(thread, SIGUSR1)
            sent += 1
        }
        usleep(1000)
    }
    return (try work.value(within: .seconds(30)), sent)
}

@Suite("signals neither shorten nor lengthen a timeout")
struct SignalTests {
    @Test("a timed accept under a 1 kHz signal storm times out on time, with no spurious error",
          arguments: [false, true])
    func acceptUnderStorm(restart: Bool) throws {
        let (server, _) = try makeListener()
        server.timeout = try .after(.milliseconds(300))
        let before = signalsCaught.load(ordering: .relaxed)
        let ((kind, elapsed), sent) = try underSignalStorm(restart: restart) { () -> (SocketError.Kind?, Duration) in
            let start = ContinuousClock.now
            do { _ = try server.accept(); return (nil, ContinuousClock.now - start) } catch let e as SocketError {
                return (e.kind, ContinuousClock.now - start)
            }
        }
        #expect(kind == .timedOut)
        expectTiming(elapsed, atLeast: .milliseconds(300))
        #expect(sent >= 50, "only \(sent) signals sent")
        #expect(signalsCaught.load(ordering: .relaxed) - before >= 50)
    }

    @Test("a timed receive under a 1 kHz signal storm times out on time, with no spurious error",
          arguments: [false, true])
    func receiveUnderStorm(restart: Bool) throws {
        let (client, server) = try connectedPair()
        defer { server.close() }  // kept open, so nothing arrives and the receive must wait
        client.timeout = try .after(.milliseconds(300))
        let before = signalsCaught.load(ordering: .relaxed)
        let ((kind, elapsed), sent) = try underSignalStorm(restart: restart) { () -> (SocketError.Kind?, Duration) in
            let start = ContinuousClock.now
            do { _ = try client.receive(upTo: 10); return (nil, ContinuousClock.now - start) } catch let e as SocketError {
                return (e.kind, ContinuousClock.now - start)
            }
        }
        #expect(kind == .timedOut)
        expectTiming(elapsed, atLeast: .milliseconds(300))
        #expect(sent >= 50)
        #expect(signalsCaught.load(ordering: .relaxed) - before >= 50)
    }

    @Test("data arriving during a signal storm is received intact", arguments: [false, true])
    func dataUnderStorm(restart: Bool) throws {
        let (client, server) = try connectedPair()
        client.timeout = try .after(.seconds(10))
        let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0) }
        let sender = Background {
            pause(.milliseconds(50))
            try server.sendAll(payload)
        }
        let (received, _) = try underSignalStorm(restart: restart) { try client.receive(exactly: payload.count) }
        try sender.value()
        #expect(received == payload)
    }
}
