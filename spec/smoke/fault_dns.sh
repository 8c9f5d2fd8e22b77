#!/usr/bin/env bash
# smoke/fault_dns: the #namespaces tests of spec/fault_client_spec.lua (name lookups that fail,
# succeed or hang, through a real resolver in a private network namespace: see
# spec/fixtures/fault_dns.sh) and of spec/happy_eyeballs_spec.lua (a name whose IPv6 address
# black-holes there). Exits 77, which ctest reports as skipped, where user and
# network namespaces are not allowed (many containers).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if ! unshare -rmn true 2>/dev/null; then
    echo "skipped: no user or network namespaces here"
    exit 77
fi
lpath="$LOOM_SRC/lua/?.lua;$LOOM_SRC/lua/?/init.lua;$LOOM_SRC/spec/?.lua"
LOOM_BIN=$LOOM loom_lua "$(command -v busted)" "--lpath=$lpath" "--cpath=$LOOM_BUILD/lua/?.so" \
    --tags=namespaces -o utfTerminal spec/fault_client_spec.lua
LOOM_BIN=$LOOM loom_lua "$(command -v busted)" "--lpath=$lpath" "--cpath=$LOOM_BUILD/lua/?.so" \
    --tags=namespaces -o utfTerminal spec/happy_eyeballs_spec.lua
