#!/usr/bin/env python3
"""Client soak: SOAK_FETCHES (200 000) fetches through one loom.session against a server
that drops one connection in fifty, the client's RSS sampled every second. Not a test: a
pass/fail on memory and errors.

  bench/soak_client.py              # or: SOAK_FETCHES=20000 bench/soak_client.py

The client (bench/soak_client.lua, on CPU 1) runs SOAK_TASKS (50) tasks through one
session with max_per_host = SOAK_PER_HOST (25, so tasks also queue for connections); each
fetch asks for /item?id=N with a unique N and checks its body. It does SOAK_WARMUP
(20 000) fetches first, rests SOAK_PAUSE (2) seconds, then the SOAK_FETCHES, then rests
again.

The server is this script (asyncio, on CPU 0), so that a drop is exactly what it says: for
one request in fifty (at random, seeded by SOAK_SEED) it drops the kept-alive connection
that request came on, in one of five ways, chosen uniformly:

  before       closes (FIN) after reading the request, before any byte of the answer
  before_rst   the same with a reset (SO_LINGER 0)
  mid_head     sends part of the answer's head, then closes
  mid_body     sends the head and part of the body (Content-Length or chunked), then closes
  after        sends the whole answer (keep-alive), then closes

It records every attempt it sees: the request id, its fate, and the request's position on
its connection (1: the connection's first request).

What counts as an error. The client promises (docs/client.md, "Connections") to send an
idempotent request once more, on a new connection, when it failed on a reused connection
before any byte of the answer came: such a drop must be invisible. A connection closed
after a whole answer must be too (the next request finds it closed, or retries). An
answer cut after some of it was sent cannot be retried safely, so the client must return
nil, err; nor does it retry a request dropped on a new connection. So a failed fetch is
expected when the server's last attempt at it was `mid_head` or `mid_body`, or `before`/
`before_rst` as the connection's first request; any other failed fetch is an error, as is
a fetch that returned a wrong body or status, and an expected failure whose message is not
`closed: ...` or `http: ...`.

RSS: the post-warm-up level is the median of the first 3 samples of the soak (under load,
after the warm-up); the soak's last 3 samples must stay within 10% of it, and RSS in the
rest after the soak must not be above it by more than 10%. Exits 1 on an error or when
RSS is not flat. LOOM_BUILD (build) names the build directory.
"""
import asyncio, collections, os, random, re, signal, socket, statistics, struct, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import build_dir, rss_kb  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
KINDS = ("before", "before_rst", "mid_head", "mid_body", "after")
DROP_ONE_IN = 50


def env_int(name, default):
    return int(os.environ.get(name, default))


def body_of(i):
    """The body for id i: keep in step with body_of in soak_client.lua."""
    return b"item %d\n" % i + b"x" * ((i * 7919) % 20000)


class DropServer(asyncio.Protocol):
    """HTTP/1.1 for GET /item?id=N (no request bodies), one request in fifty dropped."""

    rng = random.Random(0)
    attempts = collections.defaultdict(list)  # id -> [(fate, position on its connection)]
    drops = collections.Counter()              # (kind, first request of its connection?) -> n
    connections = 0
    requests = 0

    def connection_made(self, tr):
        DropServer.connections += 1
        self.tr, self.buf, self.n, self.dead = tr, b"", 0, False

    def data_received(self, data):
        self.buf += data
        while not self.dead:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            self.n += 1
            self.answer(head)

    def answer(self, head):
        DropServer.requests += 1
        target = head.split(b"\r\n", 1)[0].split(b" ")
        m = re.match(rb"/item\?id=(\d+)$", target[1]) if len(target) == 3 else None
        if not m:
            self.tr.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        i = int(m.group(1))
        body = body_of(i)
        if i % 3 == 0:  # one in three chunked, in two chunks
            half = len(body) // 2
            wire_body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:half], body[half:]) if p) + b"0\r\n\r\n"
            head_out = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        else:
            wire_body = body
            head_out = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
        rng = DropServer.rng
        fate = "ok"
        if rng.randrange(DROP_ONE_IN) == 0:
            fate = rng.choice(KINDS)
            DropServer.drops[(fate, self.n == 1)] += 1
        DropServer.attempts[i].append((fate, self.n))
        if fate == "ok":
            self.tr.write(head_out + wire_body)
            return
        self.dead = True
        if fate == "before":
            self.tr.close()
        elif fate == "before_rst":
            self.tr.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.tr.abort()
        elif fate == "mid_head":
            self.tr.write(head_out[:rng.randrange(1, len(head_out))])
            self.tr.close()
        elif fate == "mid_body":
            self.tr.write(head_out + wire_body[:rng.randrange(0, len(wire_body) - (5 if i % 3 == 0 else 0))])
            self.tr.close()
        else:  # after
            self.tr.write(head_out + wire_body)
            self.tr.close()


def expected_failure(fates):
    """Whether a fetch whose attempts the server saw as `fates` may fail."""
    if not fates:
        return False
    fate, pos = fates[-1]
    return fate in ("mid_head", "mid_body") or (fate in ("before", "before_rst") and pos == 1)


async def run(loom, kind):
    fetches, warmup = env_int("SOAK_FETCHES", 200000), env_int("SOAK_WARMUP", 20000)
    ntasks, per_host, pause = env_int("SOAK_TASKS", 50), env_int("SOAK_PER_HOST", 25), env_int("SOAK_PAUSE", 2)
    DropServer.rng.seed(env_int("SOAK_SEED", 1))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(DropServer, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print("soak_client: %s (%s build) against a drop server on port %d: %d + %d warm-up fetches, "
          "%d tasks, max_per_host %d, one request in %d dropped"
          % (loom, kind, port, fetches, warmup, ntasks, per_host, DROP_ONE_IN), flush=True)
    proc = await asyncio.create_subprocess_exec(
        "taskset", "-c", "1", loom, os.path.join(BENCH, "soak_client.lua"), str(port), str(warmup),
        str(fetches), str(ntasks), str(per_host), str(pause), stdout=asyncio.subprocess.PIPE,
        start_new_session=True)
    state = {"phase": "start", "samples": [], "fails": [], "bad": [], "done": {}}

    async def sample():
        t0 = time.monotonic()
        while True:
            kb = rss_kb(proc.pid)
            if kb is not None:
                state["samples"].append((time.monotonic() - t0, kb, state["phase"]))
            await asyncio.sleep(1)

    sampler = asyncio.create_task(sample())
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=600)
            if not line:
                break
            word, _, rest = line.decode().rstrip("\n").partition(" ")
            if word == "phase":
                state["phase"] = rest
                if rest in ("soak", "pause", "rest"):  # a sample at each turn, too
                    kb = rss_kb(proc.pid)
                    if kb is not None:
                        state["samples"].append((None, kb, "start of " + rest))
            elif word == "fail":
                i, _, err = rest.partition(" ")
                state["fails"].append((int(i), err))
            elif word == "bad":
                state["bad"].append(rest)
            elif word == "done":
                f = rest.split()
                state["done"][f[0]] = dict(ok=int(f[1]), failed=int(f[2]), bad=int(f[3]), secs=float(f[4]),
                                           opened=int(f[5]), reused=int(f[6]))
        status = await proc.wait()
    finally:
        sampler.cancel()
        if proc.returncode is None:
            os.killpg(proc.pid, 9)
            await proc.wait()
        server.close()
    return state, status


def report(state, status):
    mb = lambda kb: kb / 1024  # noqa: E731
    done = state["done"]
    soak, warm = done.get("soak"), done.get("warm-up")
    errors = 0
    if status != 0 or not soak or not warm:
        print("the client exited with status %s before finishing" % status)
        errors += 1
    unexpected, kinds_seen = [], collections.Counter()
    for i, err in state["fails"]:
        fates = DropServer.attempts.get(i, [])
        if expected_failure(fates) and re.match(r"(closed|http): ", err):
            kinds_seen[fates[-1][0] + (" (first request of its connection)" if fates[-1][1] == 1 else "")] += 1
        else:
            unexpected.append((i, err, fates))
    # a fetch that succeeded although its last attempt was cut would have given a wrong body
    errors += len(unexpected) + len(state["bad"])
    drops = DropServer.drops
    total = lambda k: drops[(k, True)] + drops[(k, False)]  # noqa: E731
    print()
    if warm and soak:
        print("fetches: %d in the soak (%.1f s, %.0f/s) + %d warm-up; of all, ok %d, failed %d, wrong body %d"
              % (soak["ok"] + soak["failed"] + soak["bad"], soak["secs"],
                 (soak["ok"] + soak["failed"] + soak["bad"]) / soak["secs"], warm["ok"] + warm["failed"] + warm["bad"],
                 warm["ok"] + soak["ok"], warm["failed"] + soak["failed"], warm["bad"] + soak["bad"]))
        print("session (warm-up included): %d connections opened, %d requests on a reused one; the server saw %d connections, "
              "%d requests (retries included)" % (soak["opened"], soak["reused"], DropServer.connections,
                                                  DropServer.requests))
    print("server drops: %d (%s)" % (sum(drops.values()), ", ".join("%s %d" % (k, total(k)) for k in KINDS)))
    print("  invisible to the client by contract: %d before the answer on a kept-alive connection (retried), "
          "%d after a whole answer" % (drops[("before", False)] + drops[("before_rst", False)], total("after")))
    print("expected failures: %d (%s)" % (sum(kinds_seen.values()),
                                          ", ".join("%s %d" % kv for kv in sorted(kinds_seen.items()))))
    msgs = collections.Counter(re.sub(r"\(.*\)|\d+", "N", e) for _, e in state["fails"])
    if msgs:
        print("  their messages: " + "; ".join("%s x%d" % kv for kv in msgs.most_common(4)))
    for i, err, fates in unexpected[:10]:
        print("  unexpected failure: id %d: %s (server saw: %s)" % (i, err, fates or "nothing"))
    for b in state["bad"][:10]:
        print("  wrong answer: id, status, bytes: %s" % b)

    soak_kbs = [kb for t, kb, p in state["samples"] if p == "soak" and t is not None]
    rest_kbs = [kb for t, kb, p in state["samples"] if p == "rest"]
    pause_kbs = [kb for t, kb, p in state["samples"] if p == "pause"]
    flat = False
    print()
    if len(soak_kbs) >= 4:
        post = statistics.median(soak_kbs[:3])
        end = statistics.median(soak_kbs[-3:])
        after = rest_kbs[-1] if rest_kbs else soak_kbs[-1]
        q = statistics.quantiles(soak_kbs, n=10)
        print("RSS during the soak, %d samples, 1 s apart: min %.1f, p10 %.1f, median %.1f, p90 %.1f, max %.1f MB"
              % (len(soak_kbs), mb(min(soak_kbs)), mb(q[0]), mb(statistics.median(soak_kbs)), mb(q[-1]),
                 mb(max(soak_kbs))))
        print("  every 5th sample (MB): " + " ".join("%.1f" % mb(k) for k in soak_kbs[::5]))
        if pause_kbs:
            print("  idle after the warm-up %.1f MB; idle after the soak %.1f MB" % (mb(pause_kbs[-1]), mb(after)))
        flat = abs(end - post) <= 0.10 * post and after <= 1.10 * post
        print("RSS flat: %s (within 10%% of post-warm-up %.1f MB: %.1f MB over the soak's last 3 s, %+.1f%%; "
              "%.1f MB idle after it)" % ("yes" if flat else "no", mb(post), mb(end), 100 * (end - post) / post,
                                          mb(after)))
    else:
        print("RSS flat: unknown (only %d samples during the soak: more fetches, SOAK_FETCHES)" % len(soak_kbs))
    print("errors: %d (failures the client should have hidden or that no drop explains, wrong bodies%s)"
          % (errors, "" if status == 0 else ", the client's exit"))
    return 0 if flat and errors == 0 else 1


def main():
    # children are stopped by the finally blocks, on SIGTERM and on SIGINT even when the
    # shell started us with SIGINT ignored (in the background)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    loom, kind = build_dir()
    os.sched_setaffinity(0, {0})
    state, status = asyncio.run(run(loom, kind))
    return report(state, status)


if __name__ == "__main__":
    sys.exit(main())
