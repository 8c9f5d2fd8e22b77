#!/usr/bin/env bash
# smoke/todo: examples/todo/app.lua twice (two ports, one SESSION_SECRET) on one real
# PostgreSQL and one real redis-server (spec/support/pg_server.sh, redis_server.sh), driven
# with curl and one cookie jar: register, log in on one instance, then create, list, update
# and delete todos through both; the session is a record in Redis that both instances read,
# survives a restart of the instance that made it, and is gone after logout (the old cookie
# is then worthless). A server that cannot start fails the test with its reason.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

command -v curl >/dev/null || fail "no curl (apt-get install curl)"
command -v redis-cli >/dev/null || fail "no redis-cli (apt-get install redis-server; scripts/deps.sh)"

pg_out=$(bash "$LOOM_SRC/spec/support/pg_server.sh" start 2>"$SMOKE_TMP/pg.err") ||
    fail "postgres did not start: $(cat "$SMOKE_TMP/pg.err")"
pg_dir=$(sed -n 's/^dir=//p' <<<"$pg_out")
on_exit bash "$LOOM_SRC/spec/support/pg_server.sh" stop "$pg_dir"
pg_port=$(sed -n 's/^port=//p' <<<"$pg_out")
redis_out=$(bash "$LOOM_SRC/spec/support/redis_server.sh" start 2>"$SMOKE_TMP/redis.err") ||
    fail "redis-server did not start: $(cat "$SMOKE_TMP/redis.err")"
redis_dir=$(sed -n 's/^dir=//p' <<<"$redis_out")
on_exit bash "$LOOM_SRC/spec/support/redis_server.sh" stop "$redis_dir"
redis_port=$(sed -n 's/^port=//p' <<<"$redis_out")
# Both servers detach (pg_ctl, --daemonize): when ctest kills this test at its timeout, the
# EXIT trap never runs. A watcher in a session of its own then stops them, and the loom
# instances listed in $pids (after a normal end the trap has done it all: the watcher finds
# no directories and no file).
pids=$(mktemp "${TMPDIR:-/tmp}/loom-smoke-todo-pids.XXXXXX")
on_exit rm -f "$pids"
setsid bash -c 'tail --pid="$1" -f /dev/null
    [[ -f $6 ]] && kill $(cat "$6") 2>/dev/null; rm -f "$6"
    bash "$2" stop "$3"; bash "$4" stop "$5"' _ $$ \
    "$LOOM_SRC/spec/support/pg_server.sh" "$pg_dir" \
    "$LOOM_SRC/spec/support/redis_server.sh" "$redis_dir" "$pids" </dev/null >/dev/null 2>&1 &

export DATABASE_URL="postgresql://loom:loom-secret@127.0.0.1:$pg_port/loom"
export REDIS_URL="redis://127.0.0.1:$redis_port/0"
export SESSION_SECRET="smoke-todo-$RANDOM$RANDOM$RANDOM"
app=$LOOM_SRC/examples/todo/app.lua

# Both start at once: the schema is made under an advisory lock, one after the other.
port1=$(free_port)
start_server "$LOOM" "$app" "$port1"
pid1=$LOOM_SERVER_PID
port2=$(free_port)
start_server "$LOOM" "$app" "$port2"
pid2=$LOOM_SERVER_PID
echo "$pid1 $pid2" >"$pids"
wait_port "$port2" 30
LOOM_SERVER_PID=$pid1 wait_port "$port1" 30

jar=$SMOKE_TMP/jar
out=$SMOKE_TMP/body
hdr=$SMOKE_TMP/head
# call METHOD PORT PATH [JSON] [JAR]: the status goes to $status, the body to $out
call() {
    local method=$1 port=$2 path=$3 data=${4:-} cj=${5:-$jar}
    local a=(-sS -o "$out" -D "$hdr" -w '%{http_code}' -b "$cj" -c "$cj" -X "$method"
             --max-time 20 "http://127.0.0.1:$port$path")
    [[ -n $data ]] && a+=(-H 'content-type: application/json' --data-binary "$data")
    status=$(curl "${a[@]}") || fail "curl $method :$port$path failed"
}
# expect STATUS: the last call answered STATUS, from the instance it was sent to
expect() {
    [[ $status == "$1" ]] || fail "$method_path: status $status, expected $1; body: $(cat "$out")"
}
# (No python per check: on a loaded machine each python3 start took seconds. The app's JSON
# is lua-cjson's: no spaces, keys in any order, objects of an array in the array's order.)
# has TEXT...: the last body contains each TEXT (a "key":value pair, say)
has() {
    local t
    for t in "$@"; do
        grep -qF -- "$t" "$out" || fail "$method_path: body $(cat "$out") lacks $t"
    done
}
# ids: the "id" values of the last body, in order, space-separated
ids() {
    grep -o '"id":[0-9]*' "$out" | cut -d: -f2 | paste -sd' ' || true
}
# ids_are IDS: the last body's ids are exactly IDS, in that order
ids_are() {
    [[ $(ids) == "$1" ]] || fail "$method_path: ids [$(ids)], expected [$1]; body $(cat "$out")"
}
# req METHOD PORT PATH [JSON] [JAR] STATUS: call, then expect STATUS and the right x-instance
req() {
    local want=${!#} n=$#
    method_path="$1 :$2$3"
    call "${@:1:n-1}"
    expect "$want"
    grep -qi "^x-instance: .*:$2"$'\r'"$" "$hdr" || fail "$method_path: not answered by the instance on $2"
}
sessions() { redis-cli -p "$redis_port" --raw keys 'loom:session:*' | grep -c . || true; }

req GET "$port1" /me 401
req GET "$port1" /todos 401
req POST "$port1" /register '{"name":"ann","password":"ann-password"}' 201
has '"name":"ann"'
[[ $(ids) =~ ^[0-9]+$ ]] || fail "register answered no id: $(cat "$out")"
req POST "$port2" /register '{"name":"ann","password":"other-password"}' 409
req POST "$port1" /register '{"name":"","password":"x"}' 400
req POST "$port1" /login '{"name":"ann","password":"wrong-password"}' 401
[[ $(sessions) == 0 ]] || fail "a failed login left a session in Redis"
req POST "$port1" /login '{"name":"ann","password":"ann-password"}' 200
has '"name":"ann"'
grep -q todo_session "$jar" || fail "login set no todo_session cookie"
[[ $(sessions) == 1 ]] || fail "after login Redis holds $(sessions) sessions, expected 1"

# the session made by instance 1 works on instance 2: it lives in Redis
req GET "$port2" /me 200
has '"name":"ann"'
req POST "$port1" /todos '{"title":"buy milk"}' 201
has '"title":"buy milk"' '"done":false'
milk=$(ids)
req POST "$port2" /todos '{"title":"write \"docs\" ü"}' 201
has '"title":"write \"docs\" ü"'
docs=$(ids)
req POST "$port2" /todos '{"title":""}' 400
req POST "$port2" /todos 'not json' 400
req GET "$port2" /todos 200
ids_are "$milk $docs"
has '"title":"buy milk"' '"title":"write \"docs\" ü"'
req PATCH "$port2" "/todos/$milk" '{"done":true}' 200
has '"done":true' '"title":"buy milk"'
req PATCH "$port1" "/todos/$docs" '{"title":"write docs"}' 200
has '"done":false' '"title":"write docs"'
req PATCH "$port1" "/todos/$docs" '{"done":"yes"}' 400
req GET "$port1" "/todos?done=true" 200
ids_are "$milk"
req GET "$port1" "/todos?done=false" 200
ids_are "$docs"
req GET "$port1" "/todos/$docs" 200
has '"title":"write docs"'

# another user sees none of ann's todos
bob=$SMOKE_TMP/bob
req POST "$port2" /register '{"name":"bob","password":"bob-password"}' "$bob" 201
req POST "$port2" /login '{"name":"bob","password":"bob-password"}' "$bob" 200
req GET "$port1" /todos '' "$bob" 200
[[ $(cat "$out") == "[]" ]] || fail "bob sees todos: $(cat "$out")"
req GET "$port1" "/todos/$milk" '' "$bob" 404
req DELETE "$port1" "/todos/$milk" '' "$bob" 404
req PATCH "$port1" "/todos/$milk" '{"done":false}' "$bob" 404

req DELETE "$port1" "/todos/$milk" 204
req GET "$port2" "/todos/$milk" 404
req DELETE "$port2" "/todos/$milk" 404
req GET "$port2" /todos 200
ids_are "$docs"

# instance 1 restarts: nothing of the session was in it
stop_server "$pid1"
((LOOM_SERVER_STATUS == 0)) || fail "instance 1 exited with $LOOM_SERVER_STATUS after SIGTERM"
start_server "$LOOM" "$app" "$port1"
pid1=$LOOM_SERVER_PID
echo "$pid1 $pid2" >"$pids"
wait_port "$port1" 30
req GET "$port1" /me 200
has '"name":"ann"'

# logout deletes the record: the cookie from before is void on both instances
cp "$jar" "$SMOKE_TMP/old_jar"
req POST "$port2" /logout '' 200
req GET "$port1" /me 401
req GET "$port2" /me '' "$SMOKE_TMP/old_jar" 401
[[ $(sessions) == 1 ]] || fail "after ann's logout Redis holds $(sessions) sessions, expected bob's alone"

# the rows are in PostgreSQL, where the instances put them
rows=$(PGPASSWORD=loom-secret /usr/lib/postgresql/15/bin/psql -X -A -t -h 127.0.0.1 -p "$pg_port" \
    -U loom -d loom -c "select count(*) from todos") || fail "psql could not count the todos"
[[ $rows == 1 ]] || fail "todos holds $rows rows, expected 1"

for p in "$pid1" "$pid2"; do
    stop_server "$p"
    ((LOOM_SERVER_STATUS == 0)) || fail "instance $p exited with $LOOM_SERVER_STATUS after SIGTERM"
done
echo "ok: todo (two instances, sessions in Redis, todos in PostgreSQL)"
