// spec/support/h2_node_client.js ORIGIN MODE: Node's http2 module as a client of loom's server
// (spec/http2_server_spec.lua), h2c by prior knowledge (http://) or h2 over TLS (https://,
// certificate not checked). Prints one JSON line of what it saw; exits 1 on an error.
//   post     POST 300 000 bytes to /echo in 10 writes: {status, len, ok}
//   stream   GET /stream: {status, chunks, body}
//   many     100 concurrent GETs of /n/<i> on one session: {statuses, bodies_ok, sessions}
//   cookies  GET /cookie with two cookie fields: {body}
//   grow     POST 5000 bytes to /up in 5 writes without content-length: {status, body}
const http2 = require('http2');
const [origin, mode] = process.argv.slice(2);

const session = http2.connect(origin, { rejectUnauthorized: false });
let sessions = 0;
session.on('connect', () => { sessions++; });
session.on('error', (e) => { console.error(String(e)); process.exit(1); });

function request(headers, body) {
  return new Promise((resolve, reject) => {
    const req = session.request(headers, { endStream: body === undefined });
    const chunks = [];
    let status = 0;
    req.on('response', (h) => { status = h[':status']; });
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve({ status, chunks }));
    req.on('error', reject);
    if (body !== undefined) body(req);
  });
}

async function main() {
  let out;
  if (mode === 'post') {
    const piece = Buffer.alloc(30000, 'p');
    const r = await request({ ':method': 'POST', ':path': '/echo' }, (req) => {
      for (let i = 0; i < 10; i++) req.write(piece);
      req.end();
    });
    const got = Buffer.concat(r.chunks);
    out = { status: r.status, len: got.length, ok: got.equals(Buffer.alloc(300000, 'p')) };
  } else if (mode === 'stream') {
    const r = await request({ ':path': '/stream' });
    out = { status: r.status, chunks: r.chunks.length, body: Buffer.concat(r.chunks).toString() };
  } else if (mode === 'many') {
    const all = [];
    for (let i = 0; i < 100; i++) all.push(request({ ':path': '/n/' + i }));
    const rs = await Promise.all(all);
    out = {
      statuses: [...new Set(rs.map((r) => r.status))],
      bodies_ok: rs.every((r, i) => Buffer.concat(r.chunks).toString() === 'n' + i),
      sessions,
    };
  } else if (mode === 'cookies') {
    const r = await request({ ':path': '/cookie', cookie: ['a=1', 'b=2'] });
    out = { body: Buffer.concat(r.chunks).toString() };
  } else if (mode === 'grow') {
    const r = await request({ ':method': 'POST', ':path': '/up' }, (req) => {
      let i = 0;
      const next = () => {
        if (i++ === 5) return req.end();
        req.write(Buffer.alloc(1000, 'g'), next);
      };
      next();
    });
    out = { status: r.status, body: Buffer.concat(r.chunks).toString() };
  } else {
    throw new Error('unknown mode ' + mode);
  }
  console.log(JSON.stringify(out));
  session.close();
}

main().catch((e) => { console.error(String(e)); process.exit(1); });
