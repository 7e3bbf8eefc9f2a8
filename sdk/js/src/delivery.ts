/**
 * The delivery path behind FeedbackClient: the bounded queue, its copy in storage, send
 * passes (one request in flight at a time, so events go out in order), retries with
 * backoff, and the beacon on page unload. Nothing here throws into the host: every
 * problem becomes a counter and a call to `report`.
 */
import { PrefloopDeliveryError, PrefloopError, PrefloopRejectedError, PrefloopStorageError } from "./errors.js";
import { isOnline } from "./lifecycle.js";
import { EventQueue } from "./queue.js";
import { QueueStore, type StorageLike, type StoredEvent } from "./storage.js";
import {
  backoffDelay,
  beaconBodies,
  encodeBatch,
  eventsUrl,
  KEEPALIVE_LIMIT_BYTES,
  postBatch,
  type FetchLike,
  type Outcome,
} from "./transport.js";
import type { RecordType } from "./types.js";

export interface DeliveryConfig {
  endpoint: string;
  token: string | undefined;
  batchSize: number;
  flushIntervalMs: number;
  maxQueue: number;
  maxRetries: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  timeoutMs: number;
  orphanAfterMs: number;
  fetch: FetchLike;
  beacon: ((url: string, body: string) => boolean) | null;
  storage: StorageLike;
  storagePrefix: string;
  owner: string;
  report: (error: PrefloopError) => void;
}

/** Counters since the client started. emitted = delivered + rejected + dropped + beaconed + pending. */
export interface ClientStats {
  /** Events accepted by the API calls, plus those adopted from storage at start. */
  emitted: number;
  /** Events the collector accepted. */
  delivered: number;
  /** Event re-sends scheduled after a failed attempt. */
  retried: number;
  /** Events given up: queue full, retries exhausted, or too large to send. */
  dropped: number;
  /** Events the collector rejected as invalid (never retried). */
  rejected: number;
  /** Events handed to navigator.sendBeacon when the page was hidden (delivery unconfirmed). */
  beaconed: number;
  /** Events still queued. */
  pending: number;
}

/** What one `flush()` achieved. */
export interface FlushResult {
  delivered: number;
  rejected: number;
  /** Events still queued afterwards (a failed attempt leaves them for a retry). */
  pending: number;
}

const RETRY_AFTER_CAP_MS = 3_600_000;

export class Delivery {
  private readonly queue: EventQueue;
  private readonly store: QueueStore;
  private readonly counters = { emitted: 0, delivered: 0, retried: 0, dropped: 0, rejected: 0, beaconed: 0 };
  private batchLimit: number;
  private failures = 0;
  private backoffUntil = 0;
  private retryAfterUntil = 0;
  private authPaused = false;
  private released = false;
  private stopped = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt = Infinity;
  private chain: Promise<void> = Promise.resolve();
  private runQueued: "full" | "all" | null = null;
  private persistQueued = false;

  constructor(private readonly config: DeliveryConfig) {
    this.batchLimit = config.batchSize;
    this.queue = new EventQueue(config.maxQueue);
    this.store = new QueueStore(config.storage, config.storagePrefix, config.owner, Date.now);
    this.restore();
  }

  get stats(): ClientStats {
    return { ...this.counters, pending: this.queue.length };
  }

  setToken(token: string | undefined): void {
    this.config.token = token;
    if (this.authPaused) {
      this.authPaused = false;
      this.request("all");
    }
  }

  /** Queues one record; a full batch is sent at once, a partial one within flushIntervalMs. */
  enqueue(type: RecordType, record: object): void {
    try {
      this.counters.emitted++;
      const dropped = this.queue.push({ type, data: record as Record<string, unknown>, attempts: 0 });
      if (dropped) {
        this.counters.dropped++;
        this.config.report(
          new PrefloopDeliveryError(
            `the queue is full (${this.queue.length} events): dropped the oldest; the collector is unreachable or maxQueue is too small`,
            { status: null, events: 1, willRetry: false },
          ),
        );
      }
      this.persistSoon();
      this.request("full");
    } catch (error) {
      this.config.report(wrap(error));
    }
  }

  /** One attempt for everything queued now (a 429's Retry-After is still honoured). */
  async flush(): Promise<FlushResult> {
    const before = { ...this.counters };
    this.chain = this.chain.then(() => this.loop(true, true));
    await this.chain;
    return {
      delivered: this.counters.delivered - before.delivered,
      rejected: this.counters.rejected - before.rejected,
      pending: this.queue.length,
    };
  }

  /** Flushes, then stops timers; what is left stays in storage, released for the next client. */
  async close(): Promise<FlushResult> {
    const result = await this.flush();
    this.stopped = true;
    this.clearTimer();
    this.released = true;
    this.persist();
    return result;
  }

  /** The browser is online again: retry now. */
  online(): void {
    this.backoffUntil = 0;
    this.request("all");
  }

  /**
   * The page is hidden (final = false) or going away (final = true): hand what waits to
   * navigator.sendBeacon, then persist the rest; on pagehide the entry is marked
   * released so that the next page adopts it at once. No beacon while the collector is
   * failing, rate limiting or refusing the token, or the browser is offline: a beacon's
   * answer is never seen, so such events would be lost; they wait in storage instead.
   */
  leave(final: boolean): void {
    try {
      if (final) this.released = true;
      const beacon = this.config.beacon;
      const healthy = this.failures === 0 && !this.authPaused && Date.now() >= this.retryAfterUntil && isOnline();
      if (beacon && healthy) {
        const url = eventsUrl(this.config.endpoint, this.config.token);
        for (const { body, events } of beaconBodies(this.queue.peekWaiting(), KEEPALIVE_LIMIT_BYTES).bodies) {
          let queued = false;
          try {
            queued = beacon(url, body);
          } catch {
            queued = false;
          }
          if (!queued) break; // over the browser's beacon budget: the rest stays in storage
          this.counters.beaconed += this.queue.remove(events).length;
        }
      }
    } catch (error) {
      this.config.report(wrap(error));
    }
    this.persist();
  }

  /** Back from the back/forward cache: keep our events unless another page adopted them. */
  restored(): void {
    this.released = false;
    if (this.queue.length > 0 && !this.store.exists()) {
      this.queue.clear();
      return;
    }
    this.persist();
    this.request("all");
  }

  // ---- storage --------------------------------------------------------------------

  private restore(): void {
    try {
      const { events, corrupt } = this.store.adopt(this.config.orphanAfterMs);
      if (corrupt) this.config.report(new PrefloopStorageError(`ignored ${corrupt} unreadable queue entries in storage`));
      if (events.length === 0) return;
      this.counters.emitted += events.length;
      this.counters.dropped += this.queue.prepend(events);
      this.persist();
      this.arm(0);
    } catch (error) {
      this.config.report(new PrefloopStorageError("could not read unsent events from storage", { cause: error }));
    }
  }

  private persistSoon(): void {
    if (this.persistQueued) return;
    this.persistQueued = true;
    queueMicrotask(() => {
      this.persistQueued = false;
      this.persist();
    });
  }

  private persist(): void {
    try {
      this.store.save([...this.queue.all()], this.released);
    } catch (error) {
      this.config.report(
        new PrefloopStorageError("could not save unsent events (storage full or blocked); they are kept in memory only", {
          cause: error,
        }),
      );
    }
  }

  // ---- sending --------------------------------------------------------------------

  /** Queues a send pass after the current one: "full" sends full batches only, "all" everything. */
  private request(mode: "full" | "all"): void {
    if (this.runQueued) {
      if (mode === "all") this.runQueued = "all";
      return;
    }
    this.runQueued = mode;
    this.chain = this.chain.then(() => {
      const drainAll = this.runQueued === "all";
      this.runQueued = null;
      return this.loop(drainAll, false);
    });
  }

  private async loop(drainAll: boolean, explicit: boolean): Promise<void> {
    try {
      while (!this.authPaused) {
        const now = Date.now();
        if (now < this.retryAfterUntil || (!explicit && now < this.backoffUntil)) break;
        const waiting = this.queue.waiting;
        if (waiting === 0 || (!drainAll && waiting < this.batchLimit)) break;
        if (!(await this.send(this.queue.take(this.batchLimit)))) break;
      }
    } catch (error) {
      this.config.report(wrap(error));
    }
    this.reschedule();
  }

  /** Sends one batch and settles it; true when the next batch may go at once. */
  private async send(batch: StoredEvent[]): Promise<boolean> {
    const outcome = await postBatch({
      fetch: this.config.fetch,
      url: eventsUrl(this.config.endpoint),
      token: this.config.token,
      body: encodeBatch(batch),
      timeoutMs: this.config.timeoutMs,
    });
    const ok = this.settle(batch, outcome);
    this.persist();
    return ok;
  }

  private settle(batch: StoredEvent[], outcome: Outcome): boolean {
    switch (outcome.kind) {
      case "accepted":
      case "rejected": {
        const reasons = new Map(outcome.errors.filter((e) => e.index < batch.length).map((e) => [e.index, e.reason]));
        if (outcome.kind === "rejected") batch.forEach((_, i) => reasons.has(i) || reasons.set(i, outcome.reason));
        const stillQueued = new Set(this.queue.remove(batch));
        batch.forEach((event, i) => {
          if (!stillQueued.has(event)) return; // dropped by the bound meanwhile: counted already
          const reason = reasons.get(i);
          if (reason === undefined) {
            this.counters.delivered++;
          } else {
            this.counters.rejected++;
            this.config.report(new PrefloopRejectedError(event.type, eventId(event), reason));
          }
        });
        if (outcome.kind === "accepted") {
          this.failures = 0;
          this.backoffUntil = 0;
        }
        return true;
      }
      case "auth":
        this.queue.release(batch);
        this.authPaused = true;
        this.config.report(
          new PrefloopDeliveryError(
            `the collector refused the token (HTTP ${outcome.status}${outcome.reason ? ": " + outcome.reason : ""}); ` +
              "sending is paused and events are kept until setToken() is called or the page reloads",
            { status: outcome.status, events: batch.length, willRetry: true },
          ),
        );
        return false;
      case "too-large":
        if (batch.length > 1) {
          this.queue.release(batch);
          this.batchLimit = Math.max(1, Math.floor(batch.length / 2));
          return true;
        }
        this.counters.dropped += this.queue.remove(batch).length;
        this.config.report(
          new PrefloopDeliveryError(`a ${batch[0]!.type} event is larger than the collector accepts (HTTP 413); dropped it`, {
            status: 413,
            events: 1,
            willRetry: false,
          }),
        );
        return true;
      case "retry":
        this.retryLater(batch, outcome);
        return false;
    }
  }

  private retryLater(batch: StoredEvent[], outcome: Extract<Outcome, { kind: "retry" }>): void {
    const now = Date.now();
    this.queue.release(batch);
    // Being told to slow down (429), or being offline, is no fault of the events.
    const counts = outcome.status !== 429 && !(outcome.status === null && !isOnline());
    let givenUp: StoredEvent[] = [];
    if (counts) {
      batch.forEach((e) => e.attempts++);
      givenUp = this.queue.remove(batch.filter((e) => e.attempts > this.config.maxRetries));
      this.counters.dropped += givenUp.length;
    }
    this.counters.retried += batch.length - givenUp.length;
    this.failures++;
    this.backoffUntil = now + backoffDelay(this.failures, this.config.backoffBaseMs, this.config.backoffMaxMs);
    if (outcome.retryAfterMs !== null) {
      this.retryAfterUntil = now + Math.min(outcome.retryAfterMs, RETRY_AFTER_CAP_MS);
    } else if (outcome.status === 429) {
      this.retryAfterUntil = this.backoffUntil;
    }
    const wait = Math.max(this.backoffUntil, this.retryAfterUntil) - now;
    const message = givenUp.length
      ? `${outcome.reason}; dropped ${givenUp.length} events after ${this.config.maxRetries} retries, retrying the rest in ${wait} ms`
      : `${outcome.reason}; retrying ${batch.length} events in ${wait} ms`;
    this.config.report(
      new PrefloopDeliveryError(message, {
        status: outcome.status,
        events: batch.length,
        willRetry: givenUp.length < batch.length,
        cause: outcome.cause,
      }),
    );
  }

  // ---- timer ----------------------------------------------------------------------

  private reschedule(): void {
    if (this.stopped || this.authPaused || this.queue.waiting === 0) {
      this.clearTimer();
      return;
    }
    const wait = Math.max(this.backoffUntil, this.retryAfterUntil) - Date.now();
    if (wait > 0) this.arm(wait);
    else if (this.queue.waiting >= this.batchLimit) this.arm(0);
    else this.arm(this.config.flushIntervalMs);
  }

  /** Makes sure a send pass runs within `delayMs` (an earlier timer is kept). */
  private arm(delayMs: number): void {
    const at = Date.now() + delayMs;
    if (this.timer !== undefined && this.timerAt <= at) return;
    this.clearTimer();
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      this.request("all");
    }, delayMs);
    // In Node a pending send must not keep the process alive: close() sends the rest.
    (this.timer as { unref?: () => void }).unref?.();
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }
}

function eventId(event: StoredEvent): string | null {
  const data = event.data;
  const key =
    ["event_id", "interaction_id"].find((k) => typeof data[k] === "string") ??
    Object.keys(data).find((k) => k.endsWith("_id") && typeof data[k] === "string");
  return key === undefined ? null : (data[key] as string);
}

export function wrap(error: unknown): PrefloopError {
  return error instanceof PrefloopError
    ? error
    : new PrefloopError(`unexpected error in the send path: ${String(error)}`, { cause: error });
}
