#!/usr/bin/env bash
# smoke/webapp_browser: examples/webapp in headless Chromium (spec/support/webapp_browser.js,
# driven by playwright-core): the real login form, uploads through an <input type=file>
# form and through fetch + FormData, the list, the HttpOnly session cookie, logout; the
# login page comes coded (br or gzip, as Chromium asks) with Vary: Accept-Encoding.
#
# Needs Debian's chromium (scripts/deps.sh installs it) and node; playwright-core is
# installed from npm into $LOOM_BUILD/npm on first use. A test that cannot start its peer
# fails and says why: without chromium, node or playwright-core this test FAILS (it is
# never skipped, so a missing browser cannot pass for a working app).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PLAYWRIGHT=playwright-core@1.65.1 # the version smoke/chat_browser installs: one npm dir serves both
[[ -x /usr/bin/chromium ]] || fail "no /usr/bin/chromium (scripts/deps.sh installs Debian's chromium)"
command -v node >/dev/null 2>&1 || fail "no node (apt-get install nodejs)"
npm_dir=$LOOM_BUILD/npm
# smoke/chat_browser and smoke/webapp_browser share this npm dir and ctest may run them at
# once: the first installs while the other waits on the lock, and the stamp is written only
# after a whole install (a half-done one, killed by the timeout, is never taken for done).
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
exec 9>&- # the lock: not held by the server and browser started below

mkdir "$SMOKE_TMP/data" "$SMOKE_TMP/files"
port=$(free_port)
WEBAPP_DATA=$SMOKE_TMP/data start_server "$LOOM" "$LOOM_SRC/examples/webapp/app.lua" "$port"
wait_port "$port"
timeout 50 node "$LOOM_SRC/spec/support/webapp_browser.js" "http://127.0.0.1:$port/" "$npm_dir" \
    "$SMOKE_TMP/chromium-profile" "$SMOKE_TMP/files" || fail "the webapp did not work in Chromium"
n=$(ls "$SMOKE_TMP/data" | wc -l)
((n == 3)) || fail "the data directory holds $n files after the browser's three uploads"
stop_server
[[ $LOOM_SERVER_STATUS == 0 ]] || fail "the server exited with $LOOM_SERVER_STATUS on SIGTERM"
echo "ok: webapp_browser"
