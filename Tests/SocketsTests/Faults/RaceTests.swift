import Foundation
@testable import Sockets
import Synchronization
import Testing

@Suite("fault suite: races", .serialized)
struct RaceTests {
    @Test("sockets created on 8 threads while 2 others change the process-wide default: every socket takes one whole value")
    func defaultTimeoutRace() throws {
        let values: [SocketTimeout] = [.never, .nonBlocking, try .after(.milliseconds(250)), try .after(.seconds(3))]
        let saved = Socket.defaultTimeout
        defer { Socket.defaultTimeout = saved }
        let before = try openDescriptors()
        let stop = Atomic<Bool>(false)
        let setters = (0..<2).map { offset in
            Background { () -> Int in
                var changes = 0
                while !stop.load(ordering: .relaxed) && changes < 1_000_000 {
                    Socket.defaultTimeout = values[(changes + offset) % values.count]
                    changes += 1
                }
                return changes
            }
        }
        let creators = (0..<8).map { index in
            Background { () -> [SocketTimeout] in
                var seen: [SocketTimeout] = []
                for i in 0..<2_000 {
                    let socket = try Socket(index % 2 == 0 ? .ipv4 : .ipv6, i % 3 == 0 ? .datagram : .stream)
                    seen.append(socket.timeout)
                    socket.timeout = values[i % values.count]  // and change it, racing nothing
                    _ = Socket.defaultTimeout
                    socket.close()
                }
                return seen
            }
        }
        let seen = try creators.flatMap { try $0.value(within: .seconds(60)) }
        stop.store(true, ordering: .relaxed)
        let changes = try setters.map { try $0.value(within: .seconds(10)) }.reduce(0, +)
        #expect(seen.count == 16_000)
        #expect(seen.allSatisfy { values.contains($0) }, "a socket took a value nobody set")
        #expect(changes > 0)
        #expect(try descriptorsLeaked(since: before).isEmpty)
    }

    @Test("closed while another thread waits in receive or accept: .closed, promptly, and never the data of a socket that took the same descriptor number",
          arguments: ["receive", "accept", "receive asleep in the kernel", "accept asleep in the kernel"])
    func closeWhileWaitingNeverReadsReusedNumber(waitIn: String) throws {
        let call = waitIn.hasPrefix("receive") ? "receive" : "accept"
        let inKernel = waitIn.hasSuffix("in the kernel")
        var reused = 0
        for _ in 0..<100 {
            let (waitedOn, keep, other) = try waitable(call)
            if inKernel { try warmUp(waitedOn, call, peer: keep, address: other) }
            let number = try waitedOn.withUnsafeDescriptor { $0 }
            let waiter = Background { () -> String in
                do throws(SocketError) {
                    switch (call, inKernel) {
                    case ("receive", false): return "data: \(try waitedOn.receive(upTo: 64, deadline: .now + .seconds(10)))"
                    case ("receive", true): return "data: \(try waitedOn.receive(upTo: 64))"
                    case (_, false): return "connection from \(try waitedOn.accept(deadline: .now + .seconds(10)).1)"
                    case (_, true): return "connection from \(try waitedOn.accept().1)"
                    }
                } catch {
                    return "\(error.kind)"
                }
            }
            pause(.milliseconds(2))
            let closed = ContinuousClock.now
            waitedOn.close()
            // Straight away, new sockets: one may get the old number while the waiter is
            // still on its way out. Give it something to read or accept.
            let (fresh, freshPeer, freshAddress) = try waitable(call)
            if try fresh.withUnsafeDescriptor({ $0 }) == number { reused += 1 }
            if call == "receive" {
                try freshPeer?.sendAll(Array("intruder".utf8))
            } else if let freshAddress {
                let intruder = try Socket(.ipv4)
                try intruder.connect(to: freshAddress, deadline: .now + .seconds(5))
                intruder.close()
            }
            let outcome = try waiter.value(within: .seconds(5))
            #expect(outcome == "\(SocketError.Kind.closed)")
            #expect(ContinuousClock.now - closed < .seconds(1))
            [keep, fresh, freshPeer].compactMap { $0 }.forEach { $0.close() }
            _ = other
        }
        print("fault suite: close while waiting in \(waitIn): 100 closes, \(reused) new sockets took the waiter's number afterwards")
    }
}

/// Gives `socket` a 10 s timeout and makes calls in `call`'s direction until one has set the
/// kernel timer, so that the next call with no deadline sleeps in the kernel at once.
private func warmUp(_ socket: Socket, _ call: String, peer: Socket?, address: SocketAddress?) throws {
    socket.timeout = try .after(.seconds(10))
    // Usually the first call finds what it waits for already there and the second must wait.
    // But "must wait" rests on this thread reaching the call within the helper's 5 ms pause,
    // which a loaded machine does not promise: repeat (bounded) until a call has waited.
    let wanted = KernelTimer.reach  // a 10 s timeout's timer, capped so a socket deadline can reach the sleeper
    for _ in 0..<10 where socket.state.withLock({ $0.mode.receiveTimer }) != wanted {
        let coming = Background { () throws -> Socket? in
            pause(.milliseconds(5))
            if call == "receive" { try peer?.sendAll([0]); return nil }
            let client = try Socket(.ipv4)
            try client.connect(to: address!, deadline: .now + .seconds(5))
            return client
        }
        if call == "receive" {
            _ = try socket.receive(upTo: 1)
        } else {
            _ = try socket.accept().0
        }
        _ = try coming.value(within: .seconds(5))
    }
    #expect(socket.state.withLock { $0.mode.receiveTimer } == wanted, "the warm-up did not leave the receive timer set")
}

/// A socket to wait on in `call` (a stream end, or a listener) with what keeps it company:
/// (socket, its peer or nil, the listener's address or nil).
private func waitable(_ call: String) throws -> (Socket, Socket?, SocketAddress?) {
    if call == "receive" {
        let (a, b) = try Socket.pair()
        a.timeout = .never
        return (a, b, nil)
    }
    let (listener, address) = try makeListener()
    return (listener, nil, address)
}
