import SystemPackage

extension Socket {
    // MARK: sending

    /// Sends some of `buffer` (`send(2)` with `MSG_NOSIGNAL`) and returns how many bytes
    /// the kernel took, which may be fewer than `buffer.count`.
    ///
    /// Blocks only while the send buffer is full: for at most the socket's ``timeout``,
    /// and not past `deadline`. Sending zero bytes on a stream socket returns 0 at once.
    ///
    /// - Throws: ``SocketError`` — `.timedOut`, `.wouldBlock`, `.brokenPipe` (the peer is
    ///   gone or this side shut down writing; no SIGPIPE is raised), `.connectionReset`,
    ///   `.notConnected`, `.closed`.
    public func send(_ buffer: UnsafeRawBufferPointer, deadline: ContinuousClock.Instant?) throws(SocketError) -> Int {
        try send(buffer, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
    }

    /// Sends some of `buffer` with no deadline: the same as
    /// ``send(_:deadline:)-3lcjk`` with `deadline: nil`, waiting at
    /// most the socket's ``timeout``.
    public func send(_ buffer: UnsafeRawBufferPointer) throws(SocketError) -> Int {
        try send(buffer, deadlineLeft: nil)
    }

    /// The body of both forms: the deadline in nanoseconds left (nil: none).
    func send(_ buffer: UnsafeRawBufferPointer, deadlineLeft: Int64?) throws(SocketError) -> Int {
        try withCall(.send, address: nil, deadlineLeft: deadlineLeft, sendSomeKind) { call throws(SocketError) in
            do throws(SocketError) {
                if buffer.isEmpty && type == .stream { return 0 }
                return try perform(&call) { _, _ throws(Errno) in try Attempt.run(mayWait: false) { Sys.send(fd, buffer, mayWait: false) } }
            } catch {
                throw addressed(error)
            }
        }
    }

    /// Sends some of `bytes`; see ``send(_:deadline:)-3lcjk``.
    public func send(_ bytes: some Collection<UInt8>, deadline: ContinuousClock.Instant? = nil) throws(SocketError) -> Int {
        let left = WaitBudget.nanosecondsLeft(until: deadline)
        return try withContiguousBytes(bytes) { buffer throws(SocketError) in try send(buffer, deadlineLeft: left) }
    }

    /// Sends all of `buffer`, looping over partial sends (`send(2)` with `MSG_NOSIGNAL`).
    ///
    /// The whole transfer has **one** time limit, fixed when the call starts: the socket's
    /// ``timeout`` or `deadline`, whichever is earlier (as CPython's `sendall` since 3.5),
    /// not a fresh timeout per chunk. With no `deadline`, the call first offers the buffer
    /// to one non-blocking send, which needs no time limit since it cannot wait; the
    /// socket's timeout then starts if the rest must wait (later than the call by that one
    /// send, never earlier).
    ///
    /// - Throws: ``SocketError`` — `.timedOut`, `.wouldBlock`, `.brokenPipe`,
    ///   `.connectionReset`, `.closed`; each with ``SocketError/bytesTransferred`` set to
    ///   how much was sent before the failure.
    public func sendAll(_ buffer: UnsafeRawBufferPointer, deadline: ContinuousClock.Instant?) throws(SocketError) {
        try sendAll(buffer, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
    }

    /// Sends all of `buffer` with no deadline: the same as
    /// ``sendAll(_:deadline:)-7820t`` with `deadline: nil`, waiting at
    /// most the socket's ``timeout``.
    public func sendAll(_ buffer: UnsafeRawBufferPointer) throws(SocketError) {
        try sendAll(buffer, deadlineLeft: nil)
    }

    /// The body of both forms: the deadline in nanoseconds left (nil: none).
    func sendAll(_ buffer: UnsafeRawBufferPointer, deadlineLeft: Int64?) throws(SocketError) {
        var sent = 0
        if deadlineLeft == nil && !buffer.isEmpty {
            // A send that finds room in the socket's buffer never waits, so it is tried
            // before anything only a wait needs — the clock, a kernel timer. If it cannot
            // send everything, the time limit starts now: later than the call by one
            // non-blocking send, never earlier.
            sent = try sendWithoutWaiting(buffer)
            if sent == buffer.count { return }
        }
        // The hot path, written out (not through `withCall`'s closure, which the optimizer
        // leaves as a call).
        var call: Call
        do throws(SocketError) {
            call = try beginCall(.sendAll, address: nil, deadlineLeft: deadlineLeft, sendKind)
        } catch {
            throw addressed(error).transferred(sent)  // .closed after a first send that moved bytes says how many
        }
        defer { endCall(call) }
        do throws(SocketError) {
            while sent < buffer.count {
                let rest = UnsafeRawBufferPointer(rebasing: buffer[sent...])
                sent += try perform(&call) { mayWait, _ throws(Errno) in
                    try Attempt.run(mayWait: mayWait) { Sys.send(fd, rest, mayWait: mayWait) }
                }
            }
        } catch {
            throw addressed(error).transferred(sent)
        }
    }

    /// One non-blocking `send(2)` of `buffer` (`MSG_DONTWAIT`): how much the kernel took.
    @inline(__always)
    func sendWithoutWaiting(_ buffer: UnsafeRawBufferPointer) throws(SocketError) -> Int {
        do throws(SocketError) {
            // A send deadline already past fails before any system call, as in every call.
            try beginUse(.sendAll, address: nil, deadline: .send)
        } catch {
            throw error.at(state.withLock { $0.peer }).transferred(0)
        }
        defer { endUse() }
        do throws(Errno) {
            return try Attempt.run(mayWait: false) { Sys.send(fd, buffer, mayWait: false) } ?? 0
        } catch {
            throw addressed(errorOrClosed(.sendAll, error, address: nil)).transferred(0)
        }
    }

    /// Sends all of `bytes` (an array, `"text".utf8`, ...); see
    /// ``sendAll(_:deadline:)-7820t``.
    public func sendAll(_ bytes: some Collection<UInt8>, deadline: ContinuousClock.Instant? = nil) throws(SocketError) {
        let left = WaitBudget.nanosecondsLeft(until: deadline)
        try withContiguousBytes(bytes) { buffer throws(SocketError) in try sendAll(buffer, deadlineLeft: left) }
    }

    // MARK: receiving

    /// Receives up to `buffer.count` bytes into `buffer` (`recv(2)`) and returns how many
    /// arrived. **0 means the peer closed the stream** (end of stream) — never a timeout.
    ///
    /// Returns as soon as any data is there. Otherwise blocks for at most the socket's
    /// ``timeout``, and not past `deadline`. An empty buffer on a stream socket returns
    /// 0 at once.
    ///
    /// - Throws: ``SocketError`` — `.timedOut`, `.wouldBlock`, `.connectionReset`,
    ///   `.closed` (also when another thread closes the socket during the wait).
    public func receive(into buffer: UnsafeMutableRawBufferPointer, deadline: ContinuousClock.Instant?) throws(SocketError) -> Int {
        try receive(into: buffer, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
    }

    /// Receives into `buffer` with no deadline: the same as ``receive(into:deadline:)-9lvl2``
    /// with `deadline: nil`, waiting at most the socket's ``timeout``.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> Int {
        try receive(into: buffer, deadlineLeft: nil)
    }

    /// The body of both forms: the deadline in nanoseconds left (nil: none).
    func receive(into buffer: UnsafeMutableRawBufferPointer, deadlineLeft: Int64?) throws(SocketError) -> Int {
        // The hot path, written out as `sendAll`'s.
        var call = try beginCall(.receive, address: nil, deadlineLeft: deadlineLeft, .receive)
        defer { endCall(call) }
        do throws(SocketError) {
            if buffer.isEmpty && type == .stream { return 0 }
            let n = try perform(&call) { mayWait, _ throws(Errno) in
                try Attempt.run(mayWait: mayWait) { Sys.recv(fd, buffer, mayWait: mayWait) }
            }
            // A wait woken by close() sees the shutdown as end of stream: report the close.
            if n == 0 && isClosed { throw SocketError(.closed, .receive) }
            return n
        } catch {
            throw addressed(error)
        }
    }

    /// Receives into `buffer`, from its first byte, up to `buffer.count` bytes, and returns
    /// how many arrived (**0 means end of stream**); the bytes after them are left as they
    /// were. The safe way to reuse one buffer for every receive (Go's `Read(p)`): nothing is
    /// allocated per call, unlike ``receive(upTo:deadline:)-81qhn``, as long as the array is not
    /// shared with another copy (Swift would then copy it once, on the first call).
    ///
    /// ```swift
    /// var buffer = [UInt8](repeating: 0, count: 65_536)
    /// while case let n = try connection.receive(into: &buffer), n > 0 {
    ///     consume(buffer[..<n])
    /// }
    /// ```
    ///
    /// Waits as ``receive(into:deadline:)-9lvl2``: for at most the socket's ``timeout``, not past
    /// `deadline` or the socket's receive deadline. Underneath: `recv(2)`.
    ///
    /// - Throws: ``SocketError`` — `.timedOut`, `.wouldBlock`, `.connectionReset`, `.closed`.
    public func receive(into buffer: inout [UInt8], deadline: ContinuousClock.Instant? = nil) throws(SocketError) -> Int {
        let left = WaitBudget.nanosecondsLeft(until: deadline)
        return try buffer.withUnsafeMutableBytes { raw -> Result<Int, SocketError> in
            do throws(SocketError) { return .success(try receive(into: raw, deadlineLeft: left)) } catch { return .failure(error) }
        }.get()
    }

    /// Receives up to `maxCount` bytes; an empty array means end of stream. See
    /// ``receive(into:deadline:)-9lvl2``.
    ///
    /// - Throws: as ``receive(into:deadline:)-9lvl2``; `.invalidArgument` for a negative `maxCount`.
    public func receive(upTo maxCount: Int, deadline: ContinuousClock.Instant? = nil) throws(SocketError) -> [UInt8] {
        guard maxCount >= 0 else {
            throw SocketError(.invalidArgument, .receive, detail: "maxCount must not be negative, got \(maxCount)")
        }
        let left = WaitBudget.nanosecondsLeft(until: deadline)
        var failure: SocketError?
        let bytes = [UInt8](unsafeUninitializedCapacity: maxCount) { storage, count in
            do throws(SocketError) {
                count = try receive(into: UnsafeMutableRawBufferPointer(storage), deadlineLeft: left)
            } catch {
                failure = error
                count = 0
            }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Receives exactly `count` bytes, looping over partial reads, within **one** time
    /// limit for the whole transfer (the socket's ``timeout`` or `deadline`, whichever
    /// is earlier).
    ///
    /// - Throws: ``SocketError`` — `.endOfStream` if the peer closes first, `.timedOut`,
    ///   and the errors of ``receive(into:deadline:)-9lvl2``; each with
    ///   ``SocketError/bytesTransferred`` set to how much had arrived.
    public func receive(exactly count: Int, deadline: ContinuousClock.Instant? = nil) throws(SocketError) -> [UInt8] {
        guard count >= 0 else {
            throw SocketError(.invalidArgument, .receive, detail: "count must not be negative, got \(count)")
        }
        let left = WaitBudget.nanosecondsLeft(until: deadline)
        var failure: SocketError?
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { storage, filled in
            filled = 0
            do throws(SocketError) {
                try withCall(.receive, address: nil, deadlineLeft: left, .receive) { call throws(SocketError) in
                    do throws(SocketError) {
                        while filled < count {
                            let rest = UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(storage)[filled...])
                            let n = try perform(&call) { mayWait, _ throws(Errno) in
                                try Attempt.run(mayWait: mayWait) { Sys.recv(fd, rest, mayWait: mayWait) }
                            }
                            if n == 0 {
                                throw SocketError(isClosed ? .closed : .endOfStream, .receive, address: peerAddressForMessages(fd))
                            }
                            filled += n
                        }
                    } catch {
                        throw addressed(error)  // while the call still holds the descriptor
                    }
                }
            } catch {
                failure = error.transferred(filled)
            }
        }
        if let failure { throw failure }
        return bytes
    }

    // MARK: datagrams

    /// Sends one datagram to `address` (`sendto(2)` with `MSG_NOSIGNAL`); returns the
    /// number of bytes sent. Blocks only while the send buffer is full, within the
    /// socket's ``timeout`` and `deadline`.
    ///
    /// - Throws: ``SocketError`` — `.timedOut`, `.wouldBlock`, `.invalidArgument` (an
    ///   address of another family, or a datagram larger than the protocol allows),
    ///   `.connectionRefused` (a previous datagram was refused by ICMP), `.closed`.
    public func send(_ buffer: UnsafeRawBufferPointer, to address: SocketAddress, deadline: ContinuousClock.Instant?) throws(SocketError) -> Int {
        try send(buffer, to: address, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
    }

    /// Sends one datagram to `address` with no deadline: the same as
    /// ``send(_:to:deadline:)-9u6iw`` with `deadline: nil`, waiting
    /// at most the socket's ``timeout``.
    public func send(_ buffer: UnsafeRawBufferPointer, to address: SocketAddress) throws(SocketError) -> Int {
        try send(buffer, to: address, deadlineLeft: nil)
    }

    /// The body of both forms: the deadline in nanoseconds left (nil: none).
    func send(_ buffer: UnsafeRawBufferPointer, to address: SocketAddress, deadlineLeft: Int64?) throws(SocketError) -> Int {
        try checkFamily(address, .sendTo)
        return try withCall(.sendTo, address: address, deadlineLeft: deadlineLeft, sendKind) { call throws(SocketError) in
            return try perform(&call) { mayWait, _ throws(Errno) in
                try Attempt.run(mayWait: mayWait) { Sys.sendTo(fd, buffer, address, mayWait: mayWait) }
            }
        }
    }

    /// Sends one datagram of `bytes` to `address`; see ``send(_:to:deadline:)-9u6iw``.
    public func send(_ bytes: some Collection<UInt8>, to address: SocketAddress, deadline: ContinuousClock.Instant? = nil) throws(SocketError) -> Int {
        let left = WaitBudget.nanosecondsLeft(until: deadline)
        return try withContiguousBytes(bytes) { buffer throws(SocketError) in try send(buffer, to: address, deadlineLeft: left) }
    }

    /// Receives one datagram into `buffer` (`recvfrom(2)`); returns its length (cut to
    /// `buffer.count`) and the sender's address. Blocks for at most the socket's
    /// ``timeout``, and not past `deadline`.
    ///
    /// - Throws: ``SocketError`` — `.timedOut`, `.wouldBlock`, `.closed`.
    public func receive(from buffer: UnsafeMutableRawBufferPointer, deadline: ContinuousClock.Instant?) throws(SocketError) -> (count: Int, sender: SocketAddress) {
        try receive(from: buffer, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
    }

    /// Receives one datagram into `buffer` with no deadline: the same as
    /// ``receive(from:deadline:)-9wft4`` with `deadline: nil`, waiting at most the socket's
    /// ``timeout``.
    public func receive(from buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> (count: Int, sender: SocketAddress) {
        try receive(from: buffer, deadlineLeft: nil)
    }

    /// The body of both forms: the deadline in nanoseconds left (nil: none).
    func receive(from buffer: UnsafeMutableRawBufferPointer, deadlineLeft: Int64?) throws(SocketError) -> (count: Int, sender: SocketAddress) {
        try withCall(.receiveFrom, address: nil, deadlineLeft: deadlineLeft, .receive) { call throws(SocketError) in
            let (count, sender, named): (Int, SocketAddress, Bool)
            do throws(SocketError) {
                (count, sender, named) = try perform(&call) { mayWait, _ throws(Errno) in
                    try Attempt.run(mayWait: mayWait) { Sys.recvFrom(fd, buffer, mayWait: mayWait) }
                }
            } catch {
                throw addressed(error)  // a connected datagram socket's peer (an ICMP refusal)
            }
            // The wake-up of close()'s shutdown reads as an empty datagram from nobody. A
            // datagram that did arrive is delivered, even if close() has begun meanwhile.
            if count == 0 && !named && isClosed { throw SocketError(.closed, .receiveFrom) }
            return (count, sender)
        }
    }

    /// Receives one datagram into `buffer`, from its first byte (cut to `buffer.count`),
    /// and returns its length and its sender: the safe way to reuse one buffer for every
    /// datagram, allocating nothing per call. Waits as ``receive(from:deadline:)-9wft4``.
    /// Underneath: `recvfrom(2)`.
    ///
    /// - Throws: ``SocketError`` — `.timedOut`, `.wouldBlock`, `.closed`.
    public func receive(from buffer: inout [UInt8], deadline: ContinuousClock.Instant? = nil) throws(SocketError) -> (count: Int, sender: SocketAddress) {
        let left = WaitBudget.nanosecondsLeft(until: deadline)
        return try buffer.withUnsafeMutableBytes { raw -> Result<(count: Int, sender: SocketAddress), SocketError> in
            do throws(SocketError) { return .success(try receive(from: raw, deadlineLeft: left)) } catch { return .failure(error) }
        }.get()
    }

    /// Receives one datagram of up to `maxCount` bytes and its sender; see
    /// ``receive(from:deadline:)-9wft4``.
    public func receiveDatagram(upTo maxCount: Int = 65_536, deadline: ContinuousClock.Instant? = nil) throws(SocketError) -> (bytes: [UInt8], sender: SocketAddress) {
        guard maxCount >= 0 else {
            throw SocketError(.invalidArgument, .receiveFrom, detail: "maxCount must not be negative, got \(maxCount)")
        }
        let left = WaitBudget.nanosecondsLeft(until: deadline)
        var result: Result<SocketAddress, SocketError> = .failure(SocketError(.closed, .receiveFrom))
        let bytes = [UInt8](unsafeUninitializedCapacity: maxCount) { storage, count in
            do throws(SocketError) {
                let (n, sender) = try receive(from: UnsafeMutableRawBufferPointer(storage), deadlineLeft: left)
                count = n
                result = .success(sender)
            } catch {
                count = 0
                result = .failure(error)
            }
        }
        return (bytes, try result.get())
    }

    // MARK: helpers

    /// The peer's address if the socket has one, for error messages (errors only: a
    /// successful call never pays for this system call). After a reset the kernel no longer
    /// knows it; then the address the socket was connected to or accepted from.
    func peerAddressForMessages(_ fd: CInt) -> SocketAddress? {
        state.withLock { $0.peer } ?? (try? Sys.peerAddress(fd))
    }

    /// `error` with the peer's address, except a plain would-block: a non-blocking socket's
    /// ordinary answer, which must cost no extra system call (`getpeername`). (A would-block
    /// with a detail — a blocking call refused on a reactor's thread — is a mistake to fix,
    /// and gets the address.)
    func addressed(_ error: SocketError) -> SocketError {
        error.kind == .wouldBlock && error.detail == nil ? error : error.at(peerAddressForMessages(fd))
    }
}

/// Calls `body` with the bytes of `bytes` as one contiguous buffer, copying only when the
/// collection has no contiguous storage of its own.
func withContiguousBytes<R>(
    _ bytes: some Collection<UInt8>, _ body: (UnsafeRawBufferPointer) throws(SocketError) -> R
) throws(SocketError) -> R {
    func run(_ buffer: UnsafeRawBufferPointer) -> Result<R, SocketError> {
        do throws(SocketError) { return .success(try body(buffer)) } catch { return .failure(error) }
    }
    if let direct = bytes.withContiguousStorageIfAvailable({ run(UnsafeRawBufferPointer($0)) }) {
        return try direct.get()
    }
    return try Array(bytes).withUnsafeBytes { run($0) }.get()
}
