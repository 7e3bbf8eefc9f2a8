// UUIDv7 ids: well-formed, time-ordered, unique, monotonic within a millisecond.
import assert from "node:assert/strict";
import { test } from "node:test";

import { FeedbackClient, uuidv7, uuidv7Timestamp } from "../dist/index.js";
import { FAST, fakeFetch, TARGET } from "./helpers.mjs";

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test("ids are RFC 9562 version 7 with the current time, sorted in creation order", () => {
  const before = Date.now();
  const ids = Array.from({ length: 10_000 }, () => uuidv7());
  const after = Date.now();
  assert.ok(ids.every((id) => V7.test(id)));
  assert.equal(new Set(ids).size, ids.length);
  assert.deepEqual([...ids].sort(), ids, "lexicographic order is creation order, even within a millisecond");
  const t = uuidv7Timestamp(ids[0]);
  assert.ok(t >= before && t <= after + 1);
});

test("events carry UUIDv7 ids and UTC millisecond timestamps", () => {
  const c = new FeedbackClient({ ...FAST, fetch: fakeFetch() });
  const before = Date.now();
  const f = c.copy(TARGET);
  assert.match(f.event_id, V7);
  assert.ok(Number.isInteger(f.ts) && f.ts >= before && f.ts <= Date.now());
  assert.ok(Math.abs(uuidv7Timestamp(f.event_id) - f.ts) <= 1);
  assert.match(c.sessionId, V7);
  assert.equal(f.session_id, c.sessionId);
});
