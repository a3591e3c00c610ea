import Foundation
@testable import Sockets
import Synchronization
import Testing

// A second independent review, of the first audit's fixes: final states (hang-up, error)
// that must not make a socket spin once a would-block shows them stale, the stale-timer
// count, and a lingering close inherited from a listener. The first four failed every time
// before the fixes.

/// Counts the seam's attempts of `call` on `fd` from its creation until `stop()`.
private final class AttemptCounter: Sendable {
    let count = Atomic<Int>(0)
    init(_ call: Seam.Syscall, fd: CInt) {
        Seam.install { [self] c, f, _ in
            if c == call && f == fd { self.count.add(1, ordering: .relaxed) }
            return nil
        }
    }
    func stop() { Seam.install(nil) }
}

private func fdOf(_ socket: Socket) -> CInt { socket.fd }

/// The seam's attempts of `call` on `fd` while `body` runs, and the process's CPU time meanwhile.
private func attempts(of call: Seam.Syscall, on fd: CInt, during body: () async -> Void) async -> (Int, Duration) {
    let counter = AttemptCounter(call, fd: fd)
    defer { counter.stop() }
    let before = processCPUTime()
    await body()
    return (counter.count.load(ordering: .relaxed), processCPUTime() - before)
}

@Suite("async: final states, the timer sweep, inherited linger (second review)", .serialized)
struct ReviewFTests {
    /// A connected UDP socket that got an ICMP port-unreachable: EPOLLERR sets readClosed for
    /// good (Poller.swift:104, Registration.swift:81). The next receive reports ECONNREFUSED
    /// and clears SO_ERROR; every later receive then finds readClosed set, recv(2) says
    /// EAGAIN, park (Reactor.swift:246) returns .ready at once: a busy loop until the timeout.
    @Test("UDP: after an ICMP error was reported, a receive with nothing to read sleeps (no busy loop)")
    func udpErrorThenIdleReceive() async throws {
        let closed = try Socket(.ipv4, .datagram)
        try closed.bind(to: .ipv4(.loopback, port: 0))
        let deadAddress = try closed.localAddress
        closed.close()

        let socket = try Socket(.ipv4, .datagram)
        defer { socket.close() }
        try socket.bind(to: .ipv4(.loopback, port: 0))
        try await socket.connect(to: deadAddress, deadline: .now + .seconds(1))
        socket.timeout = .never
        // Register with a reactor first (a receive that times out), then provoke the ICMP error.
        _ = try? await socket.receiveDatagram(upTo: 16, deadline: .now + .milliseconds(20))
        _ = try await socket.send([1, 2, 3])
        try await Task.sleep(for: .milliseconds(50))
        // The error is reported once (connectionRefused) ...
        await expectAsyncFailure(.connectionRefused) { _ = try await socket.receiveDatagram(upTo: 16, deadline: .now + .seconds(2)) }
        // ... and then a receive with nothing to read must wait, not spin.
        let (attempts, used) = await attempts(of: .recvFrom, on: fdOf(socket)) {
            await expectAsyncFailure(.timedOut) { _ = try await socket.receiveDatagram(upTo: 16, deadline: .now + .milliseconds(300)) }
        }
        #expect(attempts < 10, "\(attempts) recvfrom attempts in a 300 ms receive; \(used) of CPU")
    }

    /// The same for a Unix stream listener the user shut down (shutdown(SHUT_RDWR) on a Unix
    /// listener leaves it listening: accept(2) says EAGAIN, poll says HUP|RDHUP|IN).
    @Test("Unix listener after shutdown(.both): an async accept waits (or fails), it does not spin")
    func unixListenerShutdown() async throws {
        let path = NSTemporaryDirectory() + "sockets-reviewF-\(getpid()).sock"
        unlink(path)
        defer { unlink(path) }
        let listener = try Socket(.unix)
        defer { listener.close() }
        try listener.bind(to: SocketAddress(path))
        try listener.listen()
        listener.timeout = .never
        // Registered: an accept that times out.
        _ = try? await listener.accept(deadline: .now + .milliseconds(20))
        try listener.shutdown(.both)
        try await Task.sleep(for: .milliseconds(20))
        let (attempts, used) = await attempts(of: .accept, on: fdOf(listener)) {
            do { _ = try await listener.accept(deadline: .now + .milliseconds(300)) } catch {}
        }
        #expect(attempts < 10, "\(attempts) accept attempts in a 300 ms accept; \(used) of CPU")
    }

    /// A Unix stream socket not yet connected is in the CLOSE state: registering it reports
    /// EPOLLHUP at once. Its connect(2) succeeds synchronously and forgetFinalStates()
    /// (Socket+AsyncConnection.swift) clears readClosed/writeClosed — but a HUP the reactor
    /// harvested before the connect and delivers after the clear sets them again, for good.
    @Test("Unix connect: a stale hang-up from before the connect does not make receives spin (race, 3000 rounds)")
    func unixConnectStaleHangUp() async throws {
        let path = NSTemporaryDirectory() + "sockets-reviewF-c-\(getpid()).sock"
        unlink(path)
        defer { unlink(path) }
        let address = try SocketAddress(path)
        let listener = try Socket(.unix)
        defer { listener.close() }
        try listener.bind(to: address)
        try listener.listen(backlog: 4096)
        var stale = 0
        var spins = 0
        for _ in 0..<3000 {
            let client = try Socket(.unix)
            client.timeout = .never
            try await client.connect(to: address, deadline: .now + .seconds(2))
            let server = try await listener.accept(deadline: .now + .seconds(2)).0
            // Let the reactor deliver what it harvested.
            try await Task.sleep(for: .microseconds(200))
            let bits = client.state.withLock { $0.registration }!.observe()
            if bits & (Registration.readClosed | Registration.writeClosed) != 0 {
                stale += 1
                if stale == 1 {
                    // What it costs: a receive with nothing to read spins until its deadline.
                    let counter = AttemptCounter(.recv, fd: fdOf(client))
                    await expectAsyncFailure(.timedOut) { _ = try await client.receive(upTo: 1, deadline: .now + .milliseconds(200)) }
                    counter.stop()
                    spins = counter.count.load(ordering: .relaxed)
                }
            }
            client.close()
            server.close()
        }
        #expect(spins < 10, "\(stale) of 3000 connected Unix sockets kept a stale hang-up; the first one's 200 ms receive made \(spins) recv attempts")
    }

    /// The sweep's bookkeeping: `staleTimers` must equal the stale registration entries in the
    /// heap (else sweeps come too late or on every deregister), and the heap stays bounded
    /// by live entries + twice the stale ones + 64 at every deregister.
    @Test("timer heap: staleTimers counts exactly the stale entries, through replacement, close, cancel and sweeps")
    func staleCountExact() async throws {
        let reactor = try Reactor.next()
        var pairs: [(Socket, Socket)] = []
        for round in 0..<40 {
            // 20 pairs, each with a parked receive (deadline far away), some then made earlier.
            let batch = try (0..<20).map { _ in try Socket.pair() }
            pairs.append(contentsOf: batch)
            await withTaskGroup(of: Void.self) { group in
                for (i, (a, _)) in batch.enumerated() {
                    group.addTask(executorPreference: reactor) {
                        _ = try? await a.receive(upTo: 1, deadline: .now + .seconds(60 + i))
                    }
                    group.addTask(executorPreference: reactor) {
                        // An earlier deadline on the same socket and direction: replaces the entry.
                        try? await Task.sleep(for: .milliseconds(5))
                        _ = try? await a.receive(upTo: 1, deadline: .now + .seconds(30))
                    }
                }
                try? await Task.sleep(for: .milliseconds(30))
                // End the waits: half by data, half by cancellation.
                for (i, (_, b)) in batch.enumerated() where i % 2 == 0 { _ = try? await b.send([1, 2]) }
                if round % 2 == 0 { group.cancelAll() }
                for (i, (_, b)) in batch.enumerated() where i % 2 == 1 { _ = try? await b.send([1, 2]) }
            }
            // Close a third of all pairs so far.
            for (k, (a, b)) in pairs.enumerated() where k % 3 == round % 3 { a.close(); b.close() }
            pairs.removeAll { $0.0.isClosed }
            let (counted, actual, total) = reactor.shared.withLock { s -> (Int, Int, Int) in
                var copy = s.timers
                var stale = 0
                copy.keep { entry in
                    if entry.alarm != nil { return true }
                    let slot = Int(entry.token & 0xffff_ffff)
                    let live = s.slots[slot].map { r in
                        r.token == entry.token && r.withList(entry.sequence & 1 == 0 ? .receive : .send) { $0.timerSequence == entry.sequence }
                    } ?? false
                    if !live { stale += 1 }
                    return live
                }
                return (s.staleTimers, stale, s.timers.count)
            }
            #expect(counted == actual, "round \(round): staleTimers \(counted), stale entries \(actual), heap \(total)")
        }
        for (a, b) in pairs { a.close(); b.close() }
    }

    /// SO_LINGER set on a listener is inherited by the connections it accepts (Linux copies
    /// the socket), but `State.lingers` (CallAccounting.swift:46) is set only by setOption on
    /// that very socket: an accepted connection closed on a reactor thread — as serve does for
    /// every connection — blocks the reactor in close(2) for the linger time.
    @Test("close() on a reactor thread of a connection accepted from a lingering listener does not stall the reactor")
    func inheritedLingerStallsReactor() async throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        try listener.setOption(.linger, .seconds(1))
        let client = try Socket(.ipv4)  // never reads
        defer { client.close() }
        client.timeout = .never
        try await client.connect(to: address, deadline: .now + .seconds(2))
        let (server, _) = try await listener.accept(deadline: .now + .seconds(2))
        #expect(try server.option(.linger) == .seconds(1), "the accepted socket inherited SO_LINGER")
        // Fill the path so close(2) has unsent data to linger on.
        server.timeout = .nonBlocking
        let chunk = [UInt8](repeating: 1, count: 65_536)
        var n = 0
        while n < 10_000 { do throws(SocketError) { _ = try await server.send(chunk); n += 1 } catch { break } }
        let (stalled, closeTook) = try await reactorStall(closing: server, on: try Reactor.next())
        #expect(stalled < .milliseconds(200), "the reactor was stalled \(stalled) (close() took \(closeTook))")
    }
}
