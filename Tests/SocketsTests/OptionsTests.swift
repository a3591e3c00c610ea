import Foundation
import Sockets
import Testing

@Suite("typed options")
struct OptionsTests {
    @Test("boolean options set and read back")
    func booleans() throws {
        let socket = try Socket(.ipv4)
        for option in [SocketOption<Bool>.reuseAddress, .reusePort, .keepAlive, .noDelay, .broadcast] {
            try socket.setOption(option, true)
            #expect(try socket.option(option), "\(option)")
            try socket.setOption(option, false)
            #expect(try !socket.option(option), "\(option)")
        }
        let v6 = try Socket(.ipv6)
        try v6.setOption(.ipv6Only, true)
        #expect(try v6.option(.ipv6Only))
    }

    @Test("buffer sizes, linger, the raw escape hatch")
    func values() throws {
        let socket = try Socket(.ipv4)
        try socket.setOption(.receiveBufferSize, 65_536)
        #expect(try socket.option(.receiveBufferSize) >= 65_536)
        try socket.setOption(.receiveLowWatermark, 4096)
        #expect(try socket.option(.receiveLowWatermark) == 4096)
        try socket.setOption(.sendBufferSize, 32_768)
        #expect(try socket.option(.sendBufferSize) >= 32_768)
        #expect(try socket.option(.linger) == nil)
        try socket.setOption(.linger, .seconds(3))
        #expect(try socket.option(.linger) == .seconds(3))
        try socket.setOption(.linger, .milliseconds(1500))  // rounded up to whole seconds
        #expect(try socket.option(.linger) == .seconds(2))
        try socket.setOption(.linger, nil)
        #expect(try socket.option(.linger) == nil)
        try socket.setRawOption(level: SOL_SOCKET, name: SO_KEEPALIVE, value: 1)
        #expect(try socket.rawOption(level: SOL_SOCKET, name: SO_KEEPALIVE) == 1)
        #expect(try socket.rawOption(level: SOL_SOCKET, name: SO_TYPE, capacity: 4).count == 4)
    }

    @Test("bad option values and unsupported options are named")
    func invalid() throws {
        let socket = try Socket(.ipv4)
        let (linger, _) = expectFailure(.invalidArgument) { try socket.setOption(.linger, .seconds(-1)) }
        #expect(linger?.detail?.contains("SO_LINGER") == true)
        expectFailure(.invalidArgument) { try socket.setOption(.receiveBufferSize, -5) }
        let (managed, _) = expectFailure(.invalidArgument) { try socket.setRawOption(level: SOL_SOCKET, name: SO_RCVTIMEO, bytes: [0, 0]) }
        #expect(managed?.detail?.contains("Socket.timeout") == true)
        let unix = try Socket(.unix)
        let (nodelay, _) = expectFailure(.invalidArgument) { try unix.setOption(.noDelay, true) }
        #expect(nodelay.map { "\($0)".contains("TCP_NODELAY") } == true, "\(String(describing: nodelay))")
        expectFailure(.invalidArgument) { _ = try socket.rawOption(level: SOL_SOCKET, name: 9999) }
    }
}
