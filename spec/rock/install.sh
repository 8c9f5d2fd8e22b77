#!/usr/bin/env bash
# rock/install: build the rock offline into a temporary tree with Debian's
# luarocks, from a copy of the source (./build is not touched), then load it
# from that tree alone with stock lua5.4 and check loom.run works.
set -euo pipefail

src=${LOOM_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/loom-rock.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

mkdir "$tmp/src"
tar -C "$src" --exclude=./.git --exclude=./build --exclude='./build-*' \
    --exclude=./build.luarocks --exclude=./lua_modules -cf - . | tar -C "$tmp/src" -xf -

export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
if ! (cd "$tmp/src" && luarocks --lua-version=5.4 make --tree "$tmp/tree" --deps-mode=none \
        rockspec/loom-scm-1.rockspec) >"$tmp/luarocks.log" 2>&1; then
    cat "$tmp/luarocks.log" >&2
    echo "FAIL: luarocks make" >&2
    exit 1
fi
rm -rf "$tmp/src"   # from here on, only the installed tree can be loaded

tree=$tmp/tree
for f in "$tree/share/lua/5.4/loom/init.lua" "$tree/lib/lua/5.4/loom/core.so"; do
    [[ -f $f ]] || { find "$tree" -path '*loom*' >&2; echo "FAIL: $f not installed" >&2; exit 1; }
done

paths="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua;;"
cpaths="$tree/lib/lua/5.4/?.so;;"
out=$(cd "$tmp" && env -u LD_PRELOAD LOOM_ROCK_TREE="$tree" LUA_PATH="$paths" LUA_PATH_5_4="$paths" \
    LUA_CPATH="$cpaths" LUA_CPATH_5_4="$cpaths" lua5.4 -e '
local tree = os.getenv "LOOM_ROCK_TREE"
local loom = require "loom"
for _, m in ipairs { "loom", "loom.core" } do
    local where = package.searchpath(m, m == "loom" and package.path or package.cpath)
    assert(where and where:sub(1, #tree) == tree, m .. " loaded from " .. tostring(where))
end
print(loom.run(function(x) loom.sleep(0.01) return x * 2 end, 21))')
if [[ $out != 42 ]]; then
    echo "FAIL: expected 42, got: $out" >&2
    exit 1
fi
echo "rock/install: ok (luarocks make, then require \"loom\" from the tree: $out)"
