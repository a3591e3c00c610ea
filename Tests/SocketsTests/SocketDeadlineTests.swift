import Foundation
import Sockets
import SystemPackage
import Synchronization
import Testing

// Socket deadlines (Go's SetReadDeadline): set from another thread, they reach calls
// already waiting — a blocking receive, accept, sendAll — without closing the socket.

/// A blocking call run on another thread, with the instant it ended.
private func waiting(
    _ body: @escaping @Sendable () throws -> Void
) -> Background<(error: SocketError?, at: ContinuousClock.Instant)> {
    Background {
        do {
            try body()
            return (nil, .now)
        } catch let error as SocketError {
            return (error, .now)
        }
    }
}

private func median(_ values: [Duration]) -> Duration { values.sorted()[values.count / 2] }

@Suite("socket deadlines: set from another thread, they reach waiting calls")
struct SocketDeadlineTests {
    @Test("a deadline set while a receive waits ends it at the new instant, never early; the socket stays usable")
    func setWhileWaiting() throws {
        let (client, server) = try connectedPair()
        client.setReceiveDeadline(nil)  // this direction waits where a change reaches it from the start
        var lateness: [Duration] = []
        for _ in 0..<5 {
            let call = waiting { _ = try client.receive(upTo: 100) }
            pause(.milliseconds(50))
            let instant = ContinuousClock.now + .milliseconds(150)
            client.setReceiveDeadline(instant)
            let (error, at) = try call.value()
            #expect(error?.kind == .timedOut, "\(String(describing: error))")
            #expect(at >= instant, "ended early: \(instant - at) before the deadline")
            #expect(at - instant < .milliseconds(500), "far too late: \(at - instant)")
            lateness.append(at - instant)
            client.setReceiveDeadline(nil)
        }
        #expect(median(lateness) < .milliseconds(20), "median lateness \(median(lateness))")
        print("socket deadline set while a blocking receive waits: lateness \(lateness.sorted()), median \(median(lateness))")
        // Nothing was consumed and the socket is still usable.
        try server.sendAll(Array("after".utf8))
        #expect(try client.receive(upTo: 100) == Array("after".utf8))
    }

    @Test("a deadline already passed ends a waiting receive at once, with the socket's deadline in the message")
    func pastEndsAtOnce() throws {
        let (client, server) = try connectedPair()
        client.setReceiveDeadline(nil)
        let call = waiting { _ = try client.receive(upTo: 100) }
        pause(.milliseconds(100))
        let set = ContinuousClock.now
        client.setReceiveDeadline(.now)
        let (error, at) = try call.value()
        #expect(error?.kind == .timedOut)
        #expect(at - set < .milliseconds(500), "took \(at - set)")
        #expect(error.map { "\($0)" } == "receive from \(try server.localAddress) timed out: the socket's receive deadline passed")
        // A call that starts after it fails before any system call, even with data waiting.
        try server.sendAll(Array("x".utf8))
        pause(.milliseconds(20))
        let (early, _) = expectFailure(.timedOut) { _ = try client.receive(upTo: 100) }
        #expect(early.map { "\($0)" } == "receive from \(try server.localAddress) timed out: the socket's receive deadline had already passed")
        client.setReceiveDeadline(nil)
        #expect(try client.receive(upTo: 100) == Array("x".utf8))
        // sendAll too, even where it would first try a send that cannot wait: nothing is sent.
        client.setSendDeadline(.now - .seconds(1))
        let (unsent, _) = expectFailure(.timedOut) { try client.sendAll([1, 2, 3]) }
        #expect(unsent?.bytesTransferred == 0)
        #expect(unsent.map { "\($0)" } == "sendAll to \(try server.localAddress) timed out: the socket's send deadline had already passed (0 bytes transferred)")
        client.setSendDeadline(nil)
        server.timeout = try .after(.milliseconds(100))
        _ = expectFailure(.timedOut) { _ = try server.receive(upTo: 10) }
    }

    @Test("moving the deadline later makes the waiting receive wait until the new instant")
    func extended() throws {
        let (client, server) = try connectedPair()
        defer { server.close() }  // kept open: its end of stream would end the receives
        let start = ContinuousClock.now
        client.setReceiveDeadline(start + .milliseconds(200))
        let call = waiting { _ = try client.receive(upTo: 100) }
        pause(.milliseconds(100))
        let later = start + .milliseconds(600)
        client.setReceiveDeadline(later)
        let (error, at) = try call.value()
        #expect(error?.kind == .timedOut)
        #expect(at >= later, "ended \(later - at) before the new deadline")
        #expect(at - later < .milliseconds(1500))
        // Removing it lets the next receive wait for data.
        client.setReceiveDeadline(nil)
        let next = waiting { _ = try client.receive(upTo: 100) }
        pause(.milliseconds(300))
        client.setReceiveDeadline(.now)
        #expect(try next.value().error?.kind == .timedOut)
    }

    @Test("the first deadline reaches a receive already asleep in the kernel within 250 ms")
    func firstDeadlineReachesKernelSleeper() throws {
        let (client, server) = try connectedPair()
        defer { server.close() }  // kept open: its end of stream would end the receives
        let call = waiting { _ = try client.receive(upTo: 100) }  // no deadline yet: it sleeps in recv(2)
        pause(.milliseconds(100))
        let set = ContinuousClock.now
        client.setReceiveDeadline(.now)
        let (error, at) = try call.value()
        #expect(error?.kind == .timedOut)
        #expect(at - set < .milliseconds(250) + .milliseconds(1000), "took \(at - set)")
        print("first socket deadline reached a receive asleep in the kernel after \(at - set)")
    }

    @Test("the earliest limit wins, and the message names the one the user gave")
    func earliestWins() throws {
        let (client, server) = try connectedPair()
        let peer = try server.localAddress
        client.timeout = try .after(.seconds(5))
        client.setReceiveDeadline(.now + .milliseconds(150))
        let (a, elapsedA) = expectFailure(.timedOut) { _ = try client.receive(upTo: 10) }
        expectTiming(elapsedA, atLeast: .milliseconds(140))
        #expect(a.map { "\($0)" } == "receive from \(peer) timed out: the socket's receive deadline passed")

        client.setReceiveDeadline(.now + .seconds(5))
        let (b, elapsedB) = expectFailure(.timedOut) { _ = try client.receive(upTo: 10, deadline: .now + .milliseconds(150)) }
        expectTiming(elapsedB, atLeast: .milliseconds(150))
        #expect(b.map { "\($0)" } == "receive from \(peer) timed out: the deadline passed")

        client.timeout = try .after(.milliseconds(150))
        let (c, elapsedC) = expectFailure(.timedOut) { _ = try client.receive(upTo: 10) }
        expectTiming(elapsedC, atLeast: .milliseconds(150))
        #expect(c.map { "\($0)" } == "receive from \(peer) timed out after 150ms")
    }

    @Test("a per-call deadline shorter than the timeout is reported as the deadline, not as what was left of it")
    func callDeadlineMessage() throws {
        let (client, server) = try connectedPair()
        client.timeout = try .after(.seconds(5))
        let (error, _) = expectFailure(.timedOut) { _ = try client.receive(exactly: 4, deadline: .now + .milliseconds(100)) }
        #expect(error.map { "\($0)" } == "receive from \(try server.localAddress) timed out: the deadline passed (0 bytes transferred)")
    }

    @Test("the receive deadline ends a waiting accept; the listener keeps accepting")
    func accept() throws {
        let (listener, address) = try makeListener()
        let call = waiting { _ = try listener.accept() }
        pause(.milliseconds(100))
        let instant = ContinuousClock.now + .milliseconds(100)
        listener.setReceiveDeadline(instant)
        let (error, at) = try call.value()
        #expect(error?.kind == .timedOut)
        #expect(at >= instant)
        #expect(error.map { "\($0)" } == "accept on \(address) timed out: the socket's receive deadline passed")
        listener.setReceiveDeadline(nil)
        let client = try Socket.connect(to: address, timeout: .after(.seconds(5)))
        defer { client.close() }
        let (accepted, _) = try listener.accept(deadline: .now + .seconds(5))
        accepted.close()
    }

    @Test("the send deadline ends a waiting sendAll, which reports what was sent; receives are not touched")
    func sendAll() throws {
        let (client, server) = try connectedPair()
        try smallBuffers(client, server)
        let receiving = waiting { _ = try client.receive(upTo: 10) }
        let sending = waiting { try client.sendAll([UInt8](repeating: 7, count: 4 << 20)) }
        pause(.milliseconds(150))
        let instant = ContinuousClock.now + .milliseconds(50)
        client.setSendDeadline(instant)
        let (error, at) = try sending.value()
        #expect(error?.kind == .timedOut)
        #expect(at >= instant)
        let sent = error?.bytesTransferred ?? -1
        #expect(sent > 0 && sent < 4 << 20, "sent \(sent)")
        #expect(error.map { "\($0)" } == "sendAll to \(try server.localAddress) timed out: the socket's send deadline passed (\(sent) bytes transferred)")
        // The receive still waits: only the send direction has a deadline.
        pause(.milliseconds(100))
        try server.sendAll([1])
        #expect(try receiving.value().error == nil)
        // The peer reads exactly what sendAll reported.
        server.timeout = try .after(.seconds(5))
        var total = 0
        try client.shutdown(.write)
        while true {
            let chunk = try server.receive(upTo: 65_536)
            if chunk.isEmpty { break }
            total += chunk.count
        }
        #expect(total == sent)
    }

    @Test("setting deadlines from many threads while calls wait: each ends by its direction, no spin afterwards")
    func noSpinAfterChange() throws {
        let (client, server) = try connectedPair()
        defer { server.close() }  // kept open: its end of stream would end the receives
        client.setReceiveDeadline(nil)
        let calls = (0..<3).map { _ in waiting { _ = try client.receive(upTo: 100) } }
        pause(.milliseconds(100))
        client.setReceiveDeadline(.now + .seconds(30))  // wakes them; they wait again
        pause(.milliseconds(50))
        // Waiting on: the waker has been drained, so the receives sleep rather than spin.
        let cpu = processCPUTime()
        pause(.milliseconds(500))
        let used = processCPUTime() - cpu
        #expect(used < .milliseconds(200), "the waiting receives used \(used) of CPU in 500 ms")
        client.setReceiveDeadline(.now)
        for call in calls { #expect(try call.value().error?.kind == .timedOut) }
    }

    @Test("with no descriptor to spare for the eventfd, a deadline still reaches a waiting receive (by its 250 ms looks)")
    func noDescriptorToSpare() throws {
        let (client, server) = try connectedPair()
        defer { server.close(); client.close() }
        client.setReceiveDeadline(nil)
        var saved = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved)
        let highest = (try openDescriptors()).compactMap { Int($0.split(separator: " ")[0]) }.max() ?? 1000
        var low = saved
        low.rlim_cur = rlim_t(highest + 1)
        var fillers: [CInt] = []
        let call: Background<(error: SocketError?, at: ContinuousClock.Instant)>
        do {
            defer {
                setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &saved)
                fillers.forEach { Glibc.close($0) }
            }
            setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &low)
            while fillers.count < 10_000 {
                let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
                if fd < 0 { break }
                fillers.append(fd)
            }
            try #require(open("/dev/null", O_RDONLY) < 0, "the descriptor table is not full")
            call = waiting { _ = try client.receive(upTo: 100) }
            pause(.milliseconds(100))  // it has tried to make its eventfd, and failed
        }
        let set = ContinuousClock.now
        client.setReceiveDeadline(.now)
        let (error, at) = try call.value()
        #expect(error?.kind == .timedOut, "\(String(describing: error))")
        #expect(at - set < .milliseconds(1000), "took \(at - set)")
    }

    @Test("a Unix stream sendAll to a reader that frees room now and then: its timeout and a new send deadline still end it")
    func unixTrickle() throws {
        for mode in ["timeout", "deadline"] {
            let (writer, reader) = try Socket.pair()
            defer { writer.close(); reader.close() }
            let stop = Atomic<Bool>(false)
            let reading = Background {  // 16 KiB every 50 ms, for 10 s at most
                let end = ContinuousClock.now + .seconds(10)
                reader.timeout = try .after(.milliseconds(100))
                while !stop.load(ordering: .relaxed) && ContinuousClock.now < end {
                    _ = try? reader.receive(upTo: 16_384)
                    pause(.milliseconds(50))
                }
            }
            writer.timeout = mode == "timeout" ? try .after(.seconds(1)) : .never
            if mode == "deadline" {
                let setter = Background { pause(.milliseconds(300)); writer.setSendDeadline(.now) }
                defer { _ = try? setter.value() }
                let (error, elapsed) = expectFailure(.timedOut) { try writer.sendAll([UInt8](repeating: 1, count: 16 << 20)) }
                #expect(elapsed < .seconds(2), "\(mode): still sending after \(elapsed)")
                #expect((error?.bytesTransferred ?? 0) > 0)
            } else {
                let (_, elapsed) = expectFailure(.timedOut) { try writer.sendAll([UInt8](repeating: 1, count: 16 << 20)) }
                expectTiming(elapsed, atLeast: .seconds(1))
            }
            stop.store(true, ordering: .relaxed)
            try reading.value(within: .seconds(15))
        }
    }

    @Test("close() still ends a call that watches the deadline")
    func closeEndsWatcher() throws {
        let (client, server) = try connectedPair()
        defer { server.close() }  // kept open: its end of stream would end the receives
        client.setReceiveDeadline(.now + .seconds(30))
        let call = waiting { _ = try client.receive(upTo: 100) }
        pause(.milliseconds(100))
        client.close()
        #expect(try call.value().error?.kind == .closed)
        client.setReceiveDeadline(.now)  // on a closed socket: nothing
    }
}
