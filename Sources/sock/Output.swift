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

/// Writes all of `bytes` to a descriptor, retrying EINTR and short writes; `progress` is
/// told each write's count. False when the descriptor is closed (EPIPE: stdout's reader went
/// away) or fails, with errno saying why.
@discardableResult
func writeAll(_ fd: CInt, _ bytes: [UInt8], progress: (Int) -> Void = { _ in }) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            return false
        }
        offset += n
        progress(n)
    }
    return true
}

/// Reads up to `buffer.count` bytes from a descriptor into `buffer`, retrying EINTR: the count,
/// 0 at end of file, -1 on error (errno says why).
func readSome(_ fd: CInt, into buffer: inout [UInt8]) -> Int {
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n >= 0 || errno != EINTR { return n }
    }
}

/// Waits, as long as it takes, until `fd` has something to read or has ended (without reading
/// it). False if the descriptor is not open (then there is no input at all).
func waitForInput(_ fd: CInt) -> Bool {
    var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    while true {
        let n = poll(&entry, 1, -1)
        if n > 0 { return entry.revents & Int16(POLLNVAL) == 0 }
        if n < 0 && errno != EINTR { return true }  // let the read say what is wrong
    }
}

/// Opens /dev/null on each of descriptors 0, 1 and 2 that is closed.
func openStandardDescriptors() {
    for fd: CInt in 0...2 where fcntl(fd, F_GETFD) == -1 && errno == EBADF {
        let opened = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY)
        if opened >= 0 && opened != fd { close(opened) }  // cannot happen: the lowest free number is fd
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

/// Ends the process with `code` (exit(3)), for code where ArgumentParser's `exit` is in scope.
func exitProcess(_ code: CInt) -> Never {
    exit(code)
}

/// The device and inode of the file at `path`, if there is one.
func fileIdentity(_ path: String) -> [UInt64]? {
    var info = stat()
    guard lstat(path, &info) == 0 else { return nil }
    return [UInt64(info.st_dev), UInt64(info.st_ino)]
}
