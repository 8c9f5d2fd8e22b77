#!/usr/bin/env python3
"""bench/db/run.py: the database figures of issue 14, in one invocation, on loopback.

TechEmpower's shapes against a real PostgreSQL 15 (world: 10 000 rows; fortune: 12 rows):
/db (one random row as JSON), /queries?n=20, /fortunes (sorted, HTML-escaped into a page);
and a Redis GET. Peers, each written as its users write it (bench/db/*_app.*):

    loom       loom.pg (its plain queries share one connection: automatic pipelining; /queries in
               one db:pipeline on a pooled connection, pool of POOL), loom.redis (its GETs share one
               connection: automatic pipelining)
    loom-pool  loom with auto_pipeline = false for both: a pooled connection per query in flight
               (pool of POOL) and per GET in flight (pool of REDIS_POOL), as loom.pg and
               loom.redis were before automatic pipelining
    node       Node `pg` (Pool of POOL) and `ioredis` (one multiplexed connection), from npm
    aiohttp    aiohttp + asyncpg (pool of POOL), Debian's python3-aiohttp and python3-asyncpg
    nginx      nginx + lua-nginx-module + lua-resty-redis (Debian's lua-nginx-redis), keepalive
               pool of REDIS_POOL; Redis GET only
    redis-benchmark  the Redis GET ceiling: redis-benchmark itself as the client, CONNS in flight

Each server runs pinned to CPU 0; wrk (-t1 -cCONNS) and both databases run on CPU 1, so
the server measured has its core to itself. The PostgreSQL shapes are measured first, with
PostgreSQL up; it is then stopped, and the Redis GET is measured with only redis-server
beside wrk on CPU 1 (an idle PostgreSQL costs little, but nothing of it should run while
the figure that matters is how much of CPU 1 is left). For every round, every peer is
started, its shapes are checked (a wrong answer drops the shape, with the reason) and then
measured: a warm-up of WARMUP seconds on each of its shapes (Node's JIT and pg's
connections need a few seconds), then for each shape 1 s more and SECS seconds of wrk;
rounds are interleaved and medians printed.

Each measurement records, besides req/s and p99: the server's CPU time per request (its
whole process group, user and system), the database's (postgres or redis-server), wrk's,
how busy CPU 0 and CPU 1 were (from /proc/stat: a server whose CPU 0 is not near 100% was
held back by CPU 1, where wrk and the database run, so its req/s says little), and how much
CPU other processes of the machine used meanwhile ("other", in % of one core: other
sessions' builds and tests). Before each measurement the harness waits (at most --quiet-wait
seconds) for other work to fall below --quiet %, and a measurement disturbed past it is taken
again (at most --retries times); what it could not avoid is printed with the figures. The
ratios are loom's over each peer, from the same run; the CPU per request ratio is the one
to read on a busy machine.

The servers, wrk and the databases run at nice --nice (-10), each in a session whose
scheduler autogroup has that niceness too (with kernel.sched_autogroup_enabled the kernel
shares a core between sessions first, whatever a process's own nice): other sessions'
builds and tests run at nice 0 to 19 here, and a request's chain (wrk, the server, Redis,
the server, wrk) otherwise waits at each step for a core they hold. For the few minutes a
run holds the bench lock.

LOOM_BEFORE=path/to/loom adds the peer loom-before: the same app on another build (a
before/after comparison in one run).

REDIS_POOL is CONNS (--redis-pool): a command for each request in flight, as "50 tasks in
flight" asks; PostgreSQL pools are POOL (--pool 16) for every peer.

Usage: bench/db/run.py [--rounds 3] [--secs 5] [--warmup 3] [--conns 50] [--pool 16] [--only loom,node]
       [--shapes db,queries,fortunes,redis] [--quiet 10] [--quiet-wait 20] [--retries 1] [--nice -10]
The Redis GET alone: --shapes redis --only loom,loom-pool,node,nginx,redis-benchmark
Environment: LOOM_BUILD (default build/): the loom host is LOOM_BUILD/loom, npm packages go to
LOOM_BUILD/npm. Needs postgresql-15, redis-server, wrk, nginx with the Lua module,
lua-nginx-redis, node, python3-aiohttp, python3-asyncpg (scripts/deps.sh --bench).
"""
import argparse, json, os, re, resource, signal, statistics, subprocess, sys, tempfile, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from benchlib import start, stop  # noqa: E402

BUILD = os.path.abspath(os.environ.get("LOOM_BUILD", os.path.join(ROOT, "build")))
LOOM = os.path.join(BUILD, "loom")
LOOM_BEFORE = os.environ.get("LOOM_BEFORE")
NICE = []  # ["nice", "-n", N] for everything measured (--nice)
AUTOGROUP_NICE = [0]  # --nice, for the scheduler's autogroup of each session started


def boost(pid):
    """Gives pid's session (its autogroup: with sched_autogroup_enabled, the kernel shares a
    core between sessions first, whatever a process's own nice) the niceness --nice."""
    if AUTOGROUP_NICE[0]:
        try:
            with open("/proc/%d/autogroup" % pid, "w") as f:
                f.write(str(AUTOGROUP_NICE[0]))
        except OSError:
            pass


def run_boosted(argv):
    """subprocess.run(argv) in a session of its own, boosted; its stdout."""
    p = subprocess.Popen(NICE + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        boost(p.pid)
        return p.communicate()[0]
    except BaseException:
        p.kill()
        p.wait()
        raise
NPM = os.path.join(BUILD, "npm")
NPM_PACKAGES = ["pg@8.23.1", "ioredis@5.11.1"]
PSQL = "/usr/lib/postgresql/15/bin/psql"
HZ = os.sysconf("SC_CLK_TCK")

SHAPES = {
    "db": "/db",
    "queries": "/queries?n=20",
    "fortunes": "/fortunes",
    "redis": "/redis",
}

FORTUNES = [
    "fortune: No such file or directory",
    "A computer scientist is someone who fixes things that aren't broken.",
    "After enough decimal places, nobody gives a damn.",
    "A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1",
    "A computer program does what you tell it to do, not what you want it to do.",
    "Emacs is a nice operating system, but I prefer UNIX. \u2014 Tom Christaensen",
    "Any program that runs right is obsolete.",
    "A list is only as strong as its weakest link. \u2014 Donald Knuth",
    "Feature: A bug with seniority.",
    "Computers make very fast, very accurate mistakes.",
    '<script>alert("This should not be displayed in a browser alert box.");</script>',
    "\u30d5\u30ec\u30fc\u30e0\u30ef\u30fc\u30af\u306e\u30d9\u30f3\u30c1\u30de\u30fc\u30af",
]
GREETING = "Hello, World!"


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def keyvals(text):
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def server_up(script):
    """Starts spec/support/SCRIPT on CPU 1; its key=value lines, or exits with the reason."""
    r = subprocess.run(NICE + ["taskset", "-c", "1", "bash", os.path.join(ROOT, "spec", "support", script),
                        "start"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("bench/db: %s start failed: %s" % (script, r.stderr.strip()))
    return keyvals(r.stdout)


def server_down(script, info):
    if info:
        subprocess.run(["bash", os.path.join(ROOT, "spec", "support", script), "stop", info["dir"]])


def populate(pg):
    sql = ["create table world (id integer primary key, randomnumber integer not null)",
           "insert into world select i, 1 + floor(random() * 10000)::int from generate_series(1, 10000) i",
           "create table fortune (id integer primary key, message text not null)"]
    for i, m in enumerate(FORTUNES, 1):
        sql.append("insert into fortune values (%d, '%s')" % (i, m.replace("'", "''")))
    sql.append("analyze")
    env = dict(os.environ, PGPASSWORD=pg["password"])
    r = subprocess.run([PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", pg["port"],
                        "-U", pg["user"], "-d", pg["database"]], input=";\n".join(sql) + ";\n",
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit("bench/db: loading the tables failed: " + r.stderr)


def npm_install():
    if all(os.path.isfile(os.path.join(NPM, "node_modules", p.split("@")[0], "package.json"))
           for p in NPM_PACKAGES):
        return
    os.makedirs(NPM, exist_ok=True)
    subprocess.run(["npm", "install", "--prefix", NPM, "--no-audit", "--no-fund", "--loglevel=error"]
                   + NPM_PACKAGES, check=True, stdout=subprocess.DEVNULL)


def group_ticks(pgid):
    """(utime, stime) of every process in process group pgid, in clock ticks."""
    u = k = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = open("/proc/%s/stat" % d).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(f[2]) == pgid:
            u += int(f[11])
            k += int(f[12])
    return u, k


def tree_ticks(root):
    """utime + stime of `root` and its children (postgres: the postmaster and its backends)."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = open("/proc/%s/stat" % d).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(d) == root or int(f[1]) == root:
            total += int(f[11]) + int(f[12])
    return total


def proc_stats():
    """{pid: (ppid, pgid, start time, user ticks, system ticks, kernel thread)} of every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = open("/proc/%s/stat" % d).read().rsplit(")", 1)[1].split()
            out[int(d)] = (int(f[1]), int(f[2]), f[19], int(f[11]), int(f[12]), bool(int(f[6]) & 0x00200000))
        except (OSError, IndexError, ValueError):
            pass
    return out


def descendants(procs, roots):
    """roots and every process under them."""
    kids = {}
    for pid, v in procs.items():
        kids.setdefault(v[0], []).append(pid)
    out, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(kids.get(pid, []))
    return out


def other_pct(p0, p1, ours, wall):
    """% of one core that user processes not in `ours` (pids) used between two proc_stats():
    other sessions' builds, tests and benchmarks."""
    ticks = 0
    for pid, v in p1.items():
        if v[5] or pid in ours:
            continue
        b = p0.get(pid)
        ticks += v[3] + v[4] - (b[3] + b[4] if b and b[2] == v[2] else 0)
    return 100.0 * ticks / HZ / max(wall, 1e-3)


def cpu_stat():
    """{"cpuN": (busy ticks, total ticks)} from /proc/stat."""
    out = {}
    for line in open("/proc/stat"):
        if re.match(r"cpu\d", line):
            v = [int(x) for x in line.split()[1:]]
            total = sum(v[:8])
            out[line.split()[0]] = (total - v[3] - v[4], total)
    return out


def busy_pct(a, b, cpu):
    (b0, t0), (b1, t1) = a[cpu], b[cpu]
    return 100.0 * (b1 - b0) / max(1, t1 - t0)


def ours(db_pids):
    """This harness, its children (the server, wrk) and the databases."""
    procs = proc_stats()
    return descendants(procs, [os.getpid()] + list(db_pids))


def wait_quiet(a, db_pids, budget):
    """Waits until other work uses less than a.quiet % of a core (at most a.quiet_wait s now and
    budget[0] s in the whole run); the seconds waited."""
    t0 = time.time()
    while True:
        mine = ours(db_pids)
        p0 = proc_stats()
        time.sleep(0.5)
        if other_pct(p0, proc_stats(), mine, 0.5) < a.quiet:
            break
        waited = time.time() - t0
        if waited > a.quiet_wait or waited > budget[0]:
            break
    waited = time.time() - t0
    budget[0] -= waited
    return waited


def check(shape, body):
    """None when the answer to SHAPES[shape] is right, else what is wrong."""
    try:
        if shape == "db":
            v = json.loads(body)
            ok = 1 <= v["id"] <= 10000 and isinstance(v["randomNumber"], int)
        elif shape == "queries":
            v = json.loads(body)
            ok = len(v) == 20 and all(1 <= x["id"] <= 10000 and isinstance(x["randomNumber"], int) for x in v)
        elif shape == "fortunes":
            text = body.decode()
            ok = (text.count("<tr><td>") == 13 and "&lt;script&gt;alert(&quot;This" in text
                  and FORTUNES[-1] in text and text.index("<td>11</td>") < text.index("<td>4</td>"))
        else:
            ok = body.decode() == GREETING
    except Exception as e:  # noqa: BLE001 - any malformed answer is a wrong one
        return "%s: %r" % (type(e).__name__, body[:200])
    return None if ok else "wrong answer: %r" % body[:300]


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wrk(url, secs, conns):
    c0 = children_cpu()
    out = run_boosted(["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d%ds" % secs, "--latency",
                       "--timeout", "5s", url])
    wrk_s = children_cpu() - c0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        return None
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    errors = 0
    for pat in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"):
        e = re.search(pat, out)
        if e:
            errors += sum(int(x) for x in e.groups())
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": float(m.group(1)), "p99": float(p99.group(1)) * scale[p99.group(2)] if p99 else 0.0,
            "errors": errors, "requests": reqs, "wrk_cpu": wrk_s * 1e6 / max(reqs, 1)}


def peers(pg_url, redis_url, redis_port, pool, redis_pool, tmp):
    def nginx(port):
        d = os.path.join(tmp, "nginx-%d" % port)
        os.makedirs(os.path.join(d, "logs"))
        conf = open(os.path.join(HERE, "nginx.conf")).read()
        conf = conf.replace("REDIS_PORT", str(redis_port)).replace("REDIS_POOL", str(redis_pool))
        conf = conf.replace("PORT", str(port))
        open(os.path.join(d, "nginx.conf"), "w").write(conf)
        return ["nginx", "-p", d, "-c", "nginx.conf"]
    return {
        "loom": (lambda port: [LOOM, os.path.join(HERE, "loom_app.lua"), str(port), pg_url, redis_url, str(pool),
                                str(redis_pool)],
                 ["db", "queries", "fortunes", "redis"]),
        "loom-before": (lambda port: [LOOM_BEFORE, os.path.join(HERE, "loom_app.lua"), str(port), pg_url,
                                       redis_url, str(pool), str(redis_pool)],
                        ["db", "queries", "fortunes", "redis"]),
        "loom-pool": (lambda port: [LOOM, os.path.join(HERE, "loom_app.lua"), str(port), pg_url, redis_url,
                                     str(pool), str(redis_pool), "pool"], ["db", "queries", "fortunes", "redis"]),
        "node": (lambda port: ["node", os.path.join(HERE, "node_app.js"), str(port), pg_url, redis_url,
                               str(pool), NPM], ["db", "queries", "fortunes", "redis"]),
        "aiohttp": (lambda port: ["/usr/bin/python3", os.path.join(HERE, "aiohttp_app.py"), str(port), pg_url,
                                  str(pool)], ["db", "queries", "fortunes"]),
        "nginx": (nginx, ["redis"]),
    }


LABELS = {"loom": "loom", "loom-before": "loom, the build before (LOOM_BEFORE)", "loom-pool": "loom, auto_pipeline = false (before)", "node": "Node pg / ioredis", "aiohttp": "aiohttp + asyncpg",
          "nginx": "nginx + lua-resty-redis", "redis-benchmark": "redis-benchmark (ceiling)"}


def redis_benchmark(port, conns, secs):
    # about secs seconds at ~100k GET/s; the rate is what counts
    out = run_boosted(["taskset", "-c", "0", "redis-benchmark", "-h", "127.0.0.1", "-p", str(port),
                       "-c", str(conns), "-n", str(100000 * secs), "--csv", "GET", "bench:greeting"])
    rows = [line for line in out.splitlines() if line.startswith('"GET')]
    if not rows:
        return None
    f = [x.strip('"') for x in rows[-1].split(",")]
    return {"rps": float(f[1]), "p99": float(f[6]) if len(f) > 6 else 0.0, "errors": 0, "requests": 0}


def measure(a, p, url, db_pids, budget):
    """One measured wrk run against server p (after 1 s of wrk more); None if wrk failed."""
    wrk(url, 1, a.conns)
    for attempt in range(1 + a.retries):
        waited = wait_quiet(a, db_pids, budget)
        mine = ours(db_pids)
        p0, s0, w0 = proc_stats(), cpu_stat(), time.time()
        t0, d0 = group_ticks(p.pid), sum(tree_ticks(x) for x in db_pids)
        m = wrk(url, a.secs, a.conns)
        t1, d1 = group_ticks(p.pid), sum(tree_ticks(x) for x in db_pids)
        p1, s1, w1 = proc_stats(), cpu_stat(), time.time()
        if not m:
            return None
        n = m["requests"] or 1
        m["cpu_usr"] = (t1[0] - t0[0]) / HZ * 1e6 / n
        m["cpu_sys"] = (t1[1] - t0[1]) / HZ * 1e6 / n
        m["cpu"] = m["cpu_usr"] + m["cpu_sys"]
        m["db_cpu"] = (d1 - d0) / HZ * 1e6 / n
        m["cpu0"], m["cpu1"] = busy_pct(s0, s1, "cpu0"), busy_pct(s0, s1, "cpu1")
        m["other"] = other_pct(p0, p1, mine, w1 - w0)
        m["waited"] = waited
        m["retried"] = attempt
        if m["other"] < a.quiet or budget[0] <= 0:
            break
        budget[0] -= w1 - w0  # a measurement taken again counts as waiting
    return m


def run_phase(a, only, shapes, table, db_pids, results, broken, budget):
    """Interleaved rounds of `shapes` for every peer in `only`."""
    for rnd in range(a.rounds):
        for name in only:
            if name == "redis-benchmark":
                if "redis" in shapes:
                    m = redis_benchmark(a.redis_port, a.conns, a.secs)
                    if m:
                        results.setdefault((name, "redis"), []).append(m)
                continue
            cmd, its = table[name]
            its = [s for s in its if s in shapes and (name, s) not in broken]
            if not its:
                continue
            port = free_port()
            p = start(NICE + cmd(port), port)
            if p:
                boost(p.pid)
            if not p:
                for s in its:
                    broken[(name, s)] = "the server did not start"
                continue
            try:
                ok = []
                for s in its:
                    url = "http://127.0.0.1:%d%s" % (port, SHAPES[s])
                    try:
                        body = urllib.request.urlopen(url, timeout=10).read()
                        why = check(s, body)
                    except Exception as e:  # noqa: BLE001
                        why = str(e)
                    if why:
                        broken[(name, s)] = why
                    else:
                        ok.append(s)
                # every shape warmed before any is measured: pools filled, statements
                # prepared on every connection, the JIT's tiers (Node's /db ran at a
                # quarter of its speed for its first 6 s)
                for s in ok:
                    wrk("http://127.0.0.1:%d%s" % (port, SHAPES[s]), a.warmup, a.conns)
                for s in ok:
                    m = measure(a, p, "http://127.0.0.1:%d%s" % (port, SHAPES[s]), db_pids, budget)
                    if not m:
                        broken[(name, s)] = "wrk failed"
                        continue
                    results.setdefault((name, s), []).append(m)
                    print("round %d %-11s %-9s %9.0f req/s  p99 %6.2f ms  server %6.1f us/req (sys %4.1f)  db %5.1f"
                          "  wrk %4.1f  cpu0 %3.0f%% cpu1 %3.0f%%  other %3.0f%%%s%s"
                          % (rnd + 1, name, s, m["rps"], m["p99"], m["cpu"], m["cpu_sys"], m["db_cpu"],
                             m["wrk_cpu"], m["cpu0"], m["cpu1"], m["other"],
                             "  (taken again)" if m["retried"] else "",
                             "  ERRORS %d" % m["errors"] if m["errors"] else ""), flush=True)
            finally:
                stop(p)


def report(a, only, shapes, results, broken):
    for s in shapes:
        rows = [(name, results[(name, s)]) for name in only if (name, s) in results]
        if not rows:
            continue
        print()
        print("%s (%s)" % (s, SHAPES[s]))
        print("| peer | req/s (median [min-max]) | p99 ms | server CPU us/req (sys) | db CPU us/req | wrk CPU us/req"
              " | CPU0 / CPU1 busy % | other % (max) | loom req/s x (per round) | loom CPU x |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        keys = ("rps", "p99", "cpu", "cpu_sys", "db_cpu", "wrk_cpu", "cpu0", "cpu1", "other")
        med = {name: {k: statistics.median(m.get(k, 0.0) for m in ms) for k in keys} for name, ms in rows}
        for name, ms in rows:
            md = med[name]
            rps = [m["rps"] for m in ms]
            lm = med.get("loom")
            ratio = "%.2f" % (lm["rps"] / md["rps"]) if lm and md["rps"] else "-"
            # loom over the peer within each round (the machine's load drifts between rounds)
            lr = results.get(("loom", s), [])
            per = [x["rps"] / y["rps"] for x, y in zip(lr, ms) if y["rps"]]
            if name != "loom" and per:
                ratio += " (%s)" % ", ".join("%.2f" % x for x in per)
            cratio = "%.2f" % (lm["cpu"] / md["cpu"]) if lm and md["cpu"] and name != "redis-benchmark" else "-"
            errs = sum(m["errors"] for m in ms)
            bench = name == "redis-benchmark"
            print("| %s | %s [%s-%s]%s | %.2f | %s | %s | %s | %s | %s | %s | %s |" % (
                LABELS[name], format(round(md["rps"]), ","), format(round(min(rps)), ","),
                format(round(max(rps)), ","), " (%d errors)" % errs if errs else "", md["p99"],
                "-" if bench else "%.1f (%.1f)" % (md["cpu"], md["cpu_sys"]),
                "%.1f" % md["db_cpu"] if md["db_cpu"] else "-",
                "-" if bench else "%.1f" % md["wrk_cpu"],
                "-" if bench else "%.0f / %.0f" % (md["cpu0"], md["cpu1"]),
                "-" if bench else "%.0f (%.0f)" % (md["other"], max(m["other"] for m in ms)),
                ratio, cratio))
    for (name, s), why in sorted(broken.items()):
        print("NOT MEASURED: %s %s: %s" % (name, s, why))


def main():
    # a SIGTERM (timeout(1)) still stops the servers and databases (the finally blocks)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench/db: terminated"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--pool", type=int, default=16)
    ap.add_argument("--redis-pool", type=int, default=0, help="default: --conns")
    ap.add_argument("--only", default="loom,loom-pool,node,aiohttp,nginx,redis-benchmark")
    ap.add_argument("--shapes", default="db,queries,fortunes,redis")
    ap.add_argument("--quiet", type=float, default=10.0,
                    help="%% of a core other processes may use before a measurement counts as disturbed")
    ap.add_argument("--quiet-wait", type=float, default=20.0, help="seconds to wait for quiet before each measurement")
    ap.add_argument("--quiet-budget", type=float, default=120.0, help="seconds of such waiting in the whole run")
    ap.add_argument("--retries", type=int, default=1, help="times a disturbed measurement is taken again")
    ap.add_argument("--nice", type=int, default=-10,
                    help="niceness of the servers, wrk and the databases (other sessions build at nice 10)")
    a = ap.parse_args()
    if a.nice > 0 or (a.nice < 0 and os.geteuid() == 0):  # (only root may go below 0)
        NICE[:] = ["nice", "-n", str(a.nice)]
        AUTOGROUP_NICE[0] = a.nice
    only = a.only.split(",")
    if LOOM_BEFORE and "loom-before" not in only:
        only.insert(1, "loom-before")
    shapes = a.shapes.split(",")
    if not os.access(LOOM, os.X_OK):
        sys.exit("bench/db: %s is missing (make build, or LOOM_BUILD=dir)" % LOOM)
    if "loom-before" in only and not (LOOM_BEFORE and os.access(LOOM_BEFORE, os.X_OK)):
        sys.exit("bench/db: loom-before needs LOOM_BEFORE=path/to/loom")
    if "node" in only:
        npm_install()
    load0 = os.getloadavg()
    pg = rd = None
    results = {}   # (peer, shape) -> [measurements]
    broken = {}    # (peer, shape) -> reason
    budget = [a.quiet_budget]
    pg_shapes = [s for s in shapes if s != "redis"]
    try:
        rd = server_up("redis_server.sh")
        boost(int(rd["pid"]))
        subprocess.run(["redis-cli", "-p", rd["port"], "set", "bench:greeting", GREETING], check=True,
                       stdout=subprocess.DEVNULL)
        a.redis_port = rd["port"]
        redis_url = "redis://127.0.0.1:%s/0" % rd["port"]
        redis_pid = int(rd["pid"])
        with tempfile.TemporaryDirectory() as tmp:
            if pg_shapes:
                pg = server_up("pg_server.sh")
                boost(int(pg["pid"]))
                populate(pg)
                pg_url = "postgresql://%s:%s@127.0.0.1:%s/%s" % (pg["user"], pg["password"], pg["port"],
                                                                 pg["database"])
                table = peers(pg_url, redis_url, rd["port"], a.pool, a.redis_pool or a.conns, tmp)
                run_phase(a, only, pg_shapes, table, [int(pg["pid"]), redis_pid], results, broken, budget)
                server_down("pg_server.sh", pg)
                pg = None
            if "redis" in shapes:
                # no PostgreSQL now: the servers' pools are lazy (Node's pg and loom.pg connect on
                # their first query), so a URL to a closed port costs nothing
                pg_url = "postgresql://bench:bench@127.0.0.1:%d/bench" % free_port()
                table = peers(pg_url, redis_url, rd["port"], a.pool, a.redis_pool or a.conns, tmp)
                run_phase(a, only, ["redis"], table, [redis_pid], results, broken, budget)
    finally:
        server_down("redis_server.sh", rd)
        server_down("pg_server.sh", pg)
    load1 = os.getloadavg()

    print()
    print("bench/db: %d rounds of %d s (after %d s of warm-up), wrk -t1 -c%d, pools of %d (pg) and %d (redis); server on CPU 0,"
          " wrk and the databases on CPU 1 (PostgreSQL stopped for the Redis rounds), all at nice %s; load average %.1f"
          " before, %.1f after; %.0f s spent waiting for other work to stop"
          % (a.rounds, a.secs, a.warmup, a.conns, a.pool, a.redis_pool or a.conns, NICE[2] if NICE else "0",
             load0[0], load1[0], a.quiet_budget - budget[0]))
    report(a, only, shapes, results, broken)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
