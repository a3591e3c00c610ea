#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Sockets

/// A socket file this process made by binding a Unix socket to a path: a listener's, or the
/// temporary path a Unix datagram client binds so that its peer can reply. It is removed by
/// `remove()`, which every ordinary way out calls, and when the process is ended by SIGINT,
/// SIGTERM or SIGHUP — then it exits with 128 + the signal's number, as the default action
/// would have. Only while the path still names the file that was made: one made there since,
/// by anyone, is left alone.
final class OwnSocketFile {
    let path: String
    private let identity: [UInt64]
    private var signalSources: [DispatchSourceSignal] = []

    /// The file `socket` is bound to; nil if it is not bound to a Unix path.
    init?(_ socket: Socket) throws(SocketError) {
        guard case .unix(let path) = try socket.localAddress, !path.isEmpty, let identity = fileIdentity(path) else { return nil }
        self.path = path
        self.identity = identity
        signalSources = [SIGINT, SIGTERM, SIGHUP].map { (number: CInt) -> DispatchSourceSignal in
            signal(number, SIG_IGN)  // the source sees it; the default action would not remove the file
            var unblock = sigset_t()
            sigemptyset(&unblock)
            sigaddset(&unblock, number)
            pthread_sigmask(SIG_UNBLOCK, &unblock, nil)  // a parent may have left it blocked
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                // Not through the socket: a listener's close() (the library's own removal)
                // would wake the accept, whose thread could then exit with its own status (1)
                // before this one has removed the file.
                if fileIdentity(path) == identity { unlink(path) }
                exitProcess(128 + number)
            }
            // Registration is asynchronous (on the manager thread): until it is done, the
            // signal would be ignored (SIG_IGN, above), lost, and the process would go on. Wait
            // for it, so that a signal sent once the caller says it is ready (`listening on`)
            // is always seen.
            let registered = DispatchSemaphore(value: 0)
            source.setRegistrationHandler { registered.signal() }
            source.resume()
            registered.wait()
            return source
        }
    }

    /// Removes the file (if the path still names it) and stops watching for signals.
    func remove() {
        signalSources.forEach { $0.cancel() }
        signalSources = []
        if fileIdentity(path) == identity { unlink(path) }
    }
}

/// A fresh path for a Unix datagram client's own socket, `sock-PID-RANDOM.sock` in $TMPDIR
/// (or /tmp, if $TMPDIR is unset or too long for a socket path), as `nc -uU` binds one in /tmp.
func temporarySocketPath() -> String {
    let name = "sock-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16)).sock"
    var directory = getenv("TMPDIR").map { String(cString: $0) } ?? ""
    while directory.hasSuffix("/") { directory.removeLast() }
    // sun_path holds 108 bytes with its NUL on Linux (104 on the BSDs).
    if directory.isEmpty || directory.utf8.count + 1 + name.utf8.count > 103 { directory = "/tmp" }
    return directory + "/" + name
}
