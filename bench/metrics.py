#!/usr/bin/env python3
"""What counting costs: the hello world with app:metrics on against off (and, for
information, with the access log on), in one invocation, as server CPU time per request.

Each variant runs pinned to CPU 0 with wrk pinned to CPU 1 (50 connections, keep-alive);
rounds interleave the variants so that a change in the machine's load hits them alike.
The figure is the median over rounds of the server's CPU seconds (utime + stime from
/proc, taken just before and after wrk) divided by the requests wrk completed.
With --callgrind SECS, each variant runs once under valgrind's callgrind instead, and the
figure is the user-space instructions per request (counted from after a warm-up to the
end of a SECS run of wrk with 4 connections): exact and blind to the machine's load, which
the CPU times on a shared machine are not; the kernel's part (the same syscalls in every
variant) is left out, so the share it gives an addition is an upper bound.
Usage: bench/metrics.py [--rounds 3 --secs 5 --conns 50 --modes off,metrics,combined,json]
                        [--callgrind 10]
"""
import argparse, glob, os, re, statistics, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import build_dir, start, stop  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_seconds(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def one(loom, mode, port, secs, conns):
    p = start([loom, os.path.join(ROOT, "bench", "metrics_hello.lua"), str(port), mode], port)
    if not p:
        sys.exit("metrics: the %s server did not start" % mode)
    try:
        # a short warm-up, so the Lua code and the connection structs are made before counting
        subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d1s",
                        "http://127.0.0.1:%d/" % port], capture_output=True)
        c0 = cpu_seconds(p.pid)
        out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d%ds" % secs,
                              "http://127.0.0.1:%d/" % port], capture_output=True, text=True).stdout
        c1 = cpu_seconds(p.pid)
    finally:
        stop(p)
    n = int(re.search(r"(\d+) requests in", out).group(1))
    if re.search(r"Non-2xx|Socket errors", out):
        print("  (%s: %s)" % (mode, re.search(r"(Non-2xx.*|Socket errors.*)", out).group(1)))
    return (c1 - c0) / n * 1e6, n / secs


def wrk_count(port, secs, conns):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d%ds" % secs,
                          "http://127.0.0.1:%d/" % port], capture_output=True, text=True).stdout
    return int(re.search(r"(\d+) requests in", out).group(1))


def callgrind(loom, mode, port, secs):
    """User-space instructions per request of `mode`, under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.%p")
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, loom,
               os.path.join(ROOT, "bench", "metrics_hello.lua"), str(port), mode]
        p = subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            from benchlib import wait_port
            if not wait_port(port, 60):
                sys.exit("metrics: the %s server did not start under valgrind" % mode)
            wrk_count(port, 2, 4)  # warm-up: code loaded, connection structs made
            subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, check=True)
            n = wrk_count(port, secs, 4)
            subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, check=True)
            dumps = sorted(f for f in glob.glob(os.path.join(tmp, "cg.*")) if re.search(r"\.\d+$", f))
            text = open(dumps[-1]).read()
            ir = int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1))
        finally:
            stop(p)
    return ir / n, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--modes", default="off,metrics,combined,json")
    ap.add_argument("--callgrind", type=int, default=0, metavar="SECS")
    a = ap.parse_args()
    loom, kind = build_dir()
    modes = a.modes.split(",")
    if a.callgrind:
        base = None
        for i, m in enumerate(modes):
            ir, n = callgrind(loom, m, 18190 + i, a.callgrind)
            base = base or ir
            print("%-9s %.0f instructions/request in user space (%+.1f%% against %s), %d requests" %
                  (m, ir, (ir / base - 1) * 100, modes[0], n), flush=True)
        return
    res = {m: [] for m in modes}
    for r in range(a.rounds):
        for i, m in enumerate(modes):
            us, rps = one(loom, m, 18190 + i, a.secs, a.conns)
            res[m].append((us, rps))
            print("round %d %-9s %.2f us CPU/request  %.0f req/s" % (r + 1, m, us, rps), flush=True)
    load = open("/proc/loadavg").read().split()[:3]
    print("build %s (%s); load average %s; %d rounds of %d s, %d connections" %
          (loom, kind, " ".join(load), a.rounds, a.secs, a.conns))
    base = statistics.median(u for u, _ in res[modes[0]])
    for m in modes:
        us = statistics.median(u for u, _ in res[m])
        rps = statistics.median(r for _, r in res[m])
        print("%-9s median %.2f us CPU/request (%+.1f%% against %s), %.0f req/s" %
              (m, us, (us / base - 1) * 100, modes[0], rps))


if __name__ == "__main__":
    main()
