#!/usr/bin/env bash
# bench/ws_publish/run.sh: app:publish against Node's ws broadcasting in a loop. CONNS
# subscribers (10000) on loopback from one client process, COUNT messages (100) of SIZE
# bytes (64); prints messages delivered per second for each (from the publish request to
# the last byte at the client). Node's ws is installed into $LOOM_BUILD/npm like the specs
# do. Server on CPU 0, client on CPU 1 when taskset exists. One round: a rough figure.
#
#   bench/ws_publish/run.sh            (LOOM_BUILD=build CONNS=10000 COUNT=100 SIZE=64)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${LOOM_BUILD:-$root/build}
conns=${CONNS:-10000} count=${COUNT:-100} size=${SIZE:-64}
ulimit -n $((conns * 2 + 1000)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
npm_dir=$build/npm
[[ -f $npm_dir/node_modules/ws/package.json ]] ||
    npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error ws@8.18.3 >/dev/null
pin() { if command -v taskset >/dev/null; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; }
one() {
    local name=$1 port=$2; shift 2
    # taskset execs the server, so $! is the server's own pid (a function run in the
    # background would be a subshell, and killing it would leave the server running)
    if command -v taskset >/dev/null; then taskset -c 0 "$@" >/dev/null 2>&1 & else "$@" >/dev/null 2>&1 & fi
    local pid=$!
    wait_port "$port"
    printf '%-6s ' "$name"
    pin 1 node "$here/client.js" "$port" "$conns" "$count" "$size" || true
    kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
}
one loom 19101 "$build/loom" "$here/loom_server.lua" 19101
one node 19102 node "$here/node_server.js" "$npm_dir" 19102
