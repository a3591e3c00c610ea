import Foundation
import Sockets
import Synchronization

/// This library, used as its README teaches. MODE: `none` (blocking, no timeout), `timeout`
/// (a 5 s socket timeout armed on every wait), `deadline` (a per-call deadline 5 s ahead).
struct OursBench: Implementation {
    static let limit = Duration.seconds(5)

    struct Mode {
        let timeout: SocketTimeout
        let perCall: Bool
        init(_ name: String) {
            switch name {
            case "none": (timeout, perCall) = (.never, false)
            case "timeout": (timeout, perCall) = (try! .after(OursBench.limit), false)
            case "deadline": (timeout, perCall) = (.never, true)
            default: fail("unknown mode \(name) for sockets")
            }
        }
        /// The deadline for one call: 5 s from now in `deadline` mode, none otherwise.
        @inline(__always)
        var deadline: ContinuousClock.Instant? { perCall ? .now + OursBench.limit : nil }
    }

    func must<T>(_ body: () throws -> T) -> T {
        do { return try body() } catch { fail("\(error)") }
    }

    func server(_ workload: String, mode name: String) {
        let mode = Mode(name)
        Socket.defaultTimeout = mode.timeout
        let listener = must { try Socket(.ipv4) }
        must { try listener.setOption(.reuseAddress, true) }
        must { try listener.bind(to: .ipv4(.loopback, port: 0)) }
        must { try listener.listen() }
        announce(port: Int(must { try listener.localAddress }.port ?? 0))
        if workload == "connect" {
            while true { must { try listener.accept(deadline: mode.deadline) }.0.close() }
        }
        let (connection, _) = must { try listener.accept(deadline: mode.deadline) }
        if workload == "pingpong" {
            must { try connection.setOption(.noDelay, true) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
            while receiveFull(connection, buffer, mode) {
                must { try connection.sendAll(UnsafeRawBufferPointer(buffer), deadline: mode.deadline) }
            }
        } else {
            // The library's best bulk path: 1 MiB receives that wait for 512 KiB (SO_RCVLOWAT).
            must { try connection.setOption(.receiveLowWatermark, 512 << 10) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
            while must({ try connection.receive(into: buffer, deadline: mode.deadline) }) > 0 {}
            must { try connection.sendAll([107], deadline: mode.deadline) }
        }
        exit(0)
    }

    /// Fills `buffer`; false at end of stream.
    func receiveFull(_ socket: Socket, _ buffer: UnsafeMutableRawBufferPointer, _ mode: Mode) -> Bool {
        var filled = 0
        while filled < buffer.count {
            let n = must { try socket.receive(into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]), deadline: mode.deadline) }
            if n == 0 { return false }
            filled += n
        }
        return true
    }

    func client(_ workload: String, port: Int, count: Int, mode name: String) {
        let mode = Mode(name)
        Socket.defaultTimeout = mode.timeout
        let address = SocketAddress.ipv4(.loopback, port: UInt16(port))
        switch workload {
        case "pingpong":
            let socket = must { try Socket(.ipv4) }
            must { try socket.connect(to: address, deadline: mode.deadline) }
            must { try socket.setOption(.noDelay, true) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
            buffer.initializeMemory(as: UInt8.self, repeating: 1)
            var roundTrips = RoundTrips()
            let warmUp = count / 10
            for i in 0..<(warmUp + count) {
                let start = clockNanos()
                must { try socket.sendAll(UnsafeRawBufferPointer(buffer), deadline: mode.deadline) }
                guard receiveFull(socket, buffer, mode) else { fail("end of stream") }
                if i >= warmUp { roundTrips.record(since: start) }
            }
            socket.close()
            reportRoundTrips(roundTrips)
        case "bulk":
            let socket = must { try Socket(.ipv4) }
            must { try socket.connect(to: address, deadline: mode.deadline) }
            let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
            chunk.initializeMemory(as: UInt8.self, repeating: 0)
            let start = ContinuousClock.now
            var sent = 0
            while sent < count {
                must { try socket.sendAll(UnsafeRawBufferPointer(chunk), deadline: mode.deadline) }
                sent += chunk.count
            }
            must { try socket.shutdown(.write) }
            guard must({ try socket.receive(upTo: 1, deadline: mode.deadline) }) == [107] else { fail("no ack") }
            report([("gbps", Double(sent) / seconds(since: start) / 1e9)])
        case "connect":
            let start = ContinuousClock.now
            let byte = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 1)
            for _ in 0..<count {
                let socket = must { try Socket(.ipv4) }
                must { try socket.connect(to: address, deadline: mode.deadline) }
                _ = must { try socket.receive(into: byte, deadline: mode.deadline) }  // the server's close
                socket.close()
            }
            report([("per_s", Double(count) / seconds(since: start))])
        default:
            fail("unknown workload \(workload)")
        }
    }

    /// W4: `count` timed-out receives (a connection that never gets data) or accepts (nobody
    /// connects), on `threads` threads whose starts are spread over one timeout.
    func precision(_ what: String, seconds: Double, count: Int, threads: Int, mode: String) {
        let timeout = Duration.nanoseconds(Int64(seconds * 1e9))
        let perCall = mode == "deadline"
        let lateness = Mutex<[Duration]>([])
        let base = ContinuousClock.now + .milliseconds(20)
        var keep: [Socket] = []
        var workers: [Thread] = []
        let done = DispatchGroup()
        for k in 0..<threads {
            let (listener, address) = listening()
            keep.append(listener)
            var target = listener
            if what == "recv" {
                target = must { try Socket(.ipv4) }
                must { try target.connect(to: address) }
                keep.append(target)
            }
            target.timeout = perCall ? .never : (try! .after(timeout))
            let socket = target
            let start = base + timeout * (Double(k) / Double(threads))
            let each = count / threads
            done.enter()
            let worker = Thread {
                defer { done.leave() }
                while ContinuousClock.now < start { usleep(1000) }
                var mine: [Duration] = []
                for _ in 0..<each {
                    let t0 = ContinuousClock.now
                    let end = t0 + timeout
                    do throws(SocketError) {
                        if what == "recv" {
                            _ = try socket.receive(upTo: 1, deadline: perCall ? end : nil)
                        } else {
                            _ = try socket.accept(deadline: perCall ? end : nil)
                        }
                        fail("expected a timeout")
                    } catch {
                        guard error.kind == .timedOut else { fail("\(error)") }
                    }
                    mine.append(ContinuousClock.now - end)
                }
                lateness.withLock { $0 += mine }
            }
            workers.append(worker)
            worker.start()
        }
        done.wait()
        let late = lateness.withLock { $0 }.sorted()
        if late.isEmpty { return emit("{}") }
        let us = { (d: Duration) in Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12 }
        let mean = late.map(us).reduce(0, +) / Double(late.count)
        report([("mean_us", mean), ("p99_us", us(late[late.count * 99 / 100])), ("max_us", us(late.last!)), ("min_us", us(late[0]))])
        _ = keep
    }

    func listening() -> (Socket, SocketAddress) {
        let listener = must { try Socket(.ipv4) }
        must { try listener.bind(to: .ipv4(.loopback, port: 0)) }
        must { try listener.listen() }
        return (listener, must { try listener.localAddress })
    }
}
