extension Socket {
    /// Resolves `hostPort` and connects a new stream socket to it the way browsers do —
    /// Happy Eyeballs v2 (RFC 8305), as Go's `net.Dial` and SwiftNIO do — within **one**
    /// time limit for the whole call, name resolution included.
    ///
    /// The IPv6 (AAAA) and IPv4 (A) lookups start together, on the library's resolver
    /// threads; connecting starts as soon as the IPv6 answer is in, or 50 ms after the IPv4
    /// one if IPv6 is still awaited. Attempts alternate between the families, IPv6 first;
    /// the next starts when one fails or, while earlier ones are still under way, after
    /// `attemptDelay`; the first connection to complete wins and the others are closed.
    /// So an address that never answers (an IPv6 black hole) costs `attemptDelay`, not the
    /// timeout. Several attempts are waited on together with one `ppoll(2)`: no thread per
    /// attempt.
    ///
    /// - Parameters:
    ///   - hostPort: `HOST:PORT`, `[IPv6]:PORT`, or a Unix path (see ``SocketAddress/resolve(_:type:deadline:)-2ftla``).
    ///     A numeric address or a path is connected to directly.
    ///   - timeout: bounds the whole call and becomes the returned socket's ``timeout``;
    ///     ``SocketTimeout/never`` or a timed value, defaulting to the process
    ///     ``defaultTimeout``. Non-blocking is rejected: use ``connect(to:deadline:)-94vdi``.
    ///   - deadline: an absolute limit for the whole call; the earlier of the two wins.
    ///   - attemptDelay: how long an attempt has before the next one starts beside it (RFC
    ///     8305 recommends 250 ms; at least 10 ms).
    /// - Returns: the connected socket.
    /// - Throws: ``SocketError``. When every address fails, ``SocketError/attempts`` has
    ///   each one's own error and the message sums them up
    ///   (`connect to example.org:443 timed out after 5s: 2 addresses: [2001:db8::1]:443 timed out; 192.0.2.1:443 connection refused`);
    ///   the kind is `.timedOut` if the time ran out, else the most telling of them
    ///   (`.connectionRefused` before `.unreachable`). If no address came from the resolver
    ///   in time, the operation is `resolve`, not `connect`. Also `.nameResolution`,
    ///   `.invalidArgument`.
    public static func connect(
        to hostPort: String, timeout: SocketTimeout = Socket.defaultTimeout,
        deadline: ContinuousClock.Instant? = nil, attemptDelay: Duration = .milliseconds(250)
    ) throws(SocketError) -> Socket {
        switch try dialTarget(hostPort) {
        case .address(let address):
            return try connect(to: address, timeout: timeout, deadline: deadline)
        case .name(let host, let port):
            return try dial(target: hostPort, lookup: (host, port), addresses: [], timeout: timeout,
                            deadline: deadline, attemptDelay: attemptDelay)
        }
    }

    /// Connects a new stream socket to the first of `addresses` that accepts, with the
    /// algorithm of ``connect(to:timeout:deadline:attemptDelay:)-7qins`` (Happy
    /// Eyeballs v2): for addresses you resolved yourself. The families alternate, starting
    /// with the first address's; within a family the order is yours.
    ///
    /// - Throws: ``SocketError`` — as the by-name form (``SocketError/attempts`` has each
    ///   address's error); `.invalidArgument` for an empty list.
    public static func connect(
        to addresses: [SocketAddress], timeout: SocketTimeout = Socket.defaultTimeout,
        deadline: ContinuousClock.Instant? = nil, attemptDelay: Duration = .milliseconds(250)
    ) throws(SocketError) -> Socket {
        guard let first = addresses.first else {
            throw SocketError(.invalidArgument, .connect, detail: "no address to connect to")
        }
        if addresses.count == 1 { return try connect(to: first, timeout: timeout, deadline: deadline) }
        return try dial(target: dialTarget(addresses), lookup: nil, addresses: addresses, timeout: timeout,
                        deadline: deadline, attemptDelay: attemptDelay)
    }

    /// What `hostPort` names: an address to connect to directly, or a name to look up.
    enum DialTarget {
        case address(SocketAddress)
        case name(String, UInt16)
    }

    static func dialTarget(_ hostPort: String) throws(SocketError) -> DialTarget {
        if let path = SocketAddress.unixPath(in: hostPort) {
            try SocketAddress.validateUnixPath(path, input: hostPort)
            return .address(.unix(path: path))
        }
        let (host, port) = try HostPort.split(hostPort)
        if let numeric = try SocketAddress.numericOrName(host: host, port: port) { return .address(numeric) }
        return .name(host, port)
    }

    /// A list's name in messages: `[::1]:80, 127.0.0.1:80`, or the first and how many more.
    static func dialTarget(_ addresses: [SocketAddress]) -> String {
        addresses.count <= 3 ? addresses.map { "\($0)" }.joined(separator: ", ")
            : "\(addresses[0]) and \(addresses.count - 1) more addresses"
    }

    /// Connects a new socket to `address`: the one-call form of `Socket(address.family, type)`
    /// and ``connect(to:deadline:)-94vdi``, with the rules of ``connect(to:timeout:deadline:attemptDelay:)-7qins``:
    /// `timeout` bounds the connect and becomes the returned socket's ``timeout``;
    /// `deadline` can shorten the connect further.
    ///
    /// With `type: .datagram` the socket is a connected datagram socket (UDP, or a Unix
    /// datagram socket): its ``send(_:deadline:)-3lcjk`` goes to `address` and it receives only
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
        return timeout.end(from: start, deadline: deadline)
    }

    /// A timeout as the caller sees it: against the limit the caller gave — `timeout`
    /// ("timed out after 5s") or `deadline` ("the deadline passed") — not the share of it
    /// that resolution or one attempt had.
    static func asTheCallerSees(
        _ error: SocketError, timeout: SocketTimeout, deadline: ContinuousClock.Instant?, start: ContinuousClock.Instant
    ) -> SocketError {
        guard error.kind == .timedOut && error.timeout != .zero else { return error }
        let (allowed, cause) = timeout.limit(from: start, deadline: deadline)
        let seen = SocketError(timedOut: error.operation, after: allowed, cause, address: error.address)
        return error.detail.map { seen.with(detail: $0) } ?? seen
    }
}
