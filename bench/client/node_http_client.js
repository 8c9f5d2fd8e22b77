// Node http.request with a keep-alive agent: N GETs, C in flight; prints requests per second.
const http = require('http');
const [url, n, c] = [new URL(process.argv[2]), +process.argv[3], +process.argv[4]];
const agent = new http.Agent({ keepAlive: true, maxSockets: c });
let left = n;
function get() {
  return new Promise((resolve, reject) => {
    http.get({ host: url.hostname, port: url.port, path: url.pathname, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => (body === 'Hello, World!' ? resolve() : reject(new Error('bad body'))));
    }).on('error', reject);
  });
}
async function worker() { while (left > 0) { left--; await get(); } }
const t0 = performance.now();
Promise.all(Array.from({ length: c }, worker)).then(() => {
  console.log((n / ((performance.now() - t0) / 1000)).toFixed(0));
  agent.destroy();
});
