import Sockets
import Testing

@Suite("SocketTimeout values")
struct TimeoutValueTests {
    @Test("negative, zero, NaN, infinite and oversized timeouts are rejected with a reason")
    func rejectsBadValues() {
        for (label, make) in [
            ("negative", { try SocketTimeout.after(.seconds(-1)) }),
            ("zero", { try SocketTimeout.after(.zero) }),
            ("too large", { try SocketTimeout.after(.seconds(Int64.max)) }),
            ("NaN", { try SocketTimeout.seconds(.nan) }),
            ("infinity", { try SocketTimeout.seconds(.infinity) }),
            ("negative seconds", { try SocketTimeout.seconds(-0.5) }),
            ("zero seconds", { try SocketTimeout.seconds(0) }),
            ("huge seconds", { try SocketTimeout.seconds(1e300) }),
        ] as [(String, () throws -> SocketTimeout)] {
            let (error, _) = expectFailure(.invalidArgument) { _ = try make() }
            #expect(error?.detail?.isEmpty == false, "\(label) has no explanation")
        }
    }

    @Test("a tiny positive timeout stays timed, rounded up to a nanosecond")
    func tinyStaysTimed() throws {
        let tiny = try SocketTimeout.after(.nanoseconds(1) / 1000)
        #expect(tiny.duration == .nanoseconds(1))
        #expect(tiny != .nonBlocking)
        let fromDouble = try SocketTimeout.seconds(1e-12)
        #expect(fromDouble.duration == .nanoseconds(1))
    }

    @Test("modes and descriptions")
    func modes() throws {
        #expect(SocketTimeout.never.mode == .never)
        #expect(SocketTimeout.nonBlocking.mode == .nonBlocking)
        #expect(try SocketTimeout.seconds(1.5).mode == .after(.milliseconds(1500)))
        #expect(try SocketTimeout.after(.milliseconds(250)).description == "250ms")
        #expect(try SocketTimeout.seconds(3).description == "3s")
        #expect(try SocketTimeout.seconds(1.5).description == "1.5s")
        #expect(SocketTimeout.maximum == .nanoseconds(Int64.max))
        #expect(try SocketTimeout.after(SocketTimeout.maximum).duration == SocketTimeout.maximum)
    }

    @Test("a socket takes the timeout it is given and reports it")
    func perSocket() throws {
        let socket = try Socket(.ipv4)
        socket.timeout = try .after(.seconds(2))
        #expect(socket.timeout.duration == .seconds(2))
        socket.timeout = .nonBlocking
        #expect(socket.timeout == .nonBlocking)
    }
}
