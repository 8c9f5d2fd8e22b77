# spec/smoke/lib.sh: helpers for the smoke tests; sourced, never run as a test.
#
#   source "$(dirname "$0")/lib.sh"
#   port=$(free_port)
#   start_server "$LOOM" examples/hello.lua --port "$port"
#   wait_port "$port"
#   curl -fsS "http://127.0.0.1:$port/" | grep -q hello || fail "no hello"
#   stop_server                     # or leave it to the EXIT trap
#
# ctest sets LOOM (the host), LOOM_SRC, LOOM_BUILD, LUA_PATH and LUA_CPATH;
# run by hand, they default to ./build. Servers are stopped by the PID that
# start_server recorded, never by name. Each server's output goes to
# $SMOKE_TMP/server-N.log and is printed if the test fails.

: "${LOOM_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${LOOM_BUILD:=$LOOM_SRC/build}"
: "${LOOM:=$LOOM_BUILD/loom}"
: "${LUA_PATH:=$LOOM_SRC/lua/?.lua;$LOOM_SRC/lua/?/init.lua;$LOOM_SRC/spec/?.lua;;}"
: "${LUA_CPATH:=$LOOM_BUILD/lua/?.so;;}"
export LOOM LOOM_SRC LOOM_BUILD LUA_PATH LUA_CPATH

SMOKE_TMP=$(mktemp -d "${TMPDIR:-/tmp}/loom-smoke.XXXXXX")
SMOKE_NAME=$(basename "$0" .sh)
LOOM_SERVER_PID=""        # the last server started
LOOM_SERVER_LOG=""        # its output
LOOM_SERVER_STATUS=""     # exit status of the last server stopped
_smoke_pids=()
_smoke_logs=()
_smoke_on_exit=()

# fail MESSAGE: print to stderr and exit 1 (the EXIT trap cleans up).
fail() {
    echo "FAIL [$SMOKE_NAME]: $*" >&2
    exit 1
}

# on_exit CMD...: run CMD at exit, before servers are stopped (our EXIT trap
# is taken; add to it with this instead of `trap ... EXIT`).
on_exit() {
    _smoke_on_exit+=("$*")
}

# free_port: print a loopback TCP port that was free a moment ago.
free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# loom_lua ARGS...: stock lua5.4, with the sanitizer runtime preloaded when
# the build is instrumented (ctest sets LOOM_LUA_PRELOAD then).
loom_lua() {
    if [[ -n ${LOOM_LUA_PRELOAD:-} ]]; then
        LD_PRELOAD=$LOOM_LUA_PRELOAD lua5.4 "$@"
    else
        lua5.4 "$@"
    fi
}

# start_server CMD...: run CMD in the background; its PID is LOOM_SERVER_PID.
start_server() {
    local log="$SMOKE_TMP/server-${#_smoke_pids[@]}.log"
    "$@" >"$log" 2>&1 &
    LOOM_SERVER_PID=$!
    LOOM_SERVER_LOG=$log
    _smoke_pids+=("$LOOM_SERVER_PID")
    _smoke_logs+=("$log")
}

# wait_port PORT [SECONDS=10] [HOST=127.0.0.1]: wait until PORT accepts a
# connection; fails early if the last server started has exited.
wait_port() {
    local port=$1 secs=${2:-10} host=${3:-127.0.0.1}
    local deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            return 0
        fi
        if [[ -n $LOOM_SERVER_PID ]] && ! kill -0 "$LOOM_SERVER_PID" 2>/dev/null; then
            fail "server (pid $LOOM_SERVER_PID) exited before $host:$port accepted"
        fi
        sleep 0.05
    done
    fail "nothing accepted on $host:$port within ${secs}s"
}

# stop_server [PID] [SIGNAL=TERM]: signal the server (the last one started by
# default), give it 10s, then KILL; reap it. Its exit status is left in
# LOOM_SERVER_STATUS (143 = killed by TERM). Always returns 0.
stop_server() {
    local pid=${1:-$LOOM_SERVER_PID} sig=${2:-TERM} i
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -s "$sig" "$pid" 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "smoke: server $pid ignored SIG$sig for 10s; killing it" >&2
            kill -s KILL "$pid" 2>/dev/null || true
        fi
    fi
    LOOM_SERVER_STATUS=0
    wait "$pid" 2>/dev/null || LOOM_SERVER_STATUS=$?
    local n
    for n in "${!_smoke_pids[@]}"; do
        [[ ${_smoke_pids[n]} == "$pid" ]] && unset "_smoke_pids[n]"
    done
    [[ $pid == "$LOOM_SERVER_PID" ]] && LOOM_SERVER_PID=""
    return 0
}

_smoke_exit() {
    local status=$? cmd pid log
    for cmd in "${_smoke_on_exit[@]}"; do
        eval "$cmd" || true
    done
    for pid in "${_smoke_pids[@]}"; do
        stop_server "$pid"
    done
    if ((status != 0)); then
        for log in "${_smoke_logs[@]}"; do
            if [[ -s $log ]]; then
                echo "---- $log" >&2
                tail -n 50 "$log" >&2
            fi
        done
    fi
    rm -rf "$SMOKE_TMP"
    exit "$status"
}
trap _smoke_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
