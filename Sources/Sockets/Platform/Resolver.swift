// getaddrinfo(3), and detached threads to run it on (ResolverPool.swift), so a caller's
// deadline can bound it.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import SystemPackage

extension Sys {
    /// A failed `getaddrinfo`: its `EAI_*` code and `gai_strerror` text.
    struct ResolveFailure: Error {
        let message: String
        let errno: Errno?
    }

    /// `getaddrinfo(3)` for `host` and numeric `port`, one socket type, any family (or only
    /// `family`: `AF_INET` asks for A records, `AF_INET6` for AAAA). Blocks for as long as
    /// the system resolver takes.
    static func getAddrInfo(host: String, port: UInt16, type: CInt, family: CInt = AF_UNSPEC) -> Result<[SocketAddress], ResolveFailure> {
        #if DEBUG
        if let injected = Seam.beforeResolve(host) { return .failure(ResolveFailure(message: injected, errno: nil)) }
        #endif
        var hints = addrinfo()
        hints.ai_family = family
        hints.ai_socktype = type
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0 else {
            let errno: Errno? = rc == EAI_SYSTEM ? lastErrno() : nil
            let message = String(cString: gai_strerror(rc))
            return .failure(ResolveFailure(message: message, errno: errno))
        }
        defer { freeaddrinfo(list) }
        var result: [SocketAddress] = []
        var node = list
        while let info = node {
            if let sa = info.pointee.ai_addr, info.pointee.ai_family == AF_INET || info.pointee.ai_family == AF_INET6 {
                var storage = sockaddr_storage()
                let length = min(Int(info.pointee.ai_addrlen), MemoryLayout<sockaddr_storage>.size)
                withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: UnsafeRawBufferPointer(start: sa, count: length)) }
                let address = SocketAddress(storage: storage, length: socklen_t(length))
                if !result.contains(address) { result.append(address) }
            }
            node = info.pointee.ai_next
        }
        return .success(result)
    }

    private final class ThreadBody {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    /// Runs `body` on a new detached thread (`pthread_create`). False if no thread could
    /// be made (the caller then runs the work itself).
    static func spawnDetached(_ body: @escaping @Sendable () -> Void) -> Bool {
        let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, CInt(PTHREAD_CREATE_DETACHED))
        #if canImport(Darwin)
        var thread: pthread_t?
        let rc = pthread_create(&thread, &attributes, { raw in
            Unmanaged<ThreadBody>.fromOpaque(raw).takeRetainedValue().run()
            return nil
        }, context)
        #else
        var thread = pthread_t()
        let rc = pthread_create(&thread, &attributes, { raw in
            Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue().run()
            return nil
        }, context)
        #endif
        if rc != 0 {
            Unmanaged<ThreadBody>.fromOpaque(context).release()
            return false
        }
        return true
    }
}

extension Sys {
    static let anyFamily = AF_UNSPEC
}

/// Runs `body` on a new detached thread (`pthread_create`); false if no thread could be made.
/// For this package's `sock` tool, which would otherwise need Foundation's `Thread` (and
/// Foundation's start-up cost) for its relay threads.
package func spawnDetachedThread(_ body: @escaping @Sendable () -> Void) -> Bool {
    Sys.spawnDetached(body)
}
