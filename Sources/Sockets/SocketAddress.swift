/// An IPv4 address, such as `127.0.0.1`.
public struct IPv4Address: Hashable, Sendable, CustomStringConvertible {
    /// The address as a 32-bit number in host byte order (`127.0.0.1` is `0x7F00_0001`).
    public var rawValue: UInt32

    /// Creates an address from its 32-bit value in host byte order.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Parses dotted-quad notation (`inet_pton(AF_INET)`); nil for anything else,
    /// including the shorthand forms `inet_aton` would accept (`127.1`).
    public init?(_ string: String) {
        guard let value = Sys.parseIPv4(string) else { return nil }
        rawValue = value
    }

    /// `127.0.0.1`.
    public static let loopback = IPv4Address(rawValue: 0x7F00_0001)
    /// `0.0.0.0`: every interface, when binding.
    public static let any = IPv4Address(rawValue: 0)

    /// Dotted-quad notation: `127.0.0.1`.
    public var description: String { Sys.formatIPv4(rawValue) }
}

/// An IPv6 address, such as `::1`.
public struct IPv6Address: Hashable, Sendable, CustomStringConvertible {
    /// The first 8 bytes of the address, as a big-endian number.
    public var high: UInt64
    /// The last 8 bytes of the address, as a big-endian number.
    public var low: UInt64

    /// Creates an address from its two halves, each read as a big-endian number.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Parses textual IPv6 notation (`inet_pton(AF_INET6)`), without brackets or scope.
    public init?(_ string: String) {
        guard let (h, l) = Sys.parseIPv6(string) else { return nil }
        high = h
        low = l
    }

    /// `::1`.
    public static let loopback = IPv6Address(high: 0, low: 1)
    /// `::`: every interface, when binding.
    public static let any = IPv6Address(high: 0, low: 0)

    /// Textual IPv6 notation, compressed: `::1`, `2001:db8::1`.
    public var description: String { Sys.formatIPv6(high: high, low: low) }
}

/// Where a socket is or connects: an IPv4 or IPv6 address with a port, or a Unix-domain path.
///
/// Prints as `127.0.0.1:1717`, `[::1]:80`, `[fe80::1%2]:80` or the path. Parse numeric
/// forms with ``init(_:)``; resolve host names with ``resolve(_:type:deadline:)-2ftla``.
public enum SocketAddress: Hashable, Sendable, CustomStringConvertible {
    /// An IPv4 address and port (`sockaddr_in`).
    case ipv4(IPv4Address, port: UInt16)
    /// An IPv6 address, port and scope (interface index; 0 for none) (`sockaddr_in6`).
    case ipv6(IPv6Address, port: UInt16, scopeID: UInt32 = 0)
    /// A Unix-domain socket path. An empty path is an unnamed socket (the peer of a
    /// `socketpair`, or a datagram sender that never bound).
    case unix(path: String)

    /// The address family of a socket: which kind of ``SocketAddress`` it uses.
    public enum Family: Hashable, Sendable, CustomStringConvertible {
        /// `AF_INET`.
        case ipv4
        /// `AF_INET6`.
        case ipv6
        /// `AF_UNIX`.
        case unix

        /// `IPv4`, `IPv6` or `Unix`.
        public var description: String {
            switch self {
            case .ipv4: "IPv4"
            case .ipv6: "IPv6"
            case .unix: "Unix"
            }
        }
    }

    /// The family of this address.
    public var family: Family {
        switch self {
        case .ipv4: .ipv4
        case .ipv6: .ipv6
        case .unix: .unix
        }
    }

    /// The port, or nil for a Unix-domain address.
    public var port: UInt16? {
        switch self {
        case .ipv4(_, let port), .ipv6(_, let port, _): port
        case .unix: nil
        }
    }

    /// The same address with another port (Unix-domain addresses are returned unchanged).
    public func withPort(_ port: UInt16) -> SocketAddress {
        switch self {
        case .ipv4(let a, _): .ipv4(a, port: port)
        case .ipv6(let a, _, let scope): .ipv6(a, port: port, scopeID: scope)
        case .unix: self
        }
    }

    /// `127.0.0.1:1717`, `[::1]:80`, `[fe80::1%2]:80`, the Unix path, or `(unnamed)` for an
    /// unnamed Unix socket.
    public var description: String {
        switch self {
        case .ipv4(let a, let port):
            return "\(a):\(port)"
        case .ipv6(let a, let port, let scope):
            return scope == 0 ? "[\(a)]:\(port)" : "[\(a)%\(scope)]:\(port)"
        case .unix(let path):
            return path.isEmpty ? "(unnamed)" : path
        }
    }

    /// Parses a numeric address without any lookup:
    /// `127.0.0.1:1717`, `[::1]:80`, `[fe80::1%lo]:80`, a Unix path containing `/`
    /// (`/tmp/app.sock`, `./app.sock`), or `unix:NAME` for any path.
    ///
    /// - Throws: ``SocketError`` of kind ``SocketError/Kind/invalidArgument`` naming what
    ///   is wrong: a missing or out-of-range port, a host that is not a numeric address
    ///   (resolve names with ``resolve(_:type:deadline:)-2ftla``), an IPv6 address without
    ///   brackets, or a Unix path that is too long or contains a NUL byte.
    public init(_ string: String) throws(SocketError) {
        if let path = SocketAddress.unixPath(in: string) {
            try SocketAddress.validateUnixPath(path, input: string)
            self = .unix(path: path)
            return
        }
        let (host, port) = try HostPort.split(string)
        guard let address = try SocketAddress.numeric(host: host, port: port, input: string) else {
            throw SocketError(
                .invalidArgument, .parse,
                detail: "'\(host)' in '\(string)' is not a numeric IP address (use SocketAddress.resolve for host names)")
        }
        self = address
    }

    /// Creates an IP address from a numeric host (`127.0.0.1`, `::1`, `fe80::1%lo`) and a
    /// port; nil when `host` is not numeric. Throws for a bad IPv6 scope.
    static func numeric(host: String, port: UInt16, input: String) throws(SocketError) -> SocketAddress? {
        if let v4 = IPv4Address(host) { return .ipv4(v4, port: port) }
        var addressPart = Substring(host)
        var scope: UInt32 = 0
        if let percent = host.firstIndex(of: "%") {
            addressPart = host[..<percent]
            let name = String(host[host.index(after: percent)...])
            guard let index = UInt32(name) ?? Sys.interfaceIndex(name), !name.isEmpty else {
                throw SocketError(.invalidArgument, .parse, detail: "unknown IPv6 scope '\(name)' in '\(input)'")
            }
            scope = index
        }
        if let v6 = IPv6Address(String(addressPart)) { return .ipv6(v6, port: port, scopeID: scope) }
        return nil
    }

    /// The path if `string` names a Unix-domain socket: `unix:PATH`, or anything with a `/`
    /// and no `[`/`:` host syntax in front of it.
    static func unixPath(in string: String) -> String? {
        if string.hasPrefix("unix:") { return String(string.dropFirst(5)) }
        if string.hasPrefix("/") || string.hasPrefix("./") || string.hasPrefix("../") { return string }
        return nil
    }

    static func validateUnixPath(_ path: String, input: String) throws(SocketError) {
        if path.isEmpty {
            throw SocketError(.invalidArgument, .parse, detail: "empty Unix socket path in '\(input)'")
        }
        if path.utf8.contains(0) {
            throw SocketError(.invalidArgument, .parse, detail: "Unix socket path contains a NUL byte")
        }
        let limit = Sys.maxUnixPathLength
        if path.utf8.count > limit {
            throw SocketError(
                .invalidArgument, .parse,
                detail: "Unix socket path is \(path.utf8.count) bytes; the limit on this OS is \(limit)")
        }
    }
}

/// Splitting `host:port` / `[v6]:port` text, shared by parsing and resolution.
package enum HostPort {
    package static func split(_ string: String) throws(SocketError) -> (host: String, port: UInt16) {
        func bad(_ why: String) -> SocketError {
            SocketError(.invalidArgument, .parse, detail: "\(why) in '\(string)' (expected HOST:PORT or [IPv6]:PORT)")
        }
        let host: Substring
        let portText: Substring
        if string.hasPrefix("[") {
            guard let close = string.firstIndex(of: "]") else { throw bad("missing ']'") }
            host = string[string.index(after: string.startIndex)..<close]
            let rest = string[string.index(after: close)...]
            guard rest.hasPrefix(":") else { throw bad("missing ':PORT' after ']'") }
            portText = rest.dropFirst()
        } else {
            guard let colon = string.lastIndex(of: ":") else { throw bad("missing ':PORT'") }
            host = string[..<colon]
            portText = string[string.index(after: colon)...]
            if host.contains(":") {
                throw bad("an IPv6 address needs brackets, as in [::1]:80,")
            }
        }
        if host.isEmpty { throw bad("empty host") }
        return (String(host), try parsePort(portText, input: string))
    }

    static func parsePort(_ text: Substring, input: String) throws(SocketError) -> UInt16 {
        guard !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw SocketError(.invalidArgument, .parse, detail: "port '\(text)' in '\(input)' is not a number from 0 to 65535")
        }
        guard let value = Int(text), value <= 65535 else {
            throw SocketError(.invalidArgument, .parse, detail: "port \(text) in '\(input)' is out of range 0-65535")
        }
        return UInt16(value)
    }
}
