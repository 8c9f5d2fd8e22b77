#!/usr/bin/env bash
# spec/support/make_certs.sh DIR: a throwaway test CA and two server certificates, made
# with openssl at test time (no key is ever committed):
#   DIR/ca.pem                 the CA (what clients trust: curl --cacert, tls.ca_file)
#   DIR/a.pem, DIR/a.key       for a.test, localhost and 127.0.0.1
#   DIR/b.pem, DIR/b.key       for b.test and *.b.test
# P-256 keys: quick to make and to handshake with. Quiet unless something fails.
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
[[ -s ca.pem && -s a.pem && -s b.pem ]] && exit 0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
{
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout ca.key -out ca.pem -subj "/CN=loom test CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    make_cert() { # name, subjectAltName
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
            -out "$1.csr" -subj "/CN=$1.test"
        printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$2" >"$1.ext"
        openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile "$1.ext" -out "$1.pem"
    }
    make_cert a "DNS:a.test,DNS:localhost,IP:127.0.0.1"
    make_cert b "DNS:b.test,DNS:*.b.test"
} >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
