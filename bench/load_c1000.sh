#!/usr/bin/env bash
# wrk -c 1000 against the hello world for SECS (30) seconds: errors, req/s, and RSS before,
# at the end and after the connections close. Not a test: prints figures.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${LOAD_SECS:-30}
PORT=18187
ulimit -n 4096 2>/dev/null || true
./build/loom bench/hello.lua "$PORT" >/dev/null 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
python3 - "$PORT" <<'PY'
import socket, sys, time
end = time.time() + 10
while time.time() < end:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close(); break
    except OSError:
        time.sleep(0.05)
PY
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
idle=$(rss)
out=$(wrk -t2 -c1000 -d"${SECS}s" "http://127.0.0.1:$PORT/")
loaded=$(rss)
sleep 2
after=$(rss)
echo "$out" | grep -E "Requests/sec|Socket errors|Non-2xx" || true
errors=$(echo "$out" | grep -cE "Socket errors|Non-2xx" || true)
echo "wrk -c1000 ${SECS}s: RSS idle ${idle} KB, at the end ${loaded} KB, 2 s after ${after} KB; error lines: ${errors}"
