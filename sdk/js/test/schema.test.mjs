// The types and the emitted JSON agree with schemas/*/v<N>.avsc.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { FeedbackClient, FeedbackKindSymbols, RECORD_TYPES, SCHEMA_VERSIONS } from "../dist/index.js";
import { generate, loadLatestSchemas, TYPES_FILE } from "../scripts/gen-types.mjs";
import { check } from "./avro-json.mjs";
import { FAST, fakeFetch, schema, sent, TARGET, TURN } from "./helpers.mjs";

test("src/types.ts is exactly what the generator makes from the schemas (gen-types --check)", () => {
  assert.equal(readFileSync(TYPES_FILE, "utf8"), generate(), "run `npm run gen` and commit src/types.ts");
});

test("the generated types cover every schema folder at its latest version", () => {
  const latest = loadLatestSchemas();
  assert.deepEqual([...RECORD_TYPES], latest.map((s) => s.recordType));
  for (const s of latest) assert.equal(SCHEMA_VERSIONS[/** @type {keyof typeof SCHEMA_VERSIONS} */ (s.recordType)], s.version);
  const kind = schema("feedback").fields.find((/** @type {any} */ f) => f.name === "kind");
  assert.deepEqual([...FeedbackKindSymbols], kind.type.symbols);
});

test("the generator fails on two different types sharing a name", () => {
  const record = (/** @type {string} */ field) => ({
    type: "record",
    name: "A",
    fields: [{ name: "m", type: { type: "record", name: "Message", fields: [{ name: field, type: "string" }] } }],
  });
  assert.throws(
    () => generate([{ recordType: "a", version: 1, schema: record("x") }, { recordType: "b", version: 1, schema: { ...record("y"), name: "B" } }]),
    /two different Avro types are named Message/,
  );
});

test("the JSON checker accepts every shared test vector and catches wrong JSON", () => {
  const { vectors } = JSON.parse(readFileSync(new URL("../../../schemas/vectors/vectors.json", import.meta.url), "utf8"));
  assert.ok(vectors.length >= 9);
  for (const v of vectors) {
    assert.deepEqual(check(schema(v.record_type, v.schema_version), v.event), [], v.name);
  }
  const fb = schema("feedback");
  const good = vectors.find((/** @type {any} */ v) => v.name === "feedback/thumbs_down").event;
  assert.match(check(fb, { ...good, extra: 1 }).join(), /extra: not a field/);
  assert.match(check(fb, { ...good, kind: "LIKE" }).join(), /not a FeedbackKind symbol/);
  assert.match(check(fb, { ...good, ts: "2026-01-01" }).join(), /expected a long/);
  const { user_id, ...noUser } = good;
  assert.match(check(fb, noUser).join(), /user_id: required/);
});

test("every method emits JSON whose fields are exactly the schema's, with compatible types", async () => {
  const fetch = fakeFetch();
  const client = new FeedbackClient({ ...FAST, fetch, metadata: { app: "test" } });
  const turn = client.interaction({ ...TURN, experimentId: "exp-1", arm: "candidate", uncertainty: 0.25, regenerates: "r-0" });
  client.interaction(TURN);
  client.regenerate(TARGET);
  client.copy({ interaction: turn });
  client.rate({ ...TARGET, rating: 4 });
  client.thumbs({ ...TARGET, value: "down" });
  client.continue_(TARGET);
  client.continueConversation(TARGET);
  client.edit({ ...TARGET, text: "better" });
  client.sessionEnd({ ...TARGET, seconds: 93.5 });
  client.report({ ...TARGET, reason: "harmful" });
  client.report(TARGET);
  client.comment({ ...TARGET, text: "nice", metadata: { locale: "fr" } });
  client.feedback({ ...TARGET, kind: "rating", value: 2 });
  await client.flush();

  const events = fetch.calls.flatMap((c) => c.body.events);
  assert.equal(events.length, 14);
  for (const { type, data } of events) {
    const avsc = schema(type);
    assert.deepEqual(check(avsc, data), [], `${type} ${data.kind ?? ""}`);
    // The SDK writes every field explicitly, nullable ones as null.
    assert.deepEqual(Object.keys(data).sort(), avsc.fields.map((/** @type {any} */ f) => f.name).sort());
  }
  const feedback = events.filter((e) => e.type === "feedback").map((e) => e.data);
  assert.deepEqual(
    feedback.map((f) => [f.kind, f.value, f.text]),
    [
      ["REGENERATE", null, null],
      ["COPY", null, null],
      ["RATING", 4, null],
      ["THUMBS", -1, null],
      ["CONTINUE", null, null],
      ["CONTINUE", null, null],
      ["EDIT", null, "better"],
      ["SESSION_END", 93.5, null],
      ["REPORT", null, "harmful"],
      ["REPORT", null, null],
      ["COMMENT", null, "nice"],
      ["RATING", 2, null],
    ],
  );
  assert.equal(feedback[1].interaction_id, turn.interaction_id, "{ interaction } supplies the ids");
  assert.deepEqual(feedback[10].metadata, { app: "test", locale: "fr" });
  assert.equal(sent(fetch)[0].experiment_id, "exp-1");
});
