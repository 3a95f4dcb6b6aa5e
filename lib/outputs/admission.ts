/**
 * Who may wait at the TCP door, and who is pushed out when too many wait.
 *
 * - {@link addressKey}: the unit of per-address limits and throttling. One IPv4 address is
 *   one key; an IPv6 client usually has a whole /64 to pick addresses from, so IPv6 counts
 *   per /64 prefix (an IPv4-mapped IPv6 address counts as its IPv4 address).
 * - {@link WaitingRoom}: a bounded set of waiters per key. A newcomer is never turned away:
 *   when its key already has `maxPerKey` waiting, that key's oldest waiter is dropped; else
 *   when `maxTotal` are waiting, the oldest waiter of the key with the most waiters is
 *   dropped. Like OpenSSH's MaxStartups, a flood of silent connections then costs the
 *   flooder its own oldest connections, and a client that speaks at once still gets in.
 * - {@link DropLog}: drops come in floods, so they are logged summarised.
 *
 * @module
 */

import type { Timer } from "../timers.ts";

/**
 * The key a client address counts under: an IPv4 address as it is; an IPv4-mapped IPv6
 * address (`::ffff:192.0.2.7`) as its IPv4 address; any other IPv6 address as its /64
 * prefix in lower-case hex without leading zeros, e.g. `2001:db8:0:1::/64` (a zone such
 * as `%eth0` is ignored). Anything that is not an IP address is returned unchanged.
 */
export function addressKey(host: string): string {
  if (!host.includes(":")) return host;
  const groups = ipv6Groups(host.replace(/%.*$/, ""));
  if (groups === null) return host;
  const mapped = groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
  if (mapped) {
    return [groups[6] >> 8, groups[6] & 0xff, groups[7] >> 8, groups[7] & 0xff].join(".");
  }
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(":")}::/64`;
}

/** The eight 16-bit groups of an IPv6 address, or null when `text` is not one. */
function ipv6Groups(text: string): number[] | null {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const head = parseGroups(halves[0]);
  const tail = halves.length === 2 ? parseGroups(halves[1]) : [];
  if (head === null || tail === null) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  return [...head, ...Array<number>(missing).fill(0), ...tail];
}

/** Groups of one side of `::` (the last may be a dotted IPv4 address); null if invalid. */
function parseGroups(text: string): number[] | null {
  if (text === "") return [];
  const parts = text.split(":");
  const groups: number[] = [];
  for (const [i, part] of parts.entries()) {
    if (i === parts.length - 1 && part.includes(".")) {
      const v4 = part.split(".").map((b) => /^\d{1,3}$/.test(b) ? Number(b) : NaN);
      if (v4.length !== 4 || v4.some((b) => Number.isNaN(b) || b > 255)) return null;
      groups.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
    } else if (/^[0-9a-f]{1,4}$/i.test(part)) {
      groups.push(parseInt(part, 16));
    } else {
      return null;
    }
  }
  return groups;
}

/**
 * Waiters grouped by key, at most `maxTotal` in all and `maxPerKey` per key; see the
 * module documentation for who is dropped to make room.
 */
export class WaitingRoom<T> {
  /** Per key, its waiters oldest first; a key with no waiters is deleted. */
  readonly #byKey = new Map<string, { item: T; seq: number }[]>();
  #size = 0;
  #seq = 0;

  /** Creates an empty room; both bounds must be at least 1. */
  constructor(readonly maxTotal: number, readonly maxPerKey: number) {}

  /** Waiters in all. */
  get size(): number {
    return this.#size;
  }

  /** Waiters of `key`. */
  count(key: string): number {
    return this.#byKey.get(key)?.length ?? 0;
  }

  /** Adds `item` under `key`; returns the waiters dropped to make room (already removed). */
  add(key: string, item: T): T[] {
    const dropped: T[] = [];
    if (this.count(key) >= this.maxPerKey) {
      dropped.push(this.#removeOldest(key));
    } else if (this.#size >= this.maxTotal) {
      dropped.push(this.#removeOldest(this.#busiestKey()));
    }
    const list = this.#byKey.get(key) ?? [];
    list.push({ item, seq: this.#seq++ });
    this.#byKey.set(key, list);
    this.#size++;
    return dropped;
  }

  /** The oldest waiter of `key`, if any. */
  oldest(key: string): T | undefined {
    return this.#byKey.get(key)?.[0]?.item;
  }

  /** Removes `item` from `key`'s waiters; false when it was not there (e.g. dropped). */
  delete(key: string, item: T): boolean {
    const list = this.#byKey.get(key);
    const i = list?.findIndex((w) => w.item === item) ?? -1;
    if (list === undefined || i < 0) return false;
    list.splice(i, 1);
    if (list.length === 0) this.#byKey.delete(key);
    this.#size--;
    return true;
  }

  /** Every waiter, in no particular order. */
  *values(): IterableIterator<T> {
    for (const list of this.#byKey.values()) for (const w of list) yield w.item;
  }

  /** Removes and returns every waiter. */
  clear(): T[] {
    const all = [...this.values()];
    this.#byKey.clear();
    this.#size = 0;
    return all;
  }

  /** The key with the most waiters; among equals, the one whose oldest waited longest. */
  #busiestKey(): string {
    let best = "";
    let bestCount = 0;
    let bestSeq = Infinity;
    for (const [key, list] of this.#byKey) {
      if (list.length > bestCount || (list.length === bestCount && list[0].seq < bestSeq)) {
        best = key;
        bestCount = list.length;
        bestSeq = list[0].seq;
      }
    }
    return best;
  }

  #removeOldest(key: string): T {
    const list = this.#byKey.get(key);
    const first = list?.shift();
    // Callers pass a key that has waiters; anything else is a bug here.
    if (list === undefined || first === undefined) throw new Error(`No waiter under ${key}.`);
    if (list.length === 0) this.#byKey.delete(key);
    this.#size--;
    return first.item;
  }
}

/**
 * Counts dropped connections and logs them summarised: the first drop at once, then at
 * most one line per `intervalMs` with the count and the latest peer. Call {@link close}
 * to log what is left and stop the timer.
 */
export class DropLog {
  #count = 0;
  #latest = "";
  #timer: Timer | undefined = undefined;

  /** `emit` writes the log line. */
  constructor(
    readonly intervalMs: number,
    readonly emit: (count: number, latest: string) => void,
  ) {}

  /** Counts one dropped connection from `peer`. */
  note(peer: string): void {
    this.#count++;
    this.#latest = peer;
    if (this.#timer === undefined) this.#flush();
  }

  /** Logs the drops not logged yet and stops the timer. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#count > 0) this.emit(this.#count, this.#latest);
    this.#count = 0;
  }

  #flush(): void {
    if (this.#count === 0) {
      this.#timer = undefined;
      return;
    }
    this.emit(this.#count, this.#latest);
    this.#count = 0;
    this.#timer = setTimeout(() => this.#flush(), this.intervalMs);
  }
}
