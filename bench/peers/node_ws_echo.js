// Node's ws package, the same websocket echo: node node_ws_echo.js PORT NODE_MODULES_DIR
const { WebSocketServer } = require(require.resolve("ws", { paths: [process.argv[3]] }));
const wss = new WebSocketServer({ host: "127.0.0.1", port: +process.argv[2] });
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
});
process.on("SIGTERM", () => process.exit(0));
