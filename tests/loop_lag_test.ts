/**
 * Unit tests of lib/outputs/loop_lag.ts: the lag is how late its timer ran.
 */
import assert from "node:assert/strict";
import { LoopLag } from "../lib/outputs/loop_lag.ts";

/** Keeps the JS thread busy for `ms`, as a storm of events would. */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) { /* spin */ }
}

async function firstMeasurement(lag: LoopLag): Promise<number> {
  while (lag.seconds === null) await new Promise((r) => setTimeout(r, 10));
  return lag.seconds;
}

Deno.test("LoopLag has no value before its first measurement", () => {
  using lag = new LoopLag(60_000);
  assert.equal(lag.seconds, null);
});

Deno.test("LoopLag reports at least the time the thread was busy past the timer's due time", async () => {
  using lag = new LoopLag(50);
  // The timer is due at 50 ms and cannot run before 300 ms: at least 0.25 s late.
  busy(300);
  assert.ok(await firstMeasurement(lag) >= 0.25, `lag ${lag.seconds}`);
});

Deno.test("LoopLag stops measuring once stopped", async () => {
  const lag = new LoopLag(20);
  await firstMeasurement(lag);
  lag.stop();
  const last = lag.seconds;
  busy(100);
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(lag.seconds, last);
});
