#!/usr/bin/env bash
# smoke/server_curl: a loom server process (spec/fixtures/server_app.lua) answers curl:
# GET, keep-alive across requests, POST bodies, a chunked upload from stdin (curl -T -),
# HEAD with GET's Content-Length, 404 and 405, and a graceful stop on SIGTERM.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

port=$(free_port)
start_server "$LOOM" "$LOOM_SRC/spec/fixtures/server_app.lua" "$port"
wait_port "$port"
base=http://127.0.0.1:$port
c() { curl -sS --max-time 10 "$@"; }

[[ $(c "$base/") == "hello from loom" ]] || fail "GET / body"

# keep-alive: two requests in one curl, one connection (the same client port both times)
out=$(c -v "$base/conn" "$base/conn" 2>"$SMOKE_TMP/ka.err")
grep -q "Re-using existing connection" "$SMOKE_TMP/ka.err" || fail "curl did not reuse the connection"
[[ $(wc -l <<<"$out") == 2 && $(sed -n 1p <<<"$out") == "$(sed -n 2p <<<"$out")" ]] ||
    fail "two requests came from two connections: $out"

# POST bodies, text and binary
[[ $(c -d 'name=ann&x=1' "$base/echo") == "name=ann&x=1" ]] || fail "POST form body"
head -c 100000 /dev/urandom >"$SMOKE_TMP/bin"
c --data-binary @"$SMOKE_TMP/bin" -H 'content-type: application/x-thing' "$base/echo" -o "$SMOKE_TMP/bin.out" \
    -w '%{content_type}' >"$SMOKE_TMP/ct"
cmp -s "$SMOKE_TMP/bin" "$SMOKE_TMP/bin.out" || fail "POST binary body came back different"
[[ $(cat "$SMOKE_TMP/ct") == application/x-thing ]] || fail "echoed content type"

# a chunked upload from stdin, 3 MB, checked byte for byte
head -c 3000000 /dev/urandom >"$SMOKE_TMP/up"
want=$(/usr/bin/python3 -c 'import sys, zlib; print(zlib.adler32(open(sys.argv[1], "rb").read()))' "$SMOKE_TMP/up")
got=$(c -T - "$base/upload" <"$SMOKE_TMP/up")
/usr/bin/python3 - "$got" "$want" <<'PY' || fail "chunked upload: $got (want adler32 $want)"
import json, sys
got, want = json.loads(sys.argv[1]), int(sys.argv[2])
assert got == {"bytes": 3000000, "adler32": want, "chunked": True}, got
PY

# HEAD: GET's headers, Content-Length included, and no body
c -I "$base/json" >"$SMOKE_TMP/head"
get_len=$(c -o /dev/null -w '%{size_download}' "$base/json")
grep -qi "^content-length: $get_len" "$SMOKE_TMP/head" || fail "HEAD Content-Length is not GET's ($get_len)"
grep -qi '^content-type: application/json' "$SMOKE_TMP/head" || fail "HEAD content type"
# two HEADs on one connection: a body after the first would garble the second answer
c -v -I "$base/json" "$base/json" >"$SMOKE_TMP/heads" 2>"$SMOKE_TMP/heads.err" || fail "two HEADs failed"
grep -q "Re-using existing connection" "$SMOKE_TMP/heads.err" || fail "the HEAD connection was not reused"
[[ $(grep -c '^HTTP/1.1 200 OK' "$SMOKE_TMP/heads") == 2 ]] || fail "two HEADs did not get two clean answers"

# 404 and 405
[[ $(c -o /dev/null -w '%{http_code}' "$base/nope") == 404 ]] || fail "GET /nope is not 404"
[[ $(c -o /dev/null -w '%{http_code}' -X DELETE "$base/echo") == 405 ]] || fail "DELETE /echo is not 405"
grep -qi '^allow: POST' <(c -D - -o /dev/null -X DELETE "$base/echo") || fail "405 without Allow"

# Date on every answer
grep -qiE '^date: [A-Z][a-z]{2}, [0-9]{2} ' "$SMOKE_TMP/head" || fail "no Date header"

stop_server
[[ $LOOM_SERVER_STATUS == 0 ]] || fail "the server exited with $LOOM_SERVER_STATUS after SIGTERM"
echo "ok: curl"
