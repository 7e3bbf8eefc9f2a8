/**
 * Page lifecycle hooks: a page that is being hidden or unloaded gets one last chance to
 * send its queue (with navigator.sendBeacon), and a page restored from the back/forward
 * cache or coming back online gets to resume.
 */

export interface EventTargetLike {
  addEventListener(type: string, listener: (event: Event) => void): void;
  removeEventListener(type: string, listener: (event: Event) => void): void;
}

export interface DocumentLike extends EventTargetLike {
  readonly visibilityState: string;
}

/** Where the client listens: the page's window and document, or test doubles. */
export interface PageLifecycle {
  window?: EventTargetLike | undefined;
  document?: DocumentLike | undefined;
}

export interface LifecycleHandlers {
  /** The page may never run again: send what can be sent, persist the rest. `final` is
   * true for pagehide (the page is going away) and false for a hidden tab. */
  leaving(final: boolean): void;
  /** The page is back from the back/forward cache. */
  restored(): void;
  /** The browser is online again. */
  online(): void;
}

/** The page's own window and document, when running in one. */
export function defaultLifecycle(): PageLifecycle | null {
  if (typeof window === "undefined" || typeof document === "undefined") return null;
  return { window, document };
}

/** Installs the listeners and returns a function that removes them. */
export function watchPage(page: PageLifecycle, on: LifecycleHandlers): () => void {
  const { window: win, document: doc } = page;
  const onPageHide = () => on.leaving(true);
  const onVisibility = () => {
    if (doc?.visibilityState === "hidden") on.leaving(false);
  };
  const onPageShow = (event: Event) => {
    if ((event as { persisted?: boolean }).persisted) on.restored();
  };
  const onOnline = () => on.online();
  win?.addEventListener("pagehide", onPageHide);
  win?.addEventListener("pageshow", onPageShow);
  win?.addEventListener("online", onOnline);
  doc?.addEventListener("visibilitychange", onVisibility);
  return () => {
    win?.removeEventListener("pagehide", onPageHide);
    win?.removeEventListener("pageshow", onPageShow);
    win?.removeEventListener("online", onOnline);
    doc?.removeEventListener("visibilitychange", onVisibility);
  };
}

/** navigator.sendBeacon, bound, when the runtime has it. */
export function defaultBeacon(): ((url: string, body: string) => boolean) | null {
  const nav = (globalThis as { navigator?: { sendBeacon?: (url: string, data: string) => boolean } }).navigator;
  if (typeof nav?.sendBeacon !== "function") return null;
  return (url, body) => nav.sendBeacon!(url, body);
}

/** False only when the browser says it is offline. */
export function isOnline(): boolean {
  const nav = (globalThis as { navigator?: { onLine?: boolean } }).navigator;
  return nav?.onLine !== false;
}
