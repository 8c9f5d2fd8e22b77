#!/usr/bin/env bash
# smoke/fault_fds: the server under `ulimit -n 256`, flooded with 1000 connections by
# spec/support/fd_flood.py (see there for what it checks: it serves what it can, turns the
# rest away without hanging them, does not spin at its limit, keeps serving what it holds,
# recovers once the clients close); then it must still stop cleanly on SIGTERM (under the
# sanitizers: without a leak).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

port=$(free_port)
start_server bash -c 'ulimit -n 256 && exec "$0" "$@"' "$LOOM" "$LOOM_SRC/spec/fixtures/fd_limit_server.lua" "$port"
wait_port "$port"
[[ $(awk '/^Max open files/ { print $4 }' "/proc/$LOOM_SERVER_PID/limits") == 256 ]] ||
    fail "the server does not run under ulimit -n 256"
status=0
python3 "$LOOM_SRC/spec/support/fd_flood.py" "$port" "$LOOM_SERVER_PID" || status=$?
((status == 77)) && exit 77
((status == 0)) || fail "fd_flood failed"
kill -0 "$LOOM_SERVER_PID" 2>/dev/null || fail "the server died"
stop_server
[[ $LOOM_SERVER_STATUS == 0 ]] || fail "exit status $LOOM_SERVER_STATUS after SIGTERM"
echo "ok: fault_fds"
