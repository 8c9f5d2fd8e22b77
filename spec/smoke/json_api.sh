#!/usr/bin/env bash
# smoke/json_api: examples/json_api.lua, the todo API, through Python's http.client: create,
# list and filter, read, replace, change, delete; 400 for bad JSON, 415 for another content
# type, 422 with the fields at fault, 404 for what is not there.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

port=$(free_port)
start_server "$LOOM" "$LOOM_SRC/examples/json_api.lua" "$port"
wait_port "$port"

PORT=$port PREFIX="" timeout 30 /usr/bin/python3 "$LOOM_SRC/spec/fixtures/todo_client.py" ||
    fail "the todo API did not answer as documented"
stop_server
[[ $LOOM_SERVER_STATUS == 0 ]] || fail "exit status $LOOM_SERVER_STATUS after SIGTERM"
echo "ok: json_api"
