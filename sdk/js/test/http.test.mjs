// Against a real HTTP server (node:http on 127.0.0.1): the real fetch path, the JSON body,
// the headers, and the browser example run as written.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import { pathToFileURL } from "node:url";

import { FeedbackClient, MemoryStorage } from "../dist/index.js";
import { check } from "./avro-json.mjs";
import { FAST, schema, TARGET, TURN, waitFor } from "./helpers.mjs";

/** @type {{method: string, url: string, headers: import("node:http").IncomingHttpHeaders, body: any}[]} */
const received = [];
/** @type {number[]} */
const statuses = []; // answers to give next; 202 when empty
/** @type {import("node:http").Server} */
let server;
let endpoint = "";

before(async () => {
  server = createServer((req, res) => {
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (chunk) => (raw += chunk));
    req.on("end", () => {
      const body = JSON.parse(raw);
      received.push({ method: String(req.method), url: String(req.url), headers: req.headers, body });
      const status = statuses.shift() ?? 202;
      const n = body.events.length;
      res.writeHead(status, { "Content-Type": "application/json" });
      res.end(JSON.stringify(status === 202 ? { accepted: n, rejected: 0, errors: [] } : { detail: "try later" }));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(undefined)));
  const address = /** @type {import("node:net").AddressInfo} */ (server.address());
  endpoint = `http://127.0.0.1:${address.port}`;
});

after(() => server.close());

test("events reach a real server as one JSON POST with the bearer token", async () => {
  received.length = 0;
  const client = new FeedbackClient({ ...FAST, endpoint, token: "tok", fetch: undefined, storage: new MemoryStorage() });
  const turn = client.interaction(TURN);
  client.thumbs({ interaction: turn, value: "up" });
  client.comment({ ...TARGET, text: "Ça marche ✓ 🚀" });
  assert.deepEqual(await client.flush(), { delivered: 3, rejected: 0, pending: 0 });
  assert.equal(received.length, 1);
  const [req] = received;
  assert.equal(req.method, "POST");
  assert.equal(req.url, "/v1/events");
  assert.equal(req.headers["content-type"], "application/json");
  assert.equal(req.headers["authorization"], "Bearer tok");
  assert.deepEqual(req.body.events.map((/** @type {any} */ e) => e.type), ["interaction", "feedback", "feedback"]);
  for (const e of req.body.events) assert.deepEqual(check(schema(e.type), e.data), []);
  assert.equal(req.body.events[2].data.text, "Ça marche ✓ 🚀", "UTF-8 survives the wire");
  assert.equal(req.body.events[0].data.messages[0].content, TURN.messages[0].content);
});

test("a real 503 is retried and then delivered", async () => {
  received.length = 0;
  statuses.push(503);
  const client = new FeedbackClient({ ...FAST, endpoint, storage: new MemoryStorage(), onError: () => {} });
  client.copy(TARGET);
  await waitFor(() => client.stats.delivered === 1, 3000, "the retry");
  assert.equal(received.length, 2);
  assert.equal(received[0].body.events[0].data.event_id, received[1].body.events[0].data.event_id);
  assert.equal(client.stats.retried, 1);
});

test("the browser example runs as written (README and examples/browser.html agree)", async () => {
  received.length = 0;
  const html = readFileSync(new URL("../examples/browser.html", import.meta.url), "utf8");
  const script = /<script type="module">\n([\s\S]*?)<\/script>/.exec(html)?.[1];
  assert.ok(script, "examples/browser.html has a module script");
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const snippet = /```html\n<script type="module">\n([\s\S]*?)<\/script>\n```/.exec(readme)?.[1];
  assert.equal(snippet, script.replace('"../dist/index.js"', '"@prefloop/sdk"'), "the README shows the example file");
  assert.ok(script.split("\n").filter(Boolean).length <= 14, "short enough to read at a glance");

  // Run it as a module, with the page globals it touches.
  const dist = pathToFileURL(new URL("../dist/index.js", import.meta.url).pathname).href;
  const source = script.replace('"../dist/index.js"', JSON.stringify(dist));
  const body = { dataset: /** @type {Record<string, string>} */ ({}) };
  const g = /** @type {any} */ (globalThis);
  g.location = new URL(`http://127.0.0.1:1/examples/browser.html?endpoint=${encodeURIComponent(endpoint)}&token=dev-token`);
  g.document = { body };
  try {
    await import(`data:text/javascript,${encodeURIComponent(source)}`);
  } finally {
    delete g.location;
    delete g.document;
  }
  assert.deepEqual(JSON.parse(body.dataset.result), { delivered: 3, rejected: 0, pending: 0 });
  assert.equal(received.length, 1);
  assert.equal(received[0].headers["authorization"], "Bearer dev-token");
  const kinds = received[0].body.events.map((/** @type {any} */ e) => e.data.kind ?? e.type);
  assert.deepEqual(kinds, ["interaction", "THUMBS", "RATING"]);
});
