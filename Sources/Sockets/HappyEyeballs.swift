// Connecting to a name, or to a list of addresses, the way browsers, Go's dialParallel and
// SwiftNIO's HappyEyeballsConnector do: RFC 8305, Happy Eyeballs v2, under the call's one
// deadline (resolution included).
//
// - The AAAA and A lookups start together (two family-specific getaddrinfo calls on the
//   shared resolver threads, ResolverPool.swift). Attempts begin as soon as the AAAA answer
//   is in, or 50 ms after the A answer if the AAAA one is still awaited (the "resolution
//   delay"); an answer that comes later joins the addresses still to try.
// - Attempts alternate between the families, IPv6 first (or, for a list, the first
//   address's family). The next attempt starts when the last one fails, or after the
//   "connection attempt delay" (250 ms by default) while the earlier ones are still under
//   way; the first to complete wins and every other is closed.
// - So a host whose IPv6 path is a black hole costs one attempt delay, not the timeout.
//
// The blocking dialer starts each connect without waiting and waits on all of them, and on
// the lookups, with one ppoll: no thread per attempt. The async one runs each attempt and
// lookup as a child task (each waits on the reactor) and a timer task for the delays.
// Both drive `EyeballsPlan`, which decides the order and the timing and does no I/O.
//
// When every attempt fails, the error says each address's outcome (`SocketError.attempts`,
// and a one-line summary in the message), its kind is the most telling of them (timed out
// if the deadline ended the call), and its operation the phase that used the time: `resolve`
// if no address came from the resolver in time, `connect` otherwise.

import SystemPackage

/// The order and timing of a Happy Eyeballs connect (RFC 8305), apart from any I/O.
struct EyeballsPlan {
    /// RFC 8305's recommended resolution delay: how long to wait for the AAAA answer once
    /// the A answer is in.
    static let resolutionDelay: Int64 = 50_000_000

    /// Addresses not tried yet, by family (Unix paths go with IPv4), in the order given.
    private var v6: [SocketAddress] = []
    private var v4: [SocketAddress] = []
    private var lastFamily: SocketAddress.Family?
    /// Lookups whose answers are awaited.
    private(set) var awaitingV6 = false
    private(set) var awaitingV4 = false
    /// When the A answer came while the AAAA one was still awaited.
    private var v4AnsweredAt: Int64?
    private(set) var started = 0

    /// A plan for `addresses` known already: interleaved, the first address's family first.
    init(_ addresses: [SocketAddress]) {
        for address in addresses { add(address) }
        if let first = addresses.first { lastFamily = first.family == .ipv6 ? .ipv4 : .ipv6 }
    }

    /// A plan whose addresses will come from an AAAA and an A lookup.
    init(resolving: Void) {
        (awaitingV6, awaitingV4) = (true, true)
    }

    private mutating func add(_ address: SocketAddress) {
        if address.family == .ipv6 { v6.append(address) } else { v4.append(address) }
    }

    /// A lookup answered (with no addresses if it failed) at `now`.
    mutating func answered(_ family: SocketAddress.Family, _ addresses: [SocketAddress], now: Int64) {
        for address in addresses { add(address) }
        if family == .ipv6 {
            awaitingV6 = false
        } else {
            awaitingV4 = false
            if awaitingV6 { v4AnsweredAt = now }
        }
    }

    var hasUntried: Bool { !v6.isEmpty || !v4.isEmpty }
    var resolving: Bool { awaitingV6 || awaitingV4 }

    /// When the first attempt may start if an address is there: at once, unless the A
    /// answer came and the AAAA one is still awaited (then 50 ms after the A answer).
    /// Nil: it must wait for an answer.
    var firstAttemptAt: Int64? {
        if started > 0 || !awaitingV6 { return .min }
        return v4AnsweredAt.map { $0 + EyeballsPlan.resolutionDelay }
    }

    /// When the dial must look again, at the latest `end`: when the next attempt may start
    /// beside those `underWay` (at `nextAttemptAt`), or the first one may.
    func wake(end: Int64, underWay: Bool, nextAttemptAt: Int64) -> Int64 {
        guard hasUntried else { return end }
        if underWay { return min(end, nextAttemptAt) }
        return firstAttemptAt.map { min(end, $0) } ?? end
    }

    /// The next address to try at `now`, if one may start: families alternate.
    mutating func next(now: Int64) -> SocketAddress? {
        guard hasUntried, let at = firstAttemptAt, now >= at else { return nil }
        started += 1
        let preferV6 = lastFamily != .ipv6
        if (preferV6 && !v6.isEmpty) || v4.isEmpty {
            lastFamily = .ipv6
            return v6.removeFirst()
        }
        lastFamily = .ipv4
        return v4.removeFirst()
    }
}

/// What a dial has seen so far, for its error.
struct DialRecord {
    let target: String
    let timeout: SocketTimeout
    let deadline: ContinuousClock.Instant?
    let start: ContinuousClock.Instant
    /// The addresses tried, in order, and the error of each that failed.
    var tried: [SocketAddress] = []
    var failures: [SocketAddress: SocketError] = [:]
    /// The lookups' failures (a name with no AAAA record fails one of them, normally).
    var lookupFailures: [SocketError] = []
    /// A lookup never started: all the resolver threads were busy.
    var lookupDetail: String?

    /// The error when the deadline has passed, with `awaiting` lookups still unanswered.
    func timedOut(awaiting: [SocketAddress.Family]) -> SocketError {
        let (allowed, cause) = timeout.limit(from: start, deadline: deadline)
        let unanswered = awaiting.isEmpty ? nil
            : "the \(awaiting.map { $0 == .ipv6 ? "AAAA" : "A" }.joined(separator: " and ")) lookup unanswered"
        if tried.isEmpty {
            var detail = "no address came from the resolver in time" + (unanswered.map { " (\($0))" } ?? "")
            if let lookupDetail { detail += "; \(lookupDetail)" }
            return SocketError(.timedOut, .resolve, target: target, errno: nil, timeout: allowed, cause: cause,
                               attempts: [], detail: detail)
        }
        let attempts = tried.map { failures[$0] ?? SocketError(timedOut: .connect, after: allowed, cause, address: $0) }
        if attempts.count == 1 && unanswered == nil { return attempts[0] }
        var detail = DialRecord.summary(attempts)
        if let unanswered { detail += "; \(unanswered)" }
        return SocketError(.timedOut, .connect, target: target, errno: nil, timeout: allowed, cause: cause,
                           attempts: attempts, detail: detail)
    }

    /// The error when every attempt failed before the deadline (or nothing could be tried).
    func allFailed() -> SocketError {
        if tried.isEmpty {
            if let failure = lookupFailures.first(where: { $0.kind != .nameResolution }) ?? lookupFailures.first {
                return failure
            }
            return SocketError(.nameResolution, .resolve, detail: "'\(target)' has no IPv4 or IPv6 address")
        }
        let attempts = tried.map { failures[$0] ?? SocketError(.closed, .connect, address: $0) }
        if attempts.count == 1 { return attempts[0] }
        let telling = DialRecord.mostTelling(attempts)
        return SocketError(telling.kind, .connect, target: target, errno: telling.errno, timeout: telling.timeout,
                           cause: telling.timeoutCause, attempts: attempts, detail: DialRecord.summary(attempts))
    }

    /// The kind that says most about a set of failures: a refusal (something answered)
    /// before a reset, an unreachable network, and the rest.
    static func mostTelling(_ errors: [SocketError]) -> SocketError {
        let order: [SocketError.Kind] = [.connectionRefused, .connectionReset, .connectionAborted, .unreachable,
                                         .permissionDenied, .addressNotAvailable]
        for kind in order { if let e = errors.first(where: { $0.kind == kind }) { return e } }
        return errors[0]
    }

    /// `2 addresses: [::1]:80 timed out; 127.0.0.1:80 connection refused`.
    static func summary(_ attempts: [SocketError]) -> String {
        "\(attempts.count) addresses: " + attempts.map { e in
            let outcome = e.kind == .system ? (e.errno.map { "\($0.symbolicName)" } ?? "failed") : "\(e.kind)"
            return e.address.map { "\($0) \(outcome)" } ?? outcome
        }.joined(separator: "; ")
    }
}

extension Socket {
    /// RFC 8305 allows no connection attempt delay under 10 ms.
    static func attemptDelayNanoseconds(_ delay: Duration) throws(SocketError) -> Int64 {
        guard delay >= .milliseconds(10) else {
            throw SocketError(.invalidArgument, .connect,
                              detail: "attemptDelay must be at least 10 ms (RFC 8305), got \(formatDuration(delay))")
        }
        return wholeNanoseconds(delay)
    }

    /// The two family lookups of a name, joined on the shared resolver threads.
    static func familyLookups(host: String, port: UInt16) throws(SocketError) -> [(SocketAddress.Family, ResolverPool.Lookup)] {
        let six = try ResolverPool.shared.join(ResolverPool.Key(host: host, port: port, type: SocketType.stream.rawValue, family: Sys.inet6))
        do throws(SocketError) {
            let four = try ResolverPool.shared.join(ResolverPool.Key(host: host, port: port, type: SocketType.stream.rawValue, family: Sys.inet))
            return [(.ipv6, six), (.ipv4, four)]
        } catch {
            ResolverPool.shared.leave(six)
            throw error
        }
    }

    /// A finished lookup's addresses (none if it failed, recorded in `record`).
    static func lookupAnswer(_ lookup: ResolverPool.Lookup, _ record: inout DialRecord) -> [SocketAddress] {
        switch lookup.result {
        case .success(let list):
            return list
        case .failure(let failure):
            record.lookupFailures.append(SocketAddress.lookupFailure(failure, host: lookup.key.host))
            return []
        case nil:
            return []
        }
    }

    private enum Start {
        case connected(Socket)
        case underWay(Socket)
        case failed(SocketError)
    }

    /// Starts a connect to `address` without waiting — but a Unix one, whose full listener
    /// answers EAGAIN (no connect under way to wait for), is made with the plain connect's
    /// paced retries, until it connects, fails or `until` (the dial's end) comes: the race
    /// waits for it (a local listener, where only a full queue can make it wait).
    private static func startAttempt(_ address: SocketAddress, until: Int64) -> Start {
        let socket: Socket
        do throws(SocketError) {
            socket = try Socket(address.family, .stream)
        } catch {
            return .failed(error.at(address))
        }
        if address.family == .unix {
            socket.timeout = .never
            let left = max(0, until - Sys.now())
            do throws(SocketError) {
                try socket.connect(to: address, deadline: until == .max ? nil : .now + .nanoseconds(left))
                return .connected(socket)
            } catch {
                socket.close()
                return .failed(error.at(address))
            }
        }
        socket.timeout = .nonBlocking
        do throws(SocketError) {
            try socket.connect(to: address)
            return .connected(socket)
        } catch {
            if error.kind == .wouldBlock && error.errno == .nowInProgress { return .underWay(socket) }
            socket.close()
            return .failed(error.at(address))
        }
    }

    /// The blocking Happy Eyeballs dial (see the comment at the top): `lookup` a name to
    /// resolve, or `addresses` known already.
    static func dial(
        target: String, lookup: (host: String, port: UInt16)?, addresses: [SocketAddress],
        timeout: SocketTimeout, deadline: ContinuousClock.Instant?, attemptDelay: Duration
    ) throws(SocketError) -> Socket {
        if Reactor.isReactorThread {  // its ppoll would stall every socket the reactor serves
            throw SocketError(.wouldBlock, .connect, detail: WaitBudget.reactorThreadDetail)
        }
        let start = ContinuousClock.now
        let overall = try dialDeadline(target, timeout: timeout, deadline: deadline, start: start)
        let delay = try attemptDelayNanoseconds(attemptDelay)
        let end: Int64 = overall.map { saturatingSum(Sys.now(), WaitBudget.nanosecondsLeft(until: $0) ?? 0) } ?? .max
        var record = DialRecord(target: target, timeout: timeout, deadline: deadline, start: start)
        var plan = lookup == nil ? EyeballsPlan(addresses) : EyeballsPlan(resolving: ())
        var lookups = try lookup.map { l throws(SocketError) in try familyLookups(host: l.host, port: l.port) } ?? []
        var underWay: [(socket: Socket, address: SocketAddress)] = []
        defer {
            for (_, l) in lookups { ResolverPool.shared.leave(l) }
            for attempt in underWay { attempt.socket.close() }  // the losers, or all of them
        }
        var nextAttemptAt = Int64.min
        while true {
            var now = Sys.now()
            if now >= end {
                record.lookupDetail = lookups.contains { !$0.1.started } ? "all the resolver threads were busy" : nil
                throw record.timedOut(awaiting: lookups.map(\.0))
            }
            while underWay.isEmpty || now >= nextAttemptAt, let address = plan.next(now: now) {
                record.tried.append(address)
                nextAttemptAt = saturatingSum(now, delay)
                switch startAttempt(address, until: end) {
                case .connected(let socket):
                    socket.timeout = timeout
                    return socket
                case .underWay(let socket):
                    underWay.append((socket, address))
                case .failed(let error):
                    record.failures[address] = error
                    nextAttemptAt = now  // a failure starts the next at once
                }
                now = Sys.now()
            }
            if underWay.isEmpty && !plan.hasUntried && lookups.isEmpty { throw record.allFailed() }
            let wake = plan.wake(end: end, underWay: !underWay.isEmpty, nextAttemptAt: nextAttemptAt)
            let fds = lookups.map(\.1.waiter.fd) + underWay.map(\.socket.fd)
            let events = lookups.map { _ in Sys.pollIn } + underWay.map { _ in Sys.pollOut }
            let revents: [Int16]
            switch Sys.poll(fds, events: events, nanoseconds: wake == .max ? nil : max(0, wake - now)) {
            case .success(let seen): revents = seen
            case .failure(let e) where e == .interrupted: continue
            case .failure(let e): throw SocketError(.connect, errno: e, detail: "waiting for '\(target)'")
            }
            now = Sys.now()
            // The attempts first: one that has connected wins even if a lookup answered too.
            for i in underWay.indices.reversed() where revents[lookups.count + i] != 0 {
                let (socket, address) = underWay.remove(at: i)
                // Writable and nothing else is connected; otherwise SO_ERROR says what happened.
                let outcome = revents[lookups.count + i] == Sys.pollOut ? nil : (try? socket.pendingError()) ?? nil
                if let outcome, outcome != .socketIsConnected {
                    socket.close()
                    record.failures[address] = SocketError(.connect, errno: outcome, address: address)
                    nextAttemptAt = now
                } else {
                    socket.timeout = timeout
                    return socket
                }
            }
            for i in lookups.indices.reversed() where revents[i] != 0 {
                let (family, lookup) = lookups.remove(at: i)
                plan.answered(family, lookupAnswer(lookup, &record), now: now)
                ResolverPool.shared.leave(lookup)
            }
        }
    }
}

/// What happened in an async dial's child task.
private enum DialEvent: Sendable {
    case answered(SocketAddress.Family, ResolverPool.Lookup?, SocketError?)
    case connected(Socket)
    case failed(SocketAddress, SocketError)
    case tick
}

extension Socket {
    /// The async Happy Eyeballs dial: each lookup and attempt a child task that waits on
    /// the reactor, and a timer task for the delays.
    nonisolated(nonsending) static func dialAsync(
        target: String, lookup: (host: String, port: UInt16)?, addresses: [SocketAddress],
        timeout: SocketTimeout, deadline: ContinuousClock.Instant?, attemptDelay: Duration
    ) async throws(SocketError) -> Socket {
        let cancelled = SocketError(.cancelled, .connect, detail: "'\(target)'")
        if Task.isCancelled { throw cancelled }
        let start = ContinuousClock.now
        let overall = try dialDeadline(target, timeout: timeout, deadline: deadline, start: start)
        let delay = try attemptDelayNanoseconds(attemptDelay)
        let end: Int64 = overall.map { saturatingSum(Sys.now(), WaitBudget.nanosecondsLeft(until: $0) ?? 0) } ?? .max
        let outcome = await withTaskGroup(of: DialEvent.self) { group -> Result<Socket, SocketError> in
            var record = DialRecord(target: target, timeout: timeout, deadline: deadline, start: start)
            var plan = lookup == nil ? EyeballsPlan(addresses) : EyeballsPlan(resolving: ())
            var awaiting: [SocketAddress.Family] = []
            if let lookup {
                for (family, af) in [(SocketAddress.Family.ipv6, Sys.inet6), (.ipv4, Sys.inet)] {
                    awaiting.append(family)
                    let key = ResolverPool.Key(host: lookup.host, port: lookup.port, type: SocketType.stream.rawValue, family: af)
                    group.addTask {
                        let lookup: ResolverPool.Lookup
                        do throws(SocketError) { lookup = try ResolverPool.shared.join(key) } catch { return .answered(family, nil, error) }
                        defer { ResolverPool.shared.leave(lookup) }
                        do throws(SocketError) {
                            _ = try await lookup.waiter.receive(upTo: 1, deadline: overall)
                            return .answered(family, lookup, nil)
                        } catch {
                            return .answered(family, lookup, error)
                        }
                    }
                }
            }
            var underWay = 0
            var nextAttemptAt = Int64.min
            var tickAt = Int64.max
            func finish(_ result: Result<Socket, SocketError>) async -> Result<Socket, SocketError> {
                group.cancelAll()
                for await event in group { if case .connected(let loser) = event { loser.close() } }
                return result
            }
            while true {
                var now = Sys.now()
                if Task.isCancelled { return await finish(.failure(cancelled)) }
                if now >= end { return await finish(.failure(record.timedOut(awaiting: awaiting))) }
                while underWay == 0 || now >= nextAttemptAt, let address = plan.next(now: now) {
                    record.tried.append(address)
                    nextAttemptAt = saturatingSum(now, delay)
                    underWay += 1
                    group.addTask {
                        do throws(SocketError) {
                            let socket = try Socket(address.family, .stream)  // closes itself if the connect fails
                            socket.timeout = .never  // the overall deadline bounds the wait
                            try await socket.connect(to: address, deadline: overall)
                            return .connected(socket)
                        } catch {
                            return .failed(address, error.at(address))
                        }
                    }
                    now = Sys.now()
                }
                if underWay == 0 && !plan.hasUntried && awaiting.isEmpty { return await finish(.failure(record.allFailed())) }
                let wake = plan.wake(end: end, underWay: underWay > 0, nextAttemptAt: nextAttemptAt)
                if wake < tickAt {
                    tickAt = wake
                    let instant = ContinuousClock.now + .nanoseconds(max(0, wake - Sys.now()))
                    group.addTask {
                        try? await Task.sleep(until: instant, clock: .continuous)
                        return .tick
                    }
                }
                guard let event = await group.next() else { continue }
                switch event {
                case .tick:
                    if Sys.now() >= tickAt { tickAt = .max }
                case .connected(let socket):
                    socket.timeout = timeout
                    return await finish(.success(socket))
                case .failed(let address, let error):
                    underWay -= 1
                    if error.kind == .cancelled { return await finish(.failure(cancelled)) }
                    if error.kind != .timedOut { record.failures[address] = error }
                    nextAttemptAt = Sys.now()
                case .answered(let family, let lookup, let error):
                    if let error, error.kind == .cancelled {
                        return await finish(.failure(cancelled))
                    }
                    if let error, error.kind == .timedOut {
                        // At the deadline: the next turn reports it, with this lookup unanswered.
                        if let lookup, !lookup.started { record.lookupDetail = "all the resolver threads were busy" }
                        continue
                    }
                    awaiting.removeAll { $0 == family }
                    if let error {
                        record.lookupFailures.append(error)
                        plan.answered(family, [], now: Sys.now())
                    } else if let lookup {
                        plan.answered(family, lookupAnswer(lookup, &record), now: Sys.now())
                    }
                }
            }
        }
        return try outcome.get()
    }
}
