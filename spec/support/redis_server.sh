#!/usr/bin/env bash
# spec/support/redis_server.sh: a throwaway redis-server for the specs (Debian's redis-server).
#
#   redis_server.sh start [PASSWORD]   starts redis-server on 127.0.0.1 on a free port, in a
#                        fresh temp dir, with no persistence (--save '' --appendonly no) and
#                        `requirepass PASSWORD` when given; waits until it answers PING (at
#                        most 30 s). Prints key=value lines: dir, port, pid, host, password.
#                        On failure prints the reason on stderr and exits 1.
#   redis_server.sh stop DIR   stops it by the PID in DIR/redis.pid (SIGTERM; SIGKILL after
#                        10 s) and removes DIR.
set -euo pipefail

fail() { echo "redis_server: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Sends PING on a fresh connection; true when the answer is +PONG (or NOAUTH's -ERR: alive).
ping() {
    python3 - "$1" "$2" <<'PY'
import socket, sys
port, pw = int(sys.argv[1]), sys.argv[2]
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    if pw:
        s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(pw.encode()), pw.encode()))
        if not s.recv(64).startswith(b"+OK"): sys.exit(1)
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
    sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}

start() {
    local pw=${1:-}
    command -v redis-server >/dev/null || fail "no redis-server (apt-get install redis-server; scripts/deps.sh)"
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/loom-redis.XXXXXX") || fail "mktemp failed"
    local port="" ok=0 pid=""
    for attempt in 1 2 3 4 5; do
        port=$(free_port) || fail "no free port"
        local args=(--port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes
                    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/log")
        [[ -n $pw ]] && args+=(--requirepass "$pw")
        rm -f "$dir/redis.pid"
        redis-server "${args[@]}" >"$dir/out" 2>&1 || true
        for _ in $(seq 300); do # 30 s
            if [[ -f $dir/redis.pid ]] && ping "$port" "$pw"; then ok=1; break; fi
            grep -q "Address already in use\|Could not create server TCP" "$dir/log" 2>/dev/null && break
            sleep 0.1
        done
        ((ok)) && break
        [[ -f $dir/redis.pid ]] && kill -KILL "$(cat "$dir/redis.pid")" 2>/dev/null || true
        grep -q "Address already in use" "$dir/log" 2>/dev/null || break
        : >"$dir/log"
    done
    if ((!ok)); then
        { cat "$dir/out"; tail -20 "$dir/log"; } >&2 2>/dev/null || true
        rm -rf "$dir"
        fail "redis-server did not answer PING within 30 s on port $port"
    fi
    echo "dir=$dir"
    echo "port=$port"
    echo "pid=$(cat "$dir/redis.pid")"
    echo "host=127.0.0.1"
    echo "password=$pw"
}

stop() {
    local dir=$1
    [[ -n $dir && -d $dir && $dir == */loom-redis.* ]] || fail "stop: not a server dir: $dir"
    if [[ -f $dir/redis.pid ]]; then
        local pid
        pid=$(cat "$dir/redis.pid")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}

case ${1:-} in
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    *) echo "usage: $0 start [PASSWORD] | stop DIR" >&2; exit 2 ;;
esac
