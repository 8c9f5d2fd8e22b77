#!/usr/bin/env bash
# smoke/client_examples: examples/fetch.lua, crawl.lua and download.lua against a loom
# server on 127.0.0.1 (a small page, a 3 MB file, a 404).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

port=$(free_port)
cat >"$SMOKE_TMP/server.lua" <<LUA
local app = loom.app()
local big = string.rep("0123456789abcdef", 3 * 65536)
app:get("/hello", function() return "hello, client" end)
app:get("/big.bin", function() return { body = big } end)
app:run{ host = "127.0.0.1", port = $port, access_log = false }
LUA
start_server "$LOOM" "$SMOKE_TMP/server.lua"
wait_port "$port"
base=http://127.0.0.1:$port

# fetch: body on stdout, status and headers on stderr
out=$("$LOOM" examples/fetch.lua "$base/hello" 2>"$SMOKE_TMP/fetch.err")
[[ $out == "hello, client" ]] || fail "fetch printed '$out'"
grep -q "^HTTP/1.1 200 OK" "$SMOKE_TMP/fetch.err" || fail "fetch: no status line"
grep -q "^content-length: 13" "$SMOKE_TMP/fetch.err" || fail "fetch: no headers"
if "$LOOM" examples/fetch.lua "http://127.0.0.1:1/" 2>"$SMOKE_TMP/fetch.err"; then
    fail "fetch of a closed port succeeded"
fi
grep -q "^fetch: connect: " "$SMOKE_TMP/fetch.err" || fail "fetch: no connect error"

# crawl: one line per URL with status and size, then the tally
out=$(printf '%s\n' "$base/hello" "$base/big.bin" "$base/missing" | "$LOOM" examples/crawl.lua -n 2)
grep -Eq "^200 +13 bytes .* $base/hello$" <<<"$out" || fail "crawl: $out"
grep -Eq "^200 +3145728 bytes .* $base/big.bin$" <<<"$out" || fail "crawl: $out"
grep -Eq "^404 .* $base/missing$" <<<"$out" || fail "crawl: $out"
grep -q "^3 fetched, 0 failed$" <<<"$out" || fail "crawl: $out"

# download: streams to the file; no progress bar when stdout is not a terminal
out=$("$LOOM" examples/download.lua "$base/big.bin" "$SMOKE_TMP/big.bin")
[[ $out == "saved 3145728 bytes to $SMOKE_TMP/big.bin in "* ]] || fail "download: $out"
[[ $(stat -c %s "$SMOKE_TMP/big.bin") == 3145728 ]] || fail "download: wrong size"
head -c 16 "$SMOKE_TMP/big.bin" | grep -q "^0123456789abcdef$" || fail "download: wrong content"
echo "client examples ok"
