// The only place (with the other files in Platform/) that talks to libc.
//
// Each shim is one libc call. errno is read at once, inside the same non-inlined function,
// so that nothing the Swift runtime does between the call and the read can overwrite it
// (SwiftNIO's System.swift explains the hazard). Failures come back as typed `Errno` throws;
// the layer above adds the operation and address and decides what would-block means.
//
// Platform differences live here and only here:
// - Linux (Glibc, Musl): SOCK_CLOEXEC at creation, accept4, MSG_NOSIGNAL on every send,
//   MSG_DONTWAIT for a non-blocking attempt on a blocking descriptor, SO_RCVTIMEO and
//   SO_SNDTIMEO as kernel-side timers, ppoll for nanosecond waits.
// - Darwin: fcntl after creation (O_NONBLOCK, FD_CLOEXEC), SO_NOSIGPIPE per socket, poll with
//   milliseconds rounded up; every wait is a poll (no kernel-side timers).
//
// The data calls take `mayBlock`. False: the attempt must not wait (MSG_DONTWAIT, or an
// O_NONBLOCK descriptor for accept), EINTR is retried, EAGAIN returns nil. True: the call may
// sleep in the kernel, bounded by the descriptor's SO_RCVTIMEO/SO_SNDTIMEO; then EINTR returns
// nil as EAGAIN does, because retrying it would restart the kernel's timer from zero.

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
    static let createFlags = CInt(SOCK_CLOEXEC.rawValue)
    #elseif canImport(Musl)
    static let streamType = CInt(SOCK_STREAM)
    static let datagramType = CInt(SOCK_DGRAM)
    static let createFlags = CInt(SOCK_CLOEXEC)
    #else
    static let streamType = SOCK_STREAM
    static let datagramType = SOCK_DGRAM
    #endif

    #if os(Linux)
    static let sendFlags = CInt(MSG_NOSIGNAL)
    /// True where the kernel's SO_RCVTIMEO/SO_SNDTIMEO bound accept, connect, send and
    /// receive on a blocking descriptor, and MSG_DONTWAIT makes one call non-blocking:
    /// descriptors are created blocking and calls may sleep in the kernel.
    static let kernelTimers = true
    #else
    static let sendFlags: CInt = 0
    static let kernelTimers = false
    #endif
    static let dontWait = CInt(MSG_DONTWAIT)

    /// The result of an attempt that did not complete: EAGAIN, or EINTR / a kernel timer on a
    /// call that was allowed to block.
    @inline(__always)
    static func incomplete(_ e: Errno, mayBlock: Bool) -> Bool {
        e == .resourceTemporarilyUnavailable || e == .wouldBlock || (mayBlock && e == .interrupted)
    }

    static let inet = AF_INET
    static let inet6 = AF_INET6
    static let local = AF_UNIX

    // MARK: creation and teardown

    /// `socket(2)`, close-on-exec; blocking on Linux, non-blocking and `SO_NOSIGPIPE` on Darwin.
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

    /// `socketpair(2)` in the Unix domain, both ends prepared as `socket` prepares one.
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

    /// Sets `FD_CLOEXEC` on a descriptor the library did not create (and on Darwin, which
    /// has no creation flags, on every descriptor, with `O_NONBLOCK` and `SO_NOSIGPIPE`).
    /// Returns whether the descriptor is now non-blocking.
    @discardableResult
    @inline(never)
    static func prepareDescriptor(_ fd: CInt) throws(Errno) -> Bool {
        var fl = fcntl(fd, F_GETFL)
        if fl < 0 { throw lastErrno() }
        if !kernelTimers && fl & O_NONBLOCK == 0 {
            if fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 { throw lastErrno() }
            fl |= O_NONBLOCK
        }
        let fdfl = fcntl(fd, F_GETFD)
        if fdfl < 0 { throw lastErrno() }
        if fdfl & FD_CLOEXEC == 0, fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0 { throw lastErrno() }
        #if canImport(Darwin)
        var one: CInt = 1
        if setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<CInt>.size)) < 0 {
            throw lastErrno()
        }
        #endif
        return fl & O_NONBLOCK != 0
    }

    /// Sets or clears `O_NONBLOCK` (`ioctl(FIONBIO)`: one call, no read-modify-write).
    @inline(never)
    static func setNonblocking(_ fd: CInt, _ on: Bool) throws(Errno) {
        var value: CInt = on ? 1 : 0
        if ioctl(fd, UInt(FIONBIO), &value) != 0 { throw lastErrno() }
    }

    static let receiveTimer = SO_RCVTIMEO
    static let sendTimer = SO_SNDTIMEO

    /// Sets `SO_RCVTIMEO` or `SO_SNDTIMEO` (nil: none, wait forever). Whole microseconds,
    /// rounded down (the kernel then rounds up to its tick).
    @inline(never)
    static func setTimer(_ fd: CInt, _ name: CInt, nanoseconds: Int64?) throws(Errno) {
        var tv = timeval()
        if let nanoseconds {
            tv.tv_sec = .init(nanoseconds / 1_000_000_000)
            tv.tv_usec = .init(nanoseconds % 1_000_000_000 / 1_000)
        }
        if setsockopt(fd, SOL_SOCKET, name, &tv, socklen_t(MemoryLayout<timeval>.size)) != 0 { throw lastErrno() }
    }

    /// Reads `SO_RCVTIMEO` or `SO_SNDTIMEO` in nanoseconds (nil: none).
    @inline(never)
    static func timer(_ fd: CInt, _ name: CInt) throws(Errno) -> Int64? {
        var tv = timeval()
        var len = socklen_t(MemoryLayout<timeval>.size)
        if getsockopt(fd, SOL_SOCKET, name, &tv, &len) != 0 { throw lastErrno() }
        if tv.tv_sec == 0 && tv.tv_usec == 0 { return nil }
        return Int64(tv.tv_sec) * 1_000_000_000 + Int64(tv.tv_usec) * 1_000
    }

    /// The time in nanoseconds on the clock `ContinuousClock` reads (`CLOCK_BOOTTIME` on
    /// Linux, `CLOCK_MONOTONIC` on Darwin: both count time asleep). Through the vDSO: no
    /// system call.
    @inline(__always)
    static func now() -> Int64 {
        var ts = timespec()
        #if os(Linux)
        clock_gettime(CLOCK_BOOTTIME, &ts)
        #else
        clock_gettime(CLOCK_MONOTONIC, &ts)
        #endif
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
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

    /// `accept4(2)` (accept + fcntl on Darwin): the new descriptor is close-on-exec from
    /// birth, blocking on Linux. Returns nil when incomplete (see `mayBlock` above).
    @inline(never)
    static func accept(_ fd: CInt, mayBlock: Bool) throws(Errno) -> (CInt, SocketAddress)? {
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
            if incomplete(e, mayBlock: mayBlock) { return nil }
            if e == .interrupted { continue }
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

    /// `send(2)` with MSG_NOSIGNAL. Returns nil when incomplete (see `mayBlock` above).
    /// Inlined: the success path is the whole of a round trip's user-space work.
    @inline(__always)
    static func send(_ fd: CInt, _ buffer: UnsafeRawBufferPointer, mayBlock: Bool) throws(Errno) -> Int? {
        let flags = mayBlock ? sendFlags : sendFlags | dontWait
        let n = rawSend(fd, buffer, flags)
        return n >= 0 ? n : try retry(mayBlock: mayBlock) { rawSend(fd, buffer, flags) }
    }

    @inline(__always)
    private static func rawSend(_ fd: CInt, _ buffer: UnsafeRawBufferPointer, _ flags: CInt) -> Int {
        #if canImport(Glibc)
        Glibc.send(fd, buffer.baseAddress, buffer.count, flags)
        #elseif canImport(Musl)
        Musl.send(fd, buffer.baseAddress, buffer.count, flags)
        #else
        Darwin.send(fd, buffer.baseAddress, buffer.count, flags)
        #endif
    }

    /// `recv(2)`. Returns nil when incomplete (see `mayBlock` above); 0 is end of stream.
    /// Inlined, as `send`.
    @inline(__always)
    static func recv(_ fd: CInt, _ buffer: UnsafeMutableRawBufferPointer, mayBlock: Bool) throws(Errno) -> Int? {
        let flags = mayBlock ? 0 : dontWait
        let n = rawRecv(fd, buffer, flags)
        return n >= 0 ? n : try retry(mayBlock: mayBlock) { rawRecv(fd, buffer, flags) }
    }

    @inline(__always)
    private static func rawRecv(_ fd: CInt, _ buffer: UnsafeMutableRawBufferPointer, _ flags: CInt) -> Int {
        #if canImport(Glibc)
        Glibc.recv(fd, buffer.baseAddress, buffer.count, flags)
        #elseif canImport(Musl)
        Musl.recv(fd, buffer.baseAddress, buffer.count, flags)
        #else
        Darwin.recv(fd, buffer.baseAddress, buffer.count, flags)
        #endif
    }

    /// The rest of `send` or `recv` after `call` failed once: reads errno (first, before
    /// anything can change it); nil when incomplete, `call` again after EINTR, else throws.
    @inline(never)
    private static func retry(mayBlock: Bool, _ call: () -> Int) throws(Errno) -> Int? {
        while true {
            let e = lastErrno()
            if incomplete(e, mayBlock: mayBlock) { return nil }
            guard e == .interrupted else { throw e }
            let n = call()
            if n >= 0 { return n }
        }
    }

    /// `sendto(2)` with MSG_NOSIGNAL. Returns nil when incomplete (see `mayBlock` above).
    @inline(never)
    static func sendTo(_ fd: CInt, _ buffer: UnsafeRawBufferPointer, _ address: SocketAddress, mayBlock: Bool) throws(Errno) -> Int? {
        let sendFlags = mayBlock ? sendFlags : sendFlags | dontWait
        while true {
            let n = address.withSockAddr { sa, len in
                sendto(fd, buffer.baseAddress, buffer.count, sendFlags, sa, len)
            }
            if n >= 0 { return n }
            let e = lastErrno()
            if incomplete(e, mayBlock: mayBlock) { return nil }
            if e == .interrupted { continue }
            throw e
        }
    }

    /// `recvfrom(2)`. Returns nil when incomplete (see `mayBlock` above).
    @inline(never)
    static func recvFrom(_ fd: CInt, _ buffer: UnsafeMutableRawBufferPointer, mayBlock: Bool) throws(Errno) -> (Int, SocketAddress)? {
        let flags = mayBlock ? 0 : dontWait
        var storage = sockaddr_storage()
        while true {
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = withUnsafeMutablePointer(to: &storage) { ptr in
                ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(fd, buffer.baseAddress, buffer.count, flags, $0, &len)
                }
            }
            if n >= 0 { return (n, SocketAddress(storage: storage, length: len)) }
            let e = lastErrno()
            if incomplete(e, mayBlock: mayBlock) { return nil }
            if e == .interrupted { continue }
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
    static func poll(_ fd: CInt, events: Int16, nanoseconds: Int64?) throws(Errno) -> Int16 {
        var pfd = pollfd(fd: fd, events: events, revents: 0)
        #if os(Linux)
        let rc: CInt
        if let nanoseconds {
            var ts = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
            rc = csockets_ppoll(&pfd, 1, &ts)
        } else {
            rc = csockets_ppoll(&pfd, 1, nil)
        }
        #else
        var ms: CInt = -1
        if let nanoseconds {
            ms = CInt(clamping: nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 == 0 ? 0 : 1))
        }
        let rc = Darwin.poll(&pfd, 1, ms)
        #endif
        if rc < 0 { throw lastErrno() }
        return rc == 0 ? 0 : pfd.revents
    }

    /// Sleeps for `duration` (used only to pace retries of an AF_UNIX connect whose
    /// listener's queue is full, which reports EAGAIN rather than "in progress").
    static func sleep(nanoseconds: Int64) {
        var ts = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
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
