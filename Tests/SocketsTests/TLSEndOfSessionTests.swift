import Foundation
import Sockets
import SocketsTLS
import Testing

// A peer that closes the connection without close_notify: the end of the session, as the
// receive docs say, for every configuration — and this side can still half-close after it.

@Suite("TLS: a peer's plain close", .serialized)
struct TLSEndOfSessionTests {
    @Test("a client trusting .anything reads a plain close as the end, not as a certificate it never checked")
    func unverifiedClientSeesTheEnd() throws {
        // The expired certificate: the verify result is an error, ignored with .anything.
        let peer = try TLSPeer(["echo", tlsFixture("expired.pem"), tlsFixture("expired.key")])
        let tls = try tlsClient(try peer.port(), try TLSConfiguration.client(trusting: .anything), name: "")
        defer { tls.close() }
        try tls.handshake()
        try tls.sendAll(Array("hi".utf8))
        #expect(try tls.receive(upTo: 10, deadline: .now + .seconds(5)) == Array("hi".utf8))
        try tls.shutdown(.write)  // peer.py's echo then closes without close_notify
        #expect(try tls.receive(upTo: 10, deadline: .now + .seconds(5)).isEmpty)
        peer.finish()
    }

    @Test("shutdown(.write) after the peer closed without close_notify ends this side and does not throw")
    func halfCloseAfterPlainClose() throws {
        let (listener, address) = try makeListener()
        defer { listener.close() }
        let configuration = try TLSConfiguration.server(certificateChain: tlsFixture("good.pem"), privateKey: tlsFixture("good.key"))
        let serving = Background { () -> TLSSocket in
            let tls = try serveOne(listener, configuration)
            try tls.socket.shutdown(.write)  // the end of the stream, without close_notify
            return tls
        }
        let tls = try tlsClient(address.port!, try trustingTestCA())
        defer { tls.close() }
        try tls.handshake()
        let server = try serving.value()
        defer { server.close() }
        #expect(try tls.receive(upTo: 10, deadline: .now + .seconds(5)).isEmpty)
        try tls.shutdown(.write)
        #expect(try server.receive(upTo: 10, deadline: .now + .seconds(5)).isEmpty)  // the client's half-close arrived
    }
}
