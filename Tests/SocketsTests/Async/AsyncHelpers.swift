import Foundation
import Sockets
import Testing

// Helpers for the async suites: the twins of expectFailure and of the connected pair, and a
// task that must finish within a limit.

/// Runs `body`, expecting a `SocketError` of `kind`; returns it and the time taken.
@discardableResult
func expectAsyncFailure(
    _ kind: SocketError.Kind, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
) async -> (SocketError?, Duration) {
    let start = ContinuousClock.now
    do {
        try await body()
        Issue.record("expected \(kind), but the call succeeded", sourceLocation: sourceLocation)
        return (nil, ContinuousClock.now - start)
    } catch let error as SocketError {
        let elapsed = ContinuousClock.now - start
        #expect(error.kind == kind, "got: \(error)", sourceLocation: sourceLocation)
        return (error, elapsed)
    } catch {
        Issue.record("expected SocketError \(kind), got \(error)", sourceLocation: sourceLocation)
        return (nil, ContinuousClock.now - start)
    }
}

/// A connected TCP pair made with the async calls: (client, server side), both `.never`.
func asyncConnectedPair(_ family: SocketAddress.Family = .ipv4) async throws -> (Socket, Socket) {
    let (listener, address) = try makeListener(family)
    defer { listener.close() }
    let client = try Socket(family)
    client.timeout = .never
    try await client.connect(to: address, deadline: .now + .seconds(5))
    let (server, _) = try await listener.accept(deadline: .now + .seconds(5))
    server.timeout = .never
    return (client, server)
}

/// Sets SO_SNDBUF and SO_RCVBUF small on both ends, asserting the kernel took them, so that
/// a transfer fills the path after a known, machine-independent amount.
func smallBuffers(_ sockets: Socket...) throws {
    for socket in sockets {
        try socket.setOption(.sendBufferSize, 4096)
        try socket.setOption(.receiveBufferSize, 4096)
        #expect(try socket.option(.sendBufferSize) <= 16_384)
    }
}

/// The value of `task`, failing the test if it takes longer than `limit` (the task is then
/// cancelled, and its sockets should be closed by the caller).
func value<T: Sendable>(of task: Task<T, any Error>, within limit: Duration = .seconds(10)) async throws -> T {
    let watchdog = Task {
        try await Task.sleep(for: limit)
        task.cancel()
    }
    defer { watchdog.cancel() }
    let start = ContinuousClock.now
    let result = await task.result
    if ContinuousClock.now - start >= limit { throw TestFailure("task still running after \(limit)") }
    return try result.get()
}

/// Sleeps the task (for pacing a peer in a test: never a synchronisation).
func nap(_ duration: Duration) async {
    try? await Task.sleep(for: duration)
}

/// The descriptors open now, once every reactor has started (each holds an epoll instance
/// and an eventfd for the life of the process) and the concurrency runtime has made the
/// timerfd behind `Task.sleep`: neither is a test's leak.
func openDescriptorsAfterWarmUp() async throws -> Set<String> {
    for _ in 0..<Reactor.count { _ = try Reactor.next() }
    await nap(.milliseconds(1))
    return try openDescriptors()
}

/// Receives until end of stream and returns how many bytes came.
func byteCountUntilEndOfStream(_ socket: Socket, within limit: Duration = .seconds(10)) async throws -> Int {
    let deadline = ContinuousClock.now + limit
    var received = 0
    while true {
        let chunk = try await socket.receive(upTo: 65_536, deadline: deadline)
        if chunk.isEmpty { return received }
        received += chunk.count
    }
}

/// Closes `socket` from a task on `reactor` and meanwhile times a ping between two other
/// sockets of that reactor: how long the reactor was stalled, and how long `close()` took.
func reactorStall(closing socket: Socket, on reactor: Reactor) async throws -> (stalled: Duration, closeTook: Duration) {
    let (a, b) = try Socket.pair()
    defer { a.close(); b.close() }
    // a and b registered on the same reactor.
    try await Task(executorPreference: reactor) { try await a.sendAll([1]); _ = try await b.receive(exactly: 1) }.value
    let closer = Task(executorPreference: reactor) { () -> Duration in
        let start = ContinuousClock.now
        socket.close()
        return ContinuousClock.now - start
    }
    try await Task.sleep(for: .milliseconds(50))
    // A ping on the other sockets of that reactor, from a task on it.
    let start = ContinuousClock.now
    try await Task(executorPreference: reactor) { try await a.sendAll([2]); _ = try await b.receive(exactly: 1) }.value
    return (ContinuousClock.now - start, await closer.value)
}
