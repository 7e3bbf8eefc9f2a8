/**
 * FeedbackClient: validates and queues events, sends them to the collector in batches,
 * retries with backoff, keeps what is unsent in storage, and beacons it on page unload.
 * Explicit calls throw typed errors for bad arguments; delivery and storage problems go
 * to `onError` and never reach the caller.
 */
import { PrefloopClosedError, PrefloopError, PrefloopValidationError } from "./errors.js";
import { Delivery, type ClientStats, type FlushResult } from "./delivery.js";
import {
  buildFeedback,
  buildInteraction,
  feedbackKind,
  ratingValue,
  sessionSeconds,
  thumbValue,
  type Builders,
  type FeedbackTarget,
  type InteractionInput,
} from "./events.js";
import { UuidV7 } from "./ids.js";
import { defaultBeacon, defaultLifecycle, watchPage, type PageLifecycle } from "./lifecycle.js";
import { defaultStorage, type StorageLike } from "./storage.js";
import { eventsUrl, type FetchLike } from "./transport.js";
import type { Feedback, Interaction } from "./types.js";
import * as v from "./validate.js";

export type { ClientStats, FlushResult } from "./delivery.js";

export interface FeedbackClientOptions {
  /** The collector's base URL (events go to `{endpoint}/v1/events`); may be relative in a page. */
  endpoint: string;
  /** Sent as `Authorization: Bearer <token>`, and as `?token=` on beacons. */
  token?: string;
  /** Pseudonymous user id used when a call gives none. */
  userId?: string;
  /** Client session id used when a call gives none; defaults to a new UUIDv7 per client. */
  sessionId?: string;
  /** String tags added to every event (a call's own metadata wins). */
  metadata?: Record<string, string>;
  /** Events per request; a full batch is sent at once. Default 50. */
  batchSize?: number;
  /** A partial batch waits at most this long. Default 2000. */
  flushIntervalMs?: number;
  /** Most events kept unsent; when full the oldest is dropped and counted. Default 1000. */
  maxQueue?: number;
  /** Failed attempts after the first before an event is dropped (429s do not count). Default 10. */
  maxRetries?: number;
  /** Exponential backoff with jitter between failed attempts. Default { baseMs: 500, maxMs: 30000 }. */
  backoff?: { baseMs?: number; maxMs?: number };
  /** Abort a request with no answer after this long. Default 10000. */
  timeoutMs?: number;
  /** Where unsent events wait: localStorage in a page, memory elsewhere. */
  storage?: StorageLike;
  /** Namespace of the storage keys. Default: the endpoint. */
  storageKey?: string;
  /** Another client's unsent events are adopted when its heartbeat is this old (a crashed tab). Default 600000. */
  orphanAfterMs?: number;
  /** Default globalThis.fetch. */
  fetch?: FetchLike;
  /** Default navigator.sendBeacon; null disables beacons. */
  sendBeacon?: ((url: string, body: string) => boolean) | null;
  /** Where to watch pagehide/visibilitychange: default the page's window and document; null disables. */
  lifecycle?: PageLifecycle | null;
  /** Called with every delivery or storage problem. Default: console.warn, once per kind of error. */
  onError?: (error: PrefloopError) => void;
}

type Target = FeedbackTarget;

export class FeedbackClient {
  private readonly ids = new UuidV7();
  private readonly builders: Builders;
  private readonly delivery: Delivery;
  private readonly unwatch: () => void;
  private closed = false;

  constructor(options: FeedbackClientOptions) {
    if (typeof options !== "object" || options === null) {
      throw new PrefloopValidationError("options", options, "must be an object", 'pass { endpoint: "https://collector.example" }');
    }
    const endpoint = v.requireId(options.endpoint, "endpoint", undefined, "pass the collector's base URL");
    try {
      eventsUrl(endpoint);
    } catch {
      throw new PrefloopValidationError(
        "endpoint",
        endpoint,
        "is not a URL",
        'pass e.g. "https://collector.example" (a relative URL works only inside a page)',
      );
    }
    const batchSize = positiveInt(options.batchSize, "batchSize", 50);
    const maxQueue = positiveInt(options.maxQueue, "maxQueue", 1000);
    if (maxQueue < batchSize) {
      throw new PrefloopValidationError("maxQueue", maxQueue, `is smaller than batchSize (${batchSize})`, "raise maxQueue or lower batchSize");
    }
    const fetchImpl = options.fetch ?? (globalThis as { fetch?: FetchLike }).fetch?.bind(globalThis);
    if (typeof fetchImpl !== "function") {
      throw new PrefloopValidationError(
        "fetch",
        options.fetch,
        "no fetch implementation is available",
        "pass options.fetch, or run on Node >= 18 or in a browser",
      );
    }
    this.builders = {
      newId: () => this.ids.next(),
      now: Date.now,
      defaults: {
        userId: options.userId === undefined ? undefined : v.requireId(options.userId, "userId", "user_id"),
        sessionId:
          options.sessionId === undefined ? this.ids.next() : v.requireId(options.sessionId, "sessionId", "session_id"),
        metadata: v.metadata(options.metadata),
      },
    };
    this.delivery = new Delivery({
      endpoint,
      token: options.token === undefined ? undefined : v.requireId(options.token, "token"),
      batchSize,
      flushIntervalMs: positiveInt(options.flushIntervalMs, "flushIntervalMs", 2000, 0),
      maxQueue,
      maxRetries: positiveInt(options.maxRetries, "maxRetries", 10, 0),
      backoffBaseMs: positiveInt(options.backoff?.baseMs, "backoff.baseMs", 500),
      backoffMaxMs: positiveInt(options.backoff?.maxMs, "backoff.maxMs", 30_000),
      timeoutMs: positiveInt(options.timeoutMs, "timeoutMs", 10_000),
      orphanAfterMs: positiveInt(options.orphanAfterMs, "orphanAfterMs", 600_000, 0),
      fetch: fetchImpl,
      beacon: options.sendBeacon === undefined ? defaultBeacon() : options.sendBeacon,
      storage: options.storage ?? defaultStorage(),
      storagePrefix: `prefloop:v1:${options.storageKey ?? endpoint}:`,
      owner: this.ids.next(),
      report: errorReporter(options.onError),
    });
    const page = options.lifecycle === undefined ? defaultLifecycle() : options.lifecycle;
    this.unwatch = page
      ? watchPage(page, {
          leaving: (final) => this.delivery.leave(final),
          restored: () => this.delivery.restored(),
          online: () => this.delivery.online(),
        })
      : () => {};
  }

  /** Counters since the client started (a snapshot). */
  get stats(): ClientStats {
    return this.delivery.stats;
  }

  /** The session id put on events that give none. */
  get sessionId(): string {
    return this.builders.defaults.sessionId!;
  }

  /** Sets (or, with undefined, clears) the user id used when a call gives none. */
  setUser(userId: string | undefined): void {
    this.builders.defaults.userId = userId === undefined ? undefined : v.requireId(userId, "userId", "user_id");
  }

  /** Replaces the token (e.g. after it expired) and resumes sending if a 401 paused it. */
  setToken(token: string | undefined): void {
    this.delivery.setToken(token === undefined ? undefined : v.requireId(token, "token"));
  }

  /** Records one generated response with its prompt; returns the Interaction record, whose
   * ids the feedback methods accept as `{ interaction }`. */
  interaction(input: InteractionInput): Interaction {
    this.assertOpen("interaction");
    const record = buildInteraction(input, this.builders);
    this.delivery.enqueue("interaction", record);
    return record;
  }

  /** The user asked for another response instead of this one. */
  regenerate(target: Target): Feedback {
    return this.signal("regenerate", "REGENERATE", target, null, null);
  }

  /** The user copied the response. */
  copy(target: Target): Feedback {
    return this.signal("copy", "COPY", target, null, null);
  }

  /** An explicit rating from 1 (worst) to 5 (best). */
  rate(target: Target & { rating: number }): Feedback {
    return this.signal("rate", "RATING", target, ratingValue(target?.rating), null);
  }

  /** A thumb: 1 or "up", -1 or "down". */
  thumbs(target: Target & { value: 1 | -1 | "up" | "down" }): Feedback {
    return this.signal("thumbs", "THUMBS", target, thumbValue(target?.value), null);
  }

  /** The user went on with the conversation after the response. */
  continue_(target: Target): Feedback {
    return this.signal("continue_", "CONTINUE", target, null, null);
  }

  /** Alias of `continue_`. */
  continueConversation(target: Target): Feedback {
    return this.continue_(target);
  }

  /** The user edited the response; `text` is the edited version. */
  edit(target: Target & { text: string }): Feedback {
    return this.signal("edit", "EDIT", target, null, v.requireString(target?.text, "text"));
  }

  /** The session ended, `seconds` after it started. */
  sessionEnd(target: Target & { seconds: number }): Feedback {
    return this.signal("sessionEnd", "SESSION_END", target, sessionSeconds(target?.seconds), null);
  }

  /** The user reported the response; `reason` is optional. */
  report(target: Target & { reason?: string | null }): Feedback {
    return this.signal("report", "REPORT", target, null, v.optionalString(target?.reason, "reason", "text"));
  }

  /** A free-text comment about the response. */
  comment(target: Target & { text: string }): Feedback {
    return this.signal("comment", "COMMENT", target, null, v.requireId(target?.text, "text", "text", "pass the comment text"));
  }

  /** Any feedback kind by name (e.g. "RATING" or "rating"), with its value or text. */
  feedback(target: Target & { kind: string; value?: number | "up" | "down" | null; text?: string | null }): Feedback {
    const kind = feedbackKind(target?.kind);
    const value = target.value ?? null;
    switch (kind) {
      case "RATING":
        return this.signal("feedback", kind, target, ratingValue(value), null);
      case "THUMBS":
        return this.signal("feedback", kind, target, thumbValue(value), null);
      case "SESSION_END":
        return this.signal("feedback", kind, target, sessionSeconds(value), null);
      case "EDIT":
        return this.signal("feedback", kind, target, null, v.requireString(target.text, "text"));
      case "COMMENT":
        return this.signal("feedback", kind, target, null, v.requireId(target.text, "text", "text", "pass the comment text"));
      case "REPORT":
        return this.signal("feedback", kind, target, null, v.optionalString(target.text, "text"));
      default:
        if (value !== null || (target.text ?? null) !== null) {
          throw new PrefloopValidationError("value", value ?? target.text, `is not used by ${kind}`, "leave value and text out");
        }
        return this.signal("feedback", kind, target, null, null);
    }
  }

  /**
   * Sends everything queued now, one attempt per batch, and resolves when done; a failed
   * attempt leaves the events queued for the usual retry. Never rejects. A server's
   * Retry-After is still honoured (nothing is sent until it has passed).
   */
  flush(): Promise<FlushResult> {
    return this.delivery.flush();
  }

  /**
   * Flushes, then stops: no more timers or page listeners, and whatever is still unsent
   * stays in storage for the next client to send. Calls made afterwards throw.
   */
  async close(): Promise<FlushResult> {
    if (this.closed) return { delivered: 0, rejected: 0, pending: this.delivery.stats.pending };
    this.closed = true;
    this.unwatch();
    return this.delivery.close();
  }

  private signal(method: string, kind: string, target: Target, value: number | null, text: string | null): Feedback {
    this.assertOpen(method);
    const record = buildFeedback(kind, target, { value, text }, this.builders);
    this.delivery.enqueue("feedback", record);
    return record;
  }

  private assertOpen(method: string): void {
    if (this.closed) throw new PrefloopClosedError(method);
  }
}

function positiveInt(value: unknown, name: string, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min) {
    throw new PrefloopValidationError(name, value, `must be an integer >= ${min}`, `pass a whole number or leave ${name} out for ${fallback}`);
  }
  return value;
}

function errorReporter(onError: ((error: PrefloopError) => void) | undefined): (error: PrefloopError) => void {
  if (onError) {
    return (error) => {
      try {
        onError(error);
      } catch {
        // The host's handler failing must not break delivery.
      }
    };
  }
  const warned = new Set<string>();
  return (error) => {
    if (warned.has(error.name)) return;
    warned.add(error.name);
    console.warn(`[prefloop] ${error.message} (further ${error.name}s are not logged; pass onError to see them)`);
  };
}
