import Foundation
import Sockets
import Testing

@Suite("sock wait and sock probe", .serialized)
struct WaitProbeTests {
    @Test("reproduction 6: sock wait on a healthy server that keeps connections open: exit 0 at once, nothing sent")
    func waitForHealthyServer() throws {
        let (peer, address) = try Peer.listening(Peer.reader, ["keep-open", "65536", "0"])
        defer { peer.kill() }
        let start = ContinuousClock.now
        let (status, _, err) = try ChildProcess(["wait", address, "--timeout", "5"]).finish(within: .seconds(10))
        #expect(status == 0, "\(err)")
        #expect(ContinuousClock.now - start < .seconds(3))
        #expect(err.contains("sock: \(address) is up after "), "\(err)")
        _ = try peer.finish(within: .seconds(5))
        #expect(peer.out.contains("got 0 0\n"), "the server saw bytes, or no clean close: \(peer.out)")
    }

    @Test("sock wait on a port that opens late: refused meanwhile, exit 0 once it listens, not before")
    func waitForLatePort() throws {
        let (socket, address) = try LoopbackPorts.refusing()
        let waiter = try ChildProcess(["wait", "\(address)", "--timeout", "10"])
        defer { waiter.kill() }
        let start = ContinuousClock.now
        usleep(500_000)
        #expect(waiter.process.isRunning, "sock wait ended while the port refused: \(waiter.err)")
        try socket.listen()
        let (status, _, err) = try waiter.finish(within: .seconds(10))
        let elapsed = ContinuousClock.now - start
        #expect(status == 0, "\(err)")
        #expect(elapsed >= .milliseconds(500))
        #expect(elapsed < .seconds(5))
        #expect(err.contains("sock: \(address) is up after "), "\(err)")
    }

    @Test("sock wait on a Unix socket path: no socket file meanwhile, exit 0 once a listener makes it")
    func waitForUnixPath() throws {
        let path = NSTemporaryDirectory() + "sock-wait-\(getpid()).sock"
        unlink(path)
        let waiter = try ChildProcess(["wait", path, "--timeout", "10"])
        defer { waiter.kill() }
        usleep(300_000)
        #expect(waiter.process.isRunning, "sock wait ended with no socket file: \(waiter.err)")
        let listener = try Socket.listen(on: .unix(path: path))
        defer { listener.close() }
        let (status, _, err) = try waiter.finish(within: .seconds(10))
        #expect(status == 0, "\(err)")
        #expect(err.contains("sock: \(path) is up after "), "\(err)")
        let (short, _, shortErr) = try ChildProcess(["wait", path + ".none", "--timeout", "200ms"]).finish(within: .seconds(10))
        #expect(short == 124)
        #expect(shortErr.contains("not up within 200ms: no socket file ("), "\(shortErr)")
    }

    @Test("sock wait runs out of time: exit 124 after --timeout, each endpoint's last reason",
          arguments: ["refused", "timed out"])
    func waitTimesOut(_ reason: String) throws {
        let (up, upAddress) = try LoopbackPorts.refusing()
        try up.listen()
        let refusing = try LoopbackPorts.refusing()
        let silent = try LoopbackPorts.silent()
        let down = reason == "refused" ? refusing.1 : silent.address
        let start = ContinuousClock.now
        let (status, _, err) = try ChildProcess(["wait", "\(upAddress)", "\(down)", "--timeout", "1"])
            .finish(within: .seconds(10))
        let elapsed = ContinuousClock.now - start
        #expect(status == 124, "\(err)")
        #expect(elapsed >= .seconds(1))
        #expect(elapsed < .seconds(5))
        #expect(err.contains("sock: \(upAddress) is up after "), "\(err)")
        #expect(err.contains("sock: \(down) not up within 1s: \(reason) ("), "\(err)")
        _ = (refusing, silent)
    }

    @Test("sock probe: open, refused and no answer, each with its time; exit 1 when one refused")
    func probe() throws {
        let (open, openAddress) = try LoopbackPorts.refusing()
        try open.listen()
        let (refusing, refusedAddress) = try LoopbackPorts.refusing()
        let silent = try LoopbackPorts.silent()
        let ports = [openAddress, refusedAddress, silent.address].map { "\($0.port!)" }
        let (status, out, err) = try ChildProcess(["probe", "127.0.0.1"] + ports + ["--timeout", "500ms"])
            .finish(within: .seconds(10))
        #expect(status == 1, "\(err)")
        let lines = out.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
        try #require(lines.count == 3, "\(out)")
        #expect(lines.map { String($0[0]) } == ["\(openAddress)", "\(refusedAddress)", "\(silent.address)"], "\(out)")
        #expect(lines[0][1] == "open" && lines[1][1] == "refused", "\(out)")
        #expect(lines[2][1] == "no" && lines[2][2] == "answer", "\(out)")
        // "500.3 ms": the time the unanswered port took is at least the timeout.
        let noAnswerTime = Double(lines[2][3]).map { lines[2][4] == "s" ? $0 * 1000 : $0 } ?? 0
        #expect(noAnswerTime >= 500, "\(out)")
        _ = (refusing, silent)
    }

    @Test("sock probe: every port open exits 0; a range is probed port by port")
    func probeAllOpen() throws {
        var listeners: [Socket] = []
        for _ in 0..<3 {
            let (socket, _) = try LoopbackPorts.refusing()
            try socket.listen()
            listeners.append(socket)
        }
        let ports = try listeners.map { "\(try $0.localAddress.port!)" }
        let (status, out, err) = try ChildProcess(["probe", "127.0.0.1"] + ports).finish(within: .seconds(10))
        #expect(status == 0, "\(err)")
        #expect(out.components(separatedBy: " open ").count - 1 == 3, "\(out)")
        // A range: three consecutive ports, whatever answers on them, gives three lines in order.
        let low = min(Int(ports[0])!, 65_533)
        let (_, rangeOut, _) = try ChildProcess(["probe", "127.0.0.1", "\(low)-\(low + 2)", "--timeout", "200ms"])
            .finish(within: .seconds(10))
        #expect(rangeOut.split(separator: "\n").map { $0.prefix { $0 != " " } }
                == (low...low + 2).map { "127.0.0.1:\($0)" }[...].map { Substring($0) }, "\(rangeOut)")
    }
}
