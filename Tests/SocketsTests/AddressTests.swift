import Sockets
import Testing

@Suite("Addresses")
struct AddressTests {
    @Test("numeric addresses parse and print back", arguments: [
        "127.0.0.1:1717", "0.0.0.0:0", "255.255.255.255:65535", "[::1]:80", "[::]:0",
        "[2001:db8::1]:443", "[::ffff:127.0.0.1]:8080", "/tmp/app.sock", "./relative.sock",
    ])
    func roundTrip(_ text: String) throws {
        #expect(try SocketAddress(text).description == text)
    }

    @Test("parts of a parsed address")
    func parts() throws {
        #expect(try SocketAddress("127.0.0.1:1717") == .ipv4(.loopback, port: 1717))
        #expect(try SocketAddress("[::1]:80") == .ipv6(.loopback, port: 80))
        #expect(try SocketAddress("unix:name.sock") == .unix(path: "name.sock"))
        #expect(try SocketAddress("[fe80::1%lo]:80") == .ipv6(IPv6Address("fe80::1")!, port: 80, scopeID: 1))
        #expect(try SocketAddress("[fe80::1%7]:80").description == "[fe80::1%7]:80")
        #expect(IPv4Address("10.1.2.3")?.rawValue == 0x0A01_0203)
        #expect(IPv4Address("127.1") == nil)  // no inet_aton shorthand
        #expect(try SocketAddress("[::1]:80").port == 80)
        #expect(try SocketAddress("/x.sock").port == nil)
    }

    @Test("malformed input is rejected with a message naming the problem", arguments: [
        ("127.0.0.1", "missing ':PORT'"),
        ("127.0.0.1:70000", "out of range"),
        ("127.0.0.1:-1", "not a number"),
        ("127.0.0.1:http", "not a number"),
        ("127.0.0.1:", "not a number"),
        (":80", "empty host"),
        ("::1:80", "needs brackets"),
        ("[::1", "missing ']'"),
        ("[::1]80", "missing ':PORT'"),
        ("example.com:80", "not a numeric IP address"),
        ("[fe80::1%nosuchif0]:80", "unknown IPv6 scope"),
        ("unix:", "empty Unix socket path"),
        ("1.2.3.4.5:80", "not a numeric IP address"),
    ])
    func rejects(_ input: String, _ reason: String) {
        let (error, _) = expectFailure(.invalidArgument) { _ = try SocketAddress(input) }
        #expect(error.map { "\($0)".contains(reason) } == true, "\(String(describing: error)) should say \(reason)")
    }

    @Test("a Unix path longer than sun_path allows is rejected before any system call")
    func longUnixPath() {
        let path = "/tmp/" + String(repeating: "x", count: 200)
        let (error, _) = expectFailure(.invalidArgument) { _ = try SocketAddress(path) }
        #expect(error.map { "\($0)".contains("limit on this OS is 107") } == true, "\(String(describing: error))")
        let limit = "/" + String(repeating: "y", count: 106)
        #expect(throws: Never.self) { _ = try SocketAddress(limit) }
    }

    @Test("localhost resolves to loopback; numeric hosts need no lookup")
    func resolves() throws {
        let list = try SocketAddress.resolve("localhost:80", deadline: .now + .seconds(10))
        #expect(list.contains(.ipv4(.loopback, port: 80)) || list.contains(.ipv6(.loopback, port: 80)), "\(list)")
        #expect(try SocketAddress.resolve("127.0.0.1:9") == [.ipv4(.loopback, port: 9)])
        #expect(try SocketAddress.resolve("[::1]:9") == [.ipv6(.loopback, port: 9)])
        #expect(try SocketAddress.resolve("/run/x.sock") == [.unix(path: "/run/x.sock")])
    }

    @Test("resolution with a deadline already past fails at once")
    func resolvePastDeadline() {
        let (error, elapsed) = expectFailure(.timedOut) {
            _ = try SocketAddress.resolve("localhost:80", deadline: .now - .seconds(1))
        }
        #expect(error?.operation == .resolve)
        #expect(elapsed < .milliseconds(100))
    }

    @Test("bad host text for resolution", arguments: ["localhost", "localhost:99999", ":80", ""])
    func resolveRejects(_ input: String) {
        expectFailure(.invalidArgument) { _ = try SocketAddress.resolve(input) }
    }
}
