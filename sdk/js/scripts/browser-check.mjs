#!/usr/bin/env node
// Runs the SDK in headless Chromium against a fake collector on another origin (so CORS
// preflights happen as in production) and checks three things a Node test cannot:
// examples/browser.html delivers its events, a page leaving with events queued sends them
// with navigator.sendBeacon (token in the URL), and localStorage carries unsent events
// across a reload. Needs `npm run build` first and a Chromium (CHROME_BIN, or chromium /
// chromium-browser / google-chrome on PATH); a missing browser is a failure, not a skip.
//
//   npm run build && node scripts/browser-check.mjs
import { execFile, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const root = fileURLToPath(new URL("..", import.meta.url));
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };

const PAGES = {
  "/check/beacon.html": `<script type="module">
import { FeedbackClient } from "/dist/index.js";
const client = new FeedbackClient({ endpoint: COLLECTOR, token: "tok", userId: "u", flushIntervalMs: 600000 });
client.copy({ interactionId: "i", responseId: "r", conversationId: "c-beacon" });
setTimeout(() => { location.href = "/check/blank.html"; }, 50);
</script>`,
  "/check/reload.html": `<script type="module">
import { FeedbackClient } from "/dist/index.js";
const opts = { endpoint: COLLECTOR, userId: "u", onError: () => {} };
const t = { interactionId: "i", responseId: "r", conversationId: "c-reload" };
if (!sessionStorage.getItem("reloaded")) {
  const down = () => Promise.reject(new TypeError("down"));
  const client = new FeedbackClient({ ...opts, sendBeacon: null, fetch: down });
  for (let s = 1; s <= 3; s++) client.sessionEnd({ ...t, seconds: s });
  await client.flush();
  sessionStorage.setItem("reloaded", "1");
  location.reload();
} else {
  const client = new FeedbackClient(opts);
  client.sessionEnd({ ...t, seconds: 4 });
  document.body.dataset.result = JSON.stringify(await client.flush());
}
</script>`,
  "/check/blank.html": "<p>left</p>",
};

/** @param {import("node:http").RequestListener} handler @returns {Promise<[import("node:http").Server, string]>} */
function listen(handler) {
  const server = createServer(handler);
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => {
      const address = /** @type {import("node:net").AddressInfo} */ (server.address());
      resolve([server, `http://127.0.0.1:${address.port}`]);
    }),
  );
}

/** @type {{method: string, url: string, contentType: string | undefined, auth: string | undefined, events: any[]}[]} */
const received = [];
const [collector, collectorUrl] = await listen((req, res) => {
  const cors = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Expose-Headers": "Retry-After",
  };
  let raw = "";
  req.on("data", (chunk) => (raw += chunk));
  req.on("end", () => {
    if (req.method === "OPTIONS") {
      res.writeHead(204, cors);
      return res.end();
    }
    const events = JSON.parse(raw).events;
    received.push({ method: String(req.method), url: String(req.url), contentType: req.headers["content-type"], auth: req.headers.authorization, events });
    res.writeHead(202, { ...cors, "Content-Type": "application/json" });
    res.end(JSON.stringify({ accepted: events.length, rejected: 0, errors: [] }));
  });
});
const [site, siteUrl] = await listen((req, res) => {
  const path = new URL(String(req.url), "http://x").pathname;
  const page = /** @type {Record<string, string>} */ (PAGES)[path];
  if (page !== undefined) {
    res.writeHead(200, { "Content-Type": "text/html" });
    return res.end(`<!doctype html><meta charset="utf-8"><body>${page.replaceAll("COLLECTOR", JSON.stringify(collectorUrl))}`);
  }
  const file = join(root, path);
  if (!file.startsWith(root) || !existsSync(file)) {
    res.writeHead(404);
    return res.end();
  }
  res.writeHead(200, { "Content-Type": /** @type {Record<string, string>} */ (TYPES)[extname(file)] ?? "text/plain" });
  res.end(readFileSync(file));
});

function chromium() {
  const candidates = [process.env.CHROME_BIN, "chromium", "chromium-browser", "google-chrome"].filter(Boolean);
  for (const bin of candidates) {
    if (spawnSync(/** @type {string} */ (bin), ["--version"]).status === 0) return /** @type {string} */ (bin);
  }
  throw new Error("no Chromium found: install one (apt-get install chromium) or set CHROME_BIN");
}

/**
 * Loads `url` headless and returns the <body ...> tag of the final DOM. Asynchronous, so
 * that the servers in this process keep answering the browser.
 * @param {string} url @param {string[]} [flags]
 */
async function load(url, flags = ["--virtual-time-budget=5000"]) {
  const t0 = Date.now();
  const { stdout: dom } = await promisify(execFile)(
    chromium(),
    ["--headless", "--no-sandbox", "--disable-gpu", ...flags, "--dump-dom", url],
    { encoding: "utf8", timeout: 60_000 },
  );
  console.error(`loaded ${url} in ${Date.now() - t0} ms`);
  return /<body[^>]*>/.exec(dom)?.[0].replaceAll("&quot;", '"') ?? "";
}

/** @param {boolean} ok @param {string} what */
function expect(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) process.exitCode = 1;
}

const sleep = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));
try {
  const example = await load(`${siteUrl}/examples/browser.html?endpoint=${encodeURIComponent(collectorUrl)}&token=dev-token`);
  expect(example.includes('data-result="{"delivered":3,"rejected":0,"pending":0}"'), `examples/browser.html delivers 3 events: ${example}`);
  const post = received.find((r) => r.auth === "Bearer dev-token");
  expect(post?.contentType === "application/json" && post.events.length === 3, "as one JSON POST with the bearer token");

  await load(`${siteUrl}/check/beacon.html`, ["--timeout=3000"]);
  await sleep(500);
  const beacon = received.find((r) => r.events.some((e) => e.data.conversation_id === "c-beacon"));
  expect(beacon?.url === "/v1/events?token=tok", `leaving the page beacons the queue with ?token= (${beacon?.url})`);
  expect(beacon?.contentType === "text/plain;charset=UTF-8", `beacon body is JSON sent as ${beacon?.contentType}`);

  const reload = await load(`${siteUrl}/check/reload.html`);
  const values = received.flatMap((r) => r.events).filter((e) => e.data.conversation_id === "c-reload").map((e) => e.data.value);
  expect(reload.includes('"delivered":4'), `a reload re-sends the unsent events from localStorage: ${reload}`);
  expect(JSON.stringify(values) === "[1,2,3,4]", `in order: ${JSON.stringify(values)}`);
} finally {
  collector.close();
  site.close();
}
