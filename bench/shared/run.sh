#!/usr/bin/env bash
# bench/shared/run.sh: loom.shared d:incr against nginx+Lua's ngx.shared.DICT:incr, two
# processes each side hammering one key of one dict at the same time. Prints each
# process's increments per second of CPU time (per core) and per second of wall time,
# and the ratio loom/nginx of the per-core figures. N (default 20M per process) and
# ROUNDS (default 3) tune it.
set -euo pipefail
cd "$(dirname "$0")/../.."
LOOM=${LOOM:-./build/loom}
N=${N:-20000000}
ROUNDS=${ROUNDS:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# stdin: lines "ops cpu wall"; prints the summed ops / summed cpu and per-process wall rate
rate() {
    awk '{ops += $1; cpu += $2; wall += $3; n++}
         END { printf "%.2f %.2f\n", ops / cpu / 1e6, ops / wall / 1e6 }'
}

for r in $(seq 1 "$ROUNDS"); do
    l=$(INCR_N=$N "$LOOM" bench/shared/incr.lua | grep -v total | rate)
    rm -rf "$tmp/ngx" && mkdir -p "$tmp/ngx/logs"
    sed "s/INCR_N/$N/" bench/shared/nginx.conf > "$tmp/ngx/nginx.conf"
    nginx -p "$tmp/ngx/" -c nginx.conf -e "$tmp/ngx/logs/error.log" &
    ngx=$!
    for _ in $(seq 1 600); do
        c=$(grep -c 'INCR ' "$tmp/ngx/logs/error.log" 2>/dev/null || true)
        [ "${c:-0}" -ge 2 ] && break
        sleep 0.1
    done
    kill -QUIT "$ngx"; wait "$ngx" || true
    n=$(sed -n 's/.*INCR \([0-9.]* [0-9.]* [0-9.]*\) END.*/\1/p' "$tmp/ngx/logs/error.log" | rate)
    set -- $l; lc=$1 lw=$2
    set -- $n; nc=$1 nw=$2
    echo "round $r: loom ${lc} M/s per core (${lw} M/s wall per process), nginx+Lua ${nc} M/s per core (${nw} M/s wall), ratio $(awk "BEGIN{printf \"%.2f\", $lc/$nc}")x"
done
