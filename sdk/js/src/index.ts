/**
 * @prefloop/sdk: send chat interactions and user feedback to the prefloop collector.
 *
 *     import { FeedbackClient } from "@prefloop/sdk";
 *     const client = new FeedbackClient({ endpoint: "https://collector.example", userId: "u_123" });
 *     const turn = client.interaction({ conversationId: "c-1", turn: 0, ... });
 *     client.thumbs({ interaction: turn, value: "up" });
 */
export { FeedbackClient } from "./client.js";
export type { ClientStats, FeedbackClientOptions, FlushResult } from "./client.js";
export { FEEDBACK_KINDS } from "./events.js";
export type { FeedbackTarget, InteractionInput, InteractionRef } from "./events.js";
export {
  PrefloopClosedError,
  PrefloopDeliveryError,
  PrefloopError,
  PrefloopRejectedError,
  PrefloopStorageError,
  PrefloopValidationError,
} from "./errors.js";
export { uuidv7, uuidv7Timestamp } from "./ids.js";
export type { DocumentLike, EventTargetLike, PageLifecycle } from "./lifecycle.js";
export { MemoryStorage } from "./storage.js";
export type { StorageLike } from "./storage.js";
export { backoffDelay, parseRetryAfter } from "./transport.js";
export type { FetchLike, WireEvent } from "./transport.js";
export * from "./types.js";
export { MAX_COMMENT, RATING_SELECTOR, mountRating, ratingTarget, submitRating, watchRatings } from "./widget.js";
export type { MountRatingOptions, RatingClient, RatingResult, RatingWidget } from "./widget.js";
