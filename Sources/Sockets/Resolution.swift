
extension SocketAddress {
    /// Resolves `HOST:PORT` (`localhost:80`, `example.org:443`, `[::1]:80`,
    /// `127.0.0.1:1717`) or a Unix path into the addresses to try, in the resolver's order.
    ///
    /// Numeric addresses and paths are returned without any lookup. Names go through
    /// `getaddrinfo(3)`, which has no timeout of its own; with a `deadline` the lookup runs
    /// on one of the library's resolver threads and this call gives up at the deadline (the
    /// lookup finishes in the background, and a caller who asks for the same name meanwhile
    /// waits on it rather than start another). At most 8 such threads run at once, however
    /// many lookups hang: a lookup that finds them all busy waits its turn, and if its
    /// deadline comes first the error says it never started. Without a deadline the lookup
    /// runs on the caller's thread, for as long as the system resolver takes.
    ///
    /// - Throws: ``SocketError`` — `.invalidArgument` for malformed text (naming what is
    ///   wrong), `.nameResolution` when the name does not resolve, `.timedOut` at the deadline.
    public static func resolve(
        _ hostPort: String, type: SocketType = .stream, deadline: ContinuousClock.Instant? = nil
    ) throws(SocketError) -> [SocketAddress] {
        if let path = unixPath(in: hostPort) {
            try validateUnixPath(path, input: hostPort)
            return [.unix(path: path)]
        }
        let (host, port) = try HostPort.split(hostPort)
        return try resolve(host: host, port: port, type: type, deadline: deadline)
    }

    /// Resolves `host` (a name or a numeric address, IPv6 without brackets) with `port`.
    /// See ``resolve(_:type:deadline:)-2ftla``.
    public static func resolve(
        host: String, port: UInt16, type: SocketType = .stream, deadline: ContinuousClock.Instant? = nil
    ) throws(SocketError) -> [SocketAddress] {
        if let numeric = try numericOrName(host: host, port: port) { return [numeric] }
        if let deadline {
            return try addresses(try lookUp(host: host, port: port, type: type, deadline: deadline), host: host)
        }
        return try addresses(Sys.getAddrInfo(host: host, port: port, type: type.rawValue), host: host)
    }

    /// The address if `host` is numeric, nil if it is a name to look up.
    ///
    /// - Throws: `.invalidArgument` for an empty host or one with a NUL byte.
    static func numericOrName(host: String, port: UInt16) throws(SocketError) -> SocketAddress? {
        if host.isEmpty || host.utf8.contains(0) {
            throw SocketError(.invalidArgument, .resolve, detail: "host name is empty or contains a NUL byte")
        }
        return try numeric(host: host, port: port, input: host)
    }

    /// What `getaddrinfo` answered, as addresses or the error.
    /// The error of a failed `getaddrinfo`, naming the host.
    static func lookupFailure(_ failure: Sys.ResolveFailure, host: String) -> SocketError {
        SocketError(.nameResolution, .resolve, errno: failure.errno, detail: "'\(host)': \(failure.message)")
    }

    private static func addresses(_ outcome: Result<[SocketAddress], Sys.ResolveFailure>, host: String) throws(SocketError) -> [SocketAddress] {
        switch outcome {
        case .success(let list) where !list.isEmpty:
            return list
        case .success:
            throw SocketError(.nameResolution, .resolve, detail: "'\(host)' has no IPv4 or IPv6 address")
        case .failure(let failure):
            throw lookupFailure(failure, host: host)
        }
    }

    /// getaddrinfo on a resolver thread (ResolverPool.swift), waited for until `deadline`.
    private static func lookUp(
        host: String, port: UInt16, type: SocketType, deadline: ContinuousClock.Instant
    ) throws(SocketError) -> Result<[SocketAddress], Sys.ResolveFailure> {
        guard deadline > .now else {
            throw SocketError(timedOut: .resolve, after: .zero, .deadline).with(detail: "'\(host)'")
        }
        let key = ResolverPool.Key(host: host, port: port, type: type.rawValue, family: Sys.anyFamily)
        return try ResolverPool.shared.answer(key, deadline: deadline)
    }
}

extension SocketAddress {
    /// Resolves `HOST:PORT` or a Unix path, suspending rather than blocking: the async form
    /// of ``resolve(_:type:deadline:)-2ftla``. A name is looked up by `getaddrinfo(3)` on one of
    /// the library's resolver threads (shared and bounded, as in the blocking form),
    /// whatever the deadline, so no task's thread is held by the resolver; cancelling the
    /// task or passing the deadline ends the wait (the lookup finishes in the background).
    ///
    /// - Throws: ``SocketError`` — `.invalidArgument`, `.nameResolution`, `.timedOut`, `.cancelled`.
    public nonisolated(nonsending) static func resolve(
        _ hostPort: String, type: SocketType = .stream, deadline: ContinuousClock.Instant? = nil
    ) async throws(SocketError) -> [SocketAddress] {
        if let path = unixPath(in: hostPort) {
            try validateUnixPath(path, input: hostPort)
            return [.unix(path: path)]
        }
        let (host, port) = try HostPort.split(hostPort)
        if let numeric = try numericOrName(host: host, port: port) { return [numeric] }
        if let deadline, deadline <= .now {
            throw SocketError(timedOut: .resolve, after: .zero, .deadline).with(detail: "'\(host)'")
        }
        if Task.isCancelled { throw SocketError(.cancelled, .resolve, detail: "'\(host)'") }
        // The wait is an ordinary async receive: the reactor's timer, cancellation, the same errors.
        let key = ResolverPool.Key(host: host, port: port, type: type.rawValue, family: Sys.anyFamily)
        let answer = try await ResolverPool.shared.answer(key, deadline: deadline)
        return try addresses(answer, host: host)
    }
}
