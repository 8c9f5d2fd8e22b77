#!/usr/bin/env bash
# smoke/chat: examples/chat/server.lua serves its page and script, relays every message to
# every client (two python3-websockets clients), and on SIGTERM closes the websockets with
# 1001 and exits 0. smoke/chat_browser runs the page itself in Chromium.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

python=/usr/bin/python3
"$python" -c 'import websockets' 2>/dev/null || fail "no python3-websockets (apt-get install python3-websockets)"
port=$(free_port)
start_server "$LOOM" "$LOOM_SRC/examples/chat/server.lua" "$port"
wait_port "$port"
base=http://127.0.0.1:$port
curl -fsS "$base/" | grep -q '<script src="chat.js">' || fail "GET / is not the chat page"
curl -fsS "$base/chat.js" | grep -q 'new WebSocket' || fail "GET /chat.js is not the script"
[[ $(curl -sS -o /dev/null -w '%{content_type}' "$base/chat.js") == text/javascript* ]] || fail "chat.js type"

PORT=$port SERVER_PID=$LOOM_SERVER_PID timeout 20 "$python" - <<'PY' || fail "the chat did not relay messages or close with 1001"
import asyncio, json, os, signal
import websockets

async def expect(ws, **want):
    msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert all(msg.get(k) == v for k, v in want.items()), (msg, want)

async def main():
    url = f"ws://127.0.0.1:{os.environ['PORT']}/ws"
    async with websockets.connect(url + "?name=ann") as ann, websockets.connect(url + "?name=bob") as bob:
        await expect(ann, kind="join", name="ann")
        await expect(ann, kind="join", name="bob")
        await expect(bob, kind="join", name="bob")
        await ann.send(json.dumps({"text": "hello, bob"}))
        await expect(bob, kind="message", name="ann", text="hello, bob")
        await expect(ann, kind="message", name="ann", text="hello, bob")
        await bob.send("not json")  # ignored, and nothing breaks
        await bob.send(json.dumps({"text": "hi ann"}))
        await expect(ann, kind="message", name="bob", text="hi ann")
        os.kill(int(os.environ["SERVER_PID"]), signal.SIGTERM)
        try:
            while True:
                await asyncio.wait_for(ann.recv(), 5)
        except websockets.ConnectionClosed as e:
            assert e.rcvd and e.rcvd.code == 1001, e
    print("chat: relayed, then closed with 1001")

asyncio.run(main())
PY
for _ in $(seq 200); do kill -0 "$LOOM_SERVER_PID" 2>/dev/null || break; sleep 0.05; done
kill -0 "$LOOM_SERVER_PID" 2>/dev/null && fail "the server still runs 10 s after SIGTERM"
stop_server
[[ $LOOM_SERVER_STATUS == 0 ]] || fail "the server exited with $LOOM_SERVER_STATUS"
echo "ok: chat"
