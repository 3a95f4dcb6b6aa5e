/**
 * Live tests of the reader's gathering steps (native/procconn.c, PC_SLOW_HOLD_NS): a sparse
 * but sustained stream, a slow VM's fork storm, is gathered in 4 ms steps instead of 1 ms,
 * one after another on the clock, so a wakeup carries several processes; a process now and
 * then keeps the short step and its latency.
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

/** The reader thread's voluntary context switches (its wakeups) so far. */
async function readerWakeups(): Promise<number> {
  let total = 0;
  let readers = 0;
  for await (const task of Deno.readDir("/proc/self/task")) {
    const dir = `/proc/self/task/${task.name}`;
    try {
      if ((await Deno.readTextFile(`${dir}/comm`)).trim() !== "pm-reader") continue;
      const status = await Deno.readTextFile(`${dir}/status`);
      total += Number(/^voluntary_ctxt_switches:\s+(\d+)$/m.exec(status)![1]);
      readers++;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error; // a thread that ended
    }
  }
  assert.equal(readers, 1, "one reader thread");
  return total;
}

interface Steps {
  stats: ConnectorStats;
  /** The reader's wakeups while the load ran. */
  wakeups: number;
  /** Its wakeups in the 500 ms after the load. */
  wakeupsAfter: number;
}

/** Takes every batch while `load` runs and 500 ms after; the reader's counters. */
async function stepsDuring(load: () => Promise<void>): Promise<Steps> {
  await using connector = await ProcConnector.open({ realtime: false });
  // As the daemon runs where it can: exec snapshots from the kernel, no exec wakeups.
  await connector.execBpf().catch((error) => {
    if (!(error instanceof NativeError)) throw error;
  });
  const buffer = new Uint8Array(RecordLayout.maxSize * 64);
  const before = await readerWakeups();
  let done = false;
  const loaded = load().finally(() => done = true);
  while (!done) await connector.nextBatch(buffer, 50, () => true);
  await loaded;
  const stats = connector.stats();
  const end = await readerWakeups();
  const settled = Date.now() + 500;
  while (Date.now() < settled) await connector.nextBatch(buffer, 50, () => true);
  return { stats, wakeups: end - before, wakeupsAfter: await readerWakeups() - end };
}

liveTest("a sustained sparse stream of processes is gathered in the longer step", async () => {
  // A process every 1.5 ms (or as fast as fork goes on a slow machine): 2 events in a 1 ms
  // step, and the next fork soon after its bell.
  await using storm = await buildStorm(); // before: the compiler's processes are a stream too
  const { stats } = await stepsDuring(() => paced(storm.path, 1000, 1500));
  assert.ok(stats.steps > 50, `${stats.steps} steps`);
  assert.ok(
    stats.slowSteps >= stats.steps / 2,
    `${stats.slowSteps} of ${stats.steps} steps were the sparse stream's longer ones`,
  );
});

liveTest("a sparse stream's steps follow each other on the clock, and stop with it", async () => {
  await using storm = await buildStorm();
  const { stats, wakeups, wakeupsAfter } = await stepsDuring(() => paced(storm.path, 1000, 1500));
  // A step begun by its first event costs the reader two wakeups (that event, its end); a
  // step begun at the last one's bell costs one.
  assert.ok(stats.slowSteps > 50, `${stats.slowSteps} sparse steps`);
  assert.ok(
    wakeups <= stats.steps * 1.4,
    `the reader woke ${wakeups} times for ${stats.steps} steps (${stats.slowSteps} sparse)`,
  );
  // The clock stops at the first step that gathers nothing: a 4 ms clock left running would
  // wake it about 125 times here.
  assert.ok(wakeupsAfter <= 10, `the reader woke ${wakeupsAfter} times in 500 ms after`);
});

liveTest("processes 20 ms apart keep the 1 ms step", async () => {
  await using storm = await buildStorm();
  const { stats } = await stepsDuring(() => paced(storm.path, 50, 20_000));
  assert.ok(stats.steps >= 50, `${stats.steps} steps for 50 processes`);
  assert.equal(stats.slowSteps, 0, `${stats.slowSteps} of ${stats.steps} steps were long`);
});
