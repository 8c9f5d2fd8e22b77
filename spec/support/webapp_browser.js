// spec/support/webapp_browser.js URL PLAYWRIGHT_DIR USER_DATA_DIR FILES_DIR: the webapp
// example in a real browser. Headless Chromium (Debian's /usr/bin/chromium), driven by
// playwright-core from PLAYWRIGHT_DIR: a wrong password is refused, the demo user logs in
// through the form, the session cookie is HttpOnly (the page's document.cookie does not
// show it), two files go up through the page's <input type=file> form and one through
// fetch + FormData with the session's cookie (and none without it), the list shows all
// three, a download gives the bytes back, and logout ends the session. The pages must run
// under the app's Content-Security-Policy with no violation. Exits 0 when all do, 1 otherwise.
"use strict";

const fs = require("fs");
const path = require("path");

const [url, playwrightDir, userDataDir, filesDir] = process.argv.slice(2);
const { chromium } = require(require.resolve("playwright-core", { paths: [playwrightDir] }));

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const TIMEOUT = 15000;
const PASSWORD = "correct horse battery staple"; // examples/webapp/app.lua's demo user

function check(ok, what) {
  if (!ok) throw new Error(what);
}

async function listed(page, n) {
  await page.waitForSelector(`body[data-loaded="${n}"]`, { timeout: TIMEOUT });
  return page.$$eval("#uploads li a", (as) => as.map((a) => a.textContent));
}

async function main() {
  const a = path.join(filesDir, "notes <i>1<i>.txt"); // shown as text, not markup
  const b = path.join(filesDir, "photo.bin");
  fs.writeFileSync(a, "written by chromium\n");
  fs.writeFileSync(b, Buffer.alloc(200000, 7));

  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: "/usr/bin/chromium", headless: true, args: ARGS, timeout: TIMEOUT,
  });
  try {
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (e) => problems.push(`the page raised: ${e.message}`));
    page.on("console", (m) => {
      // the 401s this test asks for are logged as failed loads; anything else is a fault
      if (m.type() === "error" && !/status of 401/.test(m.text())) problems.push(`console: ${m.text()}`);
    });

    // the login form; a wrong password comes back to it with the message
    const first = await page.goto(url, { timeout: TIMEOUT });
    await page.waitForSelector("#login", { timeout: TIMEOUT });
    // compress = { min_size = 256 }: the page came coded as Chromium asked (br or gzip)
    const coding = first.headers()["content-encoding"];
    check(coding === "br" || coding === "gzip", `the login page came with Content-Encoding: ${coding}`);
    check(/accept-encoding/i.test(first.headers()["vary"] || ""), "the coded page has no Vary: Accept-Encoding");
    check(await page.isHidden("#error"), "the login error shows before any attempt");
    await page.fill("#user", "demo");
    await page.fill("#password", "not the password");
    await Promise.all([page.waitForURL("**/?login=failed", { timeout: TIMEOUT }), page.click("#login button")]);
    await page.waitForSelector("#error", { state: "visible", timeout: TIMEOUT });
    check((await context.cookies(url)).length === 0, "a wrong password set a cookie");

    // the right one: the user's page, and a session cookie the page's script cannot see
    await page.fill("#user", "demo");
    await page.fill("#password", PASSWORD);
    await Promise.all([page.waitForURL(url, { timeout: TIMEOUT }), page.click("#login button")]);
    await page.waitForSelector("#upload", { timeout: TIMEOUT });
    check((await listed(page, 0)).length === 0, "a new user has uploads");
    check(await page.textContent("#who") === "demo", "the page does not greet demo");
    const session = (await context.cookies(url)).find((c) => c.name === "webapp_session");
    check(session, "no webapp_session cookie after login");
    check(session.httpOnly && session.sameSite === "Lax", `the cookie: ${JSON.stringify(session)}`);
    const visible = await page.evaluate(() => document.cookie);
    check(!visible.includes("webapp_session"), `document.cookie shows the session: '${visible}'`);

    // two files through the page's form: a real <input type=file multiple>, submitted
    await page.setInputFiles("#file", [a, b]);
    await Promise.all([page.waitForURL(url, { timeout: TIMEOUT }), page.click("#upload button")]);
    let names = await listed(page, 2);
    check(names.join("|") === "notes <i>1<i>.txt|photo.bin", `listed after the form: ${names.join("|")}`);

    // one through fetch + FormData, with the session's cookie; without it: 401
    const sent = await page.evaluate(async () => {
      const form = () => {
        const fd = new FormData();
        fd.append("file", new Blob(["from fetch"], { type: "text/plain" }), "fetched.txt");
        return fd;
      };
      const post = (credentials) => fetch("/upload", {
        method: "POST", body: form(), credentials, headers: { accept: "application/json" },
      });
      const anon = await post("omit");
      const res = await post("same-origin");
      const saved = (await res.json()).saved;
      const back = await (await fetch(`/uploads/${saved[0].id}`, { credentials: "same-origin" })).text();
      return { anon: anon.status, status: res.status, saved, back };
    });
    check(sent.anon === 401, `a fetch without credentials got ${sent.anon}`);
    check(sent.status === 201, `the fetch upload got ${sent.status}`);
    check(sent.saved.length === 1 && sent.saved[0].name === "fetched.txt" && sent.saved[0].bytes === 10,
      `the fetch upload saved ${JSON.stringify(sent.saved)}`);
    check(sent.back === "from fetch", `the download gave '${sent.back}'`);
    await page.reload({ timeout: TIMEOUT });
    names = await listed(page, 3);
    check(names.join("|") === "notes <i>1<i>.txt|photo.bin|fetched.txt", `listed after fetch: ${names.join("|")}`);
    check(await page.$$eval("#uploads li span", (s) => s[1].textContent) === "195.3 KiB", "photo.bin's size");

    // logout: back to the login form, the cookie gone, the list refused
    await Promise.all([page.waitForURL(url, { timeout: TIMEOUT }), page.click("#logout button")]);
    await page.waitForSelector("#login", { timeout: TIMEOUT });
    check(!(await context.cookies(url)).some((c) => c.name === "webapp_session"), "the cookie outlived logout");
    const after = await page.evaluate(async () => (await fetch("/uploads")).status);
    check(after === 401, `GET /uploads after logout: ${after}`);

    check(problems.length === 0, problems.join("; "));
    console.log("webapp_browser: logged in, uploaded by form and by fetch, listed, logged out");
  } finally {
    await context.close();
  }
}

main().then(() => process.exit(0), (e) => {
  console.error(`webapp_browser: ${e.stack || e}`);
  process.exit(1);
});
