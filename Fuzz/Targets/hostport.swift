// Fuzzes HOST:PORT splitting (what SocketAddress.resolve and `sock` do before any lookup)
// and the numeric-host check. Never resolves a name: no traffic leaves the process.
// Checks: a rejection is .invalidArgument with a reason; an accepted split re-joins to text
// that splits the same way; a numeric host gives an address with that port.
@testable import Sockets

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let input = text(data, count)
    let host: String
    let port: UInt16
    do throws(SocketError) {
        (host, port) = try HostPort.split(input)
    } catch {
        checkRejection(error, input)
        return 0
    }
    guard !host.isEmpty else { violated("accepted an empty host", input) }
    let joined = input.hasPrefix("[") ? "[\(host)]:\(port)" : "\(host):\(port)"
    guard let again = try? HostPort.split(joined), again == (host, port) else {
        violated("\(String(reflecting: joined)) does not split back to (\(host), \(port))", input)
    }
    do throws(SocketError) {
        if let address = try SocketAddress.numeric(host: host, port: port, input: input), address.port != port {
            violated("numeric address \(address) lost port \(port)", input)
        }
    } catch {
        checkRejection(error, input)
    }
    return 0
}
