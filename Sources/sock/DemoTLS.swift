import Dispatch
import Sockets
import SocketsTLS

// `sock demo` rows 7a and 7b: a TLS handshake against a server that drips its part a byte
// every 20 ms. One limit for the whole handshake ends it at the limit; a timeout per wait
// (what TLS stacks that set the socket's receive timeout do) never fires, since no single
// wait is long.

extension Scenarios {
    /// How often the dripping server sends a byte.
    static let dripEvery: Duration = .milliseconds(20)

    func sevenA() throws(SocketError) -> Demo.Row {
        let drip = try Dripper(listening(), every: Self.dripEvery, for: safety * 2)
        defer { drip.stop() }
        let client = try Socket(.ipv4)
        defer { client.close() }
        client.timeout = timeout
        try client.connect(to: drip.address, deadline: .now + safety)
        let scenario = "TLS handshake, limit \(timeout); a byte every \(formatDuration(Self.dripEvery))"
        let tls: TLSSocket
        do throws(SocketError) {
            // Nothing to verify: the server never gets as far as a certificate.
            let configuration = try TLSConfiguration.client(trusting: .anything, resumesSessions: false)
            tls = try TLSSocket(client: client, configuration: configuration, serverName: nil)
        } catch {
            return .init(number: "7a", scenario: scenario, claim: "TimeoutError after \(timeout)",
                         outcome: "not played: \(error.detail ?? "\(error)")", elapsed: .zero)
        }
        let (elapsed, result) = timed { () throws(SocketError) in try tls.handshake(deadline: .now + safety) }
        tls.close()
        return .init(number: "7a", scenario: scenario, claim: "TimeoutError after \(timeout)",
                     outcome: describe(result, elapsed: elapsed), elapsed: elapsed)
    }

    /// The same server read as a TLS stack with a timeout per wait reads it: each receive
    /// gets the socket's timeout afresh. The demo stops it at `safety`.
    func sevenB() throws(SocketError) -> Demo.Row {
        let drip = try Dripper(listening(), every: Self.dripEvery, for: safety * 2)
        defer { drip.stop() }
        let client = try Socket(.ipv4)
        defer { client.close() }
        client.timeout = timeout
        try client.connect(to: drip.address, deadline: .now + safety)
        let start = ContinuousClock.now
        var last = start
        var longestWait = Duration.zero
        var outcome: String?
        while outcome == nil {
            do throws(SocketError) {
                // The socket's timeout for this wait alone; the demo's bound for the loop.
                let chunk = try client.receive(upTo: 65_536, deadline: start + safety)
                let now = ContinuousClock.now
                longestWait = max(longestWait, now - last)
                last = now
                if chunk.isEmpty { outcome = "the server closed" }
            } catch where error.kind == .timedOut && ContinuousClock.now >= start + safety {
                // The demo's bound, not the socket's timeout: no wait took that long.
                outcome = "still waiting after \(formatDuration(safety)): every byte within \(formatElapsed(longestWait))"
            } catch {
                outcome = describe(.failure(error), elapsed: .now - start)
            }
        }
        return .init(number: "7b", scenario: "the same, \(timeout) per wait (per-wait TLS stacks)",
                     claim: "TimeoutError after \(timeout)", outcome: outcome!, elapsed: .now - start)
    }
}

/// A server that accepts one connection and sends a TLS record header announcing a 16 KiB
/// handshake record, then the record a byte at a time, for at most `limit`.
final class Dripper: Sendable {
    let listener: Socket
    let address: SocketAddress
    private let stopped = Locked(false)
    private let done = DispatchSemaphore(value: 0)

    init(_ listener: Socket, every interval: Duration, for limit: Duration) throws(SocketError) {
        self.listener = listener
        address = try listener.localAddress
        startThread { [self] in
            defer { done.signal() }
            let end = ContinuousClock.now + limit
            guard let connection = try? listener.accept(deadline: end).0 else { return }
            defer { connection.close() }
            // Handshake (22), TLS 1.2 on the wire, 16,384 bytes: the client waits for all of it.
            let record: [UInt8] = [22, 3, 3, 0x40, 0x00]
            var sent = 0
            while ContinuousClock.now < end && !stopped.withLock({ $0 }) {
                let byte = sent < record.count ? record[sent] : 0
                guard (try? connection.sendAll([byte], deadline: end)) != nil else { return }
                sent += 1
                sleepThread(for: interval)
            }
        }
    }

    /// Ends the server (within one interval) and closes it.
    func stop() {
        stopped.withLock { $0 = true }
        listener.close()  // ends an accept still waiting
        done.wait()
    }
}
