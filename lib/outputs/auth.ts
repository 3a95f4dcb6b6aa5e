/**
 * TCP password checking (SPEC §5): a constant-time comparison, and the brakes on guessing.
 *
 * Why the brakes delay the check itself and not just the failure answer: an attacker who
 * opens many connections in parallel learns a failure from the absence of an immediate
 * success, so a slow "no" slows nothing down. Here every password line waits in a
 * {@link CheckQueue} until its address may be checked again, and the number of checks
 * that can fail per second is capped over all addresses:
 *
 * - {@link FailureThrottle}: per address key, the next check waits 0.25 s after a failure,
 *   doubling per further failure up to 8 s; a success or 15 minutes without failures reset
 *   it. Checks of one key run one at a time, so parallel connections gain nothing.
 * - {@link FailureBudget}: a token bucket over all addresses (10 failures a second, bursts
 *   of 30), against guessing from many addresses at once. A success gives its token back,
 *   so right passwords do not use up the budget.
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { WaitingRoom } from "./admission.ts";
import type { Timer } from "../timers.ts";

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
 * Remembers authentication failures per client address (key) and says when the next
 * password from that address may be checked: `baseMs` after the first failure, doubling
 * per further failure up to `maxMs`. A success from the address, or `forgetMs` without
 * failures, resets it.
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

  /** Records a failure from `address` and returns the delay (ms) before its next check. */
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
    return this.#delay(failures);
  }

  /** When (ms since the epoch) the next password from `address` may be checked; at or
   * before `now` when it may be checked at once. */
  readyAt(address: string, now: number = Date.now()): number {
    const e = this.#entries.get(address);
    if (e === undefined || now - e.last >= this.#forgetMs) return now;
    return e.last + this.#delay(e.failures);
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

  #delay(failures: number): number {
    // 2 ** 30 is far past any cap; the min() keeps the exponent from overflowing.
    return Math.min(this.#maxMs, this.#baseMs * 2 ** Math.min(failures - 1, 30));
  }
}

/** Tuning of {@link FailureBudget}; every field has a default. */
export interface FailureBudgetOptions {
  /** Failures allowed per second over all addresses, in the long run (default 10). */
  perSecond?: number;
  /** Failures allowed at once after a quiet period (default 30). */
  burst?: number;
}

/**
 * A token bucket capping the rate of password checks that fail, over all addresses: each
 * check takes a token first, a success gives it back. Tokens come back at `perSecond`, up
 * to `burst`. Time is passed in (ms), so tests need no clock.
 */
export class FailureBudget {
  readonly #perMs: number;
  readonly #burst: number;
  #tokens: number;
  #at: number;

  /** Creates a full bucket. */
  constructor(opts: FailureBudgetOptions = {}, now: number = Date.now()) {
    this.#perMs = (opts.perSecond ?? 10) / 1000;
    this.#burst = opts.burst ?? 30;
    this.#tokens = this.#burst;
    this.#at = now;
  }

  /** Takes a token when one is there; false otherwise (see {@link waitMs}). */
  take(now: number = Date.now()): boolean {
    this.#refill(now);
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Gives back the token of a check that succeeded. */
  refund(now: number = Date.now()): void {
    this.#refill(now);
    this.#tokens = Math.min(this.#burst, this.#tokens + 1);
  }

  /** How long (ms) until a token is there; 0 when one is there now. */
  waitMs(now: number = Date.now()): number {
    this.#refill(now);
    return this.#tokens >= 1 ? 0 : Math.ceil((1 - this.#tokens) / this.#perMs);
  }

  #refill(now: number): void {
    // A clock that steps back must not take tokens away.
    const elapsed = Math.max(0, now - this.#at);
    this.#tokens = Math.min(this.#burst, this.#tokens + elapsed * this.#perMs);
    this.#at = Math.max(this.#at, now);
  }
}

/** What became of a password line given to {@link CheckQueue.check}. */
export type CheckOutcome =
  | { kind: "success" }
  /** `nextDelayMs`: how long the next check from the same key will wait. */
  | { kind: "failure"; reason: string; nextDelayMs: number }
  /** Not checked: pushed out by newer lines while the queue was full. */
  | { kind: "dropped" }
  /** Not checked: the queue was closed. */
  | { kind: "closed" };

/** Tuning of {@link CheckQueue}; every field has a default. */
export interface CheckQueueOptions {
  /** Per-key delays (default: a {@link FailureThrottle} with its defaults). */
  throttle?: FailureThrottle;
  /** Global cap on failures (default: a {@link FailureBudget} with its defaults). */
  budget?: FailureBudget;
  /** Lines waiting for their check, in all (default 64). */
  maxWaiting?: number;
  /** Lines waiting for their check, per key (default 8). */
  maxPerKey?: number;
}

interface Job {
  readonly verify: () => string | null;
  readonly settle: (outcome: CheckOutcome) => void;
  readonly fail: (error: unknown) => void;
}

/**
 * Runs password checks under the brakes of the module documentation: per key one at a
 * time, each when {@link FailureThrottle.readyAt} says so and a {@link FailureBudget}
 * token is free. Lines waiting are bounded (a {@link WaitingRoom}): past the bounds the
 * oldest line of the busiest key is dropped, so an address flooding guesses delays only
 * its own lines, never a newcomer from elsewhere.
 */
export class CheckQueue {
  readonly #throttle: FailureThrottle;
  readonly #budget: FailureBudget;
  readonly #waiting: WaitingRoom<Job>;
  /** Keys whose drain loop is running. */
  readonly #draining = new Set<string>();
  /** Wakes every drain loop's sleep early, at close. */
  readonly #wakers = new Set<() => void>();
  #closed = false;

  /** Creates an empty queue. */
  constructor(opts: CheckQueueOptions = {}) {
    this.#throttle = opts.throttle ?? new FailureThrottle();
    this.#budget = opts.budget ?? new FailureBudget();
    this.#waiting = new WaitingRoom(opts.maxWaiting ?? 64, opts.maxPerKey ?? 8);
  }

  /** Lines waiting for their check. */
  get size(): number {
    return this.#waiting.size;
  }

  /**
   * Queues a check for `key`. `verify` runs when its turn comes and returns null for the
   * right password or why it is not (a sentence for the log). Rejects only with what
   * `verify` throws, which then counts as neither success nor failure.
   */
  check(key: string, verify: () => string | null): Promise<CheckOutcome> {
    if (this.#closed) return Promise.resolve({ kind: "closed" });
    const { promise, resolve, reject } = Promise.withResolvers<CheckOutcome>();
    const job: Job = { verify, settle: resolve, fail: reject };
    for (const old of this.#waiting.add(key, job)) old.settle({ kind: "dropped" });
    if (!this.#draining.has(key)) {
      this.#draining.add(key);
      this.#drain(key);
    }
    return promise;
  }

  /** Settles every waiting line as "closed" and stops. Idempotent. */
  close(): void {
    this.#closed = true;
    for (const wake of this.#wakers) wake();
    for (const job of this.#waiting.clear()) job.settle({ kind: "closed" });
  }

  /** Checks the lines of `key` in order, each at its time; ends when none is left. */
  async #drain(key: string): Promise<void> {
    for (;;) {
      const now = Date.now();
      const wait = Math.max(this.#throttle.readyAt(key, now) - now, this.#budget.waitMs(now));
      if (wait > 0) await this.#sleep(wait);
      const job = this.#waiting.oldest(key);
      // Deleted in the same step that finds nothing, so check() starts a new loop after.
      if (this.#closed || job === undefined) {
        this.#draining.delete(key);
        return;
      }
      // Another key may have taken the token while this one slept: wait again.
      if (wait > 0 || !this.#budget.take()) continue;
      this.#waiting.delete(key, job);
      try {
        job.settle(this.#run(key, job));
      } catch (err) {
        // A bug in verify: that connection's handler reports it; the other lines go on.
        job.fail(err);
      }
    }
  }

  #run(key: string, job: Job): CheckOutcome {
    const reason = job.verify();
    if (reason === null) {
      this.#throttle.success(key);
      this.#budget.refund();
      return { kind: "success" };
    }
    return { kind: "failure", reason, nextDelayMs: this.#throttle.failure(key) };
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      let timer: Timer | undefined = undefined;
      const wake = () => {
        clearTimeout(timer);
        this.#wakers.delete(wake);
        resolve();
      };
      timer = setTimeout(wake, ms);
      this.#wakers.add(wake);
    });
  }
}
