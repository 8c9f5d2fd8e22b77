// Node's fetch (undici): N GETs, C in flight; prints requests per second.
const [url, n, c] = [process.argv[2], +process.argv[3], +process.argv[4]];
let left = n;
async function worker() {
  while (left > 0) {
    left--;
    const r = await fetch(url);
    if ((await r.text()) !== 'Hello, World!') throw new Error('bad body');
  }
}
const t0 = performance.now();
Promise.all(Array.from({ length: c }, worker)).then(() => {
  console.log((n / ((performance.now() - t0) / 1000)).toFixed(0));
});
