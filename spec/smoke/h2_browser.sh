#!/usr/bin/env bash
# smoke/h2_browser: headless Chromium loads a page, its script and an SSE stream from loom over
# HTTPS, where ALPN offers h2 by default (spec/support/h2_browser_app.lua, driven by
# spec/support/h2_browser.js): the browser reports h2 (nextHopProtocol) and the server saw
# req.version "2" for each request. Needs Debian's chromium and node; playwright-core comes
# from npm into $LOOM_BUILD/npm as for smoke/webapp_browser. Never skipped: without them it
# FAILS and says why.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PLAYWRIGHT=playwright-core@1.65.1 # the version smoke/webapp_browser installs: one npm dir
[[ -x /usr/bin/chromium ]] || fail "no /usr/bin/chromium (scripts/deps.sh installs Debian's chromium)"
command -v node >/dev/null 2>&1 || fail "no node (apt-get install nodejs)"
npm_dir=$LOOM_BUILD/npm
mkdir -p "$npm_dir"
exec 9>"$npm_dir/.lock"
flock -w 120 9 || fail "another test held $npm_dir/.lock (an npm install) for 120 s"
if [[ ! -f $npm_dir/.installed-$PLAYWRIGHT ]]; then
    command -v npm >/dev/null 2>&1 || fail "no npm to install $PLAYWRIGHT"
    if ! timeout 40 npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error \
        "$PLAYWRIGHT" >"$SMOKE_TMP/npm.log" 2>&1; then
        fail "npm could not install $PLAYWRIGHT (offline?): $(grep -m 1 -i error "$SMOKE_TMP/npm.log" || tail -n 1 "$SMOKE_TMP/npm.log")"
    fi
    touch "$npm_dir/.installed-$PLAYWRIGHT"
fi
exec 9>&-

bash "$LOOM_SRC/spec/support/make_certs.sh" "$SMOKE_TMP/certs" >/dev/null 2>&1 || fail "make_certs.sh failed"
port=$(free_port)
start_server "$LOOM" "$LOOM_SRC/spec/support/h2_browser_app.lua" "$port" \
    "$SMOKE_TMP/certs/a.pem" "$SMOKE_TMP/certs/a.key"
wait_port "$port"
timeout 50 node "$LOOM_SRC/spec/support/h2_browser.js" "https://127.0.0.1:$port/" "$npm_dir" \
    "$SMOKE_TMP/chromium-profile" || fail "the page did not load over h2 in Chromium"
stop_server
[[ $LOOM_SERVER_STATUS == 0 ]] || fail "the server exited with $LOOM_SERVER_STATUS on SIGTERM"
echo "ok: h2_browser"
