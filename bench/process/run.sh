#!/usr/bin/env bash
# bench/process/run.sh: loom.process reading 1 GiB from a child's stdout (dd if=/dev/zero
# bs=1M), beside a shell pipe into cat (the kernel's ceiling), ROUNDS (default 3) times.
# loom reads with st:read(65536) and with st:read() (what has arrived). Prints
# GB/s of wall time, the CPU seconds of each side (the reader and dd together), and loom's
# RSS at the start and at its highest while reading.
set -euo pipefail
cd "$(dirname "$0")/../.."
LOOM=${LOOM:-./build/loom}
ROUNDS=${ROUNDS:-3}
BYTES=${BYTES:-1073741824}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for r in $(seq 1 "$ROUNDS"); do
    line=""
    for chunk in 65536 ""; do
        /usr/bin/time -o "$tmp" -f "%U %S" "$LOOM" bench/process/read.lua "$BYTES" $chunk > "$tmp.out"
        read -r n secs gbs rss0 rssmax < "$tmp.out"
        lcpu=$(awk '{print $1 + $2}' "$tmp")
        line="$line, loom read(${chunk}) ${gbs} GB/s (${secs} s, CPU ${lcpu} s; RSS ${rss0} KB at start, ${rssmax} KB at most)"
    done
    s0=$(date +%s.%N)
    /usr/bin/time -o "$tmp" -f "%U %S" sh -c "dd if=/dev/zero bs=1M count=$((BYTES >> 20)) status=none | cat > /dev/null"
    s1=$(date +%s.%N)
    ccpu=$(awk '{print $1 + $2}' "$tmp")
    shgbs=$(awk "BEGIN{printf \"%.2f\", $BYTES / ($s1 - $s0) / 1e9}")
    echo "round $r: dd | cat ${shgbs} GB/s (CPU ${ccpu} s)$line"
    rm -f "$tmp.out"
done
