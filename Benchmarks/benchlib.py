"""What Benchmarks/run and async_series.py share: paths, starting and ending processes, counting
system calls, medians, the machine's description and the charts."""
import os
import platform
import re
import signal
import statistics
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(HERE, ".build")
BENCH = os.path.join(BUILD, "release", "bench")


class Failure(Exception):
    pass


def stop(proc):
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def server_pid(strace_pid):
    """The traced server's PID: strace's child (taskset execs the server in place)."""
    for _ in range(100):
        try:
            with open(f"/proc/{strace_pid}/task/{strace_pid}/children") as f:
                children = f.read().split()
            if children:
                return int(children[0])
        except OSError:
            pass
        time.sleep(0.05)
    raise Failure("strace started no server")


def syscall_counts(path):
    """strace -c output -> {syscall: calls}."""
    counts = {}
    for line in open(path):
        parts = line.split()
        if len(parts) >= 5 and re.match(r"^[\d.]+$", parts[0]) and parts[-1] != "total":
            counts[parts[-1]] = int(parts[3])
    return counts


def rotate(items, r):
    r %= len(items)
    return items[r:] + items[:r]


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    swift = subprocess.run(["swift", "--version"], capture_output=True, text=True).stdout.splitlines()
    swift = next((l for l in swift if "Swift version" in l), "swift ?")
    py = platform.python_version()
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return (f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} vCPUs ({cpu}); "
            f"{swift.strip()}; Python {py}; {gcc}")


def bars(panels, note):
    """Panels of horizontal bars, one per implementation: (title, {label: ratio to C}, order).
    Blue: this library; grey: C; gold: the others. Higher is better; the dashed line is C."""
    width, label_w, bar_w, row = 760, 270, 420, 22
    y = 40
    out = []
    for title, values, order in panels:
        out.append(f'<text x="10" y="{y}" font-size="15" font-weight="bold">{title}</text>')
        y += 12
        scale = bar_w / max(1.2, max(values.values()))
        for label in [l for l in order if l in values]:
            v = values[label]
            color = "#2b7bba" if label.startswith("Sockets") else ("#888" if label.startswith("C") else "#c9a227")
            out.append(f'<text x="{label_w - 8}" y="{y + 15}" font-size="12" text-anchor="end">{label}</text>')
            out.append(f'<rect x="{label_w}" y="{y + 3}" width="{v * scale:.1f}" height="{row - 6}" fill="{color}"/>')
            out.append(f'<text x="{label_w + v * scale + 5:.1f}" y="{y + 15}" font-size="12">{v:.2f}×</text>')
            y += row
        x1 = label_w + scale
        out.append(f'<line x1="{x1:.1f}" y1="{y - row * len([l for l in order if l in values])}" x2="{x1:.1f}" y2="{y}" stroke="#000" '
                   f'stroke-dasharray="4,3"/>')
        y += 30
    out.append(f'<text x="10" y="{y}" font-size="11" fill="#555">{note}</text>')
    y += 10
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" font-family="sans-serif">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(out) + "\n</svg>\n")
