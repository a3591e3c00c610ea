import Foundation
import Sockets
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
          arguments: ["receive", "accept"])
    func closeWhileWaitingNeverReadsReusedNumber(call: String) throws {
        var reused = 0
        for _ in 0..<100 {
            let (waitedOn, keep, other) = try waitable(call)
            let number = try waitedOn.withUnsafeDescriptor { $0 }
            let waiter = Background { () -> String in
                do throws(SocketError) {
                    if call == "receive" {
                        return "data: \(try waitedOn.receive(upTo: 64, deadline: .now + .seconds(10)))"
                    }
                    return "connection from \(try waitedOn.accept(deadline: .now + .seconds(10)).1)"
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
        print("fault suite: close while waiting in \(call): 100 closes, \(reused) new sockets took the waiter's number afterwards")
    }
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
