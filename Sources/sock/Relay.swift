import ArgumentParser
import Foundation
import Sockets
import Synchronization

/// Copies standard input to a connection and the connection to standard output, as
/// netcat does, with the socket's timeout on every wait for the peer.
struct Relay {
    let socket: Socket
    /// True: the command ends when the peer closes (connect), after giving input already on
    /// its way up to `closeGrace` to be sent. False: it waits for standard input to be sent in
    /// full (listen).
    let endWhenPeerCloses: Bool

    /// How long connect still sends standard input after the peer has closed (socat's `-t`
    /// default): input written together with the peer's reply is not lost to a thread race.
    static let closeGrace = 0.5

    /// Runs until the peer closes (and, for listen, stdin is sent); returns the first error.
    func run() -> SocketError? {
        let firstError = Mutex<SocketError?>(nil)
        let uploadDone = DispatchSemaphore(value: 0)
        let socket = self.socket
        Thread.detachNewThread {
            defer { uploadDone.signal() }
            while true {
                guard let chunk = readSome(0, 65_536), !chunk.isEmpty else {
                    // End of input (or an unreadable stdin): tell the peer we are done writing.
                    try? socket.shutdown(.write)
                    return
                }
                do throws(SocketError) {
                    try socket.sendAll(chunk)
                } catch {
                    firstError.withLock { $0 = $0 ?? error }
                    socket.close()  // wakes the download side, which then stops
                    return
                }
            }
        }
        do throws(SocketError) {
            while true {
                let chunk = try socket.receive(upTo: 65_536)
                if chunk.isEmpty { break }
                if !writeAll(1, chunk) { break }  // stdout's reader is gone
            }
            if endWhenPeerCloses {
                _ = uploadDone.wait(timeout: .now() + Relay.closeGrace)
            } else {
                uploadDone.wait()
            }
        } catch {
            firstError.withLock { $0 = $0 ?? error }
        }
        socket.close()
        return firstError.withLock { $0 }
    }
}
