#!/usr/bin/env python3
"""sock against OpenBSD nc: 2 GiB through loopback in each direction, whole processes.
(Start-up, a refused connect: Benchmarks/sock_startup.py.)

  Benchmarks/sock_throughput.py [--gib 2] [--reps 5]

Builds `sock` in release mode, installs netcat-openbsd with apt if it is missing, then runs,
interleaved (the order rotated each repetition), for each tool: an upload (stdin of the
connecting side -> the listener's stdout, /dev/null) and a download (the listener's stdin ->
the connecting side's stdout). Prints the median wall time of each and sock's ratio to nc
(above 1: sock is faster). Every process has a time limit and is killed by its PID.
"""
import argparse, os, shutil, socket, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port

def wait_listening(port, limit=10.0):
    end = time.time() + limit
    while time.time() < end:
        # A listener that accepts once must not have its one connection taken by a probe:
        # look for the listening socket in /proc/net/tcp instead of connecting.
        with open("/proc/net/tcp") as f:
            if any(line.split()[1].endswith(":%04X" % port) and line.split()[3] == "0A" for line in f.readlines()[1:]):
                return
        time.sleep(0.005)
    sys.exit("nothing listens on %d" % port)

def run_pair(listener_cmd, client_cmd, limit):
    listener = subprocess.Popen(listener_cmd, shell=True, stderr=subprocess.DEVNULL)
    wait_listening(int(listener_cmd.split("PORT=")[1].split()[0]))
    start = time.time()
    client = subprocess.Popen(client_cmd, shell=True, stderr=subprocess.DEVNULL)
    for p in (client, listener):
        try:
            p.wait(timeout=max(1, limit - (time.time() - start)))
        except subprocess.TimeoutExpired:
            client.kill(); listener.kill()
            sys.exit("timed out: %s | %s" % (listener_cmd, client_cmd))
    if client.returncode or listener.returncode:
        sys.exit("failed (%s, %s): %s | %s" % (listener.returncode, client.returncode, listener_cmd, client_cmd))
    return time.time() - start

def commands(tool, direction, port, size):
    feed = "head -c %d /dev/zero" % size
    if tool == "sock":
        sock = os.path.join(ROOT, ".build/release/sock")
        if direction == "upload":
            return ("PORT=%d exec %s listen %d --quiet > /dev/null" % (port, sock, port),
                    "%s | %s connect 127.0.0.1:%d --quiet" % (feed, sock, port))
        return ("PORT=%d %s | %s listen %d --quiet" % (port, feed, sock, port),
                "%s connect 127.0.0.1:%d --quiet < /dev/null > /dev/null" % (sock, port))
    if direction == "upload":  # nc -l ends at the client's end of stream; -N sends it
        return ("PORT=%d exec nc -l 127.0.0.1 %d > /dev/null" % (port, port),
                "%s | nc -N 127.0.0.1 %d" % (feed, port))
    return ("PORT=%d %s | nc -N -l 127.0.0.1 %d" % (port, feed, port),
            "nc -d 127.0.0.1 %d > /dev/null" % port)

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=2)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    size = int(args.gib * (1 << 30))
    subprocess.run(["swift", "build", "-c", "release", "--product", "sock"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    if not shutil.which("nc"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "netcat-openbsd"], check=True)
    cases = [(t, d) for d in ("upload", "download") for t in ("sock", "nc")]
    times = {c: [] for c in cases}
    for rep in range(args.reps):
        order = cases[rep % len(cases):] + cases[:rep % len(cases)]
        for tool, direction in order:
            listener, client = commands(tool, direction, free_port(), size)
            times[(tool, direction)].append(run_pair(listener, client, limit=120))
    print("%.3g GiB through 127.0.0.1, median of %d, interleaved:" % (args.gib, args.reps))
    for direction in ("upload", "download"):
        s, n = statistics.median(times[("sock", direction)]), statistics.median(times[("nc", direction)])
        print("  %-8s sock %.3f s (%.2f GB/s)   nc %.3f s (%.2f GB/s)   sock/nc speed %.2fx"
              % (direction, s, size / s / 1e9, n, size / n / 1e9, n / s))

main()
