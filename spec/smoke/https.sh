#!/usr/bin/env bash
# smoke/https: app:listen{tls = ...} seen by third-party clients. With a throwaway CA and
# two certificates made by openssl now (spec/support/make_certs.sh):
#   - curl trusting only the test CA reaches the server, by name and by IP, twice on one
#     connection, and posts a body;
#   - SNI picks b.test's certificate for b.test; a name no certificate has (and no SNI at
#     all) gets the default, the first one (openssl s_client shows the subject);
#   - a client that opens TCP and never handshakes is dropped after header_timeout, and
#     the server answers others meanwhile;
#   - TLS 1.0 and 1.1 are refused, by the server and by the client (openssl s_client and
#     s_server, allowed to offer them).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

certs=$SMOKE_TMP/certs
bash "$LOOM_SRC/spec/support/make_certs.sh" "$certs"
cat >"$SMOKE_TMP/server.lua" <<EOF
local app = loom.app{ header_timeout = 1 }
app:get("/hello", function(req) return "hello " .. req.remote end)
app:post("/len", function(req) return tostring(#req:text()) end)
app:run{ host = "127.0.0.1", port = tonumber(arg[1]), access_log = false, tls = {
    { cert = "$certs/a.pem", key = "$certs/a.key" },
    { cert = "$certs/b.pem", key = "$certs/b.key" },
} }
EOF
port=$(free_port)
start_server "$LOOM" "$SMOKE_TMP/server.lua" "$port"
wait_port "$port"
grep -q "listening on https://127.0.0.1:$port" "$LOOM_SERVER_LOG" || fail "no 'listening on https://' line"

curl_ca() { curl -sS --max-time 5 --cacert "$certs/ca.pem" "$@"; }

# curl, verifying against the test CA only
[[ $(curl_ca "https://127.0.0.1:$port/hello") == "hello 127.0.0.1" ]] || fail "curl by IP"
[[ $(curl_ca --resolve "a.test:$port:127.0.0.1" "https://a.test:$port/hello") == "hello 127.0.0.1" ]] ||
    fail "curl by name"
out=$(curl_ca -v --resolve "b.test:$port:127.0.0.1" "https://b.test:$port/hello" "https://b.test:$port/hello" 2>&1)
[[ $(grep -c "hello 127.0.0.1" <<<"$out") == 2 ]] || fail "two requests on one connection: $out"
grep -q "Re-using existing connection" <<<"$out" || fail "curl did not reuse the connection"
head -c 300000 /dev/zero | tr '\0' x >"$SMOKE_TMP/body"
[[ $(curl_ca --data-binary "@$SMOKE_TMP/body" "https://127.0.0.1:$port/len") == 300000 ]] || fail "POST body"
# a client that does not trust the CA is refused by curl, as it must be
if curl -sS --max-time 5 "https://127.0.0.1:$port/hello" >/dev/null 2>&1; then
    fail "curl accepted the server without the test CA"
fi

# the certificate each SNI name gets
subject() { # servername or "" for none
    local sni=()
    [[ -n $1 ]] && sni=(-servername "$1")
    openssl s_client -connect "127.0.0.1:$port" "${sni[@]}" </dev/null 2>/dev/null |
        openssl x509 -noout -subject 2>/dev/null | sed 's/ //g'
}
[[ $(subject b.test) == "subject=CN=b.test" ]] || fail "SNI b.test got $(subject b.test)"
[[ $(subject x.b.test) == "subject=CN=b.test" ]] || fail "SNI x.b.test got $(subject x.b.test)"
[[ $(subject a.test) == "subject=CN=a.test" ]] || fail "SNI a.test got $(subject a.test)"
[[ $(subject wrong.example) == "subject=CN=a.test" ]] || fail "a wrong SNI got $(subject wrong.example)"
[[ $(subject "") == "subject=CN=a.test" ]] || fail "no SNI got $(subject "")"

# TLS 1.0 and 1.1: refused by the server; 1.2 taken
tls_version() { # -tls1_1 etc.: the protocol openssl s_client ends up with, "(NONE)" when refused
    openssl s_client -connect "127.0.0.1:$port" "$1" -cipher 'DEFAULT:@SECLEVEL=0' </dev/null 2>/dev/null |
        sed -n 's/^New, \([^,]*\),.*/\1/p'
}
for v in -tls1 -tls1_1; do
    [[ $(tls_version $v) == "(NONE)" ]] || fail "the server accepted $v: $(tls_version $v)"
done
[[ $(tls_version -tls1_2) == "TLSv1.2" ]] || fail "the server refused TLS 1.2: $(tls_version -tls1_2)"

# TLS 1.2 suites: forward-secret AEAD ones only (with these P-256 certificates, ECDHE-ECDSA)
tls_cipher() { # port, suite: what openssl s_client ends up with offering only it, "(NONE)" if refused
    openssl s_client -connect "127.0.0.1:$1" -tls1_2 -cipher "$2" </dev/null 2>/dev/null |
        sed -n 's/^New, [^,]*, Cipher is \(.*\)$/\1/p'
}
for c in ECDHE-ECDSA-AES128-SHA ECDHE-ECDSA-AES256-SHA ECDHE-ECDSA-AES128-SHA256 ECDHE-ECDSA-AES128-CCM; do
    [[ $(tls_cipher "$port" $c) == "(NONE)" ]] || fail "the server accepted $c"
done
for c in ECDHE-ECDSA-AES128-GCM-SHA256 ECDHE-ECDSA-AES256-GCM-SHA384 ECDHE-ECDSA-CHACHA20-POLY1305; do
    [[ $(tls_cipher "$port" $c) == "$c" ]] || fail "the server refused $c: $(tls_cipher "$port" $c)"
done

# a silent client: dropped after header_timeout (1 s); others are served meanwhile. The
# bound is a guard for a loaded machine, well below the default header_timeout (30 s).
exec 3<>"/dev/tcp/127.0.0.1/$port"
start=$SECONDS
[[ $(curl_ca "https://127.0.0.1:$port/hello") == "hello 127.0.0.1" ]] || fail "served while one stalls"
if ! timeout 10 cat <&3 >/dev/null; then
    fail "the silent client was not dropped within 10 s"
fi
exec 3<&-
((SECONDS - start <= 10)) || fail "the silent client was dropped late"
stop_server

# with an RSA certificate: ECDHE-RSA with AEAD, never the plain RSA key exchange (no
# forward secrecy) that mbedTLS 2.28's default list keeps for old clients
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$certs/rsa.key" -out "$certs/rsa.pem" \
    -subj "/CN=rsa.test" >/dev/null 2>&1 || fail "openssl could not make an RSA certificate"
cat >"$SMOKE_TMP/rsa.lua" <<EOF
local app = loom.app()
app:get("/", function() return "rsa" end)
app:run{ host = "127.0.0.1", port = tonumber(arg[1]), access_log = false,
    tls = { cert = "$certs/rsa.pem", key = "$certs/rsa.key" } }
EOF
rport=$(free_port)
start_server "$LOOM" "$SMOKE_TMP/rsa.lua" "$rport"
wait_port "$rport"
for c in AES128-GCM-SHA256 AES256-GCM-SHA384 AES128-SHA ECDHE-RSA-AES128-SHA; do
    [[ $(tls_cipher "$rport" $c) == "(NONE)" ]] || fail "the RSA server accepted $c"
done
for c in ECDHE-RSA-AES128-GCM-SHA256 ECDHE-RSA-CHACHA20-POLY1305; do
    [[ $(tls_cipher "$rport" $c) == "$c" ]] || fail "the RSA server refused $c: $(tls_cipher "$rport" $c)"
done
stop_server

# the client refuses a server that speaks only TLS 1.1
tport=$(free_port)
start_server openssl s_server -accept "$tport" -cert "$certs/a.pem" -key "$certs/a.key" -tls1_1 \
    -cipher 'DEFAULT:@SECLEVEL=0' -www
wait_port "$tport"
out=$("$LOOM" -e "print(loom.fetch('https://127.0.0.1:$tport/', { tls = { ca_file = '$certs/ca.pem' } }))" 2>&1)
[[ $out == *"tls: handshake failed"* ]] || fail "the client took TLS 1.1: $out"
stop_server
echo "ok: https"
