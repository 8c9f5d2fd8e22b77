#!/usr/bin/env python3
"""bench/fs/run.py: reading a 100 MB file (in the page cache) with loom.fs beside
`cat FILE > /dev/null`, --rounds times each (interleaved). Prints the best wall and CPU
(user+sys, from getrusage of the child) seconds of each, and the loom/cat ratios. A loom
process that only loads loom is measured too (its start-up is part of every loom figure).
    python3 bench/fs/run.py [--loom build/loom] [--rounds 5] [--size 100000000]"""
import argparse, os, resource, subprocess, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--loom", default=os.environ.get("LOOM", "build/loom"))
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--size", type=int, default=100_000_000)
a = ap.parse_args()
os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

def measure(cmd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)

with tempfile.TemporaryDirectory() as tmp:
    big, empty = os.path.join(tmp, "big"), os.path.join(tmp, "empty.lua")
    with open(big, "wb") as f:
        f.write(os.urandom(a.size))
    with open(big, "rb") as f:  # into the page cache
        while f.read(1 << 20):
            pass
    with open(empty, "w") as f:
        f.write('require "loom"\n')
    runs = {
        "cat > /dev/null": ["sh", "-c", f"cat '{big}' > /dev/null"],
        "loom start-up only": [a.loom, empty],
        "loom.fs.read(path)": [a.loom, "bench/fs/read.lua", big],
        "loom.fs.open + f:read(1048576)": [a.loom, "bench/fs/read.lua", big, "1048576"],
        "loom.fs.open + f:read(131072)": [a.loom, "bench/fs/read.lua", big, "131072"],
    }
    best = {k: (1e9, 1e9) for k in runs}
    for _ in range(a.rounds):
        for k, cmd in runs.items():
            w, c = measure(cmd)
            best[k] = (min(best[k][0], w), min(best[k][1], c))
    cw, cc = best["cat > /dev/null"]
    for k, (w, c) in best.items():
        extra = "" if k.startswith("cat") or "start-up" in k else \
            f"  (x{w / cw:.2f} of cat's wall, x{c / cc:.2f} of its CPU)"
        print(f"{k:34} wall {w:.3f} s  CPU {c:.3f} s{extra}")
