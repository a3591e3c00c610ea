// Fuzzes what a TLS peer sends: the input (after its first byte, which picks the side) is
// everything the other end of a socket pair says, then the end of the stream. Our side
// handshakes (client, trusting anything; or server, with the test certificate) and, if that
// somehow succeeds, reads. No traffic leaves the process.
// Checks: every call ends (the input ends in EOF, and a 2 s limit backs that up) with a
// TLS-shaped error or success — never a crash, a timeout, or an error without a message —
// and no descriptor is left open.
@testable import Sockets
import SocketsTLS

private let client = try! TLSConfiguration.client(trusting: .anything)
private let server = try! TLSConfiguration.server(certificateChain: "Tests/Fixtures/tls/good.pem",
                                                  privateKey: "Tests/Fixtures/tls/good.key")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard count > 0 else { return 0 }
    let asServer = data[0] & 1 == 1
    let said = Array(UnsafeBufferPointer(start: data + 1, count: count - 1))
    let (ours, peer) = try! Socket.pair()
    defer { peer.close() }
    try! peer.sendAll(said)  // at most a few KiB: fits in the pair's buffer
    try! peer.shutdown(.write)
    ours.timeout = try! .after(.seconds(2))
    let tls = asServer ? try! TLSSocket(serving: ours, configuration: server)
                       : try! TLSSocket(client: ours, configuration: client, serverName: nil)
    defer { tls.close() }
    do throws(SocketError) {
        try tls.handshake()
        _ = try tls.receive(upTo: 65_536)
    } catch {
        let expected: [SocketError.Kind] = [.tlsProtocol, .tlsAlert, .certificateRejected, .endOfStream, .connectionReset, .brokenPipe]
        guard expected.contains(error.kind) else { violated("ended with \(error.kind): \(error)", "\(said)") }
        guard !"\(error)".isEmpty, error.operation == .handshake || error.operation == .receive else {
            violated("an error without its operation or message: \(error)", "\(said)")
        }
    }
    return 0
}
