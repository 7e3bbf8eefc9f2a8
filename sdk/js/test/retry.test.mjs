// Failures: retries with backoff on 5xx and network errors, Retry-After on 429, no retry
// of rejected events, 413 splitting, 401 pausing, and giving up after maxRetries.
import assert from "node:assert/strict";
import { test } from "node:test";

import { backoffDelay, FeedbackClient, parseRetryAfter, PrefloopDeliveryError, PrefloopRejectedError } from "../dist/index.js";
import { FAST, fakeFetch, sent, sleep, TARGET, waitFor } from "./helpers.mjs";

test("5xx and network errors are retried with growing delays until delivered", async () => {
  const fetch = fakeFetch([{ status: 503 }, new TypeError("fetch failed"), { status: 500 }, { status: 202 }]);
  /** @type {any[]} */
  const errors = [];
  const client = new FeedbackClient({ ...FAST, fetch, backoff: { baseMs: 40, maxMs: 1000 }, onError: (e) => errors.push(e) });
  client.rate({ ...TARGET, rating: 5 });
  await client.flush();
  await waitFor(() => client.stats.delivered === 1, 3000, "delivery after 3 failures");
  assert.equal(fetch.calls.length, 4);
  const ids = fetch.calls.map((c) => c.body.events[0].data.event_id);
  assert.equal(new Set(ids).size, 1, "the same event each time");
  const gaps = fetch.calls.slice(1).map((c, i) => c.at - fetch.calls[i].at);
  // Failure n waits in [d/2, d], d = 40 * 2^(n-1): [20,40], [40,80], [80,160].
  assert.ok(gaps[0] >= 18, `gap ${gaps[0]}`);
  assert.ok(gaps[1] >= 38, `gap ${gaps[1]}`);
  assert.ok(gaps[2] >= 78, `gap ${gaps[2]}`);
  assert.deepEqual(client.stats, { emitted: 1, delivered: 1, retried: 3, dropped: 0, rejected: 0, beaconed: 0, pending: 0 });
  assert.deepEqual(errors.map((e) => [e.constructor.name, e.status, e.willRetry]), [
    ["PrefloopDeliveryError", 503, true],
    ["PrefloopDeliveryError", null, true],
    ["PrefloopDeliveryError", 500, true],
  ]);
  assert.match(errors[1].message, /network error/);
});

test("backoff is exponential, jittered within [d/2, d], and capped", () => {
  assert.equal(backoffDelay(1, 100, 1000, () => 0), 50);
  assert.equal(backoffDelay(1, 100, 1000, () => 1), 100);
  assert.equal(backoffDelay(3, 100, 1000, () => 1), 400);
  assert.equal(backoffDelay(30, 100, 1000, () => 1), 1000);
  assert.equal(backoffDelay(30, 100, 1000, () => 0), 500);
  const samples = Array.from({ length: 200 }, () => backoffDelay(2, 100, 1000));
  assert.ok(samples.every((d) => d >= 100 && d <= 200));
  assert.ok(new Set(samples).size > 20, "jittered");
});

test("429 waits for Retry-After seconds, not the (much shorter) backoff", async () => {
  const fetch = fakeFetch([{ status: 429, headers: { "Retry-After": "1" } }, { status: 202 }]);
  const client = new FeedbackClient({ ...FAST, fetch, maxRetries: 0, onError: () => {} });
  client.copy(TARGET);
  await client.flush();
  assert.equal(fetch.calls.length, 1);
  assert.deepEqual(await client.flush(), { delivered: 0, rejected: 0, pending: 1 }, "flush() honours Retry-After too");
  assert.equal(fetch.calls.length, 1);
  await waitFor(() => fetch.calls.length === 2, 3000, "the retry");
  const gap = fetch.calls[1].at - fetch.calls[0].at;
  assert.ok(gap >= 990, `retried after ${gap} ms`);
  await waitFor(() => client.stats.delivered === 1);
  assert.equal(client.stats.dropped, 0, "a 429 does not use up retries (maxRetries is 0 here)");
});

test("Retry-After is read as seconds or as an HTTP date", () => {
  const now = () => Date.parse("2026-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("2", now), 2000);
  assert.equal(parseRetryAfter("0.5", now), 500);
  assert.equal(parseRetryAfter("Thu, 01 Jan 2026 00:00:30 GMT", now), 30_000);
  assert.equal(parseRetryAfter(null, now), null);
  assert.equal(parseRetryAfter("soon", now), null);
});

test("events the collector rejects (202 with errors) are counted and never retried", async () => {
  const fetch = fakeFetch([{ status: 202, body: { accepted: 2, rejected: 1, errors: [{ index: 1, reason: "value: out of range" }] } }]);
  /** @type {any[]} */
  const errors = [];
  const client = new FeedbackClient({ ...FAST, fetch, onError: (e) => errors.push(e) });
  client.copy(TARGET);
  const bad = client.rate({ ...TARGET, rating: 3 });
  client.copy(TARGET);
  assert.deepEqual(await client.flush(), { delivered: 2, rejected: 1, pending: 0 });
  await sleep(100);
  assert.equal(fetch.calls.length, 1, "no retry");
  assert.equal(client.stats.rejected, 1);
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof PrefloopRejectedError);
  assert.equal(errors[0].eventId, bad.event_id);
  assert.equal(errors[0].reason, "value: out of range");
});

test("a 400 rejects the whole batch without retrying it, and the next batch still goes", async () => {
  const fetch = fakeFetch([{ status: 400, body: { detail: "body is not an events batch" } }, { status: 202 }]);
  /** @type {any[]} */
  const errors = [];
  const client = new FeedbackClient({ ...FAST, fetch, batchSize: 2, onError: (e) => errors.push(e) });
  client.copy(TARGET);
  client.copy(TARGET);
  client.copy(TARGET);
  assert.deepEqual(await client.flush(), { delivered: 1, rejected: 2, pending: 0 });
  assert.deepEqual(fetch.calls.map((c) => c.body.events.length), [2, 1]);
  assert.equal(errors.length, 2);
  assert.match(errors[0].message, /body is not an events batch/);
});

test("413 halves the batch; a single event too large is dropped, not retried", async () => {
  const fetch = fakeFetch((/** @type {any} */ req) => {
    const big = req.body.events.some((/** @type {any} */ e) => e.data.text?.length > 100);
    return req.body.events.length > 2 || big ? { status: 413 } : { status: 202 };
  });
  const client = new FeedbackClient({ ...FAST, fetch, batchSize: 8, onError: () => {} });
  for (let i = 0; i < 5; i++) client.copy(TARGET);
  client.comment({ ...TARGET, text: "x".repeat(500) });
  await client.flush();
  assert.deepEqual(fetch.calls.map((c) => c.body.events.length), [6, 3, 1, 1, 1, 1, 1, 1]);
  assert.equal(client.stats.delivered, 5);
  assert.equal(client.stats.dropped, 1);
  assert.equal(client.stats.pending, 0);
});

test("an event is dropped, and counted, after maxRetries failed retries", async () => {
  const fetch = fakeFetch([{ status: 500 }]);
  /** @type {any[]} */
  const errors = [];
  const client = new FeedbackClient({ ...FAST, fetch, maxRetries: 2, backoff: { baseMs: 5, maxMs: 10 }, onError: (e) => errors.push(e) });
  client.copy(TARGET);
  await waitFor(() => client.stats.dropped === 1, 3000, "giving up");
  assert.equal(fetch.calls.length, 3, "1 attempt + 2 retries");
  assert.equal(client.stats.pending, 0);
  assert.equal(client.stats.retried, 2);
  assert.equal(errors.at(-1).willRetry, false);
  assert.match(errors.at(-1).message, /dropped 1 events after 2 retries/);
});

test("401 pauses sending and keeps the events until setToken()", async () => {
  const fetch = fakeFetch((/** @type {any} */ req) => (req.headers.Authorization === "Bearer good" ? { status: 202 } : { status: 401 }));
  /** @type {any[]} */
  const errors = [];
  const client = new FeedbackClient({ ...FAST, fetch, token: "bad", onError: (e) => errors.push(e) });
  client.copy(TARGET);
  client.copy(TARGET);
  await client.flush();
  await sleep(150);
  assert.equal(fetch.calls.length, 1, "no retry loop against a wrong token");
  assert.equal(client.stats.pending, 2);
  assert.ok(errors[0] instanceof PrefloopDeliveryError);
  assert.match(errors[0].message, /refused the token.*setToken/);
  client.setToken("good");
  await waitFor(() => client.stats.delivered === 2, 2000, "delivery with the new token");
  assert.equal(client.stats.pending, 0);
});

test("a hung request times out and is retried", async () => {
  let n = 0;
  /** @param {string} url @param {any} init */
  const fetch = (url, init) => {
    if (n++ === 0) {
      return new Promise((_, reject) => init.signal.addEventListener("abort", () => reject(new Error("aborted"))));
    }
    return fakeFetch()(url, init);
  };
  /** @type {any[]} */
  const errors = [];
  const client = new FeedbackClient({ ...FAST, fetch, timeoutMs: 50, onError: (e) => errors.push(e) });
  client.copy(TARGET);
  await waitFor(() => client.stats.delivered === 1, 2000, "delivery after the timeout");
  assert.match(errors[0].message, /no answer within 50 ms/);
});

test("a throwing onError handler does not disturb delivery", async () => {
  const fetch = fakeFetch([{ status: 500 }, { status: 202 }]);
  const client = new FeedbackClient({ ...FAST, fetch, onError: () => { throw new Error("handler bug"); } });
  client.copy(TARGET);
  await waitFor(() => client.stats.delivered === 1, 2000);
  assert.equal(sent(fetch).length, 2);
});
