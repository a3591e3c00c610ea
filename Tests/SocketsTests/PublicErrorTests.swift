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

    @Test("catch Errno.x matches a SocketError with that errno; a connected UDP socket's errors name the peer")
    func errnoPatternAndDatagramPeer() throws {
        let (holder, refusing) = try refusingPort()
        defer { holder.close() }
        var matched = false
        do {
            _ = try Socket.connect(to: refusing, timeout: try .after(.seconds(5)))
        } catch Errno.connectionRefused {
            matched = true
        } catch {
            Issue.record("not matched: \(error)")
        }
        #expect(matched)

        let gone = try Socket(.ipv4, .datagram)
        try gone.bind(to: .ipv4(.loopback, port: 0))
        let target = try gone.localAddress
        gone.close()  // nothing listens there now: the kernel answers with an ICMP refusal
        let udp = try Socket.connect(to: target, type: .datagram)
        defer { udp.close() }
        _ = try udp.send([1])
        let (error, _) = expectFailure(.connectionRefused) { _ = try udp.receiveDatagram(deadline: .now + .seconds(5)) }
        #expect(error.map { "\($0)" } == "receive from \(target) failed: Connection refused (ECONNREFUSED)")
    }
}
