"""spec/support/fd_flood.py PORT PID: floods a loom server that runs under `ulimit -n 256`
(spec/smoke/fault_fds.sh) with 1000 connections, from this process's higher limit, and
checks that it copes:

  1. of 1000 connections opened at once, each sending GET / and keeping alive, some are
     answered (as many as the server has descriptors for) and the others are closed by
     the server at once (libuv accepts and closes what it has no descriptor for): none is
     left hanging;
  2. at its limit (the server's descriptor count says so), the server does not spin: its
     CPU time over a second, while new connections keep arriving and being turned away,
     stays under a quarter of that second;
  3. it keeps serving what it holds: each answered connection gets a second answer;
  4. once the clients close, it recovers: a new request is answered, then 200 at once.

Exits 0, 1 with the reason on stderr, or 77 (skip) when this process cannot have 1200
descriptors.
"""
import asyncio
import os
import resource
import sys
import time

CLIENTS = 1000
SERVER_LIMIT = 256
REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\n"


def fail(msg):
    print("fd_flood: " + msg, file=sys.stderr)
    sys.exit(1)


def cpu_seconds(pid):
    """utime + stime of the process, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


async def ask(port, conn=None, timeout=5):
    """One GET / on conn (a new connection if None). Returns the connection when it was
    answered 200 (kept alive), None when the server closed or reset it. Raises on a hang."""
    try:
        if conn is None:
            conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        reader, writer = conn
        writer.write(REQUEST)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        if not head.startswith(ANSWER) or b"Content-Length: 2\r\n" not in head:
            fail("unexpected answer: %r" % head[:200])
        if await asyncio.wait_for(reader.readexactly(2), timeout) != b"ok":
            fail("unexpected body")
        return conn
    except (ConnectionError, asyncio.IncompleteReadError, OSError):
        if conn is not None:
            conn[1].close()
        return None
    except asyncio.TimeoutError:
        fail("a connection hung: neither answered nor closed within %ds" % timeout)


async def turned_away(port, stop, counts):
    """New connections, one after another, until stop is set; each must be settled."""
    while not stop.is_set():
        conn = await ask(port)
        counts["served" if conn else "closed"] += 1
        if conn:
            conn[1].close()
        await asyncio.sleep(0.005)


async def main(port, pid):
    # 1. the flood
    t0 = time.monotonic()
    results = await asyncio.gather(*(ask(port) for _ in range(CLIENTS)))
    held = [c for c in results if c]
    took = time.monotonic() - t0
    print("flood: %d answered, %d closed by the server, in %.2fs"
          % (len(held), CLIENTS - len(held), took))
    if not 100 <= len(held) < SERVER_LIMIT:
        fail("%d connections answered (expected 100 to %d)" % (len(held), SERVER_LIMIT - 1))

    # 2. at the limit, and quiet
    fds = open_fds(pid)
    if fds < SERVER_LIMIT - 4:
        fail("the server holds %d descriptors: not at its limit of %d" % (fds, SERVER_LIMIT))
    stop, counts = asyncio.Event(), {"served": 0, "closed": 0}
    knocking = asyncio.ensure_future(turned_away(port, stop, counts))
    await asyncio.sleep(0.2)  # the knocking is under way
    cpu0, w0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(1.0)  # the measuring window
    cpu, window = cpu_seconds(pid) - cpu0, time.monotonic() - w0
    stop.set()
    await knocking
    print("at the limit (%d descriptors): %.2fs of CPU in %.2fs; %d new connections turned "
          "away, %d served" % (fds, cpu, window, counts["closed"], counts["served"]))
    if counts["closed"] < 20:
        fail("only %d new connections were tried while saturated" % counts["closed"])
    if cpu > 0.25 * window:
        fail("the server spun: %.2fs of CPU in %.2fs at its descriptor limit" % (cpu, window))

    # 3. what it holds is still served
    again = await asyncio.gather(*(ask(port, c) for c in held))
    if not all(again):
        fail("%d of %d held connections were not answered again"
              % (sum(1 for c in again if not c), len(held)))

    # 4. recovery
    for _, writer in held:
        writer.close()
    deadline = time.monotonic() + 10
    while True:
        conn = await ask(port)
        if conn:
            conn[1].close()
            break
        if time.monotonic() > deadline:
            fail("no request answered within 10s of the clients closing")
        await asyncio.sleep(0.05)
    results = await asyncio.gather(*(ask(port) for _ in range(200)))
    served = sum(1 for c in results if c)
    for c in results:
        if c:
            c[1].close()
    if served != 200:
        fail("after recovery %d of 200 connections were answered" % served)
    print("recovered: 200 of 200 answered")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        fail("the server died")


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if want < CLIENTS + 200:
        print("fd_flood: the hard descriptor limit (%d) is too low" % hard, file=sys.stderr)
        sys.exit(77)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
