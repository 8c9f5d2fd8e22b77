#!/usr/bin/env python3
"""bench/compress/run.py: issue 13's compression figure, in one invocation, on loopback.

A 20 KB JSON answer (bench/compress/data.lua, encoded per request) asked for with
Accept-Encoding: gzip, from

    loom       loom.app{ compress = { level = L } }             (bench/compress/loom_app.lua)
    nginx+lua  nginx 1 worker, content_by_lua_block + cjson, `gzip on; gzip_comp_level L`

the same answer without Accept-Encoding from both (so what the coding itself adds shows
apart from the JSON encoding: LuaJIT's cjson in nginx, Lua 5.4's in loom), and, to show
what compress costs the answers it does not code, GET /hello (13 bytes, under min_size)
from loom with compress on and off. Each server runs pinned to CPU 0 and wrk
(-t1 -cCONNS) to CPU 1; rounds are interleaved, medians printed with the server's CPU time
per request (its process group). Every answer is checked first (gzip coded, decodes to the
JSON). The ratios are loom's over nginx+lua's, from the same run.

Usage: bench/compress/run.py [--rounds 3] [--secs 5] [--conns 50] [--levels 1,6]
Environment: LOOM_BUILD (default build/): the loom host is LOOM_BUILD/loom. Needs wrk, nginx
with the Lua module (scripts/deps.sh --bench).
"""
import argparse, gzip, json, os, re, statistics, subprocess, sys, tempfile, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from benchlib import start, stop  # noqa: E402

BUILD = os.path.abspath(os.environ.get("LOOM_BUILD", os.path.join(ROOT, "build")))
LOOM = os.path.join(BUILD, "loom")
HZ = os.sysconf("SC_CLK_TCK")


def group_ticks(pgid):
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = open("/proc/%s/stat" % d).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(f[2]) == pgid:
            total += int(f[11]) + int(f[12])
    return total


def wrk(url, secs, conns, gzip_ok):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d%ds" % secs, "--latency"]
    if gzip_ok:
        cmd += ["-H", "Accept-Encoding: gzip"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        return None
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    for pat in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"):
        e = re.search(pat, out)
        if e:
            errors += sum(int(x) for x in e.groups())
    return {"rps": float(m.group(1)), "requests": reqs, "errors": errors}


def check(port, want):
    """None when /json20k comes gzip coded and decodes to the data, else what is wrong."""
    try:
        req = urllib.request.Request("http://127.0.0.1:%d/json20k" % port, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=5) as r:
            if r.headers.get("Content-Encoding") != "gzip":
                return "not gzip coded: %s" % r.headers.get("Content-Encoding")
            body = gzip.decompress(r.read())
        if json.loads(body) != want:
            return "wrong JSON"
    except Exception as e:  # noqa: BLE001
        return "%s: %s" % (type(e).__name__, e)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--levels", default="1,6")
    a = ap.parse_args()
    if not os.access(LOOM, os.X_OK):
        sys.exit("bench/compress: no loom at %s (LOOM_BUILD=dir)" % LOOM)
    want = json.loads(subprocess.run(["lua5.4", "-e", 'print(require("cjson").encode(dofile("%s/data.lua")))' % HERE],
                                     capture_output=True, text=True, check=True).stdout)
    tmp = tempfile.mkdtemp(prefix="loom-bench-compress-")
    levels = [int(x) for x in a.levels.split(",")]

    def nginx(level, port):
        d = os.path.join(tmp, "nginx-%d" % level)
        os.makedirs(os.path.join(d, "logs"), exist_ok=True)
        conf = open(os.path.join(HERE, "nginx.conf")).read()
        conf = conf.replace("@PORT@", str(port)).replace("@LEVEL@", str(level)).replace("@DATA@", os.path.join(HERE, "data.lua"))
        open(os.path.join(d, "nginx.conf"), "w").write(conf)
        return ["nginx", "-e", "stderr", "-p", d, "-c", "nginx.conf"]

    cases = []  # (label, argv, port, path, gzip)
    # the same answer uncoded (no Accept-Encoding): what coding adds is the difference
    cases.append(("nginx+lua identity", nginx(1, 18411), 18411, "/json20k", False))
    cases.append(("loom identity", [LOOM, os.path.join(HERE, "loom_app.lua"), "18412", "0"], 18412, "/json20k", False))
    for lv in levels:
        cases.append(("nginx+lua gzip %d" % lv, nginx(lv, 18411), 18411, "/json20k", True))
        cases.append(("loom compress %d" % lv, [LOOM, os.path.join(HERE, "loom_app.lua"), "18412", str(lv)], 18412, "/json20k", True))
    cases.append(("loom hello, compress off", [LOOM, os.path.join(HERE, "loom_app.lua"), "18412", "0"], 18412, "/hello", True))
    cases.append(("loom hello, compress on", [LOOM, os.path.join(HERE, "loom_app.lua"), "18412", "6"], 18412, "/hello", True))

    res = {c[0]: [] for c in cases}
    broken = {}
    for rnd in range(a.rounds):
        for label, argv, port, path, gz in cases:
            if label in broken:
                continue
            p = start(argv, port)
            if not p:
                broken[label] = "did not start"
                continue
            try:
                if path == "/json20k" and gz:
                    why = check(port, want)
                    if why:
                        broken[label] = why
                        continue
                url = "http://127.0.0.1:%d%s" % (port, path)
                wrk(url, 1, a.conns, gz)
                t0 = group_ticks(p.pid)
                m = wrk(url, a.secs, a.conns, gz)
                t1 = group_ticks(p.pid)
                if not m:
                    broken[label] = "wrk failed"
                    continue
                m["cpu_us"] = (t1 - t0) / HZ * 1e6 / max(m["requests"], 1)
                res[label].append(m)
            finally:
                stop(p)
        print("round %d done" % (rnd + 1), file=sys.stderr)

    load = open("/proc/loadavg").read().split()[:3]
    print("bench/compress: %d rounds of %d s, wrk -t1 -c%d, Accept-Encoding: gzip; server on CPU 0, wrk on CPU 1; "
          "load average before the run's end %s" % (a.rounds, a.secs, a.conns, " ".join(load)))
    print()
    print("| server | answer | req/s (median) [min-max] | server CPU us/req | errors |")
    print("| --- | --- | --- | --- | --- |")
    med = {}
    for label, _, _, path, _ in cases:
        if label in broken:
            print("| %s | %s | %s | | |" % (label, path, broken[label]))
            continue
        rs = [m["rps"] for m in res[label]]
        cpu = statistics.median(m["cpu_us"] for m in res[label])
        med[label] = (statistics.median(rs), cpu)
        print("| %s | %s | %.0f [%.0f-%.0f] | %.1f | %d |" % (label, path, med[label][0], min(rs), max(rs), cpu,
                                                          sum(m["errors"] for m in res[label])))
    print()
    for lv in levels:
        n, l = med.get("nginx+lua gzip %d" % lv), med.get("loom compress %d" % lv)
        if n and l:
            print("level %d: loom/nginx+lua req/s %.2fx, server CPU per request %.2fx" % (lv, l[0] / n[0], l[1] / n[1]))
    ni, li = med.get("nginx+lua identity"), med.get("loom identity")
    if ni and li:
        print("identity (no coding): loom/nginx+lua req/s %.2fx, server CPU per request %.2fx" % (li[0] / ni[0], li[1] / ni[1]))
        for lv in levels:
            n, l = med.get("nginx+lua gzip %d" % lv), med.get("loom compress %d" % lv)
            if n and l:
                print("level %d: CPU per request the coding adds: loom %.1f us, nginx %.1f us" % (lv, l[1] - li[1], n[1] - ni[1]))
    off, on = med.get("loom hello, compress off"), med.get("loom hello, compress on")
    if off and on:
        print("hello (not coded): compress on/off req/s %.2fx, CPU per request %.2fx" % (on[0] / off[0], on[1] / off[1]))


if __name__ == "__main__":
    main()
