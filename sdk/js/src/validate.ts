/**
 * Argument checks for the public API. Each throws a PrefloopValidationError that names
 * the argument (and the schema field it fills) and says how to fix it.
 */
import { PrefloopValidationError } from "./errors.js";
import type { Message } from "./types.js";

const INT_MAX = 2 ** 31 - 1; // Avro int

function label(arg: string, field?: string): string {
  return field && field !== arg ? `${arg} (${field})` : arg;
}

/** A required id: a non-empty string. */
export function requireId(value: unknown, arg: string, field?: string, hint?: string): string {
  if (typeof value !== "string" || value.trim() === "") {
    throw new PrefloopValidationError(
      label(arg, field),
      value,
      "is required and must be a non-empty string",
      hint ?? `pass ${arg}`,
    );
  }
  return value;
}

/** A required string that may be empty. */
export function requireString(value: unknown, arg: string, field?: string): string {
  if (typeof value !== "string") {
    throw new PrefloopValidationError(label(arg, field), value, "must be a string", `pass ${arg} as a string`);
  }
  return value;
}

/** An optional string: undefined and null become null. */
export function optionalString(value: unknown, arg: string, field?: string): string | null {
  if (value === undefined || value === null) return null;
  return requireString(value, arg, field);
}

/** A required integer within [min, 2^31-1] (an Avro int). */
export function requireInt(value: unknown, arg: string, field: string, min = 0): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > INT_MAX) {
    throw new PrefloopValidationError(
      label(arg, field),
      value,
      `must be an integer from ${min} to ${INT_MAX}`,
      `pass a whole number, e.g. Math.round(${arg})`,
    );
  }
  return value;
}

/** A finite number within [min, max]. */
export function requireNumberIn(
  value: unknown,
  arg: string,
  field: string,
  min: number,
  max: number,
  fix: string,
): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
    const range = max === Infinity ? `at least ${min}` : `from ${min} to ${max}`;
    throw new PrefloopValidationError(label(arg, field), value, `must be a number ${range}`, fix);
  }
  return value;
}

/** A timestamp-millis: undefined means now; a Date or a non-negative integer of milliseconds. */
export function timestamp(value: unknown, arg = "ts", now: () => number = Date.now): number {
  if (value === undefined) return Math.floor(now());
  const ms = value instanceof Date ? value.getTime() : value;
  if (typeof ms !== "number" || !Number.isInteger(ms) || ms < 0) {
    throw new PrefloopValidationError(
      arg,
      value,
      "must be a Date or integer milliseconds since the Unix epoch (UTC)",
      "pass Date.now() or a Date, or leave it out for now",
    );
  }
  return ms;
}

/** Free-form string tags: a plain object whose values are all strings. */
export function metadata(value: unknown, arg = "metadata"): Record<string, string> {
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new PrefloopValidationError(arg, value, "must be an object of string values", "pass e.g. { app_version: \"2.3.1\" }");
  }
  const out: Record<string, string> = {};
  for (const [key, v] of Object.entries(value)) {
    if (typeof v !== "string") {
      throw new PrefloopValidationError(
        `${arg}.${key}`,
        v,
        "must be a string (metadata is a map of strings)",
        `convert it, e.g. String(${arg}.${key})`,
      );
    }
    out[key] = v;
  }
  return out;
}

/** Chat messages: an array of { role, content } strings. */
export function messages(value: unknown, arg = "messages"): Message[] {
  if (!Array.isArray(value)) {
    throw new PrefloopValidationError(
      arg,
      value,
      "must be an array of { role, content }",
      "pass the prompt as the model saw it, e.g. [{ role: \"user\", content: \"Hi\" }]",
    );
  }
  return value.map((m: unknown, i) => {
    const msg = (m ?? {}) as { role?: unknown; content?: unknown };
    return {
      role: requireId(msg.role, `${arg}[${i}].role`, undefined, "use system, user, assistant or tool"),
      content: requireString(msg.content, `${arg}[${i}].content`),
    };
  });
}
