import Foundation
import Sockets
import SocketsTLS
import Synchronization
import Testing

// TLS's async forms, resumption, half-close, and callers that overlap (several senders, a
// send waiting its turn); Python's ssl module is the peer where one is needed. Helpers in
// TLSHelpers.swift.

@Suite("TLS: async, resumption, half-close, overlapping callers", .serialized)
struct AsyncTLSTests {
    @Test("async connect by name and echo; the second connection resumes the session, one without resumption does not")
    func asyncEchoAndResumption() async throws {
        let peer = try TLSPeer(["echoes", "3", tlsFixture("good.pem"), tlsFixture("good.key")])
        let port = try peer.port()
        let resuming = try TLSConfiguration.client(trusting: .authorities(file: tlsFixture("ca.pem")))
        let fresh = try TLSConfiguration.client(trusting: .authorities(file: tlsFixture("ca.pem")), resumesSessions: false)
        for (round, configuration, expected) in [(1, resuming, "full TLSv1.3 localhost"), (2, resuming, "resumed TLSv1.3 localhost"),
                                                 (3, fresh, "full TLSv1.3 localhost")] {
            let tls = try await TLSSocket.connect(to: "127.0.0.1:\(port)", configuration: configuration,
                                                  serverName: "localhost", timeout: try .after(.seconds(5)))
            #expect(tls.isResumed == expected.hasPrefix("resumed"), "round \(round)")
            let message = Array("round \(round)".utf8)
            try await tls.sendAll(message)
            var got: [UInt8] = []
            while got.count < message.count {
                let chunk = try await tls.receive(upTo: 100)
                if chunk.isEmpty { break }
                got += chunk
            }
            #expect(got == message)
            tls.close()
            #expect(try peer.line() == expected, "round \(round): the server's view")
        }
        #expect(peer.finish() == 0)
    }

    @Test("a server that ends without close_notify (as http.server does): the end of stream, and the session still resumes")
    func resumptionAfterTruncatedEnd() throws {
        let peer = try TLSPeer(["replies", "2", tlsFixture("good.pem"), tlsFixture("good.key")])
        let port = try peer.port()
        let configuration = try trustingTestCA()
        for (round, expected) in [(1, "full"), (2, "resumed")] {
            let tls = try TLSSocket.connect(to: "127.0.0.1:\(port)", configuration: configuration, serverName: "localhost",
                                            timeout: try .after(.seconds(5)))
            try tls.sendAll([UInt8(round)])
            #expect(try tls.receive(upTo: 10) == [UInt8(round)])
            #expect(try tls.receive(upTo: 10) == [], "the end of the stream, though without close_notify")
            #expect(tls.isResumed == (round == 2), "round \(round)")
            tls.close()
            #expect(try peer.line() == expected, "round \(round): the server's view")
        }
        #expect(peer.finish() == 0)
    }

    @Test("TLS 1.2 resumes too; a numeric address is verified against the certificate's IP names and sent no SNI")
    func tls12AndNumericAddress() async throws {
        let peer = try TLSPeer(["echoes", "3", tlsFixture("good.pem"), tlsFixture("good.key"), "1.2"])
        let port = try peer.port()
        let configuration = try trustingTestCA()
        for (round, name, expected) in [(1, "localhost", "full TLSv1.2 localhost"), (2, "localhost", "resumed TLSv1.2 localhost"),
                                        (3, nil, "full TLSv1.2 None")] {
            let tls = try await TLSSocket.connect(to: "127.0.0.1:\(port)", configuration: configuration, serverName: name,
                                                  timeout: try .after(.seconds(5)))
            #expect(tls.protocolVersion == "TLSv1.2")
            #expect(tls.isResumed == expected.hasPrefix("resumed"), "round \(round)")
            try await tls.sendAll([UInt8(round)])
            #expect(try await tls.receive(upTo: 10) == [UInt8(round)])
            tls.close()
            #expect(try peer.line() == expected, "round \(round): the server's view")
        }
        #expect(peer.finish() == 0)

        // The wrong-host certificate names only "other.example": 127.0.0.1 is not among its names.
        let wrong = try TLSPeer(["echo", tlsFixture("wronghost.pem"), tlsFixture("wronghost.key")])
        let (error, _) = await expectAsyncFailure(.certificateRejected) {
            _ = try await TLSSocket.connect(to: "127.0.0.1:\(try wrong.port())", configuration: configuration,
                                            timeout: try .after(.seconds(5)))
        }
        #expect(error?.detail?.lowercased().contains("mismatch") == true, "\(String(describing: error))")
        wrong.stop()
    }

    @Test("async handshake: one limit against a dripping peer (never early); cancelling the task ends a handshake at once")
    func asyncHandshakeLimitAndCancel() async throws {
        let upstream = try TLSPeer(["echo", tlsFixture("good.pem"), tlsFixture("good.key")])
        let drip = try TLSPeer(["drip", "\(try upstream.port())", "20"])
        let dripped = try tlsClient(try drip.port(), try trustingTestCA(), timeout: try .after(.seconds(1)))
        let (error, elapsed) = await expectAsyncFailure(.timedOut) { try await dripped.handshake() }
        expectTiming(elapsed, atLeast: .seconds(1))
        #expect(error.map { "\($0)" }?.hasSuffix("timed out after 1s") == true, "\(String(describing: error))")
        dripped.close()
        drip.stop()
        upstream.stop()

        let silent = try TLSPeer(["silent"])
        let waiting = try tlsClient(try silent.port(), try trustingTestCA(), timeout: .never)
        let task = Task { () async throws -> SocketError? in
            do throws(SocketError) { try await waiting.handshake(); return nil } catch { return error }
        }
        await nap(.milliseconds(150))
        let start = ContinuousClock.now
        task.cancel()
        let cancelled = try await value(of: task, within: .seconds(5))
        #expect(cancelled?.kind == .cancelled, "\(String(describing: cancelled))")
        #expect(cancelled?.operation == .handshake)
        #expect(ContinuousClock.now - start < .seconds(2))
        waiting.close()
        silent.stop()
    }

    @Test("receives cancelled at random moments lose nothing: 4 MiB arrive whole and in order")
    func cancelledReceivesLoseNothing() async throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let server = try TLSConfiguration.server(certificateChain: tlsFixture("good.pem"), privateKey: tlsFixture("good.key"))
        let total = 4 << 20
        let pattern = (0..<total).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 12) }
        let serving = Background {
            let tls = try serveOne(listener, server)
            defer { tls.close() }
            for start in stride(from: 0, to: total, by: 50_000) {  // pieces that are not whole records
                try tls.sendAll(pattern[start..<min(total, start + 50_000)])
            }
            _ = try tls.receive(upTo: 1)  // until the client is done
        }
        let tls = try tlsClient(address.port!, try trustingTestCA())
        try await tls.handshake()
        var received: [UInt8] = []
        var cancelledCalls = 0
        let end = ContinuousClock.now + .seconds(30)
        while received.count < total && ContinuousClock.now < end {
            let task = Task { () async throws -> [UInt8] in try await tls.receive(upTo: 70_000) }
            if cancelledCalls < 2_000 && received.count % 3 == 0 { task.cancel() }  // at once, or mid-wait
            switch await task.result {
            case .success(let chunk):
                if chunk.isEmpty { break }
                received += chunk
            case .failure(let error):
                #expect((error as? SocketError)?.kind == .cancelled, "\(error)")
                cancelledCalls += 1
            }
        }
        #expect(received.count == total)
        #expect(received == pattern, "the stream is not the bytes sent, in order")
        #expect(cancelledCalls > 0)
        print("TLS async: \(cancelledCalls) receives cancelled while 4 MiB arrived; nothing lost")
        tls.close()
        try serving.value(within: .seconds(20))
    }

    @Test("8 threads and 8 tasks sending at once: every message arrives whole, each sender's in order")
    func overlappingSenders() async throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let server = try TLSConfiguration.server(certificateChain: tlsFixture("good.pem"), privateKey: tlsFixture("good.key"))
        let senders = 16, messages = 200, size = 1_000
        let serving = Background { () -> [[Int]] in
            let tls = try serveOne(listener, server)
            defer { tls.close() }
            let reader = Array<UInt8>()
            var buffer = reader
            var order = [[Int]](repeating: [], count: senders)
            while true {
                let chunk = try tls.receive(upTo: 65_536)
                if chunk.isEmpty { break }
                buffer += chunk
                while buffer.count >= size {
                    let message = buffer[..<size]
                    let sender = Int(message[message.startIndex]), sequence = Int(message[message.startIndex + 1]) << 8 | Int(message[message.startIndex + 2])
                    guard sender < senders, message.dropFirst(3).allSatisfy({ $0 == UInt8(truncatingIfNeeded: sender &+ sequence) }) else {
                        throw TestFailure("a message arrived torn after \(order.map(\.count).reduce(0, +)) whole ones")
                    }
                    order[sender].append(sequence)
                    buffer.removeFirst(size)
                }
            }
            return order
        }
        let tls = try tlsClient(address.port!, try trustingTestCA())
        try await tls.handshake()
        @Sendable func message(_ sender: Int, _ sequence: Int) -> [UInt8] {
            [UInt8(sender), UInt8(sequence >> 8), UInt8(sequence & 0xFF)]
                + [UInt8](repeating: UInt8(truncatingIfNeeded: sender &+ sequence), count: size - 3)
        }
        let threads = (0..<8).map { sender in
            Background { for i in 0..<messages { try tls.sendAll(message(sender, i)) } }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for sender in 8..<16 {
                group.addTask { for i in 0..<messages { try await tls.sendAll(message(sender, i)) } }
            }
            try await group.waitForAll()
        }
        for thread in threads { try thread.value(within: .seconds(30)) }
        try await tls.shutdown(.write)
        let order = try serving.value(within: .seconds(30))
        for sender in 0..<senders {
            #expect(order[sender] == Array(0..<messages), "sender \(sender): \(order[sender].count) messages")
        }
        tls.close()
    }

    @Test("a send waiting its turn behind a stuck send ends at its own deadline (blocking and async), or when cancelled")
    func sendTurnHasTheCallersLimit() async throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let (serving, done) = try nonReadingTLSServer(listener)
        let tls = try tlsClient(address.port!, try trustingTestCA(), timeout: .never)
        try boundBuffers(tls.socket)
        try await tls.handshake()
        let stuck = Background { () -> SocketError.Kind? in
            do throws(SocketError) { try tls.sendAll([UInt8](repeating: 5, count: 8 << 20)); return nil } catch { return error.kind }
        }
        await nap(.milliseconds(300))  // the first send fills the path and waits, holding the turn

        let (blocking, blockingElapsed) = expectFailure(.timedOut) { try tls.sendAll([1], deadline: .now + .milliseconds(300)) }
        expectTiming(blockingElapsed, atLeast: .milliseconds(300))
        #expect(blocking.map { "\($0)" }?.contains("timed out: the deadline passed") == true, "\(String(describing: blocking))")
        #expect(blocking?.bytesTransferred == nil, "a send that never had its turn took nothing")
        let (async, asyncElapsed) = await expectAsyncFailure(.timedOut) { try await tls.sendAll([2], deadline: .now + .milliseconds(300)) }
        expectTiming(asyncElapsed, atLeast: .milliseconds(300))
        #expect(async?.operation == .sendAll)

        let waiting = Task { () async throws -> SocketError.Kind? in
            do throws(SocketError) { try await tls.sendAll([3]); return nil } catch { return error.kind }
        }
        await nap(.milliseconds(100))
        waiting.cancel()
        #expect(try await value(of: waiting, within: .seconds(2)) == .cancelled)

        tls.close()
        #expect(try stuck.value(within: .seconds(5)) == .closed)
        done.signal()
        try serving.value(within: .seconds(20))
    }

    @Test("shutdown(.write): close_notify ends the peer's reading, its reply still arrives; sending afterwards is refused")
    func halfClose() async throws {
        let peer = try TLSPeer(["echo", tlsFixture("good.pem"), tlsFixture("good.key")])
        let tls = try tlsClient(try peer.port(), try trustingTestCA())
        try await tls.handshake()
        let message = Array("the whole upload".utf8)
        try await tls.sendAll(message)
        try await tls.shutdown(.write)
        var got: [UInt8] = []
        while true {  // the echo, then the end: the peer saw our close_notify as its end of stream
            let chunk = try await tls.receive(upTo: 100, deadline: .now + .seconds(5))
            if chunk.isEmpty { break }
            got += chunk
        }
        #expect(got == message)
        let (error, _) = await expectAsyncFailure(.brokenPipe) { try await tls.sendAll([1]) }
        #expect(error?.detail == "sending was shut down (close_notify sent)")
        tls.close()
        #expect(peer.finish() == 0)
    }

    @Test("a BufferedReader reads lines from a TLS connection, blocking and async, one deadline per line")
    func bufferedReaderOverTLS() async throws {
        let peer = try TLSPeer(["echo", tlsFixture("good.pem"), tlsFixture("good.key")])
        let tls = try tlsClient(try peer.port(), try trustingTestCA())
        try await tls.handshake()
        let reader = BufferedReader(tls, maxLineLength: 100)
        #expect(reader.source === tls)
        try await tls.sendAll(Array("first line\r\nsecond line\nthird".utf8))
        let blocking = { () throws -> String? in try reader.readLine(deadline: .now + .seconds(5)) }  // the blocking form
        #expect(try blocking() == "first line")
        #expect(try await reader.readLine(deadline: .now + .seconds(5)) == "second line")
        // "third" has no line feed yet: the line's deadline ends the wait, and nothing is lost.
        let (error, elapsed) = await expectAsyncFailure(.timedOut) { _ = try await reader.readLine(deadline: .now + .milliseconds(200)) }
        expectTiming(elapsed, atLeast: .milliseconds(200))
        #expect(error?.operation == .receive)
        try await tls.sendAll(Array(" and more\n".utf8))
        #expect(try await reader.readLine(deadline: .now + .seconds(5)) == "third and more")
        tls.close()
        peer.finish()
    }

    @Test("record calls before the handshake are refused with a message, blocking and async")
    func beforeHandshake() async throws {
        let (a, b) = try Socket.pair()
        defer { a.close(); b.close() }
        let tls = try TLSSocket(client: a, configuration: try trustingTestCA(), serverName: "localhost")
        let (e1, _) = expectFailure(.invalidArgument) { _ = try tls.receive(upTo: 10) }
        #expect(e1?.detail == "the TLS handshake has not been done: call handshake() first")
        _ = await expectAsyncFailure(.invalidArgument) { try await tls.sendAll([1]) }
    }
}
