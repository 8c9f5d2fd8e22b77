#!/usr/bin/env python3
"""Server soak: `wrk -c 1000` on a mixed app for SOAK_SECS (60) seconds, RSS sampled every
second. Not a test (machines here are noisy): a pass/fail on memory and errors.

  bench/soak_server.py              # or: SOAK_SECS=10 bench/soak_server.py

The app (bench/soak_app.lua) answers a hello world, a JSON document, 64 KiB bodies and
40 000-byte uploads that it reads with req:chunks(); wrk (bench/soak_mix.lua) sends them
in a fixed mix and checks every body. Steps: start the server (CPU 0), warm up with
WARMUP_SECS (10) of the same load (wrk on CPU 1), let it settle SETTLE_SECS (3), run the
soak, let it settle again; RSS is sampled every second throughout. Then it prints the
samples, the verdict on RSS and the errors, and exits 1 when RSS is not flat or there was
any error.

RSS flat: the post-warm-up level is RSS under the load at the end of the warm-up (the
median of its last 3 samples); the soak's last 10 s must stay within 10% of it, and RSS
after the soak (idle) must not be above it by more than 10%. The level is taken under load
because idle RSS after a load says little: how much freed memory malloc hands back to the
system once the connections close is luck of fragmentation (the same load leaves 5 to 30
MB behind, with half a megabyte of Lua heap).

Errors: wrk's socket errors (connect, read, write, timeout) and non-2xx answers in either
run, 2xx bodies that are not what the mix expects, faults the app counted itself, any line
on the server's stderr, the server dying, and descriptors still open after the soak.

LOOM_BUILD (build) names the build directory; it should be a normal (RelWithDebInfo) or
Release build, not a sanitizer one. SOAK_CONNS (1000) and SOAK_THREADS (2) shape wrk.
"""
import json, os, re, resource, signal, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import build_dir, rss_kb, stop, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")


def env_num(name, default):
    return float(os.environ.get(name, default))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Sampler(threading.Thread):
    """RSS of pid every `every` seconds until stopped, each sample tagged with the phase
    (warm-up, soak, settle) the main thread has set."""

    def __init__(self, pid, every=1.0):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.phase = pid, every, [], "idle"
        self.halt = threading.Event()

    def run(self):
        t0 = time.monotonic()
        while not self.halt.is_set():
            kb = rss_kb(self.pid)
            if kb is not None:
                self.samples.append((time.monotonic() - t0, kb, self.phase))
            self.halt.wait(self.every)

    def of(self, phase):
        return [(t, kb) for t, kb, p in self.samples if p == phase]


def wrk(port, secs, conns, threads):
    cmd = ["taskset", "-c", "1", "wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % secs,
           "--timeout", "10s", "-s", os.path.join(BENCH, "soak_mix.lua"), "http://127.0.0.1:%d/" % port]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    r = {"out": out, "rps": 0.0, "requests": 0, "socket": {}, "non2xx": 0, "bad": 0, "checked": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["socket"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"soak_mix: checked=(\d+) bad=(\d+)(.*)", out)
    if m:
        r["checked"], r["bad"], r["mix"] = int(m.group(1)), int(m.group(2)), m.group(3).strip()
    else:
        r["bad"] = -1  # the script's summary is missing: wrk itself failed
    return r


def wrk_errors(r):
    return sum(r["socket"].values()) + r["non2xx"] + max(r["bad"], 0) + (1 if r["bad"] < 0 else 0)


def describe_wrk(label, r):
    sock = ", ".join("%s %d" % kv for kv in r["socket"].items()) or "none"
    print("%s: %d requests, %.0f req/s; socket errors: %s; non-2xx: %d; bad bodies: %d of %d checked"
          % (label, r["requests"], r["rps"], sock, r["non2xx"], r["bad"], r["checked"]))
    if r.get("mix"):
        print("  answers by kind: %s" % r["mix"])
    if r["bad"] < 0:
        print("  wrk printed no summary; its output:\n" + r["out"])


def slope_mb_per_min(samples):
    """Least-squares slope of RSS over the samples, in MB per minute."""
    if len(samples) < 3:
        return 0.0
    xs = [t for t, _ in samples]
    ys = [kb / 1024 for _, kb in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def main():
    # children are stopped by the finally blocks, on SIGTERM and on SIGINT even when the
    # shell started us with SIGINT ignored (in the background)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    secs = int(env_num("SOAK_SECS", 60))
    warmup = int(env_num("WARMUP_SECS", 10))
    settle = env_num("SETTLE_SECS", 3)
    conns = int(env_num("SOAK_CONNS", 1000))
    threads = int(env_num("SOAK_THREADS", 2))
    loom, kind = build_dir()
    nofile = raise_nofile()
    if nofile < conns + 100:
        sys.exit("soak: the open-file limit is %d; wrk -c %d needs more (ulimit -n)" % (nofile, conns))
    port = free_port()
    errlog = tempfile.TemporaryFile(mode="w+")
    server = subprocess.Popen(["taskset", "-c", "0", loom, os.path.join(BENCH, "soak_app.lua"), str(port)],
                              stdout=subprocess.DEVNULL, stderr=errlog, start_new_session=True)
    try:
        if not wait_port(port):
            sys.exit("soak: the server never listened on %d" % port)
        pid = server.pid
        print("soak_server: %s (%s build), port %d; wrk -t%d -c%d: %d s warm-up, %d s soak"
              % (loom, kind, port, threads, conns, warmup, secs))
        idle_kb, idle_fds = rss_kb(pid), fd_count(pid)
        sampler = Sampler(pid)
        sampler.phase = "warm-up"
        sampler.start()
        warm = wrk(port, warmup, conns, threads)
        sampler.phase = "pause"
        time.sleep(settle)
        pause_kb, post_fds = rss_kb(pid), fd_count(pid)
        sampler.phase = "soak"
        soak = wrk(port, secs, conns, threads)
        sampler.phase = "settle"
        time.sleep(settle)
        sampler.halt.set()
        sampler.join()
        after_kb, after_fds = rss_kb(pid), fd_count(pid)
        alive = server.poll() is None
        try:
            stats = json.load(urllib.request.urlopen("http://127.0.0.1:%d/stats" % port, timeout=5))
        except Exception as e:  # the server is gone or broken: that is a failure too
            stats = {"errors": 1, "last_error": "GET /stats failed: %s" % e}
    finally:
        stop(server)
    errlog.seek(0)
    stderr = errlog.read()

    print()
    describe_wrk("warm-up %d s" % warmup, warm)
    describe_wrk("soak %d s" % secs, soak)
    print("app: %d requests, %d uploads (%.1f MB) read with req:chunks(); faults it counted: %d%s; "
          "uploads cut by wrk stopping: %d; Lua heap %.0f KB"
          % (stats.get("requests", 0), stats.get("uploads", 0), stats.get("upload_bytes", 0) / 1e6,
             stats.get("errors", 0), " (last: %s)" % stats["last_error"] if stats.get("last_error") else "",
             stats.get("cut", 0), stats.get("lua_kb", 0)))
    err_lines = [line for line in stderr.splitlines() if line.strip()]
    faulty_stderr = err_lines
    if err_lines:
        print("server stderr: %d lines, e.g.\n  %s" % (len(err_lines), "\n  ".join(err_lines[:5])))

    mb = lambda kb: kb / 1024  # noqa: E731
    warm_kbs = [kb for _, kb in sampler.of("warm-up")]
    soak_samples = sampler.of("soak")
    kbs = [kb for _, kb in soak_samples]
    tail = max(1, min(10, len(kbs) // 3))
    # Under load, not idle: see the docstring.
    post_kb = statistics.median(warm_kbs[-3:]) if warm_kbs else pause_kb
    end_kb = statistics.fmean(kbs[-tail:]) if kbs else 0
    print()
    print("RSS: %.1f MB idle at start; %.1f MB under load at the end of the warm-up (the post-warm-up level); "
          "%.1f MB idle %.0f s after it" % (mb(idle_kb), mb(post_kb), mb(pause_kb), settle))
    if kbs:
        q = statistics.quantiles(kbs, n=10) if len(kbs) >= 2 else kbs * 9
        print("RSS during the soak, %d samples, 1 s apart: min %.1f, p10 %.1f, median %.1f, p90 %.1f, max %.1f MB"
              % (len(kbs), mb(min(kbs)), mb(q[0]), mb(statistics.median(kbs)), mb(q[-1]), mb(max(kbs))))
        print("  first %d s mean %.1f MB, last %d s mean %.1f MB, trend %+.2f MB/min"
              % (tail, mb(statistics.fmean(kbs[:tail])), tail, mb(end_kb), slope_mb_per_min(soak_samples)))
        print("  every 5th sample (MB): " + " ".join("%.1f" % mb(k) for k in kbs[::5]))
    print("RSS %.0f s after the soak: %.1f MB (idle)" % (settle, mb(after_kb or 0)))
    print("open descriptors: %s at start, %s after the warm-up, %s after the soak"
          % (idle_fds, post_fds, after_fds))
    steady = bool(kbs) and abs(end_kb - post_kb) <= 0.10 * post_kb
    returned = after_kb is not None and after_kb <= 1.10 * post_kb
    fds_back = after_fds is not None and idle_fds is not None and after_fds <= idle_fds
    flat = steady and returned
    print()
    print("RSS flat: %s (within 10%% of post-warm-up %.1f MB: %.1f MB over the soak's last %d s, %+.1f%%; "
          "%.1f MB %.0f s after it)"
          % ("yes" if flat else "no", mb(post_kb), mb(end_kb), tail, 100 * (end_kb - post_kb) / post_kb,
             mb(after_kb or 0), settle))
    errors = (wrk_errors(warm) + wrk_errors(soak) + int(stats.get("errors", 0)) + len(faulty_stderr)
              + (0 if alive else 1) + (0 if fds_back else 1))
    print("errors: %d (wrk socket errors + non-2xx + bad bodies, both runs; app faults %d; server stderr %d%s%s)"
          % (errors, stats.get("errors", 0), len(faulty_stderr), "" if alive else "; the server died",
             "" if fds_back else "; descriptors left open"))
    print("req/s during the soak: %.0f" % soak["rps"])
    return 0 if flat and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
