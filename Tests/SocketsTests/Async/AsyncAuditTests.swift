import Foundation
@testable import Sockets
import Synchronization
import Testing

// The concurrency audit of the async layer (an independent review, 2026-11-26): each test names
// the rule it checks; the ones marked as bugs failed on the first version (3d5d47f).

// MARK: helpers (synchronous on purpose: in async code Swift would pick the async forms)

private func syncSend(_ socket: Socket, _ bytes: [UInt8]) throws { _ = try socket.send(bytes) }
private func syncReceive(_ socket: Socket, _ max: Int, _ deadline: ContinuousClock.Instant) throws -> [UInt8] {
    try socket.receive(upTo: max, deadline: deadline)
}
/// Sends `size`-byte messages without waiting until the socket would block; returns how many.
@discardableResult
private func fillSendBuffer(_ socket: Socket, size: Int = 65_536) -> Int {
    let saved = socket.timeout
    socket.timeout = .nonBlocking
    defer { socket.timeout = saved }
    let chunk = [UInt8](repeating: 1, count: size)
    var n = 0
    while n < 1_000_000, (try? socket.send(chunk)) != nil { n += 1 }
    return n
}
private func syncConnect(_ socket: Socket, _ address: SocketAddress) throws { try socket.connect(to: address) }
private func syncAccept(_ socket: Socket) throws -> Socket { try socket.accept(deadline: .now + .seconds(5)).0 }

private func registration(_ socket: Socket) -> Registration? { socket.state.withLock { $0.registration } }

/// Runs `body` in a task; throws if it has not finished after `seconds` (then cancels it and
/// returns without waiting for it, so a stuck call cannot hang the test run). The outcome
/// goes through a mutex (which ThreadSanitizer sees), the continuation only signals.
private struct WithinSlotD<T: Sendable>: Sendable { var waiter: CheckedContinuation<Void, Never>?; var outcome: Result<T, any Error>? }
private func withinD<T: Sendable>(_ seconds: Double, _ what: String = "", _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let slot = Locked(WithinSlotD<T>())
    let finish: @Sendable (Result<T, any Error>) -> Void = { outcome in
        let waiter = slot.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.outcome != nil { return nil }
            s.outcome = outcome
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }
    let worker = Task {
        do { finish(.success(try await body())) } catch { finish(.failure(error)) }
    }
    let timer = Task {
        try? await Task.sleep(for: .seconds(seconds))
        finish(.failure(TestFailure("\(what): not finished after \(seconds) s (a lost wake-up?)")))
    }
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let done = slot.withLock { s -> Bool in
            if s.outcome != nil { return true }
            s.waiter = continuation
            return false
        }
        if done { continuation.resume() }
    }
    timer.cancel()
    let outcome = slot.withLock { $0.outcome! }
    if case .failure(let e) = outcome, e is TestFailure { worker.cancel() }
    return try outcome.get()
}

/// Spins the calling thread for `duration` (to keep a reactor's thread busy).
private func spin(_ duration: Duration) {
    let end = ContinuousClock.now + duration
    while ContinuousClock.now < end {}
}

private func kind(_ body: () async throws(SocketError) -> Void) async -> SocketError.Kind? {
    do throws(SocketError) { try await body(); return nil } catch { return error.kind }
}

@Suite("async: the concurrency audit (each test names the rule it checks)", .serialized)
struct AsyncAuditDTests {
    // MARK: confirmed-bug candidates

    /// Rule (AsyncWaitLoop.swift header): "a non-blocking socket fails with .wouldBlock instead
    /// of waiting" — i.e. only when it would have had to wait. Here the bytes are queued in the
    /// kernel, but the reactor that owns the socket has not delivered the edge yet (its thread
    /// is busy), the readiness bit is clear, so performAsync makes no attempt and throws
    /// .wouldBlock. The blocking form (and a plain recv) returns the bytes.
    @Test("non-blocking async receive with bytes queued, reactor busy: returns the bytes (not .wouldBlock)")
    func nonBlockingReceiveWithQueuedBytes() async throws {
        let (a, b) = try Socket.pair()
        a.timeout = .never
        b.timeout = .never
        defer { a.close(); b.close() }
        // A short read clears the receive bit (retry until the initial registration event is past).
        var cleared = false
        for _ in 0..<100 {
            try syncSend(b, [1, 2, 3])
            _ = try await a.receive(upTo: 100)
            if let r = registration(a), r.observe() & Registration.readable == 0 { cleared = true; break }
        }
        try #require(cleared, "could not get the receive bit cleared")
        let reactor = try #require(registration(a)).reactor
        let started = Atomic<Bool>(false)
        let busy = Task(executorPreference: reactor) {
            started.store(true, ordering: .releasing)
            spin(.milliseconds(300))
        }
        while !started.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(1)) }
        try syncSend(b, [9, 9, 9])  // queued in a's receive buffer now
        a.timeout = .nonBlocking
        let outcome: Result<[UInt8], SocketError>
        do throws(SocketError) { outcome = .success(try await a.receive(upTo: 100)) } catch { outcome = .failure(error) }
        await busy.value
        a.timeout = .never
        switch outcome {
        case .success(let bytes): #expect(bytes == [9, 9, 9])
        case .failure(let error): Issue.record("the bytes were queued, yet: \(error)")
        }
    }

    /// Same root cause without any busy reactor: the peer's send has completed (the bytes are
    /// in our receive queue) and a non-blocking async receive right after it fails whenever
    /// the reactor has not yet run its turn.
    @Test("send, then at once a non-blocking async receive: always the bytes (1000 rounds)")
    func nonBlockingReceiveRightAfterSend() async throws {
        let (a, b) = try Socket.pair()
        defer { a.close(); b.close() }
        a.timeout = .nonBlocking
        var failures = 0
        for i in 0..<1000 {
            try syncSend(b, [UInt8(i & 0xff), 0])
            do throws(SocketError) {
                let got = try await a.receive(upTo: 100)  // a short read: clears the bit
                #expect(got == [UInt8(i & 0xff), 0])
            } catch {
                failures += 1
                #expect(error.kind == .wouldBlock)
                _ = try syncReceive(a, 100, .now + .seconds(2))  // the bytes were there
            }
        }
        #expect(failures == 0, "\(failures) of 1000 non-blocking receives failed with the bytes queued")
    }

    /// Same root cause, accept: a non-blocking async accept with a connection queued fails.
    @Test("non-blocking async accept with a connection queued, reactor busy: returns it")
    func nonBlockingAcceptWithQueuedConnection() async throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        listener.timeout = .nonBlocking
        // First async accept: nothing queued → .wouldBlock, and the receive bit cleared.
        var cleared = false
        for _ in 0..<100 {
            _ = await kind { () async throws(SocketError) in _ = try await listener.accept() }
            if let r = registration(listener), r.observe() & Registration.readable == 0 { cleared = true; break }
        }
        try #require(cleared)
        let reactor = try #require(registration(listener)).reactor
        let started = Atomic<Bool>(false)
        let busy = Task(executorPreference: reactor) {
            started.store(true, ordering: .releasing)
            spin(.milliseconds(300))
        }
        while !started.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(1)) }
        let client = try Socket(.ipv4)
        defer { client.close() }
        try syncConnect(client, address)  // completes: the connection is in the accept queue
        let outcome: Result<Socket, SocketError>
        do throws(SocketError) { outcome = .success(try await listener.accept().0) } catch { outcome = .failure(error) }
        await busy.value
        switch outcome {
        case .success(let s): s.close()
        case .failure(let error): Issue.record("a connection was queued, yet: \(error)")
        }
    }

    // MARK: the four parties, exactly one wins; cancelled receive consumes nothing

    @Test("readiness, timer, cancellation and close() race on one parked receive: one wins, nothing consumed unless returned")
    func fourPartiesRace() async throws {
        var outcomes: [String: Int] = [:]
        for i in 0..<1500 {
            let (a, b) = try Socket.pair()
            a.timeout = .never
            b.timeout = .never
            let delay = Duration.microseconds(Int64(i % 7) * 150)
            let closes = i % 3 == 0
            let receiver = Task { () -> Result<[UInt8], SocketError> in
                do throws(SocketError) {
                    return .success(try await a.receive(upTo: 16, deadline: .now + .milliseconds(1)))
                } catch { return .failure(error) }
            }
            try await Task.sleep(for: delay)
            try syncSend(b, [7])
            receiver.cancel()
            if closes { a.close() }
            let r = try await withinD(5, "receive \(i)") { await receiver.value }
            switch r {
            case .success(let bytes):
                #expect(bytes == [7]); outcomes["data", default: 0] += 1
            case .failure(let e):
                outcomes["\(e.kind)", default: 0] += 1
                #expect([.cancelled, .timedOut, .closed].contains(e.kind), "\(e)")
                if !closes {
                    // Nothing consumed: the byte is still there.
                    let rest = try syncReceive(a, 16, .now + .seconds(2))
                    #expect(rest == [7], "after \(e.kind) the byte was lost")
                }
            }
            a.close()
            b.close()
        }
        print("four parties:", outcomes)
    }

    // MARK: close() from any thread ends every async wait with .closed

    @Test("close() from another thread ends parked receive, send, accept and connect with .closed", arguments: 0..<3)
    func closeEndsEveryWait(round: Int) async throws {
        for _ in 0..<Reactor.count { _ = try Reactor.next() }  // started once, for good: not a leak
        let before = try openDescriptors()
        for _ in 0..<20 {
            let (a, b) = try Socket.pair()
            let (tcpA, tcpB) = try connectedPair()
            let (listener, _) = try makeListener()
            let (full, fillers, fullAddress) = try fullQueueListener()
            let dialer = try Socket(.ipv4)
            // Fill tcpA's send buffer.
            let chunk = [UInt8](repeating: 0, count: 65_536)
            fillSendBuffer(tcpA)
            let results = Locked<[String: SocketError.Kind?]>([:])
            await withTaskGroup(of: Void.self) { group in
                group.addTask { let k = await kind { () async throws(SocketError) in _ = try await a.receive(upTo: 8) }; results.withLock { $0["receive"] = k } }
                group.addTask { let k = await kind { () async throws(SocketError) in try await tcpA.sendAll(chunk) }; results.withLock { $0["sendAll"] = k } }
                group.addTask { let k = await kind { () async throws(SocketError) in _ = try await listener.accept() }; results.withLock { $0["accept"] = k } }
                group.addTask { let k = await kind { () async throws(SocketError) in try await dialer.connect(to: fullAddress) }; results.withLock { $0["connect"] = k } }
                group.addTask {
                    try? await Task.sleep(for: .milliseconds(30))
                    let closer = Background { a.close(); tcpA.close(); listener.close(); dialer.close() }
                    _ = try? closer.value()
                }
                await group.waitForAll()
            }
            for (call, k) in results.withLock({ $0 }) { #expect(k == .closed, "\(call): \(String(describing: k))") }
            b.close(); tcpB.close(); full.close(); fillers.forEach { $0.close() }
        }
        let leaked = try descriptorsLeaked(since: before).filter { !$0.contains("timerfd") }  // Dispatch's
        #expect(leaked.isEmpty, "\(leaked.sorted())")
    }

    @Test("close() of an adopted socket (no shutdown(2)) ends its parked async receive and accept with .closed")
    func closeAdoptedEndsWaits() async throws {
        for _ in 0..<50 {
            let (a, b) = try Socket.pair()
            let adopted = try Socket(adopting: try a.withUnsafeDescriptor { dup($0) })
            let (listener, _) = try makeListener()
            let adoptedListener = try Socket(adopting: try listener.withUnsafeDescriptor { dup($0) })
            let r = Task { await kind { () async throws(SocketError) in _ = try await adopted.receive(upTo: 8) } }
            let l = Task { await kind { () async throws(SocketError) in _ = try await adoptedListener.accept() } }
            try await Task.sleep(for: .milliseconds(5))
            adopted.close()
            adoptedListener.close()
            #expect(try await withinD(5, "adopted receive") { await r.value } == .closed)
            #expect(try await withinD(5, "adopted accept") { await l.value } == .closed)
            // The other holders' socket still works.
            try syncSend(b, [4])
            #expect(try syncReceive(a, 8, .now + .seconds(2)) == [4])
            a.close(); b.close(); listener.close()
        }
    }

    // MARK: sendAll cancelled: bytesTransferred is exact

    @Test("a cancelled sendAll reports exactly what the peer then receives", arguments: [1, 5, 20])
    func sendAllCancelledTransferredExact(afterMilliseconds: Int) async throws {
        let (client, server) = try connectedPair()
        let payload = [UInt8](repeating: 0x5a, count: 16 << 20)
        let sender = Task { () -> SocketError? in
            do throws(SocketError) { try await client.sendAll(payload); return nil } catch { return error }
        }
        try await Task.sleep(for: .milliseconds(afterMilliseconds))
        sender.cancel()
        let error = try #require(try await withinD(5, "sendAll") { await sender.value })
        #expect(error.kind == .cancelled)
        let reported = try #require(error.bytesTransferred)
        client.close()
        var received = 0
        while true {
            let got = try syncReceive(server, 1 << 20, .now + .seconds(10))
            if got.isEmpty { break }
            received += got.count
        }
        server.close()
        #expect(received == reported)
    }

    // MARK: timers

    @Test("a timer armed from a foreign thread while the reactor sleeps with no timer fires on time, never early")
    func foreignTimerWhileReactorSleeps() async throws {
        let (a, b) = try Socket.pair()
        a.timeout = .never
        defer { a.close(); b.close() }
        try syncSend(b, [1])
        _ = try await a.receive(upTo: 1)  // registered
        for i in 0..<30 {
            try await Task.sleep(for: .milliseconds(i % 3 == 0 ? 60 : 5))  // let the reactor fall asleep
            let limit = Duration.milliseconds(20 + Int64(i % 5) * 7)
            let start = ContinuousClock.now
            let k = try await withinD(5, "timer \(i)") {
                await kind { () async throws(SocketError) in _ = try await a.receive(upTo: 1, deadline: .now + limit) }
            }
            let elapsed = ContinuousClock.now - start
            #expect(k == .timedOut)
            #expect(elapsed >= limit, "early: \(elapsed) < \(limit)")
            #expect(elapsed < limit + .milliseconds(500), "late: \(elapsed) for \(limit)")
        }
    }

    @Test("the timer heap pops in order and ignores nothing it holds (randomised against a sort)")
    func timerHeapOrder() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var heap = TimerHeap()
            var reference: [Int64] = []
            var popped: [Int64] = []
            var now: Int64 = 0
            for _ in 0..<500 {
                if Bool.random(using: &rng) {
                    let when = now + Int64.random(in: 0..<1000, using: &rng)
                    heap.push(TimerEntry(when: when, sequence: 0, token: 1, alarm: nil))
                    reference.append(when)
                } else {
                    now += Int64.random(in: 0..<50, using: &rng)
                    while let e = heap.popDue(now: now) {
                        #expect(e.when <= now)
                        popped.append(e.when)
                    }
                    #expect(heap.earliest.map { $0 > now } ?? true)
                }
            }
            while let e = heap.popDue(now: .max) { popped.append(e.when) }
            #expect(popped.count == reference.count)
            #expect(popped.sorted() == reference.sorted())
        }
    }

    /// Timer entries are only removed when they come due, and each holds its Registration
    /// strongly: a socket closed long before its receive's deadline stays in the heap until
    /// then. With a long idle timeout (serve's connectionTimeout) heap and memory grow with
    /// the connection rate times the timeout.
    @Test("closed sockets do not stay in the timer heap until their old deadlines")
    func timerHeapRetainsClosedSockets() async throws {
        let reactor = try Reactor.next()
        let before = heapCount(reactor)
        weak var lastRegistration: Registration?
        for _ in 0..<2000 {
            let (a, b) = try Socket.pair()
            try await Task(executorPreference: reactor) {
                // Parks (its timer entry goes into the heap), then the byte comes.
                async let got = a.receive(upTo: 1, deadline: .now + .seconds(3600))
                try? await Task.sleep(for: .microseconds(10))
                try syncSend(b, [1])
                _ = try await got
            }.value
            lastRegistration = registration(a)
            a.close(); b.close()
        }
        let after = heapCount(reactor)
        #expect(after - before < 100, "\(after - before) timer entries left for 2000 closed sockets")
        #expect(lastRegistration == nil, "a closed socket's Registration is still alive (held by its timer entry)")
    }

    // MARK: no lost wake-up under load

    @Test("ping-pong between a reactor-preferring task and a global-pool task: 20 000 round trips, no stall")
    func pingPongStress() async throws {
        let (a, b) = try Socket.pair()
        a.timeout = try .after(.seconds(5))
        b.timeout = try .after(.seconds(5))
        defer { a.close(); b.close() }
        let rounds = 20_000
        let reactor = try Reactor.next()
        try await withinD(60, "ping-pong") {
            let echo = Task(executorPreference: reactor) { () async throws -> Void in
                for _ in 0..<rounds {
                    let x = try await b.receive(exactly: 1)
                    try await b.sendAll(x)
                }
            }
            for i in 0..<rounds {
                try await a.sendAll([UInt8(i & 0xff)])
                let y = try await a.receive(exactly: 1)
                #expect(y == [UInt8(i & 0xff)])
            }
            try await echo.value
        }
    }

    @Test("sockets registered on one reactor, used by tasks preferring another: ping-pong with timeouts, no stall")
    func crossReactorPingPong() async throws {
        let first = try Reactor.next()
        var other = try Reactor.next()
        for _ in 0..<Reactor.count where other === first { other = try Reactor.next() }
        let second = other
        let (a, b) = try Socket.pair()
        a.timeout = try .after(.seconds(5))
        b.timeout = try .after(.seconds(5))
        defer { a.close(); b.close() }
        // Register both on `first`.
        try await Task(executorPreference: first) {
            try await a.sendAll([0]); _ = try await b.receive(exactly: 1)
            try await b.sendAll([0]); _ = try await a.receive(exactly: 1)
        }.value
        #expect(registration(a)?.reactor === first && registration(b)?.reactor === first)
        try await withinD(60, "cross-reactor ping-pong") {
            let echo = Task(executorPreference: second) { () async throws -> Void in
                for _ in 0..<5000 { try await b.sendAll(try await b.receive(exactly: 1)) }
            }
            for i in 0..<5000 {
                try await a.sendAll([UInt8(i & 0xff)])
                #expect(try await a.receive(exactly: 1) == [UInt8(i & 0xff)])
            }
            try await echo.value
        }
    }

    @Test("many sockets, both directions, timeouts renewed every call: no stall (tick and clear-if-unchanged)")
    func manyStreamsStress() async throws {
        let pairs = try (0..<32).map { _ in try Socket.pair() }
        defer { pairs.forEach { $0.0.close(); $0.1.close() } }
        try await withinD(60, "streams") {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for (i, (a, b)) in pairs.enumerated() {
                    a.timeout = try .after(.seconds(10))
                    b.timeout = try .after(.seconds(10))
                    let total = 1 << 20
                    group.addTask {
                        var sent = 0
                        var size = 1 + i * 37
                        while sent < total {
                            let n = min(size, total - sent)
                            try await a.sendAll([UInt8](repeating: UInt8(i), count: n))
                            sent += n
                            size = size * 3 % 70_001 + 1
                        }
                        return sent
                    }
                    group.addTask {
                        var got = 0
                        while got < total {
                            let chunk = try await b.receive(upTo: 1 + (got * 7) % 9000)
                            if chunk.isEmpty { break }
                            got += chunk.count
                        }
                        return got
                    }
                }
                var sum = 0
                for try await n in group { sum += n }
                #expect(sum == 2 * 32 * (1 << 20))
            }
        }
    }

    // MARK: idle

    @Test("no busy loop when idle: the process burns under 50 ms of CPU in a second of idleness after async work")
    func idleCPU() async throws {
        let (a, b) = try Socket.pair()
        defer { a.close(); b.close() }
        for _ in 0..<100 {
            try await a.sendAll([1])
            _ = try await b.receive(exactly: 1)
        }
        // A parked receive with a far timer, and a parked receive without one.
        let far = Task { try? await b.receive(upTo: 1, deadline: .now + .seconds(30)) }
        try await Task.sleep(for: .milliseconds(100))
        let before = processCPUTime()
        try await Task.sleep(for: .seconds(1))
        let used = processCPUTime() - before
        far.cancel()
        _ = await far.value
        #expect(used < .milliseconds(50), "\(used) of CPU in 1 s idle")
    }

    /// Diagnostic (always passes; run under `strace -f -c`): 1000 jobs enqueued from another
    /// thread while the reactor sleeps. Each costs 2 epoll_pwait2 returns (the waker is also
    /// registered for EPOLLOUT, which the drain's read re-arms) and 64 + 64 read(2) calls
    /// (`for _ in 0..<64 where read(...) > 0 {}` does not stop at the first EAGAIN).
    @Test("diagnostic: foreign wake-ups of a sleeping reactor")
    func foreignWakeCost() async throws {
        let reactor = try Reactor.next()
        try await Task.sleep(for: .milliseconds(50))
        try await Task(executorPreference: reactor) {
            for _ in 0..<1000 { try await Task.sleep(for: .microseconds(200)) }
        }.value
    }

    /// Rule: "a task already cancelled fails before any system call". The async resolve
    /// makes a socket pair and spawns a getaddrinfo thread first (Resolution.swift:109-116),
    /// and connect-by-name creates its socket (Socket+AsyncConnection.swift:144) before the
    /// first cancellation check. Run under `strace -f -e trace=socketpair,socket,clone3`.
    @Test("diagnostic: an already-cancelled resolve / connect-by-name throws .cancelled (system calls: see strace)")
    func preCancelledByName() async throws {
        let kinds = await Task { () -> [SocketError.Kind?] in
            withUnsafeCurrentTask { $0?.cancel() }
            var kinds: [SocketError.Kind?] = []
            do throws(SocketError) { _ = try await SocketAddress.resolve("localhost:9") } catch { kinds.append(error.kind) }
            do throws(SocketError) { _ = try await Socket.connect(to: "127.0.0.1:9") } catch { kinds.append(error.kind) }
            return kinds
        }.value
        #expect(kinds == [.cancelled, .cancelled])
    }

    /// Diagnostic: 1000 empty tasks started on a sleeping reactor from another thread.
    @Test("diagnostic: foreign enqueues of empty jobs")
    func foreignEnqueueCost() async throws {
        let reactor = try Reactor.next()
        try await Task.sleep(for: .milliseconds(50))
        for _ in 0..<1000 {
            await Task(executorPreference: reactor) {}.value
            try await Task.sleep(for: .microseconds(100))  // let it fall asleep again
        }
    }

    /// "A reactor's thread must never block": close() of a socket with SO_LINGER > 0 and
    /// unsent data blocks in close(2) (Linux lingers even with O_NONBLOCK), and serve closes
    /// every connection on its reactor (Socket+Serve.swift:286). Meanwhile every other
    /// socket of that reactor is stalled.
    @Test("close() of a lingering socket on a reactor thread does not stall the reactor")
    func lingerCloseOnReactor() async throws {
        let (client, server) = try connectedPair()  // client never reads
        defer { client.close() }
        try server.setOption(.linger, .seconds(1))
        fillSendBuffer(server)
        let (stalled, closeTook) = try await reactorStall(closing: server, on: try Reactor.next())
        #expect(stalled < .milliseconds(200), "the reactor was stalled \(stalled) (close() took \(closeTook))")
    }

    // MARK: Alarm

    @Test("Alarm: ring before wait, ring during wait, cancel before park, timer: each wait ends once, with the right reason")
    func alarmRaces() async throws {
        let reactor = try Reactor.next()
        for i in 0..<2000 {
            let alarm = Alarm(on: reactor)
            switch i % 4 {
            case 0:
                alarm.ring()
                #expect(await alarm.wait(until: .max) == .ready)
            case 1:
                let t = Task { await alarm.wait(until: .max) }
                if i % 8 == 1 { await Task.yield() }
                alarm.ring()
                let w = try await withinD(5, "ring \(i)") { await t.value }
                #expect(w == .ready)
            case 2:
                let t = Task { await alarm.wait(until: Sys.now() + 50_000_000) }
                t.cancel()
                let w = try await withinD(5, "cancel \(i)") { await t.value }
                #expect(w == .cancelled)
            default:
                let start = Sys.now()
                let w = await alarm.wait(until: start + 200_000)
                #expect(w == .timer)
                #expect(Sys.now() - start >= 200_000)
            }
        }
    }

    // MARK: Unix datagram pacing

    @Test("Unix datagram send to a full receiver suspends, then completes soon after the receiver drains")
    func unixDatagramPacing() async throws {
        let (a, b) = try Socket.pair(.datagram)
        defer { a.close(); b.close() }
        a.timeout = .never
        fillSendBuffer(a, size: 100)
        let sender = Task { () -> Duration in
            let start = ContinuousClock.now
            _ = try await a.send([UInt8](repeating: 2, count: 100))
            return ContinuousClock.now - start
        }
        try await Task.sleep(for: .milliseconds(100))
        b.timeout = .nonBlocking
        while (try? syncReceive(b, 200, .now + .seconds(1))) != nil {}
        let took = try await withinD(5, "paced send") { try await sender.value }
        #expect(took < .milliseconds(100 + 40 + 100), "\(took)")
        // Cancelled while pacing: .cancelled, nothing sent.
        fillSendBuffer(a, size: 100)
        let t = Task { () -> SocketError.Kind? in await kind { () async throws(SocketError) in _ = try await a.send([3]) } }
        try await Task.sleep(for: .milliseconds(20))
        t.cancel()
        #expect(try await withinD(5, "cancel paced") { await t.value } == .cancelled)
    }

    @Test("async Unix connect to a listener with a full queue: paced, completes after an accept, times out at its deadline")
    func unixConnectPacing() async throws {
        let path = NSTemporaryDirectory() + "sockets-auditD-\(getpid()).sock"
        unlink(path)
        defer { unlink(path) }
        let listener = try Socket(.unix)
        try listener.bind(to: .unix(path: path))
        try listener.listen(backlog: 0)
        defer { listener.close() }
        var fillers: [Socket] = []
        defer { fillers.forEach { $0.close() } }
        // Fill the queue (non-blocking connects until EAGAIN).
        for _ in 0..<64 {
            let s = try Socket(.unix)
            s.timeout = .nonBlocking
            if await kind({ () async throws(SocketError) in try await s.connect(to: .unix(path: path)) }) != nil { s.close(); break }
            fillers.append(s)
        }
        try #require(!fillers.isEmpty)
        // Times out at its deadline, not before.
        let late = try Socket(.unix)
        let start = ContinuousClock.now
        #expect(await kind { () async throws(SocketError) in try await late.connect(to: .unix(path: path), deadline: .now + .milliseconds(60)) } == .timedOut)
        expectTiming(ContinuousClock.now - start, atLeast: .milliseconds(60))
        late.close()
        // Completes once an accept frees a place.
        let dialer = try Socket(.unix)
        defer { dialer.close() }
        let t = Task { await kind { () async throws(SocketError) in try await dialer.connect(to: .unix(path: path)) } }
        try await Task.sleep(for: .milliseconds(30))
        let acceptedOne = try syncAccept(listener)
        defer { acceptedOne.close() }
        let k = try await withinD(2, "paced unix connect") { await t.value }
        #expect(k == nil)
    }

    // MARK: connect

    @Test("async connect: refused, succeeded, timed out at its deadline, and an already-cancelled task makes no system call")
    func connectCases() async throws {
        let (holder, refusing) = try refusingPort()
        defer { holder.close() }
        for _ in 0..<50 {
            let s = try Socket(.ipv4)
            let k = await kind { () async throws(SocketError) in try await s.connect(to: refusing) }
            #expect(k == .connectionRefused)
            s.close()
        }
        let (listener, address) = try makeListener(backlog: 128)
        defer { listener.close() }
        for _ in 0..<50 {
            let s = try Socket(.ipv4)
            try await s.connect(to: address)
            let peer = try syncAccept(listener)
            try await s.sendAll([1, 2])
            #expect(try syncReceive(peer, 2, .now + .seconds(2)) == [1, 2])
            s.close(); peer.close()
        }
        let (full, fillers, fullAddress) = try fullQueueListener()
        defer { full.close(); fillers.forEach { $0.close() } }
        let s = try Socket(.ipv4)
        let start = ContinuousClock.now
        let k = await kind { () async throws(SocketError) in try await s.connect(to: fullAddress, deadline: .now + .milliseconds(80)) }
        #expect(k == .timedOut)
        expectTiming(ContinuousClock.now - start, atLeast: .milliseconds(80))
        s.close()
        let cancelled = Task { () -> SocketError.Kind? in
            withUnsafeCurrentTask { $0?.cancel() }
            let s = try? Socket(.ipv4)
            defer { s?.close() }
            return await kind { () async throws(SocketError) in try await s!.connect(to: address) }
        }
        #expect(await cancelled.value == .cancelled)
    }

    // MARK: accept

    @Test("a cancelled accept consumes nothing: the next accept gets the connection (race, 300 rounds)")
    func cancelledAcceptConsumesNothing() async throws {
        let (listener, address) = try makeListener(backlog: 64)
        defer { listener.close() }
        var outcomes: [String: Int] = [:]
        for i in 0..<300 {
            let acceptor = Task { () -> Result<Socket, SocketError> in
                do throws(SocketError) { return .success(try await listener.accept().0) } catch { return .failure(error) }
            }
            if i % 2 == 0 { try await Task.sleep(for: .microseconds(Int64(i % 5) * 100)) }
            let client = try Socket(.ipv4)
            try syncConnect(client, address)
            acceptor.cancel()
            switch try await withinD(5, "accept \(i)", { await acceptor.value }) {
            case .success(let s):
                outcomes["accepted", default: 0] += 1
                s.close()
            case .failure(let e):
                outcomes["\(e.kind)", default: 0] += 1
                #expect(e.kind == .cancelled)
                // The connection is still queued.
                let next = try await withinD(5, "next accept \(i)") { try await listener.accept(deadline: .now + .seconds(2)).0 }
                next.close()
            }
            client.close()
        }
        print("cancelled accept:", outcomes)
    }

    @Test("serve at the descriptor limit: backs off, and accepts the queued connections once descriptors free up (no new edge needed)")
    func serveRecoversFromEMFILE() async throws {
        let (listener, address) = try makeListener(backlog: 64)
        let clients = try (0..<6).map { _ in try Socket(.ipv4) }  // made before the limit
        let accepted = Atomic<Int>(0)
        let release = Atomic<Bool>(false)
        let server = Task {
            try await listener.serve(gracePeriod: .milliseconds(50)) { connection, _ in
                accepted.add(1, ordering: .relaxed)
                while !release.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(5)) }
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        var saved = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved)
        // Room for no new descriptor at all.
        let highest = (try openDescriptors()).compactMap { Int($0.split(separator: " ")[0]) }.max() ?? 1000
        var low = saved
        low.rlim_cur = rlim_t(highest + 1)
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &low)
        var fillers: [CInt] = []
        while fillers.count < 10_000 {  // the holes below the limit
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            if fd < 0 { break }
            fillers.append(fd)
        }
        for c in clients { try await c.connect(to: address) }  // queued: accept gets EMFILE
        try await Task.sleep(for: .milliseconds(200))
        let duringLimit = accepted.load(ordering: .relaxed)
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved)
        fillers.forEach { Glibc.close($0) }
        // No new connection comes: only the back-off timer can find the queued ones.
        let deadline = ContinuousClock.now + .seconds(3)
        while accepted.load(ordering: .relaxed) < clients.count && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(duringLimit == 0)
        #expect(accepted.load(ordering: .relaxed) == clients.count)
        release.store(true, ordering: .relaxed)
        server.cancel()
        try await withinD(5, "serve") { try await server.value }
        clients.forEach { $0.close() }
        listener.close()
    }

    // MARK: serve

    /// serve's doc: it runs "until the task calling serve is cancelled, the listener is closed,
    /// or accept fails". At maxConnections it waits on an Alarm that only a finishing
    /// connection rings: closing the listener (or anything but cancellation) goes unnoticed
    /// while the connections stay open, so serve neither stops nor starts the grace period.
    @Test("serve at maxConnections: closing the listener stops it (grace period, then the rest closed)")
    func serveListenerClosedAtLimit() async throws {
        let (listener, address) = try makeListener(backlog: 8)
        let server = Task {
            try await listener.serve(maxConnections: 1, gracePeriod: .milliseconds(100)) { connection, _ in
                while try await !connection.receive(upTo: 64).isEmpty {}
            }
        }
        let client = try Socket(.ipv4)
        defer { client.close() }
        try await client.connect(to: address)
        try await Task.sleep(for: .milliseconds(100))  // accepted; serve now waits for a free place
        listener.close()
        let start = ContinuousClock.now
        do {
            try await withinD(3, "serve after listener close") { try await server.value }
            #expect(ContinuousClock.now - start < .seconds(2))
        } catch let failure as TestFailure {
            Issue.record("\(failure)")
            server.cancel()  // what does stop it
            try await withinD(5, "serve after cancel") { try await server.value }
        }
    }

    // MARK: serve

    @Test("serve: maxConnections holds, cancellation drains gracefully, then closes the rest; every task ends")
    func serveShutdown() async throws {
        let (listener, address) = try makeListener(backlog: 64)
        defer { listener.close() }
        let live = Atomic<Int>(0)
        let peak = Atomic<Int>(0)
        let served = Atomic<Int>(0)
        let server = Task {
            try await listener.serve(maxConnections: 3, gracePeriod: .milliseconds(300)) { connection, _ in
                let n = live.add(1, ordering: .relaxed).newValue
                var p = peak.load(ordering: .relaxed)
                while n > p, !peak.compareExchange(expected: p, desired: n, ordering: .relaxed).exchanged { p = peak.load(ordering: .relaxed) }
                defer { live.subtract(1, ordering: .relaxed) }
                while true {
                    let got = try await connection.receive(upTo: 64)
                    if got.isEmpty { break }
                    try await connection.sendAll(got)
                }
                served.add(1, ordering: .relaxed)
            }
        }
        // 10 short clients, then 2 that stay open past the grace period.
        for i in 0..<10 {
            let c = try Socket(.ipv4)
            try await c.connect(to: address)
            try await c.sendAll([UInt8(i)])
            #expect(try await c.receive(exactly: 1) == [UInt8(i)])
            c.close()
        }
        let stayers = try (0..<2).map { _ in try Socket(.ipv4) }
        for s in stayers { try await s.connect(to: address); try await s.sendAll([1]); _ = try await s.receive(exactly: 1) }
        server.cancel()
        let start = ContinuousClock.now
        try await withinD(5, "serve shutdown") { try await server.value }
        let took = ContinuousClock.now - start
        #expect(took >= .milliseconds(300), "grace period cut short: \(took)")
        #expect(peak.load(ordering: .relaxed) <= 3)
        #expect(live.load(ordering: .relaxed) == 0)
        #expect(served.load(ordering: .relaxed) == 10)
        stayers.forEach { $0.close() }
    }
}

/// Entries in a reactor's timer heap (through reflection: the array is private).
private func heapCount(_ reactor: Reactor) -> Int {
    reactor.shared.withLock { s in
        (Mirror(reflecting: s.timers).children.first { $0.label == "entries" }?.value as? [TimerEntry])?.count ?? -1
    }
}


