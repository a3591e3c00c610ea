import Foundation
import Sockets
import Testing

@Suite("datagrams and Unix-domain sockets")
struct DatagramAndUnixTests {
    @Test("UDP on loopback: send to, receive from, with the sender's address")
    func udp() throws {
        let receiver = try Socket(.ipv4, .datagram)
        try receiver.bind(to: .ipv4(.loopback, port: 0))
        let sender = try Socket(.ipv4, .datagram)
        try sender.bind(to: .ipv4(.loopback, port: 0))
        #expect(try sender.send(Array("ping".utf8), to: receiver.localAddress) == 4)
        receiver.timeout = try .after(.seconds(5))
        let (bytes, from) = try receiver.receiveDatagram()
        #expect(bytes == Array("ping".utf8))
        #expect(try from == sender.localAddress)
    }

    @Test("a UDP receive with nothing sent times out; non-blocking fails with wouldBlock")
    func udpTimeout() throws {
        let receiver = try Socket(.ipv6, .datagram)
        try receiver.bind(to: .ipv6(.loopback, port: 0))
        receiver.timeout = try .after(.milliseconds(150))
        let (error, elapsed) = expectFailure(.timedOut) { _ = try receiver.receiveDatagram() }
        expectTiming(elapsed, atLeast: .milliseconds(150))
        #expect(error?.operation == .receiveFrom)
        receiver.timeout = .nonBlocking
        expectFailure(.wouldBlock) { _ = try receiver.receiveDatagram() }
    }

    @Test("datagram sockets cannot listen; the error says so")
    func datagramListen() throws {
        let socket = try Socket(.ipv4, .datagram)
        let (error, _) = expectFailure(.invalidArgument) { try socket.listen() }
        #expect(error?.detail?.contains("datagram") == true)
    }

    @Test("Unix stream: bind a path, listen, connect, echo; peer and local addresses")
    func unixStream() throws {
        let path = NSTemporaryDirectory() + "sockets-test-\(getpid()).sock"
        unlink(path)
        defer { unlink(path) }
        let address = try SocketAddress(path)
        let server = try Socket(.unix)
        try server.bind(to: address)
        try server.listen()
        #expect(try server.localAddress == address)
        let client = try Socket(.unix)
        try client.connect(to: address, deadline: .now + .seconds(5))
        let (connection, peer) = try server.accept(deadline: .now + .seconds(5))
        #expect(peer == .unix(path: ""))
        try client.sendAll(Array("unix".utf8))
        #expect(try connection.receive(exactly: 4, deadline: .now + .seconds(5)) == Array("unix".utf8))
        // The path is taken now.
        let again = try Socket(.unix)
        expectFailure(.addressInUse) { try again.bind(to: address) }
    }

    @Test("a Unix socket that never bound cannot listen; the error says so")
    func unixListenUnbound() throws {
        let socket = try Socket(.unix)
        let (error, _) = expectFailure(.invalidArgument) { try socket.listen() }
        #expect(error?.detail?.contains("bound before it listens") == true)
    }

    @Test("connecting to a Unix path nobody serves is refused or missing, at once")
    func unixMissing() throws {
        let client = try Socket(.unix)
        client.timeout = try .after(.seconds(10))
        let start = ContinuousClock.now
        #expect(throws: SocketError.self) { try client.connect(to: .unix(path: "/nonexistent/sockets-test.sock")) }
        #expect(ContinuousClock.now - start < .seconds(1))
    }

    @Test("socket pairs carry data both ways; datagram pairs keep message boundaries")
    func pairs() throws {
        let (a, b) = try Socket.pair()
        try a.sendAll([1, 2])
        try b.sendAll([3])
        #expect(try b.receive(exactly: 2) == [1, 2])
        #expect(try a.receive(exactly: 1) == [3])
        let (x, y) = try Socket.pair(.datagram)
        _ = try x.send([1, 2, 3])
        _ = try x.send([4])
        #expect(try y.receive(upTo: 100) == [1, 2, 3])
        #expect(try y.receive(upTo: 100) == [4])
    }

    @Test("binding twice to the same port reports address in use")
    func addressInUse() throws {
        let (server, address) = try makeListener()
        let other = try Socket(.ipv4)
        let (error, _) = expectFailure(.addressInUse) { try other.bind(to: address) }
        #expect(error.map { "\($0)" } == "bind to \(address) failed: Address already in use (EADDRINUSE)")
        _ = server
    }

    @Test("listen with a negative backlog is an invalid argument")
    func negativeBacklog() throws {
        let socket = try Socket(.ipv4)
        expectFailure(.invalidArgument) { try socket.listen(backlog: -1) }
    }
}
