// The only place (with the other files in Platform/) that talks to libc.
//
// Each shim is one libc call. errno is read at once, inside the same non-inlined function,
// so that nothing the Swift runtime does between the call and the read can overwrite it
// (SwiftNIO's System.swift explains the hazard). Failures come back as typed `Errno` throws;
// the layer above adds the operation and address and decides what would-block means.
//
// Platform differences live here and only here:
// - Linux (Glibc, Musl): SOCK_CLOEXEC|SOCK_NONBLOCK at creation, accept4, MSG_NOSIGNAL on
//   every send, ppoll for nanosecond waits.
// - Darwin: fcntl after creation, SO_NOSIGPIPE per socket, poll with milliseconds rounded up.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#else
#error("Sockets supports Linux (Glibc, Musl) and Darwin")
#endif
import SystemPackage
#if os(Linux)
import CSockets
#endif

/// Thin wrappers over the socket system calls. Internal: the public API is `Socket`.
enum Sys {
    @inline(never)
    static func lastErrno() -> Errno { Errno(rawValue: errno) }

    // MARK: constants

    #if canImport(Glibc)
    static let streamType = CInt(SOCK_STREAM.rawValue)
    static let datagramType = CInt(SOCK_DGRAM.rawValue)
    static let createFlags = CInt(SOCK_CLOEXEC.rawValue) | CInt(SOCK_NONBLOCK.rawValue)
    #elseif canImport(Musl)
    static let streamType = CInt(SOCK_STREAM)
    static let datagramType = CInt(SOCK_DGRAM)
    static let createFlags = CInt(SOCK_CLOEXEC) | CInt(SOCK_NONBLOCK)
    #else
    static let streamType = SOCK_STREAM
    static let datagramType = SOCK_DGRAM
    #endif

    #if os(Linux)
    static let sendFlags = CInt(MSG_NOSIGNAL)
    #else
    static let sendFlags: CInt = 0
    #endif

    static let inet = AF_INET
    static let inet6 = AF_INET6
    static let local = AF_UNIX

    // MARK: creation and teardown

    /// `socket(2)`, close-on-exec and non-blocking; on Darwin also `SO_NOSIGPIPE`.
    @inline(never)
    static func socket(domain: CInt, type: CInt, protocol proto: CInt) throws(Errno) -> CInt {
        #if os(Linux)
        let fd = Glibc_or_Musl_socket(domain, type | createFlags, proto)
        if fd < 0 { throw lastErrno() }
        return fd
        #else
        let fd = Darwin.socket(domain, type, proto)
        if fd < 0 { throw lastErrno() }
        do throws(Errno) { try prepareDescriptor(fd) } catch { _ = Darwin.close(fd); throw error }
        return fd
        #endif
    }

    /// `socketpair(2)` in the Unix domain, both ends close-on-exec and non-blocking.
    @inline(never)
    static func socketPair(type: CInt) throws(Errno) -> (CInt, CInt) {
        var fds: [CInt] = [-1, -1]
        #if os(Linux)
        let rc = socketpair(AF_UNIX, type | createFlags, 0, &fds)
        if rc != 0 { throw lastErrno() }
        #else
        let rc = socketpair(AF_UNIX, type, 0, &fds)
        if rc != 0 { throw lastErrno() }
        do throws(Errno) {
            try prepareDescriptor(fds[0])
            try prepareDescriptor(fds[1])
        } catch {
            _ = Darwin.close(fds[0]); _ = Darwin.close(fds[1]); throw error
        }
        #endif
        return (fds[0], fds[1])
    }

    /// Sets `O_NONBLOCK` and `FD_CLOEXEC` on a descriptor the library did not create
    /// (and, on Darwin, on every descriptor, which has no creation flags for them).
    @inline(never)
    static func prepareDescriptor(_ fd: CInt) throws(Errno) {
        let fl = fcntl(fd, F_GETFL)
        if fl < 0 { throw lastErrno() }
        if fl & O_NONBLOCK == 0, fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 { throw lastErrno() }
        let fdfl = fcntl(fd, F_GETFD)
        if fdfl < 0 { throw lastErrno() }
        if fdfl & FD_CLOEXEC == 0, fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0 { throw lastErrno() }
        #if canImport(Darwin)
        var one: CInt = 1
        if setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<CInt>.size)) < 0 {
            throw lastErrno()
        }
        #endif
    }

    /// `close(2)`, never retried: on Linux the descriptor is gone even when close reports EINTR.
    @inline(never)
    static func close(_ fd: CInt) {
        #if canImport(Darwin)
        _ = Darwin.close(fd)
        #elseif canImport(Glibc)
        _ = Glibc.close(fd)
        #else
        _ = Musl.close(fd)
        #endif
    }

    /// `shutdown(2)`.
    @inline(never)
    static func shutdown(_ fd: CInt, how: CInt) throws(Errno) {
        #if canImport(Glibc)
        let rc = Glibc.shutdown(fd, how)
        #elseif canImport(Musl)
        let rc = Musl.shutdown(fd, how)
        #else
        let rc = Darwin.shutdown(fd, how)
        #endif
        if rc != 0 { throw lastErrno() }
    }

    static let shutRead = CInt(SHUT_RD)
    static let shutWrite = CInt(SHUT_WR)
    static let shutBoth = CInt(SHUT_RDWR)

    // MARK: naming and connecting

    @inline(never)
    static func bind(_ fd: CInt, _ address: SocketAddress) throws(Errno) {
        let rc = address.withSockAddr { sa, len in
            #if canImport(Glibc)
            Glibc.bind(fd, sa, len)
            #elseif canImport(Musl)
            Musl.bind(fd, sa, len)
            #else
            Darwin.bind(fd, sa, len)
            #endif
        }
        if rc != 0 { throw lastErrno() }
    }

    @inline(never)
    static func listen(_ fd: CInt, backlog: CInt) throws(Errno) {
        #if canImport(Glibc)
        let rc = Glibc.listen(fd, backlog)
        #elseif canImport(Musl)
        let rc = Musl.listen(fd, backlog)
        #else
        let rc = Darwin.listen(fd, backlog)
        #endif
        if rc != 0 { throw lastErrno() }
    }

    /// `connect(2)` once. EINPROGRESS and EINTR both mean "in progress": the caller waits
    /// for writability and reads SO_ERROR; it never calls connect again blindly.
    @inline(never)
    static func connect(_ fd: CInt, _ address: SocketAddress) throws(Errno) {
        let rc = address.withSockAddr { sa, len in
            #if canImport(Glibc)
            Glibc.connect(fd, sa, len)
            #elseif canImport(Musl)
            Musl.connect(fd, sa, len)
            #else
            Darwin.connect(fd, sa, len)
            #endif
        }
        if rc != 0 { throw lastErrno() }
    }

    /// `accept4(2)` (accept + fcntl on Darwin): the new descriptor is close-on-exec and
    /// non-blocking from birth. EINTR is retried. Returns nil on EAGAIN.
    @inline(never)
    static func accept(_ fd: CInt) throws(Errno) -> (CInt, SocketAddress)? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        while true {
            let newFD = withUnsafeMutablePointer(to: &storage) { ptr in
                ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    #if os(Linux)
                    csockets_accept4(fd, sa, &len, createFlags)
                    #else
                    Darwin.accept(fd, sa, &len)
                    #endif
                }
            }
            if newFD >= 0 {
                #if !os(Linux)
                do throws(Errno) { try prepareDescriptor(newFD) } catch { close(newFD); throw error }
                #endif
                return (newFD, SocketAddress(storage: storage, length: len))
            }
            let e = lastErrno()
            if e == .interrupted { continue }
            if e == .resourceTemporarilyUnavailable || e == .wouldBlock { return nil }
            throw e
        }
    }

    /// Reads and clears `SO_ERROR`: the outcome of a non-blocking connect.
    @inline(never)
    static func pendingError(_ fd: CInt) throws(Errno) -> Errno? {
        var value: CInt = 0
        var len = socklen_t(MemoryLayout<CInt>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &len) != 0 { throw lastErrno() }
        return value == 0 ? nil : Errno(rawValue: value)
    }

    @inline(never)
    static func localAddress(_ fd: CInt) throws(Errno) -> SocketAddress {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        if rc != 0 { throw lastErrno() }
        return SocketAddress(storage: storage, length: len)
    }

    @inline(never)
    static func peerAddress(_ fd: CInt) throws(Errno) -> SocketAddress {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) }
        }
        if rc != 0 { throw lastErrno() }
        return SocketAddress(storage: storage, length: len)
    }

    // MARK: data

    /// `send(2)` with MSG_NOSIGNAL. EINTR is retried; nil on EAGAIN/EWOULDBLOCK.
    @inline(never)
    static func send(_ fd: CInt, _ buffer: UnsafeRawBufferPointer) throws(Errno) -> Int? {
        while true {
            #if canImport(Glibc)
            let n = Glibc.send(fd, buffer.baseAddress, buffer.count, sendFlags)
            #elseif canImport(Musl)
            let n = Musl.send(fd, buffer.baseAddress, buffer.count, sendFlags)
            #else
            let n = Darwin.send(fd, buffer.baseAddress, buffer.count, sendFlags)
            #endif
            if n >= 0 { return n }
            let e = lastErrno()
            if e == .interrupted { continue }
            if e == .resourceTemporarilyUnavailable || e == .wouldBlock { return nil }
            throw e
        }
    }

    /// `recv(2)`. EINTR is retried; nil on EAGAIN/EWOULDBLOCK; 0 is end of stream.
    @inline(never)
    static func recv(_ fd: CInt, _ buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int? {
        while true {
            #if canImport(Glibc)
            let n = Glibc.recv(fd, buffer.baseAddress, buffer.count, 0)
            #elseif canImport(Musl)
            let n = Musl.recv(fd, buffer.baseAddress, buffer.count, 0)
            #else
            let n = Darwin.recv(fd, buffer.baseAddress, buffer.count, 0)
            #endif
            if n >= 0 { return n }
            let e = lastErrno()
            if e == .interrupted { continue }
            if e == .resourceTemporarilyUnavailable || e == .wouldBlock { return nil }
            throw e
        }
    }

    /// `sendto(2)` with MSG_NOSIGNAL. EINTR is retried; nil on EAGAIN/EWOULDBLOCK.
    @inline(never)
    static func sendTo(_ fd: CInt, _ buffer: UnsafeRawBufferPointer, _ address: SocketAddress) throws(Errno) -> Int? {
        while true {
            let n = address.withSockAddr { sa, len in
                sendto(fd, buffer.baseAddress, buffer.count, sendFlags, sa, len)
            }
            if n >= 0 { return n }
            let e = lastErrno()
            if e == .interrupted { continue }
            if e == .resourceTemporarilyUnavailable || e == .wouldBlock { return nil }
            throw e
        }
    }

    /// `recvfrom(2)`. EINTR is retried; nil on EAGAIN/EWOULDBLOCK.
    @inline(never)
    static func recvFrom(_ fd: CInt, _ buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> (Int, SocketAddress)? {
        var storage = sockaddr_storage()
        while true {
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = withUnsafeMutablePointer(to: &storage) { ptr in
                ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(fd, buffer.baseAddress, buffer.count, 0, $0, &len)
                }
            }
            if n >= 0 { return (n, SocketAddress(storage: storage, length: len)) }
            let e = lastErrno()
            if e == .interrupted { continue }
            if e == .resourceTemporarilyUnavailable || e == .wouldBlock { return nil }
            throw e
        }
    }

    // MARK: options

    @inline(never)
    static func setOption(_ fd: CInt, level: CInt, name: CInt, _ value: UnsafeRawBufferPointer) throws(Errno) {
        if setsockopt(fd, level, name, value.baseAddress, socklen_t(value.count)) != 0 { throw lastErrno() }
    }

    /// Returns how many bytes the kernel wrote into `value`.
    @inline(never)
    static func getOption(_ fd: CInt, level: CInt, name: CInt, _ value: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        var len = socklen_t(value.count)
        if getsockopt(fd, level, name, value.baseAddress, &len) != 0 { throw lastErrno() }
        return Int(len)
    }

    // MARK: waiting

    static let pollIn = Int16(POLLIN)
    static let pollOut = Int16(POLLOUT)

    /// Waits for `events` on `fd` for at most `timeout` (nil: forever). Returns the
    /// `revents` (0 when the time ran out). EINTR is thrown so the caller can recompute
    /// the time that is left; the kernel's own clock decides only when to wake us, never
    /// whether the caller's deadline has passed.
    ///
    /// Linux: `ppoll(2)` with a nanosecond timespec. Darwin: `poll(2)` with the timeout
    /// rounded *up* to whole milliseconds, so it never wakes early.
    @inline(never)
    static func poll(_ fd: CInt, events: Int16, timeout: Duration?) throws(Errno) -> Int16 {
        var pfd = pollfd(fd: fd, events: events, revents: 0)
        #if os(Linux)
        let rc: CInt
        if let timeout {
            let (s, atto) = timeout.components
            var ts = timespec(tv_sec: Int(s), tv_nsec: Int((atto + 999_999_999) / 1_000_000_000))
            if ts.tv_nsec >= 1_000_000_000 { ts.tv_sec += 1; ts.tv_nsec -= 1_000_000_000 }
            rc = csockets_ppoll(&pfd, 1, &ts)
        } else {
            rc = csockets_ppoll(&pfd, 1, nil)
        }
        #else
        var ms: CInt = -1
        if let timeout {
            let (s, atto) = timeout.components
            let total = s * 1000 + (atto + 999_999_999_999_999) / 1_000_000_000_000_000
            ms = CInt(clamping: total)
        }
        let rc = Darwin.poll(&pfd, 1, ms)
        #endif
        if rc < 0 { throw lastErrno() }
        return rc == 0 ? 0 : pfd.revents
    }

    /// Sleeps for `duration` (used only to pace retries of an AF_UNIX connect whose
    /// listener's queue is full, which reports EAGAIN rather than "in progress").
    static func sleep(_ duration: Duration) {
        let (s, atto) = duration.components
        var ts = timespec(tv_sec: Int(s), tv_nsec: Int(atto / 1_000_000_000))
        _ = nanosleep(&ts, nil)
    }
}

#if canImport(Glibc)
@inline(__always)
private func Glibc_or_Musl_socket(_ d: CInt, _ t: CInt, _ p: CInt) -> CInt { Glibc.socket(d, t, p) }
#elseif canImport(Musl)
@inline(__always)
private func Glibc_or_Musl_socket(_ d: CInt, _ t: CInt, _ p: CInt) -> CInt { Musl.socket(d, t, p) }
#endif
