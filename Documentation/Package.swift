// swift-tools-version: 6.0
// Builds the documentation of Sockets and SocketsTLS. A package of its own, so that users who
// only build the library never resolve or build swift-docc-plugin (as Benchmarks/ does for
// what only benchmarks need). From the repository's root:
//
//     Documentation/build              # both modules, warnings are errors (what CI runs)
//     swift package --package-path Documentation generate-documentation --product Sockets
//
// The catalogs themselves live beside the code they describe:
// Sources/Sockets/Documentation.docc and Sources/SocketsTLS/Documentation.docc.
import PackageDescription

let package = Package(
    name: "SocketsDocumentation",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Sockets", path: ".."),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ]
)
