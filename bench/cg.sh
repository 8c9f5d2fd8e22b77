#!/bin/bash
# Callgrind instructions per hello-world request (issue 12's figure).
# Usage: bench/cg.sh [BUILD_DIR] [SCRIPT] [PORT] [PATH]
# PATH (default /) is what wrk asks for, e.g. /users/42?page=3 with bench/profiles_loom.lua.
# Starts the server under callgrind, warms up with wrk for 3 s, zeroes the counters,
# loads it with `wrk -t1 -c10 -d5s`, dumps, and divides the
# instructions by the requests wrk counted. The work done once a second (Date, timers)
# is spread over fewer requests when valgrind runs slower: runs differ by ~150.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build-rel}
script=${2:-$here/bench/hello.lua}
port=${3:-18185}
urlpath=${4:-/}
out=$(mktemp -d /tmp/cg.XXXXXX)
valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" \
  "$build/loom" "$script" "$port" >"$out/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 0.1
done
wrk -t1 -c10 -d3s "http://127.0.0.1:$port$urlpath" >/dev/null
callgrind_control -z $pid >/dev/null 2>&1
wrk -t1 -c10 -d5s "http://127.0.0.1:$port$urlpath" >"$out/wrk.txt"
callgrind_control -d $pid >/dev/null 2>&1
kill $pid; wait $pid 2>/dev/null || true
trap - EXIT
reqs=$(awk '/requests in/ {print $1}' "$out/wrk.txt")
f=$out/cg.out.1
ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
echo "requests $reqs Ir $ir per-request $((ir / reqs)) file $f"
