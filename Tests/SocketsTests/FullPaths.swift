import Foundation
import Sockets

// Helpers shared by CloseEveryWaitTests and CloseRegressionTests: paths made full on purpose
// (asserted, never assumed), and what measures a waiting call.

/// How a call ended, stamped in the thread that made it the moment it returned.
struct Ending: Sendable {
    /// nil: the call succeeded.
    var error: SocketError?
    /// An error that is not a `SocketError`.
    var other: String?
    var at: ContinuousClock.Instant

    static func of(_ body: () throws -> Void) -> Ending {
        do {
            try body()
            return Ending(error: nil, other: nil, at: .now)
        } catch let error as SocketError {
            return Ending(error: error, other: nil, at: .now)
        } catch {
            return Ending(error: nil, other: "\(error)", at: .now)
        }
    }

    var summary: String {
        if let error { return "\(error.kind) (\(error))" }
        return other ?? "success"
    }
}

/// A fresh directory for Unix socket paths, removed with everything in it by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "sockets-close-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// One try, as a `Result` (a typed `do` with a filtered `catch` can hang Swift 6.3's SIL
/// optimizer; see Helpers.swift).
func attempt<T>(_ body: () throws(SocketError) -> T) -> Result<T, SocketError> {
    Result { () throws(SocketError) in try body() }
}

/// Receives whatever is queued on `socket`, without waiting, until nothing more comes for a
/// while or `limit` passes.
func drain(_ socket: Socket, within limit: Duration) {
    let end = ContinuousClock.now + limit
    socket.timeout = .nonBlocking
    var idle = 0
    while ContinuousClock.now < end && idle < 20 {
        if (try? socket.receive(upTo: 65_536)) != nil { idle = 0 } else { idle += 1; pause(.milliseconds(5)) }
    }
}

/// An unconnected Unix datagram receiver at `path` whose queue is full: a datagram from a
/// fresh sender, whose own send buffer is empty, would block (checked).
func fullUnixDatagramReceiver(at path: String) throws -> (Socket, [Socket], SocketAddress) {
    let receiver = try Socket(.unix, .datagram)
    let address = SocketAddress.unix(path: path)
    try receiver.bind(to: address)
    try receiver.setOption(.receiveBufferSize, 65_536)
    var fillers: [Socket] = []
    for _ in 0..<8 {
        let filler = try Socket(.unix, .datagram)
        filler.timeout = .nonBlocking
        try filler.setOption(.sendBufferSize, 262_144)
        fillers.append(filler)
        fill: for _ in 0..<4096 {
            switch attempt({ () throws(SocketError) in try filler.send([0], to: address) }) {
            case .success: continue
            case .failure(let error) where error.kind == .wouldBlock: break fill
            case .failure(let error): throw error
            }
        }
        let probe = try Socket(.unix, .datagram)
        probe.timeout = .nonBlocking
        defer { probe.close() }
        switch attempt({ () throws(SocketError) in try probe.send([0], to: address) }) {
        case .success: continue  // taken: the receiver had room; fill more
        case .failure(let error) where error.kind == .wouldBlock: return (receiver, fillers, address)
        case .failure(let error): throw error
        }
    }
    throw TestFailure("the Unix datagram receiver was not full after 8 fillers")
}

/// A Unix stream listener at `path` with a backlog of 0 whose queue is full: a non-blocking
/// connect to it would block (checked), so a blocking one sleeps on the listener's queue.
func fullUnixListener(at path: String) throws -> (Socket, [Socket], SocketAddress) {
    let listener = try Socket(.unix)
    listener.timeout = .never
    let address = SocketAddress.unix(path: path)
    try listener.bind(to: address)
    try listener.listen(backlog: 0)
    var fillers: [Socket] = []
    for _ in 0..<16 {
        let filler = try Socket(.unix)
        filler.timeout = .nonBlocking
        switch attempt({ () throws(SocketError) in try filler.connect(to: address) }) {
        case .success: fillers.append(filler)
        case .failure(let error) where error.kind == .wouldBlock: return (listener, fillers, address)
        case .failure(let error): throw error
        }
    }
    throw TestFailure("the Unix listener's queue was not full after 16 connects")
}

/// Accepts (without waiting) every connection queued on `listener`, at most 16, and returns
/// them.
@discardableResult
func acceptAll(_ listener: Socket) -> [Socket] {
    listener.timeout = .nonBlocking
    var accepted: [Socket] = []
    for _ in 0..<16 {
        guard let (connection, _) = try? listener.accept() else { break }
        accepted.append(connection)
    }
    return accepted
}
/// CPU time (user + system) used by the calling thread (`getrusage(RUSAGE_THREAD)`).
func threadCPU() -> Duration {
    var usage = rusage()
    getrusage(__rusage_who_t(1), &usage)  // RUSAGE_THREAD, which Glibc's module leaves out
    return cpuTime(usage)
}

/// CPU time (user + system) used by the whole process.
func processCPUTime() -> Duration {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return cpuTime(usage)
}

func cpuTime(_ usage: rusage) -> Duration {
    .seconds(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + .microseconds(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
}
