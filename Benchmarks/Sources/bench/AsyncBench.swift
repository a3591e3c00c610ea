import Foundation
import Sockets
import Synchronization

// This library's side of the async benchmarks (A1-A9 in ../../run):
//   bench sockets server echo-async TIMEOUT    Socket.serve, a task per connection on the
//                                              reactors, echoing; TIMEOUT s idle timeout (0: none)
//   bench sockets server echo-threads TIMEOUT  the blocking baseline: a thread per connection
//   bench sockets server bulk-async            A6: async receive(into:) of 1 MiB, then a 1-byte ack
//   bench sockets client bulk-async PORT BYTES A6: async sendAll of 64 KiB chunks
//   bench sockets async cancel COUNT LOAD FROM A7: cancel COUNT waiting receives (FROM task|thread),
//                                              LOAD pairs busy meanwhile
//   bench sockets async precision SECONDS COUNT CONCURRENT    A8: timed-out async receives
//   bench sockets async close COUNT            A9: close() COUNT sockets with a receive waiting
// Each server prints "PORT n" and serves until killed; the others print one JSON object.

func timeoutArgument(_ text: String) -> SocketTimeout {
    guard let seconds = Double(text), seconds >= 0 else { fail("TIMEOUT must be seconds ≥ 0, got \(text)") }
    return seconds == 0 ? .never : try! .after(.nanoseconds(Int64(seconds * 1e9)))
}

func loopbackListener() -> Socket {
    do {
        let listener = try Socket(.ipv4)
        try listener.setOption(.reuseAddress, true)
        try listener.bind(to: .ipv4(.loopback, port: 0))
        try listener.listen(backlog: 4096)
        listener.timeout = .never
        announce(port: Int(try listener.localAddress.port ?? 0))
        return listener
    } catch {
        fail("\(error)")
    }
}

/// A1/A2/A4/A5: the echo handler as the README teaches it — `receive(upTo:)` holds no buffer
/// while the connection is idle, `sendAll` writes the bytes back.
func asyncEchoServer(timeout text: String) -> Never {
    let timeout = timeoutArgument(text)
    let listener = loopbackListener()
    Task.detached {
        do {
            try await listener.serve(connectionTimeout: timeout) { connection, _ in
                try connection.setOption(.noDelay, true)
                while true {
                    let bytes = try await connection.receive(upTo: 4096)
                    if bytes.isEmpty { return }
                    try await connection.sendAll(bytes)
                }
            }
        } catch {
            fail("\(error)")
        }
    }
    while true { sleep(3600) }
}

/// The in-house baseline: blocking calls, a thread per connection (as the blocking half's
/// users write a server), the same idle timeout on every receive.
func threadEchoServer(timeout text: String) -> Never {
    let timeout = timeoutArgument(text)
    let listener = loopbackListener()
    while true {
        guard let (connection, _) = try? listener.accept() else { continue }
        connection.timeout = timeout
        let worker = Thread {
            defer { connection.close() }
            do {
                try connection.setOption(.noDelay, true)
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
                defer { buffer.deallocate() }
                while true {
                    let n = try connection.receive(into: buffer)
                    if n == 0 { return }
                    try connection.sendAll(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
                }
            } catch {}
        }
        worker.stackSize = 64 << 10
        worker.start()
    }
}

/// A6 server: the library's best bulk path in async form — 1 MiB receives that wake at 512 KiB
/// (SO_RCVLOWAT), discarding, then a 1-byte ack; one connection.
func asyncBulkServer() -> Never {
    let listener = loopbackListener()
    Task.detached {
        do {
            let (connection, _) = try await listener.accept()
            try connection.setOption(.receiveLowWatermark, 512 << 10)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
            while try await connection.receive(into: buffer) > 0 {}
            try await connection.sendAll([107])
            exit(0)
        } catch {
            fail("\(error)")
        }
    }
    while true { sleep(3600) }
}

/// A6 client: BYTES in 64 KiB `sendAll`s, a half-close, the server's ack; prints GB/s.
func asyncBulkClient(port: Int, bytes: Int) -> Never {
    runAsync {
        let socket = try Socket(.ipv4)
        try await socket.connect(to: .ipv4(.loopback, port: UInt16(port)))
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
        chunk.initializeMemory(as: UInt8.self, repeating: 0)
        let start = ContinuousClock.now
        var sent = 0
        while sent < bytes {
            try await socket.sendAll(UnsafeRawBufferPointer(chunk))
            sent += chunk.count
        }
        try socket.shutdown(.write)
        guard try await socket.receive(upTo: 1) == [107] else { fail("no ack") }
        report([("gbps", Double(sent) / seconds(since: start) / 1e9)])
    }
}

/// Runs `body` in a task on a reactor (where a server's connections run), then exits.
func runAsync(_ body: @escaping @Sendable () async throws -> Void) -> Never {
    let reactor: Reactor
    do { reactor = try Reactor.next() } catch { fail("\(error)") }
    Task(executorPreference: reactor) {
        do { try await body() } catch { fail("\(error)") }
        exit(0)
    }
    while true { sleep(3600) }
}

func microseconds(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
}

/// Percentiles of a list of durations, in µs.
func latencyReport(_ prefix: String, _ values: [Duration]) -> [(String, Double)] {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return [] }
    let at = { (p: Int) in microseconds(sorted[min(sorted.count - 1, sorted.count * p / 100)]) }
    return [("\(prefix)p50_us", at(50)), ("\(prefix)p99_us", at(99)), ("\(prefix)max_us", microseconds(sorted.last!)),
            ("\(prefix)min_us", microseconds(sorted[0])),
            ("\(prefix)mean_us", sorted.map(microseconds).reduce(0, +) / Double(sorted.count))]
}

/// LOAD connected pairs, each with a task on a reactor sending 64 bytes back and forth
/// without pause: the reactors stay busy while A7/A9 measure. Returns the sockets (close
/// them to stop the load) and a counter of round trips.
func startLoad(_ pairs: Int) throws -> ([Socket], Counter) {
    let trips = Counter()
    var sockets: [Socket] = []
    for _ in 0..<pairs {
        let (a, b) = try Socket.pair()
        sockets += [a, b]
        for (side, starts) in [(a, true), (b, false)] {
            Task(executorPreference: try Reactor.next()) {
                var message = [UInt8](repeating: 1, count: 64)
                if starts { try await side.sendAll(message) }
                while true {
                    message = try await side.receive(exactly: 64)
                    if starts { trips.value.add(1, ordering: .relaxed) }
                    try await side.sendAll(message)
                }
            }
        }
    }
    return (sockets, trips)
}

/// A7: COUNT tasks wait in `receive` (each on its own pair, nothing ever sent); they are
/// cancelled one at a time, measuring from `cancel()` until the call has thrown `.cancelled`.
/// FROM `task`: the canceller is a task on the waiters' reactor (as a server or a parent
/// task cancels the tasks it started), awaiting each cancelled task; `thread`: a plain
/// thread cancels and spins until the call has thrown, so each cancellation also wakes the
/// reactor (c/xwake.c measures that wake-up alone). LOAD pairs ping-pong on the reactors
/// meanwhile.
func cancellationLatency(count: Int, load: Int, from: String) -> Never {
    guard from == "task" || from == "thread" else { fail("cancel: FROM is task or thread, got \(from)") }
    do {
        let (loadSockets, trips) = try startLoad(load)
        let home = try Reactor.next()
        let (tasks, thrown, sockets) = try startWaiters(count, expecting: .cancelled) { from == "task" ? home : try Reactor.next() }
        let tripsBefore = trips.value.load(ordering: .relaxed)
        let started = (0..<count).map { _ in Stamp() }
        if from == "thread" {
            for i in 0..<count {
                started[i].at.store(nanosecondsNow(), ordering: .relaxed)
                tasks[i].cancel()
                waitFor("cancelled receive \(i) to throw", seconds: 5) { thrown[i].at.load(ordering: .acquiring) != 0 }
            }
        } else {
            let all = tasks
            let canceller = Task(executorPreference: home) {
                for i in 0..<count {
                    started[i].at.store(nanosecondsNow(), ordering: .relaxed)
                    all[i].cancel()
                    await all[i].value
                }
            }
            let done = Counter()
            Task { await canceller.value; done.value.store(1, ordering: .releasing) }
            waitFor("the canceller", seconds: 60) { done.value.load(ordering: .acquiring) == 1 }
        }
        let latencies = (0..<count).map { i in
            Duration.nanoseconds(thrown[i].at.load(ordering: .acquiring) - started[i].at.load(ordering: .relaxed))
        }
        let loadTrips = trips.value.load(ordering: .relaxed) - tripsBefore
        for socket in sockets.flatMap({ [$0.0, $0.1] }) + loadSockets { socket.close() }
        report(latencyReport("", latencies) + [("load_round_trips", Double(loadTrips))])
        exit(0)
    } catch {
        fail("\(error)")
    }
}

/// COUNT tasks, each waiting in `receive` on a pair of its own (nothing is ever sent), on the
/// reactor `reactor()` gives; each records in its stamp when its receive threw (`kind`
/// expected). Returns once every receive is waiting.
func startWaiters(
    _ count: Int, expecting kind: SocketError.Kind, on reactor: () throws -> Reactor
) throws -> ([Task<Void, Never>], [Stamp], [(Socket, Socket)]) {
    let thrown = (0..<count).map { _ in Stamp() }
    var tasks: [Task<Void, Never>] = []
    var sockets: [(Socket, Socket)] = []
    let waiting = Counter()
    for i in 0..<count {
        let (a, b) = try Socket.pair()
        sockets.append((a, b))
        let stamp = thrown[i]
        tasks.append(Task(executorPreference: try reactor()) {
            waiting.value.add(1, ordering: .relaxed)
            do {
                _ = try await a.receive(upTo: 64)
                fail("a receive completed with nothing sent")
            } catch let error as SocketError {
                guard error.kind == kind else { fail("\(error)") }
                stamp.at.store(nanosecondsNow(), ordering: .releasing)
            } catch {
                fail("\(error)")
            }
        })
    }
    waitFor("the waiters to start", seconds: 10) { waiting.value.load(ordering: .relaxed) == count }
    usleep(50_000)  // every receive is in its wait by now (nothing can arrive)
    return (tasks, thrown, sockets)
}

/// A8: COUNT async receives that time out after SECONDS, CONCURRENT at a time (each task on its
/// own pair, the starts spread over one timeout); lateness of each, measured from its deadline.
func asyncPrecision(seconds: Double, count: Int, concurrent: Int) -> Never {
    let timeout = Duration.nanoseconds(Int64(seconds * 1e9))
    runAsync {
        let base = ContinuousClock.now + .milliseconds(20)
        let late = try await withThrowingTaskGroup(of: [Duration].self) { group in
            for k in 0..<concurrent {
                let (a, b) = try Socket.pair()
                let start = base + timeout * (Double(k) / Double(concurrent))
                group.addTask(executorPreference: try Reactor.next()) {
                    defer { a.close(); b.close() }
                    try await Task.sleep(until: start, clock: .continuous)
                    var mine: [Duration] = []
                    for _ in 0..<(count / concurrent) {
                        let end = ContinuousClock.now + timeout
                        do {
                            _ = try await a.receive(upTo: 1, deadline: end)
                            fail("expected a timeout")
                        } catch let error as SocketError where error.kind == .timedOut {}
                        mine.append(ContinuousClock.now - end)
                    }
                    return mine
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        report(latencyReport("", late))
    }
}

/// A9: COUNT tasks wait in `receive`; a plain thread closes each socket in turn, measuring
/// until the call has thrown `.closed`, and at once makes a new pair (which takes the
/// descriptor number just freed, once the library releases it) and writes a byte into it.
/// Then every new socket must still hold its byte: a waiter that read from a reused number
/// would have taken it.
func closeWhileWaiting(count: Int) -> Never {
    do {
        let (_, thrown, sockets) = try startWaiters(count, expecting: .closed) { try Reactor.next() }
        var latencies: [Duration] = []
        var fresh: [(Socket, Socket)] = []
        var reused = 0
        for i in 0..<count {
            let old = number(sockets[i].0)
            let start = nanosecondsNow()
            sockets[i].0.close()
            let (c, d) = try Socket.pair()
            if number(c) == old || number(d) == old { reused += 1 }
            try d.sendAll([UInt8(truncatingIfNeeded: i)])
            fresh.append((c, d))
            waitFor("receive \(i) to throw .closed", seconds: 5) { thrown[i].at.load(ordering: .acquiring) != 0 }
            latencies.append(.nanoseconds(max(0, thrown[i].at.load(ordering: .acquiring) - start)))
        }
        var intact = 0
        for (i, (c, _)) in fresh.enumerated() {
            if try c.receive(upTo: 2, deadline: .now + .seconds(1)) == [UInt8(truncatingIfNeeded: i)] { intact += 1 }
        }
        report(latencyReport("", latencies) + [("closed", Double(count)), ("numbers_reused", Double(reused)),
                                               ("intact", Double(intact))])
        exit(intact == count ? 0 : 1)
    } catch {
        fail("\(error)")
    }
}

/// A count shared between tasks.
final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

/// When a waiting call threw (CLOCK_MONOTONIC ns; 0: not yet), shared with its task.
final class Stamp: Sendable {
    let at = Atomic<Int64>(0)
}

/// The descriptor number of an open socket.
func number(_ socket: Socket) -> CInt {
    (try? socket.withUnsafeDescriptor { $0 }) ?? -1
}

func nanosecondsNow() -> Int64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec)
}

/// Spins (yielding) until `done`, failing after `seconds`.
func waitFor(_ what: String, seconds: Double, _ done: () -> Bool) {
    let end = nanosecondsNow() + Int64(seconds * 1e9)
    while !done() {
        if nanosecondsNow() > end { fail("timed out waiting for \(what)") }
        sched_yield()
    }
}
