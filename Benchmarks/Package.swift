// swift-tools-version:6.0
// The benchmarks: a separate package, so that users of Sockets never build SwiftNIO,
// FlyingFox or HdrHistogram. `./run` builds this in release mode and drives it.
import PackageDescription

let package = Package(
    name: "SocketsBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Sockets", path: ".."),
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.2"),
        .package(url: "https://github.com/swhitty/FlyingFox", exact: "0.27.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", exact: "0.2.0"),
    ],
    targets: [
        .executableTarget(
            name: "bench",
            dependencies: [
                .product(name: "Sockets", package: "Sockets"),
                .product(name: "SocketsTLS", package: "Sockets"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "FlyingSocks", package: "FlyingFox"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
