import Foundation
import NIOCore
import NIOPosix

/// SwiftNIO as its users write it: NIOPosix bootstraps on one event loop, handlers in the
/// pipeline. NIO has no per-call timeouts, so it runs in one mode.
struct NIOBench: Implementation {
    func server(_ workload: String, mode: String) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler: any ChannelHandler = switch workload {
                    case "pingpong": EchoHandler()
                    case "bulk": DiscardThenAckHandler()
                    default: CloseOnActiveHandler()
                    }
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        do {
            let channel = try bootstrap.bind(host: "127.0.0.1", port: 0).wait()
            announce(port: channel.localAddress?.port ?? 0)
            try channel.closeFuture.wait()  // until the driver ends the process
        } catch {
            fail("\(error)")
        }
    }

    func client(_ workload: String, port: Int, count: Int, mode: String) {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            switch workload {
            case "pingpong":
                let done = group.next().makePromise(of: RoundTrips.self)
                _ = try ClientBootstrap(group: group)
                    .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(PingPongHandler(count: count, done: done))
                        }
                    }
                    .connect(host: "127.0.0.1", port: port).wait()
                let roundTrips = try done.futureResult.wait()
                reportRoundTrips(roundTrips)
            case "bulk":
                let done = group.next().makePromise(of: Void.self)
                let start = ContinuousClock.now
                _ = try ClientBootstrap(group: group)
                    .channelOption(.allowRemoteHalfClosure, value: true)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(BulkSendHandler(total: count, done: done))
                        }
                    }
                    .connect(host: "127.0.0.1", port: port).wait()
                try done.futureResult.wait()
                report([("gbps", Double(count) / seconds(since: start) / 1e9)])
            case "connect":
                let bootstrap = ClientBootstrap(group: group)
                let start = ContinuousClock.now
                for _ in 0..<count {
                    let channel = try bootstrap.connect(host: "127.0.0.1", port: port).wait()
                    try channel.closeFuture.wait()  // the server closes; NIO closes on EOF
                }
                report([("per_s", Double(count) / seconds(since: start))])
            default:
                fail("unknown workload \(workload)")
            }
        } catch {
            fail("\(error)")
        }
    }
}

final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }
    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }
}

final class CloseOnActiveHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    func channelActive(context: ChannelHandlerContext) {
        context.close(promise: nil)
    }
}

final class DiscardThenAckHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(ChannelEvent.inputClosed) = event as? ChannelEvent {
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: [107])), promise: nil)
        }
    }
}

final class PingPongHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let count: Int
    let warmUp: Int
    let done: EventLoopPromise<RoundTrips>
    var roundTrips = RoundTrips()
    var completed = 0
    var pending = 0
    var started: UInt64 = 0

    init(count: Int, done: EventLoopPromise<RoundTrips>) {
        self.count = count
        self.warmUp = count / 10
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        if count + warmUp == 0 {  // the zero-operation run that W5 subtracts
            done.succeed(roundTrips)
            context.close(promise: nil)
            return
        }
        sendOne(context)
    }

    func sendOne(_ context: ChannelHandlerContext) {
        started = clockNanos()
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(repeating: 1, count: 64)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        pending += unwrapInboundIn(data).readableBytes
        while pending >= 64 {
            pending -= 64
            if completed >= warmUp { roundTrips.record(since: started) }
            completed += 1
            if completed == warmUp + count {
                done.succeed(roundTrips)
                context.close(promise: nil)
                return
            }
            sendOne(context)
        }
    }
}

final class BulkSendHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let total: Int
    let done: EventLoopPromise<Void>
    var sent = 0
    var chunk: ByteBuffer?

    init(total: Int, done: EventLoopPromise<Void>) {
        self.total = total
        self.done = done
    }

    func channelActive(context: ChannelHandlerContext) {
        chunk = context.channel.allocator.buffer(repeating: 0, count: 64 << 10)
        pump(context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) { pump(context) }

    /// Writes while the channel is writable (NIO's backpressure), then half-closes.
    func pump(_ context: ChannelHandlerContext) {
        guard let chunk, sent < total else { return }
        while context.channel.isWritable && sent < total {
            context.write(wrapOutboundOut(chunk), promise: nil)
            sent += chunk.readableBytes
        }
        context.flush()
        if sent >= total { context.close(mode: .output, promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        done.succeed(())
        context.close(promise: nil)
    }
}
