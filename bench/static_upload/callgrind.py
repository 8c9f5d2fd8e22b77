#!/usr/bin/python3
"""Instructions per static-file answer, which load does not change: each server under
valgrind's callgrind, N GETs of one file on one kept-alive connection, minus a run with none
(start-up and shutdown), divided by N. User space only (the kernel's copies are not counted).

    bench/static_upload/callgrind.py [--n 500] [--paths /static/64k.bin,/static/hello.txt]
                                     [--servers nginx,loom] 

Servers: nginx (its own static serving, `master_process off`, one process), loom ($LOOM_BIN,
default build/loom) and loom-before ($LOOM_BASE_BIN, when set). Files as run.py makes them:
13 bytes and 64 KiB. Standard library only.
"""
import argparse
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SMALL = b"Hello, World!"
BIG = bytes(range(256)) * 256
NGINX_CONF = """worker_processes 1;
master_process off;
daemon off;
error_log stderr error;
pid nginx.pid;
events { worker_connections 64; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:%d;
    location /static { root %s; }
  }
}
"""


def wait_port(port, p, secs=60):
    end = time.time() + secs
    while time.time() < end:
        if p.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def run_once(argv, cwd, port, path, n, expect):
    """Total instructions (Ir) of one server run answering n GETs of path."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + argv, cwd=cwd,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            if not wait_port(port, p):
                sys.exit("callgrind: %s did not listen on %d" % (argv[0], port))
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for _ in range(n):
                c.request("GET", path)
                r = c.getresponse()
                body = r.read()
                if r.status != 200 or body != expect:
                    sys.exit("callgrind: %s answered %d, %d bytes" % (argv[0], r.status, len(body)))
            c.close()
        finally:
            p.send_signal(signal.SIGINT)  # nginx without its master quits on INT (TERM went unheard)
            p.wait(timeout=120)
        text = open(out).read()
        return int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--paths", default="/static/64k.bin,/static/hello.txt")
    ap.add_argument("--servers", default="nginx,loom,loom-before")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="loom-cg-")
    www = os.path.join(tmp, "www")
    os.makedirs(os.path.join(www, "static"))
    for name, data in (("hello.txt", SMALL), ("64k.bin", BIG)):
        with open(os.path.join(www, "static", name), "wb") as f:
            f.write(data)
    ng = os.path.join(tmp, "nginx")
    os.makedirs(os.path.join(ng, "logs"))
    with open(os.path.join(ng, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF % (18221, www))
    loom_script = os.path.join(HERE, "loom.lua")
    servers = {
        "nginx": (["nginx", "-e", "stderr", "-p", ng, "-c", "nginx.conf"], 18221),
        "loom": ([os.path.abspath(os.environ.get("LOOM_BIN", os.path.join(ROOT, "build", "loom"))), loom_script, "18222"], 18222),
    }
    if os.environ.get("LOOM_BASE_BIN"):
        servers["loom-before"] = ([os.path.abspath(os.environ["LOOM_BASE_BIN"]), loom_script, "18223"], 18223)
    os.environ.setdefault("UPLOAD_DIR", tmp)
    print("| path | server | instructions/answer (user space) |\n|---|---|---|")
    for path in a.paths.split(","):
        expect = BIG if path.endswith("64k.bin") else SMALL
        for name in a.servers.split(","):
            if name not in servers:
                continue
            argv, port = servers[name]
            base = run_once(argv, www, port, path, 1, expect)
            full = run_once(argv, www, port, path, a.n + 1, expect)
            print("| %s | %s | %.0f |" % (path, name, (full - base) / a.n), flush=True)


if __name__ == "__main__":
    main()
