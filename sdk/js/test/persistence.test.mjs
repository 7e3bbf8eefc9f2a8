// The bounded queue, and unsent events surviving a reload in storage.
import assert from "node:assert/strict";
import { test } from "node:test";

import { FeedbackClient, MemoryStorage } from "../dist/index.js";
import { FAST, fakeFetch, fakePage, sent, TARGET, waitFor } from "./helpers.mjs";

const DOWN = [new TypeError("fetch failed")];

test("a full queue drops the oldest event and counts it", async () => {
  const fetch = fakeFetch(DOWN);
  /** @type {any[]} */
  const errors = [];
  const client = new FeedbackClient({ ...FAST, fetch, batchSize: 2, maxQueue: 3, flushIntervalMs: 60_000, onError: (e) => errors.push(e) });
  for (let i = 1; i <= 5; i++) client.sessionEnd({ ...TARGET, seconds: i });
  assert.equal(client.stats.dropped, 2);
  assert.equal(client.stats.pending, 3);
  assert.equal(client.stats.emitted, 5);
  assert.ok(errors.some((e) => /queue is full/.test(e.message)));
  fetch.calls.length = 0;
  const ok = fakeFetch();
  // Deliver what is left through a client over the same storage: the newest three.
  const storage = new MemoryStorage();
  const a = new FeedbackClient({ ...FAST, fetch, storage, batchSize: 2, maxQueue: 3, flushIntervalMs: 60_000, onError: () => {} });
  for (let i = 1; i <= 5; i++) a.sessionEnd({ ...TARGET, seconds: i });
  await a.close();
  const b = new FeedbackClient({ ...FAST, fetch: ok, storage });
  await b.flush();
  assert.deepEqual(sent(ok).map((e) => e.value), [3, 4, 5]);
});

test("after a reload, a new client over the same storage re-sends the unsent events in order, first", async () => {
  const storage = new MemoryStorage();
  const page = fakePage();
  const down = fakeFetch(DOWN);
  const first = new FeedbackClient({ ...FAST, fetch: down, storage, lifecycle: page.lifecycle, onError: () => {} });
  for (let i = 1; i <= 4; i++) first.sessionEnd({ ...TARGET, seconds: i });
  await first.flush(); // fails: network down
  page.pagehide(); // the page goes away (no beacon available here)
  assert.equal(storage.length, 1, "one namespaced key holds the queue");
  assert.match(String(storage.key(0)), /^prefloop:v1:http:\/\/collector\.test:/);

  const up = fakeFetch();
  const second = new FeedbackClient({ ...FAST, fetch: up, storage });
  assert.equal(second.stats.pending, 4);
  second.sessionEnd({ ...TARGET, seconds: 5 });
  await waitFor(() => second.stats.delivered === 5, 2000, "the old events and the new one");
  assert.deepEqual(sent(up).map((e) => e.value), [1, 2, 3, 4, 5]);
  assert.equal(new Set(sent(up).map((e) => e.event_id)).size, 5);
  assert.equal(storage.length, 0, "nothing left behind once delivered");
});

test("a live client's events are not taken by another client; a crashed one's are, once orphaned", async () => {
  const storage = new MemoryStorage();
  const tab1 = new FeedbackClient({ ...FAST, fetch: fakeFetch(DOWN), storage, flushIntervalMs: 60_000, onError: () => {} });
  tab1.copy(TARGET);
  await Promise.resolve(); // the queue is saved in a microtask
  const tab2 = new FeedbackClient({ ...FAST, fetch: fakeFetch(), storage });
  assert.equal(tab2.stats.pending, 0, "tab1 is alive (fresh heartbeat, not released)");
  assert.equal(storage.length, 1);
  // tab1 crashes (no pagehide, no close); a client started after orphanAfterMs adopts it.
  const up = fakeFetch();
  const later = new FeedbackClient({ ...FAST, fetch: up, storage, orphanAfterMs: 0 });
  await waitFor(() => later.stats.delivered === 1, 2000);
  assert.equal(sent(up)[0].kind, "COPY");
});

test("unreadable storage entries are ignored and reported, and a failing storage never throws", async () => {
  const storage = new MemoryStorage();
  storage.setItem("prefloop:v1:http://collector.test:junk", "{not json");
  storage.setItem("unrelated", "kept");
  /** @type {any[]} */
  const errors = [];
  const client = new FeedbackClient({ ...FAST, fetch: fakeFetch(), storage, onError: (e) => errors.push(e) });
  assert.match(errors[0].message, /ignored 1 unreadable/);
  assert.equal(storage.getItem("unrelated"), "kept");

  const full = Object.assign(new MemoryStorage(), {
    setItem() {
      throw new Error("QuotaExceededError");
    },
  });
  /** @type {any[]} */
  const errors2 = [];
  const fetch = fakeFetch();
  const c2 = new FeedbackClient({ ...FAST, fetch, storage: full, onError: (e) => errors2.push(e) });
  c2.copy(TARGET);
  await c2.flush();
  assert.equal(c2.stats.delivered, 1, "delivered from memory");
  assert.equal(errors2[0].name, "PrefloopStorageError");
  await client.close();
});

test("close() sends what it can and leaves the rest released for the next client", async () => {
  const storage = new MemoryStorage();
  const a = new FeedbackClient({ ...FAST, fetch: fakeFetch(DOWN), storage, onError: () => {} });
  a.copy(TARGET);
  assert.deepEqual(await a.close(), { delivered: 0, rejected: 0, pending: 1 });
  assert.throws(() => a.copy(TARGET), { name: "PrefloopClosedError", message: /after close\(\)/ });
  const b = new FeedbackClient({ ...FAST, fetch: fakeFetch(), storage });
  assert.equal(b.stats.pending, 1, "adopted at once: close() released it");
  await b.close();
  assert.equal(b.stats.delivered, 1);
});
