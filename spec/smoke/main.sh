#!/usr/bin/env bash
# smoke/main: examples/main.lua (what `make run` starts) serves every example under its
# prefix and an index page that links them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

port=$(free_port)
start_server "$LOOM" "$LOOM_SRC/examples/main.lua" "$port"
wait_port "$port"
base=http://127.0.0.1:$port
code() { curl -sS -o /dev/null -w '%{http_code}' "$@"; }

index=$(curl -fsS "$base/")
for link in /hello /api/todos /site/ /clock; do
    grep -q "href=\"$link\"" <<<"$index" || fail "the index does not link $link"
    [[ $(code "$base$link") == 200 ]] || fail "GET $link is not 200"
done
[[ $(curl -fsS "$base/hello") == "Hello, world!" ]] || fail "GET /hello"
[[ $(code "$base/site") == 301 ]] || fail "GET /site does not redirect to /site/"
curl -fsS "$base/site/" | grep -q '<script src="app.js">' || fail "GET /site/ is not the site"
curl -fsS "$base/site/api/time" | grep -q '"utc"' || fail "GET /site/api/time"
curl -fsS "$base/clock" | grep -q 'new EventSource("/clock/events")' || fail "the clock page"
# the first event comes at once: grep stops at it (curl then ends on its next write, or at
# --max-time, a guard for a loaded machine)
{ curl -s -N --max-time 10 "$base/clock/events" || true; } | grep -q -m1 '^data: ' ||
    fail "no event from /clock/events"
PORT=$port PREFIX=/api timeout 30 /usr/bin/python3 "$LOOM_SRC/spec/fixtures/todo_client.py" ||
    fail "the todo API under /api"
[[ $(code "$base/todos") == 404 ]] || fail "/todos is served outside its prefix"
stop_server
[[ $LOOM_SERVER_STATUS == 0 ]] || fail "exit status $LOOM_SERVER_STATUS after SIGTERM"
echo "ok: main"
