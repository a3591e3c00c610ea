import Foundation
import Sockets
import SocketsTLS
import Testing

// Helpers of the TLS suites: Python's ssl module as the independent peer
// (Tests/Fixtures/tls/peer.py), the fixtures of Tests/Fixtures/tls/make.sh; loopback only.

let tlsFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/tls").path
func tlsFixture(_ name: String) -> String { "\(tlsFixtures)/\(name)" }

/// peer.py MODE ARGS as a child process, ended by its PID when the test is done with it (and
/// bounded on its own: every wait in peer.py has a limit of 30 s at most). Python runs
/// directly, not under timeout(1), so that its PID is the one killed.
final class TLSPeer {
    let process = Process()
    private let output = Pipe()
    private let errors = Pipe()

    init(_ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", tlsFixture("peer.py")] + arguments
        process.standardOutput = output
        process.standardError = errors
        try process.run()
    }

    /// The first line the peer prints (its port), waited for 10 s at most.
    func line() throws -> String {
        let handle = output.fileHandleForReading
        let reading = Background { () -> String in
            var bytes: [UInt8] = []
            while !bytes.contains(0x0A) {
                let data = handle.availableData
                if data.isEmpty { break }
                bytes += data
            }
            return String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return try reading.value(within: .seconds(10))
    }

    func port() throws -> UInt16 {
        let text = try line()
        guard let port = UInt16(text) else { throw TestFailure("peer printed '\(text)', not a port") }
        return port
    }

    /// Waits for the peer to exit (killing it after `limit`); its exit status.
    @discardableResult
    func finish(within limit: Duration = .seconds(20)) -> Int32 {
        let end = ContinuousClock.now + limit
        while process.isRunning && ContinuousClock.now < end { pause(.milliseconds(10)) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Ends the peer now (by its PID), for one whose part is over.
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
}

/// 64 KiB send and receive buffers, asserted: 2 MiB cannot fit in the path (and tiny
/// buffers would crawl on delayed acknowledgements).
func boundBuffers(_ socket: Socket) throws {
    try socket.setOption(.sendBufferSize, 65_536)
    try socket.setOption(.receiveBufferSize, 65_536)
    #expect(try socket.option(.receiveBufferSize) <= 262_144)
}

/// Accepts one connection and handshakes as its server, on the connection's clock (10 s);
/// `bounded`: 64 KiB buffers first.
func serveOne(_ listener: Socket, _ configuration: TLSConfiguration, bounded small: Bool = false) throws -> TLSSocket {
    let (connection, _) = try listener.accept(deadline: .now + .seconds(10))
    if small { try boundBuffers(connection) }
    connection.timeout = try .after(.seconds(10))
    let tls = try TLSSocket(serving: connection, configuration: configuration)
    try tls.handshake()
    return tls
}

func trustingTestCA() throws -> TLSConfiguration {
    try TLSConfiguration.client(trusting: .authorities(file: tlsFixture("ca.pem")))
}

/// A client TLS connection to 127.0.0.1:port, not yet handshaken.
func tlsClient(_ port: UInt16, _ configuration: TLSConfiguration, name: String = "localhost",
                    timeout: SocketTimeout? = nil) throws -> TLSSocket {
    let socket = try Socket.connect(to: SocketAddress.ipv4(.loopback, port: port), timeout: try .after(.seconds(10)))
    socket.timeout = try timeout ?? .after(.seconds(10))
    return try TLSSocket(client: socket, configuration: configuration, serverName: name)
}


/// A TLS server on `listener` (64 KiB buffers) that handshakes and then never reads, so a
/// client's sends fill the path; it closes when `release` is signalled (30 s at most).
func nonReadingTLSServer(_ listener: Socket) throws -> (serving: Background<Void>, release: DispatchSemaphore) {
    let server = try TLSConfiguration.server(certificateChain: tlsFixture("good.pem"), privateKey: tlsFixture("good.key"))
    let release = DispatchSemaphore(value: 0)
    let serving = Background {
        let tls = try serveOne(listener, server, bounded: true)
        _ = release.wait(timeout: .now() + 30)  // never reads
        tls.close()
    }
    return (serving, release)
}

/// Everything `tls` receives until the peer ends the session (each receive within the
/// socket's timeout).
func receiveUntilEnd(_ tls: TLSSocket) throws -> [UInt8] {
    var all: [UInt8] = []
    while true {
        let chunk = try tls.receive(upTo: 65_536)
        if chunk.isEmpty { return all }
        all += chunk
    }
}
