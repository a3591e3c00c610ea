import SystemPackage

/// The retry-and-classify policy over the thin shims of Syscalls.swift: what one attempt of
/// a call came to.
enum Attempt {
    /// Runs `syscall` once (more only after EINTR) and classifies its answer: the value;
    /// nil for "not yet" — EAGAIN/EWOULDBLOCK, or EINTR on an attempt that was allowed to
    /// sleep in the kernel (trying again would restart the kernel's timer from zero, so the
    /// wait loop plans the rest of the wait with the time that is left); any other errno is
    /// thrown. An attempt that may not wait retries EINTR at once.
    @inline(__always)
    static func run<T>(mayWait: Bool, _ syscall: () -> Result<T, Errno>) throws(Errno) -> T? {
        while true {
            switch syscall() {
            case .success(let value):
                return value
            case .failure(let e):
                if e == .resourceTemporarilyUnavailable || e == .wouldBlock { return nil }
                if e == .interrupted {
                    if mayWait { return nil }
                    continue
                }
                throw e
            }
        }
    }
}
