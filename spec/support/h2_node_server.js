// spec/support/h2_node_server.js PORT MODE [CERT KEY]: Node's http2 module as a peer of the
// loom client (spec/h2_client_spec.lua). MODE "h2c": createServer (prior knowledge only);
// "h2c2": the same with SETTINGS_MAX_CONCURRENT_STREAMS 2; "tls": createSecureServer
// offering h2 (allowHTTP1 false); "tls1": HTTP/1.1 only. /sessions: connections so far.
// /arm: the next /slow sends GOAWAY naming its own stream as the last, so the streams
// the client opened after it are refused (the client retries them on a new connection).
const http2 = require('http2');
const https = require('https');
const fs = require('fs');
const [port, mode, cert, key] = process.argv.slice(2);
let sessions = 0;
let armed = false;
function handler(req, res) {
  const u = new URL(req.url, 'http://x');
  if (u.pathname === '/sessions') return res.end(String(sessions));
  if (u.pathname === '/echo') {
    const parts = [];
    req.on('data', (c) => parts.push(c));
    req.on('end', () => {
      const b = Buffer.concat(parts);
      res.setHeader('x-method', req.method);
      res.setHeader('x-version', req.httpVersion);
      res.end(b);
    });
    return;
  }
  if (u.pathname === '/big') {
    const n = Number(u.searchParams.get('n'));
    const chunk = Buffer.alloc(16384, 'x');
    let left = n;
    const pump = () => {
      while (left > 0) {
        const c = left >= chunk.length ? chunk : chunk.subarray(0, left);
        left -= c.length;
        if (!res.write(c)) return res.once('drain', pump);
      }
      res.end();
    };
    return pump();
  }
  if (u.pathname === '/goaway') {
    res.end('bye');
    req.stream.session.goaway(0);
    return;
  }
  if (u.pathname === '/redir') {
    res.writeHead(302, { location: '/cookie', 'set-cookie': 'k=v1; Path=/' });
    return res.end();
  }
  if (u.pathname === '/cookie') return res.end('cookie ' + (req.headers.cookie || 'none'));
  if (u.pathname === '/gzip') {
    const body = require('zlib').gzipSync(Buffer.from('z'.repeat(Number(u.searchParams.get('n') || 1000))));
    res.setHeader('content-encoding', 'gzip');
    res.setHeader('x-accept-encoding', req.headers['accept-encoding'] || 'none');
    return res.end(body);
  }
  if (u.pathname === '/arm') {
    armed = true;
    return res.end('armed');
  }
  if (u.pathname === '/slow' && armed) {
    armed = false;
    req.stream.session.goaway(0, req.stream.id);
  }
  if (u.pathname === '/slow') return setTimeout(() => res.end('slow ' + req.httpVersion), 200);
  res.setHeader('x-version', req.httpVersion);
  res.end('hello ' + req.httpVersion);
}
let server;
if (mode === 'h2c') server = http2.createServer({ settings: { maxConcurrentStreams: 100 } }, handler);
else if (mode === 'h2c2') server = http2.createServer({ settings: { maxConcurrentStreams: 2 } }, handler);
else if (mode === 'tls') server = http2.createSecureServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, handler);
else server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, handler);
server.on('session', () => { sessions++; });
server.on('secureConnection', () => { if (mode === 'tls1') sessions++; });
server.listen(Number(port), '127.0.0.1');
