/**
 * Time-ordered ids: UUIDv7 (RFC 9562) with a 12-bit counter in `rand_a`, so that ids made
 * by one client sort in the order they were made, even within a millisecond or when the
 * clock steps back.
 */

/** Fills `bytes` with random values: Web Crypto where present, else Math.random (ids need
 * uniqueness, not secrecy; only Node 18 without the global `crypto` takes that path). */
export function randomBytes(bytes: Uint8Array): Uint8Array {
  const crypto = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (crypto?.getRandomValues) return crypto.getRandomValues(bytes);
  for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return bytes;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** A generator of monotonic UUIDv7 strings. */
export class UuidV7 {
  private lastMs = -1;
  private counter = 0;

  constructor(private readonly now: () => number = Date.now) {}

  next(): string {
    let ms = Math.floor(this.now());
    if (ms > this.lastMs) {
      this.lastMs = ms;
      // Start each millisecond at a random counter below 2048, leaving room to count up.
      this.counter = randomBytes(new Uint8Array(2)).reduce((a, b) => (a << 8) | b) & 0x7ff;
    } else {
      // Same millisecond, or the clock went back: keep counting on the last timestamp,
      // borrowing the next millisecond when the counter overflows.
      ms = this.lastMs;
      this.counter++;
      if (this.counter > 0xfff) {
        ms = ++this.lastMs;
        this.counter = 0;
      }
    }
    const b = randomBytes(new Uint8Array(16));
    // 48-bit big-endian timestamp. Bitwise ops are 32-bit, so split it with division.
    const high = Math.floor(ms / 0x1000000);
    const low = ms % 0x1000000;
    b[0] = (high >>> 16) & 0xff;
    b[1] = (high >>> 8) & 0xff;
    b[2] = high & 0xff;
    b[3] = (low >>> 16) & 0xff;
    b[4] = (low >>> 8) & 0xff;
    b[5] = low & 0xff;
    b[6] = 0x70 | (this.counter >>> 8); // version 7 + counter high nibble
    b[7] = this.counter & 0xff;
    b[8] = 0x80 | (b[8]! & 0x3f); // variant 10
    const h = Array.from(b, (x) => HEX[x]!);
    return (
      h.slice(0, 4).join("") + "-" + h.slice(4, 6).join("") + "-" + h.slice(6, 8).join("") + "-" +
      h.slice(8, 10).join("") + "-" + h.slice(10, 16).join("")
    );
  }
}

const shared = new UuidV7();

/** A new UUIDv7 string, time-ordered among the ids this module makes. */
export function uuidv7(): string {
  return shared.next();
}

/** The millisecond timestamp encoded in a UUIDv7. */
export function uuidv7Timestamp(id: string): number {
  return parseInt(id.replace(/-/g, "").slice(0, 12), 16);
}
