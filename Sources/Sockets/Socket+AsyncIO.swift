import SystemPackage

// The async forms of sending and receiving: the same names, the same timeout rules and the
// same errors as the blocking forms in Socket+IO.swift; the task suspends where the
// blocking call would block. In async code Swift picks these.

extension Socket {
    // MARK: sending

    /// Sends some of `buffer` (`send(2)` with `MSG_NOSIGNAL | MSG_DONTWAIT`) and returns
    /// how many bytes the kernel took, suspending while the send buffer is full — for at
    /// most the socket's ``timeout``, and not past `deadline`.
    ///
    /// The async form of ``send(_:deadline:)-3lcjk``, with the same
    /// rules; `buffer` must stay valid until the call returns.
    ///
    /// - Throws: ``SocketError`` — as the blocking form, and `.cancelled` if the task is
    ///   cancelled (nothing was sent).
    public nonisolated(nonsending) func send(_ buffer: UnsafeRawBufferPointer, deadline: ContinuousClock.Instant?) async throws(SocketError) -> Int {
        try await send(buffer, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
    }

    /// Sends some of `buffer` with no deadline; see ``send(_:deadline:)-29pi1``.
    public nonisolated(nonsending) func send(_ buffer: UnsafeRawBufferPointer) async throws(SocketError) -> Int {
        try await send(buffer, deadlineLeft: nil)
    }

    nonisolated(nonsending) func send(_ buffer: UnsafeRawBufferPointer, deadlineLeft: Int64?) async throws(SocketError) -> Int {
        var call = try beginAsyncCall(.send, address: nil, deadlineLeft: deadlineLeft)
        defer { endAsyncCall(call) }
        do throws(SocketError) {
            if buffer.isEmpty && type == .stream { return 0 }
            return try await performAsync(&call, .send, paced: isUnixDatagram) { _ throws(Errno) in
                try Attempt.run(mayWait: false) { Sys.send(fd, buffer, mayWait: false) }
            }
        } catch {
            throw addressed(error)
        }
    }

    /// Sends some of `bytes`; see ``send(_:deadline:)-29pi1``.
    public nonisolated(nonsending) func send(_ bytes: some Collection<UInt8>, deadline: ContinuousClock.Instant? = nil) async throws(SocketError) -> Int {
        let bytes = Array(bytes)
        var call = try beginAsyncCall(.send, address: nil, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
        defer { endAsyncCall(call) }
        do throws(SocketError) {
            if bytes.isEmpty && type == .stream { return 0 }
            return try await performAsync(&call, .send, paced: isUnixDatagram) { _ throws(Errno) in
                try withBytes(bytes) { buffer throws(Errno) in
                    try Attempt.run(mayWait: false) { Sys.send(fd, buffer, mayWait: false) }
                }
            }
        } catch {
            throw addressed(error)
        }
    }

    /// Sends all of `buffer`, suspending while the send buffer is full, within **one** time
    /// limit for the whole transfer (the socket's ``timeout`` or `deadline`, whichever is
    /// earlier).
    ///
    /// The async form of ``sendAll(_:deadline:)-7820t``; `buffer` must
    /// stay valid until the call returns.
    ///
    /// - Throws: ``SocketError`` — as the blocking form, and `.cancelled` if the task is
    ///   cancelled; each with ``SocketError/bytesTransferred`` set to how much was sent.
    public nonisolated(nonsending) func sendAll(_ buffer: UnsafeRawBufferPointer, deadline: ContinuousClock.Instant?) async throws(SocketError) {
        try await sendAll(buffer, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
    }

    /// Sends all of `buffer` with no deadline; see ``sendAll(_:deadline:)-3xol3``.
    public nonisolated(nonsending) func sendAll(_ buffer: UnsafeRawBufferPointer) async throws(SocketError) {
        try await sendAll(buffer, deadlineLeft: nil)
    }

    nonisolated(nonsending) func sendAll(_ buffer: UnsafeRawBufferPointer, deadlineLeft: Int64?) async throws(SocketError) {
        try await sendAll(count: buffer.count, deadlineLeft: deadlineLeft) { from, send throws(Errno) in
            try send(UnsafeRawBufferPointer(rebasing: buffer[from...]))
        }
    }

    /// Sends all of `bytes` (an array, `"text".utf8`, ...); see
    /// ``sendAll(_:deadline:)-3xol3``. A collection that is not an
    /// array is copied into one first: the bytes must stay put while the call is suspended.
    public nonisolated(nonsending) func sendAll(_ bytes: some Collection<UInt8>, deadline: ContinuousClock.Instant? = nil) async throws(SocketError) {
        let bytes = Array(bytes)
        try await sendAll(count: bytes.count, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline)) { from, send throws(Errno) in
            try withBytes(bytes) { all throws(Errno) in try send(UnsafeRawBufferPointer(rebasing: all[from...])) }
        }
    }

    /// The body of every async `sendAll`: `count` bytes, of which `withRest(from, send)` hands
    /// those from offset `from` on to `send` (the attempt), and returns what it returns.
    nonisolated(nonsending) private func sendAll(
        count: Int, deadlineLeft: Int64?,
        _ withRest: (Int, (UnsafeRawBufferPointer) throws(Errno) -> Int?) throws(Errno) -> Int?
    ) async throws(SocketError) {
        var call: AsyncCall
        do throws(SocketError) {
            call = try beginAsyncCall(.sendAll, address: nil, deadlineLeft: deadlineLeft)
        } catch {
            throw addressed(error).transferred(0)
        }
        defer { endAsyncCall(call) }
        let registration = call.registration
        var sent = 0
        do throws(SocketError) {
            while sent < count {
                let from = sent
                sent += try await performAsync(&call, .send, paced: isUnixDatagram) { observed throws(Errno) in
                    try withRest(from) { rest throws(Errno) in
                        let n = try Attempt.run(mayWait: false) { Sys.send(fd, rest, mayWait: false) }
                        // A short send: the buffer is full; wait for the edge rather than fail again.
                        if let n, n < rest.count { registration.clearAfterShort(.send, ifUnchangedSince: observed) }
                        return n
                    }
                }
            }
        } catch {
            throw addressed(error).transferred(sent)
        }
    }

    // MARK: receiving

    /// Receives up to `buffer.count` bytes into `buffer` (`recv(2)` with `MSG_DONTWAIT`)
    /// and returns how many arrived; **0 means the peer closed the stream**. Suspends until
    /// data is there, for at most the socket's ``timeout`` and not past `deadline`.
    ///
    /// The async form of ``receive(into:deadline:)-9lvl2``; `buffer` must stay valid until the
    /// call returns. Cancelling the task ends the wait with `.cancelled` and consumes
    /// nothing: the next receive gets the bytes.
    ///
    /// - Throws: ``SocketError`` — `.timedOut`, `.wouldBlock`, `.connectionReset`,
    ///   `.closed`, `.cancelled`.
    public nonisolated(nonsending) func receive(into buffer: UnsafeMutableRawBufferPointer, deadline: ContinuousClock.Instant?) async throws(SocketError) -> Int {
        try await receive(into: buffer, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
    }

    /// Receives into `buffer` with no deadline; see ``receive(into:deadline:)-1cim0``.
    public nonisolated(nonsending) func receive(into buffer: UnsafeMutableRawBufferPointer) async throws(SocketError) -> Int {
        try await receive(into: buffer, deadlineLeft: nil)
    }

    nonisolated(nonsending) func receive(into buffer: UnsafeMutableRawBufferPointer, deadlineLeft: Int64?) async throws(SocketError) -> Int {
        var call = try beginAsyncCall(.receive, address: nil, deadlineLeft: deadlineLeft)
        defer { endAsyncCall(call) }
        let registration = call.registration
        do throws(SocketError) {
            if buffer.isEmpty && type == .stream { return 0 }
            let n = try await performAsync(&call, .receive) { observed throws(Errno) in
                try receiveAttempt(buffer, registration, observed)
            }
            if n == 0 && isClosed { throw SocketError(.closed, .receive) }
            return n
        } catch {
            throw addressed(error)
        }
    }

    /// Receives into `buffer`, from its first byte, up to `buffer.count` bytes, and returns
    /// how many arrived (**0 means end of stream**): the safe way to reuse one buffer,
    /// allocating nothing per call. The async form of ``receive(into:deadline:)-4v2zd``;
    /// cancelling the task ends the wait with `.cancelled` and consumes nothing.
    ///
    /// - Throws: ``SocketError`` — `.timedOut`, `.wouldBlock`, `.connectionReset`,
    ///   `.closed`, `.cancelled`.
    public nonisolated(nonsending) func receive(into buffer: inout [UInt8], deadline: ContinuousClock.Instant? = nil) async throws(SocketError) -> Int {
        var call = try beginAsyncCall(.receive, address: nil, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
        defer { endAsyncCall(call) }
        let registration = call.registration
        do throws(SocketError) {
            if buffer.isEmpty && type == .stream { return 0 }
            // The array's storage is reached only inside each attempt, never across a suspension.
            let n = try await performAsync(&call, .receive) { observed throws(Errno) in
                try withMutableBytes(&buffer) { raw throws(Errno) in try receiveAttempt(raw, registration, observed) }
            }
            if n == 0 && isClosed { throw SocketError(.closed, .receive) }
            return n
        } catch {
            throw addressed(error)
        }
    }

    /// One `recv` without waiting. A short read on a stream drains the socket: its bit is
    /// cleared (unless an event came meanwhile), so the next receive waits for the edge
    /// instead of paying a read that fails with EAGAIN.
    @inline(__always)
    func receiveAttempt(_ buffer: UnsafeMutableRawBufferPointer, _ registration: Registration, _ observed: UInt64) throws(Errno) -> Int? {
        let n = try Attempt.run(mayWait: false) { Sys.recv(fd, buffer, mayWait: false) }
        if let n, n > 0, n < buffer.count, type == .stream { registration.clearAfterShort(.receive, ifUnchangedSince: observed) }
        return n
    }

    /// Receives up to `maxCount` bytes; an empty array means end of stream. See
    /// ``receive(into:deadline:)-1cim0``.
    ///
    /// - Throws: as ``receive(into:deadline:)-1cim0``; `.invalidArgument` for a negative `maxCount`.
    public nonisolated(nonsending) func receive(upTo maxCount: Int, deadline: ContinuousClock.Instant? = nil) async throws(SocketError) -> [UInt8] {
        guard maxCount >= 0 else {
            throw SocketError(.invalidArgument, .receive, detail: "maxCount must not be negative, got \(maxCount)")
        }
        var call = try beginAsyncCall(.receive, address: nil, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
        defer { endAsyncCall(call) }
        let registration = call.registration
        do throws(SocketError) {
            if maxCount == 0 && type == .stream { return [] }
            let bytes = try await performAsync(&call, .receive) { observed throws(Errno) -> [UInt8]? in
                try filledArray(capacity: maxCount) { buffer throws(Errno) in
                    try receiveAttempt(buffer, registration, observed).map { ($0, ()) }
                }?.bytes
            }
            if bytes.isEmpty && isClosed { throw SocketError(.closed, .receive) }
            return bytes
        } catch {
            throw addressed(error)
        }
    }

    /// Receives exactly `count` bytes, within **one** time limit for the whole transfer;
    /// see the blocking ``receive(exactly:deadline:)-6emc3``.
    ///
    /// - Throws: ``SocketError`` — `.endOfStream` if the peer closes first, `.timedOut`,
    ///   `.cancelled` and the errors of ``receive(into:deadline:)-1cim0``; each with
    ///   ``SocketError/bytesTransferred`` set to how much had arrived (those bytes are lost
    ///   with the error, as in the blocking form).
    public nonisolated(nonsending) func receive(exactly count: Int, deadline: ContinuousClock.Instant? = nil) async throws(SocketError) -> [UInt8] {
        guard count >= 0 else {
            throw SocketError(.invalidArgument, .receive, detail: "count must not be negative, got \(count)")
        }
        var call = try beginAsyncCall(.receive, address: nil, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
        defer { endAsyncCall(call) }
        let registration = call.registration
        var bytes = [UInt8](repeating: 0, count: count)
        var filled = 0
        do throws(SocketError) {
            while filled < count {
                let from = filled
                let n = try await performAsync(&call, .receive) { observed throws(Errno) -> Int? in
                    try withMutableBytes(&bytes) { all throws(Errno) in
                        try receiveAttempt(UnsafeMutableRawBufferPointer(rebasing: all[from...]), registration, observed)
                    }
                }
                if n == 0 {
                    throw SocketError(isClosed ? .closed : .endOfStream, .receive, address: peerAddressForMessages(fd))
                }
                filled += n
            }
            return bytes
        } catch {
            throw addressed(error).transferred(filled)
        }
    }

    // MARK: datagrams

    /// Sends one datagram to `address` (`sendto(2)`), suspending while the send buffer is
    /// full; the async form of ``send(_:to:deadline:)-9u6iw``.
    public nonisolated(nonsending) func send(_ buffer: UnsafeRawBufferPointer, to address: SocketAddress, deadline: ContinuousClock.Instant?) async throws(SocketError) -> Int {
        try await send(buffer, to: address, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
    }

    /// Sends one datagram to `address` with no deadline; see ``send(_:to:deadline:)-6hywx``.
    public nonisolated(nonsending) func send(_ buffer: UnsafeRawBufferPointer, to address: SocketAddress) async throws(SocketError) -> Int {
        try await send(buffer, to: address, deadlineLeft: nil)
    }

    nonisolated(nonsending) func send(_ buffer: UnsafeRawBufferPointer, to address: SocketAddress, deadlineLeft: Int64?) async throws(SocketError) -> Int {
        try checkFamily(address, .sendTo)
        var call = try beginAsyncCall(.sendTo, address: address, deadlineLeft: deadlineLeft)
        defer { endAsyncCall(call) }
        do throws(SocketError) {
            return try await performAsync(&call, .send, paced: isUnixDatagram) { _ throws(Errno) in
                try Attempt.run(mayWait: false) { Sys.sendTo(fd, buffer, address, mayWait: false) }
            }
        } catch {
            throw error.at(address)
        }
    }

    /// Sends one datagram of `bytes` to `address`; see ``send(_:to:deadline:)-6hywx``.
    public nonisolated(nonsending) func send(_ bytes: some Collection<UInt8>, to address: SocketAddress, deadline: ContinuousClock.Instant? = nil) async throws(SocketError) -> Int {
        let bytes = Array(bytes)
        try checkFamily(address, .sendTo)
        var call = try beginAsyncCall(.sendTo, address: address, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
        defer { endAsyncCall(call) }
        do throws(SocketError) {
            return try await performAsync(&call, .send, paced: isUnixDatagram) { _ throws(Errno) in
                try withBytes(bytes) { buffer throws(Errno) in
                    try Attempt.run(mayWait: false) { Sys.sendTo(fd, buffer, address, mayWait: false) }
                }
            }
        } catch {
            throw error.at(address)
        }
    }

    /// Receives one datagram into `buffer` (`recvfrom(2)`): its length (cut to
    /// `buffer.count`) and its sender. The async form of ``receive(from:deadline:)-9wft4``.
    ///
    /// - Throws: ``SocketError`` — `.timedOut`, `.wouldBlock`, `.closed`, `.cancelled`.
    public nonisolated(nonsending) func receive(from buffer: UnsafeMutableRawBufferPointer, deadline: ContinuousClock.Instant?) async throws(SocketError) -> (count: Int, sender: SocketAddress) {
        try await receive(from: buffer, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
    }

    /// Receives one datagram into `buffer` with no deadline; see ``receive(from:deadline:)-32jhp``.
    public nonisolated(nonsending) func receive(from buffer: UnsafeMutableRawBufferPointer) async throws(SocketError) -> (count: Int, sender: SocketAddress) {
        try await receive(from: buffer, deadlineLeft: nil)
    }

    nonisolated(nonsending) func receive(from buffer: UnsafeMutableRawBufferPointer, deadlineLeft: Int64?) async throws(SocketError) -> (count: Int, sender: SocketAddress) {
        var call = try beginAsyncCall(.receiveFrom, address: nil, deadlineLeft: deadlineLeft)
        defer { endAsyncCall(call) }
        let (count, sender, named): (Int, SocketAddress, Bool)
        do throws(SocketError) {
            (count, sender, named) = try await performAsync(&call, .receive) { _ throws(Errno) in
                try Attempt.run(mayWait: false) { Sys.recvFrom(fd, buffer, mayWait: false) }
            }
        } catch {
            throw addressed(error)  // a connected datagram socket's peer (an ICMP refusal)
        }
        if count == 0 && !named && isClosed { throw SocketError(.closed, .receiveFrom) }
        return (count, sender)
    }

    /// Receives one datagram into `buffer`, from its first byte (cut to `buffer.count`):
    /// its length and its sender, allocating nothing per call. The async form of
    /// ``receive(from:deadline:)-8v0r3``.
    ///
    /// - Throws: ``SocketError`` — `.timedOut`, `.wouldBlock`, `.closed`, `.cancelled`.
    public nonisolated(nonsending) func receive(from buffer: inout [UInt8], deadline: ContinuousClock.Instant? = nil) async throws(SocketError) -> (count: Int, sender: SocketAddress) {
        var call = try beginAsyncCall(.receiveFrom, address: nil, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
        defer { endAsyncCall(call) }
        let (count, sender, named): (Int, SocketAddress, Bool)
        do throws(SocketError) {
            (count, sender, named) = try await performAsync(&call, .receive) { _ throws(Errno) in
                try withMutableBytes(&buffer) { raw throws(Errno) in
                    try Attempt.run(mayWait: false) { Sys.recvFrom(fd, raw, mayWait: false) }
                }
            }
        } catch {
            throw addressed(error)
        }
        if count == 0 && !named && isClosed { throw SocketError(.closed, .receiveFrom) }
        return (count, sender)
    }

    /// Receives one datagram of up to `maxCount` bytes and its sender; see ``receive(from:deadline:)-32jhp``.
    public nonisolated(nonsending) func receiveDatagram(upTo maxCount: Int = 65_536, deadline: ContinuousClock.Instant? = nil) async throws(SocketError) -> (bytes: [UInt8], sender: SocketAddress) {
        guard maxCount >= 0 else {
            throw SocketError(.invalidArgument, .receiveFrom, detail: "maxCount must not be negative, got \(maxCount)")
        }
        var call = try beginAsyncCall(.receiveFrom, address: nil, deadlineLeft: WaitBudget.nanosecondsLeft(until: deadline))
        defer { endAsyncCall(call) }
        let (bytes, (sender, named)): ([UInt8], (SocketAddress, Bool))
        do throws(SocketError) {
            (bytes, (sender, named)) = try await performAsync(&call, .receive) { _ throws(Errno) in
                try filledArray(capacity: maxCount) { buffer throws(Errno) in
                    try Attempt.run(mayWait: false) { Sys.recvFrom(fd, buffer, mayWait: false) }.map { ($0.0, ($0.1, $0.named)) }
                }
            }
        } catch {
            throw addressed(error)
        }
        if bytes.isEmpty && !named && isClosed { throw SocketError(.closed, .receiveFrom) }
        return (bytes, sender)
    }
}

/// A fresh array of up to `capacity` bytes that `fill` writes into, for an attempt that must
/// hold nothing across a suspension: `fill` returns how many bytes it wrote and a value of
/// its own, or nil for "not yet" (the array is then dropped).
@inline(__always)
func filledArray<T>(
    capacity: Int, _ fill: (UnsafeMutableRawBufferPointer) throws(Errno) -> (Int, T)?
) throws(Errno) -> (bytes: [UInt8], value: T)? {
    var outcome: Result<T?, Errno> = .success(nil)
    let bytes = [UInt8](unsafeUninitializedCapacity: capacity) { storage, count in
        count = 0
        do throws(Errno) {
            if let (n, value) = try fill(UnsafeMutableRawBufferPointer(storage)) {
                count = n
                outcome = .success(value)
            }
        } catch {
            outcome = .failure(error)
        }
    }
    guard let value = try outcome.get() else { return nil }
    return (bytes, value)
}

/// `array.withUnsafeBytes`, keeping the closure's typed error (the library's own is `rethrows`).
@inline(__always)
func withBytes<R>(_ array: [UInt8], _ body: (UnsafeRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R {
    try array.withUnsafeBytes { buffer -> Result<R, Errno> in
        do throws(Errno) { return .success(try body(buffer)) } catch { return .failure(error) }
    }.get()
}

/// `array.withUnsafeMutableBytes`, keeping the closure's typed error.
@inline(__always)
func withMutableBytes<R>(_ array: inout [UInt8], _ body: (UnsafeMutableRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R {
    try array.withUnsafeMutableBytes { buffer -> Result<R, Errno> in
        do throws(Errno) { return .success(try body(buffer)) } catch { return .failure(error) }
    }.get()
}
