// Name lookups that a deadline can bound, on a few shared threads.
//
// getaddrinfo(3) has no timeout, so a lookup bounded by a deadline runs on another thread
// and the caller waits for it with the library's own wait: each lookup has a socket pair
// whose far end its thread closes when the answer is in, so every caller waiting on the near
// end (blocking or async, any number of them) reads end of stream at once.
//
// What a dead DNS server must not do is pile up threads: a caller that gives up leaves its
// getaddrinfo running (nothing can stop it), and one thread per lookup would leave one
// blocked thread per attempt. So:
// - at most `threadLimit` threads run lookups, shared by every caller; the rest wait in a
//   queue, in order;
// - a lookup in flight (queued or running) for the same host, port, type and family is
//   joined, not repeated: the next caller of a name whose lookup timed out for the last one
//   waits on the same getaddrinfo;
// - a queued lookup that every caller has given up on is dropped before it runs;
// - a caller whose deadline passes while its lookup is still queued is told so: all the
//   threads were busy, the lookup never started.
// Threads exit when the queue is empty: none lingers idle.

import SystemPackage

final class ResolverPool: Sendable {
    static let shared = ResolverPool(threadLimit: 8)

    /// The most threads that run lookups at once.
    let threadLimit: Int

    struct Key: Hashable {
        let host: String
        let port: UInt16
        let type: CInt
        let family: CInt
    }

    /// One lookup, shared by the callers that want the same answer.
    final class Lookup: Sendable {
        let key: Key
        /// Reads end of stream once the answer is in (its peer, `done`, is closed then).
        let waiter: Socket
        let done: Socket
        /// The answer and whether a thread has taken the lookup, under the pool's lock.
        let state = Locked<(result: Result<[SocketAddress], Sys.ResolveFailure>?, started: Bool)>((nil, false))

        init(_ key: Key) throws(SocketError) {
            self.key = key
            (waiter, done) = try Socket.pair()
            waiter.timeout = .never
        }

        var result: Result<[SocketAddress], Sys.ResolveFailure>? { state.withLock { $0.result } }
        var started: Bool { state.withLock { $0.started } }
    }

    private struct State {
        var lookups: [Key: Lookup] = [:]
        /// How many callers wait on each lookup in `lookups`.
        var interest: [Key: Int] = [:]
        var queue: [Lookup] = []
        var threads = 0
    }

    private let state = Locked(State())

    init(threadLimit: Int) { self.threadLimit = threadLimit }

    /// The lookup for `key`, joined if one is in flight, else queued (and a thread started
    /// if fewer than `threadLimit` run). Balance with ``leave(_:)``.
    func join(_ key: Key) throws(SocketError) -> Lookup {
        let fresh = try state.withLock { s throws(SocketError) -> (Lookup, startThread: Bool) in
            if let existing = s.lookups[key] {
                s.interest[key, default: 0] += 1
                return (existing, false)
            }
            let lookup = try Lookup(key)
            s.lookups[key] = lookup
            s.interest[key] = 1
            s.queue.append(lookup)
            guard s.threads < threadLimit else { return (lookup, false) }
            s.threads += 1
            return (lookup, true)
        }
        if fresh.startThread && !Sys.spawnDetached({ self.work() }) {
            // No thread: the lookup fails for every caller who joined it meanwhile, too.
            let lookup = fresh.0
            state.withLock { s in
                s.threads -= 1
                s.queue.removeAll { $0 === lookup }
                if s.lookups[key] === lookup { (s.lookups[key], s.interest[key]) = (nil, nil) }
                lookup.state.withLock { $0.result = .failure(Sys.ResolveFailure(message: "no thread for the resolver", errno: nil)) }
            }
            lookup.done.close()
            throw SocketError(.system, .resolve, detail: "'\(key.host)': no thread for the resolver")
        }
        return fresh.0
    }

    /// A caller is done with `lookup` (answered, or gave up). A queued lookup nobody waits
    /// for any more is dropped before it runs.
    func leave(_ lookup: Lookup) {
        state.withLock { s in
            guard s.lookups[lookup.key] === lookup, let count = s.interest[lookup.key] else { return }
            if count > 1 { s.interest[lookup.key] = count - 1; return }
            s.interest[lookup.key] = 0
            if !lookup.started, let i = s.queue.firstIndex(where: { $0 === lookup }) {
                s.queue.remove(at: i)
                s.lookups[lookup.key] = nil
                s.interest[lookup.key] = nil
            }
        }
    }

    /// How many threads run lookups now (for tests).
    var threadCount: Int { state.withLock { $0.threads } }

    /// A thread's life: take the next queued lookup, run it, publish its answer; exit when
    /// the queue is empty.
    private func work() {
        while true {
            let next = state.withLock { s -> Lookup? in
                guard !s.queue.isEmpty else {
                    s.threads -= 1
                    return nil
                }
                let lookup = s.queue.removeFirst()
                lookup.state.withLock { $0.started = true }
                return lookup
            }
            guard let lookup = next else { return }
            let key = lookup.key
            let answer = Sys.getAddrInfo(host: key.host, port: key.port, type: key.type, family: key.family)
            state.withLock { s in
                lookup.state.withLock { $0.result = answer }
                // Answered: the next caller asks afresh (no caching beyond the lookup's life).
                if s.lookups[key] === lookup {
                    s.lookups[key] = nil
                    s.interest[key] = nil
                }
            }
            lookup.done.close()  // every waiter reads end of stream
        }
    }
}

extension ResolverPool {
    /// Waits for `key`'s answer until `deadline`: joins (or starts) the lookup and waits on
    /// it with a blocking receive.
    ///
    /// - Throws: `.timedOut` (phase `resolve`; the detail says if the lookup never started
    ///   because every thread was busy), `.closed`, `.system` (no thread).
    func answer(_ key: Key, deadline: ContinuousClock.Instant) throws(SocketError) -> Result<[SocketAddress], Sys.ResolveFailure> {
        let lookup = try join(key)
        defer { leave(lookup) }
        let started = ContinuousClock.now
        do throws(SocketError) {
            _ = try lookup.waiter.receive(upTo: 1, deadline: deadline)
        } catch {
            throw failure(error, lookup, allowed: deadline - started)
        }
        return lookup.result ?? .failure(Sys.ResolveFailure(message: "no answer", errno: nil))
    }

    /// The async form of ``answer(_:deadline:)``: the wait is an async receive (the reactor's
    /// timer, cancellation), never a blocked thread of the caller's.
    nonisolated(nonsending) func answer(_ key: Key, deadline: ContinuousClock.Instant?) async throws(SocketError) -> Result<[SocketAddress], Sys.ResolveFailure> {
        let lookup = try join(key)
        defer { leave(lookup) }
        let started = ContinuousClock.now
        do throws(SocketError) {
            _ = try await lookup.waiter.receive(upTo: 1, deadline: deadline)
        } catch {
            throw failure(error, lookup, allowed: deadline.map { $0 - started })
        }
        return lookup.result ?? .failure(Sys.ResolveFailure(message: "no answer", errno: nil))
    }

    private func failure(_ error: SocketError, _ lookup: Lookup, allowed: Duration?) -> SocketError {
        let host = "'\(lookup.key.host)'"
        guard error.kind == .timedOut else { return SocketError(error.kind, .resolve, detail: host) }
        let timedOut = SocketError(timedOut: .resolve, after: allowed, .deadline)
        if lookup.started { return timedOut.with(detail: host) }
        return timedOut.with(detail: "\(host): never looked up: all \(threadLimit) resolver threads were busy with slower lookups")
    }
}
