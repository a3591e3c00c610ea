import Foundation
import Sockets
import Synchronization
import Testing

/// Counts what a run of operations did: how many were tried, and how each one ended.
private struct Tally {
    var operations = 0
    var outcomes: [String: Int] = [:]

    /// Runs one operation that must end in `expected` (nil: must succeed; several: any of them).
    mutating func run(
        _ expected: Set<SocketError.Kind?>, sourceLocation: SourceLocation = #_sourceLocation,
        _ body: () throws -> Void
    ) {
        var outcome: SocketError.Kind?
        do {
            try body()
        } catch let error as SocketError {
            outcome = error.kind
        } catch {
            Issue.record("not a SocketError: \(error)", sourceLocation: sourceLocation)
            return
        }
        record(outcome, expected: expected, sourceLocation: sourceLocation)
    }

    /// Counts an operation that ended in `outcome` (nil: success) on another thread.
    mutating func record(
        _ outcome: SocketError.Kind?, expected: Set<SocketError.Kind?>, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        operations += 1
        outcomes[outcome.map { "\($0)" } ?? "success", default: 0] += 1
        #expect(expected.contains(outcome), "ended in \(outcome.map { "\($0)" } ?? "success")", sourceLocation: sourceLocation)
    }

    mutating func run(_ expected: SocketError.Kind?, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
        run([expected], sourceLocation: sourceLocation, body)
    }

    var faults: Int { operations - (outcomes["success"] ?? 0) }
}

@Suite("fault suite: descriptor accounting", .serialized)
struct DescriptorAccountingTests {
    @Test("100,000 mixed operations — successes, refusals, timeouts, resets, peer closes, would-blocks, closes while waiting — leak no descriptor")
    func hundredThousandOperations() throws {
        // Counted before the long-lived sockets exist and compared after they are closed:
        // a socket's waker (the eventfd close() writes to) is made by its first wait in
        // poll and lives as long as the socket.
        let before = try openDescriptors()
        let (listener, address) = try makeListener(backlog: 128)
        let (holder, refused) = try refusingPort()
        let (idle, idlePeer) = try connectedPair()  // nothing is ever sent on it
        let udp = try Socket(.ipv6, .datagram)
        try udp.bind(to: .ipv6(.loopback, port: 0))
        let nonBlockingListener = try makeListener().0
        nonBlockingListener.timeout = .nonBlocking
        let longLived = [listener, holder, idle, idlePeer, udp, nonBlockingListener]
        defer { longLived.forEach { $0.close() } }

        var tally = Tally()
        let started = ContinuousClock.now
        let soon = { ContinuousClock.now + .microseconds(100) }
        for round in 0..<50_000 where tally.operations < 100_000 {
            if ContinuousClock.now - started > .seconds(300) { throw TestFailure("over 300 s at round \(round)") }
            // A connection that works end to end.
            let client = try Socket(.ipv4)
            tally.run(nil) { try client.connect(to: address, deadline: .now + .seconds(5)) }
            var accepted: Socket?
            tally.run(nil) { accepted = try listener.accept(deadline: .now + .seconds(5)).0 }
            guard let server = accepted else { break }
            tally.run(nil) { try client.sendAll([1, 2, 3], deadline: .now + .seconds(5)) }
            tally.run(nil) { _ = try server.receive(exactly: 3, deadline: .now + .seconds(5)) }
            switch round % 4 {
            case 0:  // the peer resets: receive and send fail, the process lives
                try server.setOption(.linger, .zero)
                server.close()
                tally.run(.connectionReset) { _ = try client.receive(upTo: 8, deadline: .now + .seconds(5)) }
                tally.run([.brokenPipe, .connectionReset]) { try client.sendAll([1], deadline: .now + .seconds(5)) }
            case 1:  // the peer closes: end of stream, then a receive(exactly:) that ends early
                server.close()
                tally.run(nil) {
                    guard try client.receive(upTo: 8, deadline: .now + .seconds(5)).isEmpty else { throw TestFailure("data after close") }
                }
                tally.run(.endOfStream) { _ = try client.receive(exactly: 1, deadline: .now + .seconds(5)) }
            case 2:  // half-close both ways, then a write on a shut-down side
                tally.run(nil) { try client.shutdown(.write) }
                tally.run(nil) {
                    guard try server.receive(upTo: 8, deadline: .now + .seconds(5)).isEmpty else { throw TestFailure("no EOF") }
                }
                tally.run(nil) { try server.sendAll([9], deadline: .now + .seconds(5)) }
                tally.run(nil) { _ = try client.receive(exactly: 1, deadline: .now + .seconds(5)) }
                tally.run(.brokenPipe) { try client.sendAll([1]) }
                server.close()
            default:  // closed from another thread while a receive waits on it
                if round % 100 == 3 {
                    let waiter = Background { () -> SocketError.Kind? in
                        do { _ = try server.receive(upTo: 8, deadline: .now + .seconds(10)); return nil } catch let e as SocketError {
                            return e.kind
                        }
                    }
                    pause(.microseconds(300))
                    server.close()
                    tally.record(try waiter.value(within: .seconds(5)), expected: [.closed])
                } else {
                    server.close()
                }
            }
            client.close()
            tally.run(.closed) { _ = try client.receive(upTo: 1) }

            // Refusals, at once, by address and by name.
            tally.run(.connectionRefused) { let s = try Socket(.ipv4); try s.connect(to: refused, deadline: .now + .seconds(5)) }
            if round % 8 == 0 {
                tally.run(.connectionRefused) { _ = try Socket.connect(to: "\(refused)", timeout: .after(.seconds(5))) }
            }
            // Timeouts: receive, accept, datagram receive, and a deadline already past.
            tally.run(.timedOut) { _ = try idle.receive(upTo: 8, deadline: soon()) }
            tally.run(.timedOut) { _ = try listener.accept(deadline: soon()) }
            tally.run(.timedOut) { _ = try udp.receiveDatagram(deadline: soon()) }
            tally.run(.timedOut) { try idle.sendAll([1], deadline: .now - .seconds(1)) }
            // Would-blocks.
            tally.run(.wouldBlock) { _ = try nonBlockingListener.accept() }
            idle.timeout = .nonBlocking
            tally.run(.wouldBlock) { _ = try idle.receive(upTo: 8) }
            idle.timeout = .never
            // Bad input.
            tally.run(.invalidArgument) { _ = try SocketAddress("127.0.0.1:65536") }
            tally.run(.invalidArgument) { _ = try idle.receive(upTo: -1) }
        }
        longLived.forEach { $0.close() }
        let leaked = try descriptorsLeaked(since: before)
        #expect(tally.operations >= 100_000)
        #expect(leaked.isEmpty, "leaked: \(leaked.sorted())")
        let kinds = tally.outcomes.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print("fault suite: \(tally.operations) operations, \(tally.faults) faults (\(kinds)); "
            + "\(leaked.count) descriptors leaked (\(before.count) open before); \(ContinuousClock.now - started)")
    }

    @Test("a child started with posix_spawn inherits none of the library's sockets")
    func closeOnExecAcrossSpawn() throws {
        let (listener, address) = try makeListener()
        let client = try Socket(.ipv4)
        try client.connect(to: address)
        let (accepted, _) = try listener.accept(deadline: .now + .seconds(5))
        let (a, b) = try Socket.pair()
        let (c, d) = try Socket.pair(.datagram)
        let udp = try Socket(.ipv6, .datagram)
        let unix = try Socket(.unix)
        // By name (resolve, then dial), but numeric: the listener is on 127.0.0.1 only, and
        // what "localhost" resolves to (::1 first, or only) depends on the machine.
        let byName = try Socket.connect(to: "127.0.0.1:\(address.port!)", timeout: .after(.seconds(5)), deadline: .now + .seconds(5))
        let sockets = [listener, client, accepted, a, b, c, d, udp, unix, byName]
        defer { sockets.forEach { $0.close() } }
        let ours = try Set(sockets.map { socket in try socket.withUnsafeDescriptor { try socketInode($0) } })
        #expect(ours.count == sockets.count)

        // The child lists what each of its descriptors is; sockets show as socket:[INODE].
        let listing = try spawnAndRead(["/bin/sh", "-c", "for f in /proc/$$/fd/*; do readlink \"$f\"; done"])
        let inherited = listing.split(separator: "\n").filter { ours.contains(String($0)) }
        #expect(listing.contains("pipe:["), "the child's listing looks wrong: \(listing)")
        #expect(inherited.isEmpty, "the child inherited \(inherited)")
    }
}

/// `socket:[INODE]`, as /proc shows the descriptor.
private func socketInode(_ fd: CInt) throws -> String {
    var info = stat()
    guard fstat(fd, &info) == 0 else { throw TestFailure("fstat failed") }
    return "socket:[\(info.st_ino)]"
}

/// Runs `arguments` with posix_spawn (no file actions but stdout onto a pipe, so only
/// descriptors without close-on-exec reach the child) and returns its standard output.
private func spawnAndRead(_ arguments: [String]) throws -> String {
    var pipeFDs: [CInt] = [0, 0]
    guard pipe(&pipeFDs) == 0 else { throw TestFailure("pipe failed") }
    for fd in pipeFDs { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }  // (pipe2 is hidden behind _GNU_SOURCE)
    defer { close(pipeFDs[0]) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
    var argv = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid = pid_t()
    let status = posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ)
    close(pipeFDs[1])
    guard status == 0 else { throw TestFailure("posix_spawn failed: \(status)") }
    var output = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 4096)
    let end = ContinuousClock.now + .seconds(10)
    while ContinuousClock.now < end {
        var pfd = pollfd(fd: pipeFDs[0], events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, 100) >= 0 else { continue }
        if pfd.revents == 0 { continue }
        let n = read(pipeFDs[0], &buffer, buffer.count)
        if n <= 0 { break }
        output += buffer.prefix(n)
    }
    var waitStatus: CInt = 0
    while waitpid(pid, &waitStatus, WNOHANG) == 0 && ContinuousClock.now < end { usleep(1000) }
    if ContinuousClock.now >= end {
        kill(pid, SIGKILL)
        waitpid(pid, &waitStatus, 0)
        throw TestFailure("child still running after 10 s; killed")
    }
    return String(decoding: output, as: UTF8.self)
}
