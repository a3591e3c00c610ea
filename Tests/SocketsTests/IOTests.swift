import Foundation
import Sockets
import Testing

@Suite("send and receive")
struct IOTests {
    @Test("a timed receive with no data times out, never early, and is not EOF")
    func receiveTimesOut() throws {
        let (client, server) = try connectedPair()
        client.timeout = try .after(.milliseconds(200))
        let (error, elapsed) = expectFailure(.timedOut) { _ = try client.receive(upTo: 100) }
        expectTiming(elapsed, atLeast: .milliseconds(200))
        #expect(error.map { "\($0)" } == "receive from \(try server.localAddress) timed out after 200ms")
        // The connection is still good afterwards.
        try server.sendAll(Array("late".utf8))
        #expect(try client.receive(upTo: 100) == Array("late".utf8))
    }

    @Test("end of stream is an empty receive, at once, whatever the timeout")
    func endOfStream() throws {
        let (client, server) = try connectedPair()
        client.timeout = try .after(.seconds(30))
        server.close()
        let start = ContinuousClock.now
        #expect(try client.receive(upTo: 100).isEmpty)
        #expect(ContinuousClock.now - start < .seconds(1))
    }

    @Test("a zero-length receive returns at once")
    func zeroLength() throws {
        let (client, _) = try connectedPair()
        client.timeout = .never
        let start = ContinuousClock.now
        #expect(try client.receive(upTo: 0).isEmpty)
        #expect(ContinuousClock.now - start < .seconds(1))
    }

    @Test("non-blocking receive with nothing there fails with wouldBlock")
    func nonBlocking() throws {
        let (client, server) = try connectedPair()
        client.timeout = .nonBlocking
        let (error, _) = expectFailure(.wouldBlock) { _ = try client.receive(upTo: 10) }
        #expect(error?.errno == .resourceTemporarilyUnavailable)
        try server.sendAll([1, 2, 3])
        try #require(try becameReadable(client), "the 3 bytes never arrived")  // not a fixed pause
        #expect(try client.receive(upTo: 10) == [1, 2, 3])
    }

    @Test("a blocking receive waits for data that comes later")
    func blockingWaits() throws {
        let (client, server) = try connectedPair()
        client.timeout = .never
        let sender = Background {
            pause(.milliseconds(100))
            try server.sendAll(Array("hi".utf8))
        }
        #expect(try client.receive(upTo: 10, deadline: .now + .seconds(10)) == Array("hi".utf8))
        try sender.value()
    }

    @Test("a past deadline fails before the system call, even with data ready, and consumes nothing")
    func pastDeadline() throws {
        let (client, server) = try connectedPair()
        try server.sendAll([7])
        try #require(try becameReadable(client), "the byte never arrived")  // data ready, as the test says
        expectFailure(.timedOut) { _ = try client.receive(upTo: 1, deadline: .now - .nanoseconds(1)) }
        #expect(try client.receive(upTo: 1) == [7])
    }

    @Test("receive(exactly:) gathers partial reads and reports an early end of stream")
    func exactly() throws {
        let (client, server) = try connectedPair()
        let sender = Background {
            for chunk in [[1, 2], [3], [4, 5, 6]] as [[UInt8]] {
                try server.sendAll(chunk)
                pause(.milliseconds(10))
            }
            server.close()
        }
        #expect(try client.receive(exactly: 4, deadline: .now + .seconds(10)) == [1, 2, 3, 4])
        try sender.value()
        let (error, _) = expectFailure(.endOfStream) { _ = try client.receive(exactly: 5, deadline: .now + .seconds(10)) }
        #expect(error?.bytesTransferred == 2)
    }

    @Test("receive(exactly:) has one deadline for the whole transfer")
    func exactlyOneDeadline() throws {
        let (client, server) = try connectedPair()
        client.timeout = try .after(.milliseconds(300))
        // One byte every 100 ms: each wait is shorter than the timeout, the whole is not.
        let dripper = Background {
            for _ in 0..<20 {
                do { try server.sendAll([0]) } catch { return }
                pause(.milliseconds(100))
            }
        }
        let (error, elapsed) = expectFailure(.timedOut) { _ = try client.receive(exactly: 20) }
        expectTiming(elapsed, atLeast: .milliseconds(300))
        #expect((error?.bytesTransferred ?? 0) < 20)
        server.close()
        try dripper.value()
    }

    @Test("sendAll has one deadline for the whole transfer against a slow reader")
    func sendAllOneDeadline() throws {
        // 4 KiB buffers set before the handshake, fixed (no autotuning): see smallBufferPair.
        let (client, server) = try smallBufferPair()
        client.timeout = try .after(.milliseconds(300))
        // The reader takes 4 KiB every 50 ms: every single wait is short, the transfer is long.
        let reader = Background {
            server.timeout = try .after(.seconds(5))
            for _ in 0..<100 {
                if try server.receive(upTo: 4096).isEmpty { return }
                pause(.milliseconds(50))
            }
        }
        let payload = [UInt8](repeating: 0xAB, count: 16 << 20)
        // Precondition: what the buffers hold plus what the reader takes in the 300 ms is far
        // below the payload, so the transfer cannot finish in time on any machine.
        let capacity = try client.option(.sendBufferSize) + server.option(.receiveBufferSize)
        try #require(capacity + 100 * 4096 < payload.count / 2, "buffers hold \(capacity) bytes")
        let (error, elapsed) = expectFailure(.timedOut) { try client.sendAll(payload) }
        expectTiming(elapsed, atLeast: .milliseconds(300))
        let sent = error?.bytesTransferred ?? -1
        #expect(sent > 0 && sent < payload.count, "sent \(sent)")
        #expect(error.map { "\($0)".contains("bytes transferred") } == true)
        client.close()
        _ = try? reader.value()
    }

    @Test("sendAll to a peer that never reads times out with what was sent")
    func sendAllStalled() throws {
        // With default buffers this relied on tcp_wmem[2] + tcp_rmem[2] (what autotuning may
        // grow to) staying below 64 MiB; explicit small buffers make the path hold 16 KiB.
        let (client, server) = try smallBufferPair()
        let payload = [UInt8](repeating: 1, count: 4 << 20)
        let capacity = try client.option(.sendBufferSize) + server.option(.receiveBufferSize)
        try #require(capacity < payload.count / 16, "the path holds \(capacity) bytes, not far below the payload")
        client.timeout = try .after(.milliseconds(200))
        let (error, elapsed) = expectFailure(.timedOut) { try client.sendAll(payload) }
        expectTiming(elapsed, atLeast: .milliseconds(200))
        #expect((error?.bytesTransferred ?? 0) > 0)
        server.close()
    }

    @Test("sendAll moves a large buffer intact")
    func sendAllLarge() throws {
        let (client, server) = try connectedPair()
        let payload = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let reader = Background { () -> [UInt8] in
            try server.receive(exactly: payload.count, deadline: .now + .seconds(20))
        }
        try client.sendAll(payload, deadline: .now + .seconds(20))
        #expect(try reader.value(within: .seconds(30)) == payload)
    }

    @Test("text goes out as UTF-8 through any byte collection")
    func collections() throws {
        let (client, server) = try connectedPair()
        try client.sendAll("héllo".utf8)
        try client.sendAll([UInt8](" w".utf8)[...])
        #expect(try client.send("!".utf8) == 1)
        #expect(try server.receive(exactly: 9) == Array("héllo w!".utf8))
    }

    @Test("half-close: after the peer shuts down writing, reads see EOF and writes still work")
    func halfClose() throws {
        let (client, server) = try connectedPair()
        try client.shutdown(.write)
        #expect(try server.receive(upTo: 10, deadline: .now + .seconds(5)).isEmpty)
        try server.sendAll(Array("still here".utf8))
        #expect(try client.receive(exactly: 10, deadline: .now + .seconds(5)) == Array("still here".utf8))
        expectFailure(.brokenPipe) { try client.sendAll([1]) }
    }

    @Test("reset, refused, timed out and EOF are told apart")
    func resetIsDistinct() throws {
        let (client, server) = try connectedPair()
        try server.setOption(.linger, .zero)  // close sends RST
        server.close()
        pause(.milliseconds(50))
        client.timeout = try .after(.seconds(5))
        let (error, elapsed) = expectFailure(.connectionReset) { _ = try client.receive(upTo: 10) }
        #expect(error?.errno == .connectionReset)
        #expect(elapsed < .seconds(1))
    }

    @Test("writing to a closed peer fails with an error and no SIGPIPE (the process lives)")
    func noSigpipe() throws {
        let (client, server) = try connectedPair()
        server.close()
        pause(.milliseconds(50))
        var failure: SocketError?
        for _ in 0..<50 {  // the first write may still be accepted; a later one fails
            do { try client.sendAll([UInt8](repeating: 0, count: 65_536)) } catch { failure = error; break }
            pause(.milliseconds(10))
        }
        #expect(failure?.kind == .brokenPipe || failure?.kind == .connectionReset, "\(String(describing: failure))")
    }

    @Test("negative counts are invalid arguments")
    func negativeCounts() throws {
        let (client, _) = try connectedPair()
        expectFailure(.invalidArgument) { _ = try client.receive(upTo: -1) }
        expectFailure(.invalidArgument) { _ = try client.receive(exactly: -1) }
    }
}

/// A connected IPv4 TCP pair over loopback whose buffers are set small before the handshake:
/// SO_SNDBUF and SO_RCVBUF 4 KiB on the client and on the listener (the accepted socket
/// inherits the listener's), so 8 KiB each as Linux reports them.
///
/// Setting either option also sets SOCK_SNDBUF_LOCK / SOCK_RCVBUF_LOCK on the socket, and
/// with those the kernel never resizes the buffer: tcp_init_buffer_space and
/// tcp_should_expand_sndbuf (send-buffer autotuning, which otherwise grows SO_SNDBUF up to
/// tcp_wmem[2] — it did so after a timed-out blocking send here, 6.18), tcp_rcvbuf_grow /
/// tcp_rcv_space_adjust (receive autotuning) and sk_stream_moderate_sndbuf all check the lock
/// first. The capacity of the path is thus fixed; the window can still reopen by a little when
/// the receiver compacts its queue, which is why SignalStormTests refills before each sendAll.
///
/// Use it wherever a test needs a path that fills (or cannot hold a payload), instead of
/// `connectedPair()`, whose buffers depend on tcp_wmem/tcp_rmem and on autotuning.
func smallBufferPair() throws -> (client: Socket, server: Socket) {
    let requested = 4096
    let (listener, address) = try makeListener()
    defer { listener.close() }
    try listener.setOption(.sendBufferSize, requested)
    try listener.setOption(.receiveBufferSize, requested)
    let client = try Socket(.ipv4)
    client.timeout = .never
    try client.setOption(.sendBufferSize, requested)
    try client.setOption(.receiveBufferSize, requested)
    try client.connect(to: address, deadline: .now + .seconds(5))
    let (server, _) = try listener.accept(deadline: .now + .seconds(5))
    server.timeout = .never
    // Precondition: the sizes took (Linux reports twice the value set) and were inherited.
    for (name, socket) in [("client", client), ("accepted", server)] {
        for option in [SocketOption<Int>.sendBufferSize, .receiveBufferSize] {
            let size = try socket.option(option)
            guard size <= 4 * requested else {
                throw TestFailure("\(name) \(option) is \(size) after setting \(requested): not the small buffer asked for")
            }
        }
    }
    return (client, server)
}

/// Waits until `socket` is readable (poll(2)), at most `limit`: true if it is. For the
/// tests that check a call "with data (or a connection) already there": loopback usually
/// delivers before send/connect returns, but a loaded machine may defer that to ksoftirqd.
func becameReadable(_ socket: Socket, within limit: Duration = .seconds(5)) throws -> Bool {
    let end = ContinuousClock.now + limit
    return try socket.withUnsafeDescriptor { fd in
        while ContinuousClock.now < end {
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&entry, 1, 10) > 0 && entry.revents & Int16(POLLIN) != 0 { return true }
        }
        return false
    }
}
