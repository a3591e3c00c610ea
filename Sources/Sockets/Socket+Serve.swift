import SystemPackage

// An accept loop for async code: each connection handled in its own task, on the reactor
// its socket is registered with (so a connection's task runs where its wake-ups happen),
// with an optional limit on concurrent connections, back-off at the descriptor limit, and
// a graceful shutdown.
//
// Why unstructured tasks, tracked here, and not a task group: a task group passes the
// server's cancellation to every child at once, so no connection could finish its work
// after the server was told to stop. The tasks are still owned: `serve` returns only after
// every one of them has ended, and a connection is handed to its task in the step that
// accepted it, so none is ever accepted and left unserved.

/// What a server run by ``Socket/serve(maxConnections:connectionTimeout:gracePeriod:events:handler:)``
/// reports as it goes, for a log.
public enum ServerEvent: Sendable {
    /// accept failed for want of resources (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`); the
    /// server tries again after `retryIn` (5 ms, doubling to 1 s while it goes on failing).
    case backingOff(SocketError, retryIn: Duration)
    /// accept succeeded again after backing off.
    case acceptingAgain
    /// A connection's handler threw `error` (the connection was then closed).
    case handlerFailed(peer: SocketAddress, error: any Error)
}

extension Socket {
    /// Accepts connections on this listening socket and runs `handler` for each in its own
    /// task, until the task calling `serve` is cancelled, the listener is closed, or accept
    /// fails with an error that is not about resources. Then it closes the listener (as Go's
    /// `http.Server.Serve` does: clients that connect later are refused rather than left
    /// waiting in a queue nobody reads) and shuts down gracefully.
    ///
    /// Each connection's task runs on a reactor (see ``Reactor``), the connections spread
    /// over them; when `handler` returns or throws, the connection is closed. An error the
    /// handler throws ends only its connection, and is reported through `events`.
    ///
    /// - At the descriptor limit (`EMFILE`, `ENFILE`, or `ENOBUFS`/`ENOMEM`) the loop backs
    ///   off — 5 ms, doubling to 1 s — and accepts again; the connections stay queued.
    /// - With `maxConnections`, no connection is accepted while that many are being served;
    ///   the rest wait in the listen queue.
    /// - Graceful shutdown: cancelling the task that called `serve` stops accepting at once
    ///   (a connection already accepted is still served), lets the connections run on for
    ///   `gracePeriod`, then closes those still open — their socket calls fail with
    ///   ``SocketError/Kind/closed`` — and cancels their tasks (so what else they await may
    ///   fail with a cancellation error), and returns once every connection's task has
    ///   ended. Connections are never cancelled by the server's cancellation itself.
    ///
    /// The listener's own ``timeout`` applies to each accept: a listener with a timeout
    /// stops serving (gracefully, as above) and throws `.timedOut` after that long without
    /// a new connection. A listener created after ``defaultTimeout`` was set has that
    /// timeout: set `listener.timeout = .never` to serve for as long as it takes.
    ///
    /// - Parameters:
    ///   - maxConnections: the most connections served at once (nil: no limit).
    ///   - connectionTimeout: the ``timeout`` each connection gets (nil: the process
    ///     ``defaultTimeout``, as for any accepted socket): with a timed value, a peer silent
    ///     that long fails the waiting call with `.timedOut` — an idle timeout.
    ///   - gracePeriod: how long connections may run on after the server is cancelled.
    ///   - events: called when the server backs off at the descriptor limit, when it
    ///     accepts again, and when a handler throws, for a log. It may be called from any
    ///     task, concurrently.
    ///   - handler: serves one connection: the socket and the peer's address.
    ///
    /// It returns when the server was cancelled or the listener closed, once every
    /// connection has ended.
    ///
    /// - Throws: ``SocketError`` — the accept error that stopped the server (`.timedOut`,
    ///   `.invalidArgument` for a socket that is not listening, ...), after the same
    ///   shutdown.
    public nonisolated(nonsending) func serve(
        maxConnections: Int? = nil,
        connectionTimeout: SocketTimeout? = nil,
        gracePeriod: Duration = .seconds(5),
        events: (@Sendable (ServerEvent) -> Void)? = nil,
        handler: @escaping @Sendable (Socket, SocketAddress) async throws -> Void
    ) async throws(SocketError) {
        if let maxConnections, maxConnections < 1 {
            throw SocketError(.invalidArgument, .accept, detail: "maxConnections must be at least 1, got \(maxConnections)")
        }
        if gracePeriod < .zero {
            throw SocketError(.invalidArgument, .accept, detail: "gracePeriod must not be negative")
        }
        let reactor: Reactor
        if let current = Reactor.current { reactor = current } else { reactor = try Reactor.next() }
        let connections = Connections()
        var failure: SocketError?
        var backoff: Int64 = 0
        accepting: while true {
            if let maxConnections {
                // Wait for a free place; cancellation stops the server, and so does close().
                while !isClosed, let alarm = connections.alarmIfAtLeast(maxConnections, on: reactor) {
                    ringOnClose(alarm)
                    let wake = await alarm.wait(until: .max)
                    connections.consumed(alarm)
                    if wake == .cancelled { break accepting }
                }
            }
            do throws(SocketError) {
                let (connection, peer) = try await accept()
                if backoff != 0 { events?(.acceptingAgain) }
                backoff = 0
                if let connectionTimeout { connection.timeout = connectionTimeout }
                // Handed over in the step that accepted it: no await between the two.
                let home: Reactor
                do throws(SocketError) { home = try Reactor.next() } catch { home = reactor }
                connections.start(connection, on: home) {
                    do {
                        try await handler(connection, peer)
                    } catch {
                        events?(.handlerFailed(peer: peer, error: error))
                    }
                }
            } catch {
                let outOfResources = error.kind == .tooManyOpenFiles || error.errno == .noBufferSpace || error.errno == .noMemory
                switch error.kind {
                case .cancelled, .closed:
                    break accepting
                case _ where outOfResources:
                    // The retry is on a timer: an edge-triggered listener brings no new event
                    // for connections already queued.
                    backoff = backoff == 0 ? 5_000_000 : min(backoff * 2, 1_000_000_000)
                    events?(.backingOff(error, retryIn: .nanoseconds(backoff)))
                    let alarm = Alarm(on: reactor)
                    ringOnClose(alarm)  // a close() ends the back-off at once
                    if await alarm.wait(until: saturatingSum(Sys.now(), backoff)) == .cancelled {
                        break accepting
                    }
                case .connectionAborted:
                    continue
                default:
                    failure = error
                    break accepting
                }
            }
        }
        close()
        await connections.shutDown(grace: wholeNanoseconds(gracePeriod), on: reactor)
        if let failure { throw failure }
    }
}

extension Socket {
    /// Rings `alarm` when this (registered) socket is closed.
    fileprivate func ringOnClose(_ alarm: Alarm) {
        if let registration = state.withLock({ $0.registration }) { registration.reactor.ringOnClose(registration, alarm) }
    }
}

/// The connections a server is serving, and the alarms that wait on their number.
private final class Connections: Sendable {
    private struct State {
        var live: [ObjectIdentifier: (socket: Socket, task: Task<Void, Never>?)] = [:]
        /// Rung when a connection ends: a place came free, or the last one ended.
        var alarm: Alarm?
    }

    private let state = Locked(State())

    /// Starts `body` in a task on `reactor` for `connection`, then closes the connection.
    func start(_ connection: Socket, on reactor: Reactor, _ body: @escaping @Sendable () async -> Void) {
        let key = ObjectIdentifier(connection)
        state.withLock { $0.live[key] = (connection, nil) }
        let task = Task(executorPreference: reactor) { [self] in
            await body()
            connection.close()
            finished(key)
        }
        state.withLock { s in
            if s.live[key] != nil { s.live[key]!.task = task }  // else it has already ended
        }
    }

    private func finished(_ key: ObjectIdentifier) {
        let alarm = state.withLock { s -> Alarm? in
            s.live[key] = nil
            defer { s.alarm = nil }
            return s.alarm
        }
        alarm?.ring()
    }

    /// Forgets `alarm` once a wait on it has ended: an alarm rings once, so a rung one would
    /// end every later wait at once.
    func consumed(_ alarm: Alarm) {
        state.withLock { s in
            if s.alarm === alarm { s.alarm = nil }
        }
    }

    /// An alarm rung when a connection ends, if at least `count` are live; nil otherwise.
    func alarmIfAtLeast(_ count: Int, on reactor: Reactor) -> Alarm? {
        state.withLock { s -> Alarm? in
            guard s.live.count >= count else { return nil }
            if let alarm = s.alarm { return alarm }
            let alarm = Alarm(on: reactor)
            s.alarm = alarm
            return alarm
        }
    }

    /// Waits up to `grace` nanoseconds for every connection to end (the server's task may be
    /// cancelled: these waits are not), then closes and cancels the rest and waits for them.
    func shutDown(grace: Int64, on reactor: Reactor) async {
        let end = saturatingSum(Sys.now(), grace)
        while let alarm = alarmIfAtLeast(1, on: reactor) {
            let wake = await alarm.wait(until: end, cancellable: false)
            consumed(alarm)
            if wake == .timer { break }
        }
        let rest = state.withLock { Array($0.live.values) }
        for (socket, task) in rest {
            socket.close()
            task?.cancel()
        }
        while let alarm = alarmIfAtLeast(1, on: reactor) {
            _ = await alarm.wait(until: .max, cancellable: false)
            consumed(alarm)
        }
    }
}
