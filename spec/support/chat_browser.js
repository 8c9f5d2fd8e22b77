// spec/support/chat_browser.js URL PLAYWRIGHT_DIR USER_DATA_DIR: the chat example in a real
// browser. Headless Chromium (Debian's /usr/bin/chromium), driven by playwright-core from
// PLAYWRIGHT_DIR, opens the chat page twice (as ann and as bob); ann sends a message and it
// must appear on bob's page, and bob's on ann's; then a WebSocket of ann's page checks that
// permessage-deflate was agreed on and works both ways. Exits 0 when all do, 1 otherwise.
"use strict";

const [url, playwrightDir, userDataDir] = process.argv.slice(2);
const { chromium } = require(require.resolve("playwright-core", { paths: [playwrightDir] }));

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const TIMEOUT = 15000;

async function open(context, name) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`chat_browser: ${name}'s page raised: ${e.message}`));
  await page.goto(`${url}?name=${name}`, { timeout: TIMEOUT });
  await page.waitForSelector("#status:text('connected')", { timeout: TIMEOUT });
  return page;
}

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

// Waits until a paragraph of the page's log holds `text`.
async function sees(page, text) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll("#log p")].some((p) => p.textContent === t),
    text, { timeout: TIMEOUT });
}

async function main() {
  // launchPersistentContext: playwright's way to give Chromium a fresh --user-data-dir
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: "/usr/bin/chromium", headless: true, args: ARGS, timeout: TIMEOUT,
  });
  try {
    const ann = await open(context, "ann");
    const bob = await open(context, "bob");
    await sees(ann, "bob joined");
    await say(ann, "hello from ann");
    await sees(bob, "ann: hello from ann");
    await say(bob, "hi ann, <b>bob</b> here");
    await sees(ann, "bob: hi ann, <b>bob</b> here"); // shown as text, not markup
    await sees(bob, "bob: hi ann, <b>bob</b> here");
    // permessage-deflate: Chromium offers it and the server (compress = true) takes it; a
    // newcomer's history comes compressed from ws:send, and a long message goes compressed
    // from Chromium and comes back through app:publish
    const probe = await ann.evaluate(async (timeout) => {
      const ws = new WebSocket(`ws://${location.host}/ws?name=probe`);
      const next = () => new Promise((resolve, reject) => {
        ws.onmessage = (ev) => resolve(JSON.parse(ev.data));
        ws.onclose = (ev) => reject(new Error(`closed ${ev.code}`));
        setTimeout(() => reject(new Error("no message")), timeout);
      });
      const history = await next();
      const long = "compressible ".repeat(100);
      ws.send(JSON.stringify({ text: long }));
      let msg;
      do msg = await next(); while (!(msg.kind === "message" && msg.name === "probe"));
      ws.close();
      return { extensions: ws.extensions, history, echoed: msg.text === long };
    }, TIMEOUT);
    if (!probe.extensions.startsWith("permessage-deflate")) throw new Error(`extensions: '${probe.extensions}'`);
    if (probe.history.kind !== "history" || !probe.history.messages.some((m) => m.text === "hello from ann")) {
      throw new Error(`no history: ${JSON.stringify(probe.history)}`);
    }
    if (!probe.echoed) throw new Error("the long message did not come back");
    console.log(`chat_browser: Chromium agreed on '${probe.extensions}'`);
    console.log("chat_browser: ann and bob see each other's messages");
  } finally {
    await context.close();
  }
}

main().then(() => process.exit(0), (e) => {
  console.error(`chat_browser: ${e.stack || e}`);
  process.exit(1);
});
