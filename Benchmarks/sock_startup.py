#!/usr/bin/env python3
"""Start-up cost of `sock` against OpenBSD nc: a refused connect, the whole process.

  Benchmarks/sock_startup.py [--runs 200] [--static] [--sock LABEL=PATH]... [--no-build]

Builds `sock` in release mode (unless --no-build; with --static also a second one with the
Swift runtime linked in, `swift build --static-swift-stdlib`, in .build-static), installs
netcat-openbsd with apt if it is missing, then runs each binary `connect 127.0.0.1:P` against a port that is bound but not
listening (refused: exit 1) and `nc -z 127.0.0.1 P` the same number of times, interleaved
(one run of each in turn), and prints the median wall and CPU (user + system) time of each.
`--sock LABEL=PATH` (repeatable) compares other builds of sock in the same sitting, e.g. the
one before a change.

Then, to say where the time goes, for each binary: the shared libraries it loads (ldd: how
many, how many bytes) and the dynamic loader's own statistics (LD_DEBUG=statistics: cycles in
the loader, relocations). The loader's count leaves out the libraries' initialisers, which run
after it; the difference shows in the CPU time.

Every process has a time limit (10 s) and is reaped; nothing is left running.
"""
import argparse, os, re, resource, shutil, socket, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(command):
    """Wall and CPU seconds of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def libraries(path):
    """(count, bytes) of the shared libraries `path` loads, from ldd."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=10).stdout
    files = [m.group(1) for m in re.finditer(r"=> (/\S+)", out)]
    return len(files), sum(os.path.getsize(f) for f in files if os.path.exists(f))


def loader_statistics(command):
    """Cycles in the dynamic loader and relocations, from LD_DEBUG=statistics."""
    env = dict(os.environ, LD_DEBUG="statistics")
    err = subprocess.run(command, capture_output=True, text=True, env=env, timeout=10).stderr
    cycles = re.search(r"total startup time in dynamic loader: (\d+) cycles", err)
    relocations = re.search(r"final number of relocations: (\d+)", err)
    relative = re.search(r"number of relative relocations: (\d+)", err)
    return tuple(int(m.group(1)) if m else 0 for m in (cycles, relocations, relative))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--sock", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--static", action="store_true")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    builds = [("sock", [])] + ([("sock-static", ["--static-swift-stdlib", "--build-path", ".build-static"])] if args.static else [])
    binaries = [tuple(s.split("=", 1)) for s in args.sock]
    for label, flags in builds:
        if not args.no_build:
            subprocess.run(["swift", "build", "-c", "release", "--product", "sock"] + flags, cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL)
        binaries.append((label, os.path.join(ROOT, ".build-static" if flags else ".build", "release/sock")))
    if not shutil.which("nc"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "netcat-openbsd"], check=True)

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound, not listening: connects are refused
    port = holder.getsockname()[1]
    tools = {label: [path, "connect", "127.0.0.1:%d" % port] for label, path in binaries}
    tools["nc"] = ["nc", "-z", "127.0.0.1", str(port)]
    for label, command in tools.items():  # each must be refused (exit 1), and warm the caches
        code = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10).returncode
        if code != 1:
            sys.exit("%s: exit %d, expected 1 (refused)" % (" ".join(command), code))

    wall = {t: [] for t in tools}
    cpu = {t: [] for t in tools}
    for _ in range(args.runs):
        for label, command in tools.items():
            w, c = run_once(command)
            wall[label].append(w)
            cpu[label].append(c)
    holder.close()

    print("a refused connect, the whole process, %d runs each, interleaved (medians):" % args.runs)
    for label, command in tools.items():
        path = shutil.which(command[0]) or command[0]
        count, size = libraries(path)
        cycles, relocations, relative = loader_statistics(command)
        print("  %-13s wall %5.2f ms  CPU %5.2f ms   %2d libraries, %5.1f MB; loader %4.2f M cycles, "
              "%d relocations + %d relative"
              % (label, statistics.median(wall[label]) * 1e3, statistics.median(cpu[label]) * 1e3,
                 count, size / 1e6, cycles / 1e6, relocations, relative))


main()
