import Foundation
import Sockets
import Testing

@Suite("sock listen on a Unix socket path", .serialized)
struct UnixListenerTests {
    /// A fresh path in the temporary directory, with nothing there.
    private func freshPath(_ name: String) -> String {
        let path = NSTemporaryDirectory() + "sock-\(getpid())-\(name).sock"
        unlink(path)
        return path
    }

    @Test("reproduction 7: a socket file nobody serves is replaced; one a live listener serves is kept")
    func staleSocketFile() throws {
        let path = freshPath("stale")
        defer { unlink(path) }
        // What a listener that was killed leaves: the file, and nobody accepting on it.
        let dead = try Socket.listen(on: .unix(path: path))
        dead.removesSocketFileOnClose = false
        dead.close()
        try #require(FileManager.default.fileExists(atPath: path), "precondition: the stale file is there")
        let (status, _, err) = try ChildProcess(["listen", path, "--accept-timeout", "300ms"]).finish(within: .seconds(10))
        #expect(status == 124, "\(err)")
        #expect(err.contains("listening on \(path)"), "\(err)")
        #expect(!FileManager.default.fileExists(atPath: path), "sock left its socket file")

        let live = try Socket.listen(on: .unix(path: path))
        defer { live.close() }
        let (liveStatus, _, liveErr) = try ChildProcess(["listen", path, "--accept-timeout", "300ms"]).finish(within: .seconds(10))
        #expect(liveStatus == 1, "\(liveErr)")
        #expect(liveErr.contains("a live socket serves it, so it was not removed"), "\(liveErr)")
        #expect(FileManager.default.fileExists(atPath: path), "the live listener's file was removed")
    }

    @Test("SIGINT, SIGTERM and SIGHUP remove the socket file; the exit status says which signal",
          arguments: [SIGINT, SIGTERM, SIGHUP])
    func signalRemovesSocketFile(_ number: Int32) throws {
        let expected = 128 + number
        for mode in [[], ["--keep-open"], ["--udp"]] {  // one connection, many, a datagram socket
            let path = freshPath("signal")
            defer { unlink(path) }
            let listener = try ChildProcess(["listen", path] + mode)  // stdin stays open
            defer { listener.kill() }
            _ = try listener.waitForLine(startingWith: "listening on ")
            #expect(FileManager.default.fileExists(atPath: path))
            kill(listener.pid, number)
            let (status, _, err) = try listener.finish(within: .seconds(10))
            #expect(status == expected, "\(mode): \(err)")
            #expect(!FileManager.default.fileExists(atPath: path), "\(mode): the socket file is still there")
        }
    }
}
