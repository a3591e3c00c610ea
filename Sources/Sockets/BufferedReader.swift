// A buffered reader over a stream socket: lines, delimited records and exact counts, blocking
// and async, under the socket's timeout and an optional deadline for the whole read.
//
// The bytes live in one buffer the reader owns; each receive writes straight into its free
// end (no copy per call), and a read returns a copy of what it consumes. A read that fails
// — a timeout, a cancellation, a line over the limit — consumes nothing: what had arrived
// stays buffered and the next read starts from it (CPython's `makefile` instead refuses every
// read after a timeout). The blocking and async forms share everything but the wait: each
// read is a loop of "take from the buffer, else receive more".

/// What a ``BufferedReader`` reads from: a stream that receives into a buffer under the
/// library's time rules — ``Socket``, and `TLSSocket` (SocketsTLS).
public protocol ByteReceiver: AnyObject, Sendable {
    /// Receives up to `buffer.count` bytes into `buffer`; 0 means the end of the stream. As
    /// ``Socket/receive(into:deadline:)-9lvl2``: at most the timeout per call, not past `deadline`.
    func receive(into buffer: UnsafeMutableRawBufferPointer, deadline: ContinuousClock.Instant?) throws(SocketError) -> Int
    /// The async form; `buffer` must stay valid until it returns.
    nonisolated(nonsending) func receive(into buffer: UnsafeMutableRawBufferPointer, deadline: ContinuousClock.Instant?) async throws(SocketError) -> Int
    /// The peer's address, which errors name.
    var peerAddress: SocketAddress { get throws(SocketError) }
}

extension Socket: ByteReceiver {}

/// Reads lines, delimited records and exact byte counts from a stream socket (or a TLS
/// connection: any ``ByteReceiver``), buffering what arrives (Python's `socket.makefile`,
/// Go's `bufio.Reader`).
///
/// ```swift
/// let reader = BufferedReader(connection, maxLineLength: 8192)
/// // One deadline for the whole request line: a client dripping a byte at a time cannot
/// // hold the server longer than that, however short each wait.
/// guard let requestLine = try reader.readLine(deadline: .now + .seconds(5)) else { return }
/// ```
///
/// Every read waits through the socket: for at most its ``Socket/timeout`` per wait, and
/// not past `deadline` for the whole read. A read that the buffer can satisfy makes no
/// system call, even with a deadline already past. **A read that fails consumes nothing**:
/// after a timeout the bytes received so far stay buffered, and the next read continues from
/// them.
///
/// A reader is not meant to be shared: use it from one thread or task at a time. The socket
/// stays yours: close it when you are done (the reader does not).
public final class BufferedReader {
    /// What the reader reads from: the ``Socket`` (or TLS connection) it was made with.
    public let source: any ByteReceiver
    /// The longest line ``readLine(deadline:)-6ops7`` accepts, in bytes, not counting the line
    /// ending; a longer line fails with ``SocketError/Kind/tooLong``.
    public let maxLineLength: Int

    private var storage: UnsafeMutableRawBufferPointer
    /// The buffered bytes are `storage[start..<end]`.
    private var start = 0
    private var end = 0
    /// The peer closed its side: nothing more will arrive.
    private var atEnd = false

    /// A reader of `source` (a ``Socket``, or a `TLSSocket`) with a buffer of `bufferSize`
    /// bytes to start with (it grows for a long line, up to `maxLineLength`, and for
    /// ``read(exactly:deadline:)-3fh2q``).
    ///
    /// - Parameters:
    ///   - source: what to read from: a ``Socket`` or a `TLSSocket`; it stays yours to close.
    ///   - maxLineLength: the longest line accepted (default 64 KiB).
    ///   - bufferSize: how much one receive may take (default 16 KiB).
    public init(_ source: any ByteReceiver, maxLineLength: Int = 65_536, bufferSize: Int = 16_384) {
        self.source = source
        self.maxLineLength = max(1, maxLineLength)
        storage = .allocate(byteCount: max(64, bufferSize), alignment: 16)
    }

    deinit { storage.deallocate() }

    /// The bytes received and not yet read (a copy; reading nothing).
    public var buffered: [UInt8] { Array(storage[start..<end]) }

    /// Whether the peer has closed its side and every byte it sent has been read.
    public var isAtEnd: Bool { atEnd && start == end }

    // MARK: reading, blocking

    /// Reads a line: the bytes up to a line feed, without it (and without a carriage return
    /// before it), decoded as UTF-8 (invalid bytes become U+FFFD). At the end of the stream,
    /// returns the last line even without a line feed, then nil.
    ///
    /// Blocks until a whole line has arrived: at most the socket's ``Socket/timeout`` per
    /// wait, and not past `deadline` for the whole line. Underneath: `recv(2)` into the
    /// reader's buffer, as ``Socket/receive(into:deadline:)-9lvl2``.
    ///
    /// - Throws: ``SocketError`` — `.tooLong` when no line feed comes within
    ///   ``maxLineLength`` bytes (the bytes stay buffered), `.timedOut`, `.connectionReset`,
    ///   `.closed`, ...; nothing is consumed by a read that throws.
    public func readLine(deadline: ContinuousClock.Instant? = nil) throws(SocketError) -> String? {
        while true {
            if let line = try takeLine() { return line.map(Self.line) }
            try fill(deadline: deadline)
        }
    }

    /// Reads up to and including the first `delimiter` byte; at the end of the stream,
    /// returns what is left even without one, then nil.
    ///
    /// - Parameters:
    ///   - delimiter: the byte that ends a record (`0x0A` for a line feed, `0` for NUL).
    ///   - maxLength: the most bytes a record may have, delimiter included (nil:
    ///     ``maxLineLength`` + 1).
    ///   - deadline: the instant by which the whole record must have arrived (nil: only the
    ///     socket's ``Socket/timeout`` per wait).
    /// - Throws: ``SocketError`` — `.tooLong` past `maxLength`, and the errors of
    ///   ``readLine(deadline:)-6ops7``; nothing is consumed by a read that throws.
    public func read(through delimiter: UInt8, maxLength: Int? = nil, deadline: ContinuousClock.Instant? = nil) throws(SocketError) -> [UInt8]? {
        let limit = maxLength ?? maxLineLength + 1
        while true {
            if let record = try takeRecord(through: delimiter, limit: limit) { return record }
            try fill(deadline: deadline)
        }
    }

    /// Reads exactly `count` bytes.
    ///
    /// - Throws: ``SocketError`` — `.endOfStream` if the peer closes first (with
    ///   ``SocketError/bytesTransferred`` saying how many had arrived; they stay buffered),
    ///   `.timedOut`, ...; nothing is consumed by a read that throws.
    public func read(exactly count: Int, deadline: ContinuousClock.Instant? = nil) throws(SocketError) -> [UInt8] {
        try checkCount(count)
        while true {
            if let bytes = try takeExactly(count) { return bytes }
            try fill(deadline: deadline, want: count)
        }
    }

    /// Reads what is buffered, up to `maxCount` bytes, or else waits for one receive's worth;
    /// `[]` at the end of the stream.
    public func read(upTo maxCount: Int, deadline: ContinuousClock.Instant? = nil) throws(SocketError) -> [UInt8] {
        try checkCount(maxCount)
        if start == end && !atEnd && maxCount > 0 { try fill(deadline: deadline) }
        return take(min(maxCount, end - start))
    }

    // MARK: reading, async

    /// Reads a line; the async form of ``readLine(deadline:)-6ops7``, with the same rules, and
    /// `.cancelled` if the task is cancelled (consuming nothing).
    public nonisolated(nonsending) func readLine(deadline: ContinuousClock.Instant? = nil) async throws(SocketError) -> String? {
        while true {
            if let line = try takeLine() { return line.map(Self.line) }
            try await fillAsync(deadline: deadline)
        }
    }

    /// Reads through `delimiter`; the async form of ``read(through:maxLength:deadline:)-3hycf``.
    public nonisolated(nonsending) func read(through delimiter: UInt8, maxLength: Int? = nil, deadline: ContinuousClock.Instant? = nil) async throws(SocketError) -> [UInt8]? {
        let limit = maxLength ?? maxLineLength + 1
        while true {
            if let record = try takeRecord(through: delimiter, limit: limit) { return record }
            try await fillAsync(deadline: deadline)
        }
    }

    /// Reads exactly `count` bytes; the async form of ``read(exactly:deadline:)-3fh2q``.
    public nonisolated(nonsending) func read(exactly count: Int, deadline: ContinuousClock.Instant? = nil) async throws(SocketError) -> [UInt8] {
        try checkCount(count)
        while true {
            if let bytes = try takeExactly(count) { return bytes }
            try await fillAsync(deadline: deadline, want: count)
        }
    }

    /// Reads up to `maxCount` bytes; the async form of ``read(upTo:deadline:)-8ycqq``.
    public nonisolated(nonsending) func read(upTo maxCount: Int, deadline: ContinuousClock.Instant? = nil) async throws(SocketError) -> [UInt8] {
        try checkCount(maxCount)
        if start == end && !atEnd && maxCount > 0 { try await fillAsync(deadline: deadline) }
        return take(min(maxCount, end - start))
    }

    // MARK: the buffer

    /// A record through `delimiter` if one is buffered (or the rest at the end of the
    /// stream); nil if more must arrive.
    private func takeRecord(through delimiter: UInt8, limit: Int) throws(SocketError) -> [UInt8]?? {
        let scanned = min(end - start, limit)
        if let i = storage[start..<(start + scanned)].firstIndex(of: delimiter) { return .some(take(i + 1 - start)) }
        if end - start >= limit {
            throw SocketError(.tooLong, .receive, address: try? source.peerAddress,
                              detail: "no delimiter within \(limit) bytes (the limit); they stay buffered")
        }
        if atEnd { return .some(start == end ? nil : take(end - start)) }
        return nil
    }

    /// A line (through its line feed) if one is buffered, or the rest at the end of the
    /// stream; nil if more must arrive. Up to ``maxLineLength`` bytes before the line
    /// ending, which is LF or CRLF: a line of exactly the limit ending in CRLF is accepted.
    private func takeLine() throws(SocketError) -> [UInt8]?? {
        let limit = maxLineLength
        let count = end - start
        let scanned = min(count, limit + 2)
        if let i = storage[start..<(start + scanned)].firstIndex(of: 0x0A) {
            let content = i - start
            if content <= limit || (content == limit + 1 && storage[i - 1] == 0x0D) { return .some(take(content + 1)) }
            throw lineTooLong()
        }
        // Past the limit with no line feed: too long, unless the byte after the limit is a
        // CR that the line feed may still follow.
        if count >= limit + 2 || (count == limit + 1 && storage[start + limit] != 0x0D) { throw lineTooLong() }
        if atEnd { return .some(count == 0 ? nil : take(count)) }
        return nil
    }

    private func lineTooLong() -> SocketError {
        SocketError(.tooLong, .receive, address: try? source.peerAddress,
                    detail: "a line longer than \(maxLineLength) bytes (maxLineLength); it stays buffered")
    }

    /// `count` bytes if buffered; nil if more must arrive.
    private func takeExactly(_ count: Int) throws(SocketError) -> [UInt8]? {
        if end - start >= count { return take(count) }
        if atEnd {
            throw SocketError(.endOfStream, .receive, address: try? source.peerAddress, bytesTransferred: end - start,
                              detail: "wanted \(count) bytes; those that came stay buffered")
        }
        return nil
    }

    private func take(_ count: Int) -> [UInt8] {
        let bytes = Array(storage[start..<(start + count)])
        start += count
        if start == end { (start, end) = (0, 0) }
        return bytes
    }

    /// Room after the buffered bytes for `want` of them in all (at least some room): moves
    /// them to the front, and grows the buffer if that is not enough.
    private func makeRoom(want: Int) -> UnsafeMutableRawBufferPointer {
        let needed = max(want, end - start + 1)
        if storage.count - start < needed || end == storage.count {
            if start > 0 {
                storage.baseAddress!.copyMemory(from: storage.baseAddress! + start, byteCount: end - start)
                (start, end) = (0, end - start)
            }
            if storage.count < needed {
                let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: max(needed, storage.count * 2), alignment: 16)
                grown.copyMemory(from: UnsafeRawBufferPointer(rebasing: storage[..<end]))
                storage.deallocate()
                storage = grown
            }
        }
        return UnsafeMutableRawBufferPointer(rebasing: storage[end...])
    }

    private func fill(deadline: ContinuousClock.Instant?, want: Int = 0) throws(SocketError) {
        let n = try source.receive(into: makeRoom(want: want), deadline: deadline)
        if n == 0 { atEnd = true } else { end += n }
    }

    private nonisolated(nonsending) func fillAsync(deadline: ContinuousClock.Instant?, want: Int = 0) async throws(SocketError) {
        let n = try await source.receive(into: makeRoom(want: want), deadline: deadline)
        if n == 0 { atEnd = true } else { end += n }
    }

    private func checkCount(_ count: Int) throws(SocketError) {
        guard count >= 0 else {
            throw SocketError(.invalidArgument, .receive, detail: "count must not be negative, got \(count)")
        }
    }

    private static func line(_ bytes: [UInt8]) -> String {
        var body = bytes[...]
        if body.last == 0x0A { body = body.dropLast() }
        if body.last == 0x0D { body = body.dropLast() }
        return String(decoding: body, as: UTF8.self)
    }
}
