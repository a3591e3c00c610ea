#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Sockets

// Nothing in sock imports Foundation: loading it (and the ICU data it brings) was most of
// sock's start-up time. These are the few things it was used for.

/// Runs `body` on a new thread of its own; ends the process (exit 1) if none can be made.
func startThread(_ body: @escaping @Sendable () -> Void) {
    guard spawnDetachedThread(body) else {
        printError("sock: could not start a thread: \(String(cString: strerror(errno)))")
        exit(1)
    }
}

/// Sleeps the calling thread for `d` (nanosleep, resumed after a signal).
func sleepThread(for d: Duration) {
    let (seconds, attoseconds) = d.components
    var request = timespec(tv_sec: Int(clamping: seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) == -1 && errno == EINTR { request = remaining }
}

/// `text` followed by spaces up to `width` characters (unchanged if it is as long already).
func padded(_ text: String, to width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

/// `value` with `decimals` digits after the point, rounded (printf's `%.Nf` for the
/// non-negative values sock prints).
func fixed(_ value: Double, decimals: Int) -> String {
    var scale = 1
    for _ in 0..<decimals { scale *= 10 }
    let units = Int((value * Double(scale)).rounded())
    let whole = units / scale, part = units % scale
    guard decimals > 0 else { return "\(whole)" }
    let digits = String(part)
    return "\(whole)." + String(repeating: "0", count: decimals - digits.count) + digits
}

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
