// The page of `likewise serve`, driven in a real headless Chromium (Debian's /usr/bin/chromium)
// with playwright-core. Two servers on free loopback ports: one on the seeds' store, one on the
// seeds plus an article whose headline and text are HTML meant to run script.
//
// Needs: target/release/likewise (built by `cargo test --release`), the model in models/
// (fetched by the Rust tests), Chromium. Set SCREENSHOTS=DIR to save a picture of each view.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync, copyFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
// Where `cargo test --release` put the binary: CARGO_TARGET_DIR when set.
const BIN = join(process.env.CARGO_TARGET_DIR ? resolve(ROOT, process.env.CARGO_TARGET_DIR) : join(ROOT, "target"), "release/likewise");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = process.env.SCREENSHOTS ? resolve(process.env.SCREENSHOTS) : null;
const RAFAH = "Blinken said a major ground operation in Rafah would be a mistake";
const EVIL_TITLE = "<script>window.__pwned = 1</script> Harbour strike <b>ends</b>";
const EVIL_TEXT = `Dock workers ended their strike at the harbour <img src=x onerror="window.__pwned = 2"> after talks on pay.`;

const servers = [];
let browser;
let seedsUrl;
let evilUrl;
let newsUrl;
let newsDir;

function likewise(store, args) {
  return execFileSync(BIN, args, {
    cwd: ROOT, env: { ...process.env, LIKEWISE_INDEX: store }, stdio: ["ignore", "pipe", "pipe"],
  });
}

/** Starts `likewise serve` on `store`; resolves with its address once it listens. */
function serve(store, extra = []) {
  return new Promise((ok, fail) => {
    const child = spawn(BIN, ["serve", "--addr", "127.0.0.1:0", ...extra], {
      cwd: ROOT, env: { ...process.env, LIKEWISE_INDEX: store }, stdio: ["ignore", "pipe", "inherit"],
    });
    servers.push(child);
    child.on("error", fail);
    child.on("exit", (code) => fail(new Error(`likewise serve exited with ${code}`)));
    createInterface({ input: child.stdout }).once("line", (line) => ok(line.trim().replace(/\/$/, "")));
  });
}

before(async () => {
  const dir = mkdtempSync(join(tmpdir(), "likewise-page-"));
  const seeds = join(dir, "seeds-store");
  likewise(seeds, ["index", join(ROOT, "seeds")]);
  const evilDir = join(dir, "evil");
  mkdirSync(evilDir);
  for (const f of readdirSync(join(ROOT, "seeds"))) copyFileSync(join(ROOT, "seeds", f), join(evilDir, f));
  writeFileSync(join(evilDir, "evil.txt"), `${EVIL_TITLE}\n\n${EVIL_TEXT}\n`);
  const evil = join(dir, "evil-store");
  likewise(evil, ["index", evilDir]);
  // A server that watches a folder: the seeds' first three articles now, the others later.
  newsDir = join(dir, "news");
  mkdirSync(newsDir);
  const seedFiles = readdirSync(join(ROOT, "seeds")).sort();
  for (const f of seedFiles.slice(0, 3)) copyFileSync(join(ROOT, "seeds", f), join(newsDir, f));
  const news = join(dir, "news-store");
  likewise(news, ["index", newsDir]);
  likewise(news, ["alerts", "add", "shoukry", "Shoukry", "--mode", "lexical"]);
  [seedsUrl, evilUrl, newsUrl] = await Promise.all([serve(seeds), serve(evil), serve(news, ["--watch", newsDir])]);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync"],
  });
});

after(async () => {
  if (browser) await browser.close();
  for (const s of servers) { s.removeAllListeners("exit"); s.kill("SIGTERM"); }
});

async function page(width = 1280, height = 900) {
  const context = await browser.newContext({ viewport: { width, height } });
  const p = await context.newPage();
  const errors = [];
  p.on("pageerror", (e) => errors.push(String(e)));
  p.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  p.errors = errors;
  return p;
}

async function shot(p, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
}

async function search(p, text) {
  await p.fill("#passage", text);
  // The status of an earlier search says "like the passage" too: clear it, so the wait below
  // is for this search's answer.
  await p.evaluate(() => { document.getElementById("search-status").textContent = ""; });
  await p.click("#search-form button[type=submit]");
  await p.waitForFunction(() => /like the passage/.test(document.getElementById("search-status").textContent));
}

const hitKeys = (p) => p.$$eval("#results li.hit", (lis) => lis.map((li) => li.dataset.key));

test("the Rafah passage lists 002–004 first, with the words it shares marked", async () => {
  const p = await page();
  await p.goto(seedsUrl + "/");
  await search(p, RAFAH);
  const keys = await hitKeys(p);
  assert.equal(keys.length, 5);
  const top3 = keys.slice(0, 3).map((k) => k.split("/").pop().slice(0, 3)).sort();
  assert.deepEqual(top3, ["002", "003", "004"], `order: ${keys}`);
  const first = await p.$("#results li.hit .evidence");
  const marks = await first.$$eval("mark", (ms) => ms.map((m) => m.textContent.toLowerCase()));
  assert.ok(marks.includes("rafah") && marks.includes("ground"), `marked: ${marks}`);
  assert.match(p.url(), /#search\?text=Blinken/);
  await shot(p, "search");
  // "More like this" asks for articles like the hit.
  await p.click("#results li.hit >> text=More like this");
  await p.waitForFunction(() => /like the article /.test(document.getElementById("search-status").textContent));
  const like = await hitKeys(p);
  assert.equal(like.length, 4);
  assert.ok(!like.includes(keys[0]), "the article itself is left out");
  assert.deepEqual(p.errors, []);
});

test("a name finds its one article by its words; the ranking control and the why line", async () => {
  const p = await page();
  await p.goto(seedsUrl + "/");
  await search(p, "Herzog");
  const keys = await hitKeys(p);
  assert.match(keys[0], /000_/, `order: ${keys}`);
  const marks = await p.$$eval("#results li.hit:first-child .evidence mark", (ms) => ms.map((m) => m.textContent));
  assert.deepEqual(marks, ["Herzog"]);
  const why = await p.$eval("#results li.hit:first-child .why", (e) => e.textContent);
  assert.match(why, /meaning [0-9.]+.* · words [0-9.]+ \(#1\)/);
  // Words only: the control travels in the address and the one article naming him is the answer.
  await p.selectOption("#mode", "lexical");
  await p.click("#search-form button[type=submit]");
  await p.waitForFunction(() => /mode=lexical/.test(location.hash) && /1 articles like/.test(document.getElementById("search-status").textContent));
  assert.equal((await hitKeys(p)).length, 1);
  // A phrase that no article has: no results, and no error.
  await p.fill("#passage", '"Herzog hypocritical"');
  await p.click("#search-form button[type=submit]");
  await p.waitForFunction(() => /0 articles like/.test(document.getElementById("search-status").textContent));
  assert.deepEqual(p.errors, []);
});

test("the back button restores the previous query", async () => {
  const p = await page();
  await p.goto(seedsUrl + "/");
  await search(p, RAFAH);
  const first = await hitKeys(p);
  await search(p, "hostages released during the truce extension");
  const second = await hitKeys(p);
  assert.notDeepEqual(second, first);
  await p.goBack();
  await p.waitForFunction((t) => document.getElementById("passage").value === t, RAFAH);
  await p.waitForFunction((k) => document.querySelector("#results li.hit")?.dataset.key === k, first[0]);
  assert.deepEqual(await hitKeys(p), first);
  // A shared address opens the same results in a fresh page.
  const url = p.url();
  const q = await page();
  await q.goto(url);
  await q.waitForSelector("#results li.hit");
  assert.deepEqual(await hitKeys(q), first);
});

test("an article shows its paragraphs shaded by the passage, its neighbours and duplicates", async () => {
  const p = await page();
  await p.goto(seedsUrl + "/");
  await search(p, RAFAH);
  await p.click("#results li.hit h3 a");
  await p.waitForSelector("#article .paragraphs p");
  const scores = await p.$$eval("#article .paragraphs p", (ps) => ps.map((x) => Number(x.dataset.score)));
  assert.ok(scores.length > 3 && scores.every((s) => s > -1 && s <= 1), `${scores}`);
  const shaded = await p.$$eval("#article .paragraphs p", (ps) => ps.map((x) => getComputedStyle(x).backgroundColor));
  assert.ok(new Set(shaded).size > 1, "paragraphs are shaded differently");
  assert.equal(await p.$$eval("#article ol.results li", (l) => l.length), 4);
  await shot(p, "article");
  assert.deepEqual(p.errors, []);
});

test("Compare sets 003 and 004 side by side, aligned and marked", async () => {
  const p = await page();
  await p.goto(seedsUrl + "/#compare?a=003&b=004");
  await p.waitForSelector("#compare .rows .row");
  const relations = await p.$$eval("#compare .rows .row", (rs) => rs.map((r) => r.dataset.relation));
  assert.ok(relations.includes("paraphrased") || relations.includes("shared"), `${relations}`);
  assert.ok(relations.includes("only_b"), "what B adds is shown");
  const heads = await p.$$eval("#compare .side h2", (hs) => hs.map((h) => h.textContent));
  assert.match(heads[0], /^A: As Antony Blinken/);
  assert.match(heads[1], /^B: A full-scale ground offensive/);
  await shot(p, "compare");
});

test("the map draws the 5 articles in 2 colours; a click opens the article", async () => {
  const p = await page();
  await p.goto(seedsUrl + "/#topics");
  await p.waitForSelector("#map circle");
  const fills = await p.$$eval("#map circle", (cs) => cs.map((c) => c.getAttribute("fill")));
  assert.equal(fills.length, 5);
  assert.equal(new Set(fills).size, 2);
  const clusters = await p.$$eval("#clusters .cluster", (cs) => cs.length);
  assert.equal(clusters, 2);
  await p.hover("#map circle");
  assert.ok(!(await p.$eval("#tooltip", (t) => t.hidden)), "hover shows the headline");
  await shot(p, "topics");
  await p.selectOption("#by", "story");
  await p.waitForSelector("#clusters .timeline");
  // The stories are the store's, by the ids they keep: each opens its timeline.
  assert.match(await p.textContent("#topics-status"), /with the ids they keep/);
  const storyLinks = await p.$$eval("#clusters .cluster h3 a", (as) => as.map((a) => a.getAttribute("href")));
  assert.ok(storyLinks.length >= 1);
  for (const l of storyLinks) assert.match(l, /^#story\?id=\d+$/);
  await shot(p, "stories");
  await p.click("#map circle");
  await p.waitForSelector("#article h1");
  assert.match(p.url(), /#article\?key=/);
  assert.deepEqual(p.errors, []);
});

test("duplicates and info", async () => {
  const p = await page();
  await p.goto(seedsUrl + "/#dupes");
  await p.waitForFunction(() => /pairs$/.test(document.getElementById("dupes-status").textContent));
  const tiers = await p.$$eval("#dupes h2", (hs) => hs.map((h) => h.textContent));
  assert.equal(tiers.length, 6);
  const compare = await p.$("#dupes a:text('Compare')");
  if (compare) {
    await compare.click();
    await p.waitForSelector("#compare .rows .row");
  }
  await p.goto(seedsUrl + "/#dupes");
  await p.waitForFunction(() => /pairs$/.test(document.getElementById("dupes-status").textContent));
  await shot(p, "dupes");
  await p.goto(seedsUrl + "/#info");
  await p.waitForSelector("#info table");
  const text = await p.textContent("#info");
  assert.match(text, /articles5/);
  assert.match(text, /all-MiniLM-L6-v2/);
  assert.match(text, /precisionf32/);
  await shot(p, "info");
});

test("an article whose headline is <script> shows as text and runs nothing", async () => {
  const p = await page();
  await p.goto(evilUrl + "/");
  await search(p, "dock workers strike at the harbour over pay");
  const title = await p.textContent("#results li.hit h3 a");
  assert.equal(title, EVIL_TITLE);
  const evidence = await p.textContent("#results li.hit .evidence");
  assert.ok(evidence.includes('<img src=x onerror="window.__pwned = 2">'), evidence);
  await p.click("#results li.hit h3 a");
  await p.waitForSelector("#article h1");
  assert.equal(await p.textContent("#article h1"), EVIL_TITLE);
  assert.equal(await p.$$eval("main img, main script, main b", (x) => x.length), 0);
  await p.goto(evilUrl + "/#topics");
  await p.waitForSelector("#map circle");
  await p.goto(evilUrl + "/#dupes");
  await p.waitForFunction(() => /pairs$/.test(document.getElementById("dupes-status").textContent));
  assert.equal(await p.evaluate(() => window.__pwned), undefined);
});

test("the news view: stories by their ids, a timeline, and alerts arriving live", async () => {
  const p = await page();
  await p.goto(newsUrl + "/#news");
  await p.waitForFunction(() => /stories of two or more/.test(document.getElementById("news-status").textContent));
  await p.waitForFunction(() => document.getElementById("live").textContent === "(live)");
  assert.match(await p.$eval("#saved", (e) => e.textContent), /shoukry/);
  assert.match(await p.$eval("#alerts", (e) => e.textContent), /No alerts yet/);
  // An article lands in the watched folder: it arrives, and its alert shows, without a reload.
  const seedFiles = readdirSync(join(ROOT, "seeds")).sort();
  copyFileSync(join(ROOT, "seeds", seedFiles[3]), join(newsDir, seedFiles[3]));
  await p.waitForFunction(() => document.querySelector("#alerts li.alert")?.textContent.includes("shoukry"), null, { timeout: 60000 });
  await p.waitForFunction(() => /1 new/.test(document.getElementById("arrivals").textContent));
  const alertLink = await p.$eval("#alerts li.alert a", (a) => a.getAttribute("href"));
  assert.match(alertLink, /^#article\?key=/);
  await shot(p, "news");
  // A story's timeline, by its id.
  await p.goto(newsUrl + "/#news");
  await p.waitForSelector("#stories .story h3 a");
  await p.click("#stories .story h3 a");
  await p.waitForSelector("#story .timeline li");
  assert.match(p.url(), /#story\?id=\d+/);
  const items = await p.$$eval("#story .timeline li", (lis) => lis.length);
  assert.ok(items >= 1);
  assert.deepEqual(p.errors, []);
});

test("usable at phone width and from the keyboard", async () => {
  const p = await page(390, 800);
  await p.goto(seedsUrl + "/");
  await search(p, RAFAH);
  const overflow = await p.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page is ${overflow}px wider than the window`);
  await shot(p, "phone");
  // From the top: skip link, the brand, the five views, then the passage box.
  const k = await page();
  await k.goto(seedsUrl + "/");
  const focused = [];
  for (let i = 0; i < 8; i++) {
    await k.keyboard.press("Tab");
    focused.push(await k.evaluate(() => document.activeElement.id || document.activeElement.textContent.trim()));
  }
  assert.ok(focused.includes("passage"), `${focused}`);
  await k.keyboard.type(RAFAH);
  await k.keyboard.press("Control+Enter");
  await k.waitForSelector("#results li.hit");
  assert.equal((await hitKeys(k)).length, 5);
});
