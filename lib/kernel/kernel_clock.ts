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
  #cachedSecond = -1n;
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
    const us = (monotonicNs + this.#offsetNs) / 1000n;
    const second = us / 1_000_000n;
    if (second !== this.#cachedSecond) {
      this.#cachedSecond = second;
      this.#cachedPrefix = new Date(Number(second) * 1000).toISOString().slice(0, 19);
    }
    return `${this.#cachedPrefix}.${String(us % 1_000_000n).padStart(6, "0")}Z`;
  }

  /** The current time, formatted like {@link format}. */
  now(): string {
    return this.format(this.#monotonicNowNs());
  }
}
