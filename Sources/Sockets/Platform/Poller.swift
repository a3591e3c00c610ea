// The readiness queue under the reactor: epoll on Linux, kqueue on Darwin, behind one small
// interface (create, register once edge-triggered, deregister, wait with a nanosecond limit).
// The only other file besides Syscalls.swift that calls libc for the async layer.
//
// The Darwin branch is written to compile there but has not been built or tested.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import SystemPackage
#if os(Linux)
import CSockets
#endif

/// One readiness event: the registration's token and what became ready.
struct PollerEvent {
    var token: UInt64
    /// Readable, or end of stream, a hang-up or an error (which the next read reports).
    var readable: Bool
    /// Writable, or a hang-up or an error (which the next write or `SO_ERROR` reports).
    var writable: Bool
    /// The peer's end of stream, a hang-up or an error: final states, which the reactor
    /// keeps (a short read may well drain the data before a FIN the same event reported,
    /// and no edge will come for it again).
    var readClosed: Bool
    /// A hang-up or an error.
    var writeClosed: Bool
}

/// An epoll instance (a kqueue on Darwin). Owned by one reactor, closed never (reactors
/// live as long as the process).
struct Poller {
    let fd: CInt

    /// `epoll_create1(EPOLL_CLOEXEC)` / `kqueue()`.
    static func make() throws(Errno) -> Poller {
        #if os(Linux)
        let fd = csockets_epoll_create()
        #else
        let fd = kqueue()
        #endif
        if fd < 0 { throw Sys.lastErrno() }
        return Poller(fd: fd)
    }

    /// Registers `descriptor` once, edge-triggered, for reading and writing, tagged with
    /// `token` (`epoll_ctl(EPOLL_CTL_ADD)` with `EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`;
    /// `kevent` `EV_ADD | EV_CLEAR` for both filters). The kernel reports the current state
    /// at once, then each change.
    /// `readOnly`: for reading alone (the reactor's own waker, an eventfd that is always
    /// writable: every read of it would otherwise report a new edge).
    func register(_ descriptor: CInt, token: UInt64, readOnly: Bool = false) throws(Errno) {
        #if os(Linux)
        let events = readOnly
            ? CSOCKETS_EPOLLIN | CSOCKETS_EPOLLET
            : CSOCKETS_EPOLLIN | CSOCKETS_EPOLLOUT | CSOCKETS_EPOLLRDHUP | CSOCKETS_EPOLLET
        if csockets_epoll_ctl(fd, descriptor, 0, events, token) != 0 { throw Sys.lastErrno() }
        #else
        var changes = [
            kevent(ident: UInt(descriptor), filter: Int16(EVFILT_READ), flags: UInt16(EV_ADD | EV_CLEAR),
                   fflags: 0, data: 0, udata: UnsafeMutableRawPointer(bitPattern: UInt(token))),
            kevent(ident: UInt(descriptor), filter: Int16(EVFILT_WRITE), flags: UInt16(EV_ADD | EV_CLEAR),
                   fflags: 0, data: 0, udata: UnsafeMutableRawPointer(bitPattern: UInt(token))),
        ]
        if kevent(fd, &changes, readOnly ? 1 : 2, nil, 0, nil) < 0 { throw Sys.lastErrno() }
        #endif
    }

    /// Removes `descriptor` (`EPOLL_CTL_DEL`; `EV_DELETE`). Needed only for a descriptor
    /// that other holders keep open: the kernel drops the entry when the last is closed.
    func deregister(_ descriptor: CInt) {
        #if os(Linux)
        _ = csockets_epoll_del(fd, descriptor)
        #else
        var changes = [
            kevent(ident: UInt(descriptor), filter: Int16(EVFILT_READ), flags: UInt16(EV_DELETE), fflags: 0, data: 0, udata: nil),
            kevent(ident: UInt(descriptor), filter: Int16(EVFILT_WRITE), flags: UInt16(EV_DELETE), fflags: 0, data: 0, udata: nil),
        ]
        _ = kevent(fd, &changes, 2, nil, 0, nil)
        #endif
    }

    /// Room for the events of one wait.
    struct Events {
        static let capacity = 256
        var tokens = [UInt64](repeating: 0, count: capacity)
        var flags = [UInt32](repeating: 0, count: capacity)
        #if !os(Linux)
        var kevents = [kevent](repeating: kevent(), count: capacity)
        #endif
        var count = 0

        func event(_ i: Int) -> PollerEvent {
            #if os(Linux)
            let f = flags[i]
            let broken = CSOCKETS_EPOLLHUP | CSOCKETS_EPOLLERR
            return PollerEvent(token: tokens[i],
                               readable: f & (CSOCKETS_EPOLLIN | CSOCKETS_EPOLLRDHUP | broken) != 0,
                               writable: f & (CSOCKETS_EPOLLOUT | broken) != 0,
                               readClosed: f & (CSOCKETS_EPOLLRDHUP | broken) != 0,
                               writeClosed: f & broken != 0)
            #else
            let isRead = flags[i] & 0xffff == UInt32(UInt16(bitPattern: Int16(EVFILT_READ)))
            let eof = flags[i] >> 16 & UInt32(EV_EOF) != 0
            return PollerEvent(token: tokens[i], readable: isRead, writable: !isRead,
                               readClosed: isRead && eof, writeClosed: !isRead && eof)
            #endif
        }
    }

    /// Waits for events for at most `nanoseconds` (nil: until one comes; 0: just look):
    /// `epoll_pwait2(2)`, whose limit is in nanoseconds (`epoll_wait` with milliseconds
    /// rounded up on kernels before 5.11); `kevent(2)` on Darwin. EINTR comes back as a
    /// failure; the caller loops.
    func wait(_ events: inout Events, nanoseconds: Int64?) -> Result<Int, Errno> {
        var ts = timespec()
        if let nanoseconds {
            ts.tv_sec = .init(nanoseconds / 1_000_000_000)
            ts.tv_nsec = .init(nanoseconds % 1_000_000_000)
        }
        #if os(Linux)
        let n = events.tokens.withUnsafeMutableBufferPointer { tokens in
            events.flags.withUnsafeMutableBufferPointer { flags in
                nanoseconds == nil
                    ? csockets_epoll_wait(fd, tokens.baseAddress, flags.baseAddress, CInt(Events.capacity), nil)
                    : csockets_epoll_wait(fd, tokens.baseAddress, flags.baseAddress, CInt(Events.capacity), &ts)
            }
        }
        if n < 0 { events.count = 0; return .failure(Sys.lastErrno()) }
        events.count = Int(n)
        #else
        let n = events.kevents.withUnsafeMutableBufferPointer { list in
            nanoseconds == nil
                ? kevent(fd, nil, 0, list.baseAddress, CInt(Events.capacity), nil)
                : kevent(fd, nil, 0, list.baseAddress, CInt(Events.capacity), &ts)
        }
        if n < 0 { events.count = 0; return .failure(Sys.lastErrno()) }
        for i in 0..<Int(n) {
            events.tokens[i] = UInt64(UInt(bitPattern: events.kevents[i].udata))
            // The filter in the low half, the kevent flags (EV_EOF) in the high half.
            events.flags[i] = UInt32(UInt16(bitPattern: events.kevents[i].filter)) | UInt32(events.kevents[i].flags) << 16
        }
        events.count = Int(n)
        #endif
        return .success(events.count)
    }
}
