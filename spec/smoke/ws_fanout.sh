#!/usr/bin/env bash
# smoke/ws_fanout: examples/ws_fanout.lua twice (two ports) on one redis-server
# (spec/support/redis_server.sh): a python3-websockets client on each instance; what one
# sends, both receive, through Redis pub/sub; SIGTERM ends both with status 0.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

python=/usr/bin/python3
"$python" -c 'import websockets' 2>/dev/null || fail "no python3-websockets (apt-get install python3-websockets)"
redis_out=$(bash "$LOOM_SRC/spec/support/redis_server.sh" start) || fail "redis-server did not start"
redis_dir=$(sed -n 's/^dir=//p' <<<"$redis_out")
redis_port=$(sed -n 's/^port=//p' <<<"$redis_out")
on_exit bash "$LOOM_SRC/spec/support/redis_server.sh" stop "$redis_dir"

port1=$(free_port)
start_server "$LOOM" "$LOOM_SRC/examples/ws_fanout.lua" "$port1" "redis://127.0.0.1:$redis_port"
pid1=$LOOM_SERVER_PID
port2=$(free_port)
start_server "$LOOM" "$LOOM_SRC/examples/ws_fanout.lua" "$port2" "redis://127.0.0.1:$redis_port"
pid2=$LOOM_SERVER_PID
wait_port "$port1"
wait_port "$port2"

PORT1=$port1 PORT2=$port2 timeout 30 "$python" - <<'PY' || fail "a message sent to one instance did not reach the other"
import asyncio, json, os
import websockets

async def main():
    a = await websockets.connect(f"ws://127.0.0.1:{os.environ['PORT1']}/ws")
    b = await websockets.connect(f"ws://127.0.0.1:{os.environ['PORT2']}/ws")
    # both handlers have subscribed once a message of their own comes back: send until then
    async def ready(ws, tag):
        while True:
            await ws.send(tag)
            try:
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                    if msg["text"] == tag:
                        return
            except asyncio.TimeoutError:
                pass
    await ready(a, "ready-a")
    await ready(b, "ready-b")
    await a.send("hello from a")
    async def expect(ws, text):
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg["text"] == text:
                return msg
    got_b = await expect(b, "hello from a")
    got_a = await expect(a, "hello from a")
    assert got_b["from"].endswith(":" + os.environ["PORT1"]), got_b
    assert got_a == got_b
    await b.send("and back from b")
    got = await expect(a, "and back from b")
    assert got["from"].endswith(":" + os.environ["PORT2"]), got
    await a.close()
    await b.close()
    print("ws_fanout: a -> b and b -> a through Redis")

asyncio.run(main())
PY
kill -TERM "$pid1" "$pid2"
for _ in $(seq 200); do
    kill -0 "$pid1" 2>/dev/null || kill -0 "$pid2" 2>/dev/null || break
    sleep 0.05
done
for p in "$pid1" "$pid2"; do
    kill -0 "$p" 2>/dev/null && fail "instance $p still runs 10 s after SIGTERM"
    wait "$p" || fail "instance $p exited with $?"
done
echo "ok: ws_fanout"
