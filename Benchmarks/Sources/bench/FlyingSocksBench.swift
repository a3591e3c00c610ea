import Foundation
import FlyingSocks
import Synchronization

/// FlyingFox's FlyingSocks: `AsyncSocket` on its epoll pool, as its README shows. It has no
/// timeouts (only task cancellation), so it runs in one mode.
struct FlyingSocksBench: Implementation {
    /// Runs async work from this synchronous command and waits for it.
    func run(_ body: @escaping @Sendable (any AsyncSocketPool) async throws -> Void) {
        let finished = DispatchSemaphore(value: 0)
        let failure = Mutex<String?>(nil)
        Task {
            do {
                let pool: some AsyncSocketPool = .make()
                try await pool.prepare()
                let loop = Task { try await pool.run() }
                try await body(pool)
                loop.cancel()
            } catch {
                failure.withLock { $0 = "\(error)" }
            }
            finished.signal()
        }
        finished.wait()
        if let message = failure.withLock({ $0 }) { fail(message) }
    }

    func server(_ workload: String, mode: String) {
        run { pool in
            let socket = try FlyingSocks.Socket(domain: AF_INET, type: .stream)
            try socket.setValue(true, for: .localAddressReuse)
            try socket.bind(to: sockaddr_in.inet(ip4: "127.0.0.1", port: 0))
            try socket.listen()
            guard case let .ip4(_, port) = try socket.sockname() else { fail("no port") }
            announce(port: Int(port))
            let listener = try AsyncSocket(socket: socket, pool: pool)
            if workload == "connect" {
                while true { try await listener.accept().close() }
            }
            let connection = try await listener.accept()
            if workload == "pingpong" {
                try connection.socket.setValue(true, for: BoolSocketOption(level: Int32(IPPROTO_TCP), name: TCP_NODELAY))
                while true {
                    let message = try await connection.read(bytes: 64)
                    try await connection.write(Data(message))
                }
            } else {
                do {
                    while true { _ = try await connection.read(atMost: 65_536) }
                } catch SocketError.disconnected {
                    try await connection.write(Data([107]))
                }
            }
        }
        exit(0)
    }

    func client(_ workload: String, port: Int, count: Int, mode: String) {
        run { pool in
            let address = try sockaddr_in.inet(ip4: "127.0.0.1", port: UInt16(port))
            switch workload {
            case "pingpong":
                let socket = try await AsyncSocket.connected(to: address, pool: pool)
                try socket.socket.setValue(true, for: BoolSocketOption(level: Int32(IPPROTO_TCP), name: TCP_NODELAY))
                let message = Data(repeating: 1, count: 64)
                var roundTrips = RoundTrips()
                let warmUp = count / 10
                for i in 0..<(warmUp + count) {
                    let start = clockNanos()
                    try await socket.write(message)
                    _ = try await socket.read(bytes: 64)
                    if i >= warmUp { roundTrips.record(since: start) }
                }
                try socket.close()
                reportRoundTrips(roundTrips)
            case "bulk":
                let socket = try await AsyncSocket.connected(to: address, pool: pool)
                let chunk = Data(repeating: 0, count: 64 << 10)
                let start = ContinuousClock.now
                var sent = 0
                while sent < count {
                    try await socket.write(chunk)
                    sent += chunk.count
                }
                shutdown(socket.socket.file.rawValue, Int32(SHUT_WR))  // FlyingSocks has no half-close
                _ = try await socket.read(bytes: 1)
                report([("gbps", Double(sent) / seconds(since: start) / 1e9)])
            case "connect":
                let start = ContinuousClock.now
                for _ in 0..<count {
                    let socket = try await AsyncSocket.connected(to: address, pool: pool)
                    do { _ = try await socket.read(atMost: 1) } catch SocketError.disconnected {}
                    try socket.close()
                }
                report([("per_s", Double(count) / seconds(since: start))])
            default:
                fail("unknown workload \(workload)")
            }
        }
    }
}
