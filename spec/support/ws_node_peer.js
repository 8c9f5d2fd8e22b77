// spec/support/ws_node_peer.js: Node's `ws` (npm) with permessage-deflate on, as a peer for
// spec/websocket_interop_spec.lua. NODE_MODULES_DIR is where `ws` is installed.
//
//   node ws_node_peer.js NODE_MODULES_DIR server RENDEZVOUS_PORT
//       An echo server (perMessageDeflate, threshold 0: every message compressed) on a free
//       loopback port, told to the spec by connecting to RENDEZVOUS_PORT and writing
//       "PORT\n". Text commands besides echo: "ext" answers the extension it agreed on,
//       "frag:N" answers N fragments of "part-i;" as one message, "quit" ends the process.
//   node ws_node_peer.js NODE_MODULES_DIR client URL [nocontext]
//       Against loom's echo endpoint at URL: checks that permessage-deflate was agreed on
//       (ws.extensions names it; the spec checks the parameters on loom's side),
//       300 similar messages (context takeover), a fragmented message, 1 MiB binary; with
//       "nocontext" it asks for server_ and client_no_context_takeover and
//       server_max_window_bits=10. Prints one line per check; exits 0 when all pass.
"use strict";

const [modules, mode, arg, variant] = process.argv.slice(2);
const WebSocket = require(require.resolve("ws", { paths: [modules] }));
const net = require("net");
const assert = require("assert");

function serve(rendezvous) {
  const wss = new WebSocket.WebSocketServer({ host: "127.0.0.1", port: 0,
    perMessageDeflate: { threshold: 0 } });
  wss.on("listening", () => {
    const c = net.connect(rendezvous, "127.0.0.1", () => c.end(`${wss.address().port}\n`));
  });
  wss.on("connection", (ws) => {
    ws.on("message", (data, isBinary) => {
      if (!isBinary) {
        const text = data.toString();
        if (text === "ext") return ws.send(ws.extensions);
        if (text.startsWith("frag:")) {
          const n = Number(text.slice(5));
          for (let i = 1; i <= n; i++) ws.send(`part-${i};`, { fin: i === n });
          return;
        }
        if (text === "quit") {
          ws.close(1000, "bye");
          wss.close();
          return;
        }
      }
      ws.send(data, { binary: isBinary });
    });
  });
}

function client(url, nocontext) {
  const pmd = nocontext
    ? { threshold: 0, serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 10 }
    : { threshold: 0 };
  const ws = new WebSocket(url, { perMessageDeflate: pmd });
  const inbox = [];
  let waiter = null;
  ws.on("message", (data, isBinary) => {
    const m = { data: isBinary ? data : data.toString(), isBinary };
    if (waiter) { const w = waiter; waiter = null; w(m); } else inbox.push(m);
  });
  const next = () => inbox.length ? Promise.resolve(inbox.shift()) : new Promise((r) => { waiter = r; });
  ws.on("error", (e) => { console.error(`ws_node_peer client: ${e.stack || e}`); process.exit(1); });
  ws.on("open", async () => {
    try {
      assert.match(ws.extensions, /^permessage-deflate/);
      console.log(`ws_node_peer client: ok agreed ${ws.extensions}`);
      for (let i = 1; i <= 300; i++) {
        const msg = JSON.stringify({ seq: i, text: "chat ".repeat(10 + (i % 40)) });
        ws.send(msg);
        assert.strictEqual((await next()).data, msg);
      }
      console.log("ws_node_peer client: ok 300 messages");
      ws.send("abc ".repeat(50), { fin: false });
      ws.send("def ".repeat(50), { fin: false });
      ws.send("ghi", { fin: true });
      assert.strictEqual((await next()).data, "abc ".repeat(50) + "def ".repeat(50) + "ghi");
      console.log("ws_node_peer client: ok fragmented");
      const big = Buffer.alloc(1 << 20);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251;
      ws.send(big);
      const got = await next();
      assert.ok(got.isBinary && Buffer.compare(got.data, big) === 0);
      console.log("ws_node_peer client: ok 1 MiB");
      ws.on("close", (code) => { assert.strictEqual(code, 1000); process.exit(0); });
      ws.close(1000);
    } catch (e) {
      console.error(`ws_node_peer client: ${e.stack || e}`);
      process.exit(1);
    }
  });
}

if (mode === "server") serve(Number(arg));
else client(arg, variant === "nocontext");
