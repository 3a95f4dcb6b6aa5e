/**
 * TCP password checking (SPEC §5): a constant-time comparison, and a per-address throttle
 * that slows down repeated failures.
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";

/**
 * Whether `candidate` (the bytes of the line the client sent, without `\n` and without a
 * trailing `\r`) equals `password`.
 *
 * Both sides are hashed with SHA-256 first so the comparison always runs over 32 bytes:
 * `timingSafeEqual` alone needs equal lengths, and an early length check would tell an
 * attacker the password's length through timing.
 */
export function passwordMatches(candidate: Uint8Array, password: string): boolean {
  const a = createHash("sha256").update(candidate).digest();
  const b = createHash("sha256").update(password, "utf8").digest();
  return timingSafeEqual(a, b);
}

/** Tuning of {@link FailureThrottle}; every field has a default. */
export interface FailureThrottleOptions {
  /** Delay after the first failure, in ms (default 250). */
  baseMs?: number;
  /** The delay doubles per further failure up to this cap, in ms (default 8000). */
  maxMs?: number;
  /** An address whose last failure is older than this starts again from `baseMs`
   * (default 15 minutes). */
  forgetMs?: number;
  /** Addresses remembered at most; the least recently failed are forgotten first
   * (default 10000), so a scan from many addresses cannot grow memory without bound. */
  maxEntries?: number;
}

interface Entry {
  failures: number;
  last: number;
}

/**
 * Remembers authentication failures per client address and says how long to wait before
 * answering the next failure: `baseMs` for the first, doubling per further failure up to
 * `maxMs`. A success from the address, or `forgetMs` without failures, resets it.
 *
 * The wait is applied to the failing connection only (it holds one of the limited slots for
 * connections waiting for authentication), so the rest of the server keeps serving.
 */
export class FailureThrottle {
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #forgetMs: number;
  readonly #maxEntries: number;
  // Map iteration order is insertion order: entries are re-inserted on each failure, so
  // the first key is always the least recently failed one.
  readonly #entries = new Map<string, Entry>();

  /** Creates an empty throttle. */
  constructor(opts: FailureThrottleOptions = {}) {
    this.#baseMs = opts.baseMs ?? 250;
    this.#maxMs = opts.maxMs ?? 8000;
    this.#forgetMs = opts.forgetMs ?? 15 * 60_000;
    this.#maxEntries = opts.maxEntries ?? 10_000;
  }

  /** Records a failure from `address` and returns the delay (ms) to wait before replying. */
  failure(address: string, now: number = Date.now()): number {
    const old = this.#entries.get(address);
    const failures = old !== undefined && now - old.last < this.#forgetMs ? old.failures + 1 : 1;
    this.#entries.delete(address);
    this.#entries.set(address, { failures, last: now });
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#entries.delete(oldest);
    }
    // 2 ** 30 is far past any cap; the min() keeps the exponent from overflowing.
    return Math.min(this.#maxMs, this.#baseMs * 2 ** Math.min(failures - 1, 30));
  }

  /** Forgets the failures of `address` after it authenticated. */
  success(address: string): void {
    this.#entries.delete(address);
  }

  /** Failures currently remembered for `address` (0 when none or forgotten). */
  failures(address: string, now: number = Date.now()): number {
    const e = this.#entries.get(address);
    return e !== undefined && now - e.last < this.#forgetMs ? e.failures : 0;
  }
}
