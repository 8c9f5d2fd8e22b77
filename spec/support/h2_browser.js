// spec/support/h2_browser.js URL PLAYWRIGHT_DIR USER_DATA_DIR: headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core) loads a page, its script and an SSE stream
// from loom over HTTPS (spec/support/h2_browser_app.lua); the browser must report h2 as the
// protocol of the page and of the script (Resource Timing's nextHopProtocol), the three
// events must arrive, the server must have seen version "2" for each path, and a websocket
// to the same origin (wss:, which the browser opens over HTTP/1.1) must echo. The test
// CA is not installed: certificate errors are ignored. Exits 0 when all hold, else 1.
"use strict";

const path = require("path");
const [url, playwrightDir, userDataDir] = process.argv.slice(2);
const { chromium } = require(require.resolve("playwright-core", { paths: [playwrightDir] }));

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const TIMEOUT = 15000;

function check(ok, what) {
  if (!ok) throw new Error(what);
}

async function main() {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: "/usr/bin/chromium", headless: true, args: ARGS, timeout: TIMEOUT,
    ignoreHTTPSErrors: true,
  });
  try {
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (e) => problems.push(`the page raised: ${e.message}`));
    await page.goto(url, { timeout: TIMEOUT });
    await page.waitForFunction(() => window.events && window.events.length === 3, null, { timeout: TIMEOUT });
    await page.waitForFunction(() => window.wsEcho !== undefined, null, { timeout: TIMEOUT });
    const got = await page.evaluate(() => ({
      events: window.events,
      asset: window.assetLoaded === true,
      ws: window.wsEcho,
      nav: performance.getEntriesByType("navigation")[0].nextHopProtocol,
      script: performance.getEntriesByType("resource")
        .filter((e) => e.name.endsWith("/asset.js")).map((e) => e.nextHopProtocol)[0],
    }));
    check(got.asset, "the script did not run");
    check(got.ws === "echo over wss", `the websocket answered ${got.ws}`);
    check(got.events.join("|") === "tick 1|tick 2|tick 3", `events: ${got.events.join("|")}`);
    check(got.nav === "h2", `the page came over ${got.nav}`);
    check(got.script === "h2", `the script came over ${got.script}`);
    const seen = await page.evaluate(async () => (await fetch("/seen")).json());
    for (const p of ["/", "/asset.js", "/events"]) {
      check(seen[p] === "2", `the server saw ${p} as version ${seen[p]}`);
    }
    check(problems.length === 0, problems.join("; "));
    console.log(`ok: ${JSON.stringify(got)}`);
  } finally {
    await context.close();
  }
}

main().catch((e) => { console.error(`h2_browser: ${e.message}`); process.exit(1); });
