#!/usr/bin/env python3
"""A third-party WebSocket peer (Debian's python3-websockets) for spec/websocket_interop_spec.lua.

  ws_peer.py server RENDEZVOUS_PORT
      An echo server on a free loopback port. It tells the spec its port by connecting to
      127.0.0.1:RENDEZVOUS_PORT and writing "PORT\\n". Text commands besides echo:
        frag:A|B|C      answers "ABC" as a fragmented text message (fragments A, B, C)
        ping:DATA       pings the client with DATA, waits for the pong, answers "pong:DATA"
        close:CODE:WHY  closes with that code and reason
        closes          answers the close codes and reasons it received, as JSON
        quit            answers "bye", closes, and ends the process
  ws_peer.py client URL
      Runs the checks below against loom's server at URL (an echo endpoint; URL + "-closer"
      closes with 4002 "loom bye" after the first message; URL + "-frag" answers every
      message as three fragments). Prints one line per check; exits 0 when all pass.
"""
import asyncio
import json
import socket
import sys

import websockets

MiB = 1 << 20


async def serve(rendezvous_port):
    done = asyncio.get_running_loop().create_future()
    closes = []

    async def handler(ws, path=None):
        try:
            async for msg in ws:
                if isinstance(msg, bytes):
                    await ws.send(msg)
                elif msg.startswith("frag:"):
                    await ws.send(msg[5:].split("|"))
                elif msg.startswith("ping:"):
                    waiter = await ws.ping(msg[5:].encode())
                    await asyncio.wait_for(waiter, 5)
                    await ws.send("pong:" + msg[5:])
                elif msg.startswith("close:"):
                    _, code, why = msg.split(":", 2)
                    await ws.close(int(code), why)
                elif msg == "closes":
                    await ws.send(json.dumps(closes))
                elif msg == "quit":
                    await ws.send("bye")
                    await ws.close()
                    if not done.done():
                        done.set_result(None)
                else:
                    await ws.send(msg)
        except websockets.ConnectionClosed:
            pass  # a close with a code other than 1000 or 1001 ends `async for` this way
        finally:
            if ws.close_code is not None:
                closes.append([ws.close_code, ws.close_reason])

    async with websockets.serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", rendezvous_port)) as s:
            s.sendall(f"{port}\n".encode())
        await asyncio.wait_for(done, 60)


def check(name, ok, detail=""):
    print(f"ws_peer client: {'ok' if ok else 'FAILED'} {name} {detail}", flush=True)
    return ok


async def client(url):
    ok = True
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send("héllo")
        ok &= check("text", await ws.recv() == "héllo")
        blob = bytes(range(256)) * 4
        await ws.send(blob)
        ok &= check("binary", await ws.recv() == blob)
        big = bytes(i % 251 for i in range(MiB))
        await ws.send(big)
        ok &= check("1 MiB", await ws.recv() == big)
        await ws.send(["frag", "mented ", "téxt"])
        ok &= check("fragmented to loom", await ws.recv() == "fragmented téxt")
        waiter = await ws.ping(b"py-ping")
        await asyncio.wait_for(waiter, 5)
        ok &= check("ping answered", True)
        await ws.close(4000, "py bye")
        ok &= check("close code echoed", ws.close_code == 4000, str(ws.close_code))
    async with websockets.connect(url + "-frag", max_size=None) as ws:
        await ws.send("abcdef")
        ok &= check("fragmented from loom", await ws.recv() == "abcdef")
    async with websockets.connect(url + "-closer") as ws:
        await ws.send("first")
        try:
            await ws.recv()
            ok &= check("loom's close", False, "a message instead of the close")
        except websockets.ConnectionClosed as e:
            ok &= check("loom's close", (e.rcvd.code, e.rcvd.reason) == (4002, "loom bye"), str(e))
    return ok


def main():
    if sys.argv[1] == "server":
        asyncio.run(serve(int(sys.argv[2])))
        return 0
    return 0 if asyncio.run(client(sys.argv[2])) else 1


if __name__ == "__main__":
    sys.exit(main())
