import assert from "node:assert/strict";
import fc from "fast-check";
import { KernelClock } from "../lib/kernel/kernel_clock.ts";

Deno.test("KernelClock.format() gives RFC 3339 UTC with microseconds", () => {
  let mono = 5_000_000_000n;
  const clock = new KernelClock(() => mono, () => BigInt(Date.now()) * 1_000_000n);
  const text = clock.format(mono);
  assert.match(text, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  const wall = Date.parse(text);
  assert.ok(Math.abs(wall - Date.now()) < 2000, `${text} is not now`);
  mono += 1_500_250n; // 1.50025 ms later
  const later = clock.format(mono);
  const us = (s: string) => Number(s.slice(20, 26)) + Date.parse(s.slice(0, 19) + "Z") * 1000;
  assert.equal(us(later) - us(text), 1500);
});

Deno.test("KernelClock.calibrate() follows a step of the wall clock", () => {
  let wall = 1_700_000_000_000_000_000n; // 2023-11-14T22:13:20Z
  const clock = new KernelClock(() => 1_000n, () => wall);
  assert.equal(clock.format(1_000n), "2023-11-14T22:13:20.000000Z");
  wall += 3_600_000_000_000n; // NTP steps the clock an hour ahead
  clock.calibrate();
  assert.equal(clock.format(1_000n), "2023-11-14T23:13:20.000000Z");
  assert.equal(clock.format(2_500n), "2023-11-14T23:13:20.000001Z");
});

Deno.test("KernelClock.format() matches bigint arithmetic for any stamp and offset (property)", () => {
  fc.assert(
    fc.property(
      fc.bigInt({ min: 0n, max: 10n ** 15n * 3n }), // monotonic: up to ~95 years up
      fc.bigInt({ min: 0n, max: 4_000_000_000n * 10n ** 9n }), // wall: 1970 to 2096
      (mono, wall) => {
        const clock = new KernelClock(() => 0n, () => wall);
        const us = (mono + wall) / 1000n;
        const prefix = new Date(Number(us / 1_000_000n) * 1000).toISOString().slice(0, 19);
        const expected = `${prefix}.${String(us % 1_000_000n).padStart(6, "0")}Z`;
        assert.equal(clock.format(mono), expected);
      },
    ),
    { numRuns: 5000 },
  );
});
