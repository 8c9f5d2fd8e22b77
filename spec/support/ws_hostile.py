#!/usr/bin/env python3
"""Hostile websocket servers for spec/fault_websocket_spec.lua: plain sockets, no library.

  ws_hostile.py MODE RENDEZVOUS_PORT
      Listens on a free loopback port and tells the spec its port by connecting to
      127.0.0.1:RENDEZVOUS_PORT and writing "PORT\\n". Accepts one connection, reads the
      upgrade request's head, then, by MODE:
        endless-head  answers "HTTP/1.1 101 Switching Protocols" and then header lines of
                      1000 bytes as fast as the client takes them, never ending the head
        trickle-head  answers the same status line, then header lines ("X-N: 1", each
                      under a second), one byte every 100 ms, never ending the head
      until the client goes away (or 60 s pass: a hang guard), and exits 0; 3 when the
      client went away before its request's head was whole.
"""
import socket
import sys
import time

GUARD = 60  # seconds: never outlive a spec that failed to end us


def serve(mode, rendezvous_port):
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        with socket.create_connection(("127.0.0.1", rendezvous_port)) as s:
            s.sendall(f"{port}\n".encode())
        conn, _ = srv.accept()
    start = time.monotonic()
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(4096)
            if not data:
                return 3
            head += data
        status = b"HTTP/1.1 101 Switching Protocols\r\n"
        try:
            if mode == "endless-head":
                conn.sendall(status)
                line = b"X-Pad: " + b"p" * 991 + b"\r\n"  # 1000 bytes
                chunk = line * 64
                while time.monotonic() - start < GUARD:
                    conn.sendall(chunk)
            elif mode == "trickle-head":
                conn.sendall(status)
                n = 1
                data = b"X-1: 1\r\n"
                while time.monotonic() - start < GUARD:
                    for i in range(len(data)):
                        conn.sendall(data[i:i + 1])
                        time.sleep(0.1)
                    n += 1
                    data = f"X-{n}: 1\r\n".encode()
            else:
                raise SystemExit(f"unknown mode {mode}")
        except OSError:  # the client went away: what we came for
            pass
    return 0


def main():
    return serve(sys.argv[1], int(sys.argv[2]))


if __name__ == "__main__":
    sys.exit(main())
