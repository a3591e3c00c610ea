import Foundation
@testable import Sockets
import Testing

// A Unix listener's socket file: removed when the listener closes (as Go's listeners do), but
// only the file it made; a stale file replaced on request, a live one never.

private func socketPath(_ name: String) -> String {
    NSTemporaryDirectory() + "sockets-file-\(getpid())-\(name)-\(UUID().uuidString.prefix(6)).sock"
}

private func exists(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0
}

@Suite("Unix socket files")
struct UnixSocketFileTests {
    @Test("closing a Unix listener removes its socket file, so the next one can bind the path")
    func listenerRemovesItsFile() throws {
        let path = socketPath("close")
        defer { unlink(path) }
        let address = try SocketAddress(path)
        let first = try Socket(.unix)
        try first.bind(to: address)
        try first.listen()
        // A connection accepted from it, closed, removes nothing.
        let client = try Socket(.unix)
        try client.connect(to: address, deadline: .now + .seconds(5))
        let (accepted, _) = try first.accept(deadline: .now + .seconds(5))
        accepted.close()
        client.close()
        #expect(exists(path))
        first.close()
        #expect(!exists(path))
        let second = try Socket(.unix)
        defer { second.close() }
        try second.bind(to: address)
        try second.listen()
    }

    @Test("a file made at the path after the listener's own was removed is left alone")
    func othersFileIsKept() throws {
        let path = socketPath("other")
        defer { unlink(path) }
        let address = try SocketAddress(path)
        let first = try Socket(.unix)
        try first.bind(to: address)
        try first.listen()
        unlink(path)  // someone removes it and serves the path themselves
        let other = try Socket(.unix)
        defer { other.close() }
        try other.bind(to: address)
        try other.listen()
        first.close()
        #expect(exists(path))
        let client = try Socket(.unix)
        defer { client.close() }
        try client.connect(to: address, deadline: .now + .seconds(5))  // still served
    }

    @Test("removesSocketFileOnClose = false keeps the file; a socket that never listened removes nothing")
    func optOut() throws {
        let path = socketPath("keep")
        defer { unlink(path) }
        let address = try SocketAddress(path)
        let listener = try Socket(.unix)
        try listener.bind(to: address)
        try listener.listen()
        #expect(listener.removesSocketFileOnClose)
        listener.removesSocketFileOnClose = false
        listener.close()
        #expect(exists(path))
        unlink(path)
        let datagram = try Socket(.unix, .datagram)
        try datagram.bind(to: address)
        datagram.close()
        #expect(exists(path))
    }

    @Test("bind(removingStaleSocketFile:) replaces a file nobody serves, never a live listener's")
    func staleReplaced() throws {
        let path = socketPath("stale")
        defer { unlink(path) }
        let address = try SocketAddress(path)
        let dead = try Socket(.unix)
        try dead.bind(to: address)
        try dead.listen()
        dead.removesSocketFileOnClose = false  // as a killed process leaves it
        dead.close()
        let plain = try Socket(.unix)
        defer { plain.close() }
        expectFailure(.addressInUse) { try plain.bind(to: address) }
        let replacing = try Socket(.unix)
        defer { replacing.close() }
        try replacing.bind(to: address, removingStaleSocketFile: true)
        try replacing.listen()
        // Now it is live: another may not take it.
        let intruder = try Socket(.unix)
        defer { intruder.close() }
        let (error, _) = expectFailure(.addressInUse) { try intruder.bind(to: address, removingStaleSocketFile: true) }
        #expect(error?.detail?.contains("live socket") == true, "\(String(describing: error))")
        let client = try Socket(.unix)
        defer { client.close() }
        try client.connect(to: address, deadline: .now + .seconds(5))
        let (served, _) = try replacing.accept(deadline: .now + .seconds(5))
        served.close()
        // A regular file is never removed.
        let filePath = socketPath("regular")
        defer { unlink(filePath) }
        #expect(FileManager.default.createFile(atPath: filePath, contents: Data("x".utf8)))
        let onFile = try Socket(.unix)
        defer { onFile.close() }
        let (fileError, _) = expectFailure(.addressInUse) { try onFile.bind(to: SocketAddress(filePath), removingStaleSocketFile: true) }
        #expect(fileError?.detail?.contains("not a socket") == true)
        #expect(exists(filePath))
    }
}
