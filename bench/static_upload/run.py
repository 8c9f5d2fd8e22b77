#!/usr/bin/python3
"""Issue 13's static-file and upload shapes: loom (before and after) beside nginx+Lua and Node.

    bench/static_upload/run.py [--rounds 3] [--secs 5] [--profiles static-13,multipart-1m] [--no-rss]

Reuses ../shared/bench/profiles/run.py (its harness: servers pinned to cpu0, wrk to cpu1,
interleaved rounds started afresh, checks before and after the load, medians, server CPU per
request, the quiet-wait guard) with these shapes:
    static-13     GET /static/hello.txt     13-byte file
    static-64k    GET /static/64k.bin       65536-byte file
    upload        POST /upload              64 KiB body read piece by piece, answered with its length
    multipart-1m  POST /multipart           multipart/form-data, one 1 MiB file part saved to disk
                                            (loom: req:parts() + part:save; Node: busboy from npm
                                            piped to fs.createWriteStream; nginx+Lua: read_body,
                                            the part found with string.find, written with io.open)
Servers: nginx+lua (static by nginx itself), node (http), loom ($LOOM_BIN, default build/loom)
and loom-before ($LOOM_BASE_BIN, when set: the same script on an older build).
Then, unless --no-rss: one 256 MiB multipart upload streamed to each loom, its peak RSS
(VmHWM) after. Node's busboy comes from npm (`npm install` in this folder, done here when
node_modules is missing). Standard library only; run with Debian's /usr/bin/python3.
"""
import http.client
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SHARED = os.environ.get("LOOM_SHARED_BENCH", os.path.join(os.path.dirname(ROOT), "shared", "bench"))
_spec = importlib.util.spec_from_file_location("profiles_run", os.path.join(SHARED, "profiles", "run.py"))
R = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(R)
H = R.H

LOOM_BIN = os.environ.get("LOOM_BIN", os.path.join(ROOT, "build", "loom"))
LOOM_BASE_BIN = os.environ.get("LOOM_BASE_BIN")
BOUNDARY = "----loombench7MA4YWxkTrZu0gW"
PART = b"0123456789abcdef" * 65536  # what multipart.lua sends: 1 MiB
MULTIPART = (("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
              "Content-Type: application/octet-stream\r\n\r\n" % BOUNDARY).encode() + PART
             + ("\r\n--%s--\r\n" % BOUNDARY).encode())

R.PROFILES = [p for p in R.PROFILES if p["name"] in ("upload", "static-13", "static-64k")] + [
    dict(name="multipart-1m", method="POST", path="/multipart", ctype="text/plain", expect=str(len(PART)).encode(),
         body=MULTIPART, body_type="multipart/form-data; boundary=" + BOUNDARY,
         script=os.path.join(HERE, "multipart.lua")),
]


def check_all(port, profiles):
    """As run.py's, with each POST's own body (the multipart one for multipart-1m)."""
    out, c = {}, http.client.HTTPConnection(H.HOST, port, timeout=30)
    for prof in profiles:
        r = {}
        try:
            body = prof.get("body", R.UPLOAD) if prof["method"] == "POST" else None
            headers = {"Content-Type": prof.get("body_type", "application/octet-stream")} if body else {}
            c.request(prof["method"], prof["path"], body=body, headers=headers)
            resp = c.getresponse()
            got = resp.read()
            r = dict(status=resp.status, content_type=resp.getheader("content-type") or "", bytes=len(got))
            if resp.status != 200 or got != prof["expect"]:
                r["error"] = "status %d, body %r (%d bytes)" % (resp.status, got[:40], len(got))
        except (OSError, http.client.HTTPException) as e:
            r["error"] = "%s: %s" % (type(e).__name__, e)
            c.close()
        out[prof["name"]] = r
    c.close()
    return out


_wrk = R.wrk


def wrk(port, prof, secs, conns):
    if "script" not in prof:
        return _wrk(port, prof, secs, conns)
    script = os.path.join(HERE, "post.lua")           # run.py's wrk() adds post.lua for a POST:
    shutil.copyfile(prof["script"], script)          # give it this shape's script under that name
    try:
        saved = R.HERE
        R.HERE = HERE
        return _wrk(port, prof, secs, conns)
    finally:
        R.HERE = saved
        os.remove(script)


def server_rows(tmp, root):
    d = os.path.join(tmp, "nginx")
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    text = open(os.path.join(HERE, "nginx_lua.conf")).read().replace("@PORT@", "18211").replace(
        "@ROOT@", root).replace("@UPLOAD_DIR@", os.environ["UPLOAD_DIR"])
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(text)
    rows = [
        dict(name="nginx+lua", port=18211, argv=["nginx", "-e", "stderr", "-p", d, "-c", "nginx.conf"],
             what="nginx 1 worker: static by `location /static { root }`; uploads by content_by_lua_block "
                  "(read_body; multipart: string.find + io.open)"),
        dict(name="node", port=18212, argv=["node", os.path.join(HERE, "node.js"), "18212", root],
             what="node %s http; static: fs.promises.stat + createReadStream().pipe(res); multipart: busboy "
                  "piped to fs.createWriteStream" % H.sh("node --version")),
        dict(name="loom", port=18214, cwd=root, argv=[LOOM_BIN, os.path.join(HERE, "loom.lua"), "18214"],
             what="loom %s: app:static, req:chunks(), req:parts() + part:save" % LOOM_BIN),
    ]
    if LOOM_BASE_BIN:
        rows.append(dict(name="loom-before", port=18215, cwd=root,
                         argv=[LOOM_BASE_BIN, os.path.join(HERE, "loom.lua"), "18215"],
                         what="the same script on %s" % LOOM_BASE_BIN))
    return rows


def big_upload(binary, port, size, tmp):
    """Streams one multipart body with a `size`-byte file part to loom; -> (status, answer, VmHWM kB)."""
    log = open(os.path.join(tmp, "rss-%d.log" % port), "ab")
    p = H.start([binary, os.path.join(HERE, "loom.lua"), str(port)], log, cwd=tmp)
    try:
        if not H.wait_port(port, p):
            return None, "did not listen", None
        head = ("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n" % BOUNDARY).encode()
        tail = ("\r\n--%s--\r\n" % BOUNDARY).encode()
        c = http.client.HTTPConnection(H.HOST, port, timeout=120)
        c.putrequest("POST", "/multipart")
        c.putheader("Content-Type", "multipart/form-data; boundary=" + BOUNDARY)
        c.putheader("Content-Length", str(len(head) + size + len(tail)))
        c.endheaders()
        c.send(head)
        block = b"z" * (1 << 20)
        for _ in range(size >> 20):
            c.send(block)
        c.send(tail)
        r = c.getresponse()
        answer = r.read()
        return r.status, answer.decode(errors="replace"), H.rss_kb(p.pid, "VmHWM")
    finally:
        H.stop(p)
        log.close()


def main():
    no_rss = "--no-rss" in sys.argv
    sys.argv = [a for a in sys.argv if a != "--no-rss"]
    if not os.path.isdir(os.path.join(HERE, "node_modules", "busboy")):
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=HERE, check=True)
    up = tempfile.mkdtemp(prefix="loom-uploads-")
    os.chmod(up, 0o777)                                 # nginx's worker (nobody) writes there too
    os.environ["UPLOAD_DIR"] = up
    R.check_all, R.wrk, R.server_rows = check_all, wrk, server_rows
    try:
        R.main()
        if not no_rss:
            print("\n#### one 256 MiB multipart upload saved with part:save: peak RSS (VmHWM)\n")
            print("| server | status | answer | peak RSS MB |\n|---|---|---|---|")
            for name, binary, port in (("loom", LOOM_BIN, 18216), ("loom-before", LOOM_BASE_BIN, 18217)):
                if binary:
                    st, ans, hwm = big_upload(binary, port, 256 << 20, up)
                    print("| %s | %s | %s | %s |" % (name, st, ans[:40], "%.1f" % (hwm / 1024) if hwm else "-"))
    finally:
        shutil.rmtree(up, ignore_errors=True)


if __name__ == "__main__":
    main()
