#!/usr/bin/env bash
# smoke/chat_browser: the chat example in headless Chromium. Two pages of
# examples/chat/index.html (as ann and as bob) each see the other's messages
# (spec/support/chat_browser.js, driven by playwright-core).
#
# Needs Debian's chromium (scripts/deps.sh installs it) and node; playwright-core is
# installed from npm into $LOOM_BUILD/npm on first use. Without them the test exits 77,
# which ctest reports as skipped (SKIP_RETURN_CODE), never as passed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PLAYWRIGHT=playwright-core@1.65.1
skip() {
    echo "SKIP [chat_browser]: $*"
    exit 77
}
[[ -x /usr/bin/chromium ]] || skip "no /usr/bin/chromium (scripts/deps.sh installs Debian's chromium)"
command -v node >/dev/null 2>&1 || skip "no node"
npm_dir=$LOOM_BUILD/npm
# smoke/chat_browser and smoke/webapp_browser share this npm dir and ctest may run them at
# once: the first installs while the other waits on the lock, and the stamp is written only
# after a whole install (a half-done one, killed by the timeout, is never taken for done).
mkdir -p "$npm_dir"
exec 9>"$npm_dir/.lock"
flock -w 120 9 || skip "another test held $npm_dir/.lock (an npm install) for 120 s"
if [[ ! -f $npm_dir/.installed-$PLAYWRIGHT ]]; then
    command -v npm >/dev/null 2>&1 || skip "no npm to install $PLAYWRIGHT"
    if ! timeout 40 npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error \
        "$PLAYWRIGHT" >"$SMOKE_TMP/npm.log" 2>&1; then
        skip "npm could not install $PLAYWRIGHT (offline?): $(grep -m 1 -i error "$SMOKE_TMP/npm.log" || tail -n 1 "$SMOKE_TMP/npm.log")"
    fi
    touch "$npm_dir/.installed-$PLAYWRIGHT"
fi
exec 9>&- # the lock: not held by the server and browser started below

port=$(free_port)
start_server "$LOOM" "$LOOM_SRC/examples/chat/server.lua" "$port"
wait_port "$port"
timeout 45 node "$LOOM_SRC/spec/support/chat_browser.js" "http://127.0.0.1:$port/" "$npm_dir" \
    "$SMOKE_TMP/chromium-profile" || fail "the chat page did not relay messages in Chromium"
stop_server
echo "ok: chat_browser"
