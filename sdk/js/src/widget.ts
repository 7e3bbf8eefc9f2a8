/**
 * A 1-to-5 star rating with an optional comment, for any chat page. One script tag
 * mounts it into every element marked `data-prefloop-rating`, also those added later:
 *
 *     <script type="module" src="/sdk/widget.js" data-endpoint="https://collector.example"
 *             data-token="…"></script>
 *     <div data-prefloop-rating data-interaction-id="…" data-response-id="…"
 *          data-conversation-id="…" data-user-id="…"></div>
 *
 * or, in code, `mountRating(element, { client, target })`. Send emits a RATING event (and
 * a COMMENT when one was written) through the FeedbackClient and flushes it. The widget
 * lives in a shadow root, so the page's styles and its own do not meet. Once mounted it
 * never throws into the page: problems are shown in the widget.
 */
import { FeedbackClient, type FlushResult } from "./client.js";
import { PrefloopValidationError } from "./errors.js";
import type { FeedbackTarget } from "./events.js";
import type { Feedback } from "./types.js";
import * as v from "./validate.js";

/** What the widget needs of a FeedbackClient. */
export type RatingClient = Pick<FeedbackClient, "rate" | "comment" | "flush">;

/** What one Send recorded. */
export interface RatingResult {
  rating: number;
  comment: string | null;
  /** The RATING record, then the COMMENT record when there was a comment. */
  feedback: Feedback[];
  /** The flush after Send: `pending` > 0 means the events wait for a retry. */
  delivery: FlushResult;
}

export interface MountRatingOptions {
  client: RatingClient;
  /** The answer rated: its interaction, response and conversation ids (and userId when the client has none). */
  target: FeedbackTarget;
  /** Called after Send with what was recorded; an exception in it is ignored. */
  onRated?: (result: RatingResult) => void;
  /** The question above the stars. Default "Rate this answer". */
  label?: string;
}

export interface RatingWidget {
  readonly element: Element;
  /** Empties the widget; the element may be mounted again. */
  destroy(): void;
}

/** Marks the elements the script tag mounts into. */
export const RATING_SELECTOR = "[data-prefloop-rating]";
/** Longest comment the widget sends. */
export const MAX_COMMENT = 2000;

const ATTRIBUTES = {
  interactionId: "data-interaction-id",
  responseId: "data-response-id",
  conversationId: "data-conversation-id",
  userId: "data-user-id",
  sessionId: "data-session-id",
} as const;
const STATE = "data-prefloop-state"; // ready | sending | rated | error: for pages and tests

/**
 * Records a rating (and an optional comment) about `target` and flushes the client.
 * Rejects with a PrefloopValidationError naming the bad argument before anything is sent.
 */
export async function submitRating(options: {
  client: RatingClient;
  target: FeedbackTarget;
  rating: number;
  comment?: string | null;
}): Promise<RatingResult> {
  if (typeof options !== "object" || options === null) {
    throw new PrefloopValidationError("options", options, "must be an object", "pass { client, target, rating }");
  }
  const client = requireClient(options.client);
  const target = requireTarget(options.target);
  const rating = stars(options.rating);
  const comment = commentText(options.comment);
  const feedback = [client.rate({ ...target, rating })];
  if (comment !== null) feedback.push(client.comment({ ...target, text: comment }));
  const delivery = await client.flush();
  return { rating, comment, feedback, delivery };
}

/** The target named by an element's data attributes; throws naming a missing attribute. */
export function ratingTarget(
  element: { getAttribute(name: string): string | null },
  options: { userRequired?: boolean } = {},
): FeedbackTarget {
  const read = (name: string, field: string, required: boolean): string | undefined => {
    const value = element.getAttribute(name);
    if (value === null && !required) return undefined;
    return v.requireId(value ?? undefined, name, field, `add ${name}="…" to the rating element`);
  };
  const target: FeedbackTarget = {
    interactionId: read(ATTRIBUTES.interactionId, "interaction_id", true)!,
    responseId: read(ATTRIBUTES.responseId, "response_id", true)!,
    conversationId: read(ATTRIBUTES.conversationId, "conversation_id", true)!,
  };
  const userId = read(ATTRIBUTES.userId, "user_id", options.userRequired ?? true);
  if (userId !== undefined) target.userId = userId;
  const sessionId = read(ATTRIBUTES.sessionId, "session_id", false);
  if (sessionId !== undefined) target.sessionId = sessionId;
  return target;
}

/** The collector's base URL from what a page gives: its base or its `/v1/events` URL. */
export function collectorBase(endpoint: string): string {
  return endpoint.trim().replace(/\/v1\/events\/?$/, "") || "/";
}

const roots = new WeakMap<Element, ShadowRoot>(); // shadow roots this module attached
const mounted = new WeakSet<Element>();
let widgets = 0;

/** Renders the rating widget into `element` (in a shadow root of its own). */
export function mountRating(element: Element, options: MountRatingOptions): RatingWidget {
  if (typeof options !== "object" || options === null) {
    throw new PrefloopValidationError("options", options, "must be an object", "pass { client, target }");
  }
  const client = requireClient(options.client);
  const target = requireTarget(options.target);
  if (options.onRated !== undefined && typeof options.onRated !== "function") {
    throw new PrefloopValidationError("onRated", options.onRated, "must be a function", "pass (result) => { … } or leave it out");
  }
  const label = options.label === undefined ? "Rate this answer" : v.requireId(options.label, "label");
  if (mounted.has(element)) {
    throw new PrefloopValidationError("element", element, "already holds a rating widget", "call destroy() on that widget first");
  }
  const root = shadowOf(element);
  const ui = render(root, label, (widgets += 1));
  mounted.add(element);
  element.setAttribute(STATE, "ready");
  let rating = 0;
  let done = false;

  const paint = (shown: number) => ui.stars.forEach((star, i) => star.label.classList.toggle("on", i < shown));
  ui.stars.forEach(({ input, label: star }, i) => {
    input.addEventListener("change", () => {
      rating = i + 1;
      paint(rating);
      ui.send.disabled = done;
      ui.status.textContent = "";
    });
    star.addEventListener("mouseenter", () => paint(i + 1));
    star.addEventListener("mouseleave", () => paint(rating));
  });
  ui.comment.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !ui.send.disabled) ui.form.requestSubmit();
  });
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (done || rating === 0) return;
    done = true;
    ui.disable(true);
    element.setAttribute(STATE, "sending");
    ui.status.textContent = "Sending…";
    submitRating({ client, target, rating, comment: ui.comment.value }).then(
      (result) => {
        const { rejected, pending } = result.delivery;
        if (rejected > 0) {
          show(element, ui.status, "error", "Not recorded: the collector refused this feedback.");
          return;
        }
        element.setAttribute(STATE, "rated");
        ui.status.textContent = pending > 0 ? "Thanks! (it will be sent once the collector answers)" : "Thanks!";
        try {
          options.onRated?.(result);
        } catch {
          // the page's callback failing must not undo the rating
        }
      },
      (error: unknown) => {
        done = false;
        ui.disable(false);
        ui.send.disabled = rating === 0;
        show(element, ui.status, "error", `Not sent: ${messageOf(error)}`);
      },
    );
  });
  return {
    element,
    destroy() {
      root.replaceChildren();
      mounted.delete(element);
      element.removeAttribute(STATE);
    },
  };
}

/**
 * Mounts a widget into every `[data-prefloop-rating]` element under `root`, now and as
 * they are added (or get their ids later); returns a function that stops watching.
 * An element with a missing id shows what is missing instead of stars.
 */
export function watchRatings(options: {
  client: RatingClient;
  root?: ParentNode & Node;
  onRated?: (element: Element, result: RatingResult) => void;
  /** False when the client has a userId: then data-user-id may be left out. Default true. */
  userRequired?: boolean;
}): () => void {
  const client = requireClient(options?.client);
  const userRequired = options.userRequired ?? true;
  return watch(options.root ?? document, (element) => {
    const target = ratingTarget(element, { userRequired });
    const onRated = options.onRated;
    mountRating(element, { client, target, ...(onRated ? { onRated: (r: RatingResult) => onRated(element, r) } : {}) });
  });
}

function watch(root: ParentNode & Node, mount: (element: Element) => void): () => void {
  const visit = (element: Element) => {
    if (mounted.has(element) || !element.matches(RATING_SELECTOR)) return;
    try {
      mount(element);
    } catch (error) {
      try {
        const root = shadowOf(element);
        const box = root.ownerDocument.createElement("p");
        root.replaceChildren(style(root.ownerDocument), box);
        show(element, box, "error", messageOf(error));
      } catch {
        console.warn(`[prefloop] no rating widget in ${element.tagName}: ${messageOf(error)}`);
      }
    }
  };
  const scan = (node: Node) => {
    if (node.nodeType !== 1) return;
    const element = node as Element;
    visit(element);
    element.querySelectorAll(RATING_SELECTOR).forEach(visit);
  };
  root.querySelectorAll(RATING_SELECTOR).forEach(visit);
  // chat pages add messages as they arrive: mount into those too, and retry an element
  // that showed a missing id once the id is set
  const observer = new MutationObserver((records) => {
    for (const record of records) {
      if (record.type === "attributes") visit(record.target as Element);
      else record.addedNodes.forEach(scan);
    }
  });
  observer.observe(root, {
    childList: true,
    subtree: true,
    attributes: true,
    attributeFilter: ["data-prefloop-rating", ...Object.values(ATTRIBUTES)],
  });
  return () => observer.disconnect();
}

// -- checks --------------------------------------------------------------------

function requireClient(client: unknown): RatingClient {
  const c = client as Partial<RatingClient> | null | undefined;
  if (typeof c?.rate !== "function" || typeof c.comment !== "function" || typeof c.flush !== "function") {
    throw new PrefloopValidationError("client", client, "must be a FeedbackClient", 'pass new FeedbackClient({ endpoint: "https://collector.example" })');
  }
  return c as RatingClient;
}

function requireTarget(target: unknown): FeedbackTarget {
  if (typeof target !== "object" || target === null) {
    throw new PrefloopValidationError(
      "target",
      target,
      "must be an object",
      "pass { interactionId, responseId, conversationId, userId } of the answer rated",
    );
  }
  const t = target as FeedbackTarget;
  const ref = t.interaction;
  const hint = (what: string) => `pass target.${what}: the id the router answered with (or target.interaction)`;
  v.requireId(t.interactionId ?? ref?.interaction_id, "target.interactionId", "interaction_id", hint("interactionId"));
  v.requireId(t.responseId ?? ref?.response_id, "target.responseId", "response_id", hint("responseId"));
  v.requireId(t.conversationId ?? ref?.conversation_id, "target.conversationId", "conversation_id", hint("conversationId"));
  return t;
}

function stars(value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 5) {
    throw new PrefloopValidationError("rating", value, "must be a whole number of stars from 1 to 5", "pass 1, 2, 3, 4 or 5");
  }
  return value;
}

function commentText(value: unknown): string | null {
  if (value === undefined || value === null) return null;
  const text = v.requireString(value, "comment").trim();
  if (text.length > MAX_COMMENT) {
    throw new PrefloopValidationError("comment", value, `is longer than ${MAX_COMMENT} characters`, "shorten it");
  }
  return text === "" ? null : text;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// -- the DOM ---------------------------------------------------------------------

function shadowOf(element: Element): ShadowRoot {
  const ours = roots.get(element);
  if (ours) return ours;
  if (typeof (element as { attachShadow?: unknown } | null)?.attachShadow !== "function") {
    throw new PrefloopValidationError("element", element, "must be a DOM element", "pass e.g. document.querySelector(\"#rating\")");
  }
  let root: ShadowRoot;
  try {
    root = element.attachShadow({ mode: "open" });
  } catch (error) {
    throw new PrefloopValidationError(
      "element",
      element.tagName,
      `cannot hold the widget (${messageOf(error)})`,
      "mount it into an empty div or span",
    );
  }
  roots.set(element, root);
  return root;
}

function show(element: Element, box: HTMLElement, state: string, text: string): void {
  element.setAttribute(STATE, state);
  box.textContent = text;
  box.setAttribute("role", "alert");
  box.className = "error";
}

interface Ui {
  form: HTMLFormElement;
  stars: { input: HTMLInputElement; label: HTMLLabelElement }[];
  comment: HTMLTextAreaElement;
  send: HTMLButtonElement;
  status: HTMLElement;
  disable(disabled: boolean): void;
}

function render(root: ShadowRoot, question: string, n: number): Ui {
  const doc = root.ownerDocument;
  const make = <K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text = "") => {
    const node = doc.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    if (text) node.textContent = text;
    return node;
  };
  const form = make("form", { class: "rating", novalidate: "" });
  const group = make("fieldset", { class: "stars" });
  group.append(make("legend", {}, question));
  const stars = [1, 2, 3, 4, 5].map((value) => {
    const id = `prefloop-star-${n}-${value}`;
    const input = make("input", {
      type: "radio",
      id,
      name: `prefloop-rating-${n}`,
      value: String(value),
      "aria-label": `${value} star${value === 1 ? "" : "s"} out of 5`,
    });
    const label = make("label", { for: id, title: `${value} of 5`, "aria-hidden": "true" }, "★");
    group.append(input, label);
    return { input, label };
  });
  const commentId = `prefloop-comment-${n}`;
  const comment = make("textarea", { id: commentId, rows: "2", maxlength: String(MAX_COMMENT), placeholder: "What was good or bad? (optional)" });
  const send = make("button", { type: "submit" }, "Send");
  send.disabled = true;
  const status = make("p", { class: "status", role: "status", "aria-live": "polite" });
  const row = make("div", { class: "row" });
  row.append(make("label", { for: commentId, class: "visually-hidden" }, "Comment (optional)"), comment, send);
  form.append(group, row, status);
  root.replaceChildren(style(doc), form);
  return {
    form,
    stars,
    comment,
    send,
    status,
    disable(disabled) {
      for (const { input } of stars) input.disabled = disabled;
      comment.disabled = disabled;
      send.disabled = disabled;
    },
  };
}

function style(doc: Document): HTMLStyleElement {
  const node = doc.createElement("style");
  node.textContent = `
:host { display: block; margin: 6px 0 2px; font: 13px/1.4 system-ui, sans-serif; color: var(--prefloop-text, #1b1f24); }
.rating { display: grid; gap: 4px; }
fieldset { border: 0; margin: 0; padding: 0; display: flex; align-items: center; gap: 2px; }
legend { float: left; margin-right: 8px; color: var(--prefloop-muted, #5f6b7a); }
input[type=radio] { position: absolute; opacity: 0; width: 1px; height: 1px; margin: 0; }
label[for^=prefloop-star] { font-size: 20px; line-height: 1; cursor: pointer; color: #c5cbd3; padding: 0 1px; border-radius: 3px; }
label.on { color: var(--prefloop-accent, #e8a200); }
input:focus-visible + label { outline: 2px solid var(--prefloop-focus, #2f6fde); outline-offset: 1px; }
input:disabled + label { cursor: default; }
.row { display: flex; gap: 6px; align-items: flex-start; }
textarea { flex: 1; min-width: 0; font: inherit; padding: 4px 6px; border: 1px solid #dde1e6; border-radius: 4px; resize: vertical; }
button { font: inherit; padding: 4px 12px; cursor: pointer; }
button:disabled { cursor: default; }
.status { margin: 0; min-height: 1.2em; color: var(--prefloop-muted, #5f6b7a); }
.error { color: #b00020; }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;
  return node;
}

// -- the script tag ---------------------------------------------------------------

/** The `<script src=".../widget.js">` that loaded this module, if one did. */
function ownScript(doc: Document): HTMLScriptElement | null {
  for (const script of Array.from(doc.querySelectorAll<HTMLScriptElement>("script[src]"))) {
    if (script.src === import.meta.url) return script;
  }
  return null;
}

function autoMount(doc: Document, script: HTMLScriptElement): void {
  const endpoint = script.getAttribute("data-endpoint");
  if (endpoint === null) return; // loaded for mountRating() alone
  const token = script.getAttribute("data-token") || undefined;
  const userId = script.getAttribute("data-user-id") || undefined;
  let client: FeedbackClient;
  try {
    client = new FeedbackClient({ endpoint: collectorBase(endpoint), token, userId });
  } catch (error) {
    const problem = `the rating widget's script tag is misconfigured: ${messageOf(error)}`;
    console.warn(`[prefloop] ${problem}`);
    watch(doc, () => {
      throw new Error(problem);
    });
    return;
  }
  watchRatings({ client, root: doc, userRequired: userId === undefined });
}

// Node (and the SDK's tests) import this module too: only a page has a document.
if (typeof document !== "undefined") {
  const script = ownScript(document);
  if (script !== null) autoMount(document, script);
}
