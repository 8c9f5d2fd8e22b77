#!/usr/bin/env bash
# smoke/hello: examples/hello.lua serves "Hello, world!" on the port from arg[1], or from
# $PORT, on 127.0.0.1 by default, says where it listens, and stops cleanly on SIGTERM.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

port=$(free_port)
start_server "$LOOM" "$LOOM_SRC/examples/hello.lua" "$port"
wait_port "$port"
[[ $(curl -sS "http://127.0.0.1:$port/") == "Hello, world!" ]] || fail "GET / body"
[[ $(curl -sS -o /dev/null -w '%{content_type}' "http://127.0.0.1:$port/") == "text/plain; charset=utf-8" ]] ||
    fail "GET / content type"
[[ $(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/other") == 404 ]] || fail "GET /other is not 404"
grep -q "^listening on http://127.0.0.1:$port$" "$LOOM_SERVER_LOG" || fail "no 'listening on' line"
stop_server
[[ $LOOM_SERVER_STATUS == 0 ]] || fail "exit status $LOOM_SERVER_STATUS after SIGTERM"

# the port from $PORT, and the host from $HOST
port=$(free_port)
PORT=$port HOST=127.0.0.1 start_server "$LOOM" "$LOOM_SRC/examples/hello.lua"
wait_port "$port"
[[ $(curl -sS "http://127.0.0.1:$port/") == "Hello, world!" ]] || fail "GET / with PORT=$port"
grep -q "^listening on http://127.0.0.1:$port$" "$LOOM_SERVER_LOG" || fail "no 'listening on' line with PORT"
stop_server
echo "ok: hello"
