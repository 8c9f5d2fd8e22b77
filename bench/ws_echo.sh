#!/usr/bin/env bash
# bench/ws_echo.sh: websocket echo round trips per second, loom (bench/ws_echo.lua) beside
# Node's ws package (bench/peers/node_ws_echo.js), in one invocation, on loopback. Each
# server is pinned to CPU 0 and the load (bench/ws_client.js: WS_CONNS connections, each
# sending a WS_SIZE-byte message and waiting for its echo, over and over) to CPU 1; rounds
# are interleaved and the medians printed, with the server's CPU time per round trip.
# ws (npm) is installed under build/npm on first use. Run by bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
CONNS=${WS_CONNS:-50}
SIZE=${WS_SIZE:-64}
WS_PACKAGE=ws@8.23.0
npm_dir=$PWD/build/npm

[[ -x build/loom ]] || { echo "ws_echo: build/loom is missing (make build)" >&2; exit 1; }
if [[ ! -f $npm_dir/node_modules/ws/package.json ]]; then
    npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error "$WS_PACKAGE" >/dev/null
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "ws_echo: nothing listens on $1" >&2
    return 1
}
cpu_ticks() { # utime + stime of a process, in clock ticks
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

server_cmd() { # name port
    case $1 in
        loom) echo build/loom bench/ws_echo.lua "$2" ;;
        node) echo node bench/peers/node_ws_echo.js "$2" "$npm_dir" ;;
    esac
}

results=$(mktemp)
trap 'rm -f "$results"' EXIT
hz=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
    for name in loom node; do
        port=$(free_port)
        taskset -c 0 $(server_cmd "$name" "$port") >/dev/null 2>&1 &
        pid=$!
        wait_port "$port"
        # warm up (JIT, pooled coroutines), then measure
        taskset -c 1 node bench/ws_client.js "ws://127.0.0.1:$port/" "$CONNS" 1 "$SIZE" "$npm_dir" >/dev/null
        t0=$(cpu_ticks "$pid")
        out=$(taskset -c 1 node bench/ws_client.js "ws://127.0.0.1:$port/" "$CONNS" "$SECS" "$SIZE" "$npm_dir")
        t1=$(cpu_ticks "$pid")
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "$name $round $out $(( t1 - t0 ))" >>"$results"
    done
done

python3 - "$results" "$hz" "$SECS" "$CONNS" "$SIZE" <<'PY'
import json, statistics, sys
path, hz, secs, conns, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
runs = {}
for line in open(path):
    name, rnd, js, ticks = line.split(" ", 3)
    r = json.loads(js)
    cpu_us = int(ticks) / hz * 1e6 / (r["trips_per_s"] * secs) if r["trips_per_s"] else 0
    runs.setdefault(name, []).append((r["trips_per_s"], r["p99_ms"], cpu_us))
print(f"websocket echo, {conns} connections, {size}-byte messages, medians of {len(runs['loom'])} rounds")
print("| server | round trips/s | p99 ms | server CPU us/round trip |")
print("| --- | --- | --- | --- |")
med = {}
for name, label in (("loom", "loom"), ("node", "Node ws")):
    t, p, c = (statistics.median(x[i] for x in runs[name]) for i in range(3))
    med[name] = t
    print(f"| {label} | {t:,.0f} | {p:.2f} | {c:.1f} |")
print(f"loom / Node ws: {med['loom'] / med['node']:.2f}x the round trips")
PY
