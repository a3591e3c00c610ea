// Shared by every fuzz target (each target is this file plus its own).
@testable import Sockets

/// The fuzzer's bytes as text; invalid UTF-8 becomes U+FFFD, as it would from a terminal.
func text(_ data: UnsafePointer<UInt8>, _ count: Int) -> String {
    String(decoding: UnsafeBufferPointer(start: data, count: count), as: UTF8.self)
}

/// A failed check: crash so that libFuzzer saves the input that caused it.
func violated(_ what: String, _ input: String) -> Never {
    fatalError("\(what) for input \(String(reflecting: input))")
}

/// Every rejection from a parser must be an invalid-argument error that names the input.
func checkRejection(_ error: SocketError, _ input: String) {
    guard error.kind == .invalidArgument else { violated("rejected with \(error.kind), not .invalidArgument", input) }
    guard error.detail?.isEmpty == false else { violated("rejected without saying why", input) }
}
