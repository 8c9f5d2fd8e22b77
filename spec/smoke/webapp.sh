#!/usr/bin/env bash
# smoke/webapp: examples/webapp/app.lua driven by curl. The login form (a wrong password
# gives no session, the right one an HttpOnly SameSite=Lax cookie), the session cookie
# sent back, uploads with curl -F saved under generated names in the data directory
# (never the client's filename), the list and a download, CSRF (a cross-origin POST is 403
# and changes nothing), max_body (413, and no partial file kept), logout, and the app's own
# data directory removed on SIGTERM. smoke/webapp_browser runs the pages in Chromium.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

command -v curl >/dev/null 2>&1 || fail "no curl"
data=$SMOKE_TMP/a/b/data # deep enough that ../../evil.sh would still land in $SMOKE_TMP
mkdir -p "$data"
port=$(free_port)
WEBAPP_DATA=$data WEBAPP_SECRET=smoke-secret-smoke-secret start_server "$LOOM" "$LOOM_SRC/examples/webapp/app.lua" "$port"
wait_port "$port"
base=http://127.0.0.1:$port
jar=$SMOKE_TMP/cookies
out=$SMOKE_TMP/out
head=$SMOKE_TMP/head

# json_get FILE EXPR: print EXPR (Python, `j` the parsed JSON; a tuple space-separated)
json_get() {
    python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print(" ".join(map(str, v)) if isinstance(v, tuple) else v)' "$1" "$2"
}
# status ARGS...: curl's status code for the request, headers in $head, body in $out
status() {
    curl -sS -o "$out" -D "$head" -w '%{http_code}' "$@"
}

# the login page, with the security headers
[[ $(status "$base/") == 200 ]] || fail "GET / is not 200"
grep -q '<form id="login" method="post" action="/login">' "$out" || fail "GET / without a session is not the login form"
grep -qi '^x-frame-options: DENY' "$head" || fail "no X-Frame-Options"
grep -qi "^content-security-policy: default-src 'self'" "$head" || fail "no Content-Security-Policy"
grep -qi '^x-content-type-options: nosniff' "$head" || fail "no X-Content-Type-Options"
[[ $(status "$base/static/app.js") == 200 ]] && grep -q 'showUploads' "$out" || fail "GET /static/app.js"
# compression (compress = { min_size = 256 }): a page or file that comes coded says so with
# Vary, and curl --compressed gives the bytes of the identity answer; the JSON below is
# checked strictly (coded_json)
for path in / /static/app.js /static/app.css; do
    status "$base$path" >/dev/null
    cp "$out" "$SMOKE_TMP/plain"
    for ae in gzip br; do
        [[ $(status --compressed -H "Accept-Encoding: $ae" "$base$path") == 200 ]] || fail "GET $path ($ae)"
        cmp -s "$out" "$SMOKE_TMP/plain" || fail "GET $path with Accept-Encoding: $ae decodes to other bytes"
        if grep -qi '^content-encoding:' "$head"; then
            grep -qi "^content-encoding: $ae" "$head" || fail "GET $path asked for $ae: $(grep -i content-encoding "$head")"
            grep -qi '^vary: .*accept-encoding' "$head" || fail "GET $path is coded without Vary"
        fi
    done
done
# coded_json PATH ARGS...: GET PATH (curl args after it) coded gzip and br: Content-Encoding,
# Vary, and the same JSON as the identity answer (in $out afterwards)
coded_json() {
    local path=$1 ae
    shift
    status "$@" "$base$path" >/dev/null
    cp "$out" "$SMOKE_TMP/plain"
    grep -qi '^content-encoding:' "$head" && fail "GET $path without Accept-Encoding came coded"
    for ae in gzip br; do
        [[ $(status --compressed -H "Accept-Encoding: $ae" "$@" "$base$path") == 200 ]] || fail "GET $path ($ae)"
        grep -qi "^content-encoding: $ae" "$head" || fail "GET $path is not $ae coded: $(cat "$head")"
        grep -qi '^vary: .*accept-encoding' "$head" || fail "GET $path ($ae) has no Vary: Accept-Encoding"
        cmp -s "$out" "$SMOKE_TMP/plain" || fail "GET $path with Accept-Encoding: $ae decodes to other bytes"
    done
}
[[ $(status "$base/uploads") == 401 ]] || fail "GET /uploads without a session is not 401"

# a wrong password: back to the form, no session
[[ $(status -d user=demo -d password=wrong "$base/login") == 303 ]] || fail "a wrong login is not 303"
grep -qi '^location: /?login=failed' "$head" || fail "a wrong login does not go back to the form"
grep -qi '^set-cookie' "$head" && fail "a wrong login set a cookie"
[[ $(status -d user=nobody -d 'password=correct horse battery staple' "$base/login") == 303 ]] &&
    grep -qi '^location: /?login=failed' "$head" || fail "an unknown user logged in"

# the right one: a session cookie, HttpOnly and SameSite=Lax
[[ $(status -c "$jar" -d user=demo --data-urlencode 'password=correct horse battery staple' "$base/login") == 303 ]] ||
    fail "the demo login is not 303"
grep -qi '^location: /\s*$' "$head" || fail "the demo login does not redirect to /"
grep -i '^set-cookie: webapp_session=' "$head" | grep -i 'HttpOnly' | grep -qi 'SameSite=Lax' ||
    fail "no HttpOnly SameSite=Lax session cookie: $(grep -i set-cookie "$head")"
[[ $(status -b "$jar" "$base/") == 200 ]] && grep -q '<form id="upload"' "$out" || fail "GET / with the session is not the user's page"
[[ $(status -b "$jar" "$base/uploads") == 200 ]] || fail "GET /uploads with the session is not 200"
[[ $(json_get "$out" 'j["user"], len(j["uploads"])') == "demo 0" ]] || fail "GET /uploads: $(cat "$out")"

# uploads: two files in one form, a hostile filename among them
head -c 300000 /dev/urandom >"$SMOKE_TMP/photo.bin"
printf 'hello from curl\n' >"$SMOKE_TMP/note.txt"
[[ $(status -b "$jar" -F "file=@$SMOKE_TMP/photo.bin;type=image/png" \
    -F "file=@$SMOKE_TMP/note.txt;filename=../../evil.sh" -F other=ignored "$base/upload") == 303 ]] ||
    fail "the form upload is not 303: $(cat "$out")"
grep -qi '^location: /\s*$' "$head" || fail "the form upload does not redirect to /"
[[ $(status -b "$jar" -H 'Accept: application/json' -F "file=@$SMOKE_TMP/note.txt" "$base/upload") == 201 ]] ||
    fail "the JSON upload is not 201: $(cat "$out")"
[[ $(json_get "$out" 'j["saved"][0]["name"], j["saved"][0]["bytes"]') == "note.txt 16" ]] || fail "the JSON upload: $(cat "$out")"
mapfile -t saved < <(ls "$data")
((${#saved[@]} == 3)) || fail "the data directory holds ${#saved[@]} files, not 3: ${saved[*]}"
for f in "${saved[@]}"; do
    [[ $f =~ ^[0-9a-f]{32}$ ]] || fail "a file saved under a name that is not generated: $f"
done
[[ -z $(find "$SMOKE_TMP" -name evil.sh) ]] || fail "the client's filename was used as a path"
[[ $(status -b "$jar" "$base/uploads") == 200 ]] || fail "GET /uploads after the uploads"
[[ $(json_get "$out" '" ".join(u["name"] for u in j["uploads"])') == "photo.bin evil.sh note.txt" ]] ||
    fail "GET /uploads lists: $(cat "$out")"
[[ $(json_get "$out" 'j["uploads"][0]["bytes"], j["uploads"][0]["type"]') == "300000 image/png" ]] || fail "photo.bin: $(cat "$out")"
coded_json /uploads -b "$jar" # the list is over 256 bytes of JSON now: coded for who asks
id=$(json_get "$out" 'j["uploads"][0]["id"]')
cmp -s "$SMOKE_TMP/photo.bin" "$data/$id" || fail "the saved file differs from the one sent"
[[ $(status -b "$jar" "$base/uploads/$id") == 200 ]] || fail "the download is not 200"
cmp -s "$SMOKE_TMP/photo.bin" "$out" || fail "the download differs from the upload"
[[ $(status -b "$jar" -H 'Accept-Encoding: gzip, br' "$base/uploads/$id") == 200 ]] &&
    cmp -s "$SMOKE_TMP/photo.bin" "$out" || fail "the download asked for gzip differs from the upload"
grep -qi '^content-encoding:' "$head" && fail "a download (application/octet-stream) came coded"
grep -qi "^content-disposition: attachment; filename\*=UTF-8''photo.bin" "$head" || fail "the download's Content-Disposition"
grep -qi '^content-type: application/octet-stream' "$head" || fail "the download's Content-Type is the client's"
[[ $(status "$base/uploads/$id") == 401 ]] || fail "a download without the session"
[[ $(status -b "$jar" "$base/uploads/0123") == 404 ]] || fail "an unknown upload is not 404"

# CSRF: a cross-origin POST is refused before the handler runs, whatever the cookie
[[ $(status -b "$jar" -H 'Origin: http://evil.example' -F "file=@$SMOKE_TMP/note.txt" "$base/upload") == 403 ]] ||
    fail "a POST /upload from Origin: http://evil.example is not 403"
[[ $(status -b "$jar" -H 'Origin: http://evil.example' -X POST "$base/logout") == 403 ]] ||
    fail "a POST /logout from Origin: http://evil.example is not 403"
grep -qi '^set-cookie' "$head" && fail "a refused logout touched the cookie"
[[ $(status -b "$jar" -H 'Sec-Fetch-Site: cross-site' -d user=demo -d password=x "$base/login") == 403 ]] ||
    fail "a POST /login with Sec-Fetch-Site: cross-site is not 403"
[[ $(status -b "$jar" -H "Origin: $base" -H 'Accept: application/json' -F "file=@$SMOKE_TMP/note.txt" "$base/upload") == 201 ]] ||
    fail "a same-origin POST /upload (Origin: $base) is not 201"
n=$(ls "$data" | wc -l)
((n == 4)) || fail "the data directory holds $n files after the CSRF checks, not 4"

# max_body is 10 MiB: over it is 413, said at once (Content-Length) or found while reading
# (chunked), and no part of the upload is kept
head -c $((10 * 1024 * 1024 + 1)) /dev/zero >"$SMOKE_TMP/big.bin"
[[ $(status -b "$jar" -F "file=@$SMOKE_TMP/big.bin" "$base/upload") == 413 ]] || fail "a 10 MiB upload is not 413"
[[ $(status -b "$jar" -H 'Transfer-Encoding: chunked' -F "file=@$SMOKE_TMP/note.txt" \
    -F "file=@$SMOKE_TMP/big.bin" "$base/upload") == 413 ]] || fail "a chunked 10 MiB upload is not 413"
n=$(ls "$data" | wc -l)
((n == 4)) || fail "the data directory holds $n files after the 413s, not 4 (a partial upload was kept)"
[[ $(status -b "$jar" "$base/uploads") == 200 && $(json_get "$out" 'len(j["uploads"])') == 4 ]] ||
    fail "the 413s changed the list: $(cat "$out")"

# not found, then logout: the cookie is deleted and the session gone
[[ $(status "$base/nope") == 404 ]] && grep -q 'Nothing here' "$out" || fail "GET /nope is not the 404 page"
[[ $(status -b "$jar" -c "$jar" -X POST "$base/logout") == 303 ]] || fail "POST /logout is not 303"
grep -i '^set-cookie: webapp_session=;' "$head" | grep -qi 'Max-Age=0' || fail "logout did not delete the cookie"
[[ $(status -b "$jar" "$base/uploads") == 401 ]] || fail "GET /uploads after logout is not 401"
[[ $(status -b "$jar" "$base/") == 200 ]] && grep -q '<form id="login"' "$out" || fail "GET / after logout is not the login form"
stop_server
[[ $LOOM_SERVER_STATUS == 0 ]] || fail "the server exited with $LOOM_SERVER_STATUS on SIGTERM"

# without WEBAPP_DATA the app makes its own directory (in TMPDIR) and removes it on SIGTERM
mkdir "$SMOKE_TMP/tmp"
port=$(free_port)
TMPDIR=$SMOKE_TMP/tmp start_server "$LOOM" "$LOOM_SRC/examples/webapp/app.lua" "$port"
wait_port "$port"
own=$(ls "$SMOKE_TMP/tmp")
[[ $own == loom-webapp-* ]] || fail "no loom-webapp-* directory in TMPDIR: '$own'"
[[ $(stat -c %a "$SMOKE_TMP/tmp/$own") == 700 ]] || fail "the app's data directory is not 0700"
base=http://127.0.0.1:$port
status -c "$jar" -d user=demo --data-urlencode 'password=correct horse battery staple' "$base/login" >/dev/null
[[ $(status -b "$jar" -F "file=@$SMOKE_TMP/note.txt" "$base/upload") == 303 ]] || fail "an upload into the app's own directory"
[[ $(ls "$SMOKE_TMP/tmp/$own" | wc -l) == 1 ]] || fail "the upload is not in the app's own directory"
stop_server
[[ $LOOM_SERVER_STATUS == 0 ]] || fail "the server exited with $LOOM_SERVER_STATUS on SIGTERM"
[[ ! -e $SMOKE_TMP/tmp/$own ]] || fail "the app's own data directory was not removed at shutdown"
echo "ok: webapp"
