// Conversions between `SocketAddress` and the C `sockaddr_*` structures, and the
// textual address functions (inet_pton / inet_ntop / if_nametoindex).

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension SocketAddress.Family {
    /// The `AF_*` constant.
    var domain: CInt {
        switch self {
        case .ipv4: AF_INET
        case .ipv6: AF_INET6
        case .unix: AF_UNIX
        }
    }
}

extension SocketAddress {
    /// Reads a `sockaddr_storage` the kernel filled in (`length` bytes of it).
    init(storage: sockaddr_storage, length: socklen_t) {
        let family = CInt(storage.ss_family)
        self = withUnsafeBytes(of: storage) { raw -> SocketAddress in
            switch family {
            case AF_INET:
                let sin = raw.load(as: sockaddr_in.self)
                return .ipv4(IPv4Address(rawValue: UInt32(bigEndian: sin.sin_addr.s_addr)),
                             port: UInt16(bigEndian: sin.sin_port))
            case AF_INET6:
                let sin6 = raw.load(as: sockaddr_in6.self)
                let (h, l) = withUnsafeBytes(of: sin6.sin6_addr) { b in
                    (UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                     UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
                }
                return .ipv6(IPv6Address(high: h, low: l), port: UInt16(bigEndian: sin6.sin6_port),
                             scopeID: sin6.sin6_scope_id)
            case AF_UNIX:
                let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)!
                let count = max(0, Int(length) - pathOffset)
                let bytes = raw[pathOffset..<(pathOffset + min(count, MemoryLayout<sockaddr_un>.size - pathOffset))]
                let path = bytes.prefix { $0 != 0 }
                return .unix(path: String(decoding: path, as: UTF8.self))
            default:
                return .unix(path: "")
            }
        }
    }

    /// Calls `body` with this address as a C `sockaddr` and its length.
    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        switch self {
        case .ipv4(let address, let port):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr = in_addr(s_addr: address.rawValue.bigEndian)
            #if canImport(Darwin)
            sin.sin_len = UInt8(MemoryLayout<sockaddr_in>.size)
            #endif
            return withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .ipv6(let address, let port, let scope):
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            sin6.sin6_scope_id = scope
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { b in
                b.storeBytes(of: address.high.bigEndian, toByteOffset: 0, as: UInt64.self)
                b.storeBytes(of: address.low.bigEndian, toByteOffset: 8, as: UInt64.self)
            }
            #if canImport(Darwin)
            sin6.sin6_len = UInt8(MemoryLayout<sockaddr_in6>.size)
            #endif
            return withUnsafePointer(to: &sin6) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        case .unix(let path):
            var sun = sockaddr_un()
            sun.sun_family = sa_family_t(AF_UNIX)
            let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)!
            // Paths are validated when the address is parsed; a longer one built directly
            // as `.unix(path:)` is cut here, and bind/connect then fail with the kernel's error.
            let bytes = Array(path.utf8.prefix(Sys.maxUnixPathLength))
            withUnsafeMutableBytes(of: &sun.sun_path) { b in
                b.copyBytes(from: bytes)
            }
            #if canImport(Darwin)
            sun.sun_len = UInt8(pathOffset + bytes.count + 1)
            #endif
            let length = socklen_t(pathOffset + bytes.count + 1)
            return withUnsafePointer(to: &sun) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
            }
        }
    }
}

extension Sys {
    /// The longest Unix socket path, in bytes, leaving room for the terminating NUL
    /// (107 on Linux, 103 on Darwin).
    static let maxUnixPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    static func parseIPv4(_ text: String) -> UInt32? {
        var addr = in_addr()
        guard inet_pton(AF_INET, text, &addr) == 1 else { return nil }
        return UInt32(bigEndian: addr.s_addr)
    }

    static func parseIPv6(_ text: String) -> (UInt64, UInt64)? {
        var addr = in6_addr()
        guard inet_pton(AF_INET6, text, &addr) == 1 else { return nil }
        return withUnsafeBytes(of: addr) { b in
            (UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
             UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        }
    }

    static func formatIPv4(_ value: UInt32) -> String {
        var addr = in_addr(s_addr: value.bigEndian)
        var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        guard inet_ntop(AF_INET, &addr, &buffer, socklen_t(buffer.count)) != nil else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func formatIPv6(high: UInt64, low: UInt64) -> String {
        var addr = in6_addr()
        withUnsafeMutableBytes(of: &addr) { b in
            b.storeBytes(of: high.bigEndian, toByteOffset: 0, as: UInt64.self)
            b.storeBytes(of: low.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, &addr, &buffer, socklen_t(buffer.count)) != nil else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// `if_nametoindex(3)`: nil when there is no such interface.
    static func interfaceIndex(_ name: String) -> UInt32? {
        let index = if_nametoindex(name)
        return index == 0 ? nil : index
    }
}
