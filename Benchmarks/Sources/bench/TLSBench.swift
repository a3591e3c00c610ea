import Foundation
import Sockets
import SocketsTLS
import Synchronization

// The TLS workloads (T1-T5 in ../../run), this library's side; ../../c/ctls.c is the limit,
// with the same command line:
//   bench sockets server tls-handshake|tls-bulk MODE
//   bench sockets client tls-handshake PORT COUNT MODE       COUNT/10 + COUNT sequential
//                                         connect + handshake + close: p50/p99, client CPU
//   bench sockets client tls-bulk PORT BYTES MODE            64 KiB sendAll, then the ack
//   bench sockets client tls-late PORT COUNT MODE SECONDS    handshakes against ctls's drip
//                                         peer, limited to SECONDS: lateness (MODE deadline:
//                                         handshake(deadline:); timeout: the socket's timeout)
//   bench sockets client tls-soak 0 COUNT MODE               COUNT handshakes, both ends in
//                                         this process, one in ten against a peer that answers
//                                         in HTTP: descriptors and RSS
// MODE none: no limit on any wait; deadline: handshake(deadline:) 5 s ahead. Certificates:
// $BENCH_TLS_DIR/{ca.pem, good.pem, good.key} (Tests/Fixtures/tls/make.sh), as ctls.c.

func tlsFixture(_ name: String) -> String {
    guard let dir = ProcessInfo.processInfo.environment["BENCH_TLS_DIR"] else { fail("BENCH_TLS_DIR is not set") }
    return dir + "/" + name
}

func must<T>(_ body: () throws -> T) -> T {
    do { return try body() } catch { fail("\(error)") }
}

func cpuMicroseconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
}

enum TLSBench {
    static let limit = Duration.seconds(5)

    static func deadline(_ mode: String) -> ContinuousClock.Instant? {
        switch mode {
        case "none": return nil
        case "deadline": return .now + limit
        default: fail("unknown mode \(mode) for the TLS workloads")
        }
    }

    static func serverConfiguration() -> TLSConfiguration {
        must { try TLSConfiguration.server(certificateChain: tlsFixture("good.pem"), privateKey: tlsFixture("good.key")) }
    }

    static func clientConfiguration() -> TLSConfiguration {
        must { try TLSConfiguration.client(trusting: .authorities(file: tlsFixture("ca.pem"))) }
    }

    static func listening() -> (Socket, SocketAddress) {
        let listener = must { try Socket(.ipv4) }
        must { try listener.setOption(.reuseAddress, true) }
        must { try listener.bind(to: .ipv4(.loopback, port: 0)) }
        must { try listener.listen() }
        return (listener, must { try listener.localAddress })
    }

    static func server(_ workload: String, mode: String) -> Never {
        let configuration = serverConfiguration()
        let (listener, address) = listening()
        announce(port: Int(address.port ?? 0))
        switch workload {
        case "tls-handshake":
            while true {
                let tls = must { try TLSSocket(serving: try listener.accept().0, configuration: configuration) }
                do {
                    try tls.handshake(deadline: deadline(mode))
                    while try !tls.receive(upTo: 1024).isEmpty {}  // until the client's close
                } catch {}
                tls.close()
            }
        case "tls-bulk":
            let tls = must { try TLSSocket(serving: try listener.accept().0, configuration: configuration) }
            must { try tls.handshake(deadline: deadline(mode)) }
            // An 8-byte length, then that many bytes.
            var header: [UInt8] = []
            var got = 0
            while true {
                let data = must { try tls.receive(upTo: 65_536) }
                if data.isEmpty { fail("bulk: the stream ended early") }
                let skip = min(8 - header.count, data.count)
                header += data[..<skip]
                got += data.count - skip
                if header.count == 8 && got >= Int(header.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }) { break }
            }
            must { try tls.sendAll([107]) }
            let cpu = cpuMicroseconds()
            while (try? tls.receive(upTo: 1024))?.isEmpty == false {}
            tls.close()
            report([("server_cpu_s", cpu / 1e6)])
            exit(0)
        default:
            fail("unknown workload \(workload)")
        }
    }

    static func client(_ workload: String, port: Int, count: Int, mode: String, seconds: Double) -> Never {
        let address = SocketAddress.ipv4(.loopback, port: UInt16(port))
        switch workload {
        case "tls-handshake": handshakes(address, count: count, mode: mode)
        case "tls-bulk": bulk(address, bytes: count, mode: mode)
        case "tls-late": lateness(address, count: count, mode: mode, seconds: seconds)
        case "tls-soak": soak(count: count)
        default: fail("unknown workload \(workload)")
        }
        exit(0)
    }

    /// T1/T2: connect + handshake + close, one after another.
    static func handshakes(_ address: SocketAddress, count: Int, mode: String) {
        let configuration = clientConfiguration()
        var times = RoundTrips()
        let warmUp = count / 10
        var cpu = cpuMicroseconds()
        var start = ContinuousClock.now
        for i in 0..<(warmUp + count) {
            if i == warmUp { (cpu, start) = (cpuMicroseconds(), .now) }
            let t0 = clockNanos()
            let socket = must { try Socket(.ipv4) }
            let end = deadline(mode)
            must { try socket.connect(to: address, deadline: end) }
            let tls = must { try TLSSocket(client: socket, configuration: configuration, serverName: "localhost") }
            must { try tls.handshake(deadline: end) }
            tls.close()
            if i >= warmUp { times.record(since: t0) }
        }
        guard count > 0 else { return emit("{}") }
        let used = (cpuMicroseconds() - cpu) / Double(count)
        report([("p50_us", times.percentile(50) / 1e3), ("p99_us", times.percentile(99) / 1e3), ("cpu_us", used),
                ("per_s", Double(count) / seconds(since: start))])
    }

    /// T3: `bytes` of application data in 64 KiB sends, after an 8-byte length; then the ack.
    static func bulk(_ address: SocketAddress, bytes: Int, mode: String) {
        let socket = must { try Socket(.ipv4) }
        must { try socket.connect(to: address) }
        let tls = must { try TLSSocket(client: socket, configuration: clientConfiguration(), serverName: "localhost") }
        must { try tls.handshake(deadline: deadline(mode)) }
        let chunk = [UInt8](repeating: 0, count: 64 << 10)
        let start = ContinuousClock.now
        must { try tls.sendAll(withUnsafeBytes(of: UInt64(bytes).littleEndian) { Array($0) }) }
        var sent = 0
        while sent < bytes {
            must { try tls.sendAll(chunk, deadline: deadline(mode)) }
            sent += chunk.count
        }
        guard must({ try tls.receive(upTo: 1) }) == [107] else { fail("no ack") }
        report([("gbps", Double(sent) / seconds(since: start) / 1e9), ("cpu_s", cpuMicroseconds() / 1e6)])
        tls.close()
    }

    /// T4: handshakes against a peer that drips its part, each limited to `seconds`.
    static func lateness(_ address: SocketAddress, count: Int, mode: String, seconds: Double) {
        let configuration = clientConfiguration()
        let limit = Duration.nanoseconds(Int64(seconds * 1e9))
        var late: [Duration] = []
        for _ in 0..<count {
            let socket = must { try Socket(.ipv4) }
            must { try socket.connect(to: address) }
            let tls = must { try TLSSocket(client: socket, configuration: configuration, serverName: "localhost") }
            let end = ContinuousClock.now + limit
            do throws(SocketError) {
                switch mode {
                case "deadline": try tls.handshake(deadline: end)
                case "timeout":
                    socket.timeout = try .after(limit)
                    try tls.handshake()
                default: fail("unknown mode \(mode) for tls-late")
                }
                fail("the handshake completed against the drip peer")
            } catch {
                guard error.kind == .timedOut else { fail("\(error)") }
            }
            late.append(ContinuousClock.now - end)
            tls.close()
        }
        guard !late.isEmpty else { return emit("{}") }
        let us = late.map { Double($0.components.seconds) * 1e6 + Double($0.components.attoseconds) / 1e12 }.sorted()
        report([("mean_us", us.reduce(0, +) / Double(us.count)), ("median_us", us[us.count / 2]),
                ("max_us", us.last!), ("min_us", us[0])])
    }

    /// T5: `count` handshakes with both ends in this process; one in ten is against a peer that
    /// answers in HTTP (the error path). Descriptors and RSS after the first tenth and at the end.
    static func soak(count: Int) {
        let server = serverConfiguration(), client = clientConfiguration()
        let (good, goodAddress) = listening()
        let (bad, badAddress) = listening()
        let served = Counter(), refused = Counter()
        Thread.detachNewThread {
            while true {
                let tls = must { try TLSSocket(serving: try good.accept().0, configuration: server) }
                do {
                    try tls.handshake(deadline: .now + limit)
                    while try !tls.receive(upTo: 1024, deadline: .now + limit).isEmpty {}
                } catch {}
                tls.close()
                served.value.add(1, ordering: .relaxed)
            }
        }
        Thread.detachNewThread {
            while true {
                let connection = must { try bad.accept().0 }
                _ = try? connection.receive(upTo: 4096, deadline: .now + limit)
                try? connection.sendAll(Array("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".utf8))
                connection.close()
                refused.value.add(1, ordering: .relaxed)
            }
        }
        func settle(_ done: Int) -> (rss: Double, fds: Int) {
            let goodDone = done - done / 10, badDone = done / 10
            while served.value.load(ordering: .acquiring) < goodDone || refused.value.load(ordering: .acquiring) < badDone { usleep(1000) }
            return (residentKiB(), openDescriptors())
        }
        let before = settle(0)
        var first = before
        let start = ContinuousClock.now
        for i in 0..<count {
            let isBad = i % 10 == 9
            let socket = must { try Socket(.ipv4) }
            must { try socket.connect(to: isBad ? badAddress : goodAddress, deadline: .now + limit) }
            let tls = must { try TLSSocket(client: socket, configuration: client, serverName: "localhost") }
            do throws(SocketError) {
                try tls.handshake(deadline: .now + limit)
                if isBad { fail("a handshake with an HTTP server succeeded") }
            } catch {
                if !isBad || error.kind != .tlsProtocol { fail("handshake \(i): \(error)") }
            }
            tls.close()
            if i + 1 == count / 10 { first = settle(i + 1) }
        }
        let rate = Double(count) / seconds(since: start)
        let last = settle(count)
        report([("handshakes", Double(count)), ("per_s", rate), ("fds_before", Double(before.fds)),
                ("fds_first", Double(first.fds)), ("fds_end", Double(last.fds)), ("rss_kib_before", before.rss),
                ("rss_kib_first", first.rss), ("rss_kib_end", last.rss)])
    }

    static func residentKiB() -> Double {
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = statm.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) else { fail("/proc/self/statm") }
        return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1024
    }

    static func openDescriptors() -> Int {
        must { try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") }.count
    }
}

