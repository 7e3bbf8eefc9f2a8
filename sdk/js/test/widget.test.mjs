// The rating widget's checks and what it sends; its DOM is exercised in a real browser by
// tests/integration/test_console_chat.py (the console's chat page).
import assert from "node:assert/strict";
import { test } from "node:test";

import { FeedbackClient, PrefloopValidationError, mountRating as fromIndex } from "../dist/index.js";
import { collectorBase, mountRating, ratingTarget, submitRating, watchRatings } from "../dist/widget.js";
import { FAST, fakeFetch, sent, TARGET } from "./helpers.mjs";

/** @param {Promise<unknown> | (() => unknown)} attempt @param {string} field @param {RegExp} message */
async function rejects(attempt, field, message) {
  /** @param {any} e */
  const check = (e) => {
    assert.ok(e instanceof PrefloopValidationError, String(e));
    assert.equal(e.field, field);
    assert.match(e.message, message);
    return true;
  };
  if (typeof attempt === "function") assert.throws(attempt, check);
  else await assert.rejects(attempt, check);
}

/** @param {Record<string, string>} attributes */
const element = (attributes) => ({ getAttribute: (/** @type {string} */ name) => attributes[name] ?? null });

test("importing the widget in Node touches no document, and the SDK exports it", () => {
  assert.equal(typeof document, "undefined");
  assert.equal(fromIndex, mountRating);
});

test("a Send records the rating and the comment, then flushes them", async () => {
  const fetch = fakeFetch();
  const client = new FeedbackClient({ ...FAST, fetch });
  const result = await submitRating({ client, target: { ...TARGET, sessionId: "s-1" }, rating: 4, comment: "  clear, but long  " });
  assert.deepEqual(result.delivery, { delivered: 2, rejected: 0, pending: 0 });
  const [rating, comment] = sent(fetch);
  assert.deepEqual(
    [rating.kind, rating.value, rating.text, rating.interaction_id, rating.response_id, rating.conversation_id, rating.user_id, rating.session_id],
    ["RATING", 4, null, "i-1", "r-1", "c-1", "u_1", "s-1"],
  );
  assert.deepEqual([comment.kind, comment.value, comment.text, comment.interaction_id], ["COMMENT", null, "clear, but long", "i-1"]);
  assert.deepEqual(result.feedback.map((f) => f.event_id), [rating.event_id, comment.event_id]);
  // a blank comment is no comment
  await submitRating({ client, target: TARGET, rating: 1, comment: "   " });
  assert.deepEqual(sent(fetch).slice(2).map((f) => f.kind), ["RATING"]);
  await client.close();
});

test("a rating outside 1..5 or a missing id is refused by name, before anything is sent", async () => {
  const fetch = fakeFetch();
  const client = new FeedbackClient({ ...FAST, fetch });
  for (const rating of [6, 0, 3.5, "4", undefined]) {
    await rejects(submitRating({ client, target: TARGET, rating: /** @type {any} */ (rating) }), "rating", /whole number of stars from 1 to 5/);
  }
  await rejects(submitRating({ client, target: { ...TARGET, interactionId: undefined }, rating: 4 }), "target.interactionId (interaction_id)", /required.*pass target.interactionId/);
  await rejects(submitRating({ client, target: { ...TARGET, responseId: "" }, rating: 4 }), "target.responseId (response_id)", /non-empty/);
  await rejects(submitRating({ client, target: TARGET, rating: 4, comment: "x".repeat(2001) }), "comment", /longer than 2000/);
  await rejects(submitRating({ client: /** @type {any} */ ({}), target: TARGET, rating: 4 }), "client", /FeedbackClient/);
  assert.equal(client.stats.emitted, 0);
  assert.equal(fetch.calls.length, 0);
  await client.close();
});

test("mountRating checks its options before it touches the element", async () => {
  const client = new FeedbackClient({ ...FAST, fetch: fakeFetch() });
  const nowhere = /** @type {any} */ (null);
  await rejects(() => mountRating(nowhere, /** @type {any} */ ({ target: TARGET })), "client", /must be a FeedbackClient/);
  await rejects(() => mountRating(nowhere, { client, target: { ...TARGET, interactionId: undefined } }), "target.interactionId (interaction_id)", /required/);
  await rejects(() => mountRating(nowhere, { client, target: { ...TARGET, conversationId: undefined } }), "target.conversationId (conversation_id)", /required/);
  await rejects(() => mountRating(nowhere, { client, target: /** @type {any} */ ("i-1") }), "target", /must be an object/);
  await rejects(() => mountRating(nowhere, { client, target: TARGET, onRated: /** @type {any} */ ("yes") }), "onRated", /function/);
  await rejects(() => mountRating(/** @type {any} */ ({ tagName: "DIV" }), { client, target: TARGET }), "element", /must be a DOM element/);
  // the ids of an interaction record are accepted as they are
  const interaction = { interaction_id: "i-2", response_id: "r-2", conversation_id: "c-2" };
  await rejects(() => mountRating(nowhere, { client, target: { interaction } }), "element", /DOM element/);
  await client.close();
});

test("the data attributes name the target, and a missing one is named", async () => {
  const ids = {
    "data-interaction-id": "i-9",
    "data-response-id": "r-9",
    "data-conversation-id": "c-9",
    "data-user-id": "u-9",
  };
  assert.deepEqual(ratingTarget(element(ids)), { interactionId: "i-9", responseId: "r-9", conversationId: "c-9", userId: "u-9" });
  assert.equal(ratingTarget(element({ ...ids, "data-session-id": "s-9" })).sessionId, "s-9");
  const { "data-interaction-id": _, ...noInteraction } = ids;
  await rejects(() => ratingTarget(element(noInteraction)), "data-interaction-id (interaction_id)", /add data-interaction-id="…" to the rating element/);
  const { "data-user-id": __, ...noUser } = ids;
  await rejects(() => ratingTarget(element(noUser)), "data-user-id (user_id)", /required/);
  assert.equal(ratingTarget(element(noUser), { userRequired: false }).userId, undefined); // the client's userId
  await rejects(() => ratingTarget(element({ ...ids, "data-response-id": " " })), "data-response-id (response_id)", /non-empty/);
  await rejects(() => watchRatings(/** @type {any} */ ({ client: null })), "client", /FeedbackClient/);
});

test("the script tag's endpoint may be the collector's base or its events URL", () => {
  assert.equal(collectorBase("http://collector:8000/v1/events"), "http://collector:8000");
  assert.equal(collectorBase("http://collector:8000/v1/events/"), "http://collector:8000");
  assert.equal(collectorBase(" https://c.example/ingest "), "https://c.example/ingest");
  assert.equal(collectorBase("/v1/events"), "/");
});
