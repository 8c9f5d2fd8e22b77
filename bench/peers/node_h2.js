// Node's http2 module, the same hello world: node node_h2.js PORT [CERT KEY] (h2c, or TLS).
const http2 = require("http2");
const fs = require("fs");
const [port, cert, key] = process.argv.slice(2);
const handler = (req, res) => {
  res.setHeader("content-type", "text/plain; charset=utf-8");
  res.end("Hello, World!");
};
const settings = { maxConcurrentStreams: 100 };
(cert ? http2.createSecureServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key), settings }, handler)
  : http2.createServer({ settings }, handler)).listen(+port, "127.0.0.1");
