// Fuzzes the duration parsers: `sock`'s --timeout text (3, 1.5, 250ms, ...) and the library's
// SocketTimeout.seconds(Double) / .after(Duration) with arbitrary bit patterns (NaN, infinities,
// negative zero, subnormals, durations near Int128 limits).
// Checks: no crash; an accepted value is a positive timeout that converts to nanoseconds and
// back without overflow; a rejection from the library is .invalidArgument with a reason.
@testable import Sockets
@testable import sock

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = text(data, count)
    if let parsed = try? DurationArgument.parse(input) { check(parsed, input) }

    guard count >= 16 else { return 0 }
    let raw = UnsafeRawPointer(data)
    let bits = raw.loadUnaligned(as: UInt64.self)
    let high = raw.loadUnaligned(fromByteOffset: 8, as: Int64.self)
    // (An array of typed-throws closures here crashes Swift 6.3's SIL optimizer.)
    do throws(SocketError) {
        check(try SocketTimeout.seconds(Double(bitPattern: bits)), input)
    } catch {
        checkRejection(error, input)
    }
    do throws(SocketError) {
        check(try SocketTimeout.after(Duration(_high: high, low: bits)), input)
    } catch {
        checkRejection(error, input)
    }
    return 0
}

private func check(_ timeout: SocketTimeout, _ input: String) {
    guard let duration = timeout.duration else { return }  // .never / .nonBlocking
    guard duration > .zero else { violated("accepted a duration that is not positive: \(duration)", input) }
    guard timeout.nanoseconds > 0 else { violated("\(duration) became \(timeout.nanoseconds) ns", input) }
    _ = timeout.description
}
