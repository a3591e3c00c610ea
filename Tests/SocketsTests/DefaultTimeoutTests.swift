import Foundation
import Sockets
import Synchronization
import Testing

@Suite("the process-wide default timeout")
struct DefaultTimeoutTests {
    @Test("new sockets take the default; existing ones keep theirs")
    func inheritance() throws {
        let before = try Socket(.ipv4)
        let two = try SocketTimeout.after(.seconds(2))
        try withDefaultTimeout(two) {
            #expect(before.timeout == .never)
            #expect(try Socket(.ipv4).timeout == two)
            #expect(try Socket(.ipv6, .datagram).timeout == two)
            let (a, b) = try Socket.pair()
            #expect(a.timeout == two && b.timeout == two)
        }
        #expect(Socket.defaultTimeout == .never)
    }

    @Test("setting the default after creating a socket does not change that socket")
    func tooLate() throws {
        let (server, fillers, address) = try fullQueueListener()
        defer { server.close(); fillers.forEach { $0.close() } }
        let client = try Socket(.ipv4)
        withDefaultTimeout(try .after(.milliseconds(100))) {
            #expect(client.timeout == .never)
            // It really waits past the default: only the per-call deadline stops it.
            let (_, elapsed) = expectFailure(.timedOut) { try client.connect(to: address, deadline: .now + .milliseconds(400)) }
            expectTiming(elapsed, atLeast: .milliseconds(400))
        }
    }

    @Test("the default can be set and read from many threads at once")
    func concurrent() throws {
        let values: [SocketTimeout] = [.never, .nonBlocking, try .after(.seconds(1)), try .after(.milliseconds(5))]
        let saved = Socket.defaultTimeout
        defer { Socket.defaultTimeout = saved }
        let bad = Atomic<Int>(0)
        let workers = (0..<8).map { worker in
            Background {
                for i in 0..<500 {
                    Socket.defaultTimeout = values[(worker + i) % values.count]
                    if !values.contains(Socket.defaultTimeout) { bad.add(1, ordering: .relaxed) }
                    let socket = try Socket(.ipv4)
                    if !values.contains(socket.timeout) { bad.add(1, ordering: .relaxed) }
                }
            }
        }
        for w in workers { try w.value(within: .seconds(60)) }
        #expect(bad.load(ordering: .relaxed) == 0)
    }

    @Test("an adopted descriptor takes the default, whatever blocking mode and kernel timer it had")
    func adopted() throws {
        let (a, b) = try Socket.pair()
        let raw = try a.withUnsafeDescriptor { dup($0) }
        #expect(raw >= 0)
        // Its creator left it non-blocking with a 10 s SO_RCVTIMEO: neither may leak through.
        var tenSeconds = timeval(tv_sec: 10, tv_usec: 0)
        #expect(setsockopt(raw, SOL_SOCKET, SO_RCVTIMEO, &tenSeconds, socklen_t(MemoryLayout<timeval>.size)) == 0)
        #expect(fcntl(raw, F_SETFL, fcntl(raw, F_GETFL) | O_NONBLOCK) == 0)
        let timeout = try SocketTimeout.after(.milliseconds(150))
        try withDefaultTimeout(timeout) {
            let adopted = try Socket(adopting: raw)
            #expect(adopted.timeout == timeout)
            #expect(adopted.family == .unix)
            let (_, elapsed) = expectFailure(.timedOut) { _ = try adopted.receive(upTo: 1) }
            expectTiming(elapsed, atLeast: .milliseconds(150))
            try b.sendAll([9])
            #expect(try adopted.receive(upTo: 1) == [9])
        }
        var pipeEnds: [CInt] = [-1, -1]
        #expect(pipe(&pipeEnds) == 0)
        defer { close(pipeEnds[0]); close(pipeEnds[1]) }
        let (error, _) = expectFailure(.system) { _ = try Socket(adopting: pipeEnds[0]) }  // a pipe is no socket
        #expect(error?.errno == .notSocket)
        #expect(error?.detail?.contains("not an open socket") == true)
        expectFailure(.closed) { _ = try Socket(adopting: 9999) }
    }
}
