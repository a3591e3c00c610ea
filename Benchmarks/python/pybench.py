"""Python's socket module, as Python users write it, with the command line of ../c/cbench.c.

MODE: none (blocking) or timeout (settimeout(5) on every socket: CPython polls before each call).
  pybench.py server pingpong|bulk|connect [MODE]
  pybench.py client pingpong|bulk|connect PORT COUNT [MODE]
  pybench.py precision recv|accept SECONDS COUNT THREADS timeout
"""
import json
import socket
import sys
import threading
import time


def announce(port):
    print(f"PORT {port}", flush=True)


def timeout_for(mode):
    return 5.0 if mode == "timeout" else None


def recv_full(sock, n):
    parts, got = [], 0
    while got < n:
        b = sock.recv(n - got)
        if not b:
            return None
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def server(workload, mode):
    socket.setdefaulttimeout(timeout_for(mode))
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)
    announce(ls.getsockname()[1])
    if workload == "connect":
        while True:
            ls.accept()[0].close()
    conn, _ = ls.accept()
    if workload == "pingpong":
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while (m := recv_full(conn, 64)) is not None:
            conn.sendall(m)
    else:
        while conn.recv(1 << 20):
            pass
        conn.sendall(b"k")


def client(workload, port, count, mode):
    socket.setdefaulttimeout(timeout_for(mode))
    address = ("127.0.0.1", port)
    if workload == "pingpong":
        s = socket.create_connection(address)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        message, warm, samples = b"\x01" * 64, count // 10, []
        clock = time.perf_counter_ns
        for i in range(warm + count):
            t0 = clock()
            s.sendall(message)
            recv_full(s, 64)
            if i >= warm:
                samples.append(clock() - t0)
        if not samples:
            print("{}")
            return
        samples.sort()
        print(json.dumps({"median_us": samples[len(samples) // 2] / 1e3,
                          "p99_us": samples[len(samples) * 99 // 100] / 1e3}))
    elif workload == "bulk":
        s = socket.create_connection(address)
        chunk, sent = bytes(64 << 10), 0
        t0 = time.perf_counter()
        while sent < count:
            s.sendall(chunk)
            sent += len(chunk)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b"k"
        print(json.dumps({"gbps": sent / (time.perf_counter() - t0) / 1e9}))
    else:
        t0 = time.perf_counter()
        for _ in range(count):
            s = socket.create_connection(address)
            s.recv(1)
            s.close()
        print(json.dumps({"per_s": count / (time.perf_counter() - t0)}))


def precision(what, seconds, count, threads):
    late, lock, keep = [], threading.Lock(), []
    base = time.monotonic() + 0.02

    def work(sock, start, n):
        while time.monotonic() < start:
            time.sleep(0.001)
        mine = []
        for _ in range(n):
            end = time.monotonic() + seconds
            try:
                sock.accept() if what == "accept" else sock.recv(1)
                raise SystemExit("expected a timeout")
            except TimeoutError:
                mine.append(time.monotonic() - end)
        with lock:
            late.extend(mine)

    workers = []
    for k in range(threads):
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen()
        target = ls
        if what == "recv":
            target = socket.create_connection(ls.getsockname())
        keep += [ls, target]
        target.settimeout(seconds)
        t = threading.Thread(target=work, args=(target, base + seconds * k / threads, count // threads))
        t.start()
        workers.append(t)
    for t in workers:
        t.join()
    late.sort()
    if not late:
        print("{}")
        return
    us = [x * 1e6 for x in late]
    print(json.dumps({"mean_us": sum(us) / len(us), "p99_us": us[len(us) * 99 // 100],
                      "max_us": us[-1], "min_us": us[0]}))


def main(argv):
    if len(argv) >= 3 and argv[1] == "server":
        server(argv[2], argv[3] if len(argv) > 3 else "none")
    elif len(argv) >= 5 and argv[1] == "client":
        client(argv[2], int(argv[3]), int(argv[4]), argv[5] if len(argv) > 5 else "none")
    elif len(argv) >= 6 and argv[1] == "precision":
        precision(argv[2], float(argv[3]), int(argv[4]), int(argv[5]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
