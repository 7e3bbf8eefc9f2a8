/**
 * The bounded in-memory queue of unsent events, oldest first. A batch being sent stays
 * in the queue, marked in flight, until the collector answers; so a page that dies
 * mid-request still has it in storage.
 */
import type { StoredEvent } from "./storage.js";

export class EventQueue {
  private items: StoredEvent[] = [];
  private readonly inFlight = new Set<StoredEvent>();

  constructor(private readonly max: number) {}

  get length(): number {
    return this.items.length;
  }

  /** Events not in flight. */
  get waiting(): number {
    return this.items.length - this.inFlight.size;
  }

  /** Every queued event, oldest first (what is persisted). */
  all(): readonly StoredEvent[] {
    return this.items;
  }

  /**
   * Appends `event`; when the queue is full, first drops the oldest event not in flight
   * (or the oldest of all when every event is in flight) and returns what was dropped.
   */
  push(event: StoredEvent): StoredEvent | null {
    let dropped: StoredEvent | null = null;
    if (this.items.length >= this.max) {
      const index = Math.max(0, this.items.findIndex((e) => !this.inFlight.has(e)));
      dropped = this.items.splice(index, 1)[0] ?? null;
      if (dropped) this.inFlight.delete(dropped);
    }
    this.items.push(event);
    return dropped;
  }

  /** Puts `events` (adopted from storage) before everything queued, keeping the bound by
   * dropping the oldest; returns how many were dropped. */
  prepend(events: StoredEvent[]): number {
    this.items = [...events, ...this.items];
    const excess = Math.max(0, this.items.length - this.max);
    if (excess > 0) this.items.splice(0, excess);
    return excess;
  }

  /** Marks up to `n` of the oldest waiting events in flight and returns them. */
  take(n: number): StoredEvent[] {
    const batch: StoredEvent[] = [];
    for (const e of this.items) {
      if (batch.length >= n) break;
      if (!this.inFlight.has(e)) batch.push(e);
    }
    batch.forEach((e) => this.inFlight.add(e));
    return batch;
  }

  /** The oldest waiting events, without marking them (for a beacon). */
  peekWaiting(): StoredEvent[] {
    return this.items.filter((e) => !this.inFlight.has(e));
  }

  /** Removes `events` for good (delivered, rejected, given up); returns those that were
   * still queued (an event the bound dropped meanwhile is not counted twice). */
  remove(events: readonly StoredEvent[]): StoredEvent[] {
    const gone = new Set(events);
    const removed: StoredEvent[] = [];
    this.items = this.items.filter((e) => (gone.has(e) ? (removed.push(e), false) : true));
    events.forEach((e) => this.inFlight.delete(e));
    return removed;
  }

  /** Returns `events` to waiting after a failed attempt. */
  release(events: readonly StoredEvent[]): void {
    events.forEach((e) => this.inFlight.delete(e));
  }

  /** Empties the queue (the events now belong to someone else). */
  clear(): void {
    this.items = [];
    this.inFlight.clear();
  }
}
