/**
 * Kernel event timestamps (CLOCK_MONOTONIC ns) to RFC 3339 UTC with microseconds.
 *
 * @module
 */

/**
 * Converts monotonic timestamps to wall-clock time with an offset measured at
 * {@link calibrate}; call it again now and then so wall-clock adjustments (NTP) show.
 */
export class KernelClock {
  readonly #monotonicNowNs: () => bigint;
  readonly #wallNowNs: () => bigint;
  #offsetNs = 0n;
  #cachedSecond = -1;
  #cachedPrefix = "";

  /**
   * `monotonicNowNs` reads CLOCK_MONOTONIC, the clock of the kernel's stamps;
   * `wallNowNs` reads CLOCK_REALTIME (performance.timeOrigin + now() would not do: it is
   * the monotonic clock plus the wall time at start, blind to later clock steps).
   */
  constructor(monotonicNowNs: () => bigint, wallNowNs: () => bigint) {
    this.#monotonicNowNs = monotonicNowNs;
    this.#wallNowNs = wallNowNs;
    this.calibrate();
  }

  /** Measures the offset between the monotonic clock and the wall clock. */
  calibrate(): void {
    const before = this.#monotonicNowNs();
    const wall = this.#wallNowNs();
    const after = this.#monotonicNowNs();
    this.#offsetNs = wall - (before + after) / 2n;
  }

  /** The wall-clock time of a monotonic timestamp, e.g. "2026-11-24T01:02:03.123456Z". */
  format(monotonicNs: bigint): string {
    // One bigint division, then numbers: microseconds since 1970 stay exact in a double
    // until the year 2255, and bigint arithmetic runs in the runtime, dear when run cold.
    // The microseconds as a small integer: its decimal string is the cheap one.
    const us = Number((monotonicNs + this.#offsetNs) / 1000n);
    const second = Math.floor(us / 1_000_000);
    if (second !== this.#cachedSecond) {
      this.#cachedSecond = second;
      this.#cachedPrefix = new Date(second * 1000).toISOString().slice(0, 19);
    }
    return `${this.#cachedPrefix}.${String((us - second * 1_000_000) | 0).padStart(6, "0")}Z`;
  }

  /** The current time, formatted like {@link format}. */
  now(): string {
    return this.format(this.#monotonicNowNs());
  }
}
