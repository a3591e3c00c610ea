#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import Dispatch
import Sockets

/// How a relay session ends (the OpenBSD nc model; see the README's "The `sock` tool").
struct SessionRules: Sendable {
    enum Role: Sendable {
        /// `connect`: done when both directions are done — all of stdin sent, and the peer's
        /// side finished and written out.
        case client
        /// `listen`: done when the peer's side has finished and been written out; input
        /// stdin still has ready is sent, but stdin is not waited for.
        case listener
    }

    var role: Role
    /// Shut down the write side (a TCP FIN) at the end of stdin; false keeps it open until the
    /// session ends, for peers that take a half-close for a hang-up.
    var shutdownAtEndOfInput = true
    /// End this long after the end of stdin (all of it sent) even if the peer has not finished.
    var quitAfter: Duration?
    /// End with exit 124 once nothing has moved in either direction for this long.
    var idleTimeout: Duration?
    /// Say on stderr when the session starts and ends, with the addresses and the bytes each way.
    var verbose = false

    /// After the peer has finished, a listener goes on sending what stdin delivers until stdin
    /// has had nothing to read for this long (or ends): a producer that is still writing is
    /// not cut off, and a stdin that is idle (a terminal, `sleep 30 |`) is not waited for.
    static let inputPause: Duration = .milliseconds(250)
}

/// Copies stdin to a connection and the connection to stdout, as netcat does, and decides
/// when the session is over: `run()` on the calling thread, the two directions on threads of
/// their own with blocking calls. Every byte is accounted for: whatever was read and could not
/// be delivered ends the session with an error that says how much.
final class Relay: Sendable {
    let socket: Socket
    /// What is sent on and received from: `socket`, or TLS over it.
    let connection: RelayConnection
    let rules: SessionRules
    /// Not connected (a Unix datagram listener): stdin goes to the sender of the last datagram.
    private let replying: Bool
    /// Say `datagram from ADDRESS` on stderr when the sender changes (replying only).
    private let announceSenders: Bool

    /// Where stdin stands.
    private enum Input {
        /// Waiting for stdin to become readable, since that instant (everything read is sent).
        case waiting(since: ContinuousClock.Instant)
        /// Reading stdin or sending what was read.
        case busy
        /// End of stdin seen, everything sent (and the write side shut down if asked), then.
        case ended(at: ContinuousClock.Instant)
        /// The session ended without waiting for more of stdin (never read after this).
        case abandoned
    }

    /// Why the session ended badly.
    private enum Failure {
        case socket(SocketError)
        case stdin(Int32)
        case stdout(Int32)
        /// Stdin had something to send, and the last datagram came from a socket with no address.
        case unnamedSender
    }

    private struct State {
        var input: Input
        var inputRead = 0
        var sent = 0
        var received = 0
        var written = 0
        /// The peer's end of stream was seen and everything received written out, then.
        var peerFinished: ContinuousClock.Instant?
        var lastActivity: ContinuousClock.Instant
        var failure: Failure?
        /// Set by `run()` before it closes the socket: errors after it are the closing's.
        var ending = false
        /// Where stdin goes when replying: the last datagram's sender.
        var replyTo: SocketAddress?
    }

    /// The library's lock (pthread underneath), not Synchronization's Mutex, whose contended
    /// paths ThreadSanitizer cannot see (it reported every hand-off as a race).
    private let state: Locked<State>
    /// Signalled when something `run()` decides on changes.
    private let changed = DispatchSemaphore(value: 0)

    /// `received`: bytes already received and written to stdout (a datagram listener's first
    /// datagram). `replyingTo`: the socket is not connected; stdin goes to this address, then
    /// to the sender of each later datagram.
    convenience init(socket: Socket, rules: SessionRules, received: Int = 0, replyingTo: SocketAddress? = nil,
                     announceSenders: Bool = false) {
        self.init(connection: .plain(socket), rules: rules, received: received, replyingTo: replyingTo,
                  announceSenders: announceSenders)
    }

    init(connection: RelayConnection, rules: SessionRules, received: Int = 0, replyingTo: SocketAddress? = nil,
         announceSenders: Bool = false) {
        self.connection = connection
        self.socket = connection.socket
        self.rules = rules
        self.replying = replyingTo != nil
        self.announceSenders = announceSenders
        let now = ContinuousClock.now
        state = Locked(State(input: .waiting(since: now), received: received, written: received, lastActivity: now,
                             replyTo: replyingTo))
    }

    /// UDP (or a Unix datagram socket): a read of stdin is one datagram, an empty datagram is
    /// not an end of stream (there is none), and there is no half-close.
    private var datagrams: Bool { socket.type == .datagram }

    /// How the session ended.
    enum Ending {
        case done
        case quit
        case idle(Duration)
        case failed
    }

    /// Relays until the session is over, closes the socket, reports anything undelivered on
    /// stderr and returns the exit code.
    func run() -> ExitCode {
        let start = ContinuousClock.now
        // Both addresses, for -v, while the socket is open.
        let local = (try? socket.localAddress).map { "\($0)" } ?? "?"
        let peer = ((replying ? state.withLock { $0.replyTo } : nil) ?? (try? socket.peerAddress)).map { "\($0)" } ?? "?"
        if rules.verbose {
            printError(rules.role == .client ? "sock: connected to \(peer) from \(local)" : "sock: connection from \(peer) to \(local)")
        }
        socket.timeout = .never  // run() ends every wait (idle timeout, quit) by closing
        // A closed stdout is reported (how much was not written), not a silent SIGPIPE death.
        signal(SIGPIPE, SIG_IGN)
        startThread { [self] in upload() }
        startThread { [self] in download() }
        // What the kernel still has to deliver (SIOCOUTQ): while the peer reads, it goes down,
        // and that is movement though neither thread does anything. Sampled as often as a
        // tenth of the idle timeout (at most every 100 ms), so a queue that drains between two
        // looks is never taken for silence.
        var unacknowledged = queuedToSend()
        let sampleEvery: Duration? = rules.idleTimeout.map { min(max($0 / 10, .milliseconds(10)), .milliseconds(100)) }
        while true {
            let now = ContinuousClock.now
            if sampleEvery != nil, let queued = queuedToSend(), queued != unacknowledged {
                unacknowledged = queued
                state.withLock { $0.lastActivity = now }
            }
            let (ending, decidedWake) = state.withLock { decide(&$0, now: now) }
            var wakeAt = decidedWake
            if let sampleEvery, ending == nil, unacknowledged.map({ $0 > 0 }) == true {
                wakeAt = min(wakeAt ?? now + sampleEvery, now + sampleEvery)
            }
            if let ending {
                state.withLock { $0.ending = true }
                connection.close()  // ends the threads' socket calls; stdin and stdout ones die with the process
                if rules.verbose { printError("sock: closed \(peer) after \(formatElapsed(.now - start)): \(summary(ending))") }
                return report(ending)
            }
            if let wakeAt {
                let left = wakeAt - now
                _ = changed.wait(timeout: .now() + .nanoseconds(Int(clamping: nanoseconds(left))))
            } else {
                changed.wait()
            }
        }
    }

    /// Whether the session is over, and if not, when to look again (nil: when told).
    private func decide(_ s: inout State, now: ContinuousClock.Instant) -> (Ending?, ContinuousClock.Instant?) {
        if s.failure != nil { return (.failed, nil) }
        var wakeAt: ContinuousClock.Instant?
        func wake(at instant: ContinuousClock.Instant) { wakeAt = min(wakeAt ?? instant, instant) }
        if s.peerFinished != nil {
            switch (s.input, rules.role) {
            case (.ended, _):
                return (.done, nil)
            case (.waiting(let since), .listener):
                if now - since >= SessionRules.inputPause {
                    s.input = .abandoned
                    return (.done, nil)
                }
                wake(at: since + SessionRules.inputPause)
            default:
                break
            }
        }
        if case .ended(let at) = s.input, let quitAfter = rules.quitAfter {
            if now - at >= quitAfter { return (.quit, nil) }
            wake(at: at + quitAfter)
        }
        if let idle = rules.idleTimeout {
            if now - s.lastActivity >= idle { return (.idle(idle), nil) }
            wake(at: s.lastActivity + idle)
        }
        return (nil, wakeAt)
    }

    /// Bytes sent but not yet acknowledged by the peer (`SIOCOUTQ`), where the system says.
    private func queuedToSend() -> Int? {
        #if os(Linux)
        var count: CInt = 0
        let result = try? socket.withUnsafeDescriptor { fd in ioctl(fd, UInt(TIOCOUTQ), &count) }
        return result == 0 ? Int(count) : nil
        #else
        return nil
        #endif
    }

    /// Records the first failure and tells `run()`.
    private func fail(_ failure: Failure) {
        state.withLock { s in
            if s.failure == nil && !s.ending { s.failure = failure }
        }
        changed.signal()
    }

    /// stdin to the socket.
    private func upload() {
        // The largest UDP payload over IPv4 (65,535 less the IP and UDP headers).
        var buffer = [UInt8](repeating: 0, count: datagrams ? 65_507 : 65_536)
        while true {
            // Wait without consuming anything: once run() has given up on stdin, nothing more
            // is read from it, so nothing read is ever dropped.
            let readable = waitForInput(0)
            let goOn = state.withLock { s -> Bool in
                if case .abandoned = s.input { return false }
                s.input = .busy
                return true
            }
            guard goOn else { return }
            let count = readable ? readSome(0, into: &buffer) : 0
            if count < 0 { return fail(.stdin(errno)) }
            if count == 0 { return endOfInput() }
            state.withLock { s in
                s.inputRead += count
                s.lastActivity = .now
            }
            var offset = 0
            while offset < count {
                do throws(SocketError) {
                    let n: Int
                    if replying {
                        guard let to = state.withLock({ $0.replyTo }), to != .unix(path: "") else { return fail(.unnamedSender) }
                        n = try socket.send(buffer[offset..<count], to: to)
                    } else {
                        n = try connection.send(buffer[offset..<count])
                    }
                    offset += n
                    state.withLock { s in
                        s.sent += n
                        s.lastActivity = .now
                    }
                } catch {
                    return fail(.socket(error))
                }
            }
            let tell = state.withLock { s -> Bool in
                s.input = .waiting(since: .now)
                return rules.role == .listener && s.peerFinished != nil
            }
            if tell { changed.signal() }
        }
    }

    private func endOfInput() {
        if rules.shutdownAtEndOfInput && !datagrams {
            do throws(SocketError) { try connection.shutdownWrite() } catch { return fail(.socket(error)) }
        }
        state.withLock { $0.input = .ended(at: .now) }
        changed.signal()
    }

    /// The socket to stdout.
    private func download() {
        while true {
            let chunk: [UInt8]
            do throws(SocketError) {
                if replying {
                    let (bytes, sender) = try socket.receiveDatagram(upTo: 65_536)
                    let newSender = state.withLock { s -> Bool in
                        defer { s.replyTo = sender }
                        return s.replyTo != sender
                    }
                    if newSender && announceSenders { printError("datagram from \(sender)") }
                    chunk = bytes
                } else {
                    chunk = try connection.receive(upTo: 65_536)
                }
            } catch {
                return fail(.socket(error))
            }
            if chunk.isEmpty && datagrams {
                state.withLock { $0.lastActivity = .now }
                continue
            }
            if chunk.isEmpty {
                state.withLock { $0.peerFinished = .now }
                changed.signal()
                return
            }
            state.withLock { s in
                s.received += chunk.count
                s.lastActivity = .now
            }
            let ok = writeAll(1, chunk) { n in
                state.withLock { s in
                    s.written += n
                    s.lastActivity = .now
                }
            }
            if !ok { return fail(.stdout(errno)) }
        }
    }

    /// The -v line's account of the session: bytes each way, and why it ended.
    private func summary(_ ending: Ending) -> String {
        let s = state.withLock { $0 }
        let why = switch ending {
        case .done: s.peerFinished == nil ? "stdin sent" : "both sides done"
        case .quit: "quit after the end of stdin"
        case .idle: "idle"
        case .failed: "failed"
        }
        return "sent \(bytes(s.sent)) (of \(bytes(s.inputRead)) read), received \(bytes(s.received)) (\(bytes(s.written)) written); \(why)"
    }

    /// Prints what went wrong and what was not delivered; the exit code.
    private func report(_ ending: Ending) -> ExitCode {
        let s = state.withLock { $0 }
        var lost: [String] = []
        if s.inputRead > s.sent { lost.append("\(bytes(s.inputRead - s.sent)) read from stdin not sent") }
        if s.received > s.written { lost.append("\(bytes(s.received - s.written)) received not written to stdout") }
        // An upload cut short: stdin had delivered something, and not its end.
        let inputCut: Bool
        switch s.input {
        case .ended: inputCut = false
        default: inputCut = s.inputRead > 0
        }
        let totals = "sent \(bytes(s.sent)), received \(bytes(s.received))"
        switch ending {
        case .done:
            return .success
        case .quit:
            // What the operator asked for (nc -q): the peer's side may not have finished.
            return .success
        case .idle(let idle):
            var text = "sock: idle for \(formatDuration(idle)): nothing moved either way (\(totals))"
            if !lost.isEmpty { text += "; \(lost.joined(separator: ", "))" }
            if inputCut { text += "; stdin not read to its end" }
            printError(text)
            return Exit.timedOut
        case .failed:
            let code: ExitCode
            var text: String
            switch s.failure {
            case .socket(let error):
                text = "sock: \(error)"
                code = error.kind == .timedOut ? Exit.timedOut : Exit.network
            case .stdin(let number):
                text = "sock: reading stdin failed: \(String(cString: strerror(number)))"
                code = Exit.network
            case .stdout(let number):
                text = "sock: writing to stdout failed: \(String(cString: strerror(number)))"
                code = Exit.network
            case .unnamedSender:
                text = "sock: cannot send stdin: the last datagram came from a socket not bound to a path, which cannot be answered"
                code = Exit.network
            case nil:
                text = "sock: relay failed"
                code = Exit.network
            }
            text += " (\(totals))"
            if !lost.isEmpty { text += "; \(lost.joined(separator: ", "))" }
            if inputCut { text += "; stdin not read to its end" }
            printError(text)
            return code
        }
    }
}

/// `1 byte`, `65536 bytes`.
func bytes(_ count: Int) -> String { count == 1 ? "1 byte" : "\(count) bytes" }

/// A duration in the library's own wording (`1s`, `250ms`).
func formatDuration(_ d: Duration) -> String {
    (try? SocketTimeout.after(d))?.description ?? "\(d)"
}

/// Whole nanoseconds in `d`, saturating.
func nanoseconds(_ d: Duration) -> Int64 {
    let (whole, part) = d.attoseconds.quotientAndRemainder(dividingBy: 1_000_000_000)
    return Int64(clamping: part > 0 ? whole + 1 : whole)
}
