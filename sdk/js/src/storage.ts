/**
 * Where unsent events wait: the Web Storage subset the client needs, an in-memory
 * implementation, and the on-storage layout that lets a reloaded page (or another tab)
 * pick up what a previous page left.
 *
 * Each client owns one key, `<prefix><instanceId>`, holding its unsent events with a
 * heartbeat. On start a client adopts every other entry of its prefix that was released
 * (its page was hidden for good or closed) or whose heartbeat is older than
 * `orphanAfterMs` (a crashed tab), so two live tabs never clobber each other's queues.
 */
import type { RecordType } from "./types.js";

/** The part of the Web Storage API (localStorage) the client uses. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
  key(index: number): string | null;
  readonly length: number;
}

/** A Web Storage in memory: the default outside browsers, and handy in tests. */
export class MemoryStorage implements StorageLike {
  private readonly items = new Map<string, string>();

  get length(): number {
    return this.items.size;
  }
  key(index: number): string | null {
    return [...this.items.keys()][index] ?? null;
  }
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, String(value));
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
  clear(): void {
    this.items.clear();
  }
}

/** localStorage when the page has a usable one (not blocked, not a worker), else memory. */
export function defaultStorage(): StorageLike {
  try {
    if (typeof window !== "undefined" && typeof window.localStorage !== "undefined") {
      const ls = window.localStorage;
      const probe = "prefloop:probe";
      ls.setItem(probe, "1");
      ls.removeItem(probe);
      return ls;
    }
  } catch {
    // Access denied (sandboxed iframe, disabled storage): memory it is.
  }
  return new MemoryStorage();
}

/** One queued event as stored. `attempts` counts failed deliveries. */
export interface StoredEvent {
  type: RecordType;
  data: Record<string, unknown>;
  attempts: number;
}

interface Entry {
  v: 1;
  owner: string;
  beat: number;
  released: boolean;
  events: StoredEvent[];
}

/** The client's own storage entry, and adoption of entries that no live client owns. */
export class QueueStore {
  readonly key: string;

  constructor(
    private readonly storage: StorageLike,
    readonly prefix: string,
    readonly owner: string,
    private readonly now: () => number,
  ) {
    this.key = prefix + owner;
  }

  /** Writes the client's events (or removes its key when there are none). Throws on quota. */
  save(events: StoredEvent[], released = false): void {
    if (events.length === 0) {
      this.storage.removeItem(this.key);
      return;
    }
    const entry: Entry = { v: 1, owner: this.owner, beat: this.now(), released, events };
    this.storage.setItem(this.key, JSON.stringify(entry));
  }

  /** True while this client's key still exists (another tab has not adopted it). */
  exists(): boolean {
    return this.storage.getItem(this.key) !== null;
  }

  /**
   * Takes over the events of released or orphaned entries of this prefix, oldest entry
   * first (by their first event's ts), removing those keys. Unreadable entries are removed and counted in `corrupt`.
   */
  adopt(orphanAfterMs: number): { events: StoredEvent[]; corrupt: number } {
    const found: Entry[] = [];
    let corrupt = 0;
    const keys: string[] = [];
    for (let i = 0; i < this.storage.length; i++) {
      const key = this.storage.key(i);
      if (key !== null && key !== this.key && key.startsWith(this.prefix)) keys.push(key);
    }
    for (const key of keys) {
      const entry = parse(this.storage.getItem(key));
      if (entry === null) {
        this.storage.removeItem(key);
        corrupt++;
        continue;
      }
      if (entry.released || this.now() - entry.beat >= orphanAfterMs) {
        this.storage.removeItem(key);
        found.push(entry);
      }
    }
    found.sort((a, b) => firstTs(a) - firstTs(b));
    return { events: found.flatMap((e) => e.events), corrupt };
  }
}

/** When an entry's oldest event happened (every record has a ts), else its heartbeat. */
function firstTs(entry: Entry): number {
  const ts = entry.events[0]?.data["ts"];
  return typeof ts === "number" ? ts : entry.beat;
}

function parse(text: string | null): Entry | null {
  if (text === null) return null;
  try {
    const entry = JSON.parse(text) as Entry;
    if (entry?.v !== 1 || !Array.isArray(entry.events) || typeof entry.beat !== "number") return null;
    const valid = entry.events.every(
      (e) => e && typeof e.type === "string" && typeof e.data === "object" && e.data !== null,
    );
    if (!valid) return null;
    entry.events = entry.events.map((e) => ({ type: e.type, data: e.data, attempts: Number(e.attempts) || 0 }));
    return entry;
  } catch {
    return null;
  }
}
