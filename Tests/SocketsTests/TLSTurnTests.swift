import Foundation
import Sockets
@testable import SocketsTLS
import Synchronization
import Testing

// The TLS turns (Turn.swift) and their use by TLSSocket under stress, from an independent
// review: each test here failed on the code before the review's fixes (a receive losing
// decrypted plaintext, concurrent sendAlls interleaving, a retried shutdown that never sent
// close_notify, a far deadline trapping) or checks what held (exclusive, never early, none
// stranded).

/// What the stress test's holders and waiters saw.
final class TurnProbe: @unchecked Sendable {
    // @unchecked Sendable is safe: every field but `counter` is an Atomic; `counter` is
    // touched only by the holder of the turn under test, which is what the test checks (and
    // ThreadSanitizer with it: a hand-off without an ordering edge would be a reported race).
    let inside = Atomic<Int>(0)
    let overlaps = Atomic<Int>(0)
    let early = Atomic<Int>(0)
    let grants = Atomic<Int>(0)
    let timeouts = Atomic<Int>(0)
    let cancels = Atomic<Int>(0)
    var counter = 0  // plain: touched only by the turn's holder (TSan checks the hand-offs)

    func enter() {
        if inside.exchange(1, ordering: .relaxed) != 0 { overlaps.add(1, ordering: .relaxed) }
        counter += 1
        grants.add(1, ordering: .relaxed)
    }
    func leave() { inside.store(0, ordering: .relaxed) }
    func outcome(_ o: Turn.Outcome, _ deadline: ContinuousClock.Instant?) {
        switch o {
        case .granted: break
        case .timedOut:
            timeouts.add(1, ordering: .relaxed)
            if let deadline, ContinuousClock.now < deadline { early.add(1, ordering: .relaxed) }
            if deadline == nil { early.add(1000, ordering: .relaxed) }
        case .cancelled: cancels.add(1, ordering: .relaxed)
        }
    }
}

@Suite("TLS turns: Turn itself", .serialized)
struct TurnTests {
    @Test("Turn: mixed threads and tasks, deadlines and cancellation — exclusive, no early timeout, none stranded, no leak")
    func turnStress() async throws {
        weak var weakTurn: Turn?
        let probe = TurnProbe()
        do {
            let turn = Turn()
            weakTurn = turn
            // Blocking waiters on 2 threads.
            let threads = (0..<2).map { t in
                Background { () -> Void in
                    var rng = SystemRandomNumberGenerator()
                    for i in 0..<3000 {
                        let deadline: ContinuousClock.Instant? = i % 7 == 0 ? nil : .now + .microseconds(Int.random(in: 0...300, using: &rng))
                        let o = turn.acquire(until: deadline)
                        probe.outcome(o, deadline)
                        if o == .granted {
                            probe.enter()
                            if i % 5 == 0 { usleep(20) }
                            probe.leave()
                            turn.release()
                        }
                        _ = t
                    }
                }
            }
            // Async waiters: some with deadlines, some cancelled at random moments.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for w in 0..<40 {
                    group.addTask {
                        for i in 0..<150 {
                            let deadline: ContinuousClock.Instant? = (i + w) % 3 == 0 ? nil : .now + .microseconds(Int.random(in: 0...400))
                            let attempt = Task {
                                let o = await turn.acquire(until: deadline)
                                probe.outcome(o, deadline)
                                if o == .granted {
                                    probe.enter()
                                    if i % 4 == 0 { await Task.yield() }  // the holder suspends (resumes elsewhere)
                                    probe.leave()
                                    turn.release()
                                }
                            }
                            if i % 2 == 0 {
                                if i % 4 == 0 { await Task.yield() }
                                attempt.cancel()
                            }
                            await attempt.value
                        }
                    }
                }
                try await group.waitForAll()
            }
            for thread in threads { try thread.value(within: .seconds(120)) }
            #expect(turn.tryAcquire(), "the turn is still held with nobody holding it: a waiter stranded")
            turn.release()
        }
        #expect(probe.overlaps.load(ordering: .relaxed) == 0)
        #expect(probe.early.load(ordering: .relaxed) == 0)
        #expect(probe.counter == probe.grants.load(ordering: .relaxed))
        // Timer tasks keep the Turn alive only until they are cancelled.
        let end = ContinuousClock.now + .seconds(2)
        while weakTurn != nil && ContinuousClock.now < end { try await Task.sleep(for: .milliseconds(10)) }
        #expect(weakTurn == nil, "the Turn outlived every waiter (a timer task keeps it)")
    }

    @Test("Parker: a far deadline on a contended blocking acquire")
    func parkerFarDeadline() throws {
        let turn = Turn()
        #expect(turn.tryAcquire())
        let releasing = Background { () -> Void in pause(.milliseconds(300)); turn.release() }
        let far = ContinuousClock.now + .seconds(Int64.max / 2) + .seconds(Int64.max / 2)
        let o = turn.acquire(until: far)  // overflow trap in Parker.wait's timespec sum?
        #expect(o == .granted)
        turn.release()
        try releasing.value()
    }
}

@Suite("TLS turns: overlapping callers of TLSSocket", .serialized)
struct OverlappingCallerTests {
    /// The server sends "hello" and reads nothing until told; returns what it read in all.
    func server(_ listener: Socket, _ go: DispatchSemaphore) -> Background<Int> {
        let configuration = try! TLSConfiguration.server(certificateChain: tlsFixture("good.pem"), privateKey: tlsFixture("good.key"))
        return Background { () -> Int in
            let tls = try serveOne(listener, configuration, bounded: true)
            defer { tls.close() }
            try tls.sendAll(Array("hello".utf8))
            try tls.sendAll(Array("world".utf8))  // a second record
            guard go.wait(timeout: .now() + 20) == .success else { throw TestFailure("never told to read") }
            return try receiveUntilEnd(tls).count
        }
    }

    @Test("blocking: a receive with plaintext ready, while a send holds the send turn and another send timed out")
    func receiveKeepsPlaintext() throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let go = DispatchSemaphore(value: 0)
        let serving = server(listener, go)
        let tls = try tlsClient(address.port!, try trustingTestCA())
        try boundBuffers(tls.socket)
        try tls.handshake()
        pause(.milliseconds(200))  // "hello" and "world" have arrived
        #expect(try tls.receive(upTo: 5) == Array("hello".utf8))  // "world" stays in the engine
        let big = Background { () -> SocketError.Kind? in
            do throws(SocketError) { try tls.sendAll([UInt8](repeating: 7, count: 8 << 20), deadline: .now + .seconds(10)); return nil } catch { return error.kind }
        }
        pause(.milliseconds(300))  // the big send holds the send turn, waiting for room
        _ = expectFailure(.timedOut) { try tls.sendAll(Array("x".utf8), deadline: .now + .milliseconds(100)) }
        var first: Result<[UInt8], SocketError>
        do throws(SocketError) { first = .success(try tls.receive(upTo: 100, deadline: .now + .milliseconds(500))) } catch { first = .failure(error) }
        go.signal()
        #expect(try big.value(within: .seconds(15)) == nil)
        var second: Result<[UInt8], SocketError>
        do throws(SocketError) { second = .success(try tls.receive(upTo: 100, deadline: .now + .seconds(1))) } catch { second = .failure(error) }
        let got = ((try? first.get()) ?? []) + ((try? second.get()) ?? [])
        #expect(got == Array("world".utf8), "the plaintext 'world' was lost: first \(first), second \(second)")
        try tls.shutdown(.write)
        tls.close()
        _ = try? serving.value(within: .seconds(20))
    }

    @Test("async: a cancelled receive with plaintext ready in the engine consumes nothing")
    func cancelledReceiveKeepsPlaintext() async throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let go = DispatchSemaphore(value: 0)
        let serving = server(listener, go)
        let tls = try tlsClient(address.port!, try trustingTestCA())
        try boundBuffers(tls.socket)
        try await tls.handshake()
        try await Task.sleep(for: .milliseconds(200))
        #expect(try await tls.receive(upTo: 5) == Array("hello".utf8))  // "world" stays in the engine
        let big = Task { () -> SocketError.Kind? in
            do throws(SocketError) { try await tls.sendAll([UInt8](repeating: 7, count: 8 << 20), deadline: .now + .seconds(10)); return nil } catch { return error.kind }
        }
        try await Task.sleep(for: .milliseconds(300))
        do throws(SocketError) { try await tls.sendAll(Array("x".utf8), deadline: .now + .milliseconds(100)); Issue.record("small send went") } catch {
            #expect(error.kind == .timedOut)
        }
        let receiving = Task { () -> Result<[UInt8], SocketError> in
            do throws(SocketError) { return .success(try await tls.receive(upTo: 100, deadline: .now + .seconds(5))) } catch { return .failure(error) }
        }
        try await Task.sleep(for: .milliseconds(300))
        receiving.cancel()
        let first = await receiving.value
        go.signal()
        #expect(await big.value == nil)
        var second: Result<[UInt8], SocketError>
        do throws(SocketError) { second = .success(try await tls.receive(upTo: 100, deadline: .now + .seconds(1))) } catch { second = .failure(error) }
        let got = ((try? first.get()) ?? []) + ((try? second.get()) ?? [])
        #expect(got == Array("world".utf8), "the plaintext 'world' was lost: first \(first), second \(second)")
        tls.close()
        _ = try? serving.value(within: .seconds(20))
    }

    @Test("full duplex: one thread sends 16 KiB records while another receives the echo from a one-thread peer")
    func fullDuplexEcho() throws {
        let configuration = try TLSConfiguration.server(certificateChain: tlsFixture("good.pem"), privateKey: tlsFixture("good.key"))
        var failures: [String] = []
        for round in 0..<2 {
            let (listener, address) = try makeListener()
            defer { listener.close() }
            let serving = Background { () -> Int in
                let tls = try serveOne(listener, configuration, bounded: true)
                defer { tls.close() }
                var total = 0
                while true {
                    let chunk = try tls.receive(upTo: 16_384)
                    if chunk.isEmpty { return total }
                    try tls.sendAll(chunk)  // blocks while the client does not read
                    total += chunk.count
                }
            }
            let tls = try tlsClient(address.port!, try trustingTestCA(), timeout: try .after(.seconds(3)))
            try boundBuffers(tls.socket)
            try tls.handshake()
            let total = 300 * 16_384
            let sender = Background { () -> String? in
                do throws(SocketError) {
                    for _ in 0..<300 { try tls.sendAll([UInt8](repeating: 1, count: 16_384)) }
                    try tls.shutdown(.write)
                    return nil
                } catch { return "send: \(error)" }
            }
            var got = 0
            var receiveError: String?
            while got < total {
                do throws(SocketError) {
                    let chunk = try tls.receive(upTo: 65_536)
                    if chunk.isEmpty { receiveError = "early end at \(got)"; break }
                    got += chunk.count
                } catch { receiveError = "receive at \(got): \(error)"; break }
            }
            let sendError = try sender.value(within: .seconds(30))
            tls.close()
            _ = try? serving.value(within: .seconds(10))
            if let receiveError { failures.append("round \(round): \(receiveError)") }
            if let sendError { failures.append("round \(round): \(sendError)") }
        }
        #expect(failures.isEmpty)
    }

    @Test("two concurrent 1 MiB sendAlls each go whole: sends run one at a time")
    func concurrentSendsGoWhole() throws {
        let configuration = try TLSConfiguration.server(certificateChain: tlsFixture("good.pem"), privateKey: tlsFixture("good.key"))
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let serving = Background { () -> [UInt8] in
            let tls = try serveOne(listener, configuration, bounded: true)
            defer { tls.close() }
            return try receiveUntilEnd(tls)
        }
        let tls = try tlsClient(address.port!, try trustingTestCA())
        try boundBuffers(tls.socket)
        try tls.handshake()
        let a = Background { try tls.sendAll([UInt8](repeating: 0x41, count: 1 << 20)) }
        let b = Background { try tls.sendAll([UInt8](repeating: 0x42, count: 1 << 20)) }
        try a.value(within: .seconds(20))
        try b.value(within: .seconds(20))
        try tls.shutdown(.write)
        let all = try serving.value(within: .seconds(20))
        tls.close()
        var runs = 0
        var last: UInt8 = 0
        for byte in all where byte != last { runs += 1; last = byte }
        #expect(all.count == 2 << 20)
        #expect(runs == 2, "the two sends' bytes interleave: \(runs) runs")
    }

    @Test("a shutdown that timed out waiting for the send turn, retried, sends close_notify")
    func shutdownRetrySendsCloseNotify() throws {
        let configuration = try TLSConfiguration.server(certificateChain: tlsFixture("good.pem"), privateKey: tlsFixture("good.key"))
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let go = DispatchSemaphore(value: 0)
        let serving = Background { () -> Int in
            let tls = try serveOne(listener, configuration, bounded: true)
            defer { tls.close() }
            guard go.wait(timeout: .now() + 20) == .success else { throw TestFailure("never told to read") }
            return try receiveUntilEnd(tls).count
        }
        let tls = try tlsClient(address.port!, try trustingTestCA())
        try boundBuffers(tls.socket)
        try tls.handshake()
        // A timed-out send leaves ciphertext queued; a one-byte send then holds the turn while
        // it sends that (the peer does not read yet).
        let (error, _) = expectFailure(.timedOut) { try tls.sendAll([UInt8](repeating: 7, count: 2 << 20), deadline: .now + .milliseconds(200)) }
        let taken = error?.bytesTransferred ?? 0
        let big = Background { try tls.sendAll([7], deadline: .now + .seconds(10)) }
        pause(.milliseconds(300))
        _ = expectFailure(.timedOut) { try tls.shutdown(.write, deadline: .now + .milliseconds(100)) }
        go.signal()
        try big.value(within: .seconds(15))
        do throws(SocketError) { try tls.shutdown(.write) } catch { Issue.record("the retried shutdown failed: \(error)") }
        let stranded = tls.engine.withLock { TLSSocket.hasOutgoing($0) }
        #expect(!stranded, "close_notify is still in the engine after a successful shutdown(.write): the FIN went without it")
        tls.close()
        let strandedAfterClose = tls.engine.withLock { TLSSocket.hasOutgoing($0) }
        #expect(!strandedAfterClose, "close() did not send it either")
        #expect(try serving.value(within: .seconds(20)) == taken + 1)
    }
}

