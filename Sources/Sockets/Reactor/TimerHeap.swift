// The reactor's timers: a binary min-heap of instants, one entry per socket and direction
// with a waiter (and one per sleeper), re-armed lazily.
//
// A waiter whose deadline is later than the entry already in the heap for its socket and
// direction adds nothing: when that entry comes due, the reactor fires only the waiters
// whose time has come and pushes one entry for the earliest of the rest. So moving a
// deadline later (every receive of a ping-pong with a fresh timeout) is a store, not a heap
// operation. A deadline earlier than the entry in the heap pushes a new entry with a new
// sequence number; the old one is recognised as stale when it surfaces (Go's
// `timerModifiedLater`, Tokio's `cached_when`).

/// What a timer entry fires: a registration's direction, or a sleeper.
protocol TimerTarget: AnyObject {
    /// Called under the reactor's lock when an entry with `sequence` comes due at `now`:
    /// appends what to resume (outside the lock) and returns the instant of a new entry to
    /// push for what is still waiting, if any.
    func timerFired(sequence: UInt64, now: Int64, into resumptions: inout [Resumption]) -> Int64?
}

struct TimerEntry {
    let when: Int64
    let sequence: UInt64
    let target: any TimerTarget
}

struct TimerHeap {
    private var entries: [TimerEntry] = []

    var isEmpty: Bool { entries.isEmpty }
    var earliest: Int64? { entries.first?.when }

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
        var parent = 0
        while true {
            let left = 2 * parent + 1
            if left >= entries.count { break }
            let right = left + 1
            let child = right < entries.count && entries[right].when < entries[left].when ? right : left
            if entries[parent].when <= entries[child].when { break }
            entries.swapAt(parent, child)
            parent = child
        }
        return first
    }
}
