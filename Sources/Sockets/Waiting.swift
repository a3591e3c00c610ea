import SystemPackage

/// The time one call may spend waiting, fixed when the call starts: one instant on the
/// monotonic `ContinuousClock`, the earlier of (start + the socket's timeout) and the
/// caller's deadline. Every retry inside the call (EINTR, a spurious wake-up, EAGAIN after
/// readiness) waits only for what is left, so a signal can neither shorten nor lengthen it.
struct WaitBudget {
    enum Limit {
        /// Wait as long as it takes.
        case forever
        /// Do not wait: the socket is non-blocking.
        case none
        /// Wait until this instant.
        case until(ContinuousClock.Instant)
    }

    let limit: Limit
    /// How long the call was allowed in all, for the timeout message.
    let allotted: Duration?
    let operation: SocketError.Operation
    let address: SocketAddress?

    /// - Throws: ``SocketError/Kind/timedOut`` at once, before any system call, when
    ///   `deadline` has already passed (even if the operation could complete now).
    init(
        _ timeout: SocketTimeout, deadline: ContinuousClock.Instant?,
        _ operation: SocketError.Operation, address: SocketAddress?
    ) throws(SocketError) {
        self.operation = operation
        self.address = address
        guard let deadline else {
            switch timeout.mode {
            case .never: (limit, allotted) = (.forever, nil)
            case .nonBlocking: (limit, allotted) = (.none, nil)
            case .after(let d): (limit, allotted) = (.until(.now + d), d)
            }
            return
        }
        let now = ContinuousClock.now
        guard deadline > now else {
            throw SocketError(.timedOut, operation, address: address, timeout: .zero)
        }
        switch timeout.mode {
        case .never:
            (limit, allotted) = (.until(deadline), deadline - now)
        case .nonBlocking:
            (limit, allotted) = (.none, nil)
        case .after(let d):
            let end = now + d
            (limit, allotted) = end < deadline ? (.until(end), d) : (.until(deadline), deadline - now)
        }
    }

    /// The error for a budget that has run out.
    var timedOut: SocketError {
        SocketError(.timedOut, operation, address: address, timeout: allotted)
    }

    /// The error for a non-blocking socket whose operation would have waited.
    func wouldBlock(_ errno: Errno = .resourceTemporarilyUnavailable) -> SocketError {
        SocketError(.wouldBlock, operation, address: address, errno: errno)
    }

    /// Blocks until `fd` is ready for `events` (or reports an error or hang-up, which the
    /// next attempt of the operation will surface), or the budget runs out.
    ///
    /// The kernel's wake-up decides nothing: after every return from `poll` the clock is
    /// read again, so the call never gives up before its instant, and EINTR simply loops
    /// with the time that is left.
    ///
    /// - Throws: ``SocketError/Kind/timedOut`` when the instant passes,
    ///   ``SocketError/Kind/wouldBlock`` for a non-blocking socket.
    func wait(_ fd: CInt, for events: Int16) throws(SocketError) {
        switch limit {
        case .none:
            throw wouldBlock()
        case .forever:
            while true {
                do throws(Errno) {
                    if try Sys.poll(fd, events: events, timeout: nil) != 0 { return }
                } catch .interrupted {
                    continue
                } catch {
                    throw SocketError(operation, errno: error, address: address)
                }
            }
        case .until(let end):
            while true {
                let now = ContinuousClock.now
                if now >= end { throw timedOut }
                do throws(Errno) {
                    if try Sys.poll(fd, events: events, timeout: end - now) != 0 { return }
                } catch .interrupted {
                    continue
                } catch {
                    throw SocketError(operation, errno: error, address: address)
                }
            }
        }
    }

    /// The time left before the budget's instant; nil when it has none.
    var remaining: Duration? {
        if case .until(let end) = limit { return end - .now }
        return nil
    }
}
