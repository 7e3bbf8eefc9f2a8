// Page unload: navigator.sendBeacon gets what is queued, with the token in the URL.
import assert from "node:assert/strict";
import { test } from "node:test";

import { FeedbackClient, MemoryStorage } from "../dist/index.js";
import { FAST, fakeFetch, fakePage, sent, TARGET, waitFor } from "./helpers.mjs";

test("pagehide beacons the queue to /v1/events?token=..., as the same JSON batch", () => {
  const page = fakePage();
  const fetch = fakeFetch();
  const client = new FeedbackClient({ ...FAST, fetch, token: "t/o k+en", flushIntervalMs: 60_000, lifecycle: page.lifecycle, sendBeacon: page.sendBeacon });
  const one = client.rate({ ...TARGET, rating: 5 });
  const two = client.copy(TARGET);
  page.pagehide();
  assert.equal(fetch.calls.length, 0);
  assert.equal(page.beacons.length, 1);
  const url = new URL(page.beacons[0].url);
  assert.equal(url.origin + url.pathname, "http://collector.test/v1/events");
  assert.equal(url.searchParams.get("token"), "t/o k+en");
  assert.deepEqual(page.beacons[0].body.events.map((/** @type {any} */ e) => [e.type, e.data.event_id]), [
    ["feedback", one.event_id],
    ["feedback", two.event_id],
  ]);
  assert.equal(client.stats.beaconed, 2);
  assert.equal(client.stats.pending, 0);
});

test("a hidden tab beacons too, and keeps working when it comes back", async () => {
  const page = fakePage();
  const fetch = fakeFetch();
  const client = new FeedbackClient({ ...FAST, fetch, flushIntervalMs: 60_000, lifecycle: page.lifecycle, sendBeacon: page.sendBeacon });
  client.copy(TARGET);
  page.hide();
  assert.equal(page.beacons.length, 1);
  assert.equal(new URL(page.beacons[0].url).searchParams.has("token"), false, "no token configured, none sent");
  client.copy(TARGET);
  await client.flush();
  assert.equal(fetch.calls.length, 1);
  assert.deepEqual(client.stats, { emitted: 2, delivered: 1, retried: 0, dropped: 0, rejected: 0, beaconed: 1, pending: 0 });
});

test("beacons are split under the browser's 64 KiB budget; what it refuses stays in storage", async () => {
  const storage = new MemoryStorage();
  const page = fakePage({ accept: (n) => n < 2 });
  const client = new FeedbackClient({ ...FAST, fetch: fakeFetch(), storage, maxQueue: 100, batchSize: 100, flushIntervalMs: 60_000, lifecycle: page.lifecycle, sendBeacon: page.sendBeacon });
  const text = "é".repeat(10_000); // 20 kB of UTF-8 each
  for (let i = 0; i < 8; i++) client.comment({ ...TARGET, text });
  page.pagehide();
  assert.equal(page.beacons.length, 2);
  for (const b of page.beacons) assert.ok(Buffer.byteLength(JSON.stringify(b.body)) <= 60_000);
  assert.deepEqual(page.beacons.map((b) => b.body.events.length), [2, 2]);
  assert.equal(client.stats.beaconed, 4);
  assert.equal(client.stats.pending, 4);
  const next = new FeedbackClient({ ...FAST, fetch: fakeFetch(), storage, maxQueue: 100, batchSize: 100 });
  assert.equal(next.stats.pending, 4, "the next page load sends the rest");
  await next.close();
  await client.close();
});

test("the listeners go away with close()", async () => {
  const page = fakePage();
  const client = new FeedbackClient({ ...FAST, fetch: fakeFetch(), lifecycle: page.lifecycle, sendBeacon: page.sendBeacon });
  await client.close();
  page.pagehide();
  assert.equal(page.beacons.length, 0);
});

test("back from the back/forward cache, a page keeps its events unless the next page took them", async () => {
  const storage = new MemoryStorage();
  const down = fakeFetch([new TypeError("offline")]);
  const page = fakePage({ accept: () => false }); // beacons refused: events stay queued
  const client = new FeedbackClient({ ...FAST, fetch: down, storage, flushIntervalMs: 60_000, lifecycle: page.lifecycle, sendBeacon: page.sendBeacon, onError: () => {} });
  client.copy(TARGET);
  page.pagehide();
  const pageshow = () => page.lifecycle.window.dispatchEvent(Object.assign(new Event("pageshow"), { persisted: true }));
  pageshow();
  const other = new FeedbackClient({ ...FAST, fetch: fakeFetch(), storage });
  assert.equal(other.stats.pending, 0, "restored page reclaimed its entry");
  assert.equal(client.stats.pending, 1);

  page.pagehide();
  const next = new FeedbackClient({ ...FAST, fetch: fakeFetch(), storage });
  assert.equal(next.stats.pending, 1, "the next page adopted the released entry");
  pageshow();
  assert.equal(client.stats.pending, 0, "so the restored page lets it go: no duplicate");
  await Promise.all([other.close(), next.close(), client.close()]);
});

test("coming back online retries at once instead of waiting out the backoff", async () => {
  const page = fakePage();
  const fetch = fakeFetch([new TypeError("offline"), { status: 202 }]);
  const client = new FeedbackClient({ ...FAST, fetch, backoff: { baseMs: 60_000, maxMs: 60_000 }, lifecycle: page.lifecycle, onError: () => {} });
  client.copy(TARGET);
  await client.flush();
  assert.equal(client.stats.pending, 1);
  page.lifecycle.window.dispatchEvent(new Event("online"));
  await waitFor(() => client.stats.delivered === 1, 1000, "the retry (the backoff alone would wait a minute)");
  assert.equal(fetch.calls.length, 2);
});

test("no beacon while the collector is failing: the events wait in storage for the next page", async () => {
  const storage = new MemoryStorage();
  const page = fakePage();
  const client = new FeedbackClient({ ...FAST, fetch: fakeFetch([{ status: 503 }]), storage, lifecycle: page.lifecycle, sendBeacon: page.sendBeacon, onError: () => {} });
  client.copy(TARGET);
  await client.flush();
  page.pagehide();
  assert.equal(page.beacons.length, 0);
  const up = fakeFetch();
  const next = new FeedbackClient({ ...FAST, fetch: up, storage });
  await next.flush();
  assert.equal(next.stats.delivered, 1);
  assert.equal(sent(up)[0].kind, "COPY");
  await client.close();
});
