// Node's http module, the same hello world: node node_hello.js PORT
const http = require("http");
http.createServer((req, res) => {
  res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" });
  res.end("Hello, World!");
}).listen(+process.argv[2] || 18082, "127.0.0.1");
