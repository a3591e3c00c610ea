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

    func server(_ workload: String, mode name: String) {
        switch workload {  // the async benchmarks' servers (AsyncBench.swift)
        case "echo-async": asyncEchoServer(timeout: name)
        case "echo-threads": threadEchoServer(timeout: name)
        case "bulk-async": asyncBulkServer()
        default: break
        }
        let mode = Mode(name)
        mode.perCall ? serve(workload, mode, ByDeadline.self) : serve(workload, mode, ByTimeout.self)
    }

    func client(_ workload: String, port: Int, count: Int, mode name: String) {
        if workload == "bulk-async" { asyncBulkClient(port: port, bytes: count) }
        let mode = Mode(name)
        mode.perCall
            ? drive(workload, port: port, count: count, mode, ByDeadline.self)
            : drive(workload, port: port, count: count, mode, ByTimeout.self)
    }

    func must<T>(_ body: () throws -> T) -> T {
        do { return try body() } catch { fail("\(error)") }
    }

    func serve<C: Calls>(_ workload: String, _ mode: Mode, _: C.Type) {
        Socket.defaultTimeout = mode.timeout
        let listener = must { try Socket(.ipv4) }
        must { try listener.setOption(.reuseAddress, true) }
        must { try listener.bind(to: .ipv4(.loopback, port: 0)) }
        must { try listener.listen() }
        announce(port: Int(must { try listener.localAddress }.port ?? 0))
        if workload == "connect" {
            while true { must { try C.accept(listener) }.close() }
        }
        let connection = must { try C.accept(listener) }
        if workload == "pingpong" {
            must { try connection.setOption(.noDelay, true) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
            while receiveFull(connection, buffer, C.self) {
                must { try C.sendAll(connection, UnsafeRawBufferPointer(buffer)) }
            }
        } else {
            // The library's best bulk path: 1 MiB receives that wait for 512 KiB (SO_RCVLOWAT).
            must { try connection.setOption(.receiveLowWatermark, 512 << 10) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
            while must({ try C.receive(connection, buffer) }) > 0 {}
            must { try connection.sendAll([107], deadline: mode.deadline) }
        }
        exit(0)
    }

    /// Fills `buffer`; false at end of stream.
    func receiveFull<C: Calls>(_ socket: Socket, _ buffer: UnsafeMutableRawBufferPointer, _: C.Type) -> Bool {
        var filled = 0
        while filled < buffer.count {
            let n = must { try C.receive(socket, UnsafeMutableRawBufferPointer(rebasing: buffer[filled...])) }
            if n == 0 { return false }
            filled += n
        }
        return true
    }

    func drive<C: Calls>(_ workload: String, port: Int, count: Int, _ mode: Mode, _: C.Type) {
        Socket.defaultTimeout = mode.timeout
        let address = SocketAddress.ipv4(.loopback, port: UInt16(port))
        switch workload {
        case "pingpong":
            let socket = must { try Socket(.ipv4) }
            must { try C.connect(socket, address) }
            must { try socket.setOption(.noDelay, true) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
            buffer.initializeMemory(as: UInt8.self, repeating: 1)
            var roundTrips = RoundTrips()
            let warmUp = count / 10
            for i in 0..<(warmUp + count) {
                let start = clockNanos()
                must { try C.sendAll(socket, UnsafeRawBufferPointer(buffer)) }
                guard receiveFull(socket, buffer, C.self) else { fail("end of stream") }
                if i >= warmUp { roundTrips.record(since: start) }
            }
            socket.close()
            reportRoundTrips(roundTrips)
        case "bulk":
            let socket = must { try Socket(.ipv4) }
            must { try C.connect(socket, address) }
            let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
            chunk.initializeMemory(as: UInt8.self, repeating: 0)
            let start = ContinuousClock.now
            var sent = 0
            while sent < count {
                must { try C.sendAll(socket, UnsafeRawBufferPointer(chunk)) }
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
                must { try C.connect(socket, address) }
                _ = must { try C.receive(socket, byte) }  // the server's close
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

/// The hot calls as a user writes them in each mode, each mode compiled on its own (so the
/// optimizer cannot merge the two into one call taking an optional deadline).
protocol Calls {
    static func accept(_ listener: Socket) throws -> Socket
    static func connect(_ socket: Socket, _ address: SocketAddress) throws
    static func sendAll(_ socket: Socket, _ buffer: UnsafeRawBufferPointer) throws
    static func receive(_ socket: Socket, _ buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// `none` and `timeout`: no deadline argument; the socket's timeout (if any) bounds each wait.
enum ByTimeout: Calls {
    static func accept(_ listener: Socket) throws -> Socket { try listener.accept().0 }
    static func connect(_ socket: Socket, _ address: SocketAddress) throws { try socket.connect(to: address) }
    static func sendAll(_ socket: Socket, _ buffer: UnsafeRawBufferPointer) throws { try socket.sendAll(buffer) }
    static func receive(_ socket: Socket, _ buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try socket.receive(into: buffer)
    }
}

/// `deadline`: every call is given its own deadline, 5 s ahead.
enum ByDeadline: Calls {
    static var deadline: ContinuousClock.Instant { .now + OursBench.limit }
    static func accept(_ listener: Socket) throws -> Socket { try listener.accept(deadline: deadline).0 }
    static func connect(_ socket: Socket, _ address: SocketAddress) throws {
        try socket.connect(to: address, deadline: deadline)
    }
    static func sendAll(_ socket: Socket, _ buffer: UnsafeRawBufferPointer) throws {
        try socket.sendAll(buffer, deadline: deadline)
    }
    static func receive(_ socket: Socket, _ buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try socket.receive(into: buffer, deadline: deadline)
    }
}
