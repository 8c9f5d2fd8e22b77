#!/usr/bin/env bash
# smoke/doc_snippets: every ```lua block of the docs listed below runs without error.
#   - a block runs as a script under the host ($LOOM), and must exit 0 with nothing on stderr;
#   - a block whose first line is "-- stock lua" runs under stock lua5.4 instead
#     (require "loom" + loom.run), with the build's LUA_PATH/LUA_CPATH;
#   - a block right after a line "<!-- not run -->" is skipped.
# DOCS="tasks streams" checks only those pages.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

docs=(${DOCS:-conventions tasks streams embedding websocket client server testing security web runtime})
count=0
for doc in "${docs[@]}"; do
    md=$LOOM_SRC/docs/$doc.md
    [[ -f $md ]] || fail "docs/$doc.md is missing"
    dir=$SMOKE_TMP/$doc
    mkdir -p "$dir"
    # Split the lua blocks into $dir/NNN-LINE.lua (LINE: where the block starts).
    awk -v dir="$dir" '
        /^<!-- not run -->$/ { skip = 1; next }
        /^```lua$/ && !inblock { inblock = 1; n++; if (skip) { drop = 1 } else {
            file = sprintf("%s/%03d-%d.lua", dir, n, NR + 1) }; skip = 0; next }
        /^```/ && inblock { inblock = 0; drop = 0; file = ""; next }
        inblock && !drop { print > file; next }
        { if ($0 != "") skip = 0 }
    ' "$md"
    for snippet in "$dir"/*.lua; do
        [[ -e $snippet ]] || continue
        line=$(basename "$snippet" .lua)
        line=${line#*-}
        status=0
        if [[ $(head -n 1 "$snippet") == "-- stock lua" ]]; then
            # as loom_lua in lib.sh does, but bounded by timeout
            (cd "$dir" && timeout 20 env ${LOOM_LUA_PRELOAD:+LD_PRELOAD="$LOOM_LUA_PRELOAD"} \
                lua5.4 "$snippet") >"$snippet.out" 2>"$snippet.err" || status=$?
        else
            (cd "$dir" && timeout 20 "$LOOM" "$snippet") >"$snippet.out" 2>"$snippet.err" || status=$?
        fi
        if ((status != 0)) || [[ -s $snippet.err ]]; then
            echo "---- docs/$doc.md, block at line $line (status $status):" >&2
            cat "$snippet" >&2
            echo "---- its output:" >&2
            cat "$snippet.out" "$snippet.err" >&2
            fail "docs/$doc.md: the lua block at line $line does not run"
        fi
        count=$((count + 1))
    done
done
echo "ok: $count snippets ran"
