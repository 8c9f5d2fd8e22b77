#!/usr/bin/python3
"""The users shape's server CPU per request over the plaintext shape's (issue 12's 1.25x),
measured alternately in one server process: for each server, N cycles of (plaintext S s,
users S s), so that the machine's speed, which drifts over minutes on a shared VM, weighs
on both profiles alike. profiles/run.py measures each profile once per round, a minute
apart; this one gives a tighter ratio, not req/s.

    bench/users_ratio.py [--cycles 10] [--secs 2] [LABEL=LOOM_BINARY ...]

Servers: nginx+Lua (../shared/bench/profiles' config) and each loom binary given (default
build/loom), one after the other, each on cpu0 with `wrk -t1 -c50` on cpu1, through
../shared/bench/profiles/run.py's own functions (servers, checks, wrk, /proc accounting).
Prints, per server, the median of the cycles' ratios [min-max] and the median CPU us per
request of each profile. Run it under `flock /tmp/bench.lock` on a shared machine.
"""
import argparse
import importlib.util
import os
import statistics as st
import tempfile
import types

HERE = os.path.dirname(os.path.abspath(__file__))
RUN_PY = os.path.join(HERE, "..", "..", "shared", "bench", "profiles", "run.py")


def load_run_py():
    spec = importlib.util.spec_from_file_location("profiles_run", RUN_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def measure_server(R, row, profs, a):
    H = R.H
    log = open(os.path.join(a.tmp, row["name"] + ".log"), "ab")
    p = H.start(row["argv"], log, cwd=row.get("cwd"))
    try:
        if not H.wait_port(row["port"], p):
            return "did not listen on %d" % row["port"]
        chk = R.check_all(row["port"], [profs["plaintext"], profs["users"]])
        bad = [k + ": " + c["error"] for k, c in chk.items() if c.get("error")]
        if bad:
            return "check failed: " + "; ".join(bad)
        for k in ("plaintext", "users"):  # warm-up
            R.wrk(row["port"], profs[k], 1, a.conns)
        ratios, pl, us, oth = [], [], [], []
        for _ in range(a.cycles):
            mp = R.measure(p.pid, row["port"], profs["plaintext"], a)
            mu = R.measure(p.pid, row["port"], profs["users"], a)
            if "error" in mp or "error" in mu:
                return "wrk failed"
            pl.append(mp["srv_cpu_us"])
            us.append(mu["srv_cpu_us"])
            ratios.append(mu["srv_cpu_us"] / mp["srv_cpu_us"])
            oth.append(max(mp["other_pct"], mu["other_pct"]))
        return ("users/plaintext %.3f [%.2f-%.2f]  users %.2f  plaintext %.2f us/req  other CPU up to %.0f%%\n"
                "             cycles: %s" % (st.median(ratios), min(ratios), max(ratios), st.median(us), st.median(pl),
                                             max(oth), " ".join("%.2f" % r for r in ratios)))
    finally:
        H.stop(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--secs", type=int, default=2)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("loom", nargs="*", help="LABEL=PATH of a loom binary (default loom=build/loom)")
    a = ap.parse_args()
    R = load_run_py()
    profs = {p["name"]: p for p in R.PROFILES}
    looms = [x.split("=", 1) for x in a.loom] or [["loom", os.path.join(HERE, "..", "build", "loom")]]
    with tempfile.TemporaryDirectory() as tmp:
        a.tmp = tmp
        root = R.make_root(tmp)
        rows = [r for r in R.server_rows(tmp, root) if r["name"] == "nginx+lua"]
        for label, path in looms:
            rows.append(dict(name=label, port=18204, cwd=root,
                             argv=[os.path.abspath(path), os.path.join(R.HERE, "loom.lua"), "18204"]))
        print("load average %s" % open("/proc/loadavg").read().strip())
        for row in rows:
            print("%-12s %s" % (row["name"], measure_server(R, row, profs, a)))
        print("load average %s" % open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
