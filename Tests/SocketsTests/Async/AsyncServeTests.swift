import Foundation
import Sockets
import Synchronization
import Testing

// Socket.serve: a task per connection, idle timeouts as errors, a connection limit, graceful
// shutdown, and ten thousand concurrent connections from another process.

@Suite("async: serve")
struct AsyncServeTests {
    /// An echo handler that counts the connections it serves at once and how each ended.
    final class Echo: @unchecked Sendable {
        // @unchecked Sendable is safe: `endingsStore` is touched only under `lock`.
        let live = Atomic(0)
        let peak = Atomic(0)
        private let lock = NSLock()
        private var endingsStore: [SocketError.Kind?] = []
        var endings: [SocketError.Kind?] { lock.withLock { endingsStore } }
        func record(_ kind: SocketError.Kind?) { lock.withLock { endingsStore.append(kind) } }

        var handler: @Sendable (Socket, SocketAddress) async throws -> Void {
            { [self] connection, _ in
                let now = live.add(1, ordering: .relaxed).newValue
                _ = peak.max(now, ordering: .relaxed)
                defer { live.subtract(1, ordering: .relaxed) }
                do throws(SocketError) {
                    while true {
                        let bytes = try await connection.receive(upTo: 4096)
                        if bytes.isEmpty { break }
                        try await connection.sendAll(bytes)
                    }
                    lock.withLock { endingsStore.append(nil) }
                } catch {
                    lock.withLock { endingsStore.append(error.kind) }
                    throw error
                }
            }
        }
    }

    @Test("echoes, and a connection silent past its timeout is closed after it, never before")
    func echoAndIdleTimeout() async throws {
        let (listener, address) = try makeListener()
        let echo = Echo()
        let server = Task { try await listener.serve(connectionTimeout: try .after(.milliseconds(300)), handler: echo.handler) }
        let client = try Socket(.ipv4)
        try await client.connect(to: address, deadline: .now + .seconds(5))
        // The server's idle wait starts once it has echoed, which is after this instant but may
        // be before the client has read the echo (under a sanitizer, milliseconds before): the
        // lower bound is taken from here, so that it can never be later than the server's start.
        let idleFrom = ContinuousClock.now
        try await client.sendAll(Array("ping".utf8))
        #expect(try await client.receive(exactly: 4, deadline: .now + .seconds(5)) == Array("ping".utf8))
        #expect(try await client.receive(upTo: 10, deadline: .now + .seconds(10)).isEmpty)  // closed by the server
        expectTiming(ContinuousClock.now - idleFrom, atLeast: .milliseconds(300))
        #expect(echo.endings == [.timedOut])
        server.cancel()
        try await value(of: server)
        listener.close()
    }

    @Test("two idle connections delay nobody: a third client's echo comes at once")
    func idleDelayNobody() async throws {
        let (listener, address) = try makeListener()
        let echo = Echo()
        let server = Task { try await listener.serve(handler: echo.handler) }
        var idle: [Socket] = []
        for _ in 0..<2 {
            let socket = try Socket(.ipv4)
            try await socket.connect(to: address, deadline: .now + .seconds(5))
            idle.append(socket)
        }
        await nap(.milliseconds(100))
        let client = try Socket(.ipv4)
        let start = ContinuousClock.now
        try await client.connect(to: address, deadline: .now + .seconds(5))
        try await client.sendAll([1, 2, 3])
        #expect(try await client.receive(exactly: 3, deadline: .now + .seconds(5)) == [1, 2, 3])
        #expect(ContinuousClock.now - start < .seconds(1))
        #expect(echo.live.load(ordering: .relaxed) == 3)
        server.cancel()
        try await value(of: server)
        listener.close()
    }

    @Test("maxConnections: no more are served at once; the next is served when one ends")
    func connectionLimit() async throws {
        let (listener, address) = try makeListener()
        let echo = Echo()
        let server = Task { try await listener.serve(maxConnections: 2, handler: echo.handler) }
        var clients: [Socket] = []
        for _ in 0..<3 {
            let socket = try Socket(.ipv4)
            try await socket.connect(to: address, deadline: .now + .seconds(5))
            clients.append(socket)
        }
        for client in clients[..<2] {
            try await client.sendAll([1])
            #expect(try await client.receive(exactly: 1, deadline: .now + .seconds(5)) == [1])
        }
        // The third is connected (the kernel's queue) but not served.
        try await clients[2].sendAll([3])
        await expectAsyncFailure(.timedOut) { _ = try await clients[2].receive(exactly: 1, deadline: .now + .milliseconds(300)) }
        #expect(echo.peak.load(ordering: .relaxed) == 2)
        clients[0].close()
        #expect(try await clients[2].receive(exactly: 1, deadline: .now + .seconds(5)) == [3])
        #expect(echo.peak.load(ordering: .relaxed) == 2)
        server.cancel()
        try await value(of: server)
        listener.close()
    }

    @Test("graceful shutdown: cancelling stops accepting, lets connections finish within the grace period, then closes the rest")
    func gracefulShutdown() async throws {
        let (listener, address) = try makeListener()
        let before = try await openDescriptorsAfterWarmUp()
        let handlerEndings = Echo()
        let server = Task {
            try await listener.serve(gracePeriod: .milliseconds(500)) { connection, _ in
                let request = try await connection.receive(upTo: 100)
                if request == Array("slow".utf8) {
                    await nap(.milliseconds(200))  // mid-request when the server is cancelled
                    try await connection.sendAll(Array("done".utf8))
                    handlerEndings.record(nil)
                } else {
                    do throws(SocketError) {
                        _ = try await connection.receive(upTo: 100)  // waits for ever
                    } catch {
                        handlerEndings.record(error.kind)
                    }
                }
            }
        }
        let slow = try Socket(.ipv4), idle = try Socket(.ipv4)
        try await slow.connect(to: address, deadline: .now + .seconds(5))
        try await idle.connect(to: address, deadline: .now + .seconds(5))
        try await idle.sendAll(Array("idle".utf8))
        try await slow.sendAll(Array("slow".utf8))
        await nap(.milliseconds(50))
        let cancelledAt = ContinuousClock.now
        server.cancel()
        // The request in progress is answered.
        #expect(try await slow.receive(exactly: 4, deadline: .now + .seconds(5)) == Array("done".utf8))
        // The idle connection is closed at the end of the grace period, not before.
        #expect(try await idle.receive(upTo: 10, deadline: .now + .seconds(5)).isEmpty)
        expectTiming(ContinuousClock.now - cancelledAt, atLeast: .milliseconds(500))
        try await value(of: server)
        #expect(Set(handlerEndings.endings) == [nil, .closed])
        // No longer accepting: the listener is closed, so a late client is refused, not left waiting.
        #expect(listener.isClosed)
        let late = try Socket(.ipv4)
        await expectAsyncFailure(.connectionRefused) { try await late.connect(to: address, deadline: .now + .seconds(5)) }
        late.close()
        slow.close()
        idle.close()
        listener.close()
        #expect(try descriptorsLeaked(since: before).isEmpty)
    }

    @Test("a listener with a timeout: serve stops after that long without a connection, and throws timedOut")
    func listenerTimeout() async throws {
        let (listener, _) = try makeListener()
        listener.timeout = try .after(.milliseconds(200))
        let start = ContinuousClock.now
        await expectAsyncFailure(.timedOut) { try await listener.serve { _, _ in } }
        expectTiming(ContinuousClock.now - start, atLeast: .milliseconds(200))
        await expectAsyncFailure(.invalidArgument) { try await listener.serve(maxConnections: 0) { _, _ in } }
        listener.close()
    }

    @Test("ten thousand concurrent connections from another process, each echoed, all served at once")
    func tenThousand() async throws {
        let count = 10_000
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        try #require(limit.rlim_cur >= rlim_t(count + 512), "RLIMIT_NOFILE is \(limit.rlim_cur); this test needs \(count + 512)")
        _ = try await openDescriptorsAfterWarmUp()
        let listener = try Socket(.ipv4)
        try listener.bind(to: .ipv4(.loopback, port: 0))
        try listener.listen(backlog: 4096)
        let address = try listener.localAddress
        let echo = Echo()
        let server = Task { try await listener.serve(handler: echo.handler) }
        // The clients: Python, in batches of 500 connects; every connection sends its number
        // once all are open, and reads it back; then all close.
        let script = """
            import resource, selectors, socket, sys, time
            n, port = int(sys.argv[1]), int(sys.argv[2])
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            socks = []
            for start in range(0, n, 500):
                batch = []
                for i in range(start, min(n, start + 500)):
                    s = socket.socket(); s.setblocking(False)
                    s.connect_ex(("127.0.0.1", port)); batch.append(s)
                sel = selectors.DefaultSelector()
                for s in batch: sel.register(s, selectors.EVENT_WRITE)
                pending, end = len(batch), time.time() + 30
                while pending and time.time() < end:
                    for key, _ in sel.select(1):
                        sel.unregister(key.fileobj); pending -= 1
                sel.close()
                if pending: sys.exit("connects did not finish")
                socks += batch
            for i, s in enumerate(socks):
                s.setblocking(True); s.settimeout(30); s.sendall(b"%08d" % i)
            ok = sum(1 for i, s in enumerate(socks) if s.recv(8) == b"%08d" % i)
            print(ok, flush=True)
            for s in socks: s.close()
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["timeout", "120", "python3", "-c", script, "\(count)", "\(address.port!)"]
        let output = Pipe()
        process.standardOutput = output
        let before = try openDescriptors()
        try process.run()
        let started = ContinuousClock.now
        while process.isRunning && ContinuousClock.now - started < .seconds(150) { await nap(.milliseconds(50)) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let answer = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0)
        #expect(answer.trimmingCharacters(in: .whitespacesAndNewlines) == "\(count)")
        #expect(echo.peak.load(ordering: .relaxed) == count, "served at most \(echo.peak.load(ordering: .relaxed)) at once")
        // Every connection ends (end of stream) and is released.
        let end = ContinuousClock.now + .seconds(20)
        while echo.live.load(ordering: .relaxed) > 0 && ContinuousClock.now < end { await nap(.milliseconds(20)) }
        #expect(echo.live.load(ordering: .relaxed) == 0)
        server.cancel()
        try await value(of: server, within: .seconds(20))
        listener.close()
        try output.fileHandleForReading.close()
        // Sockets only: Foundation watches its children with descriptors of its own (an epoll
        // instance, an eventfd, a timerfd), which it makes and keeps when it sees fit.
        let leaked = try descriptorsLeaked(since: before).filter { $0.contains("socket:") }
        #expect(leaked.isEmpty, "\(leaked)")
        print("async serve: \(count) concurrent connections from python3 echoed in \(ContinuousClock.now - started)")
    }
}
