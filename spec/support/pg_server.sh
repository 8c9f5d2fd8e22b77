#!/usr/bin/env bash
# spec/support/pg_server.sh: a throwaway PostgreSQL server for the specs (Debian's
# postgresql-15 binaries in /usr/lib/postgresql/15/bin, or $PG_BIN).
#
#   pg_server.sh start   initdb into a fresh temp dir and start postgres on 127.0.0.1 on a
#                        free port (unix socket in the dir, fsync off), as the `postgres`
#                        user when run as root; waits until it accepts connections (at most
#                        30 s) and creates the role `loom` (password `loom-secret`) owning
#                        the database `loom`. Prints key=value lines: dir, port, pid, host,
#                        user, password, database, super (a superuser with password
#                        `super-secret`). On failure prints the reason on stderr, exits 1.
#   pg_server.sh stop DIR   stops the server by the PID in DIR/data/postmaster.pid (SIGINT:
#                        fast shutdown; SIGKILL after 10 s) and removes DIR.
# Password auth (scram-sha-256) over TCP; trust on the unix socket, which only the
# owner of the dir can reach.
set -euo pipefail

bin=${PG_BIN:-/usr/lib/postgresql/15/bin}

fail() { echo "pg_server: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

as_owner=()
start() {
    [[ -x $bin/initdb && -x $bin/pg_ctl ]] ||
        fail "no PostgreSQL binaries in $bin (apt-get install postgresql-15; scripts/deps.sh)"
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/loom-pg.XXXXXX") || fail "mktemp failed"
    chmod 700 "$dir"
    if ((EUID == 0)); then
        getent passwd postgres >/dev/null || fail "running as root and there is no 'postgres' user"
        chown postgres: "$dir"
        as_owner=(runuser -u postgres --)
    fi
    echo super-secret >"$dir/pw"
    ((EUID == 0)) && chown postgres: "$dir/pw"
    if ! "${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pw" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
        --no-sync >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        rm -rf "$dir"
        fail "initdb failed"
    fi
    local port="" ok=0
    for attempt in 1 2 3 4 5; do
        port=$(free_port) || fail "no free port"
        # pg_ctl -w waits until the server accepts connections, at most -t seconds
        if "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 -s start \
            -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off \
                -c synchronous_commit=off -c full_page_writes=off -c max_connections=50" \
            >>"$dir/pg_ctl.out" 2>&1; then
            ok=1
            break
        fi
        # a clash on the port: another process took it between the probe and the bind
        grep -q "could not bind\|Address already in use" "$dir/log" 2>/dev/null || break
        [[ -f $dir/data/postmaster.pid ]] && kill -KILL "$(head -1 "$dir/data/postmaster.pid")" 2>/dev/null || true
        : >"$dir/log"
    done
    if ((!ok)); then
        { cat "$dir/pg_ctl.out"; tail -20 "$dir/log"; } >&2 || true
        [[ -f $dir/data/postmaster.pid ]] && kill -KILL "$(head -1 "$dir/data/postmaster.pid")" 2>/dev/null || true
        rm -rf "$dir"
        fail "postgres did not start within 30 s on port $port"
    fi
    if ! "${as_owner[@]}" "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres \
        -d postgres >"$dir/psql.log" 2>&1 <<'SQL'; then
create role loom login password 'loom-secret';
create database loom owner loom;
SQL
        cat "$dir/psql.log" >&2
        stop "$dir"
        fail "creating the test role and database failed"
    fi
    echo "dir=$dir"
    echo "port=$port"
    echo "pid=$(head -1 "$dir/data/postmaster.pid")"
    echo "host=127.0.0.1"
    echo "user=loom"
    echo "password=loom-secret"
    echo "database=loom"
    echo "super=postgres"
    echo "super_password=super-secret"
}

stop() {
    local dir=$1
    [[ -n $dir && -d $dir && $dir == */loom-pg.* ]] || fail "stop: not a server dir: $dir"
    local pidfile=$dir/data/postmaster.pid
    if [[ -f $pidfile ]]; then
        local pid
        pid=$(head -1 "$pidfile")
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}

case ${1:-} in
    start) start ;;
    stop) stop "${2:-}" ;;
    *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
