import Foundation
import Sockets
import Synchronization
import Testing

@Suite("fault suite: slow and hostile peers")
struct HostilePeerTests {
    @Test("a slow-drip client (a byte every 100 ms) is cut off at the request's 5 s deadline, though no wait reaches the 1 s timeout, and others are served meanwhile")
    func slowDrip() throws {
        let (listener, address) = try makeListener()
        let perWait = Duration.seconds(1)
        let perRequest = Duration.seconds(5)
        let served = Mutex<[(kind: SocketError.Kind?, elapsed: Duration, request: String)]>([])
        let stop = Atomic<Bool>(false)
        // A thread-per-connection server written as a user of the library would write it:
        // each wait has the socket's 1 s timeout, the whole request a 5 s deadline.
        let server = Background { () -> Int in
            var accepted = 0
            while !stop.load(ordering: .relaxed) && accepted < 100 {
                guard let (connection, _) = try? listener.accept(deadline: .now + .milliseconds(50)) else { continue }
                accepted += 1
                Thread.detachNewThread {
                    defer { connection.close() }
                    connection.timeout = try! .after(perWait)
                    let start = ContinuousClock.now
                    let deadline = start + perRequest
                    var request: [UInt8] = []
                    do throws(SocketError) {
                        while !request.contains(UInt8(ascii: "\n")) {
                            let chunk = try connection.receive(upTo: 1024, deadline: deadline)
                            if chunk.isEmpty { break }
                            request += chunk
                        }
                        try connection.sendAll(Array("ok\n".utf8), deadline: deadline)
                        served.withLock { $0.append((nil, ContinuousClock.now - start, String(decoding: request, as: UTF8.self))) }
                    } catch {
                        served.withLock { $0.append((error.kind, ContinuousClock.now - start, String(decoding: request, as: UTF8.self))) }
                    }
                }
            }
            return accepted
        }
        defer {
            stop.store(true, ordering: .relaxed)
            _ = try? server.value(within: .seconds(5))
            listener.close()
        }

        let drip = Background { () -> Int in
            let socket = try Socket.connect(to: "\(address)", timeout: .after(.seconds(5)))
            defer { socket.close() }
            var sent = 0
            for _ in 0..<100 {  // at most 10 s
                do { _ = try socket.send(Array("x".utf8)) } catch { break }
                sent += 1
                pause(.milliseconds(100))
            }
            return sent
        }
        // Meanwhile, ordinary clients come and go.
        var quickAnswers: [Duration] = []
        for _ in 0..<3 {
            pause(.milliseconds(1500))
            let start = ContinuousClock.now
            let client = try Socket.connect(to: "\(address)", timeout: .after(.seconds(5)))
            try client.sendAll(Array("hello\n".utf8))
            #expect(try client.receive(exactly: 3) == Array("ok\n".utf8))
            quickAnswers.append(ContinuousClock.now - start)
            client.close()
        }
        let dripped = try drip.value(within: .seconds(15))
        let outcomes = served.withLock { $0 }
        let cut = outcomes.filter { $0.request.hasPrefix("x") }
        #expect(cut.count == 1)
        if let cut = cut.first {
            #expect(cut.kind == .timedOut)
            expectTiming(cut.elapsed, atLeast: perRequest)
            #expect(cut.request.count >= 40, "only \(cut.request.count) bytes dripped in before the cut")
            print("fault suite: slow drip cut off after \(cut.elapsed) and \(cut.request.count) bytes; "
                + "other clients answered in \(quickAnswers.map { "\($0)" }.joined(separator: ", "))")
        }
        #expect(outcomes.filter { $0.request == "hello\n" && $0.kind == nil }.count == 3)
        #expect(quickAnswers.allSatisfy { $0 < .seconds(1) }, "\(quickAnswers)")
        #expect(dripped < 70, "the drip went on for \(dripped) bytes: the server never cut it off")
    }
}
