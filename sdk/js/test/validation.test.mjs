// Bad arguments throw PrefloopValidationError at the call, naming the field and the fix.
import assert from "node:assert/strict";
import { test } from "node:test";

import { FeedbackClient, PrefloopError, PrefloopValidationError } from "../dist/index.js";
import { FAST, fakeFetch, TARGET, TURN } from "./helpers.mjs";

/** @param {() => unknown} fn @param {string} field @param {RegExp} message */
function rejects(fn, field, message) {
  assert.throws(fn, (/** @type {any} */ e) => {
    assert.ok(e instanceof PrefloopValidationError && e instanceof PrefloopError, String(e));
    assert.equal(e.field, field);
    assert.match(e.message, message);
    return true;
  });
}

const client = () => new FeedbackClient({ ...FAST, fetch: fakeFetch() });

test("a rating outside 1..5 names rating and the range", () => {
  const c = client();
  rejects(() => c.rate({ ...TARGET, rating: 6 }), "rating (value)", /from 1 to 5 \(got 6\); pass a rating from 1/);
  rejects(() => c.rate({ ...TARGET, rating: 0 }), "rating (value)", /got 0/);
  rejects(() => c.rate({ ...TARGET, rating: NaN }), "rating (value)", /got NaN/);
  rejects(() => c.rate(/** @type {any} */ ({ ...TARGET, rating: "5" })), "rating (value)", /got "5"/);
  assert.equal(c.stats.emitted, 0, "nothing was queued");
});

test("a missing user or conversation id names it and says where to give it", () => {
  const c = new FeedbackClient({ ...FAST, userId: undefined, fetch: fakeFetch() });
  rejects(() => c.copy(TARGET), "userId (user_id)", /required.*FeedbackClient options/);
  rejects(() => c.interaction(TURN), "userId (user_id)", /required/);
  c.setUser("u_2");
  assert.equal(c.copy(TARGET).user_id, "u_2");
  rejects(() => c.copy({ interactionId: "i", responseId: "r" }), "conversationId (conversation_id)", /interaction: the record/);
  rejects(() => c.interaction({ ...TURN, conversationId: "" }), "conversationId (conversation_id)", /non-empty/);
});

test("an unknown feedback kind lists the known ones", () => {
  const c = client();
  rejects(() => c.feedback({ ...TARGET, kind: "LIKE" }), "kind", /RATING, THUMBS, REGENERATE, COPY, CONTINUE, EDIT, SESSION_END, REPORT, COMMENT/);
  rejects(() => c.feedback({ ...TARGET, kind: "UNKNOWN" }), "kind", /not a known feedback kind/);
  rejects(() => c.feedback({ ...TARGET, kind: "copy", value: 3 }), "value", /not used by COPY/);
  assert.equal(c.feedback({ ...TARGET, kind: "thumbs", value: "up" }).value, 1);
});

test("other values are checked where they are given", () => {
  const c = client();
  rejects(() => c.thumbs(/** @type {any} */ ({ ...TARGET, value: 2 })), "value", /pass 1 or "up", -1 or "down"/);
  rejects(() => c.sessionEnd({ ...TARGET, seconds: -1 }), "seconds (value)", /at least 0/);
  rejects(() => c.comment({ ...TARGET, text: "" }), "text", /non-empty/);
  rejects(() => c.copy({ ...TARGET, metadata: /** @type {any} */ ({ version: 2 }) }), "metadata.version", /String\(metadata.version\)/);
  rejects(() => c.copy({ ...TARGET, ts: -5 }), "ts", /milliseconds since the Unix epoch/);
  rejects(() => c.interaction({ ...TURN, turn: 1.5 }), "turn", /integer/);
  rejects(() => c.interaction({ ...TURN, latencyMs: 2 ** 31 }), "latencyMs (latency_ms)", /integer from 0 to 2147483647/);
  rejects(() => c.interaction({ ...TURN, messages: [/** @type {any} */ ({ role: "user" })] }), "messages[0].content", /string/);
  rejects(() => c.interaction({ ...TURN, uncertainty: 2 }), "uncertainty", /from 0 to 1/);
  assert.equal(c.copy({ ...TARGET, ts: new Date(1767225600123) }).ts, 1767225600123);
});

test("bad options throw at construction", () => {
  rejects(() => new FeedbackClient(/** @type {any} */ ({})), "endpoint", /collector's base URL/);
  rejects(() => new FeedbackClient({ endpoint: "not a url", fetch: fakeFetch() }), "endpoint", /not a URL/);
  rejects(() => new FeedbackClient({ ...FAST, batchSize: 0 }), "batchSize", /integer >= 1/);
  rejects(() => new FeedbackClient({ ...FAST, batchSize: 10, maxQueue: 5 }), "maxQueue", /smaller than batchSize/);
});
