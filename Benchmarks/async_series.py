"""The async workloads, A1-A9, run by Benchmarks/run.

One C load generator (c/aload.c, on CPU 1) drives every server (on CPU 0, `taskset -c 0`), so
the client never differs; each server follows one contract: listen on 127.0.0.1, print
"PORT n", echo what it reads, close at end of stream, and, given a timeout, close a
connection idle that long. The peers, each written as its users write it:

  C epoll          c/aepoll.c: edge-triggered, one thread (the limit); its timeout: a list
                   of connections in order of last activity (all timeouts are equal)
  Go net           go/aecho.go: a goroutine per connection, GOMAXPROCS=1; SetReadDeadline
  SwiftNIO         channel handlers, one event loop; IdleStateHandler (Sources/bench/AsyncPeers.swift)
  NIOAsyncChannel  a task per connection; each read raced against Task.sleep
  FlyingSocks      AsyncSocket on its socket pool; its withThrowingTimeout (copied: it is not public)
  Python asyncio   python/aecho.py: streams; asyncio.timeout()
  Sockets blocking a thread per connection, the socket's timeout (1,000 connections only)
  Sockets async    Socket.serve, a task per connection on the reactor; the connection timeout

  A1  N connections (1,000 and 10,000), each a closed loop of 64-byte round trips, a 5 s
      idle timeout armed: server CPU per round trip ÷ C epoll, round trips/s, latency, RSS
  A2  the same with no timeout (A1's tables, the rows without one)
  A3  the servers' system calls per round trip, futex and epoll_ctl among them (strace -c -f;
      a 4 s sitting minus a 1 s one, so that setup is left out)
  A4  10,000 idle connections, a 30 s timeout armed on each: user memory per connection
      (RSS growth ÷ N), idle CPU, the timeouts' lateness (measured by the client)
  A5  churn: connect → one 64-byte request → close, 50 clients at once: connections/s ÷ C
      epoll, server CPU per connection, and (strace) system calls and epoll_ctl per connection
  A6  bulk: 2 GiB through async sendAll / receive(into:) ÷ the tuned C reader of W2
  A7  cancellation: 1,000 tasks waiting in receive, each cancelled in turn, from a task on
      their reactor or from a plain thread, idle or with 8 pairs ping-ponging on the reactors
      (c/xwake.c: how long this machine takes to wake a sleeping thread, the floor for
      cancelling from another thread)
  A8  timeout precision of async receives at 10 ms and 1 s, alone and 20 at once (with
      c/wakeup.c's C receive-then-ppoll at 10 ms beside it: this machine's floor for a lone
      thread that sleeps 10 ms)
  A9  close() while a receive waits: how soon it throws .closed, and that no waiter ever
      reads from a descriptor number reused by a new socket

A4 and the strace sittings (A3, A5) run once per sitting; the others every repetition, in an
order rotated each time. The descriptor limit (RLIMIT_NOFILE, hard: 20,000 on the VM of
RESULTS.md) caps A4 at 10,000 connections: the load generator needs one per connection too.
"""
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile

from benchlib import BENCH, BUILD, HERE, Failure, bars, med, rotate, server_pid, stop, syscall_counts

AEPOLL = os.path.join(BUILD, "aepoll")
ALOAD = os.path.join(BUILD, "aload")
XWAKE = os.path.join(BUILD, "xwake")
WAKEUP = os.path.join(BUILD, "wakeup")
GOECHO = os.path.join(BUILD, "aecho-go")
AECHO_PY = os.path.join(HERE, "python", "aecho.py")

# (label, how it arms the idle timeout, argv given a timeout in seconds (0: none), extra
# environment, most connections it is run with)
SERVERS = [
    ("C epoll", "activity list", lambda t: [AEPOLL, str(t)], {}, None),
    ("Go net", "SetReadDeadline", lambda t: [GOECHO, str(t)], {"GOMAXPROCS": "1"}, None),
    ("SwiftNIO handlers", "IdleStateHandler", lambda t: [BENCH, "echo-server", "nio-handlers", str(t)], {}, None),
    ("NIOAsyncChannel", "read raced with Task.sleep", lambda t: [BENCH, "echo-server", "nio-async", str(t)], {}, None),
    ("FlyingSocks", "its withThrowingTimeout", lambda t: [BENCH, "echo-server", "flyingsocks", str(t)], {}, None),
    ("Python asyncio", "asyncio.timeout()", lambda t: [sys.executable, AECHO_PY, str(t)], {}, None),
    ("Sockets blocking, thread per connection", "socket timeout",
     lambda t: [BENCH, "sockets", "server", "echo-threads", str(t)], {}, 1000),
    ("Sockets async", "connection timeout", lambda t: [BENCH, "sockets", "server", "echo-async", str(t)], {}, None),
]
OURS = "Sockets async"
C = "C epoll"


def build(smoke):
    """Compiles the C programs and the Go peer (installing Go from Debian if it is missing;
    without it, the Go rows are left out and the run says so)."""
    for name, out, extra in (("aepoll.c", AEPOLL, []), ("aload.c", ALOAD, []), ("xwake.c", XWAKE, ["-pthread"]),
                             ("wakeup.c", WAKEUP, [])):
        subprocess.run(["gcc", "-O2", "-Wall", "-Wextra"] + extra + [os.path.join(HERE, "c", name), "-o", out], check=True)
    if not shutil.which("go"):
        install = ["apt-get", "install", "-y", "-q", "golang-go"]
        if os.geteuid() != 0:
            install = ["sudo", "-n"] + install
        print("Go not found: " + " ".join(install), flush=True)
        try:
            subprocess.run(install, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        except (OSError, subprocess.TimeoutExpired):
            pass
    go = shutil.which("go")
    if go:
        env = dict(os.environ, GOCACHE=os.path.join(BUILD, "gocache"), GO111MODULE="off")
        subprocess.run([go, "build", "-o", GOECHO, os.path.join(HERE, "go", "aecho.go")], check=True, env=env)
    else:
        SERVERS[:] = [s for s in SERVERS if s[0] != "Go net"]
        print("Go could not be installed (apt-get install golang-go): the Go peer is left out", file=sys.stderr)


def sitting(label, timeout, mode, args, limit, strace=None):
    """Starts server `label` on CPU 0 (under strace -f -c if asked), runs `aload MODE args...
    SERVERPID` on CPU 1 against it, ends the server; returns aload's JSON."""
    _, _, argv, env, _ = next(s for s in SERVERS if s[0] == label)
    cmd = ["taskset", "-c", "0"] + argv(timeout)
    if strace:
        cmd = ["strace", "-f", "-c", "-o", strace] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **env), start_new_session=True)
    pid = None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("PORT "):
            raise Failure(f"{label}: no port announced ({line!r})")
        pid = server_pid(proc.pid) if strace else proc.pid
        load = [ALOAD] + ([mode] if mode else []) + [line.split()[1]] + [str(a) for a in args] + [str(pid)]
        out = subprocess.run(["taskset", "-c", "1"] + load, capture_output=True, text=True, timeout=limit)
        if out.returncode != 0:
            raise Failure(f"aload {mode or 'pingpong'} against {label}: exit {out.returncode}: {out.stderr[-300:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if strace:
            os.kill(pid, signal.SIGKILL)  # the server; strace then writes its summary and exits
            proc.wait(timeout=30)
        return result
    finally:
        if strace and pid is not None and proc.poll() is None:
            try:
                os.kill(pid, signal.SIGKILL)  # never leave a traced server behind strace
            except ProcessLookupError:
                pass
        stop(proc)


def traced(label, timeout, mode, short, long, count_key, limit):
    """System calls per operation of a server: a long sitting minus a short one under strace,
    so that start-up is left out. Returns (total, {syscall: per operation})."""
    with tempfile.TemporaryDirectory() as d:
        runs = []
        for args, name in ((short, "short"), (long, "long")):
            path = os.path.join(d, name)
            result = sitting(label, timeout, mode, args, limit, strace=path)
            runs.append((result[count_key], syscall_counts(path)))
    (n0, c0), (n1, c1) = runs
    calls = {k: (c1.get(k, 0) - c0.get(k, 0)) / (n1 - n0) for k in set(c0) | set(c1)}
    calls = {k: v for k, v in calls.items() if v >= 0.01}
    return round(sum(calls.values()), 2), calls


def bench_command(args):
    out = subprocess.run([BENCH, "sockets"] + args, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise Failure(f"bench sockets {' '.join(args)}: exit {out.returncode}: {out.stderr[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class Series:
    def __init__(self, only, smoke):
        self.only, self.smoke = only, smoke
        self.results = {}  # (workload, case, label) -> [result dicts]
        self.once = {}  # A3/A4/A5 strace: (workload, case, label) -> result
        self.a1 = [(50, 1)] if smoke else [(1000, 5), (10_000, 5)]  # (connections, measured seconds)
        self.a4 = (100, 2) if smoke else (10_000, 30)  # (connections, timeout s)
        self.a6 = 64 << 20 if smoke else 2 << 30
        self.a7 = [(100, 0, "task")] if smoke else [(1000, 0, "task"), (1000, 8, "task"), (1000, 0, "thread"), (1000, 8, "thread")]
        self.a8 = [(0.01, 10, 1)] if smoke else [(0.01, 200, 1), (0.01, 200, 20), (1.0, 10, 1), (1.0, 200, 20)]
        self.a9 = 100 if smoke else 1000

    def add(self, key, value):
        self.results.setdefault(key, []).append(value)

    def repetition(self, r):
        """One repetition of every workload that is repeated, in an order rotated by r."""
        if "A1" in self.only:
            for connections, secs in self.a1:
                variants = [(label, t) for label, _, _, _, most in SERVERS if most is None or connections <= most
                            for t in (0, 5)]
                for label, t in rotate(variants, r):
                    self.add(("A1", (connections, t), label), sitting(label, t, None, [connections, secs], secs + 180))
        if "A5" in self.only:
            for label, *_ in rotate(SERVERS, r):
                self.add(("A5", None, label), sitting(label, 5, "churn", [50, 1 if self.smoke else 3], 120))
        if "A6" in self.only:
            for label, run in rotate([("C tuned reader", self.bulk_c), ("Sockets async", self.bulk_ours)], r):
                self.add(("A6", None, label), run())
        if "A7" in self.only:
            for case in rotate(self.a7, r):
                count, load, source = case
                self.add(("A7", case, OURS), bench_command(["async", "cancel", str(count), str(load), source]))
            if not self.smoke:
                self.add(("A7", "xwake", C), self.xwake())
        if "A8" in self.only:
            for case in rotate(self.a8, r):
                seconds, count, concurrent = case
                self.add(("A8", case, OURS), bench_command(["async", "precision", str(seconds), str(count), str(concurrent)]))
            if not self.smoke:
                self.add(("A8", "C", C), self.wakeup())
        if "A9" in self.only:
            self.add(("A9", None, OURS), bench_command(["async", "close", str(self.a9)]))

    def xwake(self):
        out = subprocess.run([XWAKE, "2000"], capture_output=True, text=True, timeout=60, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wakeup(self):
        """c/wakeup.c's "recv, then ppoll" row: 500 lone 10 ms sleeps in C, lateness in µs."""
        out = subprocess.run([WAKEUP], capture_output=True, text=True, timeout=120, check=True).stdout
        m = re.search(r"recv, then ppoll\s+late: mean\s+([\d.]+)\s+p99\s+([\d.]+)\s+min\s+([\d.-]+)", out)
        if not m:
            raise Failure(f"wakeup: unexpected output {out[:200]!r}")
        return {"mean_us": float(m.group(1)), "p99_us": float(m.group(2)), "min_us": float(m.group(3))}

    def bulk_c(self):
        return self.bulk([os.path.join(BUILD, "cbench"), "server", "bulk", "tuned"], [os.path.join(BUILD, "cbench"), "client", "bulk"])

    def bulk_ours(self):
        return self.bulk([BENCH, "sockets", "server", "bulk-async", "none"], [BENCH, "sockets", "client", "bulk-async"])

    def bulk(self, server, client):
        proc = subprocess.Popen(server, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            line = proc.stdout.readline() if ready else ""
            if not line.startswith("PORT "):
                raise Failure(f"{server[0]}: no port announced")
            out = subprocess.run(client + [line.split()[1], str(self.a6)], capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                raise Failure(f"{' '.join(client)}: exit {out.returncode}: {out.stderr[-300:]}")
            return json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            stop(proc)

    def single(self):
        """The workloads run once per sitting: A4 (half a minute per server) and the strace
        sittings of A3 and A5."""
        if "A4" in self.only:
            n, timeout = self.a4
            for label, _, _, _, most in SERVERS:
                if most is None or n <= most:
                    print(f"A4: {label}", flush=True)
                    self.once[("A4", None, label)] = sitting(label, timeout, "idle", [n, timeout], timeout + 240)
        if self.smoke or not shutil.which("strace"):
            return
        if "A3" in self.only:
            for label, *_ in SERVERS:
                print(f"A3: {label}", flush=True)
                self.once[("A3", None, label)] = traced(label, 5, None, [1000, 1], [1000, 4], "all_trips", 300)
        if "A5" in self.only:
            for label, *_ in SERVERS:
                print(f"A5 (strace): {label}", flush=True)
                self.once[("A5 strace", None, label)] = traced(label, 5, "churn", [50, 1], [50, 3], "all", 300)

    # MARK: the report

    def report(self, say, when_command):
        """Appends the A-series tables (markdown) through `say`; returns the chart's SVG or None."""
        res, once = self.results, self.once
        timeout_how = {label: how for label, how, *_ in SERVERS}
        targets = []
        for connections, secs in self.a1:
            rows = {(case[1], label): runs for (w, case, label), runs in res.items() if w == "A1" and case[0] == connections}
            if not rows:
                continue
            base = med(rows[(0, C)], "cpu_us")
            say(f"### A1/A2 async ping-pong: {connections:,} connections, 64 B, a closed loop each; server on "
                f"CPU 0, the C load generator on CPU 1; {secs} s measured after 1 s of warm-up\n")
            say("| server | idle timeout (5 s) | server CPU µs per round trip | ÷ C epoll | round trips/s | "
                "p50 µs | p99 µs | p99.9 µs | RSS MiB |")
            say("|---|---|---:|---:|---:|---:|---:|---:|---:|")
            for label, *_ in SERVERS:
                for t in (0, 5):
                    runs = rows.get((t, label))
                    if not runs:
                        continue
                    say(f"| {label} | {timeout_how[label] if t else 'none'} | {med(runs, 'cpu_us'):.2f} | "
                        f"{med(runs, 'cpu_us') / base:.3f}× | {med(runs, 'per_s'):,.0f} | {med(runs, 'p50_us'):.0f} | "
                        f"{med(runs, 'p99_us'):.0f} | {med(runs, 'p999_us'):.0f} | {med(runs, 'rss_kib') / 1024:.1f} |")
            say("\nCPU per round trip from /proc/PID/stat (clock ticks) over the window; RSS at its end. "
                "Ratios are to C epoll without a timeout.\n")
            ours_t = med(rows[(5, OURS)], "cpu_us") / base
            ours_0 = med(rows[(0, OURS)], "cpu_us") / base
            goal = 1.10 if connections == 1000 else 1.05
            targets.append((f"A1 CPU per round trip, {connections:,} connections, timeout armed", f"≤ {goal:.2f}× C epoll",
                            f"{ours_t:.2f}×", ours_t <= goal))
            targets.append((f"A2 CPU per round trip, {connections:,} connections, no timeout", "≤ 1.05× C epoll",
                            f"{ours_0:.2f}×", ours_0 <= 1.05))
            for peer, ratio in (("Go net", 1.3), ("NIOAsyncChannel", 2.5)):
                if (5, peer) in rows:
                    x = med(rows[(5, OURS)], "per_s") / med(rows[(5, peer)], "per_s")
                    cpu = med(rows[(5, peer)], "cpu_us") / med(rows[(5, OURS)], "cpu_us")
                    targets.append((f"throughput per core vs {peer}, {connections:,} connections, timeouts armed",
                                    f"≥ {ratio}×", f"{cpu:.2f}× (CPU per round trip; round trips/s {x:.2f}×)", cpu >= ratio))
        a3 = {label: v for (w, _, label), v in once.items() if w == "A3"}
        if a3:
            say("### A3 system calls per round trip (each server, 1,000 connections, 5 s timeout armed; "
                "strace -c -f, a 4 s sitting minus a 1 s one)\n")
            say("| server | calls | futex | epoll_ctl | which |")
            say("|---|---:|---:|---:|---|")
            for label, (total, calls) in a3.items():
                say(f"| {label} | {total:g} | {calls.get('futex', 0):.2f} | {calls.get('epoll_ctl', 0):.2f} | "
                    + ", ".join(f"{k} {v:.2f}" for k, v in sorted(calls.items(), key=lambda x: -x[1])) + " |")
            say("")
            if OURS in a3:
                total, calls = a3[OURS]
                targets.append(("A3 system calls per round trip", "2.0, 0 futex, 0 epoll_ctl",
                                f"{total:g}, {calls.get('futex', 0):.2f} futex, {calls.get('epoll_ctl', 0):.2f} epoll_ctl",
                                total <= 2.05 and calls.get("futex", 0) < 0.01 and calls.get("epoll_ctl", 0) < 0.01))
        a4 = {label: v for (w, _, label), v in once.items() if w == "A4"}
        if a4:
            n, timeout = self.a4
            say(f"### A4 {n:,} idle connections, a {timeout} s idle timeout armed on each (one sitting)\n")
            say("| server | user memory per connection | idle CPU | closed by the timeout | early | "
                "late p50 ms | late p99 ms | late max ms |")
            say("|---|---:|---:|---:|---:|---:|---:|---:|")
            for label, v in a4.items():
                late = [("–" if v.get(k) is None else f"{v[k]:.1f}") for k in ("late_p50_ms", "late_p99_ms", "late_max_ms")]
                cpu = "–" if v.get("idle_cpu_pct") is None else f"{v['idle_cpu_pct']:.2f}%"
                say(f"| {label} | {v['bytes_per_conn'] / 1000:.1f} KB | {cpu} | {v['closed']:,} | {v['early']} | "
                    + " | ".join(late) + " |")
            say("\nMemory: the server's RSS after the connections were made and had one round trip each, minus "
                "before, ÷ N. Lateness: when the client saw the close, after its last reply plus the timeout.\n")
            if OURS in a4:
                v = a4[OURS]
                targets.append(("A4 user memory per idle connection, timer armed", "≤ 2 KB, 0% CPU idle",
                                f"{v['bytes_per_conn'] / 1000:.1f} KB, {v['idle_cpu_pct'] or 0:.2f}% CPU",
                                v["bytes_per_conn"] <= 2000 and (v["idle_cpu_pct"] or 0) < 0.5))
        a5 = {label: runs for (w, _, label), runs in res.items() if w == "A5"}
        if a5:
            base = med(a5[C], "per_s")
            strace = {label: v for (w, _, label), v in once.items() if w == "A5 strace"}
            say("### A5 churn: connect → one 64-byte request → close, 50 clients at once; server on CPU 0 "
                "(5 s idle timeout armed)\n")
            say("| server | connections/s | ÷ C epoll | server CPU µs per connection | p50 µs | p99 µs | "
                "system calls per connection | epoll_ctl |")
            say("|---|---:|---:|---:|---:|---:|---:|---:|")
            for label, runs in a5.items():
                total, calls = strace.get(label, (float("nan"), {}))
                say(f"| {label} | {med(runs, 'per_s'):,.0f} | {med(runs, 'per_s') / base:.3f}× | {med(runs, 'cpu_us'):.1f} | "
                    f"{med(runs, 'p50_us'):.0f} | {med(runs, 'p99_us'):.0f} | {total:g} | {calls.get('epoll_ctl', float('nan')):.2f} |")
            say("")
            x = med(a5[OURS], "per_s") / base
            ctl = strace.get(OURS, (0, {}))[1].get("epoll_ctl", float("nan"))
            targets.append(("A5 churn", "≥ 0.9× C epoll, 1 epoll_ctl per connection", f"{x:.2f}×, {ctl:.2f} epoll_ctl",
                            x >= 0.9 and ctl <= 1.01))
        a6 = {label: runs for (w, _, label), runs in res.items() if w == "A6"}
        if a6:
            base = med(a6["C tuned reader"], "gbps")
            say(f"### A6 bulk: {self.a6 / (1 << 30):g} GiB in 64 KiB writes, then an ack\n")
            say("| implementation | GB/s | ÷ C tuned reader |")
            say("|---|---:|---:|")
            for label, runs in a6.items():
                say(f"| {label} | {med(runs, 'gbps'):.2f} | {med(runs, 'gbps') / base:.3f}× |")
            say("\nC: W2's tuned reader (1 MiB reads, SO_RCVLOWAT 512 KiB) and writer; ours: async `sendAll` and "
                "`receive(into:)` with the same buffer and SO_RCVLOWAT.\n")
            x = med(a6["Sockets async"], "gbps") / base
            targets.append(("A6 bulk", "≥ 0.9× the tuned C reader", f"{x:.2f}×", x >= 0.9))
        a7 = {case: runs for (w, case, _), runs in res.items() if w == "A7"}
        if a7:
            say("### A7 cancellation latency: from `cancel()` until the waiting receive has thrown `.cancelled`\n")
            say("| cancelled from | load | p50 µs | p99 µs | max µs |")
            say("|---|---|---:|---:|---:|")
            for case in self.a7:
                if case in a7:
                    count, load, source = case
                    runs = a7[case]
                    say(f"| {'a task on the same reactor' if source == 'task' else 'a plain thread'} | "
                        f"{f'{load} pairs ping-ponging' if load else 'idle'} | {med(runs, 'p50_us'):.1f} | "
                        f"{med(runs, 'p99_us'):.1f} | {med(runs, 'max_us'):.0f} |")
            if "xwake" in a7:
                w = a7["xwake"]
                say(f"| floor: C, one thread waking another (c/xwake.c) | asleep in epoll_wait | "
                    f"{med(w, 'asleep_p50_us'):.1f} | {med(w, 'asleep_p99_us'):.1f} | |")
                say(f"| floor: C, one thread waking another (c/xwake.c) | polling | "
                    f"{med(w, 'busy_p50_us'):.1f} | {med(w, 'busy_p99_us'):.1f} | |")
            say(f"\n{self.a7[0][0]:,} waiting receives per case.\n")
            for case in self.a7:
                _, load, source = case
                if case in a7 and source == "task":
                    p50, p99 = med(a7[case], "p50_us"), med(a7[case], "p99_us")
                    targets.append((f"A7 cancellation latency (from a task, {f'{load} pairs busy' if load else 'idle'})",
                                    "≤ 5 µs p50, ≤ 20 µs p99", f"{p50:.1f} / {p99:.1f} µs", p50 <= 5 and p99 <= 20))
        a8 = {case: runs for (w, case, _), runs in res.items() if w == "A8"}
        if a8:
            say("### A8 async timeout precision: lateness of timed-out receives (µs; min < 0 would be early)\n")
            say("| case | mean | p50 | p99 | max | min |")
            say("|---|---:|---:|---:|---:|---:|")
            for case in self.a8:
                if case in a8:
                    seconds, count, concurrent = case
                    runs = a8[case]
                    say(f"| {count} × receive at {seconds * 1000:g} ms{f', {concurrent} at once' if concurrent > 1 else ', alone'} | "
                        f"{med(runs, 'mean_us'):.0f} | {med(runs, 'p50_us'):.0f} | {med(runs, 'p99_us'):.0f} | "
                        f"{med(runs, 'max_us'):.0f} | {min(r['min_us'] for r in runs):.0f} |")
            if "C" in a8:
                runs = a8["C"]
                say(f"| floor: C, 500 × recv then ppoll at 10 ms, alone (c/wakeup.c) | {med(runs, 'mean_us'):.0f} | | "
                    f"{med(runs, 'p99_us'):.0f} | | {min(r['min_us'] for r in runs):.0f} |")
            say("\nmean, p50, p99 and max: median over the repetitions; min: the lowest of all of them.\n")
            for case in self.a8:
                if case in a8 and case[0] == 0.01:
                    mean, p99 = med(a8[case], "mean_us"), med(a8[case], "p99_us")
                    early = min(r["min_us"] for r in a8[case]) < 0
                    targets.append((f"A8 precision at 10 ms, {case[2]} at once", "mean ≤ 100 µs, p99 ≤ 200 µs late, never early",
                                    f"{mean:.0f} / {p99:.0f} µs{', EARLY' if early else ''}",
                                    mean <= 100 and p99 <= 200 and not early))
        a9 = res.get(("A9", None, OURS))
        if a9:
            say("### A9 close() while a receive waits\n")
            say("| receives waiting | p50 µs | p99 µs | max µs | ended with .closed | new pair on the number just closed | "
                "new sockets' data intact |")
            say("|---:|---:|---:|---:|---:|---:|---:|")
            say(f"| {self.a9:,} | {med(a9, 'p50_us'):.1f} | {med(a9, 'p99_us'):.1f} | {med(a9, 'max_us'):.0f} | "
                f"{min(r['closed'] for r in a9):,.0f} | {med(a9, 'numbers_reused'):,.0f} | {min(r['intact'] for r in a9):,.0f} |")
            say("\nEach socket is closed from a plain thread, which at once makes a new pair (often on the descriptor "
                "number just freed: the library frees it when the woken waiter has left) and writes a byte into it; "
                "every new socket must still hold its byte at the end (a waiter that read from a reused descriptor "
                "number would have taken it).\n")
        if targets:
            say("### The async issue's targets\n")
            say("| target | goal | measured | met |")
            say("|---|---|---|---|")
            for what, goal, got, met in targets:
                say(f"| {what} | {goal} | {got} | {'yes' if met else '**no**'} |")
            say("")
        return self.chart(when_command)

    def chart(self, note):
        panels = []
        for connections, _ in self.a1:
            rows = {(case[1], label): runs for (w, case, label), runs in self.results.items()
                    if w == "A1" and case[0] == connections}
            if (0, C) not in rows:
                continue
            base = med(rows[(0, C)], "cpu_us")
            values = {label: base / med(rows[(5, label)], "cpu_us") for label, *_ in SERVERS if (5, label) in rows}
            panels.append((f"A1 {connections:,} connections, 5 s idle timeout armed: C epoll's CPU per round trip ÷ theirs",
                           values, [label for label, *_ in SERVERS]))
        if not panels:
            return None
        return bars(panels, note + "; dashed line = C epoll without a timeout. Blue: this library; grey: C; gold: the others.")
