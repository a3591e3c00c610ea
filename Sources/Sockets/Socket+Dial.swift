extension Socket {
    /// Resolves `hostPort` and connects a new stream socket to the first of its addresses
    /// that accepts, like Python's `socket.create_connection` and Go's `net.Dial`.
    ///
    /// `timeout` bounds the **whole** call — name resolution included — and becomes the
    /// returned socket's ``timeout``; `deadline` can shorten it further. When the name has
    /// several addresses, each attempt gets a share of the time left (at least 2 s when
    /// there is that much, as Go does), so one silent address cannot use it all.
    ///
    /// - Parameters:
    ///   - hostPort: `HOST:PORT`, `[IPv6]:PORT`, or a Unix path (see ``SocketAddress/resolve(_:type:deadline:)``).
    ///   - timeout: ``SocketTimeout/never`` or a timed value; defaults to the process
    ///     ``defaultTimeout``. Non-blocking is rejected: use ``connect(to:deadline:)``.
    ///   - deadline: an absolute limit for the whole call.
    /// - Returns: the connected socket.
    /// - Throws: ``SocketError`` — the first address's error if all fail (`.connectionRefused`,
    ///   `.timedOut`, ...), `.nameResolution`, `.invalidArgument`.
    public static func connect(
        to hostPort: String, timeout: SocketTimeout = Socket.defaultTimeout,
        deadline: ContinuousClock.Instant? = nil
    ) throws(SocketError) -> Socket {
        let start = ContinuousClock.now
        let overall = try dialDeadline(hostPort, timeout: timeout, deadline: deadline, start: start)
        let addresses: [SocketAddress]
        do {
            addresses = try SocketAddress.resolve(hostPort, deadline: overall)
        } catch {
            throw asTheCallerSees(error, timeout: timeout, deadline: deadline, start: start)
        }
        var firstError: SocketError?
        for (index, address) in addresses.enumerated() {
            let attemptDeadline = overall.map { partialDeadline(overall: $0, addressesLeft: addresses.count - index) }
            do throws(SocketError) {
                let socket = try Socket(address.family, .stream)  // closes itself if connect throws
                socket.timeout = .never  // the attempt's deadline bounds the wait
                try socket.connect(to: address, deadline: attemptDeadline)
                socket.timeout = timeout
                return socket
            } catch {
                firstError = firstError ?? asTheCallerSees(error, timeout: timeout, deadline: deadline, start: start)
                if error.kind == .timedOut && attemptDeadline == overall { break }
            }
        }
        throw dialFailure(firstError, hostPort: hostPort, addressCount: addresses.count)
    }

    /// Connects a new socket to `address`: the one-call form of `Socket(address.family, type)`
    /// and ``connect(to:deadline:)``, with the rules of ``connect(to:timeout:deadline:)-(String,_,_)``:
    /// `timeout` bounds the connect and becomes the returned socket's ``timeout``;
    /// `deadline` can shorten the connect further.
    ///
    /// With `type: .datagram` the socket is a connected datagram socket (UDP, or a Unix
    /// datagram socket): its ``send(_:deadline:)`` goes to `address` and it receives only
    /// from there; connecting one never waits.
    ///
    /// - Throws: ``SocketError`` — `.connectionRefused`, `.timedOut`, `.unreachable`,
    ///   `.invalidArgument` (a non-blocking timeout), ...; the socket is closed.
    public static func connect(
        to address: SocketAddress, type: SocketType = .stream, timeout: SocketTimeout = Socket.defaultTimeout,
        deadline: ContinuousClock.Instant? = nil
    ) throws(SocketError) -> Socket {
        let start = ContinuousClock.now
        let overall = try dialDeadline("\(address)", timeout: timeout, deadline: deadline, start: start)
        let socket = try Socket(address.family, type)  // closes itself if connect throws
        socket.timeout = .never  // the overall deadline bounds the wait
        do throws(SocketError) {
            try socket.connect(to: address, deadline: overall)
        } catch {
            throw asTheCallerSees(error, timeout: timeout, deadline: deadline, start: start)
        }
        socket.timeout = timeout
        return socket
    }

    /// The whole call's deadline: the earlier of `deadline` and `start + timeout`.
    ///
    /// - Throws: `.invalidArgument` for a non-blocking timeout.
    static func dialDeadline(
        _ hostPort: String, timeout: SocketTimeout, deadline: ContinuousClock.Instant?, start: ContinuousClock.Instant
    ) throws(SocketError) -> ContinuousClock.Instant? {
        if timeout == .nonBlocking {
            throw SocketError(.invalidArgument, .connect,
                              detail: "connecting by name needs a blocking or timed socket, not a non-blocking one")
        }
        guard let d = timeout.duration else { return deadline }
        return min(deadline ?? start + d, start + d)
    }

    /// A timeout as the caller sees it: against the limit the caller gave — `timeout`
    /// ("timed out after 5s") or `deadline` ("the deadline passed") — not the share of it
    /// that resolution or one attempt had.
    static func asTheCallerSees(
        _ error: SocketError, timeout: SocketTimeout, deadline: ContinuousClock.Instant?, start: ContinuousClock.Instant
    ) -> SocketError {
        guard error.kind == .timedOut && error.timeout != .zero else { return error }
        let byTimeout = timeout.duration.map { d in deadline.map { start + d <= $0 } ?? true } ?? false
        let allowed = byTimeout ? timeout.duration : deadline.map { $0 - start }
        let seen = SocketError(timedOut: error.operation, after: allowed, byTimeout ? .timeout : .deadline, address: error.address)
        return error.detail.map { seen.with(detail: $0) } ?? seen
    }

    /// The error of a dial in which no address accepted: the first address's.
    static func dialFailure(_ first: SocketError?, hostPort: String, addressCount: Int) -> SocketError {
        let error = first ?? SocketError(.nameResolution, .connect, detail: "'\(hostPort)' gave no address")
        return addressCount > 1 ? error.with(detail: "\(addressCount) addresses for '\(hostPort)', first error shown") : error
    }

    /// Go's `partialDeadline`: the time left split evenly among the addresses still to
    /// try, but no less than 2 s while that much is left.
    static func partialDeadline(overall: ContinuousClock.Instant, addressesLeft: Int) -> ContinuousClock.Instant {
        let now = ContinuousClock.now
        let left = overall - now
        guard left > .zero, addressesLeft > 1 else { return overall }
        let share = left / addressesLeft
        let saneMinimum = Duration.seconds(2)
        if share < saneMinimum { return left < saneMinimum ? overall : now + saneMinimum }
        return now + share
    }
}
