#!/usr/bin/env bash
# smoke/server_python: a loom server process (spec/fixtures/server_app.lua) answers Python's
# http.client and requests: keep-alive on one socket, POST bodies, a chunked upload
# (encode_chunked, and a generator body with requests), HEAD, 404 and 405.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

python=/usr/bin/python3
port=$(free_port)
start_server "$LOOM" "$LOOM_SRC/spec/fixtures/server_app.lua" "$port"
wait_port "$port"

PORT=$port timeout 30 "$python" - <<'PY' || fail "http.client exchange"
import http.client, json, os, zlib

port = int(os.environ["PORT"])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

def req(method, path, body=None, headers={}, **kw):
    conn.request(method, path, body=body, headers=headers, **kw)
    res = conn.getresponse()
    return res, res.read()

# keep-alive: every request below goes over this one socket
res, body = req("GET", "/")
assert res.status == 200 and body == b"hello from loom\n", (res.status, body)
assert res.getheader("content-length") == str(len(body))
assert res.getheader("date")
sock = conn.sock
res, first = req("GET", "/conn")
res, second = req("GET", "/conn")
assert first == second, (first, second)

res, body = req("POST", "/echo", body=b"a=1&b=2", headers={"Content-Type": "application/x-www-form-urlencoded"})
assert res.status == 200 and body == b"a=1&b=2"
assert res.getheader("content-type") == "application/x-www-form-urlencoded"

data = os.urandom(1 << 20)
res, body = req("POST", "/echo", body=data, headers={"Content-Type": "application/octet-stream"})
assert body == data

pieces = [os.urandom(n) for n in (1, 1000, 65536, 200000, 7)]
res, body = req("PUT", "/upload", body=iter(pieces), encode_chunked=True)
got = json.loads(body)
whole = b"".join(pieces)
assert got == {"bytes": len(whole), "adler32": zlib.adler32(whole), "chunked": True}, got

res, body = req("HEAD", "/json")
head_len = res.getheader("content-length")
assert res.status == 200 and body == b""
res, body = req("GET", "/json")
assert head_len == str(len(body)) and json.loads(body) == {"name": "loom", "list": [1, 2, 3]}

res, body = req("GET", "/missing")
assert res.status == 404 and body == b"Not Found"
res, body = req("DELETE", "/upload")
assert res.status == 405 and res.getheader("allow") == "PUT", res.getheaders()

assert conn.sock is sock, "the connection was replaced"
conn.close()
print("http.client: ok")
PY

PORT=$port timeout 30 "$python" - <<'PY' || fail "requests exchange"
import json, os, zlib
import requests

base = f"http://127.0.0.1:{os.environ['PORT']}"
with requests.Session() as s:
    r = s.get(base + "/", timeout=10)
    assert r.status_code == 200 and r.text == "hello from loom\n"
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    a = s.get(base + "/conn", timeout=10).text
    b = s.get(base + "/conn", timeout=10).text
    assert a == b, (a, b)   # the session kept the connection
    r = s.post(base + "/echo", json={"k": [1, 2]}, timeout=10)
    assert r.json() == {"k": [1, 2]} and r.headers["Content-Type"] == "application/json"
    def gen():
        for i in range(50):
            yield bytes([i]) * 1000
    r = s.put(base + "/upload", data=gen(), timeout=10)
    whole = b"".join(bytes([i]) * 1000 for i in range(50))
    assert r.json() == {"bytes": 50000, "adler32": zlib.adler32(whole), "chunked": True}, r.text
    r = s.head(base + "/json", timeout=10)
    assert r.status_code == 200 and r.content == b"" and int(r.headers["Content-Length"]) > 0
    assert s.get(base + "/nope", timeout=10).status_code == 404
print("requests: ok")
PY

# A client that leaves in the middle of an upload: the handler's req:chunks() raises
# "closed: ...", which is the client's doing, not a handler error to log.
PORT=$port timeout 30 "$python" - <<'PY' || fail "abandoned upload"
import http.client, os, socket, time
port = int(os.environ["PORT"])
def uploads():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/uploads")
    return int(c.getresponse().read())
before = uploads()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"PUT /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
s.close()  # before or after the handler reached req:chunks(), it sees the client gone
deadline = time.time() + 10
while uploads() == before:
    assert time.time() < deadline, "the upload handler did not end"
    time.sleep(0.02)
print("abandoned upload: handler ended")
PY
if grep -q "error in handler" "$LOOM_SERVER_LOG"; then
    cat "$LOOM_SERVER_LOG" >&2
    fail "a client leaving mid-upload was logged as a handler error"
fi

stop_server
[[ $LOOM_SERVER_STATUS == 0 ]] || fail "the server exited with $LOOM_SERVER_STATUS after SIGTERM"
echo "ok: python"
