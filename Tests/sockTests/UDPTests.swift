import Foundation
import Sockets
import Testing

@Suite("sock --udp", .serialized)
struct UDPTests {
    @Test("connect --udp: each read of stdin is a datagram, replies go to stdout, -q ends it")
    func connectUDP() throws {
        let peer = try ChildProcess(python: """
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); s.settimeout(10)
            print("port", s.getsockname()[1])
            d, a = s.recvfrom(65536); s.sendto(d.upper(), a); print("echoed", len(d))
            """)
        defer { peer.kill() }
        let port = try peer.waitForOutputLine(startingWith: "port ").dropFirst("port ".count)
        let client = try ChildProcess(["connect", "--udp", "127.0.0.1:\(port)", "--quit-after", "500ms"])
        defer { client.kill() }
        client.send("ping\n")
        let (status, out, err) = try client.finish(within: .seconds(10))
        #expect(status == 0, "\(err)")
        #expect(out == "PING\n")
        _ = try peer.finish(within: .seconds(5))
        #expect(peer.out.contains("echoed 5\n"), "\(peer.out)")
    }

    @Test("listen --udp: the first datagram's sender is the peer; stdin goes back to it")
    func listenUDP() throws {
        let listener = try ChildProcess(["listen", "--udp", "0", "--quit-after", "500ms"])
        defer { listener.kill() }
        listener.send("reply\n")
        let line = try listener.waitForLine(startingWith: "listening on ")
        let peer = try ChildProcess(python: """
            import socket, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(10)
            s.sendto(b"hello\\n", ("127.0.0.1", int(sys.argv[1])))
            d, a = s.recvfrom(65536); print("got", d)
            """, [String(line.split(separator: ":").last!)])
        defer { peer.kill() }
        let (status, out, err) = try listener.finish(within: .seconds(10))
        #expect(status == 0, "\(err)")
        #expect(out == "hello\n")
        #expect(err.contains("datagram from 127.0.0.1:"), "\(err)")
        _ = try peer.finish(within: .seconds(5))
        #expect(peer.out.contains("got b'reply\\n'"), "\(peer.out)")
    }

    @Test("connect --udp to a port where nothing is bound: the ICMP answer is a refusal, exit 1")
    func refusedUDP() throws {
        // A free UDP port: bound, noted, released.
        let probe = try Socket(.ipv4, .datagram)
        try probe.bind(to: .ipv4(.loopback, port: 0))
        let address = try probe.localAddress
        probe.close()
        let client = try ChildProcess(["connect", "--udp", "\(address)"])  // stdin stays open
        defer { client.kill() }
        client.send("anyone?\n", thenClose: false)
        let (status, _, err) = try client.finish(within: .seconds(10))
        #expect(status == 1, "\(err)")
        #expect(err.contains("Connection refused (ECONNREFUSED)"), "\(err)")
    }
}
