// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "Sockets",
    // macOS 15: the first with the Swift 6 runtime (the tests use its Synchronization).
    // The Darwin branches are written but not yet built or tested anywhere.
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Sockets", targets: ["Sockets"]),
        // TLS over the same sockets and deadlines; OpenSSL 3 bound at run time (nothing to
        // install to build it; libssl.so.3 needed only when a TLS call is made).
        .library(name: "SocketsTLS", targets: ["SocketsTLS"]),
        .executable(name: "sock", targets: ["sock"]),
    ],
    dependencies: [
        // Errno: the ecosystem's errno vocabulary (SocketError.errno; `catch Errno.x` matches it).
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // The `sock` command line.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // accept4 and ppoll, which Swift's Glibc module hides behind _GNU_SOURCE.
        .target(name: "CSockets"),
        .target(
            name: "Sockets",
            dependencies: ["CSockets", .product(name: "SystemPackage", package: "swift-system")]
        ),
        // dlopen is in glibc's libc since 2.34; older ones keep it in libdl.
        .target(name: "CSocketsTLS", linkerSettings: [.linkedLibrary("dl", .when(platforms: [.linux]))]),
        .target(name: "SocketsTLS", dependencies: ["Sockets", "CSocketsTLS"]),
        .executableTarget(
            name: "sock",
            dependencies: [
                "Sockets",
                // --tls; OpenSSL is loaded only by the first TLS call, so plain sessions never load it.
                "SocketsTLS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "SocketsTests",
            dependencies: ["Sockets", "SocketsTLS", .product(name: "SystemPackage", package: "swift-system")]
        ),
        // Depends on the executable so `swift test` builds `sock`, which these tests run as a process.
        .testTarget(name: "sockTests", dependencies: ["sock", "Sockets"]),
    ],
    swiftLanguageModes: [.v6]
)
