import Foundation
import Sockets
import Synchronization
import Testing

// close() from any thread or task ends every async wait with .closed; the descriptor is
// released only after the last call has left. And the rules for mixing blocking and async
// calls, and for blocking calls made on a reactor's thread.

@Suite("async: close, mixing blocking and async calls, reactor threads")
struct AsyncCloseTests {
    @Test("close() from another thread ends every kind of async wait with .closed, promptly", arguments: ["receive", "accept", "connect", "sendAll", "receiveFrom", "two receivers"])
    func closeEndsEveryWait(_ what: String) async throws {
        let before = try await openDescriptorsAfterWarmUp()
        var keep: [Socket] = []
        let target: Socket
        var calls: [Task<Void, any Error>] = []
        switch what {
        case "receive", "two receivers":
            let (client, server) = try await asyncConnectedPair()
            keep.append(server)
            target = client
            calls.append(Task { _ = try await client.receive(upTo: 10) })
            if what == "two receivers" { calls.append(Task { _ = try await client.receive(exactly: 10) }) }
        case "accept":
            let (listener, _) = try makeListener()
            target = listener
            calls.append(Task { _ = try await listener.accept() })
        case "connect":
            let (server, fillers, address) = try fullQueueListener()
            keep += [server] + fillers
            let client = try Socket(.ipv4)
            target = client
            calls.append(Task { try await client.connect(to: address) })
        case "sendAll":
            let (client, server) = try await asyncConnectedPair()
            try smallBuffers(client, server)
            keep.append(server)
            target = client
            calls.append(Task { try await client.sendAll([UInt8](repeating: 1, count: 8 << 20)) })
        default:
            let socket = try Socket(.ipv4, .datagram)
            try socket.bind(to: .ipv4(.loopback, port: 0))
            target = socket
            calls.append(Task { _ = try await socket.receiveDatagram() })
        }
        await nap(.milliseconds(100))
        let closer = Background { target.close() }
        try closer.value()
        let start = ContinuousClock.now
        for call in calls {
            let result = await call.result
            guard case .failure(let error as SocketError) = result else {
                Issue.record("\(what): expected .closed, got \(result)")
                continue
            }
            #expect(error.kind == .closed, "\(what): \(error)")
        }
        #expect(ContinuousClock.now - start < .seconds(2))
        // Every later call fails at once, before any system call.
        await expectAsyncFailure(.closed) { _ = try await target.receive(upTo: 1) }
        keep.forEach { $0.close() }
        let leaked = try descriptorsLeaked(since: before)
        #expect(leaked.isEmpty, "\(what): \(leaked)")
    }

    @Test("what the kernel will not wake (a Unix datagram send to a full receiver, a Unix connect to a full listener): timed out on time without spinning, and ended by close()",
          arguments: ["datagram send", "connect"])
    func pacedWaits(_ what: String) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let (peer, fillers, address) = what == "connect"
            ? try fullUnixListener(at: directory.path + "/l")
            : try fullUnixDatagramReceiver(at: directory.path + "/r")
        defer { ([peer] + fillers).forEach { $0.close() } }
        func attempt(_ socket: Socket) async throws {
            if what == "connect" { try await socket.connect(to: address) } else { _ = try await socket.send([1], to: address) }
        }
        let timed = try Socket(.unix, what == "connect" ? .stream : .datagram)
        timed.timeout = try .after(.milliseconds(300))
        let cpuBefore = processCPUTime()
        let (_, elapsed) = await expectAsyncFailure(.timedOut) { try await attempt(timed) }
        expectTiming(elapsed, atLeast: .milliseconds(300))
        #expect(processCPUTime() - cpuBefore < .milliseconds(100), "the paced wait spun")
        timed.close()
        let waiting = try Socket(.unix, what == "connect" ? .stream : .datagram)
        let call = Task { try await attempt(waiting) }
        await nap(.milliseconds(100))
        waiting.close()
        let start = ContinuousClock.now
        if case .failure(let error as SocketError) = await call.result { #expect(error.kind == .closed) } else { Issue.record("not closed") }
        #expect(ContinuousClock.now - start < .seconds(1))
    }

    @Test("a socket used by async calls still serves blocking calls, with the same timeout rules")
    func mixing() async throws {
        let (client, server) = try await asyncConnectedPair()
        try await server.sendAll([1])
        #expect(try await client.receive(upTo: 1, deadline: .now + .seconds(5)) == [1])
        client.timeout = try .after(.milliseconds(150))
        let blocking = Background { () -> (SocketError.Kind?, Duration) in
            let start = ContinuousClock.now
            do { _ = try client.receive(upTo: 1) } catch let error as SocketError { return (error.kind, ContinuousClock.now - start) }
            return (nil, ContinuousClock.now - start)
        }
        let (kind, elapsed) = try blocking.value()
        #expect(kind == .timedOut)
        expectTiming(elapsed, atLeast: .milliseconds(150))
        try Background { try server.sendAll([2], deadline: nil) }.value()
        let got = try Background { try client.receive(upTo: 1) }.value()
        #expect(got == [2])
        // close() from a blocking caller's point of view ends an async wait too.
        let waiting = Task { _ = try await client.receive(upTo: 1, deadline: .now + .seconds(30)) }
        await nap(.milliseconds(50))
        client.close()
        if case .failure(let error as SocketError) = await waiting.result { #expect(error.kind == .closed) }
    }

    @Test("one reactor per CPU the process may run on (its affinity mask, as taskset sets it)")
    func reactorCount() throws {
        // The kernel's own account of the affinity mask: "Cpus_allowed_list:\t0-1" or "0,2-3".
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") })
        var allowed = 0
        for range in line.split(separator: "\t").last!.split(separator: ",") {
            let ends = range.split(separator: "-").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            allowed += ends.count == 2 ? ends[1] - ends[0] + 1 : 1
        }
        #expect(Reactor.count == allowed)
    }

    @Test("a task that prefers a reactor runs on its thread before and after each wait")
    func runsOnReactor() async throws {
        let reactor = try Reactor.next()
        let (client, server) = try await asyncConnectedPair()
        let task = Task(executorPreference: reactor) { () -> [Bool] in
            var seen = [Reactor.current === reactor]
            _ = try await client.receive(upTo: 10)  // suspends: the data comes later
            seen.append(Reactor.current === reactor)
            return seen
        }
        await nap(.milliseconds(50))
        try await server.sendAll([1])
        #expect(try await value(of: task) == [true, true])
        #expect(Reactor.current == nil)
    }

    @Test("a blocking call on a reactor's thread never waits: it completes if it can, or fails with wouldBlock and says why")
    func blockingOnReactor() async throws {
        let reactor = try Reactor.next()
        let (client, server) = try await asyncConnectedPair()
        client.timeout = .never
        let task = Task(executorPreference: reactor) { () -> (SocketError?, [UInt8], Duration) in
            let start = ContinuousClock.now
            let failure = blockingReceive(client)
            let elapsed = ContinuousClock.now - start
            try await server.sendAll([5])
            try #require(try becameReadable(client))
            let later = try blockingReceiveBytes(client)
            return (failure, later, elapsed)
        }
        let (failure, later, elapsed) = try await value(of: task)
        #expect(failure?.kind == .wouldBlock)
        #expect(failure?.detail?.contains("reactor") == true)
        #expect(elapsed < .seconds(1))
        #expect(later == [5])
        // A blocking connect there, which must wait for the handshake, says so too.
        let (full, fillers, address) = try fullQueueListener()
        defer { ([full] + fillers).forEach { $0.close() } }
        let connecting = try Socket(.ipv4)
        defer { connecting.close() }
        let connectFailure = try await value(of: Task(executorPreference: reactor) { blockingConnect(connecting, address) })
        #expect(connectFailure?.kind == .wouldBlock)
        #expect(connectFailure?.detail?.contains("reactor") == true)
    }

    @Test("no busy loop: a thousand parked receives for a second cost the process almost no CPU")
    func idleCostsNothing() async throws {
        var pairs: [(Socket, Socket)] = []
        for _ in 0..<500 { pairs.append(try Socket.pair()) }
        let tasks = pairs.flatMap { pair in
            [Task { _ = try await pair.0.receive(upTo: 1) }, Task { _ = try await pair.1.receive(upTo: 1, deadline: .now + .seconds(30)) }]
        }
        await nap(.milliseconds(200))  // all parked
        let cpuBefore = processCPUTime()
        await nap(.seconds(1))
        let used = processCPUTime() - cpuBefore
        #expect(used < .milliseconds(300), "idle CPU \(used) in 1 s")
        for pair in pairs { pair.0.close(); pair.1.close() }
        for task in tasks { _ = await task.result }
    }
}

/// A blocking receive from a synchronous context (in async code Swift picks the async form).
private func blockingReceive(_ socket: Socket) -> SocketError? {
    do {
        _ = try socket.receive(upTo: 1)
        return nil
    } catch {
        return error
    }
}

/// A blocking connect from a synchronous context.
private func blockingConnect(_ socket: Socket, _ address: SocketAddress) -> SocketError? {
    do {
        try socket.connect(to: address, deadline: .now + .seconds(5))
        return nil
    } catch {
        return error
    }
}

private func blockingReceiveBytes(_ socket: Socket) throws -> [UInt8] {
    try socket.receive(upTo: 1)
}
