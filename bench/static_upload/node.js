// bench/static_upload/node.js PORT ROOT: the shapes of run.py for Node's http module, one
// process: /upload (req.on('data')), /multipart (busboy from npm, the file piped to a
// fs.createWriteStream, as busboy's README does), static files as profiles/node.js does.
const http = require('http');
const fs = require('fs');
const path = require('path');
const busboy = require('busboy');

const port = +process.argv[2] || 18212;
const root = path.resolve(process.argv[3] || '.');
const dir = process.env.UPLOAD_DIR || '/tmp';
const types = { '.txt': 'text/plain', '.bin': 'application/octet-stream' };
let n = 0;

function send(res, status, type, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.end(body);
}

async function sendFile(res, rel) {
  const file = path.join(root, path.normalize(rel));
  try {
    if (!file.startsWith(root + path.sep)) throw new Error('outside root');
    const st = await fs.promises.stat(file);
    if (!st.isFile()) throw new Error('not a file');
    res.writeHead(200, { 'Content-Type': types[path.extname(file)] || 'application/octet-stream',
                         'Content-Length': st.size });
    fs.createReadStream(file).pipe(res);
  } catch (e) {
    send(res, 404, 'text/plain', 'Not Found');
  }
}

function multipart(req, res) {
  const bb = busboy({ headers: req.headers, limits: { fileSize: 512 * 1024 * 1024 } });
  let size = 0, pending = 0, ended = false;
  const done = () => { if (ended && pending === 0) send(res, 200, 'text/plain', String(size)); };
  bb.on('file', (name, file) => {
    n = n % 64 + 1;
    pending++;
    const p = path.join(dir, 'node-' + n + '.bin');
    file.pause();
    fs.unlink(p, () => { // each upload to a new file, as loom.lua does
      const out = fs.createWriteStream(p);
      file.on('data', (d) => { size += d.length; });
      out.on('close', () => { pending--; done(); });
      file.pipe(out);
    });
  });
  bb.on('close', () => { ended = true; done(); });
  req.pipe(bb);
}

http.createServer((req, res) => {
  const q = req.url.indexOf('?');
  const p = q < 0 ? req.url : req.url.slice(0, q);
  if (req.method === 'GET' && p.startsWith('/static/')) return sendFile(res, p);
  if (req.method === 'POST' && p === '/upload') {
    let len = 0;
    req.on('data', (chunk) => { len += chunk.length; });
    req.on('end', () => send(res, 200, 'text/plain', String(len)));
    return;
  }
  if (req.method === 'POST' && p === '/multipart') return multipart(req, res);
  send(res, 404, 'text/plain', 'Not Found');
}).listen(port, '127.0.0.1');
