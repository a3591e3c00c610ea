import Sockets
import Testing

/// Loopback ports that answer in each of the ways a connect can end, made in this process.
enum LoopbackPorts {
    /// A port that refuses: bound, not listening (Linux answers a SYN with RST). `listen()`
    /// on the socket opens it.
    static func refusing() throws -> (Socket, SocketAddress) {
        let socket = try Socket(.ipv4)
        try socket.bind(to: .ipv4(.loopback, port: 0))
        return (socket, try socket.localAddress)
    }

    /// A port that never answers: a listener with a backlog of 0 whose queue is full, so
    /// Linux drops further SYNs. Keep the fillers alive as long as the port is needed.
    static func silent() throws -> (server: Socket, fillers: [Socket], address: SocketAddress) {
        let server = try Socket(.ipv4)
        try server.bind(to: .ipv4(.loopback, port: 0))
        try server.listen(backlog: 0)
        let address = try server.localAddress
        var fillers: [Socket] = []
        var full = false  // a filler's SYN went unanswered: the queue is full
        for _ in 0..<16 where !full {
            let filler = try Socket(.ipv4)
            fillers.append(filler)
            do throws(SocketError) { try filler.connect(to: address, deadline: .now + .milliseconds(100)) } catch {
                guard error.kind == .timedOut else { throw error }
                full = true
            }
        }
        try #require(full, "could not fill the accept queue in 16 connects")
        return (server, fillers, address)
    }
}
