// bench/ws_publish/client.js PORT CONNS COUNT SIZE: opens CONNS raw websocket connections to
// 127.0.0.1:PORT/sub (upgrade by hand; frames are only counted, as bytes, so the client
// costs little), asks GET /publish?count=COUNT&size=SIZE, and waits until every connection
// has had COUNT frames of SIZE bytes. Prints JSON: deliveries per second from the request
// to the last byte, and the server's own time in its publish loop.
"use strict";
const net = require("net");
const http = require("http");
const crypto = require("crypto");
const [port, conns, count, size] = process.argv.slice(2).map(Number);
const frameLen = 2 + (size < 126 ? 0 : 2) + size;
const want = frameLen * count;
let upgraded = 0, done = 0, t0 = 0;

function open(i) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1");
    let head = Buffer.alloc(0), got = 0, up = false;
    s.on("connect", () => s.write(`GET /sub HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString("base64")}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
    s.on("data", (d) => {
      if (!up) {
        head = Buffer.concat([head, d]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        if (!head.slice(0, 12).toString().includes("101")) return reject(new Error(head.toString()));
        up = true; upgraded++; resolve();
        d = head.slice(end + 4);
      }
      got += d.length;
      if (got >= want && t0) { got = -1e18; if (++done === conns) finish(); }
    });
    s.on("error", reject);
  });
}

let secs = 0;
function finish() {
  secs = secs || Number(process.hrtime.bigint() - t0) / 1e9;
  if (!serverTimes) return setTimeout(finish, 10);
  console.log(JSON.stringify({ conns, count, size, secs, per_sec: Math.round(conns * count / secs), server: serverTimes }));
  process.exit(0);
}

let serverTimes = null;
(async () => {
  for (let i = 0; i < conns; i += 500) {
    const batch = [];
    for (let j = i; j < Math.min(conns, i + 500); j++) batch.push(open(j));
    await Promise.all(batch);
  }
  await new Promise((r) => setTimeout(r, 500)); // handlers subscribed
  t0 = process.hrtime.bigint();
  http.get(`http://127.0.0.1:${port}/publish?count=${count}&size=${size}`, (res) => {
    let body = "";
    res.on("data", (d) => body += d);
    res.on("end", () => { serverTimes = JSON.parse(body); });
  });
  setTimeout(() => { console.error(`timeout: ${done}/${conns} complete`); process.exit(1); }, 120000);
})();
