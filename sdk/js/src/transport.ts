/**
 * HTTP to the collector: `POST {endpoint}/v1/events` with `{"events": [{type, data}]}`,
 * the reading of its replies, backoff, and `navigator.sendBeacon` bodies for page unload.
 */

export type FetchLike = (
  input: string,
  init: {
    method: string;
    headers: Record<string, string>;
    body: string;
    keepalive?: boolean;
    signal?: AbortSignal;
  },
) => Promise<{ status: number; headers: { get(name: string): string | null }; text(): Promise<string> }>;

/** One event as the collector reads it. */
export interface WireEvent {
  type: string;
  data: Record<string, unknown>;
}

export interface EventError {
  index: number;
  reason: string;
}

/** What the collector's reply means for the batch. */
export type Outcome =
  /** 2xx: delivered, except the events listed (invalid, never retried). */
  | { kind: "accepted"; status: number; errors: EventError[] }
  /** 400: the batch is invalid as a whole; nothing in it can succeed by retrying. */
  | { kind: "rejected"; status: number; errors: EventError[]; reason: string }
  /** 401/403: the token is missing or wrong; retrying will not help until it changes. */
  | { kind: "auth"; status: number; reason: string }
  /** 413: the body is too large; send fewer events at a time. */
  | { kind: "too-large"; status: number }
  /** 429, 5xx, other statuses, network errors and timeouts: try again later. */
  | { kind: "retry"; status: number | null; retryAfterMs: number | null; reason: string; cause?: unknown };

/** Beacons and keepalive fetches share a 64 KiB in-flight budget per page. */
export const KEEPALIVE_LIMIT_BYTES = 60_000;

const encoder = new TextEncoder();

export function byteLength(text: string): number {
  return encoder.encode(text).length;
}

/** The absolute events URL; a relative endpoint resolves against the page's location. */
export function eventsUrl(endpoint: string, token?: string): string {
  const base = (globalThis as { location?: { href?: string } }).location?.href;
  const root = new URL(endpoint, base);
  if (!root.pathname.endsWith("/")) root.pathname += "/";
  const url = new URL("v1/events", root);
  if (token !== undefined) url.searchParams.set("token", token);
  return url.toString();
}

export function encodeBatch(events: readonly WireEvent[]): string {
  return JSON.stringify({ events: events.map((e) => ({ type: e.type, data: e.data })) });
}

/** Sends one batch; never throws (network errors and timeouts become a "retry" outcome). */
export async function postBatch(options: {
  fetch: FetchLike;
  url: string;
  token: string | undefined;
  body: string;
  timeoutMs: number;
  now?: () => number;
}): Promise<Outcome> {
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  if (options.token !== undefined) headers["Authorization"] = `Bearer ${options.token}`;
  const controller = typeof AbortController === "undefined" ? undefined : new AbortController();
  const timer = setTimeout(() => controller?.abort(), options.timeoutMs);
  try {
    const init: Parameters<FetchLike>[1] = { method: "POST", headers, body: options.body };
    // keepalive lets the request outlive the page, within the browser's 64 KiB budget.
    if (byteLength(options.body) <= KEEPALIVE_LIMIT_BYTES) init.keepalive = true;
    if (controller) init.signal = controller.signal;
    const response = await options.fetch(options.url, init);
    const text = await response.text().catch(() => "");
    return classify(response.status, text, response.headers.get("Retry-After"), options.now ?? Date.now);
  } catch (cause) {
    const timedOut = controller?.signal.aborted === true;
    const reason = timedOut ? `no answer within ${options.timeoutMs} ms` : `network error: ${String(cause)}`;
    return { kind: "retry", status: null, retryAfterMs: null, reason, cause };
  } finally {
    clearTimeout(timer);
  }
}

/** Reads a collector reply. Exported for tests. */
export function classify(status: number, text: string, retryAfter: string | null, now: () => number): Outcome {
  const body = parseJson(text);
  if (status >= 200 && status < 300) return { kind: "accepted", status, errors: eventErrors(body) };
  if (status === 400) {
    return { kind: "rejected", status, errors: eventErrors(body), reason: summary(body, text) || "bad request" };
  }
  if (status === 401 || status === 403) return { kind: "auth", status, reason: summary(body, text) };
  if (status === 413) return { kind: "too-large", status };
  const reason = `HTTP ${status}${summary(body, text) ? ": " + summary(body, text) : ""}`;
  return { kind: "retry", status, retryAfterMs: parseRetryAfter(retryAfter, now), reason };
}

/** Retry-After as milliseconds to wait: delta-seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: () => number = Date.now): number | null {
  if (value === null || value.trim() === "") return null;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000);
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? null : Math.max(0, date - now());
}

/**
 * Exponential backoff with jitter: the n-th consecutive failure (n >= 1) waits a random
 * time in [d/2, d] where d = min(maxMs, baseMs * 2^(n-1)). Half is fixed so that retries
 * always back off; the random half spreads many clients apart after an outage.
 */
export function backoffDelay(failures: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const d = Math.min(maxMs, baseMs * 2 ** Math.max(0, failures - 1));
  return Math.round(d / 2 + random() * (d / 2));
}

/**
 * Beacon bodies for `events`, in order, each at most `maxBytes` (UTF-8) so that the
 * browser accepts it; an event too large for any beacon is left out (`skipped`).
 */
export function beaconBodies<T extends WireEvent>(
  events: readonly T[],
  maxBytes: number,
): { bodies: { body: string; events: T[] }[]; skipped: T[] } {
  const bodies: { body: string; events: T[] }[] = [];
  const skipped: T[] = [];
  const overhead = byteLength('{"events":[]}');
  let current: T[] = [];
  let size = overhead;
  const close = () => {
    if (current.length) bodies.push({ body: encodeBatch(current), events: current });
    current = [];
    size = overhead;
  };
  for (const event of events) {
    const n = byteLength(JSON.stringify({ type: event.type, data: event.data })) + 1; // + comma
    if (overhead + n > maxBytes) {
      skipped.push(event);
      continue;
    }
    if (size + n > maxBytes) close();
    current.push(event);
    size += n;
  }
  close();
  return { bodies, skipped };
}

function parseJson(text: string): unknown {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

function eventErrors(body: unknown): EventError[] {
  const errors = (body as { errors?: unknown } | null)?.errors;
  if (!Array.isArray(errors)) return [];
  return errors
    .filter((e): e is { index: number; reason?: unknown } => Number.isInteger(e?.index))
    .map((e) => ({ index: e.index, reason: typeof e.reason === "string" ? e.reason : "invalid event" }));
}

function summary(body: unknown, text: string): string {
  const b = body as { detail?: unknown; error?: unknown; message?: unknown } | null;
  const value = b?.detail ?? b?.error ?? b?.message;
  if (typeof value === "string") return value;
  if (value !== undefined) return JSON.stringify(value).slice(0, 200);
  return body === null ? text.slice(0, 200) : "";
}
