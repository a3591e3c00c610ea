import Foundation
import FlyingSocks
import NIOCore
import NIOPosix

// The peers of the async benchmarks: the same echo server written with other stacks, each as
// its users write it, driven by the same C load generator (c/aload.c):
//   bench echo-server nio-handlers|nio-async|flyingsocks TIMEOUT
// Listens on 127.0.0.1 port 0 (backlog 4096), prints "PORT n", serves until killed. Every
// connection: TCP_NODELAY; read what is available, write it all back; close at end of stream
// or on any error (quietly). TIMEOUT > 0 (seconds): an idle timeout bounds each wait for data
// and closes that connection when it fires.
//   nio-handlers  ServerBootstrap, an echo ChannelInboundHandler; IdleStateHandler(readTimeout:)
//                 in front of it, its `.read` event closing the channel.
//   nio-async     NIOAsyncChannel in a discarding task group; each read raced against
//                 `Task.sleep(for:)` in a task group.
//   flyingsocks   AsyncSocket on FlyingSocks' epoll pool, a task per connection; each read
//                 wrapped in a copy of FlyingSocks' own `withThrowingTimeout` (package-internal
//                 there, so not callable from here; AsyncSocket has no timeouts of its own).
// One event loop thread for NIO; the async peers' tasks run on the global executor.

/// Serves until killed. impl: "nio-handlers" | "nio-async" | "flyingsocks"; timeout: seconds, 0 = none.
func asyncPeerServer(_ impl: String, timeout: Double) -> Never {
    guard timeout >= 0, timeout.isFinite else { fail("echo-server: bad timeout \(timeout)") }
    switch impl {
    case "nio-handlers": nioHandlersEchoServer(timeout: timeout)
    case "nio-async": startAsync { try await nioAsyncEchoServer(timeout: timeout) }
    case "flyingsocks": startAsync { try await flyingSocksEchoServer(timeout: timeout) }
    default: fail("echo-server: impl is nio-handlers, nio-async or flyingsocks, got \(impl)")
    }
    while true { sleep(3600) }
}

/// Runs `server` in a task of its own (not on the main actor); a failure ends the process.
private func startAsync(_ server: @escaping @Sendable () async throws -> Void) {
    Task.detached {
        do {
            try await server()
            fail("echo-server: the server stopped")
        } catch {
            fail("\(error)")
        }
    }
}

// MARK: - SwiftNIO, channel handlers

private func nioHandlersEchoServer(timeout: Double) -> Never {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let readTimeout: TimeAmount? = timeout > 0 ? .milliseconds(Int64((timeout * 1000).rounded())) : nil
    let bootstrap = ServerBootstrap(group: group)
        .serverChannelOption(.backlog, value: 4096)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                if let readTimeout {
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: readTimeout))
                }
                try channel.pipeline.syncOperations.addHandler(PeerEchoHandler())
            }
        }
    do {
        let channel = try bootstrap.bind(host: "127.0.0.1", port: 0).wait()
        announce(port: channel.localAddress?.port ?? 0)
        try channel.closeFuture.wait()
    } catch {
        fail("\(error)")
    }
    fail("echo-server: the server channel closed")
}

/// Echoes what it reads; closes on the idle timeout's read event and on any error.
private final class PeerEchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.writeAndFlush(data, promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(.read) = event as? IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

// MARK: - SwiftNIO, NIOAsyncChannel

private func nioAsyncEchoServer(timeout: Double) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let serverChannel = try await ServerBootstrap(group: group)
        .serverChannelOption(.backlog, value: 4096)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
        .bind(host: "127.0.0.1", port: 0) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    announce(port: serverChannel.channel.localAddress?.port ?? 0)
    let idle: Duration? = timeout > 0 ? .nanoseconds(Int64((timeout * 1e9).rounded())) : nil
    try await withThrowingDiscardingTaskGroup { group in
        try await serverChannel.executeThenClose { inbound in
            for try await connection in inbound {
                group.addTask {
                    try? await connection.executeThenClose { input, output in
                        guard let idle else {
                            for try await buffer in input { try await output.write(buffer) }
                            return
                        }
                        // The iterator is not Sendable (NIO marks it so: it must not be shared
                        // between tasks); it is only ever used by one read at a time, here in
                        // the child task of the race below, so the check is waived.
                        nonisolated(unsafe) var iterator = input.makeAsyncIterator()
                        while true {
                            let next = try await withThrowingTaskGroup(of: ReadOrTimeout.self) { race in
                                race.addTask { .read(try await iterator.next()) }
                                race.addTask {
                                    try await Task.sleep(for: idle)
                                    return .timedOut
                                }
                                let first = try await race.next()!
                                race.cancelAll()
                                return first
                            }
                            guard case .read(let buffer?) = next else { return }  // end of stream or timed out
                            try await output.write(buffer)
                        }
                    }
                }
            }
        }
    }
}

private enum ReadOrTimeout: Sendable {
    case read(ByteBuffer?)
    case timedOut
}

// MARK: - FlyingSocks

private func flyingSocksEchoServer(timeout: Double) async throws {
    let pool: some AsyncSocketPool = .make()
    try await pool.prepare()
    let socket = try FlyingSocks.Socket(domain: AF_INET, type: .stream)
    try socket.setValue(true, for: .localAddressReuse)
    try socket.bind(to: sockaddr_in.inet(ip4: "127.0.0.1", port: 0))
    try socket.listen(maxPendingConnection: 4096)
    guard case let .ip4(_, port) = try socket.sockname() else { fail("no port") }
    let listener = try AsyncSocket(socket: socket, pool: pool)
    announce(port: Int(port))
    // As FlyingFox's HTTPServer runs it: the pool's loop and the accept loop in one task group,
    // a task per connection in a discarding task group.
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await pool.run() }
        group.addTask {
            try await withThrowingDiscardingTaskGroup { connections in
                for try await connection in listener.sockets {
                    connections.addTask { await flyingSocksEcho(connection, timeout: timeout) }
                }
            }
        }
        try await group.next()
    }
}

private func flyingSocksEcho(_ connection: AsyncSocket, timeout: Double) async {
    do {
        try connection.socket.setValue(true, for: BoolSocketOption(level: Int32(IPPROTO_TCP), name: TCP_NODELAY))
        while true {
            // read(atMost:) returns what is available (at least a byte); it throws
            // SocketError.disconnected at end of stream.
            let bytes = timeout > 0
                ? try await flyingSocksWithThrowingTimeout(seconds: timeout) { try await connection.read(atMost: 4096) }
                : try await connection.read(atMost: 4096)
            try await connection.write(Data(bytes))
        }
    } catch {
        try? connection.close()
    }
}

/// FlyingSocks 0.27.1's `withThrowingTimeout(seconds:body:)` (Task+Timeout.swift, from
/// swhitty/swift-timeout), which FlyingSocks declares `package` and uses for its own timeouts
/// (`AsyncSocket.connected(to:pool:timeout:)`, FlyingFox's request timeout). Same mechanism:
/// the body in one unstructured task, a `Task.sleep` in another that cancels the body; the
/// body's result is awaited either way, so the read has ended when this returns. Simplified
/// to a Sendable result (no `isolation` parameter, no `Transferring` box).
private func flyingSocksWithThrowingTimeout<T: Sendable>(
    seconds: TimeInterval,
    body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let bodyTask = Task { try await body() }
    let timeoutTask = Task {
        defer { bodyTask.cancel() }
        try await Task.sleep(nanoseconds: UInt64(seconds * 1_000_000_000))
        throw SocketError.timeout(message: "Task timed out before completion. Timeout: \(seconds) seconds.")
    }
    let bodyResult = await withTaskCancellationHandler {
        await bodyTask.result
    } onCancel: {
        bodyTask.cancel()
    }
    timeoutTask.cancel()
    if case let .failure(SocketError.timeout(message: message)) = await timeoutTask.result {
        throw SocketError.timeout(message: message)
    }
    return try bodyResult.get()
}
