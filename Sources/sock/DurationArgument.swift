import ArgumentParser
import Sockets

/// A command-line duration: `3`, `1.5`, `250ms`, `3s`, `500us`, `2m`.
struct DurationArgument: ExpressibleByArgument, CustomStringConvertible {
    let timeout: SocketTimeout

    init?(argument: String) {
        guard let timeout = try? DurationArgument.parse(argument) else { return nil }
        self.timeout = timeout
    }

    init(_ timeout: SocketTimeout) { self.timeout = timeout }

    var duration: Duration { timeout.duration ?? .zero }
    var description: String { timeout.description }

    /// The error for a bad value, naming what was wrong.
    struct Invalid: Error, CustomStringConvertible {
        let description: String
    }

    /// Parses a positive duration. A bare number is seconds; `ms`, `us`, `s`, `m` units.
    static func parse(_ text: String) throws -> SocketTimeout {
        do {
            return try SocketTimeout.seconds(try seconds(text))
        } catch let error as SocketError {
            throw Invalid(description: "'\(text)': \(error.detail ?? "\(error)")")
        }
    }

    /// The number of seconds `text` says, not yet checked for range.
    static func seconds(_ text: String) throws -> Double {
        let units: [(suffix: String, seconds: Double)] = [("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("s", 1), ("m", 60)]
        var number = Substring(text)
        var scale = 1.0
        for unit in units where text.hasSuffix(unit.suffix) {
            number = text.dropLast(unit.suffix.count)
            scale = unit.seconds
            break
        }
        let allowed = number.allSatisfy { $0.isASCII && ($0.isNumber || $0 == ".") }
        guard !number.isEmpty, allowed, number.filter({ $0 == "." }).count <= 1, let value = Double(number) else {
            throw Invalid(description: "'\(text)' is not a duration (examples: 3, 1.5, 250ms, 3s)")
        }
        return value * scale
    }
}

/// `transform:` for `@Option`s of durations, so a bad value gets a message that says why.
func parseDuration(_ text: String) throws -> DurationArgument {
    DurationArgument(try DurationArgument.parse(text))
}

/// `transform:` for delays that may be zero (`--quit-after 0`: at once).
func parseDelay(_ text: String) throws -> Duration {
    if try DurationArgument.seconds(text) == 0 { return .zero }
    return try DurationArgument.parse(text).duration ?? .zero  // parse makes only timed values
}
