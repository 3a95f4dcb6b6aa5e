/**
 * Event-loop lag: how late a once-a-second timer runs, which is how long the JavaScript
 * thread was busy with something else (a storm of events, a slow client's writes). It runs
 * only while `/metrics` is served, so without `--metrics` nothing wakes the daemon.
 *
 * @module
 */

import type { Timer } from "../timers.ts";

/** How often the lag is measured. */
export const LOOP_LAG_INTERVAL_MS = 1000;

/** Measures the event loop's lag with one timer; {@link stop} it when done. */
export class LoopLag implements Disposable {
  readonly #intervalMs: number;
  #timer: Timer | undefined;
  #seconds: number | null = null;

  /** Starts measuring: the first value is there after `intervalMs`. */
  constructor(intervalMs: number = LOOP_LAG_INTERVAL_MS) {
    this.#intervalMs = intervalMs;
    this.#schedule();
  }

  /** The last measured lag in seconds; null before the first measurement. */
  get seconds(): number | null {
    return this.#seconds;
  }

  #schedule(): void {
    const due = performance.now() + this.#intervalMs;
    this.#timer = setTimeout(() => {
      // To the microsecond: finer digits would be timer noise.
      this.#seconds = Math.round(Math.max(0, performance.now() - due) * 1000) / 1e6;
      this.#schedule();
    }, this.#intervalMs);
    // Measuring must never be what keeps the process alive.
    Deno.unrefTimer(this.#timer);
  }

  /** Stops the timer. Idempotent. */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Same as {@link stop}. */
  [Symbol.dispose](): void {
    this.stop();
  }
}
