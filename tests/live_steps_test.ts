/**
 * Live tests of the reader's gathering steps (native/procconn.c, PC_SLOW_HOLD_NS): a sparse
 * but sustained stream, a slow VM's fork storm, is gathered in 3 ms steps instead of 1 ms,
 * so a wakeup carries two or three processes; a process now and then keeps the short step
 * and its latency.
 */
import assert from "node:assert/strict";
import { type ConnectorStats, NativeError, ProcConnector } from "../lib/kernel/ffi.ts";
import { RecordLayout } from "../lib/kernel/record.ts";
import { liveTest } from "./support/live.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** scripts/storm.c built into a temporary directory, removed on disposal. */
async function buildStorm(): Promise<AsyncDisposable & { path: string }> {
  const dir = await Deno.makeTempDir({ prefix: "pm-steps-" });
  const path = `${dir}/storm`;
  const cc = await new Deno.Command("gcc", {
    args: ["-O2", "-o", path, `${ROOT}scripts/storm.c`],
    stderr: "piped",
  }).output();
  assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
  return { path, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** `storm paced N INTERVAL_US`: N fork + _exit, one at a time, that far apart. */
async function paced(storm: string, n: number, intervalUs: number): Promise<void> {
  const out = await new Deno.Command(storm, {
    args: ["paced", String(n), String(intervalUs)],
    stdout: "null",
  }).output();
  assert.ok(out.success, `storm paced ${n} ${intervalUs} failed`);
}

/** Takes every batch while `load` runs, then the reader's counters. */
async function stepsDuring(load: () => Promise<void>): Promise<ConnectorStats> {
  await using connector = await ProcConnector.open({ realtime: false });
  // As the daemon runs where it can: exec snapshots from the kernel, no exec wakeups.
  await connector.execBpf().catch((error) => {
    if (!(error instanceof NativeError)) throw error;
  });
  const buffer = new Uint8Array(RecordLayout.maxSize * 64);
  let done = false;
  const loaded = load().finally(() => done = true);
  while (!done) await connector.nextBatch(buffer, 50, () => true);
  await loaded;
  return connector.stats();
}

liveTest("a sustained sparse stream of processes is gathered in the longer step", async () => {
  // A process every 1.5 ms (or as fast as fork goes on a slow machine): 2 events in a 1 ms
  // step, and the next fork soon after its bell.
  await using storm = await buildStorm(); // before: the compiler's processes are a stream too
  const stats = await stepsDuring(() => paced(storm.path, 1000, 1500));
  assert.ok(stats.steps > 50, `${stats.steps} steps`);
  assert.ok(
    stats.slowSteps >= stats.steps / 2,
    `${stats.slowSteps} of ${stats.steps} steps were the sparse stream's longer ones`,
  );
});

liveTest("processes 20 ms apart keep the 1 ms step", async () => {
  await using storm = await buildStorm();
  const stats = await stepsDuring(() => paced(storm.path, 50, 20_000));
  assert.ok(stats.steps >= 50, `${stats.steps} steps for 50 processes`);
  assert.equal(stats.slowSteps, 0, `${stats.slowSteps} of ${stats.steps} steps were long`);
});
