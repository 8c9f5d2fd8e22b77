// bench/db/node_app.js PORT DATABASE_URL REDIS_URL POOL NPM_DIR: the shapes of
// bench/db/loom_app.lua as a Node user writes them, with `pg` (a Pool of POOL connections,
// named prepared statements) and `ioredis` (one connection: it multiplexes commands, which
// is how its users run it). Started by bench/db/run.py pinned to one core.
"use strict";
const http = require("http");
const path = require("path");
const [port, dbUrl, redisUrl, poolSize, npmDir] = process.argv.slice(2);
const { Pool } = require(path.resolve(npmDir, "node_modules", "pg"));
const Redis = require(path.resolve(npmDir, "node_modules", "ioredis"));

const pool = new Pool({ connectionString: dbUrl, max: Number(poolSize) });
const redis = new Redis(redisUrl);

const world = (id) => pool.query({ name: "world", text: "select id, randomnumber from world where id = $1", values: [id] });
const rand = () => 1 + Math.floor(Math.random() * 10000);
const esc = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escape = (s) => s.replace(/[&<>"']/g, (c) => esc[c]);

function send(res, type, body) {
    res.writeHead(200, { "content-type": type, "content-length": Buffer.byteLength(body) });
    res.end(body);
}
function fail(res, err) {
    res.writeHead(500, { "content-type": "text/plain" });
    res.end(String(err));
}

const routes = {
    "/db": async (res) => {
        const row = (await world(rand())).rows[0];
        send(res, "application/json", JSON.stringify({ id: row.id, randomNumber: row.randomnumber }));
    },
    "/queries": async (res, url) => {
        let n = parseInt(url.searchParams.get("n") || url.searchParams.get("queries"), 10) || 1;
        n = Math.min(Math.max(n, 1), 500);
        const results = await Promise.all(Array.from({ length: n }, () => world(rand())));
        send(res, "application/json", JSON.stringify(results.map((r) => {
            const row = r.rows[0];
            return { id: row.id, randomNumber: row.randomnumber };
        })));
    },
    "/fortunes": async (res) => {
        const rows = (await pool.query({ name: "fortune", text: "select id, message from fortune" })).rows;
        rows.push({ id: 0, message: "Additional fortune added at request time." });
        rows.sort((a, b) => (a.message < b.message ? -1 : a.message > b.message ? 1 : 0));
        let html = "<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table><tr><th>id</th><th>message</th></tr>";
        for (const row of rows) html += `<tr><td>${row.id}</td><td>${escape(row.message)}</td></tr>`;
        html += "</table></body></html>";
        send(res, "text/html; charset=utf-8", html);
    },
    "/redis": async (res) => {
        send(res, "text/plain", await redis.get("bench:greeting"));
    },
};

http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    const route = routes[url.pathname];
    if (!route) { res.writeHead(404); res.end(); return; }
    route(res, url).catch((err) => fail(res, err));
}).listen(Number(port), "127.0.0.1");
