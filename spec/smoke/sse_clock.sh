#!/usr/bin/env bash
# smoke/sse_clock: examples/sse_clock.lua streams text/event-stream, one event a second,
# serves the page that listens to it, and ends the stream's handler once the client goes
# (its access-log line is written when the handler ends).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

port=$(free_port)
start_server "$LOOM" "$LOOM_SRC/examples/sse_clock.lua" "$port"
wait_port "$port"
base=http://127.0.0.1:$port

curl -fsS "$base/" | grep -q 'new EventSource("/events")' || fail "GET / is not the clock page"

# 3.5 s of the stream: the first event at once, then one a second (4 events; at least 2 on
# a loaded machine, never more than one a second)
curl -s -N --max-time 3.5 -D "$SMOKE_TMP/head" "$base/events" >"$SMOKE_TMP/events" || true # times out
tr -d '\r' <"$SMOKE_TMP/head" | grep -qi '^content-type: text/event-stream$' || fail "not text/event-stream"
tr -d '\r' <"$SMOKE_TMP/head" | grep -qi '^transfer-encoding: chunked$' || fail "not chunked"
n=$(grep -c '^data: [0-9-]*T[0-9:]*Z$' "$SMOKE_TMP/events" || true)
((n >= 2 && n <= 5)) || fail "$n events in 3.5 s: $(cat "$SMOKE_TMP/events")"
grep -q '^id: 2$' "$SMOKE_TMP/events" || fail "events are not numbered"
grep -q '^retry: 3000$' "$SMOKE_TMP/events" || fail "no retry field"

# the client has gone: within a few ticks a write fails and the handler returns
for _ in $(seq 200); do
    grep -q '"GET /events HTTP/1.1" 200' "$LOOM_SERVER_LOG" && break
    sleep 0.05
done
grep -q '"GET /events HTTP/1.1" 200' "$LOOM_SERVER_LOG" || fail "the stream's handler still runs 10 s after the client left"

# Last-Event-ID: a reconnecting browser carries on from its last id
{ curl -s -N --max-time 10 -H 'Last-Event-ID: 41' "$base/events" || true; } | grep -q -m1 '^id: 42$' ||
    fail "Last-Event-ID 41 did not continue at 42"
stop_server
[[ $LOOM_SERVER_STATUS == 0 ]] || fail "exit status $LOOM_SERVER_STATUS after SIGTERM"
echo "ok: sse_clock"
