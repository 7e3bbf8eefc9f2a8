/**
 * The SDK's errors. Each message says what was wrong and what to do about it.
 *
 *     PrefloopError                root of every error the SDK raises or reports
 *     ├── PrefloopValidationError  thrown at the call: a bad argument or option
 *     ├── PrefloopClosedError      thrown at the call: the client was closed
 *     ├── PrefloopDeliveryError    reported to onError: a batch could not be delivered
 *     ├── PrefloopRejectedError    reported to onError: the collector rejected an event
 *     └── PrefloopStorageError     reported to onError: the queue could not be persisted
 *
 * Only the first two are ever thrown into the host application; delivery and storage
 * problems go to the `onError` callback and never interrupt the caller.
 */

/** Root of every error the SDK raises or reports. */
export class PrefloopError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** An argument or option is invalid; `field` names it and the message says the fix. */
export class PrefloopValidationError extends PrefloopError {
  readonly field: string;
  readonly value: unknown;

  constructor(field: string, value: unknown, problem: string, fix: string) {
    super(`${field}: ${problem} (got ${describe(value)}); ${fix}`);
    this.field = field;
    this.value = value;
  }
}

/** An event was emitted after `close()`. */
export class PrefloopClosedError extends PrefloopError {
  constructor(method: string) {
    super(`${method}() was called after close(): create a new FeedbackClient to send more events`);
  }
}

/** A batch could not be delivered. `willRetry` says whether the events stay queued. */
export class PrefloopDeliveryError extends PrefloopError {
  /** HTTP status, or null for a network error or timeout. */
  readonly status: number | null;
  readonly events: number;
  readonly willRetry: boolean;

  constructor(
    message: string,
    details: { status: number | null; events: number; willRetry: boolean; cause?: unknown },
  ) {
    super(message, { cause: details.cause });
    this.status = details.status;
    this.events = details.events;
    this.willRetry = details.willRetry;
  }
}

/** The collector rejected an event as invalid; it is not retried. */
export class PrefloopRejectedError extends PrefloopError {
  readonly eventType: string;
  /** The event's id (event_id, interaction_id, ...), when the record has one. */
  readonly eventId: string | null;
  readonly reason: string;

  constructor(eventType: string, eventId: string | null, reason: string) {
    super(
      `the collector rejected ${eventType} event ${eventId ?? "(no id)"}: ${reason}; ` +
        "it will not be retried; fix the values the SDK was given",
    );
    this.eventType = eventType;
    this.eventId = eventId;
    this.reason = reason;
  }
}

/** The queue could not be written to storage (quota, private mode); events stay in memory. */
export class PrefloopStorageError extends PrefloopError {}

function describe(value: unknown): string {
  if (value === undefined) return "undefined";
  if (typeof value === "string") return JSON.stringify(value.length > 40 ? value.slice(0, 40) + "…" : value);
  if (typeof value === "number" || typeof value === "boolean" || value === null) return String(value);
  if (Array.isArray(value)) return `an array of ${value.length}`;
  return `a ${typeof value}`;
}
