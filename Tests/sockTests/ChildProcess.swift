import Foundation
import Sockets
import Synchronization

/// The `sock` binary `swift test` built beside this test bundle.
let sockPath = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    .deletingLastPathComponent().appendingPathComponent("sock").path

/// A running child process — `sock`, or a tool a test needs — ended by its PID if it
/// outlives its time limit. Its stdout and stderr are read as they come (so a chatty child
/// never blocks on a full pipe).
final class ChildProcess {
    let process = Process()
    let stdin = Pipe()
    private let stdout = Pipe()
    private let stderr = Pipe()
    private let output = Captured()
    private let drained = DispatchGroup()

    /// Starts `command` (an executable's path, then its arguments); its stdin is `stdinFile`
    /// if given, else a pipe (`stdin`).
    init(command: [String], stdinFile: String? = nil) throws {
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        if let stdinFile {
            guard let file = FileHandle(forReadingAtPath: stdinFile) else { throw CLIFailure("cannot open \(stdinFile)") }
            process.standardInput = file
        } else {
            process.standardInput = stdin
        }
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        drain(stdout) { $0.out += $1 }
        drain(stderr) { $0.err += $1 }
    }

    /// Starts `sock arguments`. `openFileLimit` lowers RLIMIT_NOFILE first (through
    /// `sh -c 'ulimit -n N; exec sock ...'`, so the PID is sock's); `prefix` runs it under
    /// another command (`ip netns exec NS`).
    convenience init(_ arguments: [String], openFileLimit: Int? = nil, prefix: [String] = [], stdinFile: String? = nil) throws {
        var command = prefix + [sockPath] + arguments
        if let openFileLimit {
            command = ["/bin/sh", "-c", "ulimit -n \(openFileLimit) && exec \"$@\"", "sh"] + command
        }
        try self.init(command: command, stdinFile: stdinFile)
    }

    /// Starts `python3 -u -c script arguments...` (through `env`, which execs it: the PID is
    /// python's), a peer that is not sock.
    convenience init(python script: String, _ arguments: [String] = []) throws {
        try self.init(command: ["/usr/bin/env", "python3", "-u", "-c", script] + arguments)
    }

    /// Waits until stdout has a complete line starting with `prefix` (bounded by `limit`); returns it.
    func waitForOutputLine(startingWith prefix: String, within limit: Duration = .seconds(10)) throws -> String {
        try waitFor(limit, "a line starting with '\(prefix)' on stdout") {
            let text = out
            guard let end = text.lastIndex(of: "\n") else { return nil }
            return text[..<end].split(separator: "\n").first { $0.hasPrefix(prefix) }.map(String.init)
        }
    }

    /// What the child has written so far, filled by the reading threads. The library's
    /// pthread-based lock, not Synchronization's Mutex, whose contended hand-offs (stdout's
    /// and stderr's readers at once) ThreadSanitizer reports as races.
    private final class Captured: Sendable {
        let bytes = Locked<(out: [UInt8], err: [UInt8])>(([], []))
    }

    private func drain(_ pipe: Pipe, into append: @escaping @Sendable (inout (out: [UInt8], err: [UInt8]), Data) -> Void) {
        let handle = pipe.fileHandleForReading
        let output = self.output
        drained.enter()
        let group = drained
        Thread.detachNewThread {
            defer { group.leave() }
            while true {  // ends at EOF: when sock (and whatever shares its pipes) has exited
                let data = handle.availableData
                if data.isEmpty { return }
                output.bytes.withLock { append(&$0, data) }
            }
        }
    }

    var pid: pid_t { process.processIdentifier }
    var out: String { output.bytes.withLock { String(decoding: $0.out, as: UTF8.self) } }
    var err: String { output.bytes.withLock { String(decoding: $0.err, as: UTF8.self) } }

    /// Waits for exit, at most `limit`; kills the process (SIGTERM, then SIGKILL) past it.
    func finish(within limit: Duration = .seconds(20)) throws -> (status: Int32, out: String, err: String) {
        let end = ContinuousClock.now + limit
        while process.isRunning && ContinuousClock.now < end { usleep(10_000) }
        if process.isRunning {
            kill()
            throw CLIFailure("\(commandLine) still running after \(limit); killed")
        }
        process.waitUntilExit()  // it has exited: this only lets Foundation finish with it
        _ = drained.wait(timeout: .now() + 5)
        return (process.terminationStatus, out, err)
    }

    /// The command, for messages.
    var commandLine: String { ([process.executableURL?.path ?? "?"] + (process.arguments ?? [])).joined(separator: " ") }

    /// Ends the process by its PID. SIGKILL: a child spawned from a test-runner thread
    /// inherits its blocked signal mask, so SIGTERM could stay pending.
    func kill() {
        if process.isRunning { Glibc.kill(pid, SIGKILL) }
        process.waitUntilExit()
    }

    /// Waits until a line of stderr starts with `prefix` (bounded by `limit`); returns it.
    func waitForLine(startingWith prefix: String, within limit: Duration = .seconds(10)) throws -> String {
        try waitFor(limit, "a line starting with '\(prefix)' on stderr") {
            err.split(separator: "\n").first { $0.hasPrefix(prefix) }.map(String.init)
        }
    }

    /// Polls `found` every 10 ms until it returns a value, at most `limit`.
    func waitFor<T>(_ limit: Duration, _ what: String, _ found: () -> T?) throws -> T {
        let end = ContinuousClock.now + limit
        while ContinuousClock.now < end {
            if let value = found() { return value }
            usleep(10_000)
        }
        throw CLIFailure("no \(what) within \(limit); stderr: \(err.suffix(2000))")
    }

    /// Writes `text` to the child's stdin (what a child that has exited cannot take is
    /// dropped: SIGPIPE is blocked for this thread meanwhile, and one it raised is consumed).
    func send(_ text: String, thenClose: Bool = true) {
        let fd = stdin.fileHandleForWriting.fileDescriptor
        var pipeSignal = sigset_t(), saved = sigset_t(), pending = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &pipeSignal, &saved)
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { break }
            offset += n
        }
        sigpending(&pending)
        if sigismember(&pending, SIGPIPE) == 1 {
            var now = timespec()
            sigtimedwait(&pipeSignal, nil, &now)
        }
        pthread_sigmask(SIG_SETMASK, &saved, nil)
        if thenClose { try? stdin.fileHandleForWriting.close() }
    }

    /// The child's resident memory (VmRSS) in KiB.
    func residentKiB() throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) else {
            throw CLIFailure("no VmRSS for \(pid)")
        }
        return kib
    }

    /// CPU time the child has used (user + system), from /proc/PID/stat.
    func cpuTime() throws -> Duration {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15.
        let fields = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
        guard let user = Int(fields[11]), let system = Int(fields[12]) else { throw CLIFailure("bad /proc/\(pid)/stat") }
        return .milliseconds((user + system) * 1000 / sysconf(Int32(_SC_CLK_TCK)))
    }
}

struct CLIFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
