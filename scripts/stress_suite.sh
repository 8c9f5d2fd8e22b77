#!/usr/bin/env bash
# scripts/stress_suite.sh [-n RUNS] [-j JOBS] [--cpu HOGS] BUILD_DIR [CTEST_ARGS...]:
# runs BUILD_DIR's ctest suite RUNS times (default 1, JOBS at once, default 2) while
# stress-ng keeps HOGS CPU hogs busy (default one per core), so that a spec that measures
# the machine rather than loom shows (docs/testing.md, "The suite under load").
#
# In a sanitizer build (LOOM_SANITIZE=ON in its CMakeCache.txt) the sanitizer options are
# set and rock/ and valgrind/ are left out, as `make test-asan` does. Prints a line per run
# (tests passed, failed and skipped, seconds, the load average while it ran) and the names
# of the tests that failed; each run's ctest output stays in BUILD_DIR/stress-<run>.log.
# stress-ng is started here and stopped by its PID however the script ends. Exits 1 when a
# run failed, 2 on misuse or without stress-ng (scripts/deps.sh --stress installs it).
set -euo pipefail

usage() { sed -n '2,12s/^# \{0,1\}//p' "$0"; }
runs=1 jobs=2 hogs=$(nproc)
while (($#)); do
    case $1 in
        -n) runs=$2; shift 2 ;;
        -j) jobs=$2; shift 2 ;;
        --cpu) hogs=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "stress_suite.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) break ;;
    esac
done
(($# >= 1)) || { usage >&2; exit 2; }
[[ -f $1/CTestTestfile.cmake ]] || { echo "stress_suite.sh: $1 is not a configured build" >&2; exit 2; }
build=$(cd "$1" && pwd)
shift
command -v stress-ng >/dev/null 2>&1 ||
    { echo "stress_suite.sh: stress-ng not found (scripts/deps.sh --stress)" >&2; exit 2; }

extra=("$@")
if grep -q '^LOOM_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then
    export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    extra=(-E '^(rock|valgrind)/' "${extra[@]}")
fi

loadlog=$(mktemp)
stress_pid='' sampler_pid=''
stop() {
    set +e # only what this script started, by PID; a killed child's wait status is no error
    for pid in $sampler_pid $stress_pid; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -f "$loadlog"
}
trap stop EXIT
trap 'exit 130' INT TERM

stress-ng --cpu "$hogs" --timeout 86400 --quiet &
stress_pid=$!
# the 1-minute load average, every 5 s and at each run's start and end, to describe its load
sample() { printf '%s %s\n' "$(date +%s)" "$(cut -d' ' -f1 /proc/loadavg)" >>"$loadlog"; }
while :; do sample; sleep 5; done &
sampler_pid=$!
sleep 5 # let the hogs take the cores before the first run starts

echo "stress_suite: $runs run(s) of $build (ctest -j$jobs ${extra[*]}) beside stress-ng --cpu $hogs" \
    "(pid $stress_pid) on $(nproc) cores, $(date -u '+%F %H:%M UTC')"
failed_runs=0
for ((i = 1; i <= runs; i++)); do
    log=$build/stress-$i.log
    t0=$(date +%s)
    sample
    status=0
    ctest --test-dir "$build" --output-on-failure -j"$jobs" "${extra[@]}" >"$log" 2>&1 || status=$?
    t1=$(date +%s)
    sample
    total=$(sed -n 's/.* tests failed out of \([0-9]*\)$/\1/p' "$log" | tail -n1)
    failed=$(sed -n 's/.*, \([0-9]*\) tests failed out of .*/\1/p' "$log" | tail -n1)
    skipped=$(grep -c '\*\*\*Skipped' "$log" || true)
    load=$(awk -v a="$t0" -v b="$t1" '$1 >= a && $1 <= b { s += $2; n++; if ($2 > m) m = $2 }
        END { printf "mean %.1f, max %.1f", s / n, m }' "$loadlog")
    echo "run $i/$runs: ${total:-?} tests, $((${total:-0} - ${failed:-0} - skipped)) passed," \
        "${failed:-?} failed, $skipped skipped, $((t1 - t0)) s, load average $load (ctest status $status)"
    if ((status != 0)); then
        failed_runs=$((failed_runs + 1))
        sed -n '/The following tests FAILED:/,/^Errors while running CTest/p' "$log" | sed '1d;$d'
        echo "  (output: $log)"
    fi
done
((failed_runs == 0))
