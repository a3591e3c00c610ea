import Foundation
import Sockets
import Synchronization
import Testing

/// Work on another thread, joined with a time limit so no test can hang on it.
final class Background<T: Sendable>: Sendable {
    private let result = Mutex<Result<T, any Error>?>(nil)
    private let done = DispatchSemaphore(value: 0)

    init(_ body: @escaping @Sendable () throws -> T) {
        Thread.detachNewThread { self.finish(Result { try body() }) }
    }

    private func finish(_ outcome: Result<T, any Error>) {
        result.withLock { $0 = outcome }
        done.signal()
    }

    /// The body's result; fails the test (by throwing) if it takes longer than `limit`.
    func value(within limit: Duration = .seconds(10)) throws -> T {
        let seconds = Double(limit.components.seconds) + Double(limit.components.attoseconds) / 1e18
        guard done.wait(timeout: .now() + seconds) == .success else {
            throw TestFailure("background work still running after \(limit)")
        }
        return try result.withLock { $0! }.get()
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A listening IPv4 (or IPv6) loopback socket on a free port.
func makeListener(_ family: SocketAddress.Family = .ipv4, backlog: Int = 16) throws -> (Socket, SocketAddress) {
    let server = try Socket(family)
    server.timeout = .never
    try server.bind(to: family == .ipv6 ? .ipv6(.loopback, port: 0) : .ipv4(.loopback, port: 0))
    try server.listen(backlog: backlog)
    return (server, try server.localAddress)
}

/// A connected TCP pair over loopback: (client, server side).
func connectedPair(_ family: SocketAddress.Family = .ipv4) throws -> (Socket, Socket) {
    let (listener, address) = try makeListener(family)
    defer { listener.close() }
    let client = try Socket(family)
    client.timeout = .never
    try client.connect(to: address)
    let (server, _) = try listener.accept(deadline: .now + .seconds(5))
    server.timeout = .never
    return (client, server)
}

/// A listener with a backlog of 0 whose queue has been filled, so that a further connect
/// hears nothing (Linux drops the SYN). Returns the listener, the fillers, the address.
/// `at`: the address to listen on (default 127.0.0.1, any port).
func fullQueueListener(at place: SocketAddress? = nil) throws -> (Socket, [Socket], SocketAddress) {
    let server: Socket
    let address: SocketAddress
    if let place {
        server = try Socket(place.family)
        try server.bind(to: place)
        try server.listen(backlog: 0)
        address = try server.localAddress
    } else {
        (server, address) = try makeListener(backlog: 0)
    }
    var fillers: [Socket] = []
    for _ in 0..<16 {
        let filler = try Socket(address.family)
        fillers.append(filler)
        // (A typed `do` with a filtered `catch` here hangs Swift 6.3's SIL optimizer.)
        let attempt = Result { () throws(SocketError) in try filler.connect(to: address, deadline: .now + .milliseconds(100)) }
        if case .failure(let error) = attempt {
            if error.kind == .timedOut { return (server, fillers, address) }
            throw error
        }
    }
    throw TestFailure("could not fill the accept queue in 16 connects")
}

/// A port on 127.0.0.1 that is bound (so nobody else takes it) but not listening:
/// connecting to it is refused. Keep the returned socket alive while using the port.
func refusingPort() throws -> (Socket, SocketAddress) {
    let holder = try Socket(.ipv4)
    try holder.bind(to: .ipv4(.loopback, port: 0))
    return (holder, try holder.localAddress)
}

/// Runs `body`, expecting a `SocketError` of `kind`; returns it and the time taken.
@discardableResult
func expectFailure(
    _ kind: SocketError.Kind, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) -> (SocketError?, Duration) {
    let start = ContinuousClock.now
    do {
        try body()
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

/// Timing rule for every test: never early (strict lower bound), and a generous upper
/// bound that a loaded 2-core machine still meets.
func expectTiming(
    _ elapsed: Duration, atLeast lower: Duration, slack: Duration = .milliseconds(1500),
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(elapsed >= lower, "fired early: \(elapsed) < \(lower)", sourceLocation: sourceLocation)
    #expect(elapsed < lower + slack, "far too late: \(elapsed) for \(lower)", sourceLocation: sourceLocation)
}

/// The descriptors this process has open, each as "NUMBER -> TARGET" (`socket:[INODE]`,
/// `pipe:[INODE]`, a path), so that a number reused for something else counts as new.
func openDescriptors() throws -> Set<String> {
    let directory = "/proc/self/fd"
    return Set(try FileManager.default.contentsOfDirectory(atPath: directory).compactMap { number in
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\(number)")).map { "\(number) -> \($0)" }
    })
}

/// What is open now that was not in `before`: the descriptors the code since then leaked.
/// Waits up to a second for closes that other threads still have on their way (a socket
/// whose last reference a finishing helper thread drops), so only a true leak remains.
func descriptorsLeaked(since before: Set<String>) throws -> Set<String> {
    var leaked = try openDescriptors().subtracting(before)
    for _ in 0..<100 where !leaked.isEmpty {
        pause(.milliseconds(10))
        leaked = try openDescriptors().subtracting(before)
    }
    return leaked
}

/// Lets (`SIG_UNBLOCK`) or stops (`SIG_BLOCK`) the calling thread taking `signal`. Threads
/// started from the test runner's workers inherit a mask that blocks signals, so a thread
/// that must be interrupted by one unblocks it first.
func setSignal(_ signal: CInt, _ how: CInt) {
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, signal)
    pthread_sigmask(how, &set, nil)
}

/// Sets the process default for the duration of `body`, restoring it afterwards.
func withDefaultTimeout<R>(_ timeout: SocketTimeout, _ body: () throws -> R) rethrows -> R {
    let saved = Socket.defaultTimeout
    Socket.defaultTimeout = timeout
    defer { Socket.defaultTimeout = saved }
    return try body()
}

/// Sleeps this thread.
func pause(_ duration: Duration) {
    Thread.sleep(forTimeInterval: Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
}
