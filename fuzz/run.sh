#!/usr/bin/env bash
# fuzz/run.sh BINARY NAME OUTDIR: runs one libFuzzer target for $FUZZ_SECS seconds (60) from
# its seed corpus, fuzz/corpus/NAME, which it only reads. What the run adds goes to OUTDIR:
# new inputs to OUTDIR/corpus/NAME, a crash to OUTDIR/crashes/NAME-crash-<sha1>, the
# output to OUTDIR/NAME.log, one line of figures to OUTDIR/NAME.summary.
#
# Exit 0 when the time ran out with nothing found. Otherwise prints the log's tail, each
# input the run saved and the command that replays it, and exits 1. cmake/fuzz.cmake makes
# one ctest test of each target with this script; docs/fuzzing.md.
set -uo pipefail

if (($# != 3)); then
    echo "usage: fuzz/run.sh BINARY NAME OUTDIR" >&2
    exit 2
fi
bin=$1 name=$2 out=$3
seeds=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/corpus/$name
secs=${FUZZ_SECS:-60}
log=$out/$name.log

mkdir -p "$out/corpus/$name" "$out/crashes"
rm -f "$out/$name.summary"
stamp=$(mktemp "$out/crashes/.start.XXXXXX")
trap 'rm -f "$stamp"' EXIT

# -timeout: one input running 10 s is a finding (inputs are a few KiB, most take a millisecond).
# timeout(1): the whole run never outlives its budget by more than two minutes.
timeout -k 10 $((secs + 120)) "$bin" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$out/crashes/$name-" "$out/corpus/$name" "$seeds" >"$log" 2>&1
rc=$?

stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
if ((rc == 0)); then
    printf 'fuzz: %-20s %9s runs in %3s s, %4s new units, corpus %s\n' "$name" \
        "$(stat number_of_executed_units)" "$secs" "$(stat new_units_added)" \
        "$(ls "$out/corpus/$name" | wc -l)" | tee "$out/$name.summary"
    exit 0
fi

tail -n 40 "$log"
echo "fuzz: $name FAILED (exit $rc after at most $secs s); log: $log"
found=0
while IFS= read -r f; do
    found=1
    echo "fuzz: $name input: $f"
    echo "fuzz: replay with: $bin $f"
done < <(find "$out/crashes" -maxdepth 1 -type f -name "$name-*" -newer "$stamp" | sort)
((found)) || echo "fuzz: $name saved no input (killed by timeout(1) or a signal?)"
exit 1
