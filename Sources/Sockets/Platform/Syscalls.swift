// The only place (with the other files in Platform/) that talks to libc.
//
// Each shim is one libc call. errno is read at once, inside the same non-inlined function,
// so that nothing the Swift runtime does between the call and the read can overwrite it
// (SwiftNIO's System.swift explains the hazard). The shims decide nothing: the data calls
// (accept, connect, send, recv, sendto, recvfrom, poll) return the kernel's answer as a
// `Result` with the errno, and `Attempt.swift` (retry EINTR, EAGAIN as "not yet") and the
// wait loop above it decide what each answer means. The other shims throw their `Errno`.
//
// Platform differences live here and only here:
// - Linux (Glibc, Musl): SOCK_CLOEXEC | SOCK_NONBLOCK at creation, accept4 (born blocking), MSG_NOSIGNAL on every send,
//   MSG_DONTWAIT for a non-blocking attempt on a blocking descriptor, SO_RCVTIMEO and
//   SO_SNDTIMEO as kernel-side timers, ppoll for nanosecond waits, eventfd as the waker.
// - Darwin: fcntl after creation (O_NONBLOCK, FD_CLOEXEC), SO_NOSIGPIPE per socket, poll with
//   milliseconds rounded up, a pipe as the waker; every wait is a poll (no kernel timers).
//
// In debug builds each data shim first asks the test seam (`Seam.swift`) whether to fail
// with an injected errno instead of calling the kernel.

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
import CSockets

/// Thin wrappers over the socket system calls. Internal: the public API is `Socket`.
enum Sys {
    @inline(never)
    static func lastErrno() -> Errno { Errno(rawValue: errno) }

    // MARK: constants

    #if canImport(Glibc)
    static let streamType = CInt(SOCK_STREAM.rawValue)
    static let datagramType = CInt(SOCK_DGRAM.rawValue)
    static let createFlags = CInt(SOCK_CLOEXEC.rawValue | SOCK_NONBLOCK.rawValue)
    static let acceptFlags = CInt(SOCK_CLOEXEC.rawValue)
    static let nonblockingFlag = CInt(SOCK_NONBLOCK.rawValue)
    #elseif canImport(Musl)
    static let streamType = CInt(SOCK_STREAM)
    static let datagramType = CInt(SOCK_DGRAM)
    static let createFlags = CInt(SOCK_CLOEXEC | SOCK_NONBLOCK)
    static let acceptFlags = CInt(SOCK_CLOEXEC)
    static let nonblockingFlag = CInt(SOCK_NONBLOCK)
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

    static let inet = AF_INET
    static let inet6 = AF_INET6
    static let local = AF_UNIX

    // MARK: creation and teardown

    /// `socket(2)`, close-on-exec and non-blocking (on Darwin also `SO_NOSIGPIPE`).
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

    /// The number of CPUs the process may run on: on Linux its affinity mask
    /// (`sched_getaffinity`: what `taskset` or a container's cpuset allows), else the CPUs
    /// online (`sysconf(_SC_NPROCESSORS_ONLN)`).
    static func usableCPUs() -> Int {
        #if os(Linux)
        let allowed = Int(csockets_allowed_cpus())
        if allowed > 0 { return allowed }
        #endif
        return Int(sysconf(CInt(_SC_NPROCESSORS_ONLN)))
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

    // MARK: socket files

    /// The device and inode of the socket file at `path`, or nil if there is none (or it
    /// is not a socket).
    static func socketFileIdentity(_ path: String) -> (device: UInt64, inode: UInt64)? {
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// Removes the socket file at `path` if it is still the one identified (a file made
    /// since by someone else is left alone). Best effort: there is no one to report to.
    static func removeSocketFile(_ path: String, ifStill identity: (device: UInt64, inode: UInt64)) {
        guard let now = socketFileIdentity(path), now == identity else { return }
        _ = unlink(path)
    }

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

    /// `connect(2)` once. Waits or not as the descriptor's O_NONBLOCK says.
    @inline(never)
    static func connect(_ fd: CInt, _ address: SocketAddress) -> Result<Void, Errno> {
        #if DEBUG
        if let injected = Seam.fault(.connect, fd) { return .failure(injected) }
        #endif
        let rc = address.withSockAddr { sa, len in
            #if canImport(Glibc)
            Glibc.connect(fd, sa, len)
            #elseif canImport(Musl)
            Musl.connect(fd, sa, len)
            #else
            Darwin.connect(fd, sa, len)
            #endif
        }
        return rc == 0 ? .success(()) : .failure(lastErrno())
    }

    /// `accept4(2)` (accept + fcntl on Darwin): the new descriptor is close-on-exec from
    /// birth, blocking on Linux unless `nonblocking` (for an async accept: the new socket is
    /// ready for a reactor without another system call). Waits or not as the listener's
    /// O_NONBLOCK says (`mayWait` says which, for the test seam).
    @inline(never)
    static func accept(_ fd: CInt, mayWait: Bool, nonblocking: Bool = false) -> Result<(CInt, SocketAddress), Errno> {
        #if DEBUG
        if let injected = Seam.fault(.accept, fd, mayWait: mayWait) { return .failure(injected) }
        #endif
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let newFD = withUnsafeMutablePointer(to: &storage) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                #if os(Linux)
                csockets_accept4(fd, sa, &len, nonblocking ? acceptFlags | nonblockingFlag : acceptFlags)
                #else
                Darwin.accept(fd, sa, &len)
                #endif
            }
        }
        if newFD < 0 { return .failure(lastErrno()) }
        #if !os(Linux)
        do throws(Errno) { try prepareDescriptor(newFD) } catch { close(newFD); return .failure(error) }
        #endif
        return .success((newFD, SocketAddress(storage: storage, length: len)))
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
        #if DEBUG
        if let injected = Seam.fault(.getpeername, fd) { throw injected }
        #endif
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) }
        }
        if rc != 0 { throw lastErrno() }
        return SocketAddress(storage: storage, length: len)
    }

    // MARK: data

    /// `send(2)` with MSG_NOSIGNAL, and MSG_DONTWAIT unless `mayWait`.
    /// Inlined: the success path is the whole of a round trip's user-space work.
    @inline(__always)
    static func send(_ fd: CInt, _ buffer: UnsafeRawBufferPointer, mayWait: Bool) -> Result<Int, Errno> {
        #if DEBUG
        if let injected = Seam.fault(.send, fd, mayWait: mayWait) { return .failure(injected) }
        #endif
        let flags = mayWait ? sendFlags : sendFlags | dontWait
        #if canImport(Glibc)
        let n = Glibc.send(fd, buffer.baseAddress, buffer.count, flags)
        #elseif canImport(Musl)
        let n = Musl.send(fd, buffer.baseAddress, buffer.count, flags)
        #else
        let n = Darwin.send(fd, buffer.baseAddress, buffer.count, flags)
        #endif
        return n >= 0 ? .success(n) : .failure(lastErrno())
    }

    /// `recv(2)`, with MSG_DONTWAIT unless `mayWait`; 0 is end of stream. Inlined, as `send`.
    @inline(__always)
    static func recv(_ fd: CInt, _ buffer: UnsafeMutableRawBufferPointer, mayWait: Bool) -> Result<Int, Errno> {
        #if DEBUG
        if let injected = Seam.fault(.recv, fd, mayWait: mayWait) { return .failure(injected) }
        #endif
        let flags = mayWait ? 0 : dontWait
        #if canImport(Glibc)
        let n = Glibc.recv(fd, buffer.baseAddress, buffer.count, flags)
        #elseif canImport(Musl)
        let n = Musl.recv(fd, buffer.baseAddress, buffer.count, flags)
        #else
        let n = Darwin.recv(fd, buffer.baseAddress, buffer.count, flags)
        #endif
        return n >= 0 ? .success(n) : .failure(lastErrno())
    }

    /// `sendto(2)` with MSG_NOSIGNAL, and MSG_DONTWAIT unless `mayWait`.
    @inline(never)
    static func sendTo(_ fd: CInt, _ buffer: UnsafeRawBufferPointer, _ address: SocketAddress, mayWait: Bool) -> Result<Int, Errno> {
        #if DEBUG
        if let injected = Seam.fault(.sendTo, fd, mayWait: mayWait) { return .failure(injected) }
        #endif
        let flags = mayWait ? sendFlags : sendFlags | dontWait
        let n = address.withSockAddr { sa, len in sendto(fd, buffer.baseAddress, buffer.count, flags, sa, len) }
        return n >= 0 ? .success(n) : .failure(lastErrno())
    }

    /// `recvfrom(2)`, with MSG_DONTWAIT unless `mayWait`: the length, the sender, and
    /// whether the kernel gave the sender's address (an unbound Unix sender has none, and
    /// neither has the wake-up of a `shutdown(2)`).
    @inline(never)
    static func recvFrom(_ fd: CInt, _ buffer: UnsafeMutableRawBufferPointer, mayWait: Bool) -> Result<(Int, SocketAddress, named: Bool), Errno> {
        #if DEBUG
        if let injected = Seam.fault(.recvFrom, fd, mayWait: mayWait) { return .failure(injected) }
        #endif
        let flags = mayWait ? 0 : dontWait
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let n = withUnsafeMutablePointer(to: &storage) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                recvfrom(fd, buffer.baseAddress, buffer.count, flags, $0, &len)
            }
        }
        if n < 0 { return .failure(lastErrno()) }
        return .success((n, SocketAddress(storage: storage, length: len), len != 0))
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

    /// What one `poll` saw: the socket's `revents` (0: not ready) and whether the waker fired.
    struct PollOutcome {
        var revents: Int16
        var woken: Bool
    }

    /// Waits for `events` on `fd`, or for `waker` to be written (-1: no waker), for at most
    /// `nanoseconds` (nil: forever); `fd` -1 waits for the waker alone. The kernel's clock
    /// decides only when to wake us, never whether the caller's deadline has passed:
    /// EINTR comes back as a failure for the caller to retry with the time that is left.
    ///
    /// Linux: `ppoll(2)` with a nanosecond timespec. Darwin: `poll(2)` with the timeout
    /// rounded *up* to whole milliseconds, so it never wakes early.
    @inline(never)
    static func poll(_ fd: CInt, events: Int16, waker: CInt, nanoseconds: Int64?) -> Result<PollOutcome, Errno> {
        #if DEBUG
        if let injected = Seam.fault(.poll, fd) { return .failure(injected) }
        #endif
        var fds = (pollfd(fd: fd, events: events, revents: 0), pollfd(fd: waker, events: Int16(POLLIN), revents: 0))
        let rc: CInt = withUnsafeMutableBytes(of: &fds) { raw in
            let pfds = raw.baseAddress!.assumingMemoryBound(to: pollfd.self)
            // A negative descriptor is ignored by poll; leave it out of the count all the same.
            let first = fd < 0 ? pfds + 1 : pfds
            let count = nfds_t((fd < 0 ? 0 : 1) + (waker < 0 ? 0 : 1))
            #if os(Linux)
            if let nanoseconds {
                var ts = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
                return csockets_ppoll(first, count, &ts)
            }
            return csockets_ppoll(first, count, nil)
            #else
            var ms: CInt = -1
            if let nanoseconds {
                ms = CInt(clamping: nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 == 0 ? 0 : 1))
            }
            return Darwin.poll(first, count, ms)
            #endif
        }
        if rc < 0 { return .failure(lastErrno()) }
        return .success(PollOutcome(revents: fd < 0 ? 0 : fds.0.revents, woken: waker >= 0 && fds.1.revents != 0))
    }

    /// Waits for `events[i]` on `fds[i]` for at most `nanoseconds` (nil: forever) and
    /// returns each descriptor's `revents`: several connects and lookups waited on together
    /// (HappyEyeballs.swift). EINTR comes back as a failure for the caller to retry.
    static func poll(_ fds: [CInt], events: [Int16], nanoseconds: Int64?) -> Result<[Int16], Errno> {
        var list = zip(fds, events).map { pollfd(fd: $0, events: $1, revents: 0) }
        let rc: CInt = list.withUnsafeMutableBufferPointer { buffer in
            #if os(Linux)
            if let nanoseconds {
                var ts = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
                return csockets_ppoll(buffer.baseAddress, nfds_t(buffer.count), &ts)
            }
            return csockets_ppoll(buffer.baseAddress, nfds_t(buffer.count), nil)
            #else
            var ms: CInt = -1
            if let nanoseconds {
                ms = CInt(clamping: nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 == 0 ? 0 : 1))
            }
            return Darwin.poll(buffer.baseAddress, nfds_t(buffer.count), ms)
            #endif
        }
        if rc < 0 { return .failure(lastErrno()) }
        return .success(list.map(\.revents))
    }

    // MARK: the waker

    /// The descriptor pair ``Socket/close()`` writes to so that every call waiting in `poll`
    /// on the socket wakes, without acting on the socket itself (which other processes may
    /// share). Linux: one eventfd, both ends. Darwin: a pipe.
    struct Waker {
        let readFD: CInt
        let writeFD: CInt
    }

    /// A new waker, close-on-exec and non-blocking.
    @inline(never)
    static func makeWaker() throws(Errno) -> Waker {
        #if os(Linux)
        let fd = csockets_eventfd()
        if fd < 0 { throw lastErrno() }
        return Waker(readFD: fd, writeFD: fd)
        #else
        var fds: [CInt] = [-1, -1]
        if pipe(&fds) != 0 { throw lastErrno() }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        return Waker(readFD: fds[0], writeFD: fds[1])
        #endif
    }

    /// Makes the waker readable for good (it is never drained): every poll on it returns.
    @inline(never)
    static func wake(_ waker: Waker) {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { write(waker.writeFD, $0.baseAddress, waker.readFD == waker.writeFD ? 8 : 1) }
    }

    /// Empties the waker (`read(2)` until it would block), for the reactor, whose waker is
    /// written each time a job comes from another thread while it sleeps.
    @inline(never)
    static func drain(_ waker: Waker) {
        var sink: UInt64 = 0
        // One read empties an eventfd; a pipe (Darwin) may take a few. Stops at EAGAIN.
        for _ in 0..<64 {
            if withUnsafeMutableBytes(of: &sink, { read(waker.readFD, $0.baseAddress, 8) }) <= 0 { break }
        }
    }

    static func close(_ waker: Waker) {
        close(waker.readFD)
        if waker.writeFD != waker.readFD { close(waker.writeFD) }
    }
}

#if canImport(Glibc)
@inline(__always)
private func Glibc_or_Musl_socket(_ d: CInt, _ t: CInt, _ p: CInt) -> CInt { Glibc.socket(d, t, p) }
#elseif canImport(Musl)
@inline(__always)
private func Glibc_or_Musl_socket(_ d: CInt, _ t: CInt, _ p: CInt) -> CInt { Musl.socket(d, t, p) }
#endif
