/**
 * Live tests of the blocking wait (ProcConnector.nextBatch with mayBlock): batches taken
 * without a turn of Deno's event loop, which still gets its turns for timers and I/O.
 */
import assert from "node:assert/strict";
import { ProcConnector } from "../lib/kernel/ffi.ts";
import { decodeBatch, RecordLayout } from "../lib/kernel/record.ts";
import { liveTest } from "./support/live.ts";

const EXEC = 0x2;

/** A shell that runs `/bin/true` every couple of milliseconds: a steady trickle of execs. */
function trickle(seconds: number): Deno.ChildProcess {
  const script = `end=$(($(date +%s) + ${seconds})); ` +
    `while [ $(date +%s) -lt $end ]; do /bin/true; sleep 0.002; done`;
  return new Deno.Command("/bin/sh", { args: ["-c", script], stdout: "null", stderr: "null" })
    .spawn();
}

/** Takes batches with blocking waits allowed until `done()` says so. */
async function drain(connector: ProcConnector, done: () => boolean): Promise<number> {
  const buffer = new Uint8Array(RecordLayout.maxSize * 64);
  let batches = 0;
  while (!done()) {
    if (await connector.nextBatch(buffer, 200, () => true) > 0) batches++;
  }
  return batches;
}

liveTest("nextBatch() blocks for batches in a trickle, and timers still run", async () => {
  await using connector = await ProcConnector.open({ eventMask: EXEC, realtime: false });
  const child = trickle(2);
  let ticks = 0;
  const interval = setInterval(() => ticks++, 10);
  const started = performance.now();
  try {
    const batches = await drain(connector, () => performance.now() - started > 1000);
    // Most batches came in a blocking wait: without it each one goes round the loop.
    assert.ok(
      connector.blockedBatches > batches / 2,
      `${connector.blockedBatches} of ${batches} batches came in a blocking wait`,
    );
    // The loop still got a turn at least every 50 ms (about 20 in the second); blocking
    // for as long as batches keep coming would give the interval none.
    assert.ok(ticks >= 5, `a 10 ms interval ran ${ticks} times in 1 s`);
  } finally {
    clearInterval(interval);
    child.kill();
    await child.status;
  }
});

liveTest(
  "takeBatch() takes a trickle's batches without a promise, and leaves the loop its turns",
  async () => {
    await using connector = await ProcConnector.open({ eventMask: EXEC, realtime: false });
    const buffer = new Uint8Array(RecordLayout.maxSize * 64);
    // Nothing waits and no blocking wait is allowed: the caller must go to the loop.
    while (connector.takeBatch(buffer, () => false) > 0);
    assert.equal(connector.takeBatch(buffer, () => false), 0);
    const child = trickle(2);
    let ticks = 0;
    const interval = setInterval(() => ticks++, 10);
    const started = performance.now();
    let taken = 0;
    let awaited = 0;
    try {
      while (performance.now() - started < 1000) {
        if (connector.takeBatch(buffer, () => true) > 0) taken++;
        else if (await connector.nextBatch(buffer, 200, () => true) > 0) awaited++;
      }
      assert.ok(taken > awaited, `${taken} batches taken at once, ${awaited} awaited`);
      // takeBatch() gives up its blocking wait when the loop's turn is due (every 50 ms).
      assert.ok(ticks >= 5, `a 10 ms interval ran ${ticks} times in 1 s`);
    } finally {
      clearInterval(interval);
      child.kill();
      await child.status;
    }
    connector.stop();
    assert.equal(connector.takeBatch(buffer, () => true), 0);
  },
);

liveTest(
  "a backlog is not taken in one run: the event loop gets its turns through it",
  async () => {
    await using connector = await ProcConnector.open({ eventMask: EXEC, realtime: false });
    // Execs with a 4 KiB argument, two to a batch at most: 300 of them, which the reader
    // gathers in its 8 MiB ring while nothing takes them, are a backlog of 150 batches.
    const buffer = new Uint8Array(RecordLayout.maxSize);
    await new Deno.Command("/bin/sh", {
      args: [
        "-c",
        'a=$(head -c 4000 /dev/zero | tr "\\0" x); for i in $(seq 300); do /bin/true "$a"; done',
      ],
    }).output();
    /** Batches takeBatch() gives in a row before it says the loop's turn comes first. */
    const run = (mayBlock: () => boolean) => {
      let n = 0;
      while (connector.takeBatch(buffer, mayBlock) > 0) n++;
      return n;
    };
    const runs: number[] = [];
    for (let round = 0; round < 6; round++) {
      // Nothing of the caller's waits on the loop: up to 8 batches between turns.
      runs.push(run(() => true));
      assert.ok(await connector.nextBatch(buffer, 1000, () => true) > 0, "the backlog ended early");
    }
    // Not a turn per batch while nothing waits, and never more than 8 batches without one.
    assert.ok(runs.every((n) => n <= 8), `batches in a row between turns: ${runs}`);
    assert.ok(runs.slice(1).some((n) => n > 1), `batches in a row between turns: ${runs}`);
    // The caller has a write waiting on the loop: a turn after every batch.
    assert.deepEqual([run(() => false), run(() => false)], [0, 0], "no turn after a batch");
    assert.ok(await connector.nextBatch(buffer, 1000, () => false) > 0);
    assert.equal(run(() => false), 0, "a second batch was taken with a write waiting");
    // A timer that is due runs at the next turn, not after the backlog's last batch.
    let batches = 0;
    let timerAt = -1;
    setTimeout(() => timerAt = batches, 1);
    const due = performance.now() + 2;
    while (performance.now() < due); // the timer is due before the rest is taken
    for (;;) {
      const length = connector.takeBatch(buffer, () => true) ||
        await connector.nextBatch(buffer, 50, () => true);
      if (length === 0) break;
      batches++;
    }
    assert.ok(batches > 50, `${batches} batches left of the backlog`);
    assert.ok(timerAt >= 0 && timerAt <= 8, `the timer ran after ${timerAt} of ${batches} batches`);
  },
);

liveTest(
  "nextBatch() goes back to the event loop at once when a socket of Deno's has input",
  async () => {
    await using connector = await ProcConnector.open({ eventMask: EXEC, realtime: false });
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const child = trickle(3);
    // Five connections 150 ms apart, each stamped with CLOCK_MONOTONIC just before it.
    const client = new Deno.Command("python3", {
      args: [
        "-c",
        "import socket,sys,time\n" +
        "for i in range(5):\n" +
        "  time.sleep(0.15)\n" +
        "  print(time.clock_gettime_ns(time.CLOCK_MONOTONIC), flush=True)\n" +
        "  socket.create_connection(('127.0.0.1', int(sys.argv[1]))).close()\n",
        String(listener.addr.port),
      ],
      stdout: "piped",
    }).spawn();
    const accepted: bigint[] = [];
    const accepting = (async () => {
      for (let i = 0; i < 5; i++) {
        (await listener.accept()).close();
        accepted.push(connector.monotonicNowNs());
      }
    })();
    try {
      await drain(connector, () => accepted.length === 5);
      await accepting;
      const stamps = (await client.output()).stdout;
      const connected = new TextDecoder().decode(stamps).trim().split("\n").map(BigInt);
      const delays = connected.map((at, i) => Number(accepted[i] - at) / 1e6).sort((a, b) => a - b);
      // Were the wait to hold the thread until its 50 ms are up, the median would be ~25 ms.
      assert.ok(delays[2] < 10, `accepted after ${delays.map((d) => d.toFixed(1))} ms`);
      assert.ok(connector.blockedBatches > 0, "no batch came in a blocking wait");
    } finally {
      child.kill();
      await child.status;
    }
  },
  { timing: "the accept's delay after the connect, in ms" },
);

liveTest(
  "nextBatch() waits in the event loop after a lone batch, so its timers are not held up",
  async () => {
    await using connector = await ProcConnector.open({ eventMask: EXEC, realtime: false });
    const buffer = new Uint8Array(RecordLayout.maxSize * 64);
    // The widest gap between two runs of a 10 ms interval timer.
    let last = performance.now();
    let widest = 0;
    const interval = setInterval(() => {
      widest = Math.max(widest, performance.now() - last);
      last = performance.now();
    }, 10);
    try {
      // Not a child of ours (whose end would be I/O for the loop): an exec 200 ms from now,
      // which comes while the connector waits in the loop, the first batch in a while.
      // Found by pid: a /bin/true may be gone before its /proc is read (no BPF here).
      const shell = await new Deno.Command("/bin/sh", {
        args: ["-c", "(sleep 0.2; exec /bin/true) >/dev/null 2>&1 & echo $!"],
        stdout: "piped",
      }).output();
      const pid = Number(new TextDecoder().decode(shell.stdout).trim());
      while (!hasExec(buffer, await connector.nextBatch(buffer, 2000, () => true), pid));
      widest = 0;
      // Nothing more comes (other execs on the machine aside): a blocking wait would hold
      // the thread, and the timer, for 50 ms.
      const until = performance.now() + 60;
      while (performance.now() < until) await connector.nextBatch(buffer, 60, () => true);
      assert.ok(widest < 30, `the 10 ms interval went ${widest.toFixed(1)} ms without a run`);
    } finally {
      clearInterval(interval);
    }
  },
  { timing: "how late a timer runs, in ms" },
);

/** Whether the batch of `length` bytes in `buffer` has an exec by process `pid`. */
function hasExec(buffer: Uint8Array, length: number, pid: number): boolean {
  let found = false;
  decodeBatch(new DataView(buffer.buffer), length, (r) => {
    found ||= r.kind === "exec" && r.tgid === pid;
  });
  return found;
}
