#!/usr/bin/env bash
# bench/h2_server.sh: the hello world over HTTP/2 (issue 15), loom beside nginx (listen ...
# http2, content_by_lua_block, one worker: bench/peers/nginx.conf) and Node's http2 module,
# over h2c and over TLS. Each server is pinned to CPU 0 and h2load (-c50 -m10, one thread) to
# CPU 1; ROUNDS rounds, the peers one after the other in each. Printed per run: req/s, and
# the server's CPU time per request (utime + stime from /proc), which the machine's load
# moves less than req/s. LOOM_BUILD: the build to measure (build/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
N=${N:-100000}
LOOM=${LOOM_BUILD:-build}/loom
LOOM_BEFORE=${LOOM_BEFORE:-} # optional: another loom binary, measured as "before" beside them
MODES=${MODES:-h2c tls}
for t in h2load nginx node; do command -v $t >/dev/null || { echo "h2_server: no $t" >&2; exit 1; }; done
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$tmp"' EXIT
bash spec/support/make_certs.sh "$tmp/certs" >/dev/null 2>&1
mkdir -p "$tmp/logs"
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
wait_for() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }

run_set() { # $1: h2c | tls
    local mode=$1 scheme=http certs=() ngx_listen="http2"
    [[ $mode == tls ]] && { scheme=https; certs=("$tmp/certs/a.pem" "$tmp/certs/a.key");
        ngx_listen="ssl http2; ssl_certificate $tmp/certs/a.pem; ssl_certificate_key $tmp/certs/a.key"; }
    sed -e "s|listen 127.0.0.1:PORT reuseport backlog=4096;|listen 127.0.0.1:18402 $ngx_listen;|" \
        bench/peers/nginx.conf >"$tmp/nginx-$mode.conf"
    taskset -c 0 "$LOOM" bench/h2_hello.lua 18401 "${certs[@]}" >"$tmp/loom.log" 2>&1 &
    local loom_pid=$!
    taskset -c 0 nginx -p "$tmp" -c "$tmp/nginx-$mode.conf" >"$tmp/nginx.log" 2>&1 &
    local nginx_pid=$!
    taskset -c 0 node bench/peers/node_h2.js 18403 "${certs[@]}" >"$tmp/node.log" 2>&1 &
    local node_pid=$!
    pids=("$loom_pid" "$nginx_pid" "$node_pid")
    local before_pid="" before_peer=""
    if [[ -n $LOOM_BEFORE ]]; then
        taskset -c 0 "$LOOM_BEFORE" bench/h2_hello.lua 18404 "${certs[@]}" >"$tmp/before.log" 2>&1 &
        before_pid=$!
        pids+=("$before_pid")
        wait_for 18404
        before_peer=before:18404:$before_pid
    fi
    wait_for 18401; wait_for 18402; wait_for 18403
    local worker
    worker=$(pgrep -P "$nginx_pid" | head -1)
    for r in $(seq "$ROUNDS"); do
        for peer in loom:18401:$loom_pid $before_peer nginx:18402:$worker node:18403:$node_pid; do
            IFS=: read -r name port pid <<<"$peer"
            local a b out
            a=$(cpu "$pid")
            out=$(taskset -c 1 h2load -n "$N" -c 50 -m 10 -t 1 "$scheme://127.0.0.1:$port/" 2>&1)
            b=$(cpu "$pid")
            grep -q "status codes: $N 2xx" <<<"$out" || { echo "$name: not all 2xx" >&2; echo "$out" >&2; exit 1; }
            printf "%s round %d %-5s %8.0f req/s  %5.2f us CPU/request\n" "$mode" "$r" "$name" \
                "$(sed -n 's/.*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")" \
                "$(echo "($b - $a) * 1000000 / $tick / $N" | bc -l)"
        done
    done
    kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
}
for m in $MODES; do run_set "$m"; done
