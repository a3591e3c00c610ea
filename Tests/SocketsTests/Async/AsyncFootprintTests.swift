@testable import Sockets
import Testing

// What an idle async connection keeps: a task keeps the largest frame its calls ever needed
// for as long as it lives, and an async function keeps a slot in its frame for every error it
// may hold across a suspension. A one-word SocketError took the async receive's frame from
// 2.3 KB to 0.5 KB (Benchmarks A4 measures the memory per idle connection).

@Suite("async: footprint")
struct AsyncFootprintTests {
    @Test("a SocketError is one word, and keeps every field through transferred() and at()")
    func errorIsOneWord() {
        #expect(MemoryLayout<SocketError>.size == MemoryLayout<Int>.size)
        let address = SocketAddress.ipv4(.loopback, port: 9)
        let error = SocketError(.timedOut, .receive, errno: .connectionReset, timeout: .seconds(2), detail: "why")
            .at(address).transferred(7)
        #expect(error.kind == .timedOut)
        #expect(error.operation == .receive)
        #expect(error.address == address)
        #expect(error.errno == .connectionReset)
        #expect(error.timeout == .seconds(2))
        #expect(error.bytesTransferred == 7)
        #expect(error.detail == "why")
        #expect(error.description == "receive from 127.0.0.1:9 timed out after 2s (7 bytes transferred): why")
    }
}
