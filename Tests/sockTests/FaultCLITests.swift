import Foundation
import Sockets
import Synchronization
import Testing

@Suite("fault suite: sock under pressure", .serialized)
struct FaultCLITests {
    @Test("at the descriptor limit, listen --keep-open says so, backs off without spinning, and accepts again when descriptors free up")
    func descriptorExhaustion() throws {
        let listener = try ChildProcess(["listen", "0", "--keep-open"], openFileLimit: 32)
        defer { listener.kill() }
        let line = try listener.waitForLine(startingWith: "listening on ")
        let address = try SocketAddress(String(line.dropFirst("listening on ".count)))
        // More connections than sock has descriptors for; the kernel completes them all
        // (they wait in the accept queue), sock accepts until EMFILE.
        var clients: [Socket] = []
        for _ in 0..<40 {
            let client = try Socket(.ipv4)
            try client.connect(to: address, deadline: .now + .seconds(5))
            clients.append(client)
        }
        let report = try listener.waitForLine(startingWith: "sock: accept on ")
        #expect(report.contains("EMFILE") && report.contains("backing off"), "\(report)")

        // Five seconds at the limit: alive, and (nearly) idle.
        let cpuBefore = try listener.cpuTime()
        Thread.sleep(forTimeInterval: 5)
        let cpu = try listener.cpuTime() - cpuBefore
        #expect(listener.process.isRunning)
        #expect(cpu < .milliseconds(250), "sock used \(cpu) of CPU in 5 s at the descriptor limit")

        // Free the descriptors: the clients leave, sock accepts what is still queued (each
        // of those ends at once), and a new client is served.
        for client in clients { client.close() }
        _ = try listener.waitForLine(startingWith: "sock: accepting again", within: .seconds(5))
        let late = try Socket(.ipv4)
        try late.connect(to: address, deadline: .now + .seconds(5))
        try late.sendAll(Array("resumed\n".utf8))
        _ = try listener.waitFor(.seconds(5), "'resumed' on stdout") { listener.out.contains("resumed\n") ? true : nil }
        late.close()

        print("fault suite: EMFILE: \(clients.count) connections against a limit of 32 descriptors; "
            + "\(cpu) of CPU over 5 s at the limit; resumed")
    }

    @Test("1,000 idle connections against listen --keep-open --timeout 1: each dropped after 1 s, never before, and a second wave costs no more memory")
    func thousandIdleConnections() throws {
        let count = 1000
        // Both ends need over 1,000 descriptors: raise this process's soft limit (sock
        // inherits it) towards the hard limit if it is lower.
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < 4096 && limit.rlim_max > limit.rlim_cur {
            limit.rlim_cur = min(4096, limit.rlim_max)
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        // Precondition: the limit (a property of the machine: its hard limit) leaves room for
        // the clients here and the connections in sock, with some to spare for the runner.
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        try #require(limit.rlim_cur >= rlim_t(count + 256),
                     "RLIMIT_NOFILE is \(limit.rlim_cur) (hard \(limit.rlim_max)); this test needs \(count + 256)")
        let listener = try ChildProcess(["listen", "0", "--keep-open", "--timeout", "1"])
        defer { listener.kill() }
        let line = try listener.waitForLine(startingWith: "listening on ")
        let address = try SocketAddress(String(line.dropFirst("listening on ".count)))
        let memoryBefore = try listener.residentKiB()

        // sock accepts a connection (and starts its timeout) after the client's connect began
        // and after the handshake that ends it: a drop sooner than 1 s after `began` is early;
        // one later than 1 s after `connected` is late. (Connects here can take a second or
        // more: with 1,000 arriving at once, the accept queue overflows and SYNs are resent.)
        //
        // Every end of stream is watched with poll(2) from the first connect on, by a thread of
        // its own: were the watching to start only after the last connect, a drop that came
        // while connects were still going on would be seen (and timed) late, and how late would
        // depend on how fast this machine makes 1,000 connections.
        var clients: [(socket: Socket, began: ContinuousClock.Instant, connected: ContinuousClock.Instant)] = []
        let watched = PthreadLocked<[CInt]>([])  // by client index
        let seen = PthreadLocked<[Int: ContinuousClock.Instant]>([:])
        let stopWatching = Atomic<Bool>(false)
        let watcherDone = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            defer { watcherDone.signal() }
            var descriptors: [pollfd] = []
            while !stopWatching.load(ordering: .relaxed) {
                let all = watched.withLock { $0 }
                while descriptors.count < all.count {
                    descriptors.append(pollfd(fd: all[descriptors.count], events: Int16(POLLIN), revents: 0))
                }
                if seen.withLock({ $0.count }) == count { return }
                guard !descriptors.isEmpty, poll(&descriptors, nfds_t(descriptors.count), 10) > 0 else { usleep(1000); continue }
                let now = ContinuousClock.now
                for index in descriptors.indices where descriptors[index].revents != 0 {
                    seen.withLock { $0[index] = now }
                    descriptors[index].fd = -1  // poll ignores it from now on
                }
            }
        }
        var watcherJoined = false
        defer { if !watcherJoined { stopWatching.store(true, ordering: .relaxed); _ = watcherDone.wait(timeout: .now() + 5) } }
        for _ in 0..<count {
            let client = try Socket(.ipv4)
            let began = ContinuousClock.now
            try client.connect(to: address, deadline: .now + .seconds(10))
            clients.append((client, began, .now))
            let fd = try client.withUnsafeDescriptor { $0 }
            watched.withLock { $0.append(fd) }
        }
        let memoryPeak = try listener.residentKiB()

        // Wait for every end of stream, bounded at 15 s after the last connect.
        let end = ContinuousClock.now + .seconds(15)
        while seen.withLock({ $0.count }) < count && ContinuousClock.now < end { usleep(10_000) }
        stopWatching.store(true, ordering: .relaxed)
        watcherJoined = true
        guard watcherDone.wait(timeout: .now() + 5) == .success else { throw CLIFailure("the poll(2) thread did not stop") }
        let dropped = seen.withLock { $0 }
        let remaining = count - dropped.count
        #expect(remaining == 0, "\(remaining) of \(count) connections were never dropped")
        var early = 0
        var latest = Duration.zero
        var soonest = Duration.seconds(1000)
        for (index, client) in clients.enumerated() {
            guard let at = dropped[index] else { continue }
            #expect(try client.socket.receive(upTo: 1, deadline: .now + .seconds(1)).isEmpty)  // EOF, not data
            if at - client.began < .seconds(1) { early += 1 }
            latest = max(latest, at - client.connected)
            soonest = min(soonest, at - client.began)
        }
        #expect(early == 0, "\(early) connections were dropped before their 1 s timeout, the soonest after \(soonest)")
        // Under a sanitizer, sock's thread start-up is many times slower: only the lower bound holds.
        #expect(latest < (sanitizer == nil ? .seconds(3) : .seconds(15)), "a connection was dropped \(latest) after it connected")
        #expect(listener.process.isRunning)

        // The connections' tasks are gone. Their memory goes back to the allocator, which keeps
        // it for the next ones rather than return it to the system: so a second wave of as
        // many connections must not make sock grow (a leak would, by about as much again).
        clients.forEach { $0.socket.close() }
        Thread.sleep(forTimeInterval: 0.5)
        let memoryAfter = try listener.residentKiB()
        var second: [Socket] = []
        for _ in 0..<count {
            let client = try Socket(.ipv4)
            try client.connect(to: address, deadline: .now + .seconds(10))
            second.append(client)
        }
        for client in second {
            #expect(try client.receive(upTo: 1, deadline: .now + .seconds(15)).isEmpty)  // dropped after its timeout
            client.close()
        }
        Thread.sleep(forTimeInterval: 0.5)
        let memoryAfterSecond = try listener.residentKiB()
        // (ASan holds freed memory in quarantine and TSan keeps shadow memory: no test of it there.)
        #expect(sanitizer != nil || memoryAfterSecond <= memoryAfter + 2048,
                "RSS \(memoryBefore) KiB before, \(memoryPeak) KiB at the peak, \(memoryAfter) KiB after, \(memoryAfterSecond) KiB after a second wave")
        print("fault suite: \(count) idle connections all dropped, none early (the soonest \(soonest) after its connect began), none later than \(latest) after its connect returned; "
            + "sock RSS \(memoryBefore) KiB before, \(memoryPeak) KiB with \(count) connections, \(memoryAfter) KiB after, \(memoryAfterSecond) KiB after a second wave")
    }

    @Test("a true black hole (SYNs dropped in a network namespace): connect times out at the requested time",
          .enabled(if: BlackHole.unavailableReason == nil, "skipped: \(BlackHole.unavailableReason ?? "")"))
    func blackHole() throws {
        let hole = try BlackHole()
        defer { hole.remove() }
        // Control: with nothing dropped, the far end has no listener and refuses at once.
        let start = ContinuousClock.now
        let refused = try ChildProcess(["connect", "\(hole.farAddress):9", "--timeout", "3"], prefix: hole.inNearEnd).finish()
        #expect(refused.status == 1 && refused.err.contains("ECONNREFUSED"), "\(refused)")
        // Long before the 3 s timeout: "at once" plus two processes' start-up, which under a
        // sanitizer takes up to a second.
        #expect(ContinuousClock.now - start < .seconds(2))

        try hole.dropSYNs()
        let timedStart = ContinuousClock.now
        let timedOut = try ChildProcess(["connect", "\(hole.farAddress):9", "--timeout", "1"], prefix: hole.inNearEnd).finish()
        let elapsed = ContinuousClock.now - timedStart
        #expect(timedOut.status == 124, "\(timedOut)")
        #expect(timedOut.err.contains("timed out after 1s"), "\(timedOut.err)")
        #expect(elapsed >= .seconds(1), "timed out early: \(elapsed)")
        #expect(elapsed < .seconds(2.5), "timed out late: \(elapsed)")
        print("fault suite: black hole: refused at once without the drop rule; with it, timed out after \(elapsed) (asked 1 s)")
    }
}

/// The sanitizer this test process (and the sock beside it, built in the same build) runs
/// under, or nil.
let sanitizer: String? = {
    for (symbol, name) in [("__tsan_init", "thread"), ("__asan_init", "address")] where dlsym(nil, symbol) != nil {
        return name
    }
    return nil
}()

/// Two network namespaces joined by a veth pair, 10.253.0.1/30 (near) and 10.253.0.2/30
/// (far); `dropSYNs()` makes the far end drop every TCP SYN with nftables. Traffic stays
/// inside the two namespaces; `remove()` deletes them (and the veth pair with them).
struct BlackHole {
    let near: String
    let far: String
    let farAddress = "10.253.0.2"
    var inNearEnd: [String] { [BlackHole.ip, "netns", "exec", near] }

    static let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }
        ?? "ip"
    static let nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Why the test cannot run here, or nil when it can (root, `ip`, `nft`, namespaces allowed).
    static let unavailableReason: String? = {
        if getuid() != 0 { return "not root: creating network namespaces needs root" }
        if !FileManager.default.isExecutableFile(atPath: ip) { return "no 'ip' (Debian package iproute2)" }
        if nft == nil { return "no 'nft' (Debian package nftables; .ci/run installs it)" }
        let probe = "sockets-probe-\(getpid())"
        guard (try? run([ip, "netns", "add", probe])) != nil else { return "'ip netns add' is not permitted here" }
        _ = try? run([ip, "netns", "del", probe])
        return nil
    }()

    init() throws {
        let tag = "\(getpid() % 100_000)"
        near = "sockets-near-\(tag)"
        far = "sockets-far-\(tag)"
        let (nearLink, farLink) = ("sbh\(tag)n", "sbh\(tag)f")
        let ip = BlackHole.ip
        do {
            for command in [
                [ip, "netns", "add", near], [ip, "netns", "add", far],
                [ip, "link", "add", nearLink, "type", "veth", "peer", "name", farLink],
                [ip, "link", "set", nearLink, "netns", near], [ip, "link", "set", farLink, "netns", far],
                [ip, "-n", near, "addr", "add", "10.253.0.1/30", "dev", nearLink],
                [ip, "-n", far, "addr", "add", "\(farAddress)/30", "dev", farLink],
                [ip, "-n", near, "link", "set", nearLink, "up"], [ip, "-n", far, "link", "set", farLink, "up"],
            ] {
                try BlackHole.run(command)
            }
        } catch {
            remove()
            throw error
        }
    }

    func dropSYNs() throws {
        let nft = [BlackHole.ip, "netns", "exec", far, BlackHole.nft!]
        try BlackHole.run(nft + ["add", "table", "inet", "blackhole"])
        try BlackHole.run(nft + ["add", "chain", "inet", "blackhole", "input", "{ type filter hook input priority 0; policy accept; }"])
        try BlackHole.run(nft + ["add", "rule", "inet", "blackhole", "input", "tcp", "flags", "&", "(syn|ack)", "==", "syn", "drop"])
    }

    func remove() {
        for namespace in [near, far] { _ = try? BlackHole.run([BlackHole.ip, "netns", "del", namespace]) }
    }

    /// Runs a command to completion (at most 10 s, then SIGKILL); throws if it fails.
    @discardableResult
    static func run(_ command: [String]) throws -> String {
        let child = try ChildProcess(command: command)
        try? child.stdin.fileHandleForWriting.close()
        let (status, out, err) = try child.finish(within: .seconds(10))
        guard status == 0 else { throw CLIFailure("\(child.commandLine) failed (\(status)): \(out)\(err)") }
        return out
    }
}

/// A value behind an `NSLock` (a `pthread_mutex_t`), for state two test threads contend
/// for: ThreadSanitizer sees this lock's hand-offs, not those of `Synchronization.Mutex`,
/// whose futex waits sit inside the precompiled standard library.
private final class PthreadLocked<Value>: @unchecked Sendable {
    // @unchecked Sendable is safe: `value` is read and written only inside `withLock`,
    // which holds `lock` for the whole access.
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
