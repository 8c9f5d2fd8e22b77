#!/usr/bin/env python3
"""The client benchmark: N GETs with C in flight against a local nginx (static body, pinned
to CPU 0), each client pinned to CPU 1, in one invocation: wrk (the ceiling), Python
aiohttp's ClientSession, Node's fetch, Node's http.request with a keep-alive agent, and
loom's session. Rounds are interleaved; medians are printed with loom's ratio to each peer.
Usage: bench/client/run.py [--rounds 3] [--requests 20000] [--conns 50]
"""
import argparse, os, re, signal, socket, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import start, stop, wait_port  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LOOM = os.path.join(ROOT, "build", "loom")
PORT = 18091


def start_nginx(tmp):
    with open(os.path.join(HERE, "nginx.conf")) as f:
        conf = f.read().replace("PORT", str(PORT))
    os.makedirs(os.path.join(tmp, "logs"))
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(conf)
    p = start(["nginx", "-p", tmp, "-c", "nginx.conf"], PORT)
    if not p:
        raise SystemExit("nginx did not start")
    return p


def wrk(url, conns):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d3s", url],
                         capture_output=True, text=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def clients(url, n, c):
    args = [url, str(n), str(c)]
    return [
        ("wrk-ceiling", None),
        ("aiohttp", ["/usr/bin/python3", os.path.join(HERE, "aiohttp_client.py")] + args),
        ("node-fetch", ["node", os.path.join(HERE, "node_fetch_client.js")] + args),
        ("node-http", ["node", os.path.join(HERE, "node_http_client.js")] + args),
        ("loom", [LOOM, os.path.join(HERE, "loom_client.lua")] + args),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--conns", type=int, default=50)
    a = ap.parse_args()
    url = "http://127.0.0.1:%d/static" % PORT
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        ng = start_nginx(tmp)
        try:
            for _ in range(a.rounds):
                for name, cmd in clients(url, a.requests, a.conns):
                    if cmd is None:
                        rps = wrk(url, a.conns)
                    else:
                        t = subprocess.run(["taskset", "-c", "1"] + cmd, capture_output=True, text=True, timeout=300)
                        try:
                            rps = float(t.stdout.split()[-1])
                        except (IndexError, ValueError):
                            print(name, "failed:", (t.stderr or t.stdout)[-300:])
                            rps = None
                    res.setdefault(name, []).append(rps)
        finally:
            stop(ng)
    print("client: %d GETs, %d in flight, nginx static on cpu0, client on cpu1, %d rounds"
          % (a.requests, a.conns, a.rounds))
    med = {k: statistics.median([x for x in v if x]) for k, v in res.items() if any(v)}
    print("%-12s %10s %19s" % ("client", "req/s", "min-max"))
    for k, v in med.items():
        ok = [x for x in res[k] if x]
        print("%-12s %10.0f %9.0f-%-9.0f" % (k, v, min(ok), max(ok)))
    if "loom" in med:
        for peer, target in (("node-http", 2), ("aiohttp", 8)):
            if peer in med:
                r = med["loom"] / med[peer]
                print("loom / %-10s %5.2fx (target %dx): %s" % (peer, r, target, "met" if r >= target else "NOT met"))


if __name__ == "__main__":
    main()
