#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

#if canImport(Darwin)
typealias PlatformLock = os_unfair_lock
#else
typealias PlatformLock = pthread_mutex_t
#endif

/// A value that only one thread at a time may touch, guarded by a `pthread_mutex_t`
/// (`os_unfair_lock` on Darwin) that lives in the same heap block — SwiftNIO's
/// `NIOLockedValueBox` design.
///
/// Not `Synchronization.Mutex`: on Linux its contended paths (`FUTEX_LOCK_PI` in
/// `_lockSlow`/`_unlockSlow`) are compiled into the standard library, where ThreadSanitizer
/// cannot see them, so every hand-off of the lock between two threads looks like a data race
/// — and `close()` waking a waiter that then takes the lock is exactly such a hand-off.
/// ThreadSanitizer intercepts `pthread_mutex_lock`; uncontended, both are one atomic
/// compare-and-swap.
package struct Locked<Value> {
    private let storage: LockedStorage<Value>

    package init(_ value: Value) {
        storage = unsafeDowncast(LockedStorage.create(minimumCapacity: 1) { _ in value }, to: LockedStorage<Value>.self)
        storage.withUnsafeMutablePointerToElements { lock in
            #if canImport(Darwin)
            lock.initialize(to: os_unfair_lock())
            #else
            lock.initialize(to: pthread_mutex_t())
            pthread_mutex_init(lock, nil)  // a default mutex: no error checking, no recursion
            #endif
        }
    }

    /// Runs `body` with the value while holding the lock. `body` must not wait (no blocking
    /// system call) and must not take this lock again.
    @inline(__always)
    package func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        try storage.withUnsafeMutablePointers { (value, lock) throws(E) -> R in
            #if canImport(Darwin)
            os_unfair_lock_lock(lock)
            defer { os_unfair_lock_unlock(lock) }
            #else
            pthread_mutex_lock(lock)
            defer { pthread_mutex_unlock(lock) }
            #endif
            return try body(&value.pointee)
        }
    }
}

// @unchecked Sendable is safe: the value is reached only through withLock, which holds the
// lock for the whole access; the lock never moves (it lives in the storage's heap block,
// allocated once). The value must itself be Sendable to cross threads.
extension Locked: @unchecked Sendable where Value: Sendable {}

/// The heap block: the value as the header, the lock as the one element.
private final class LockedStorage<Value>: ManagedBuffer<Value, PlatformLock> {
    deinit {
        withUnsafeMutablePointerToElements { lock in
            #if !canImport(Darwin)
            pthread_mutex_destroy(lock)
            #endif
            _ = lock.deinitialize(count: 1)
        }
    }
}
