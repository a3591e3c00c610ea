#if DEBUG
import SystemPackage
// A seam for what the kernel will not do on demand, in debug builds only (swift-system's
// `ENABLE_MOCKING`, Go's `hook_unix.go`): tests (`@testable import Sockets`) install a
// hook that every data shim in Syscalls.swift consults before it calls the kernel. The
// hook may return an errno to fail with instead (EINTR, EAGAIN after readiness, ...), or
// act at that instant — call `close()` between a call's start and its system call, change
// the timeout between the planning of a kernel timer and the kernel reading it — and
// return nil to let the real call go ahead. Release builds have no trace of it.

/// The debug-only fault-injection hook (see the comment above).
enum Seam {
    /// The system calls the seam sits in front of.
    enum Syscall: Sendable {
        case accept, connect, send, recv, sendTo, recvFrom, poll, getpeername
    }

    /// The hook: the call about to be made, its descriptor, and whether it may sleep in
    /// the kernel (a blocking attempt). Returns an errno to fail with, or nil.
    typealias Hook = @Sendable (_ call: Syscall, _ fd: CInt, _ mayWait: Bool) -> Errno?

    private static let installed = Locked<Hook?>(nil)

    /// Installs `hook` (nil removes it). Tests run one at a time (`--no-parallel`), and a
    /// hook should act only on the descriptors of its own test.
    static func install(_ hook: Hook?) { installed.withLock { $0 = hook } }

    /// Called on a resolver thread before each `getaddrinfo(3)` with the host: a test's
    /// stand-in for a resolver that hangs. It may block until the test lets it go, then
    /// return an error for the lookup (no query is sent), or return nil to go ahead.
    typealias ResolveHook = @Sendable (_ host: String) -> String?
    private static let resolveHook = Locked<ResolveHook?>(nil)
    static func installResolveHook(_ hook: ResolveHook?) { resolveHook.withLock { $0 = hook } }
    static func beforeResolve(_ host: String) -> String? { resolveHook.withLock { $0 }?(host) }

    static func fault(_ call: Syscall, _ fd: CInt, mayWait: Bool = false) -> Errno? {
        guard let hook = installed.withLock({ $0 }) else { return nil }
        return hook(call, fd, mayWait)
    }
}
#endif
