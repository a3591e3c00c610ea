import CSocketsTLS
import Sockets

// The async forms: the blocking calls' loops (TLSSocket.swift) with the socket's async waits,
// which park the task on the reactor instead of blocking its thread. Same limits, same
// errors, plus `.cancelled`: cancelling the task ends the wait it is in, like any socket call.
// What a cancelled call leaves behind is what a timed-out one leaves: a receive consumes
// nothing the engine has not decrypted into the caller's hands, a send's ciphertext stays
// queued for the next send.

extension TLSSocket {
    /// Resolves `hostPort`, connects (Happy Eyeballs) and handshakes, all within **one**
    /// limit; the async form of ``connect(to:configuration:serverName:timeout:deadline:)-4kf8g``,
    /// with the same rules.
    ///
    /// - Throws: ``/Sockets/SocketError`` — as the blocking form, and `.cancelled`; the socket is closed.
    public nonisolated(nonsending) static func connect(
        to hostPort: String, configuration: TLSConfiguration, serverName: String? = nil,
        timeout: SocketTimeout = Socket.defaultTimeout, deadline: ContinuousClock.Instant? = nil
    ) async throws(SocketError) -> TLSSocket {
        let start = ContinuousClock.now
        var name = serverName
        if name == nil { name = try HostPort.split(hostPort).host }
        let overall = timeout.end(from: start, deadline: deadline)
        let socket = try await Socket.connect(to: hostPort, timeout: timeout, deadline: overall)
        do throws(SocketError) {
            let tls = try TLSSocket(client: socket, configuration: configuration, serverName: name)
            try await tls.handshake(Limit(start: start, timeout: timeout, deadline: deadline))
            return tls
        } catch {
            socket.close()
            throw error
        }
    }

    /// Performs the TLS handshake within one limit for all of it; the async form of
    /// ``handshake(deadline:)-8glr7``, with the same rules.
    ///
    /// - Throws: ``/Sockets/SocketError`` — as the blocking form, and `.cancelled`.
    public nonisolated(nonsending) func handshake(deadline: ContinuousClock.Instant? = nil) async throws(SocketError) {
        try await handshake(Limit(start: .now, timeout: socket.timeout, deadline: deadline))
    }

    private nonisolated(nonsending) func handshake(_ limit: Limit) async throws(SocketError) {
        try checkBlocking(.handshake)
        do throws(SocketError) {
            try await take(receiving, .handshake, limit)
            defer { receiving.release() }
            var cipher: [UInt8] = []
            while true {
                let (code, outgoing) = engine.withLock { e in (cstls_handshake(e.raw), Self.hasOutgoing(e)) }
                if outgoing { try await flush(limit) }
                switch try handshakeStep(code) {
                case .done: return
                case .again: continue
                case .needInput:
                    if cipher.isEmpty { cipher = Self.cipherBuffer() }
                    let n = try await socket.receive(into: &cipher, deadline: limit.end)
                    try feedHandshake(cipher, n)
                }
            }
        } catch {
            throw limit.named(error, .handshake, address: peer)
        }
    }

    /// Receives up to `maxCount` bytes of application data; the async form of
    /// ``receive(upTo:deadline:)-v3n5``, with the same rules. A cancelled receive consumes nothing:
    /// the next one gets every byte.
    ///
    /// - Throws: ``/Sockets/SocketError`` — as the blocking form, and `.cancelled`.
    public nonisolated(nonsending) func receive(upTo maxCount: Int, deadline: ContinuousClock.Instant? = nil) async throws(SocketError) -> [UInt8] {
        guard maxCount > 0 else { return [] }
        var plain = Self.uninitialized(maxCount)
        let count = try await receive(Limit(start: .now, timeout: socket.timeout, deadline: deadline)) {
            plain.withUnsafeMutableBytes { read(into: $0) }
        }
        plain.removeLast(maxCount - count)
        return plain
    }

    /// Receives application data into `buffer`; the async form of
    /// ``receive(into:deadline:)-8oq8l``, with the same rules. `buffer` must stay valid until the
    /// call returns.
    ///
    /// - Throws: ``/Sockets/SocketError`` — as the blocking form, and `.cancelled`.
    public nonisolated(nonsending) func receive(into buffer: UnsafeMutableRawBufferPointer, deadline: ContinuousClock.Instant?) async throws(SocketError) -> Int {
        guard buffer.count > 0 else { return 0 }
        return try await receive(Limit(start: .now, timeout: socket.timeout, deadline: deadline)) { read(into: buffer) }
    }

    private nonisolated(nonsending) func receive(
        _ limit: Limit, _ read: () -> (Result<ReadStep, SocketError>, outgoing: Bool)
    ) async throws(SocketError) -> Int {
        do throws(SocketError) {
            try checkReady(.receive)
            try await take(receiving, .receive, limit)
            defer { receiving.release() }
            var cipher: [UInt8] = []
            while true {
                let (step, outgoing) = read()
                guard case .success(.needInput) = step else {
                    if outgoing { flushWithoutWaiting() }  // plaintext is in hand: never wait or fail for a send
                    switch try step.get() {
                    case .data(let count): return count
                    case .end, .needInput: return 0
                    }
                }
                if outgoing { try await flush(limit) }
                if cipher.isEmpty { cipher = Self.cipherBuffer() }
                let n = try await socket.receive(into: &cipher, deadline: limit.end)
                feed(cipher, n)
            }
        } catch {
            throw limit.named(error, .receive, address: peer)
        }
    }

    /// Sends all of `bytes` as application data; the async form of ``sendAll(_:deadline:)-3v4qe``,
    /// with the same rules: if the call times out or is cancelled, TLS has taken the first
    /// `bytesTransferred` bytes and what it made of them goes first with the next send.
    ///
    /// - Throws: ``/Sockets/SocketError`` — as the blocking form, and `.cancelled`.
    public nonisolated(nonsending) func sendAll(_ bytes: some Collection<UInt8>, deadline: ContinuousClock.Instant? = nil) async throws(SocketError) {
        let plain = Array(bytes)
        guard !plain.isEmpty else { return }
        let limit = Limit(start: .now, timeout: socket.timeout, deadline: deadline)
        var taken = 0
        do throws(SocketError) {
            try checkReady(.sendAll)
            try await take(sending, .sendAll, limit)  // for the whole call: its pieces go together
            defer { sending.release() }
            while taken < plain.count {
                taken = try encrypt(plain, from: taken)
                try await sendQueued(limit)
            }
        } catch {
            throw sendError(limit.named(error, .sendAll, address: peer), taken: taken)
        }
    }

    /// Sends `close_notify` and shuts the socket down; the async form of
    /// ``shutdown(_:deadline:)-3r3nz``, with the same rules.
    ///
    /// - Throws: ``/Sockets/SocketError`` — as the blocking form, and `.cancelled`.
    public nonisolated(nonsending) func shutdown(_ direction: Socket.ShutdownDirection, deadline: ContinuousClock.Instant? = nil) async throws(SocketError) {
        if direction != .read {
            let limit = Limit(start: .now, timeout: socket.timeout, deadline: deadline)
            do throws(SocketError) {
                try checkReady(.shutdown)
                try await take(sending, .shutdown, limit)
                defer { sending.release() }
                try closeNotify()
                try await sendQueued(limit)
            } catch {
                throw limit.named(error, .shutdown, address: peer)
            }
        }
        try socket.shutdown(direction)
    }

    /// Takes a turn within the call's limit, or until the task is cancelled.
    private nonisolated(nonsending) func take(_ turn: Turn, _ operation: SocketError.Operation, _ limit: Limit) async throws(SocketError) {
        let outcome = await turn.acquire(until: limit.end)
        if outcome != .granted { throw limit.turnError(outcome, operation, address: peer) }
    }

    /// Sends what the engine has made, after anything queued, holding the send turn (async).
    private nonisolated(nonsending) func flush(_ limit: Limit) async throws(SocketError) {
        try await take(sending, .send, limit)
        defer { sending.release() }
        try await sendQueued(limit)
    }

    /// flush's body, the send turn held.
    private nonisolated(nonsending) func sendQueued(_ limit: Limit) async throws(SocketError) {
        engine.withLock { e in Self.drain(e, into: &queued) }
        guard !queued.isEmpty else { return }
        do throws(SocketError) {
            try await socket.sendAll(queued, deadline: limit.end)
            queued.removeAll(keepingCapacity: queued.capacity <= 32_768)
        } catch {
            queued.removeFirst(min(error.bytesTransferred ?? 0, queued.count))
            throw error
        }
    }
}
