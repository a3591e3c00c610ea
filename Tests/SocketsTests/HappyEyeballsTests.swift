import Foundation
import Synchronization
import Testing

@testable import Sockets

// Happy Eyeballs v2 (RFC 8305) on loopback only: an IPv6 black hole is a [::1] listener whose
// accept queue is full (Linux drops the SYN); a refusal is a port bound but not listening.
// No test depends on how the machine resolves a name: lists of addresses, and numeric hosts
// sent through the lookup path (getaddrinfo answers them without any query).

/// A [::1] black hole and a working 127.0.0.1 listener on the same port.
private func blackHoleBesideWorking() throws -> (black: (Socket, [Socket]), working: Socket, v6: SocketAddress, v4: SocketAddress) {
    for _ in 0..<20 {
        let (working, v4) = try makeListener()
        let port = portOf(v4)
        let v6 = SocketAddress.ipv6(.loopback, port: port)
        do {
            let (hole, fillers, _) = try fullQueueListener(at: v6)
            return ((hole, fillers), working, v6, v4)
        } catch let error as SocketError where error.kind == .addressInUse {
            working.close()  // the port is taken on ::1: try another
        }
    }
    throw TestFailure("no port free on both 127.0.0.1 and ::1 in 20 tries")
}

private func v6Refusing() throws -> (Socket, SocketAddress) {
    let holder = try Socket(.ipv6)
    try holder.bind(to: .ipv6(.loopback, port: 0))
    return (holder, try holder.localAddress)
}

@Suite("Happy Eyeballs v2: connect to a name or a list under one deadline", .serialized)
struct HappyEyeballsTests {
    @Test("an IPv6 black hole beside working IPv4 on the same port: connected over IPv4 after the attempt delay, not the timeout")
    func blackHoleThenIPv4() throws {
        let before = try openDescriptors()
        let (black, working, v6, v4) = try blackHoleBesideWorking()
        let start = ContinuousClock.now
        let socket = try Socket.connect(to: [v6, v4], timeout: try .after(.seconds(5)))
        let elapsed = ContinuousClock.now - start
        #expect(try socket.peerAddress == v4)
        #expect(socket.timeout == (try .after(.seconds(5))))
        expectTiming(elapsed, atLeast: .milliseconds(250), slack: .milliseconds(1000))
        print("Happy Eyeballs: IPv6 black hole beside working IPv4: connected in \(elapsed) (attempt delay 250 ms, timeout 5 s)")
        let (accepted, _) = try working.accept(deadline: .now + .seconds(5))
        try socket.sendAll([42])
        #expect(try accepted.receive(exactly: 1, deadline: .now + .seconds(5)) == [42])
        // The one-at-a-time order would have spent the whole timeout on the black hole;
        // a shorter attempt delay is honoured.
        let quick = ContinuousClock.now
        let again = try Socket.connect(to: [v6, v4], timeout: try .after(.seconds(5)), attemptDelay: .milliseconds(50))
        expectTiming(ContinuousClock.now - quick, atLeast: .milliseconds(50), slack: .milliseconds(900))
        // For comparison, the addresses in turn, each with its share of a 5 s budget (Go's
        // partialDeadline: half each, at least 2 s; this library's algorithm before).
        let inTurn = ContinuousClock.now
        let budget = inTurn + .seconds(5)
        _ = expectFailure(.timedOut) { _ = try Socket.connect(to: v6, timeout: .never, deadline: inTurn + .seconds(2.5)) }
        let sequential = try Socket.connect(to: v4, timeout: .never, deadline: budget)
        let inTurnElapsed = ContinuousClock.now - inTurn
        #expect(inTurnElapsed >= .seconds(2.5))
        print("Happy Eyeballs: the same addresses in turn (a share of 5 s each): connected in \(inTurnElapsed)")
        for s in [socket, again, accepted, sequential, working, black.0] + black.1 { s.close() }
        #expect(try descriptorsLeaked(since: before).isEmpty)
    }

    @Test("both refusing: fails at once, each attempt reported, the kind refused, families interleaved")
    func allRefuse() throws {
        let (h1, v6a) = try v6Refusing()
        let (h2, v6b) = try v6Refusing()
        let (h3, v4a) = try refusingPort()
        let (h4, v4b) = try refusingPort()
        defer { for h in [h1, h2, h3, h4] { h.close() } }
        let before = try openDescriptors()
        let (error, elapsed) = expectFailure(.connectionRefused) {
            _ = try Socket.connect(to: [v6a, v6b, v4a, v4b], timeout: try .after(.seconds(5)))
        }
        #expect(elapsed < .seconds(1), "took \(elapsed)")
        let error_ = try #require(error)
        #expect(error_.attempts.map(\.address) == [v6a, v4a, v6b, v4b], "tried \(error_.attempts.map(\.address))")
        #expect(error_.attempts.allSatisfy { $0.kind == .connectionRefused })
        #expect(error_.operation == .connect)
        #expect("\(error_)" == "connect to [::1]:\(portOf(v6a)) and 3 more addresses failed: Connection refused (ECONNREFUSED): 4 addresses: \(v6a) connection refused; \(v4a) connection refused; \(v6b) connection refused; \(v4b) connection refused")
        #expect(try descriptorsLeaked(since: before).isEmpty)
    }

    @Test("both black holes: the deadline, both attempts reported as timed out, the user's limit in the message")
    func allBlackHoles() throws {
        let (black4, fillers4, v4) = try fullQueueListener()
        let (black6, fillers6, v6) = try fullQueueListener(at: .ipv6(.loopback, port: 0))
        defer { for s in [black4, black6] + fillers4 + fillers6 { s.close() } }
        let before = try openDescriptors()
        let (error, elapsed) = expectFailure(.timedOut) {
            _ = try Socket.connect(to: [v6, v4], timeout: try .after(.seconds(1)))
        }
        expectTiming(elapsed, atLeast: .seconds(1))
        #expect(error?.operation == .connect)
        #expect(error?.attempts.map(\.address) == [v6, v4])
        #expect(error?.attempts.allSatisfy { $0.kind == .timedOut } == true)
        #expect(error.map { "\($0)" } == "connect to \(v6), \(v4) timed out after 1s: 2 addresses: \(v6) timed out; \(v4) timed out")
        // A deadline rather than a timeout is named as such.
        let (byDeadline, _) = expectFailure(.timedOut) {
            _ = try Socket.connect(to: [v6, v4], timeout: .never, deadline: .now + .milliseconds(400))
        }
        #expect(byDeadline.map { "\($0)" }?.contains("timed out: the deadline passed: 2 addresses") == true, "\(String(describing: byDeadline))")
        #expect(try descriptorsLeaked(since: before).isEmpty)
    }

    @Test("a refusal starts the next attempt at once, not after the attempt delay")
    func failureStartsNext() throws {
        let (holder, refusing) = try v6Refusing()
        let (working, v4) = try makeListener()
        defer { holder.close(); working.close() }
        let start = ContinuousClock.now
        let socket = try Socket.connect(to: [refusing, v4], timeout: try .after(.seconds(5)), attemptDelay: .seconds(2))
        #expect(ContinuousClock.now - start < .seconds(1))
        #expect(try socket.peerAddress == v4)
        socket.close()
    }

    @Test("through the lookup path: a numeric host resolved per family connects, and the other family's failure is not an error")
    func lookupPath() throws {
        let (working, v4) = try makeListener()
        defer { working.close() }
        let port = portOf(v4)
        let socket = try Socket.dial(target: "127.0.0.1:\(port)", lookup: ("127.0.0.1", port), addresses: [],
                                     timeout: try .after(.seconds(5)), deadline: nil, attemptDelay: .milliseconds(250))
        #expect(try socket.peerAddress == v4)
        socket.close()
        let (holder, refusing) = try refusingPort()
        defer { holder.close() }
        let closedPort = portOf(refusing)
        let (error, _) = expectFailure(.connectionRefused) {
            _ = try Socket.dial(target: "127.0.0.1:\(closedPort)", lookup: ("127.0.0.1", closedPort), addresses: [],
                                timeout: try .after(.seconds(5)), deadline: nil, attemptDelay: .milliseconds(250))
        }
        #expect(error.map { "\($0)" } == "connect to 127.0.0.1:\(closedPort) failed: Connection refused (ECONNREFUSED)")
    }

    @Test("a resolver that hangs: the deadline, resolution blamed, and never more than 8 resolver threads over 1,000 lookups")
    func hangingResolver() throws {
        let gate = DispatchSemaphore(value: 0)
        let hung = Atomic<Int>(0)
        Seam.installResolveHook { host in
            guard host.hasPrefix("hang-") else { return nil }
            hung.add(1, ordering: .relaxed)
            _ = gate.wait(timeout: .now() + 30)  // bounded: never a thread left for good
            return "test resolver released"
        }
        defer {
            for _ in 0..<2000 { gate.signal() }
            Seam.installResolveHook(nil)
        }
        let tasksBefore = try threadCount()
        // By name: the deadline, and the error says resolution used the time.
        let (error, elapsed) = expectFailure(.timedOut) {
            _ = try Socket.connect(to: "hang-0.test:80", timeout: try .after(.milliseconds(300)))
        }
        expectTiming(elapsed, atLeast: .milliseconds(300))
        #expect(error?.operation == .resolve)
        #expect(error.map { "\($0)" }?.hasPrefix("resolve of hang-0.test:80 timed out after 300ms: no address came from the resolver in time") == true,
                "\(String(describing: error))")
        // 1,000 lookups of distinct names that hang: bounded threads, each caller told.
        var neverStarted = 0
        for i in 1...1000 {
            let (e, _) = expectFailure(.timedOut) { _ = try SocketAddress.resolve("hang-\(i).test:80", deadline: .now + .milliseconds(2)) }
            if e?.detail?.contains("never looked up") == true { neverStarted += 1 }
            #expect(ResolverPool.shared.threadCount <= 8)
        }
        let tasksDuring = try threadCount()
        #expect(tasksDuring - tasksBefore <= 8, "threads: \(tasksBefore) before, \(tasksDuring) with 1,000 hung lookups")
        #expect(neverStarted >= 990, "\(neverStarted) of 1,000 were told their lookup never started")
        // The same name asked again and again joins the lookup in flight: no new thread.
        let running = hung.load(ordering: .relaxed)
        for _ in 0..<100 {
            _ = expectFailure(.timedOut) { _ = try SocketAddress.resolve("hang-1.test:80", deadline: .now + .milliseconds(1)) }
        }
        #expect(hung.load(ordering: .relaxed) == running)
        print("hanging resolver: \(hung.load(ordering: .relaxed)) lookups reached getaddrinfo; threads \(tasksBefore) → \(tasksDuring); \(neverStarted) told theirs never started")
        // Released: the threads finish and exit, none lingers.
        for _ in 0..<2000 { gate.signal() }
        let deadline = ContinuousClock.now + .seconds(10)
        while ResolverPool.shared.threadCount > 0 && ContinuousClock.now < deadline { pause(.milliseconds(10)) }
        #expect(ResolverPool.shared.threadCount == 0)
    }

    @Test("the plan: AAAA first at once; after an A answer, 50 ms for the AAAA one; late answers join; families alternate")
    func plan() throws {
        let a1 = SocketAddress.ipv4(.loopback, port: 1), a2 = SocketAddress.ipv4(.loopback, port: 2)
        let b1 = SocketAddress.ipv6(.loopback, port: 1), b2 = SocketAddress.ipv6(.loopback, port: 2)
        var plan = EyeballsPlan(resolving: ())
        #expect(plan.next(now: 0) == nil)  // nothing yet
        plan.answered(.ipv4, [a1, a2], now: 1_000)
        #expect(plan.firstAttemptAt == 1_000 + EyeballsPlan.resolutionDelay)
        #expect(plan.next(now: 1_000 + EyeballsPlan.resolutionDelay - 1) == nil)  // the resolution delay
        plan.answered(.ipv6, [b1, b2], now: 20_000_000)  // AAAA within it: IPv6 first, at once
        #expect(plan.next(now: 20_000_000) == b1)
        #expect(plan.next(now: 20_000_001) == a1)
        #expect(plan.next(now: 20_000_002) == b2)
        #expect(plan.next(now: 20_000_003) == a2)
        #expect(plan.next(now: 20_000_004) == nil && !plan.hasUntried)

        var late = EyeballsPlan(resolving: ())
        late.answered(.ipv4, [a1, a2], now: 0)
        #expect(late.next(now: EyeballsPlan.resolutionDelay) == a1)  // no AAAA in 50 ms: IPv4 goes
        late.answered(.ipv6, [b1], now: EyeballsPlan.resolutionDelay + 5)  // a late AAAA joins, next
        #expect(late.next(now: EyeballsPlan.resolutionDelay + 6) == b1)
        #expect(late.next(now: EyeballsPlan.resolutionDelay + 7) == a2)

        var aaaaFirst = EyeballsPlan(resolving: ())
        aaaaFirst.answered(.ipv6, [b1], now: 0)
        #expect(aaaaFirst.next(now: 0) == b1)  // no waiting for the A answer

        var list = EyeballsPlan([a1, a2, b1])  // a list: the first address's family first
        #expect(list.next(now: 0) == a1)
        #expect(list.next(now: 0) == b1)
        #expect(list.next(now: 0) == a2)
    }

    @Test("an enormous attemptDelay does not overflow; a refusal still starts the next attempt")
    func hugeDelay() throws {
        let (holder, refusing) = try refusingPort()
        let (working, v4) = try makeListener()
        defer { holder.close(); working.close() }
        let socket = try Socket.connect(to: [refusing, v4], timeout: try .after(.seconds(5)), attemptDelay: .seconds(10_000_000_000_000))
        #expect(try socket.peerAddress == v4)
        socket.close()
    }

    @Test("a Unix listener whose queue is full is waited for, not taken for a failure")
    func unixFullQueue() throws {
        let path = NSTemporaryDirectory() + "he-\(getpid()).sock"
        unlink(path)
        defer { unlink(path) }
        let (listener, fillers, _) = try fullUnixListener(at: path)
        defer { listener.close(); fillers.forEach { $0.close() } }
        let queued = fillers.count
        let draining = Background {  // frees the queue after 300 ms
            pause(.milliseconds(300))
            for _ in 0..<queued + 1 { _ = try? listener.accept(deadline: .now + .milliseconds(200)) }
        }
        let other = SocketAddress.unix(path: path + ".none")
        let start = ContinuousClock.now
        let socket = try Socket.connect(to: [.unix(path: path), other], timeout: try .after(.seconds(3)))
        #expect(ContinuousClock.now - start >= .milliseconds(250))
        socket.close()
        try draining.value()
    }

    @Test("attemptDelay under 10 ms, an empty list: a clear error, no descriptor")
    func badInput() throws {
        let (working, v4) = try makeListener()
        defer { working.close() }
        let (e1, _) = expectFailure(.invalidArgument) { _ = try Socket.connect(to: [v4, v4], attemptDelay: .milliseconds(5)) }
        #expect(e1?.detail == "attemptDelay must be at least 10 ms (RFC 8305), got 5ms")
        let (e2, _) = expectFailure(.invalidArgument) { _ = try Socket.connect(to: [SocketAddress]()) }
        #expect(e2?.detail == "no address to connect to")
    }

    @Test("async: the black hole beside IPv4, all refusing, and cancellation closing every attempt")
    func async() async throws {
        let before = try openDescriptors()
        let (black, working, v6, v4) = try blackHoleBesideWorking()
        let start = ContinuousClock.now
        let socket = try await Socket.connect(to: [v6, v4], timeout: try .after(.seconds(5)))
        let elapsed = ContinuousClock.now - start
        #expect(try socket.peerAddress == v4)
        expectTiming(elapsed, atLeast: .milliseconds(250), slack: .milliseconds(1000))
        print("Happy Eyeballs, async: connected over IPv4 in \(elapsed)")
        socket.close()

        let (holder, refusing) = try refusingPort()
        let (holder6, refusing6) = try v6Refusing()
        let (error, _) = await expectAsyncFailure(.connectionRefused) {
            _ = try await Socket.connect(to: [refusing6, refusing], timeout: try .after(.seconds(5)))
        }
        #expect(error?.attempts.count == 2)

        let (black4, fillers4, hole4) = try fullQueueListener()
        let attempt = Task { () -> SocketError? in
            do throws(SocketError) {
                _ = try await Socket.connect(to: [v6, hole4], timeout: try .after(.seconds(10)), attemptDelay: .milliseconds(20))
                return nil
            } catch {
                return error
            }
        }
        try await Task.sleep(for: .milliseconds(200))
        attempt.cancel()
        #expect(await attempt.value?.kind == .cancelled)
        for s in [working, holder, holder6, black4, black.0] + black.1 + fillers4 { s.close() }
        try await Task.sleep(for: .milliseconds(50))
        // Sockets only: the reactors and Dispatch's timer make their own descriptors once.
        let leaked = try descriptorsLeaked(since: before).filter { $0.contains("socket:") }
        #expect(leaked.isEmpty, "\(leaked)")
    }

    @Test("async through the lookup path, and a hanging resolver blamed at the deadline")
    func asyncLookup() async throws {
        let (working, v4) = try makeListener()
        defer { working.close() }
        let port = portOf(v4)
        let socket = try await Socket.dialAsync(target: "127.0.0.1:\(port)", lookup: ("127.0.0.1", port), addresses: [],
                                                timeout: try .after(.seconds(5)), deadline: nil, attemptDelay: .milliseconds(250))
        #expect(try socket.peerAddress == v4)
        socket.close()
        let gate = DispatchSemaphore(value: 0)
        Seam.installResolveHook { host in
            guard host.hasPrefix("hang-") else { return nil }
            _ = gate.wait(timeout: .now() + 30)
            return "test resolver released"
        }
        defer { gate.signal(); gate.signal(); Seam.installResolveHook(nil) }
        let (error, elapsed) = await expectAsyncFailure(.timedOut) {
            _ = try await Socket.connect(to: "hang-async.test:80", timeout: try .after(.milliseconds(300)))
        }
        expectTiming(elapsed, atLeast: .milliseconds(300))
        #expect(error?.operation == .resolve)
    }
}

private func portOf(_ address: SocketAddress) -> UInt16 {
    switch address {
    case .ipv4(_, let port): return port
    case .ipv6(_, let port, _): return port
    default: return 0
    }
}

/// This process's threads (`/proc/self/task`).
func threadCount() throws -> Int {
    try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count
}
