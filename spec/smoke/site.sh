#!/usr/bin/env bash
# smoke/site: examples/site/server.lua serves its public/ directory (index.html for /, each
# file with its content type, 304 for a file the client has) and the dynamic /api/time,
# and not the Lua file beside public/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

port=$(free_port)
start_server "$LOOM" "$LOOM_SRC/examples/site/server.lua" "$port"
wait_port "$port"
base=http://127.0.0.1:$port

curl -fsS "$base/" | grep -q '<script src="app.js">' || fail "GET / is not index.html"
cmp -s <(curl -fsS "$base/style.css") "$LOOM_SRC/examples/site/public/style.css" || fail "style.css differs"
for f in "index.html text/html; charset=utf-8" "style.css text/css; charset=utf-8" \
    "app.js text/javascript; charset=utf-8" "logo.svg image/svg+xml"; do
    name=${f%% *} want=${f#* }
    got=$(curl -fsS -o /dev/null -w '%{content_type}' "$base/$name")
    [[ $got == "$want" ]] || fail "$name served as '$got', not '$want'"
done

etag=$(curl -fsS -D - -o /dev/null "$base/app.js" | tr -d '\r' | sed -n 's/^[Ee][Tt]ag: //p')
[[ -n $etag ]] || fail "no ETag on app.js"
[[ $(curl -sS -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$base/app.js") == 304 ]] ||
    fail "If-None-Match $etag did not get 304"

/usr/bin/python3 - "$(curl -fsS "$base/api/time")" <<'PY' || fail "GET /api/time"
import json, sys, time
t = json.loads(sys.argv[1])
assert abs(t["unix"] - time.time()) < 60 and t["utc"].endswith("Z"), t
PY
[[ $(curl -sS -o /dev/null -w '%{http_code}' "$base/server.lua") == 404 ]] || fail "the Lua source is served"
[[ $(curl -sS -o /dev/null -w '%{http_code}' "$base/../server.lua") == 404 ]] || fail "../server.lua is served"
[[ $(curl -sS --path-as-is -o /dev/null -w '%{http_code}' "$base/%2e%2e/server.lua") == 404 ]] ||
    fail "%2e%2e/server.lua is served"
stop_server
[[ $LOOM_SERVER_STATUS == 0 ]] || fail "exit status $LOOM_SERVER_STATUS after SIGTERM"
echo "ok: site"
