#!/usr/bin/env python3
"""loom beside its peers on one machine, in one invocation (when ../shared/bench is absent).

server: each server pinned to CPU 0, wrk pinned to CPU 1, rounds interleaved, medians.
idle:   RSS cost of N idle keep-alive connections to loom.
Usage: bench/peers.py server [--rounds 3 --secs 5 --conns 50] | idle [--conns 10000]
"""
import argparse, os, re, resource, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import start, stop, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOOM = os.path.join(ROOT, "build", "loom")
PEERS = os.path.join(ROOT, "bench", "peers")


def cpu_seconds(pid):
    tot = 0
    kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    for q in [pid] + [int(k) for k in kids]:
        try:
            f = open("/proc/%d/stat" % q).read().rsplit(")", 1)[1].split()
            tot += int(f[11]) + int(f[12])
        except OSError:
            pass
    return tot / os.sysconf("SC_CLK_TCK")


def wrk(port, secs, conns):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d%ds" % secs, "--latency",
                          "http://127.0.0.1:%d/" % port], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)] if m else float("nan")
    errs = re.search(r"Socket errors: (.*)|Non-2xx or 3xx responses: (\d+)", out)
    return rps, p99, errs.group(0) if errs else ""


def servers(tmp):
    rows = [("loom", [LOOM, os.path.join(ROOT, "bench", "hello.lua"), "18185"], 18185)]
    if shutil.which("nginx") and os.path.exists("/usr/lib/nginx/modules/ngx_http_lua_module.so"):
        d = os.path.join(tmp, "nginx")
        os.makedirs(os.path.join(d, "logs"), exist_ok=True)
        conf = open(os.path.join(PEERS, "nginx.conf")).read().replace("PORT", "18181")
        open(os.path.join(d, "nginx.conf"), "w").write(conf)
        rows.append(("nginx+lua", ["nginx", "-p", d, "-c", "nginx.conf"], 18181))
    if shutil.which("node"):
        rows.append(("node", ["node", os.path.join(PEERS, "node_hello.js"), "18182"], 18182))
    return rows


def server_bench(a):
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows = servers(tmp)
        for _ in range(a.rounds):
            for name, cmd, port in rows:
                p = start(cmd, port)
                if not p:
                    print("%s did not start" % name, file=sys.stderr)
                    continue
                wrk(port, 1, a.conns)  # warm-up
                c0 = cpu_seconds(p.pid)
                rps, p99, errs = wrk(port, a.secs, a.conns)
                us = (cpu_seconds(p.pid) - c0) / (rps * a.secs) * 1e6
                stop(p)
                res.setdefault(name, []).append((rps, p99, us, errs))
    base = {k: statistics.median(r[0] for r in v) for k, v in res.items()}
    print("hello world: wrk -t1 -c%d -d%ds, server on cpu0, wrk on cpu1, %d rounds (medians)" % (a.conns, a.secs, a.rounds))
    print("%-10s %10s %9s %10s %12s %s" % ("server", "req/s", "p99 ms", "cpu us/req", "x loom req/s", "errors"))
    for name, v in res.items():
        rps = base[name]
        print("%-10s %10.0f %9.2f %10.1f %12.2f %s" % (name, rps, statistics.median(r[1] for r in v),
              statistics.median(r[2] for r in v), rps / base["loom"], v[-1][3]))


def rss_kb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def idle_bench(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, a.conns + 1000)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    n = min(a.conns, want - 1000)
    p = start([LOOM, os.path.join(ROOT, "bench", "hello.lua"), "18186"], 18186)
    before = rss_kb(p.pid)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", 18186))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    for s in socks:
        s.settimeout(5)
        s.recv(4096)
    time.sleep(1)
    after = rss_kb(p.pid)
    print("loom: %d idle keep-alive connections: +%.1f MB RSS (%.2f KB each)" % (n, (after - before) / 1024, (after - before) / n))
    for s in socks:
        s.close()
    stop(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["server", "idle"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--conns", type=int, default=None)
    a = ap.parse_args()
    if a.mode == "server":
        a.conns = a.conns or 50
        server_bench(a)
    else:
        a.conns = a.conns or 10000
        idle_bench(a)


if __name__ == "__main__":
    main()
