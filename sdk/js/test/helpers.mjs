// Test doubles and helpers shared by the tests: a scripted fake fetch, a fake page
// (window, document, sendBeacon), polling, and sample arguments.
import { readFileSync } from "node:fs";

/**
 * A fetch that records every request and answers from `script`: an array consumed in
 * order (the last entry repeats) or a function of (request, index). An answer is
 * { status, body?, headers? }, or an Error to simulate a network failure.
 * @param {any} script
 */
export function fakeFetch(script = [{ status: 202 }]) {
  /** @type {{url: string, headers: Record<string, string>, body: any, raw: string, at: number}[]} */
  const calls = [];
  /** @param {string} url @param {any} init */
  const fetch = async (url, init) => {
    const body = JSON.parse(init.body);
    const request = { url, headers: init.headers, body, raw: init.body, at: Date.now() };
    calls.push(request);
    const index = calls.length - 1;
    const answer =
      typeof script === "function" ? script(request, index) : script[Math.min(index, script.length - 1)];
    if (answer instanceof Error) throw answer;
    const { status = 202, headers = {} } = answer;
    const n = body.events.length;
    const reply = answer.body ?? (status === 202 ? { accepted: n, rejected: 0, errors: [] } : {});
    return new Response(JSON.stringify(reply), { status, headers });
  };
  return Object.assign(fetch, { calls });
}

/**
 * A page: window and document event targets, and a recording sendBeacon that accepts
 * the n-th beacon when `accept(n)` is true.
 * @param {{accept?: (n: number) => boolean}} [options]
 */
export function fakePage({ accept = (_n) => true } = {}) {
  const window = new EventTarget();
  const document = Object.assign(new EventTarget(), { visibilityState: "visible" });
  /** @type {{url: string, body: any}[]} */
  const beacons = [];
  /** @param {string} url @param {string} body */
  const sendBeacon = (url, body) => {
    if (!accept(beacons.length)) return false;
    beacons.push({ url, body: JSON.parse(body) });
    return true;
  };
  return {
    lifecycle: { window, document },
    sendBeacon,
    beacons,
    hide() {
      document.visibilityState = "hidden";
      document.dispatchEvent(new Event("visibilitychange"));
    },
    pagehide() {
      window.dispatchEvent(new Event("pagehide"));
    },
  };
}

/** Resolves when `predicate()` is true; rejects after `timeoutMs`. @param {() => boolean} predicate */
export async function waitFor(predicate, timeoutMs = 3000, what = "condition") {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Ids of a response, as the feedback methods take them. */
export const TARGET = Object.freeze({ interactionId: "i-1", responseId: "r-1", conversationId: "c-1" });

/** Valid arguments for interaction(). */
export const TURN = Object.freeze({
  conversationId: "c-1",
  turn: 0,
  modelVersion: "base-1",
  messages: [{ role: "user", content: "Résumé tips? ✓ 🚀" }],
  response: "Lead with results.",
  latencyMs: 120,
  promptTokens: 9,
  completionTokens: 4,
});

/** Options every test client shares: fast timers, no page, a fresh in-memory storage. */
export const FAST = Object.freeze({
  endpoint: "http://collector.test",
  userId: "u_1",
  flushIntervalMs: 30,
  backoff: { baseMs: 20, maxMs: 80 },
  lifecycle: null,
  sendBeacon: null,
});

/** The data of every event the fake fetch received, in order. @param {{calls: any[]}} fetch */
export const sent = (fetch) => fetch.calls.flatMap((c) => c.body.events.map((/** @type {any} */ e) => e.data));

/** @param {string} recordType */
export function schema(recordType, version = 1) {
  return JSON.parse(readFileSync(new URL(`../../../schemas/${recordType}/v${version}.avsc`, import.meta.url), "utf8"));
}
