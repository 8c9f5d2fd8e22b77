#!/usr/bin/env bash
# bench/fs/run.sh: reading a 100 MB file (in the page cache) with loom.fs beside
# `cat FILE > /dev/null`, ROUNDS (default 3) times each. Prints wall and CPU (user+sys)
# seconds per run, the best of the rounds, and the loom/cat ratios. A loom process that
# only loads loom is measured too (its start-up is part of every loom figure).
set -euo pipefail
cd "$(dirname "$0")/../.."
LOOM=${LOOM:-./build/loom}
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-100000000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c "$SIZE" /dev/urandom > "$tmp/big"
cat "$tmp/big" > /dev/null # into the page cache
echo 'require "loom"' > "$tmp/empty.lua"

# best wall and cpu seconds of ROUNDS runs of "$@"
best() {
    local w c bw=999 bc=999
    for _ in $(seq 1 "$ROUNDS"); do
        read -r w c < <( { /usr/bin/time -f "%e %U %S" "$@" > /dev/null; } 2>&1 | awk '{print $1, $2 + $3}')
        bw=$(awk "BEGIN{print ($w < $bw) ? $w : $bw}")
        bc=$(awk "BEGIN{print ($c < $bc) ? $c : $bc}")
    done
    echo "$bw $bc"
}

read -r cw cc < <(best sh -c "cat '$tmp/big' > /dev/null")
printf "%-34s wall %.3f s  cpu %.3f s\n" "cat > /dev/null" "$cw" "$cc"
read -r ew ec < <(best "$LOOM" "$tmp/empty.lua")
printf "%-34s wall %.3f s  cpu %.3f s\n" "loom start-up only" "$ew" "$ec"
for mode in whole 1048576 131072; do
    if [ "$mode" = whole ]; then label="loom.fs.read(path)"; args=("$tmp/big")
    else label="loom.fs.open + f:read($mode)"; args=("$tmp/big" "$mode"); fi
    read -r lw lc < <(best "$LOOM" bench/fs/read.lua "${args[@]}")
    printf "%-34s wall %.3f s  cpu %.3f s  (x%.2f of cat wall, x%.2f cpu)\n" "$label" "$lw" "$lc" \
        "$(awk "BEGIN{print $lw / $cw}")" "$(awk "BEGIN{print ($cc > 0) ? $lc / $cc : 0}")"
done
