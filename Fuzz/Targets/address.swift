// Fuzzes SocketAddress(_:) — numeric addresses and Unix paths, never a lookup.
// Checks: no crash or hang; a rejection is .invalidArgument with a reason; an accepted
// address prints as text that parses back to the same address.
@testable import Sockets

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = text(data, count)
    let address: SocketAddress
    do throws(SocketError) {
        address = try SocketAddress(input)
    } catch {
        checkRejection(error, input)
        return 0
    }
    let printed: String
    switch address {
    case .unix(let path): printed = "unix:" + path  // the description is the bare path
    default: printed = address.description
    }
    guard let again = try? SocketAddress(printed), again == address else {
        violated("\(address) does not parse back from \(String(reflecting: printed))", input)
    }
    return 0
}
