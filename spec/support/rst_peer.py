"""spec/support/rst_peer.py: a TCP client that a spec drives line by line on stdin, for
faults a loom stream cannot make: above all a reset (RST) instead of a graceful close.

    connect PORT      connect to 127.0.0.1:PORT
    send TEXT         send TEXT; Python escapes are decoded (\\r\\n, \\x00)
    expect TEXT       read until what came so far contains TEXT (escapes decoded)
    recv N            read until at least N bytes came in all
    rst               SO_LINGER {on, 0} and close: the kernel sends RST, not FIN
    close             close gracefully (FIN)

Every read gives up after 5 seconds. The process exits 0 at the end of stdin, or 1 with
a message on stderr at the first command that fails, so the spec sees a failure when it
closes the pipe.
"""
import codecs
import socket
import struct
import sys

TIMEOUT = 5


def decode(text):
    return codecs.escape_decode(text.encode("latin-1"))[0]


def main():
    sock = None
    got = b""
    for line in sys.stdin:
        cmd, _, arg = line.rstrip("\n").partition(" ")
        if cmd == "connect":
            sock = socket.create_connection(("127.0.0.1", int(arg)), timeout=TIMEOUT)
        elif cmd == "send":
            sock.sendall(decode(arg))
        elif cmd == "expect":
            want = decode(arg)
            while want not in got:
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("closed before %r came (got %r)" % (want, got[:200]))
                got += data
        elif cmd == "recv":
            while len(got) < int(arg):
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("closed after %d of %s bytes" % (len(got), arg))
                got += data
        elif cmd == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            sock = None
        elif cmd == "close":
            sock.close()
            sock = None
        else:
            raise RuntimeError("unknown command %r" % cmd)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - any failure is the spec's failure
        print("rst_peer: %s" % e, file=sys.stderr)
        sys.exit(1)
