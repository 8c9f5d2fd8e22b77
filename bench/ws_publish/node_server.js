// bench/ws_publish/node_server.js NODE_MODULES PORT: the same as loom_server.lua with Node's
// ws: subscribers on /sub; GET /publish?count=M&size=S sends M messages of S bytes to every
// client, broadcasting in a loop (for each message, for each client: client.send).
"use strict";
const [modules, port] = process.argv.slice(2);
const { WebSocketServer } = require(require.resolve("ws", { paths: [modules] }));
const http = require("http");
const server = http.createServer((req, res) => {
  const u = new URL(req.url, "http://x");
  const count = Number(u.searchParams.get("count") || 100), size = Number(u.searchParams.get("size") || 64);
  const msg = "x".repeat(size);
  const t0 = process.hrtime.bigint();
  let receivers = 0;
  for (let i = 0; i < count; i++) {
    receivers = 0;
    for (const c of wss.clients) { c.send(msg); receivers++; }
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify({ receivers, secs }));
});
const wss = new WebSocketServer({ server, path: "/sub", perMessageDeflate: false });
server.maxConnections = 50000;
server.listen(Number(port), "127.0.0.1");
