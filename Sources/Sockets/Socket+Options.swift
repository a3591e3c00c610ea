import SystemPackage

/// A typed socket option: its C level and name, and how its value is encoded.
///
/// ```swift
/// try socket.setOption(.reuseAddress, true)
/// try socket.setOption(.linger, .zero)          // close sends RST
/// let size = try socket.option(.receiveBufferSize)
/// ```
/// For options without a typed form use ``Socket/setRawOption(level:name:value:)`` and
/// ``Socket/rawOption(level:name:)``.
public struct SocketOption<Value: Sendable>: Sendable, CustomStringConvertible {
    /// The C name, for messages (`SO_REUSEADDR`).
    public let name: String
    let get: @Sendable (CInt) throws(Errno) -> Value
    let set: @Sendable (CInt, Value) throws(Errno) -> Void
    let validate: @Sendable (Value) -> String?

    /// The C name, as ``name``.
    public var description: String { name }

    static func int(_ name: String, _ level: CInt, _ option: CInt) -> SocketOption<Int> {
        SocketOption<Int>(
            name: name,
            get: { (fd) throws(Errno) in Int(try Sys.intOption(fd, level: level, name: option)) },
            set: { (fd, value) throws(Errno) in try Sys.setIntOption(fd, level: level, name: option, CInt(value)) },
            validate: { value in
                value < 0 || value > Int(CInt.max) ? "\(name) must be from 0 to \(CInt.max), got \(value)" : nil
            })
    }

    static func bool(_ name: String, _ level: CInt, _ option: CInt) -> SocketOption<Bool> {
        SocketOption<Bool>(
            name: name,
            get: { (fd) throws(Errno) in try Sys.intOption(fd, level: level, name: option) != 0 },
            set: { (fd, value) throws(Errno) in try Sys.setIntOption(fd, level: level, name: option, value ? 1 : 0) },
            validate: { _ in nil })
    }
}

extension SocketOption where Value == Bool {
    /// `SO_REUSEADDR`: bind to a port that still has connections in TIME_WAIT.
    public static var reuseAddress: Self { bool("SO_REUSEADDR", Sys.solSocket, Sys.soReuseAddr) }
    /// `SO_REUSEPORT`: several sockets bind the same port and the kernel spreads connections.
    public static var reusePort: Self { bool("SO_REUSEPORT", Sys.solSocket, Sys.soReusePort) }
    /// `SO_KEEPALIVE`: probe idle TCP connections.
    public static var keepAlive: Self { bool("SO_KEEPALIVE", Sys.solSocket, Sys.soKeepAlive) }
    /// `SO_BROADCAST`: allow datagrams to broadcast addresses.
    public static var broadcast: Self { bool("SO_BROADCAST", Sys.solSocket, Sys.soBroadcast) }
    /// `TCP_NODELAY`: send small segments at once instead of coalescing them (Nagle off).
    public static var noDelay: Self { bool("TCP_NODELAY", Sys.ipprotoTCP, Sys.tcpNoDelay) }
    /// `IPV6_V6ONLY`: an IPv6 socket bound to `::` does not also take IPv4 connections.
    public static var ipv6Only: Self { bool("IPV6_V6ONLY", Sys.ipprotoIPv6, Sys.ipv6V6Only) }
}

extension SocketOption where Value == Int {
    /// `SO_RCVBUF` in bytes. Linux doubles the value set and reports the doubled size.
    public static var receiveBufferSize: Self { int("SO_RCVBUF", Sys.solSocket, Sys.soRcvBuf) }
    /// `SO_SNDBUF` in bytes. Linux doubles the value set and reports the doubled size.
    public static var sendBufferSize: Self { int("SO_SNDBUF", Sys.solSocket, Sys.soSndBuf) }
    /// `SO_RCVLOWAT`: a stream receive (and its readiness) waits for at least this many
    /// bytes, or end of stream, or the timeout. With a large buffer it makes bulk reads
    /// fewer and larger. With a timeout, a receive may return fewer bytes, or time out,
    /// when fewer arrive in time.
    public static var receiveLowWatermark: Self { int("SO_RCVLOWAT", Sys.solSocket, Sys.soRcvLowat) }
}

extension SocketOption where Value == Duration? {
    /// `SO_LINGER`: nil is off (close returns at once, the kernel sends what is left in the
    /// background); `.zero` makes close discard unsent data and reset the connection (RST);
    /// a positive duration (whole seconds, rounded up) makes close wait that long for
    /// unsent data to go out. (A socket with a positive linger that is released on a
    /// reactor's thread is closed by a helper thread, so the reactor never waits for it.)
    public static var linger: Self {
        SocketOption<Duration?>(
            name: "SO_LINGER",
            get: { (fd) throws(Errno) in
                let (on, seconds) = try Sys.lingerOption(fd)
                return on ? .seconds(seconds) : nil
            },
            set: { (fd, value) throws(Errno) in
                guard let value else { return try Sys.setLingerOption(fd, on: false, seconds: 0) }
                let (s, atto) = value.components
                try Sys.setLingerOption(fd, on: true, seconds: Int(s) + (atto > 0 ? 1 : 0))
            },
            validate: { value in
                guard let value else { return nil }
                if value < .zero { return "SO_LINGER must not be negative, got \(value)" }
                if value > .seconds(Int(CInt.max)) { return "SO_LINGER is at most \(CInt.max) seconds, got \(value)" }
                return nil
            })
    }
}

extension Socket {
    /// Sets a typed option (`setsockopt(2)`). Does not block.
    ///
    /// - Throws: ``SocketError`` — `.invalidArgument` for a value out of range or an
    ///   option this socket does not support (naming the option), `.closed`.
    public func setOption<Value>(_ option: SocketOption<Value>, _ value: Value) throws(SocketError) {
        if let problem = option.validate(value) {
            throw SocketError(.invalidArgument, .setOption, detail: problem)
        }
        try withDescriptor(.setOption, address: nil) { fd throws(SocketError) in
            do throws(Errno) { try option.set(fd, value) } catch { throw errorOrClosed(.setOption, error, address: nil).with(detail: option.name) }
        }
    }

    /// Reads a typed option (`getsockopt(2)`). Does not block.
    ///
    /// - Throws: ``SocketError`` — `.invalidArgument` for an option this socket does not
    ///   support, `.closed`.
    public func option<Value>(_ option: SocketOption<Value>) throws(SocketError) -> Value {
        try withDescriptor(.getOption, address: nil) { fd throws(SocketError) in
            do throws(Errno) { return try option.get(fd) } catch { throw errorOrClosed(.getOption, error, address: nil).with(detail: option.name) }
        }
    }

    /// The kernel timers back ``Socket/timeout`` (see Calls/KernelTimerPolicy.swift): set behind the
    /// library's back they would make waits longer or shorter than the timeout.
    private func refuseManagedOption(level: CInt, name: CInt) throws(SocketError) {
        guard level == Sys.solSocket, name == Sys.receiveTimer || name == Sys.sendTimer else { return }
        throw SocketError(
            .invalidArgument, .setOption,
            detail: "SO_RCVTIMEO and SO_SNDTIMEO are managed by the library; set Socket.timeout instead")
    }

    /// Sets an integer option by its C level and name, for options without a typed form.
    ///
    /// - Throws: `.invalidArgument` for `SO_RCVTIMEO` and `SO_SNDTIMEO`, which the library
    ///   manages for ``Socket/timeout``; the system's error otherwise.
    public func setRawOption(level: CInt, name: CInt, value: CInt) throws(SocketError) {
        try refuseManagedOption(level: level, name: name)
        try withDescriptor(.setOption, address: nil) { fd throws(SocketError) in
            do throws(Errno) { try Sys.setIntOption(fd, level: level, name: name, value) } catch {
                throw errorOrClosed(.setOption, error, address: nil).with(detail: "level \(level), option \(name)")
            }
        }
    }

    /// Sets an option from raw bytes (a C struct laid out by the caller).
    ///
    /// - Throws: `.invalidArgument` for `SO_RCVTIMEO` and `SO_SNDTIMEO`, which the library
    ///   manages for ``Socket/timeout``; the system's error otherwise.
    public func setRawOption(level: CInt, name: CInt, bytes: [UInt8]) throws(SocketError) {
        try refuseManagedOption(level: level, name: name)
        try withDescriptor(.setOption, address: nil) { fd throws(SocketError) in
            do throws(Errno) {
                try Sys.withBytes(bytes) { (b) throws(Errno) in try Sys.setOption(fd, level: level, name: name, b) }
            } catch {
                throw errorOrClosed(.setOption, error, address: nil).with(detail: "level \(level), option \(name)")
            }
        }
    }

    /// Reads an integer option by its C level and name.
    public func rawOption(level: CInt, name: CInt) throws(SocketError) -> CInt {
        try withDescriptor(.getOption, address: nil) { fd throws(SocketError) in
            do throws(Errno) { return try Sys.intOption(fd, level: level, name: name) } catch {
                throw errorOrClosed(.getOption, error, address: nil).with(detail: "level \(level), option \(name)")
            }
        }
    }

    /// Reads an option as raw bytes (at most `capacity` of them).
    public func rawOption(level: CInt, name: CInt, capacity: Int) throws(SocketError) -> [UInt8] {
        guard capacity >= 0 else {
            throw SocketError(.invalidArgument, .getOption, detail: "capacity must not be negative, got \(capacity)")
        }
        return try withDescriptor(.getOption, address: nil) { fd throws(SocketError) in
            var bytes = [UInt8](repeating: 0, count: capacity)
            do throws(Errno) {
                let n = try Sys.withMutableBytes(&bytes) { (b) throws(Errno) in try Sys.getOption(fd, level: level, name: name, b) }
                return Array(bytes.prefix(n))
            } catch {
                throw errorOrClosed(.getOption, error, address: nil).with(detail: "level \(level), option \(name)")
            }
        }
    }

    /// Reads and clears the socket's pending error (`SO_ERROR`): after a non-blocking
    /// ``connect(to:deadline:)-94vdi`` reports `.wouldBlock` and the socket becomes writable,
    /// nil means connected and an errno says why it failed.
    public func pendingError() throws(SocketError) -> Errno? {
        try withDescriptor(.getOption, address: nil) { fd throws(SocketError) in
            do throws(Errno) { return try Sys.pendingError(fd) } catch { throw errorOrClosed(.getOption, error, address: nil) }
        }
    }
}
