#!/usr/bin/env bash
# smoke/embed: the C embedding examples (examples/embed/*.c) run and exit 0.
#   embed     registers greet() in C; a raw TCP server and client exchange a line
#   own_loop  loom on the program's own libuv loop, beside its own timer
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# CMake puts them in $LOOM_BUILD/examples/embed/; also accept the build dir's root.
example() {
    local name=$1 dir
    for dir in "$LOOM_BUILD/examples/embed" "$LOOM_BUILD"; do
        if [[ -x $dir/$name ]]; then
            echo "$dir/$name"
            return
        fi
    done
    fail "$name not built (looked in $LOOM_BUILD/examples/embed and $LOOM_BUILD)"
}

# run_example NAME: runs it (bounded), leaves its stdout in $SMOKE_TMP/NAME.out.
run_example() {
    local name=$1 bin status=0
    bin=$(example "$name")
    timeout 20 "$bin" >"$SMOKE_TMP/$name.out" 2>"$SMOKE_TMP/$name.err" || status=$?
    if ((status != 0)); then
        cat "$SMOKE_TMP/$name.out" "$SMOKE_TMP/$name.err" >&2
        fail "$name exited with status $status"
    fi
    if [[ -s $SMOKE_TMP/$name.err ]]; then
        cat "$SMOKE_TMP/$name.err" >&2
        fail "$name wrote to stderr"
    fi
}

expect_line() {
    local name=$1 line=$2
    grep -qxF -- "$line" "$SMOKE_TMP/$name.out" ||
        { cat "$SMOKE_TMP/$name.out" >&2; fail "$name: no line '$line'"; }
}

run_example embed
expect_line embed "client got: Hello, embedder! (from C)"
expect_line embed "exit status 0"

run_example own_loop
expect_line own_loop "lua: task counted to 5"
expect_line own_loop "c: timer ticked 3 times"
expect_line own_loop "c: loop closed cleanly"

echo "ok: embed, own_loop"
