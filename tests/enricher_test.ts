import assert from "node:assert/strict";
import { Enricher } from "../lib/enricher.ts";
import { KernelClock } from "../lib/kernel_clock.ts";
import { ProcTable } from "../lib/proc_table.ts";
import type { RawRecord } from "../lib/record.ts";
import { UserNames } from "../lib/user_names.ts";

const SEC = 1_000_000_000n;
const enc = new TextEncoder();

function setup() {
  const table = new ProcTable();
  // A parent the start-up scan would have found: pid 50000, uid 0.
  table.set(50000, { uid: 0, cmdline: "bash -l", cmdlineTruncated: false, ppid: 1, startNs: 0n });
  const enricher = new Enricher(
    table,
    new UserNames(),
    new KernelClock(() => 10n * SEC, () => BigInt(Date.now()) * 1_000_000n),
  );
  return { table, enricher };
}

const base = { cpu: 0, timestampNs: 10n * SEC };

/** A process (or thread) exit as libprocconn decodes it. */
function exitRecord(
  pid: number,
  tgid: number,
  exitCode: number,
  exitSignal: number,
  parent: number,
  timestampNs = base.timestampNs,
): RawRecord {
  return {
    ...base,
    timestampNs,
    kind: "exit",
    pid,
    tgid,
    exitCode,
    exitSignal,
    parentPid: parent,
    parentTgid: parent,
  };
}

/** A fork: `childTgid` differs from `child` for a new thread. */
function forkRecord(
  parent: number,
  child: number,
  childTgid: number,
  timestampNs = base.timestampNs,
): RawRecord {
  return {
    ...base,
    timestampNs,
    kind: "fork",
    parentPid: parent,
    parentTgid: parent,
    childPid: child,
    childTgid,
  };
}

Deno.test("Enricher gives a fork the parent's user and cmdline", () => {
  const { enricher, table } = setup();
  const e = enricher.enrich(forkRecord(50000, 50001, 50001));
  assert.deepEqual(Object.keys(e.event), [
    "event",
    "time",
    "child_pid",
    "parent_pid",
    "child_tgid",
    "parent_tgid",
    "user",
    "uid",
    "cmdline",
  ]);
  assert.equal(e.event.event, "fork");
  assert.ok(e.event.event === "fork" && e.event.user === "root" && e.event.cmdline === "bash -l");
  assert.equal(table.get(50001)?.cmdline, "bash -l");
  assert.equal(e.thread, false);
});

Deno.test("Enricher marks a fork that creates a thread and keeps it out of the table", () => {
  const { enricher, table } = setup();
  table.set(50010, {
    uid: 1000,
    cmdline: "python3 app.py",
    cmdlineTruncated: false,
    ppid: 50000,
    startNs: 0n,
  });
  // The kernel names the process's own parent (real_parent) as a new thread's parent.
  const e = enricher.enrich(forkRecord(50000, 50011, 50010));
  assert.ok(e.event.event === "fork" && e.event.thread === true);
  assert.equal(e.event.cmdline, "python3 app.py");
  assert.equal(e.uid, 1000);
  assert.equal(e.thread, true);
  assert.equal(table.get(50011), undefined);
});

Deno.test("Enricher gives an exec the snapshot's cmdline, and the exit remembers it", () => {
  const { enricher } = setup();
  enricher.enrich(forkRecord(50000, 50003, 50003));
  const exec = enricher.enrich({
    ...base,
    timestampNs: base.timestampNs + 1000n,
    kind: "exec",
    pid: 50003,
    tgid: 50003,
    snapshot: {
      ruid: 65534,
      euid: 65534,
      ppid: 50000,
      comm: "sleep",
      cmdline: enc.encode("sleep\0" + "60\0"),
      cmdlineTruncated: false,
      gone: false,
      exe: "/usr/bin/sleep",
    },
  });
  assert.deepEqual({ ...exec.event, time: "" }, {
    event: "exec",
    time: "",
    pid: 50003,
    user: "nobody",
    uid: 65534,
    ppid: 50000,
    cmdline: "sleep 60",
    comm: "sleep",
    exe: "/usr/bin/sleep",
  });
  const exit = enricher.enrich(
    exitRecord(50003, 50003, 3 << 8, 17, 50000, base.timestampNs + 2n * SEC),
  );
  assert.deepEqual({ ...exit.event, time: "" }, {
    event: "exit",
    time: "",
    pid: 50003,
    exit_code: 768,
    exit_status: 3,
    core_dumped: false,
    user: "nobody",
    uid: 65534,
    ppid: 50000,
    cmdline: "sleep 60",
    duration_s: 2,
  });
});

Deno.test("Enricher keeps an exec that arrived before its process's fork", () => {
  // The child ran on another CPU and exec'd before the fork event was queued.
  const { enricher, table } = setup();
  const snapshot = {
    ruid: 65534,
    euid: 65534,
    ppid: 50000,
    comm: "true",
    cmdline: enc.encode("/bin/true\0"),
    cmdlineTruncated: false,
    gone: false,
    exe: "/usr/bin/true",
  };
  enricher.enrich({
    ...base,
    timestampNs: base.timestampNs + 500n,
    kind: "exec",
    pid: 50020,
    tgid: 50020,
    snapshot,
  });
  const fork = enricher.enrich(forkRecord(50000, 50020, 50020));
  assert.ok(fork.event.event === "fork" && fork.event.cmdline === "bash -l"); // what the parent ran
  assert.equal(table.get(50020)?.cmdline, "/bin/true");
  assert.equal(table.get(50020)?.startNs, base.timestampNs);
  const exit = enricher.enrich(exitRecord(50020, 50020, 0, 17, 50000, base.timestampNs + 1000n));
  assert.ok(
    exit.event.event === "exit" && exit.event.cmdline === "/bin/true" &&
      exit.event.user === "nobody",
  );
  // A fork that reuses the pid later is a new process and replaces the entry.
  enricher.enrich(forkRecord(50000, 50020, 50020, base.timestampNs + 2000n));
  assert.equal(table.get(50020)?.cmdline, "bash -l");
});

Deno.test("Enricher decodes an exit killed by SIGKILL for a process from the scan", () => {
  const { enricher, table } = setup();
  const e = enricher.enrich(exitRecord(50000, 50000, 9, 17, 1));
  assert.ok(e.event.event === "exit");
  assert.equal(e.event.signal, "SIGKILL");
  assert.equal(e.event.exit_status, undefined);
  assert.equal(e.event.user, "root");
  assert.equal(e.event.cmdline, "bash -l");
  assert.equal(e.event.duration_s, 10);
  assert.equal(table.get(50000), undefined);
});

Deno.test("Enricher leaves an exec of a vanished process with an empty cmdline, not the old one", () => {
  const { enricher } = setup();
  const e = enricher.enrich({
    ...base,
    kind: "exec",
    pid: 50000,
    tgid: 50000,
    snapshot: {
      ruid: 0,
      euid: 0,
      ppid: -1,
      comm: "",
      cmdline: new Uint8Array(),
      cmdlineTruncated: false,
      gone: true,
      exe: null,
    },
  });
  assert.ok(e.event.event === "exec");
  assert.equal(e.event.cmdline, "");
  assert.equal(e.event.user, "root"); // still the same process, still root
  assert.equal(e.event.ppid, 1);
});

Deno.test("Enricher marks a truncated cmdline on exec and on the exit", () => {
  const { enricher } = setup();
  const long = "x".repeat(4096);
  const exec = enricher.enrich({
    ...base,
    kind: "exec",
    pid: 50000,
    tgid: 50000,
    snapshot: {
      ruid: 0,
      euid: 0,
      ppid: 1,
      comm: "x",
      cmdline: enc.encode(long),
      cmdlineTruncated: true,
      gone: false,
      exe: null,
    },
  });
  assert.ok(exec.event.event === "exec" && exec.event.cmdline_truncated === true);
  const exit = enricher.enrich(exitRecord(50000, 50000, 0, 17, 1));
  assert.ok(
    exit.event.event === "exit" && exit.event.cmdline_truncated === true &&
      exit.event.exit_status === 0,
  );
});

Deno.test("Enricher reports a thread's exit as a thread and keeps the process", () => {
  const { enricher, table } = setup();
  const e = enricher.enrich(exitRecord(50009, 50000, 0, -1, 0));
  assert.ok(e.event.event === "exit" && e.event.thread === true && e.event.cmdline === "bash -l");
  assert.equal(e.event.ppid, 1); // the process's parent, as the kernel gives none for a thread
  assert.ok(table.get(50000));
});

Deno.test("Enricher takes an exit's parent from the table when the kernel gives 0", () => {
  const { enricher } = setup();
  const e = enricher.enrich(exitRecord(50000, 50000, 0, 17, 0));
  assert.ok(e.event.event === "exit" && e.event.ppid === 1);
});

Deno.test("Enricher names a thread's exit that comes after its process's exit", () => {
  const { enricher } = setup();
  const exit = (pid: number) =>
    enricher.enrich({
      ...base,
      kind: "exit",
      pid,
      tgid: 50000,
      exitCode: 0,
      exitSignal: -1,
      parentPid: 0,
      parentTgid: 0,
    });
  exit(50000);
  const late = exit(50007);
  assert.ok(late.event.event === "exit" && late.event.thread === true);
  assert.equal(late.event.cmdline, "bash -l");
  assert.equal(late.event.user, "root");
});

Deno.test("Enricher updates the user on a uid change and names gid/sid events", () => {
  const { enricher, table } = setup();
  const uid: RawRecord = {
    ...base,
    kind: "uid",
    pid: 50000,
    tgid: 50000,
    ruid: 65534,
    euid: 65534,
  };
  const e = enricher.enrich(uid);
  assert.deepEqual({ ...e.event, time: "" }, {
    event: "uid",
    time: "",
    pid: 50000,
    ruid: 65534,
    euid: 65534,
    user: "nobody",
  });
  assert.equal(table.get(50000)?.uid, 65534);
  const sid = enricher.enrich({ ...base, kind: "sid", pid: 50000, tgid: 50000 });
  assert.ok(sid.event.event === "sid" && sid.event.user === "nobody");
  const lost = enricher.enrich({ ...base, kind: "lost", where: "kernel", count: 5 });
  assert.deepEqual({ ...lost.event, time: "" }, {
    event: "lost",
    time: "",
    count: 5,
    where: "kernel",
  });
});
