import Foundation
import Sockets  // not @testable: the reader as a user writes against it
import Testing

// The buffered reader on real sockets: lines in many pieces, a slow-drip peer that per-wait
// timeouts cannot stop but a deadline for the whole line can, a timeout mid-line that loses
// nothing, an over-long line, exact counts, the end of the stream; blocking and async.

/// Sends `bytes` one at a time, `every` apart, from another thread.
private func drip(_ bytes: [UInt8], into socket: Socket, every pause: Duration) -> Background<Void> {
    Background {
        for byte in bytes {
            try socket.sendAll([byte])
            Thread.sleep(forTimeInterval: Double(pause.components.attoseconds) / 1e18 + Double(pause.components.seconds))
        }
    }
}

@Suite("BufferedReader", .serialized)
struct BufferedReaderTests {
    @Test("lines that arrive in many pieces, with and without CR; the last line without LF, then nil")
    func linesInPieces() throws {
        let (a, b) = try Socket.pair()
        defer { a.close(); b.close() }
        let reader = BufferedReader(a)
        let writer = drip(Array("GET / HTTP/1.1\r\nHost: x\n\nlast".utf8), into: b, every: .milliseconds(1))
        #expect(try reader.readLine(deadline: .now + .seconds(5)) == "GET / HTTP/1.1")
        #expect(try reader.readLine(deadline: .now + .seconds(5)) == "Host: x")
        #expect(try reader.readLine(deadline: .now + .seconds(5)) == "")
        try writer.value()
        try b.shutdown(.write)
        #expect(try reader.readLine(deadline: .now + .seconds(5)) == "last")
        #expect(try reader.readLine(deadline: .now + .seconds(5)) == nil)
        #expect(reader.isAtEnd)
    }

    @Test("a slow-drip peer: the socket's per-wait timeout never fires, the line's deadline does, and no byte is lost")
    func slowDrip() throws {
        let (a, b) = try Socket.pair()
        defer { a.close(); b.close() }
        a.timeout = try .after(.seconds(1))  // each byte comes well within it: it never fires
        let reader = BufferedReader(a)
        let line = Array("a slow request line\n".utf8)
        let writer = drip(line, into: b, every: .milliseconds(30))
        let start = ContinuousClock.now
        let (error, _) = expectFailure(.timedOut) { _ = try reader.readLine(deadline: start + .milliseconds(300)) }
        expectTiming(ContinuousClock.now - start, atLeast: .milliseconds(300))
        #expect(error != nil)
        let early = reader.buffered
        #expect(!early.isEmpty && early.count < line.count)
        #expect(Array(line.prefix(early.count)) == early)
        // The next read continues from what had arrived: every byte, in order.
        #expect(try reader.readLine(deadline: .now + .seconds(5)) == "a slow request line")
        try writer.value()
    }

    @Test("a line over the limit fails with .tooLong naming the limit, and its bytes stay buffered")
    func overLongLine() throws {
        let (a, b) = try Socket.pair()
        defer { a.close(); b.close() }
        let reader = BufferedReader(a, maxLineLength: 16)
        try b.sendAll(Array(repeating: UInt8(ascii: "x"), count: 40))
        let (error, _) = expectFailure(.tooLong) { _ = try reader.readLine(deadline: .now + .seconds(5)) }
        #expect(error?.detail?.contains("longer than 16 bytes") == true, "\(String(describing: error))")
        #expect(reader.buffered.count >= 17)
        // A line within the limit still reads (after the caller drains the long one).
        _ = try reader.read(exactly: 40, deadline: .now + .seconds(5))
        try b.sendAll(Array("short\n".utf8))
        #expect(try reader.readLine(deadline: .now + .seconds(5)) == "short")
    }

    @Test("the limit counts the line, not its ending: exactly the limit with LF or CRLF reads; one byte more fails")
    func limitAndLineEndings() throws {
        let (a, b) = try Socket.pair()
        defer { a.close(); b.close() }
        let reader = BufferedReader(a, maxLineLength: 8)
        let eight = String(repeating: "y", count: 8)
        try b.sendAll(Array("\(eight)\r\n\(eight)\n".utf8))
        #expect(try reader.readLine(deadline: .now + .seconds(5)) == eight)
        #expect(try reader.readLine(deadline: .now + .seconds(5)) == eight)
        // Nine bytes then CRLF: too long, and the bytes stay.
        try b.sendAll(Array("\(eight)z\r\n".utf8))
        _ = expectFailure(.tooLong) { _ = try reader.readLine(deadline: .now + .seconds(5)) }
        #expect(reader.buffered.count == 11)
        _ = try reader.read(exactly: 11, deadline: .now + .seconds(5))
        // Eight bytes and a CR with the LF still to come: it waits for the LF rather than fail.
        try b.sendAll(Array("\(eight)\r".utf8))
        let late = Background { pause(.milliseconds(100)); try b.sendAll([0x0A]) }
        #expect(try reader.readLine(deadline: .now + .seconds(5)) == eight)
        try late.value()
        // Nine bytes, no line ending yet: too long at once, without waiting for more.
        try b.sendAll(Array("\(eight)z".utf8))
        let (_, elapsed) = expectFailure(.tooLong) { _ = try reader.readLine(deadline: .now + .seconds(5)) }
        #expect(elapsed < .seconds(2))
    }

    @Test("read(exactly:) across pieces; the end of the stream first fails .endOfStream, the bytes kept")
    func exactly() throws {
        let (a, b) = try Socket.pair()
        defer { a.close(); b.close() }
        let reader = BufferedReader(a, bufferSize: 64)
        let payload = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let writer = Background { try b.sendAll(payload) }
        #expect(try reader.read(exactly: 100_000, deadline: .now + .seconds(10)) == payload)
        try writer.value()
        try b.sendAll([1, 2, 3])
        try b.shutdown(.write)
        let (error, _) = expectFailure(.endOfStream) { _ = try reader.read(exactly: 10, deadline: .now + .seconds(5)) }
        #expect(error?.bytesTransferred == 3)
        #expect(try reader.read(upTo: 10) == [1, 2, 3])
        #expect(try reader.read(upTo: 10) == [])
    }

    @Test("a buffered line is returned even with a past deadline; with nothing buffered a past deadline fails at once")
    func pastDeadline() throws {
        let (a, b) = try Socket.pair()
        defer { a.close(); b.close() }
        let reader = BufferedReader(a)
        try b.sendAll(Array("one\ntwo\n".utf8))
        #expect(try reader.readLine(deadline: .now + .seconds(5)) == "one")
        #expect(try reader.readLine(deadline: .now - .seconds(1)) == "two")
        let (_, elapsed) = expectFailure(.timedOut) { _ = try reader.readLine(deadline: .now - .seconds(1)) }
        #expect(elapsed < .milliseconds(100))
        expectFailure(.invalidArgument) { _ = try reader.read(exactly: -1) }
    }

    @Test("async: the slow drip's deadline, then every byte; a cancelled read consumes nothing")
    func asyncReads() async throws {
        let (a, b) = try Socket.pair()
        defer { a.close(); b.close() }
        let reader = BufferedReader(a)
        let writer = drip(Array("drip drip\n".utf8), into: b, every: .milliseconds(30))
        let start = ContinuousClock.now
        do {
            _ = try await reader.readLine(deadline: start + .milliseconds(150))
            Issue.record("expected a timeout")
        } catch {
            #expect(error.kind == .timedOut)
        }
        expectTiming(ContinuousClock.now - start, atLeast: .milliseconds(150))
        #expect(try await reader.readLine(deadline: .now + .seconds(5)) == "drip drip")
        try writer.value()
        // Cancelled while waiting for the rest of a line: the part that came stays buffered.
        try await b.sendAll(Array("par".utf8))
        let handOver = Handed(reader)
        let task = Task { () async throws -> String? in
            try await handOver.reader.readLine(deadline: .now + .seconds(5))
        }
        try await Task.sleep(for: .milliseconds(50))
        task.cancel()
        do {
            _ = try await task.value
            Issue.record("expected a cancellation")
        } catch let error as SocketError {
            #expect(error.kind == .cancelled)
        }
        try await b.sendAll(Array("tial\n".utf8))
        #expect(try await reader.readLine(deadline: .now + .seconds(5)) == "partial")
    }
}

/// Lends the reader to one task. @unchecked Sendable is safe here: the test uses the reader
/// again only after awaiting that task, so it is never used by two at once.
private final class Handed: @unchecked Sendable {
    let reader: BufferedReader
    init(_ reader: BufferedReader) { self.reader = reader }
}
