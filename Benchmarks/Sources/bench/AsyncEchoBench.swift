import Foundation
import Sockets

// The async benchmarks' server for this library (A1, A2): `Socket.serve`, a task per
// connection on the reactors (one under `taskset -c 0`), each echoing 64-byte messages:
//   bench sockets server echo-async none|timeout
// "timeout": a 5 s idle timeout armed on every receive (the connection's `timeout`).

/// Serves until killed.
func asyncEchoServer(mode: String) -> Never {
    let timeout: SocketTimeout
    switch mode {
    case "none": timeout = .never
    case "timeout": timeout = try! .after(.seconds(5))
    default: fail("echo-async: mode is none or timeout, got \(mode)")
    }
    let listener: Socket
    do {
        listener = try Socket(.ipv4)
        try listener.setOption(.reuseAddress, true)
        try listener.bind(to: .ipv4(.loopback, port: 0))
        try listener.listen(backlog: 4096)
        announce(port: Int(try listener.localAddress.port ?? 0))
    } catch {
        fail("\(error)")
    }
    Task.detached {
        do {
            try await listener.serve(connectionTimeout: timeout) { connection, _ in
                try connection.setOption(.noDelay, true)
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
                defer { buffer.deallocate() }
                while true {
                    let n = try await connection.receive(into: buffer)
                    if n == 0 { return }
                    try await connection.sendAll(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
                }
            }
        } catch {
            fail("\(error)")
        }
    }
    while true { sleep(3600) }
}
