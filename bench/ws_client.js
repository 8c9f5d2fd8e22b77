// bench/ws_client.js URL CONNS SECS SIZE NODE_MODULES_DIR: the load for bench/ws_echo.sh.
// CONNS websockets (Node's ws client) each send a SIZE-byte text message and wait for its
// echo, again and again, for SECS seconds. Prints the round trips per second and p99 ms.
"use strict";
const { WebSocket } = require(require.resolve("ws", { paths: [process.argv[6]] }));
const [url, conns, secs, size] = [process.argv[2], +process.argv[3], +process.argv[4], +process.argv[5]];
const msg = "x".repeat(size);
let trips = 0, running = true, open = 0;
const lat = [];

function client() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    let sent = 0;
    ws.on("error", reject);
    ws.on("open", () => {
      open++;
      sent = process.hrtime.bigint();
      ws.send(msg);
    });
    ws.on("message", (data) => {
      if (data.length !== size) return reject(new Error("bad echo"));
      trips++;
      if ((trips & 63) === 0) lat.push(Number(process.hrtime.bigint() - sent) / 1e6);
      if (!running) return ws.close(1000), resolve();
      sent = process.hrtime.bigint();
      ws.send(msg);
    });
  });
}

const all = [];
for (let i = 0; i < conns; i++) all.push(client());
const t0 = Date.now();
setTimeout(() => { running = false; }, secs * 1000);
Promise.all(all).then(() => {
  const took = (Date.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const p99 = lat.length ? lat[Math.floor(lat.length * 0.99)] : 0;
  console.log(JSON.stringify({ trips_per_s: Math.round(trips / took), p99_ms: +p99.toFixed(2), open }));
  process.exit(0);
}, (e) => { console.error(e.message); process.exit(1); });
