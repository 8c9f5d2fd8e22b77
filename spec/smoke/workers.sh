#!/usr/bin/env bash
# loom --workers 2: both workers answer on one port (SO_REUSEPORT), a killed worker is
# started again, and SIGTERM to the supervisor stops everything gracefully.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

port=$(free_port)
script="$SMOKE_TMP/workers.lua"
cat >"$script" <<'LUA'
local app = loom.app()
app:get("/", function() return "worker " .. os.getenv("LOOM_WORKER") end)
app:run{ host = "127.0.0.1", port = tonumber(arg[1]), access_log = false }
LUA

start_server "$LOOM" --workers 2 "$script" "$port"
sup=$LOOM_SERVER_PID
wait_port "$port"

children() { pgrep -P "$sup" | sort; }

# Both workers serve: new connections spread over them.
seen=""
for ((i = 0; i < 200; i++)); do
    seen=$(printf '%s\n%s\n' "$seen" "$(curl -fsS "http://127.0.0.1:$port/")" | sort -u | grep . || true)
    [[ $(wc -l <<<"$seen") -ge 2 ]] && break
done
[[ $seen == *"worker 1"* && $seen == *"worker 2"* ]] || fail "expected answers from both workers, got: $seen"

# A worker that dies is started again.
before=$(children)
[[ $(wc -l <<<"$before") -eq 2 ]] || fail "expected 2 workers, found: $before"
victim=$(head -n1 <<<"$before")
kill -KILL "$victim"
for ((i = 0; i < 100; i++)); do
    now=$(children)
    if [[ $(wc -l <<<"$now") -eq 2 ]] && ! grep -qx "$victim" <<<"$now"; then break; fi
    sleep 0.1
done
now=$(children)
[[ $(wc -l <<<"$now") -eq 2 ]] && ! grep -qx "$victim" <<<"$now" || fail "worker $victim was not replaced (workers: $now)"
wait_port "$port"
for ((i = 0; i < 10; i++)); do curl -fsS "http://127.0.0.1:$port/" >/dev/null || fail "request $i after the restart failed"; done
grep -q "exited" "$LOOM_SERVER_LOG" || fail "the supervisor did not report the dead worker"

# SIGTERM stops the supervisor and its workers.
kids=$(children)
stop_server "$sup" TERM
[[ $LOOM_SERVER_STATUS -eq 0 ]] || fail "supervisor exited with status $LOOM_SERVER_STATUS"
for k in $kids; do
    for ((i = 0; i < 50; i++)); do kill -0 "$k" 2>/dev/null || break; sleep 0.1; done
    ! kill -0 "$k" 2>/dev/null || fail "worker $k still running after the supervisor stopped"
done
echo "workers: ok so far"

# Workers do not outlive a supervisor that was killed outright.
start_server "$LOOM" --workers 2 "$script" "$port"
sup=$LOOM_SERVER_PID
wait_port "$port"
for ((i = 0; i < 50; i++)); do [[ $(children | wc -l) -eq 2 ]] && break; sleep 0.1; done
kids=$(children)
stop_server "$sup" KILL
for k in $kids; do
    for ((i = 0; i < 50; i++)); do
        state=$(ps -o stat= -p "$k" 2>/dev/null || true)
        [[ -z $state || $state == Z* ]] && break
        sleep 0.1
    done
    [[ -z $state || $state == Z* ]] || fail "worker $k still running after its supervisor was killed"
done
echo "workers follow their supervisor: ok"
