// The option levels and names the typed options use, and the little encoders for them.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import SystemPackage

extension Sys {
    static let solSocket = SOL_SOCKET
    static let soReuseAddr = SO_REUSEADDR
    static let soReusePort = SO_REUSEPORT
    static let soKeepAlive = SO_KEEPALIVE
    static let soBroadcast = SO_BROADCAST
    static let soRcvBuf = SO_RCVBUF
    static let soRcvLowat = SO_RCVLOWAT
    static let soSndBuf = SO_SNDBUF
    static let soLinger = SO_LINGER
    static let soType = SO_TYPE
    static let ipprotoTCP = CInt(IPPROTO_TCP)
    static let tcpNoDelay = CInt(TCP_NODELAY)
    static let ipprotoIPv6 = CInt(IPPROTO_IPV6)
    static let ipv6V6Only = CInt(IPV6_V6ONLY)

    #if os(Linux)
    /// ENONET, which Linux's accept may report for a connection that died in the queue.
    static let noNetwork = Errno(rawValue: ENONET)
    #else
    static let noNetwork = Errno(rawValue: -1)
    #endif

    static func intOption(_ fd: CInt, level: CInt, name: CInt) throws(Errno) -> CInt {
        var value: CInt = 0
        _ = try withUnsafeMutableBytes(of: &value) { (b) throws(Errno) in try getOption(fd, level: level, name: name, b) }
        return value
    }

    static func setIntOption(_ fd: CInt, level: CInt, name: CInt, _ value: CInt) throws(Errno) {
        var value = value
        try withUnsafeBytes(of: &value) { (b) throws(Errno) in try setOption(fd, level: level, name: name, b) }
    }

    /// SO_LINGER as (on, seconds).
    static func lingerOption(_ fd: CInt) throws(Errno) -> (Bool, Int) {
        var value = linger()
        _ = try withUnsafeMutableBytes(of: &value) { (b) throws(Errno) in try getOption(fd, level: SOL_SOCKET, name: SO_LINGER, b) }
        return (value.l_onoff != 0, Int(value.l_linger))
    }

    static func setLingerOption(_ fd: CInt, on: Bool, seconds: Int) throws(Errno) {
        var value = linger(l_onoff: on ? 1 : 0, l_linger: CInt(clamping: seconds))
        try withUnsafeBytes(of: &value) { (b) throws(Errno) in try setOption(fd, level: SOL_SOCKET, name: SO_LINGER, b) }
    }

    /// `Array.withUnsafeBytes` with the typed error kept (the standard one rethrows untyped).
    static func withBytes<R>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R {
        let result: Result<R, Errno> = bytes.withUnsafeBytes { b in
            do throws(Errno) { return .success(try body(b)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    static func withMutableBytes<R>(_ bytes: inout [UInt8], _ body: (UnsafeMutableRawBufferPointer) throws(Errno) -> R) throws(Errno) -> R {
        let result: Result<R, Errno> = bytes.withUnsafeMutableBytes { b in
            do throws(Errno) { return .success(try body(b)) } catch { return .failure(error) }
        }
        return try result.get()
    }
}
