#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a line to stderr at once (unbuffered), for status and errors.
func printError(_ text: String) {
    writeAll(2, Array((text + "\n").utf8))
}

/// Writes a line to stdout at once (unbuffered), so live output shows as it happens.
func printOut(_ text: String) {
    writeAll(1, Array((text + "\n").utf8))
}

/// Writes all of `bytes` to a descriptor, retrying EINTR and short writes. False when the
/// descriptor is closed (EPIPE: stdout's reader went away) or fails.
@discardableResult
func writeAll(_ fd: CInt, _ bytes: [UInt8]) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            return false
        }
        offset += n
    }
    return true
}

/// Reads up to `count` bytes from a descriptor: nil on error, empty at end of file.
func readSome(_ fd: CInt, _ count: Int) -> [UInt8]? {
    var buffer = [UInt8](repeating: 0, count: count)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n >= 0 { return Array(buffer.prefix(n)) }
        if errno == EINTR { continue }
        return nil
    }
}

/// A duration as seconds, for Foundation's sleeping APIs.
func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

/// `Linux 6.1.0 x86_64`, from uname(2).
func systemName() -> String {
    var info = utsname()
    guard uname(&info) == 0 else { return "this OS" }
    func field<T>(_ value: T) -> String {
        withUnsafeBytes(of: value) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
    return "\(field(info.sysname)) \(field(info.release)) \(field(info.machine))"
}
