/**
 * Live tests of the FFI boundary: the real libprocconn on the real connector.
 */
import assert from "node:assert/strict";
import { ProcConnector } from "../lib/kernel/ffi.ts";
import { Monitor } from "../lib/events/monitor.ts";
import { UserNames } from "../lib/events/user_names.ts";
import { decodeBatch, RecordLayout } from "../lib/kernel/record.ts";
import {
  collectExecs,
  execConnectorOnFakeProc,
  fakeProcess,
  release,
  waitingShell,
} from "./support/fake_proc.ts";
import { liveTest, marker, run } from "./support/live.ts";

liveTest("ProcConnector delivers an exec snapshot with the child's own cmdline", async () => {
  await using connector = await ProcConnector.open({ eventMask: 0x2 /* exec */ });
  const m = marker("ffi");
  // Alive for 50 ms, so that a VM that stalls the reader for a moment cannot fail this.
  const child = await run("/bin/sh", ["-c", "sleep 0.05; exit 0", m]);
  const buffer = new Uint8Array(256 * 1024);
  const deadline = Date.now() + 10_000;
  let found = "";
  while (found === "" && Date.now() < deadline) {
    const n = await connector.nextBatch(buffer, 500);
    decodeBatch(new DataView(buffer.buffer), n, (r) => {
      assert.equal(r.kind, "exec", "the kernel filter lets only execs through");
      if (r.kind === "exec" && r.tgid === child.pid && r.snapshot) {
        found = new TextDecoder().decode(r.snapshot.cmdline);
      }
    });
  }
  assert.equal(found, `/bin/sh\0-c\0sleep 0.05; exit 0\0${m}\0`);
  const stats = connector.stats();
  assert.equal(stats.kernelLost + stats.ringLost, 0);
});

liveTest(
  "ProcConnector.stop() wakes a waiting nextBatch at once; close() then refuses calls",
  async () => {
    const connector = await ProcConnector.open({ eventMask: 0x40 /* gid: rare */ });
    const buffer = new Uint8Array(RecordLayout.maxSize * 4);
    const started = performance.now();
    const waiting = connector.nextBatch(buffer, 20_000);
    await new Promise((r) => setTimeout(r, 50));
    connector.stop();
    await waiting;
    const took = performance.now() - started;
    assert.ok(
      took < 5000,
      `nextBatch returned ${took} ms after the call, not at once after stop()`,
    );
    await connector.close();
    await connector.close(); // idempotent
    await assert.rejects(() => connector.nextBatch(buffer, 0), /closed|closing/);
  },
);

liveTest("the reader thread is named pm-reader, as top -H and ps -L show it", async () => {
  const names = () =>
    [...Deno.readDirSync("/proc/self/task")].map((t) => {
      try {
        return Deno.readTextFileSync(`/proc/self/task/${t.name}/comm`).trim();
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return ""; // the thread has exited
        throw error;
      }
    });
  const before = names().filter((n) => n === "pm-reader").length;
  await using _connector = await ProcConnector.open({ eventMask: 0x2 /* exec */ });
  assert.equal(names().filter((n) => n === "pm-reader").length, before + 1);
});

liveTest("Monitor.run() delivers what the reader had read when stop() came", async () => {
  await using monitor = await Monitor.start({
    events: ["exec"],
    threads: false,
    uids: null,
    match: null,
    pids: null,
    realtime: true,
    usage: true,
    users: new UserNames(),
  });
  const m = marker("drain");
  // The processes run and are read into the ring before anybody takes a record.
  const pids = new Set<number>();
  for (let i = 0; i < 20; i++) pids.add((await run("/bin/sh", ["-c", "exit 0", m])).pid);
  await new Promise((r) => setTimeout(r, 100));
  monitor.stop();
  const seen = new Set<number>();
  await monitor.run((events) => {
    // By pid, not by the marker in the cmdline: a `sh -c "exit 0"` may be gone before a slow
    // reader (ASan) reads its /proc, and its exec then comes without a cmdline (Known limits).
    for (const e of events) if (e.event === "exec" && pids.has(e.pid)) seen.add(e.pid);
  });
  assert.deepEqual([...seen].sort(), [...pids].sort());
  assert.equal(monitor.readerEnded, true);
});

liveTest("an exec whose pid /proc shows as a newer process carries no cmdline", async () => {
  const { root, connector } = await execConnectorOnFakeProc();
  try {
    const reused = waitingShell(marker("reused"));
    const same = waitingShell(marker("same"));
    // Started after any exec from now on: the pid would belong to a newer process.
    await fakeProcess(root, reused.pid, "999999999999", "WRONG\0");
    await fakeProcess(root, same.pid, "1", "RIGHT\0");
    for (const child of [reused, same]) await release(child);
    // Each shell execs twice: itself at spawn (before its stand-in existed), then /bin/true.
    const got = await collectExecs(connector, [reused.pid, same.pid]);
    assert.deepEqual(got.get(same.pid)?.[1], { cmdline: "RIGHT\0", gone: false, ppid: 1 });
    assert.deepEqual(got.get(reused.pid)?.[1], { cmdline: "", gone: true, ppid: -1 });
    assert.ok(connector.stats().execReused >= 1);
  } finally {
    await connector.close();
    await Deno.remove(root, { recursive: true });
  }
});

liveTest("an exec whose stat shows parent 0 (reaped while read) carries no parent", async () => {
  const { root, connector } = await execConnectorOnFakeProc();
  try {
    const reaped = waitingShell(marker("reaped"));
    const adopted = waitingShell(marker("adopted"));
    // The kernel writes ppid 0 in the stat of a process reaped after its /proc was opened.
    await fakeProcess(root, reaped.pid, "1", "", "0");
    await fakeProcess(root, adopted.pid, "1", "ADOPTED\0", "7");
    for (const child of [reaped, adopted]) await release(child);
    const got = await collectExecs(connector, [reaped.pid, adopted.pid]);
    assert.deepEqual(got.get(reaped.pid)?.[1], { cmdline: "", gone: true, ppid: -1 });
    assert.deepEqual(got.get(adopted.pid)?.[1], { cmdline: "ADOPTED\0", gone: false, ppid: 7 });
  } finally {
    await connector.close();
    await Deno.remove(root, { recursive: true });
  }
});
