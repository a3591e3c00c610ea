import Foundation
import Histogram

/// CLOCK_MONOTONIC in nanoseconds, read as the C benchmark reads it: the harness's own timing
/// costs every implementation the same.
@inline(__always)
func clockNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Latencies in nanoseconds, recorded in an HdrHistogram (3 significant digits, up to 10 s).
struct RoundTrips {
    private var histogram = Histogram<UInt64>(highestTrackableValue: 10_000_000_000, numberOfSignificantValueDigits: .three)

    private(set) var count = 0

    mutating func record(since start: UInt64) {
        _ = histogram.record(clockNanos() &- start)
        count += 1
    }

    func percentile(_ p: Double) -> Double { Double(histogram.valueAtPercentile(p)) }
}
