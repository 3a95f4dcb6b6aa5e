/**
 * Live tests of exit resource usage: the real taskstats socket joined to the real
 * connector's exits, in procMonitor run from source (SPEC §12, README "Exit resource usage").
 */
import assert from "node:assert/strict";
import type { ExitEvent, ProcEvent } from "../lib/events/event.ts";
import { ProcConnector } from "../lib/kernel/ffi.ts";
import { Monitor } from "../lib/events/monitor.ts";
import { UserNames } from "../lib/events/user_names.ts";
import { decodeBatch } from "../lib/kernel/record.ts";
import { liveTest, marker, MonitorProcess, run } from "./support/live.ts";
import { USAGE_FIELDS } from "./support/usage_fields.ts";

/** Touches 100 MiB, then burns 0.3 s of its own CPU time. */
const HEAVY = `
import time
b = bytearray(100 * 1024 * 1024)
for i in range(0, len(b), 4096):
    b[i] = 1
t = time.process_time()
while time.process_time() - t < 0.3:
    pass
`;

/** Two worker threads burn 0.2 s of CPU each and end; the main thread only waits. */
const WORKERS = `
import threading, time
def burn():
    t = time.thread_time()
    while time.thread_time() - t < 0.2:
        pass
ws = [threading.Thread(target=burn) for _ in range(2)]
for w in ws: w.start()
for w in ws: w.join()
`;

const exitOf = (pid: number) => (e: ProcEvent): e is ExitEvent =>
  e.event === "exit" && e.pid === pid && e.thread === undefined;
const cpu = (e: ExitEvent) => (e.cpu_user_s ?? NaN) + (e.cpu_sys_s ?? NaN);

liveTest("an exit carries the CPU time and peak memory the process used", async () => {
  await using monitor = await MonitorProcess.start(["-d", "-e", "exit"]);
  const py = await run("/usr/bin/python3", ["-c", HEAVY, marker("heavy")]);
  assert.equal(py.status.code, 0);
  const exit = await monitor.waitFor("the marker's exit", exitOf(py.pid));
  assert.ok(cpu(exit) >= 0.25, `cpu ${cpu(exit)} s`);
  assert.ok(exit.max_rss_kb! >= 100 * 1024, `max_rss_kb ${exit.max_rss_kb}`);
  for (const field of USAGE_FIELDS) {
    assert.ok(Number.isFinite(exit[field]) && exit[field]! >= 0, `${field}: ${exit[field]}`);
  }
  // Order in the JSON line: after duration_s, before anything else.
  const keys = Object.keys(exit);
  assert.deepEqual(keys.slice(keys.indexOf("duration_s") + 1), [...USAGE_FIELDS]);
  const done = await monitor.stop();
  assert.equal(done.code, 0, done.stderr);
  assert.doesNotMatch(done.stderr, /no resource usage/);
});

liveTest("a thousand quick exits all carry usage", async () => {
  await using monitor = await MonitorProcess.start(["-d", "-e", "exit"]);
  const loop = "i=0; while [ $i -lt 1000 ]; do /bin/true; i=$((i+1)); done";
  const sh = await run("/bin/sh", ["-c", loop, marker("thousand")]);
  assert.equal(sh.status.code, 0);
  // The children's exits come before the shell's own, in kernel order.
  await monitor.waitFor("the shell's exit", exitOf(sh.pid), 60_000);
  const children = monitor.events.filter((e): e is ExitEvent =>
    e.event === "exit" && e.ppid === sh.pid
  );
  assert.equal(children.length, 1000);
  const without = children.filter((e) => e.max_rss_kb === undefined || e.cpu_user_s === undefined);
  assert.equal(without.length, 0, JSON.stringify(without.slice(0, 3)));
  assert.ok(children.every((e) => e.max_rss_kb! > 0), "every process had some memory");
});

liveTest("a multi-threaded process's exit sums its threads' CPU", async () => {
  await using monitor = await MonitorProcess.start(["-d", "-e", "exit", "--threads"]);
  const py = await run("/usr/bin/python3", ["-c", WORKERS, marker("workers")]);
  assert.equal(py.status.code, 0);
  const exit = await monitor.waitFor("the process's exit", exitOf(py.pid));
  const threads = monitor.events.filter((e): e is ExitEvent =>
    e.event === "exit" && e.thread === true && e.cmdline === exit.cmdline &&
    e.pid !== py.pid && cpu(e) >= 0.15
  );
  assert.equal(threads.length, 2, "both workers' exits, each with its own CPU");
  assert.ok(cpu(exit) >= 0.35, `the process's cpu ${cpu(exit)} s`);
  assert.ok(cpu(exit) >= cpu(threads[0]) + cpu(threads[1]), "at least the workers' sum");
  assert.ok(exit.max_rss_kb! >= Math.max(...threads.map((t) => t.max_rss_kb!)));
});

liveTest("without exit events (-e fork,exec) taskstats is not registered at all", async () => {
  const start = (events: ("fork" | "exec" | "exit")[]) =>
    Monitor.start({
      events,
      threads: false,
      uids: null,
      match: null,
      pids: null,
      realtime: false,
      usage: true,
      users: new UserNames(),
    });
  await using withExits = await start(["exec", "exit"]);
  assert.equal(withExits.stats().usage, true);
  await using without = await start(["fork", "exec"]);
  assert.equal(without.stats().usage, false);
});

liveTest("--no-usage: exits go out without the usage fields", async () => {
  await using monitor = await MonitorProcess.start(["-d", "-e", "exit", "--no-usage"]);
  const sh = await run("/bin/sh", ["-c", "exit 0", marker("nousage")]);
  const exit = await monitor.waitFor("the marker's exit", exitOf(sh.pid));
  for (const field of USAGE_FIELDS) assert.equal(field in exit, false, field);
  const done = await monitor.stop();
  assert.equal(done.code, 0, done.stderr);
  assert.doesNotMatch(done.stderr, /resource usage/);
});

liveTest("--format text shows an exit's CPU and peak memory", async () => {
  await using monitor = await MonitorProcess.start(["-d", "-e", "exit", "--format", "text"]);
  const m = marker("text");
  const py = await run("/usr/bin/python3", ["-c", HEAVY, m]);
  const line = new RegExp(` ${py.pid} .* exit 0 after \\S+ · cpu (\\d+\\.\\d\\d)s · (\\d+) MiB: `);
  await monitor.until(() => line.test(monitor.stdoutText), 15_000, "the marker's text line");
  const [, seconds, mib] = line.exec(monitor.stdoutText)!;
  assert.ok(Number(seconds) >= 0.25, seconds);
  assert.ok(Number(mib) >= 100, mib);
});

liveTest(
  "taskstats messages lost to an overrun are counted and reported as lost usage",
  async () => {
    // A receive buffer at the kernel's minimum holds a few messages: a burst overruns it.
    await using connector = await ProcConnector.open({ rcvbufBytes: 1, realtime: false });
    const loop = "i=0; while [ $i -lt 500 ]; do /bin/true & i=$((i+1)); done; wait";
    const sh = await run("/bin/sh", ["-c", loop, marker("overrun")]);
    assert.equal(sh.status.code, 0);
    const buffer = new Uint8Array(512 * 1024);
    let lostUsage = 0;
    let exitsWithout = 0;
    const take = (n: number) =>
      decodeBatch(new DataView(buffer.buffer), n, (r) => {
        if (r.kind === "lost" && r.where === "usage") lostUsage += r.count;
        if (r.kind === "exit" && r.usage === null) exitsWithout++;
      });
    // The burst is over: what was not dropped is queued. Read a moment, then stop and take
    // the rest, so that the counters are final when compared.
    const until = Date.now() + 1000;
    while (Date.now() < until) take(await connector.nextBatch(buffer, 100));
    connector.stop();
    for (let n; (n = await connector.nextBatch(buffer)) > 0;) take(n);
    const stats = connector.stats();
    assert.equal(stats.usage, true);
    assert.ok(stats.usageLost > 0, "the burst overran the taskstats socket");
    assert.equal(lostUsage, stats.usageLost, "every lost message reported in a lost record");
    assert.equal(exitsWithout, stats.usageMissing, "every exit without usage counted");
  },
);
