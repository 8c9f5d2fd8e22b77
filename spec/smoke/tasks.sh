#!/usr/bin/env bash
# smoke/tasks: examples/tasks.lua (spawn, gather, timeout, queue) runs under the host and
# prints what it should.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

out=$SMOKE_TMP/tasks.out
status=0
timeout 20 "$LOOM" "$LOOM_SRC/examples/tasks.lua" >"$out" 2>"$SMOKE_TMP/tasks.err" || status=$?
if ((status != 0)); then
    cat "$out" "$SMOKE_TMP/tasks.err" >&2
    fail "examples/tasks.lua exited with status $status"
fi

expected="gathered: alpha (150 ms), beta (50 ms), gamma (100 ms)
gather took under 0.3 s: true
timeout: nil, timeout
timeout passes results: quick (10 ms)
joined: spawned (20 ms)
cancelled: false, cancelled
queue: consumers summed 55 (expected 55)"

if [[ $(cat "$out") != "$expected" ]]; then
    diff <(echo "$expected") "$out" >&2 || true
    fail "examples/tasks.lua printed something else"
fi
[[ -s $SMOKE_TMP/tasks.err ]] && { cat "$SMOKE_TMP/tasks.err" >&2; fail "stderr not empty"; }
echo "ok: examples/tasks.lua"
