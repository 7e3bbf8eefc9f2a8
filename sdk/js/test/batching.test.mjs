// When events leave: full batches at once, partial ones after flushIntervalMs, in order.
import assert from "node:assert/strict";
import { test } from "node:test";

import { FeedbackClient } from "../dist/index.js";
import { FAST, fakeFetch, sent, sleep, TARGET, waitFor } from "./helpers.mjs";

test("a full batch is sent at once, without waiting for the interval", async () => {
  const fetch = fakeFetch();
  const client = new FeedbackClient({ ...FAST, fetch, batchSize: 3, flushIntervalMs: 60_000 });
  for (let i = 0; i < 7; i++) client.rate({ ...TARGET, rating: 1 + (i % 5) });
  await waitFor(() => fetch.calls.length === 2, 1000, "two full batches");
  await sleep(30);
  assert.deepEqual(fetch.calls.map((c) => c.body.events.length), [3, 3], "the 7th waits for the interval");
  assert.equal(client.stats.pending, 1);
  assert.deepEqual(sent(fetch).map((e) => e.value), [1, 2, 3, 4, 5, 1]);
  await client.close();
  assert.deepEqual(fetch.calls.map((c) => c.body.events.length), [3, 3, 1], "close() sends the rest");
});

test("a partial batch is sent once flushIntervalMs has passed since the first event", async () => {
  const fetch = fakeFetch();
  const client = new FeedbackClient({ ...FAST, fetch, batchSize: 50, flushIntervalMs: 150 });
  const start = Date.now();
  client.copy(TARGET);
  await sleep(50);
  client.copy(TARGET); // does not restart the clock
  await waitFor(() => fetch.calls.length === 1, 2000, "the timed flush");
  const elapsed = fetch.calls[0].at - start;
  assert.ok(elapsed >= 140 && elapsed < 600, `sent after ${elapsed} ms`);
  assert.equal(fetch.calls[0].body.events.length, 2);
  await sleep(200);
  assert.equal(fetch.calls.length, 1, "nothing more to send");
  assert.deepEqual(client.stats, { emitted: 2, delivered: 2, retried: 0, dropped: 0, rejected: 0, beaconed: 0, pending: 0 });
});

test("the request is a JSON POST to {endpoint}/v1/events with the bearer token", async () => {
  const fetch = fakeFetch();
  const client = new FeedbackClient({ ...FAST, endpoint: "https://x.test/prefloop", token: "s3cret", fetch });
  client.copy(TARGET);
  await client.flush();
  const [call] = fetch.calls;
  assert.equal(call.url, "https://x.test/prefloop/v1/events");
  assert.equal(call.headers["Content-Type"], "application/json");
  assert.equal(call.headers["Authorization"], "Bearer s3cret");
  assert.deepEqual(Object.keys(call.body), ["events"]);
  assert.deepEqual(Object.keys(call.body.events[0]), ["type", "data"]);
  assert.equal(call.body.events[0].type, "feedback");
});

test("flush() reports what it delivered and resolves with nothing queued", async () => {
  const fetch = fakeFetch();
  const client = new FeedbackClient({ ...FAST, fetch, batchSize: 2, flushIntervalMs: 60_000 });
  assert.deepEqual(await client.flush(), { delivered: 0, rejected: 0, pending: 0 });
  client.copy(TARGET);
  assert.deepEqual(await client.flush(), { delivered: 1, rejected: 0, pending: 0 });
  assert.equal(fetch.calls.length, 1);
});

test("only one request is in flight at a time, so events arrive in the order they were made", async () => {
  let inFlight = 0;
  let most = 0;
  const inner = fakeFetch();
  /** @param {string} url @param {any} init */
  const fetch = async (url, init) => {
    most = Math.max(most, ++inFlight);
    await sleep(10);
    try {
      return await inner(url, init);
    } finally {
      inFlight--;
    }
  };
  const client = new FeedbackClient({ ...FAST, fetch, batchSize: 2 });
  for (let i = 1; i <= 9; i++) client.sessionEnd({ ...TARGET, seconds: i });
  await client.flush();
  assert.equal(most, 1);
  assert.deepEqual(sent(inner).map((e) => e.value), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
});
