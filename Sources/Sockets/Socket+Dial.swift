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
        if timeout == .nonBlocking {
            throw SocketError(.invalidArgument, .connect,
                              detail: "connecting by name needs a blocking or timed socket, not a non-blocking one")
        }
        let start = ContinuousClock.now
        var overall = deadline
        if let d = timeout.duration { overall = min(overall ?? start + d, start + d) }
        let addresses: [SocketAddress]
        do {
            addresses = try SocketAddress.resolve(hostPort, deadline: overall)
        } catch where error.kind == .timedOut && error.timeout != .zero {
            // Report the caller's allowance, not the resolver's share of it.
            throw SocketError(.timedOut, .resolve, timeout: overall.map { $0 - start }, detail: error.detail)
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
                // A timeout is reported against the caller's allowance, not this attempt's share.
                let reported = error.kind == .timedOut && error.timeout != .zero
                    ? SocketError(.timedOut, .connect, address: address, timeout: overall.map { $0 - start })
                    : error
                firstError = firstError ?? reported
                if error.kind == .timedOut && attemptDeadline == overall { break }
            }
        }
        let error = firstError ?? SocketError(.nameResolution, .connect, detail: "'\(hostPort)' gave no address")
        throw addresses.count > 1 ? error.with(detail: "\(addresses.count) addresses for '\(hostPort)', first error shown") : error
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
