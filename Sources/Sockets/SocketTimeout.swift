/// How long a socket's blocking operations may wait: forever, not at all, or for a time.
///
/// Python overloads one number (`None`, `0`, `> 0`) for the three modes, and `0` meaning
/// "non-blocking" is a well-known trap. Here the mode is spelled out, and a timed value is
/// validated when it is made:
/// ```swift
/// socket.timeout = .never                       // block until done (the initial default)
/// socket.timeout = .nonBlocking                 // fail at once with .wouldBlock
/// socket.timeout = try .after(.seconds(3))      // fail with .timedOut after 3 s
/// socket.timeout = try .seconds(1.5)            // the same from a Double
/// ```
/// The timeout applies to each blocking call separately (accept, connect, send, receive);
/// `sendAll` and `receive(exactly:)` get one timeout for the whole transfer. A per-call
/// `deadline:` can shorten any of them; see ``Socket``.
public struct SocketTimeout: Hashable, Sendable, CustomStringConvertible {
    /// The three modes, for inspecting a timeout.
    public enum Mode: Hashable, Sendable {
        /// Wait as long as it takes.
        case never
        /// Never wait: an operation that would block fails with ``SocketError/Kind/wouldBlock``.
        case nonBlocking
        /// Wait at most this long, then fail with ``SocketError/Kind/timedOut``.
        case after(Duration)
    }

    /// Which mode this is.
    public let mode: Mode

    /// The timed mode's duration in whole nanoseconds (0 otherwise), and the kernel timer
    /// that goes with it (see Calls/KernelTimerPolicy.swift): worked out once here, so that a call
    /// does no Duration arithmetic.
    let nanoseconds: Int64
    let kernelTimer: Int64?

    private init(_ mode: Mode) {
        self.mode = mode
        if case .after(let d) = mode {
            nanoseconds = wholeNanoseconds(d)  // exact: after(_:) keeps whole nanoseconds
        } else {
            nanoseconds = 0
        }
        kernelTimer = nanoseconds > 0 ? KernelTimer.for(nanoseconds: nanoseconds) : nil
    }

    /// Operations wait until they can complete (Python `settimeout(None)`).
    public static let never = SocketTimeout(.never)
    /// Operations never wait (Python `settimeout(0)` / `setblocking(False)`).
    public static let nonBlocking = SocketTimeout(.nonBlocking)

    /// The largest timeout accepted: about 292 years, the range of a 64-bit nanosecond count.
    public static let maximum = Duration.nanoseconds(Int64.max)

    /// A timed mode: each blocking operation fails with ``SocketError/Kind/timedOut``
    /// after `duration`. Durations shorter than a nanosecond are rounded up: a tiny
    /// timeout is still a timeout, never non-blocking.
    ///
    /// - Throws: ``SocketError/Kind/invalidArgument`` for zero or negative durations
    ///   (use ``nonBlocking`` for "do not wait") and for durations over ``maximum``.
    public static func after(_ duration: Duration) throws(SocketError) -> SocketTimeout {
        guard duration > .zero else {
            throw SocketError(
                .invalidArgument, .setTimeout,
                detail: "a timeout must be positive, got \(duration); use .nonBlocking for no waiting or .never for no limit")
        }
        guard duration <= maximum else {
            throw SocketError(
                .invalidArgument, .setTimeout,
                detail: "timeout \(duration) is larger than the maximum (\(Int64.max) ns)")
        }
        let (s, atto) = duration.components
        if atto % 1_000_000_000 != 0 {  // round up to whole nanoseconds
            return SocketTimeout(.after(.seconds(s) + .nanoseconds(atto / 1_000_000_000 + 1)))
        }
        return SocketTimeout(.after(duration))
    }

    /// A timed mode from a number of seconds, as Python's `settimeout(1.5)`.
    ///
    /// - Throws: ``SocketError/Kind/invalidArgument`` for NaN, infinity, zero, negative
    ///   values and values over ``maximum``.
    public static func seconds(_ seconds: Double) throws(SocketError) -> SocketTimeout {
        guard seconds.isFinite else {
            throw SocketError(.invalidArgument, .setTimeout, detail: "a timeout must be a finite number of seconds, got \(seconds)")
        }
        guard seconds > 0 else {
            throw SocketError(
                .invalidArgument, .setTimeout,
                detail: "a timeout must be positive, got \(seconds)s; use .nonBlocking for no waiting or .never for no limit")
        }
        guard seconds <= 9_223_372_036.854775807 else {
            throw SocketError(.invalidArgument, .setTimeout, detail: "timeout \(seconds)s is larger than the maximum (about 292 years)")
        }
        // Whole nanoseconds, rounded up so that a tiny positive value stays timed.
        let ns = (seconds * 1e9).rounded(.up)
        return try after(.nanoseconds(ns >= 9.223372036854775e18 ? Int64.max : Int64(ns)))
    }

    /// The duration of a timed mode; nil for ``never`` and ``nonBlocking``.
    public var duration: Duration? {
        if case .after(let d) = mode { return d }
        return nil
    }

    /// `never`, `non-blocking`, or the duration: `3s`, `1.5s`, `250ms`.
    public var description: String {
        switch mode {
        case .never: "never"
        case .nonBlocking: "non-blocking"
        case .after(let d): formatDuration(d)
        }
    }
}

extension SocketTimeout {
    /// When a whole operation that starts at `start` must end: after this timeout or at
    /// `deadline`, whichever is earlier (nil: neither limits it).
    package func end(from start: ContinuousClock.Instant, deadline: ContinuousClock.Instant?) -> ContinuousClock.Instant? {
        guard let d = duration else { return deadline }
        return min(deadline ?? start + d, start + d)
    }

    /// Which of the two limits the user gave ends such an operation, and how long it
    /// allowed: what its timeout message names ("timed out after 5s", "the deadline passed").
    package func limit(from start: ContinuousClock.Instant, deadline: ContinuousClock.Instant?) -> (allowed: Duration?, cause: SocketError.TimeoutCause) {
        let byTimeout = duration.map { d in deadline.map { start + d <= $0 } ?? true } ?? false
        return byTimeout ? (duration, .timeout) : (deadline.map { $0 - start }, .deadline)
    }
}
