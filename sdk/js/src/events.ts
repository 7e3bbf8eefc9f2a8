/**
 * Builds schema-shaped records (src/types.ts) from the friendlier camelCase arguments of
 * the public API, validating as it goes. Every field of the record is written, nullable
 * ones as null, so the JSON the collector receives is complete and explicit.
 */
import { PrefloopValidationError } from "./errors.js";
import type { Feedback, FeedbackKind, Interaction, Message } from "./types.js";
import { FeedbackKindSymbols } from "./types.js";
import * as v from "./validate.js";

/** Who and where, filled from the client when a call leaves them out. */
export interface EventDefaults {
  userId?: string | undefined;
  sessionId?: string | undefined;
  metadata?: Record<string, string> | undefined;
}

/** What `interaction()` needs: one generated response and its prompt. */
export interface InteractionInput {
  conversationId: string;
  /** Index of the user turn, 0 for the first; a regenerated response keeps its turn. */
  turn: number;
  modelVersion: string;
  /** The prompt as the model saw it, oldest first, ending with the user's message. */
  messages: Message[];
  response: string;
  latencyMs: number;
  promptTokens: number;
  completionTokens: number;
  /** Defaults to the client's userId. */
  userId?: string;
  /** Defaults to the client's sessionId. */
  sessionId?: string;
  /** Defaults to a new UUIDv7. */
  interactionId?: string;
  /** Defaults to a new UUIDv7. */
  responseId?: string;
  /** The response_id this one replaces, when the user asked to regenerate. */
  regenerates?: string | null;
  experimentId?: string | null;
  arm?: string | null;
  /** Model uncertainty in 0..1, when known. */
  uncertainty?: number | null;
  metadata?: Record<string, string>;
  /** Date or ms since the epoch; defaults to now. */
  ts?: number | Date;
}

/** The ids of the response that a feedback event is about. */
export type InteractionRef = Pick<Interaction, "interaction_id" | "response_id" | "conversation_id"> &
  Partial<Pick<Interaction, "user_id">>;

/**
 * Which response a signal is about: the three ids, or `interaction` (the record that
 * `interaction()` returned, or any object with its snake_case ids). Explicit ids win.
 */
export interface FeedbackTarget {
  interaction?: InteractionRef;
  interactionId?: string;
  responseId?: string;
  conversationId?: string;
  /** Defaults to the client's userId, then to interaction.user_id. */
  userId?: string;
  /** Defaults to the client's sessionId. */
  sessionId?: string | null;
  metadata?: Record<string, string>;
  /** Date or ms since the epoch; defaults to now. */
  ts?: number | Date;
}

/** Kinds a producer may send (UNKNOWN is only what old readers see for new kinds). */
export const FEEDBACK_KINDS = FeedbackKindSymbols.filter((k) => k !== "UNKNOWN") as Exclude<
  FeedbackKind,
  "UNKNOWN"
>[];

export interface Builders {
  newId: () => string;
  now: () => number;
  defaults: EventDefaults;
}

export function buildInteraction(input: InteractionInput, b: Builders): Interaction {
  if (typeof input !== "object" || input === null) {
    throw new PrefloopValidationError("input", input, "must be an object", "pass { conversationId, turn, ... }");
  }
  const uncertainty =
    input.uncertainty === undefined || input.uncertainty === null
      ? null
      : v.requireNumberIn(input.uncertainty, "uncertainty", "uncertainty", 0, 1, "pass a number in 0..1 or null");
  return {
    interaction_id: input.interactionId === undefined ? b.newId() : v.requireId(input.interactionId, "interactionId", "interaction_id"),
    response_id: input.responseId === undefined ? b.newId() : v.requireId(input.responseId, "responseId", "response_id"),
    regenerates: v.optionalString(input.regenerates, "regenerates"),
    conversation_id: v.requireId(input.conversationId, "conversationId", "conversation_id"),
    turn: v.requireInt(input.turn, "turn", "turn"),
    ts: v.timestamp(input.ts, "ts", b.now),
    user_id: requireUser(input.userId ?? b.defaults.userId),
    session_id: v.requireId(input.sessionId ?? b.defaults.sessionId, "sessionId", "session_id"),
    experiment_id: v.optionalString(input.experimentId, "experimentId", "experiment_id"),
    arm: v.optionalString(input.arm, "arm"),
    model_version: v.requireId(input.modelVersion, "modelVersion", "model_version"),
    messages: v.messages(input.messages),
    response: v.requireString(input.response, "response"),
    latency_ms: v.requireInt(input.latencyMs, "latencyMs", "latency_ms"),
    prompt_tokens: v.requireInt(input.promptTokens, "promptTokens", "prompt_tokens"),
    completion_tokens: v.requireInt(input.completionTokens, "completionTokens", "completion_tokens"),
    uncertainty,
    metadata: { ...b.defaults.metadata, ...v.metadata(input.metadata) },
  };
}

/** A Feedback record of `kind` about `target`, with its kind-specific value and text. */
export function buildFeedback(
  kind: string,
  target: FeedbackTarget,
  payload: { value: number | null; text: string | null },
  b: Builders,
): Feedback {
  if (typeof target !== "object" || target === null) {
    throw new PrefloopValidationError(
      "target",
      target,
      "must be an object",
      "pass { interactionId, responseId, conversationId } or { interaction }",
    );
  }
  const ref = target.interaction;
  const hint = (arg: string) => `pass ${arg}, or interaction: the record that interaction() returned`;
  return {
    event_id: b.newId(),
    ts: v.timestamp(target.ts, "ts", b.now),
    kind: feedbackKind(kind),
    interaction_id: v.requireId(target.interactionId ?? ref?.interaction_id, "interactionId", "interaction_id", hint("interactionId")),
    response_id: v.requireId(target.responseId ?? ref?.response_id, "responseId", "response_id", hint("responseId")),
    conversation_id: v.requireId(
      target.conversationId ?? ref?.conversation_id,
      "conversationId",
      "conversation_id",
      hint("conversationId"),
    ),
    user_id: requireUser(target.userId ?? b.defaults.userId ?? ref?.user_id),
    session_id:
      target.sessionId === undefined
        ? (b.defaults.sessionId ?? null)
        : v.optionalString(target.sessionId, "sessionId", "session_id"),
    value: payload.value,
    text: payload.text,
    metadata: { ...b.defaults.metadata, ...v.metadata(target.metadata) },
  };
}

/** A FeedbackKind symbol; lower case is accepted. */
export function feedbackKind(kind: unknown): Exclude<FeedbackKind, "UNKNOWN"> {
  const symbol = typeof kind === "string" ? kind.toUpperCase() : kind;
  if (!FEEDBACK_KINDS.includes(symbol as never)) {
    throw new PrefloopValidationError("kind", kind, "is not a known feedback kind", `use one of ${FEEDBACK_KINDS.join(", ")}`);
  }
  return symbol as Exclude<FeedbackKind, "UNKNOWN">;
}

/** A thumb as +1 or -1: accepts 1, -1, "up", "down". */
export function thumbValue(value: unknown): number {
  if (value === 1 || value === "up") return 1;
  if (value === -1 || value === "down") return -1;
  throw new PrefloopValidationError("value", value, "is not a thumb", "pass 1 or \"up\", -1 or \"down\"");
}

export function ratingValue(value: unknown): number {
  return v.requireNumberIn(value, "rating", "value", 1, 5, "pass a rating from 1 (worst) to 5 (best)");
}

export function sessionSeconds(value: unknown): number {
  return v.requireNumberIn(value, "seconds", "value", 0, Infinity, "pass the session length in seconds, e.g. (Date.now() - start) / 1000");
}

function requireUser(value: unknown): string {
  return v.requireId(
    value,
    "userId",
    "user_id",
    "pass userId to the call or to the FeedbackClient options (a pseudonymous id, never an e-mail)",
  );
}
