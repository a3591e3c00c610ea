// The reactor's timers: a binary min-heap of instants, one entry per socket and direction
// with a waiter (and one per sleeper), re-armed lazily.
//
// A waiter whose deadline is later than the entry already in the heap for its socket and
// direction adds nothing: when that entry comes due, the reactor fires only the waiters
// whose time has come and pushes one entry for the earliest of the rest. So moving a
// deadline later (every receive of a ping-pong with a fresh timeout) is a store, not a heap
// operation. A deadline earlier than the entry in the heap pushes a new entry with a new
// sequence number; the old one is recognised as stale when it surfaces (Go's
// `timerModifiedLater`, Tokio's `cached_when`). Entries of sockets released before their
// time would stay until then — with a long idle timeout and many short connections, a heap
// that grows with the connection rate times the timeout — so the reactor counts the entries
// it knows are stale and sweeps them out once they are half the heap (as Go's
// `adjusttimers` and `cleantimers` do): O(1) per entry, amortised.

/// One timer: a registration's direction (named by its token, looked up when the entry comes
/// due, so that an entry holds no socket alive: a socket released meanwhile is simply not
/// found), or an alarm.
struct TimerEntry {
    let when: Int64
    /// Which of the target's timers this is (a registration's carries its direction in the
    /// low bit); an entry whose sequence is no longer the target's is stale.
    let sequence: UInt64
    /// The registration's token (0 for an alarm).
    let token: UInt64
    let alarm: Alarm?
}

struct TimerHeap {
    private var entries: [TimerEntry] = []

    var isEmpty: Bool { entries.isEmpty }
    var count: Int { entries.count }
    var earliest: Int64? { entries.first?.when }

    /// Keeps only the entries `isLive` accepts, and restores the heap order (O(n)).
    mutating func keep(where isLive: (TimerEntry) -> Bool) {
        entries.removeAll { !isLive($0) }
        var parent = entries.count / 2 - 1
        while parent >= 0 {
            siftDown(parent)
            parent -= 1
        }
    }

    mutating func push(_ entry: TimerEntry) {
        entries.append(entry)
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if entries[parent].when <= entries[child].when { break }
            entries.swapAt(parent, child)
            child = parent
        }
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    mutating func popDue(now: Int64) -> TimerEntry? {
        guard let first = entries.first, first.when <= now else { return nil }
        let last = entries.removeLast()
        if entries.isEmpty { return first }
        entries[0] = last
        siftDown(0)
        return first
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            if left >= entries.count { break }
            let right = left + 1
            let child = right < entries.count && entries[right].when < entries[left].when ? right : left
            if entries[parent].when <= entries[child].when { break }
            entries.swapAt(parent, child)
            parent = child
        }
    }
}
