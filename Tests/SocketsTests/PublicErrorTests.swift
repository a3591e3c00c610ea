import Sockets  // not @testable: what a user of the library can write
import Testing

// A helper that wraps the library can throw a SocketError of its own (issue 12's typed-throws
// friction: the initialiser used to be internal).

private func readGreeting(from connection: Socket) throws(SocketError) -> [UInt8] {
    let bytes = try connection.receive(upTo: 64, deadline: .now + .seconds(5))
    guard bytes.starts(with: Array("HELLO".utf8)) else {
        throw SocketError(.invalidArgument, .receive, address: try? connection.peerAddress,
                          detail: "not a greeting")
    }
    return bytes
}

@Suite("SocketError made by users")
struct PublicErrorTests {
    @Test("a throws(SocketError) helper throws its own SocketError, in the library's words")
    func userMadeError() throws {
        let (a, b) = try Socket.pair()
        defer { a.close(); b.close() }
        try b.sendAll(Array("HELLO there".utf8))
        #expect(try readGreeting(from: a) == Array("HELLO there".utf8))
        try b.sendAll(Array("nope".utf8))
        do throws(SocketError) {
            _ = try readGreeting(from: a)
            Issue.record("expected an error")
        } catch {
            #expect(error.kind == .invalidArgument)
            #expect(error.operation == .receive)
            #expect(error.detail == "not a greeting")
            #expect(error.description.hasSuffix("failed: invalid argument: not a greeting"), "\(error)")
        }
        let timeout = SocketError(.timedOut, .connect, address: .ipv4(.loopback, port: 80), timeout: .seconds(2))
        #expect(timeout.description == "connect to 127.0.0.1:80 timed out after 2s")
    }
}
