// Fuzzes `sock`'s command line: the input split at NUL bytes is the argument list, parsed
// (never run) by swift-argument-parser with sock's own transforms and validations.
// Checks: no crash or hang, whatever the arguments; help, usage and errors are rendered.
@testable import sock

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let arguments = text(data, count).split(separator: "\u{0}", omittingEmptySubsequences: false).map(String.init)
    do {
        _ = try Sock.parseAsRoot(arguments)
    } catch {
        _ = Sock.fullMessage(for: error)
        _ = Sock.exitCode(for: error)
    }
    return 0
}
