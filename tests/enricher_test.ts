import assert from "node:assert/strict";
import { type Enriched, Enricher, type EnricherOptions } from "../lib/events/enricher.ts";
import { KernelClock } from "../lib/kernel/kernel_clock.ts";
import { type ProcInfo, ProcTable } from "../lib/events/proc_table.ts";
import type { RawRecord, TaskUsage } from "../lib/kernel/record.ts";
import { UserNames } from "../lib/events/user_names.ts";
import { USAGE_FIELDS } from "./support/usage_fields.ts";

/** Every event `record` gives, in order. */
function enrichAll(enricher: Enricher, record: RawRecord): Enriched[] {
  const got: Enriched[] = [];
  enricher.enrich(record, (e) => got.push(e));
  return got;
}

/** The one event `record` gives. */
function enrichOne(enricher: Enricher, record: RawRecord): Enriched {
  const got = enrichAll(enricher, record);
  assert.equal(got.length, 1, `one event, not ${got.length}`);
  return got[0];
}

const SEC = 1_000_000_000n;
const enc = new TextEncoder();

/** An enricher with `options`, and its table holding a parent the start-up scan found. */
function setup(options: EnricherOptions = {}) {
  const table = new ProcTable();
  // A parent the start-up scan would have found: pid 50000, uid 0.
  table.set(50000, scanned(0, "bash -l", 1));
  const enricher = new Enricher(
    table,
    new UserNames(),
    new KernelClock(() => 10n * SEC, () => BigInt(Date.now()) * 1_000_000n),
    options,
  );
  return { table, enricher };
}

/** A table entry as the start-up scan makes it (whole cmdline, no start time), plus `more`. */
function scanned(
  uid: number,
  cmdline: string,
  ppid: number,
  more: Partial<ProcInfo> = {},
): ProcInfo {
  return { uid, cmdline, cmdlineTruncated: false, ppid, startNs: 0n, ...more };
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
  usage: TaskUsage | null = null,
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
    usage,
  };
}

/** A task's usage as taskstats reports it: `cpu` ms of user time, `rssKb` peak. */
function usage(cpuMs: number, rssKb: number, last = false): TaskUsage {
  return {
    cpuUserUs: cpuMs * 1000,
    cpuSysUs: 1000,
    maxRssKb: rssKb,
    readBytes: 4096,
    writeBytes: 1024,
    ctxVoluntary: 2,
    ctxInvoluntary: 1,
    last,
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

/** A fork's fields, in the schema order, when it has none of the optional ones. */
const FORK_FIELDS = [
  "event",
  "time",
  "child_pid",
  "parent_pid",
  "child_tgid",
  "parent_tgid",
  "user",
  "uid",
  "cmdline",
];

Deno.test("Enricher gives a fork the parent's user and cmdline", () => {
  const { enricher, table } = setup();
  const e = enrichOne(enricher, forkRecord(50000, 50001, 50001));
  assert.deepEqual(Object.keys(e.event), FORK_FIELDS);
  assert.equal(e.event.event, "fork");
  assert.ok(e.event.event === "fork" && e.event.user === "root" && e.event.cmdline === "bash -l");
  assert.equal(table.get(50001)?.cmdline, "bash -l");
  assert.equal(e.thread, false);
});

Deno.test("Enricher marks a fork that creates a thread and keeps it out of the table", () => {
  const { enricher, table } = setup();
  table.set(50010, scanned(1000, "python3 app.py", 50000));
  // The kernel names the process's own parent (real_parent) as a new thread's parent.
  const e = enrichOne(enricher, forkRecord(50000, 50011, 50010));
  assert.ok(e.event.event === "fork" && e.event.thread === true);
  assert.equal(e.event.cmdline, "python3 app.py");
  assert.equal(e.uid, 1000);
  assert.equal(e.thread, true);
  assert.equal(table.get(50011), undefined);
});

Deno.test("Enricher gives an exec the snapshot's cmdline, and the exit remembers it", () => {
  const { enricher } = setup();
  enrichOne(enricher, forkRecord(50000, 50003, 50003));
  const exec = enrichOne(enricher, {
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
  const exit = enrichOne(
    enricher,
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
  enrichOne(enricher, {
    ...base,
    timestampNs: base.timestampNs + 500n,
    kind: "exec",
    pid: 50020,
    tgid: 50020,
    snapshot,
  });
  const fork = enrichOne(enricher, forkRecord(50000, 50020, 50020));
  assert.ok(fork.event.event === "fork" && fork.event.cmdline === "bash -l"); // what the parent ran
  assert.equal(table.get(50020)?.cmdline, "/bin/true");
  assert.equal(table.get(50020)?.startNs, base.timestampNs);
  const exit = enrichOne(
    enricher,
    exitRecord(50020, 50020, 0, 17, 50000, base.timestampNs + 1000n),
  );
  assert.ok(
    exit.event.event === "exit" && exit.event.cmdline === "/bin/true" &&
      exit.event.user === "nobody",
  );
  // A fork that reuses the pid later is a new process and replaces the entry.
  enrichOne(enricher, forkRecord(50000, 50020, 50020, base.timestampNs + 2000n));
  assert.equal(table.get(50020)?.cmdline, "bash -l");
});

Deno.test("Enricher decodes an exit killed by SIGKILL for a process from the scan", () => {
  const { enricher, table } = setup();
  const e = enrichOne(enricher, exitRecord(50000, 50000, 9, 17, 1));
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
  const e = enrichOne(enricher, {
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
  const exec = enrichOne(enricher, {
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
  const exit = enrichOne(enricher, exitRecord(50000, 50000, 0, 17, 1));
  assert.ok(
    exit.event.event === "exit" && exit.event.cmdline_truncated === true &&
      exit.event.exit_status === 0,
  );
});

Deno.test("Enricher reports a thread's exit as a thread and keeps the process", () => {
  const { enricher, table } = setup();
  const e = enrichOne(enricher, exitRecord(50009, 50000, 0, -1, 0));
  assert.ok(e.event.event === "exit" && e.event.thread === true && e.event.cmdline === "bash -l");
  assert.equal(e.event.ppid, 1); // the process's parent, as the kernel gives none for a thread
  assert.ok(table.get(50000));
});

Deno.test("Enricher takes an exit's parent from the table when the kernel gives 0", () => {
  const { enricher } = setup();
  const e = enrichOne(enricher, exitRecord(50000, 50000, 0, 17, 0));
  assert.ok(e.event.event === "exit" && e.event.ppid === 1);
});

Deno.test("Enricher names a thread's exit that comes after its process's exit", () => {
  const { enricher } = setup();
  const exit = (pid: number) =>
    enrichOne(enricher, {
      ...base,
      kind: "exit",
      pid,
      tgid: 50000,
      exitCode: 0,
      exitSignal: -1,
      parentPid: 0,
      parentTgid: 0,
      usage: null,
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
  const e = enrichOne(enricher, uid);
  assert.deepEqual({ ...e.event, time: "" }, {
    event: "uid",
    time: "",
    pid: 50000,
    ruid: 65534,
    euid: 65534,
    user: "nobody",
  });
  assert.equal(table.get(50000)?.uid, 65534);
  const sid = enrichOne(enricher, { ...base, kind: "sid", pid: 50000, tgid: 50000 });
  assert.ok(sid.event.event === "sid" && sid.event.user === "nobody");
  const lost = enrichOne(enricher, { ...base, kind: "lost", where: "kernel", count: 5 });
  assert.deepEqual({ ...lost.event, time: "" }, {
    event: "lost",
    time: "",
    count: 5,
    where: "kernel",
  });
});

/** An exec of `tgid` whose snapshot shows `cmdline` (NUL-separated). */
function execRecord(tgid: number, cmdline: string, timestampNs: bigint): RawRecord {
  return {
    ...base,
    timestampNs,
    kind: "exec",
    pid: tgid,
    tgid,
    snapshot: {
      ruid: 0xffffffff,
      euid: 0,
      ppid: 50000,
      comm: "sh",
      cmdline: enc.encode(cmdline),
      cmdlineTruncated: false,
      gone: false,
      exe: "/usr/bin/dash",
    },
  };
}

const kinds = (got: Enriched[]) => got.map((e) => `${e.event.event}${e.thread ? " (thread)" : ""}`);

Deno.test("enrich() takes an exec from a non-leader thread for what it is, not an exit", () => {
  const { table, enricher } = setup();
  enrichOne(enricher, forkRecord(50000, 50030, 50030, base.timestampNs));
  enrichOne(enricher, forkRecord(50000, 50031, 50030, base.timestampNs + 10n)); // a thread
  // de_thread: the kernel reports the main thread's exit, then the exec of the same tgid.
  assert.deepEqual(
    enrichAll(enricher, exitRecord(50030, 50030, 9, 17, 50000, base.timestampNs + 20n)),
    [],
  );
  assert.equal(table.get(50030)?.ppid, 50000, "the process is still in the table");
  const atExec = enrichAll(
    enricher,
    execRecord(50030, "/bin/sh\0-c\0wait\0", base.timestampNs + 30n),
  );
  assert.deepEqual(kinds(atExec), ["exit (thread)", "exec"]);
  const [end] = enrichAll(enricher, exitRecord(50030, 50030, 0, 17, 50000, base.timestampNs + SEC));
  assert.ok(end.event.event === "exit" && !end.thread);
  assert.equal(end.event.cmdline, "/bin/sh -c wait");
  assert.equal(end.event.duration_s, 1, "the process's whole life, from its fork");
});

Deno.test("enrich() ends a process whose main thread exited first at its last thread's exit", () => {
  const { enricher } = setup();
  enrichOne(enricher, forkRecord(50000, 50040, 50040));
  enrichOne(enricher, forkRecord(50000, 50041, 50040)); // a thread
  assert.deepEqual(enrichAll(enricher, exitRecord(50040, 50040, 0, 17, 50000)), []);
  // The thread exits later with the group's code: exit(3).
  const got = enrichAll(enricher, exitRecord(50041, 50040, 3 << 8, -1, 0, base.timestampNs + 5n));
  assert.deepEqual(kinds(got), ["exit (thread)", "exit"]);
  const e = got[1].event;
  assert.ok(e.event === "exit" && e.pid === 50040 && e.exit_status === 3 && e.ppid === 50000);
});

Deno.test("enrich() lets a held exit go when its pid is reused, events are lost, or it expires", () => {
  const { enricher } = setup();
  const hold = (tgid: number) => {
    enrichOne(enricher, forkRecord(50000, tgid, tgid));
    enrichOne(enricher, forkRecord(50000, tgid + 1, tgid));
    assert.deepEqual(enrichAll(enricher, exitRecord(tgid, tgid, 0, 17, 50000)), []);
  };
  hold(50050);
  assert.deepEqual(kinds(enrichAll(enricher, forkRecord(50000, 50050, 50050))), ["exit", "fork"]);
  hold(50060);
  const lost: RawRecord = { ...base, kind: "lost", count: 3, where: "kernel" };
  assert.deepEqual(kinds(enrichAll(enricher, lost)), ["exit", "lost"]);
  hold(50070);
  const expired: Enriched[] = [];
  enricher.expire(base.timestampNs, (e) => expired.push(e));
  assert.equal(expired.length, 0, "not before its time");
  enricher.expire(base.timestampNs + 1n, (e) => expired.push(e));
  assert.deepEqual(kinds(expired), ["exit"]);
  assert.equal(enricher.holding, 0);
});

Deno.test("enrich() puts a process's usage on its exit, after duration_s, in schema order", () => {
  const { enricher } = setup();
  enrichOne(enricher, forkRecord(50000, 50020, 50020));
  const e = enrichOne(
    enricher,
    exitRecord(50020, 50020, 0, 17, 50000, base.timestampNs + SEC, usage(310, 106_496, true)),
  );
  assert.deepEqual(Object.keys(e.event).slice(-8), ["duration_s", ...USAGE_FIELDS]);
  assert.ok(e.event.event === "exit");
  assert.equal(e.event.cpu_user_s, 0.31);
  assert.equal(e.event.cpu_sys_s, 0.001);
  assert.equal(e.event.max_rss_kb, 106_496);
  assert.equal(e.event.read_bytes, 4096);
  assert.equal(e.event.write_bytes, 1024);
  assert.equal(e.event.ctx_voluntary, 2);
  assert.equal(e.event.ctx_involuntary, 1);
});

Deno.test("enrich() leaves the usage fields out of an exit whose usage never came", () => {
  const { enricher } = setup();
  const e = enrichOne(enricher, exitRecord(50000, 50000, 0, 17, 1));
  assert.ok(e.event.event === "exit");
  assert.equal("cpu_user_s" in e.event, false);
  assert.equal("max_rss_kb" in e.event, false);
});

Deno.test("enrich() sums a process's threads into its exit; a thread's exit has its own", () => {
  const { enricher } = setup();
  enrichOne(enricher, forkRecord(50000, 50030, 50030));
  enrichOne(enricher, forkRecord(50000, 50031, 50030));
  enrichOne(enricher, forkRecord(50000, 50032, 50030));
  // Two workers end long before the process, the main thread last.
  const t1 = enrichOne(enricher, exitRecord(50031, 50030, 0, -1, 0, undefined, usage(200, 900)));
  assert.ok(t1.event.event === "exit" && t1.event.thread === true);
  assert.equal(t1.event.cpu_user_s, 0.2);
  enrichOne(enricher, exitRecord(50032, 50030, 0, -1, 0, undefined, usage(150, 1000)));
  const end = enrichOne(
    enricher,
    exitRecord(50030, 50030, 0, 17, 50000, undefined, usage(10, 950)),
  );
  assert.ok(end.event.event === "exit" && end.event.thread === undefined);
  assert.equal(end.event.cpu_user_s, 0.36);
  assert.equal(end.event.cpu_sys_s, 0.003);
  assert.equal(end.event.max_rss_kb, 1000);
  assert.equal(end.event.read_bytes, 3 * 4096);
  assert.equal(end.event.ctx_voluntary, 6);
});

Deno.test("enrich() gives a process no usage when a thread's never came, and none of an earlier process under its pid", () => {
  const { enricher } = setup();
  enrichOne(enricher, forkRecord(50000, 50060, 50060));
  enrichOne(enricher, forkRecord(50000, 50061, 50060));
  enrichOne(enricher, exitRecord(50061, 50060, 0, -1, 0, undefined, null));
  const end = enrichOne(enricher, exitRecord(50060, 50060, 0, 17, 50000, undefined, usage(10, 9)));
  assert.ok(end.event.event === "exit");
  assert.equal("cpu_user_s" in end.event, false, "not a sum missing a thread");

  // Process 50070's thread reported; its own end was lost; a new process 50070 comes.
  enrichOne(enricher, forkRecord(50000, 50070, 50070));
  enrichOne(enricher, forkRecord(50000, 50071, 50070));
  enrichOne(enricher, exitRecord(50071, 50070, 0, -1, 0, undefined, usage(500, 9)));
  enrichOne(enricher, forkRecord(50000, 50070, 50070, base.timestampNs + 2n * SEC));
  const again = enrichOne(
    enricher,
    exitRecord(50070, 50070, 0, 17, 50000, base.timestampNs + 3n * SEC, usage(10, 9)),
  );
  assert.ok(again.event.event === "exit" && again.event.cpu_user_s === 0.01);
});

Deno.test("enrich() sums a held main thread's usage with its last thread's", () => {
  const { enricher } = setup();
  enrichOne(enricher, forkRecord(50000, 50040, 50040));
  enrichOne(enricher, forkRecord(50000, 50041, 50040));
  // The main thread exits first: held until its last thread ends the process.
  assert.equal(
    enrichAll(enricher, exitRecord(50040, 50040, 0, 17, 50000, undefined, usage(5, 700))).length,
    0,
  );
  const [thread, end] = enrichAll(
    enricher,
    exitRecord(50041, 50040, 0, -1, 0, undefined, usage(300, 800, true)),
  );
  assert.ok(thread.event.event === "exit" && thread.event.cpu_user_s === 0.3);
  assert.ok(end.event.event === "exit" && end.event.pid === 50040 && !end.event.thread);
  assert.equal(end.event.cpu_user_s, 0.305);
  assert.equal(end.event.max_rss_kb, 800);
  // Nothing of it is left over for a later process with the same pid.
  const again = enrichOne(enricher, exitRecord(50040, 50040, 0, 17, 1, undefined, usage(1, 10)));
  assert.ok(again.event.event === "exit" && again.event.cpu_user_s === 0.001);
});

// ---- where a process belongs and comes from ----

/** An exec of `pid` under 50000 whose snapshot read cwd, env and cgroup too. */
function placedExec(pid: number, extra: Record<string, unknown>): RawRecord {
  return {
    ...base,
    timestampNs: base.timestampNs + 1000n,
    kind: "exec",
    pid,
    tgid: pid,
    snapshot: {
      ruid: 0,
      euid: 0,
      ppid: 50000,
      comm: "nginx",
      cmdline: enc.encode("nginx\0"),
      cmdlineTruncated: false,
      gone: false,
      exe: "/usr/sbin/nginx",
      cwd: null,
      cgroup: null,
      env: [],
      envTruncated: false,
      ...extra,
    },
  };
}

Deno.test("Enricher puts cgroup, unit, cwd and env on an exec, and the exit keeps the unit", () => {
  const { enricher } = setup({ env: true });
  enrichOne(enricher, forkRecord(50000, 50010, 50010));
  const exec = enrichOne(
    enricher,
    placedExec(50010, {
      cwd: "/var/www",
      cgroup: "/system.slice/nginx.service",
      env: [["LANG", "C"], ["EMPTY", ""]],
      envTruncated: true,
    }),
  );
  assert.deepEqual({ ...exec.event, time: "" }, {
    event: "exec",
    time: "",
    pid: 50010,
    user: "root",
    uid: 0,
    ppid: 50000,
    cmdline: "nginx",
    comm: "nginx",
    exe: "/usr/sbin/nginx",
    cgroup: "/system.slice/nginx.service",
    unit: "nginx.service",
    cwd: "/var/www",
    env: { LANG: "C", EMPTY: "" },
    env_truncated: true,
  });
  assert.equal(exec.belong?.unit, "nginx.service");
  // A child inherits where its parent is; exits carry it.
  const fork = enrichOne(enricher, forkRecord(50010, 50011, 50011));
  assert.equal(fork.event.event === "fork" && fork.event.unit, "nginx.service");
  const exit = enrichOne(enricher, exitRecord(50011, 50011, 0, 17, 50010));
  assert.deepEqual(
    exit.event.event === "exit" && [exit.event.cgroup, exit.event.unit, exit.event.container_id],
    ["/system.slice/nginx.service", "nginx.service", undefined],
  );
});

Deno.test("Enricher gives an exec no env without --env, and keeps the fork's cgroup when none was read", () => {
  const { enricher, table } = setup();
  table.set(
    50000,
    scanned(0, "bash -l", 1, {
      belong: { cgroup: "/user.slice/user-0.slice/session-3.scope", unit: "session-3.scope" },
    }),
  );
  enrichOne(enricher, forkRecord(50000, 50020, 50020));
  const exec = enrichOne(enricher, placedExec(50020, { env: [["LANG", "C"]] }));
  assert.equal("env" in exec.event, false);
  assert.equal("cwd" in exec.event, false);
  assert.equal(exec.event.event === "exec" && exec.event.unit, "session-3.scope");
});

Deno.test("Enricher --ancestry N lists N ancestors, nearest first, on fork, exec and exit", () => {
  const { table, enricher } = setup({ ancestry: 1, ancestryWalk: 64 });
  table.set(1, scanned(0, "/sbin/init", 0, { comm: "systemd" }));
  table.set(50000, scanned(0, "bash -l", 1, { comm: "bash" }));
  const fork = enrichOne(enricher, forkRecord(50000, 50030, 50030));
  assert.deepEqual(fork.event.event === "fork" && fork.event.ancestors, [
    { pid: 50000, comm: "bash", cmdline: "bash -l" },
  ]);
  // The filters see the whole chain.
  assert.deepEqual(fork.ancestors?.map((a) => a.pid), [50000, 1]);
  const exec = enrichOne(enricher, placedExec(50030, {}));
  assert.deepEqual(exec.event.event === "exec" && exec.event.ancestors?.map((a) => a.pid), [
    50000,
  ]);
  const exit = enrichOne(enricher, exitRecord(50030, 50030, 0, 17, 50000));
  assert.deepEqual(exit.event.event === "exit" && exit.event.ancestors, [
    { pid: 50000, comm: "bash", cmdline: "bash -l" },
  ]);
});

Deno.test("Enricher without --ancestry adds no ancestors field", () => {
  const { enricher } = setup();
  const fork = enrichOne(enricher, forkRecord(50000, 50040, 50040));
  assert.equal("ancestors" in fork.event, false);
  assert.equal(fork.ancestors, undefined);
});

Deno.test("Enricher with cgroup off carries no cgroup, even what the scan found", () => {
  const { table, enricher } = setup({ cgroup: false });
  table.set(
    50000,
    scanned(0, "bash -l", 1, {
      belong: { cgroup: "/system.slice/a.service", unit: "a.service" },
    }),
  );
  const fork = enrichOne(enricher, forkRecord(50000, 50050, 50050));
  assert.equal("cgroup" in fork.event || "unit" in fork.event, false);
  assert.equal(fork.belong, null);
  const exit = enrichOne(enricher, exitRecord(50050, 50050, 0, 17, 50000));
  assert.equal("cgroup" in exit.event, false);
});

Deno.test("Enricher puts every field of fork, exec and exit in the schema order, optional ones too", () => {
  // JSON lines keep the order the enricher adds fields in: a reader of the raw lines, or a
  // diff of two days' logs, sees the same order on every line.
  const { table, enricher } = setup({ ancestry: 2, env: true });
  table.set(50000, scanned(0, "bash -l", 1, { comm: "bash", cmdlineTruncated: true }));
  const fork = enrichOne(enricher, forkRecord(50000, 50050, 50050));
  const thread = enrichOne(enricher, forkRecord(50000, 50051, 50050));
  const exec = enrichOne(
    enricher,
    placedExec(50050, {
      cmdlineTruncated: true,
      cwd: "/srv",
      cgroup: `/system.slice/docker-${"a".repeat(64)}.scope`,
      env: [["LANG", "C"]],
      envTruncated: true,
    }),
  );
  const threadExit = enrichOne(
    enricher,
    exitRecord(50051, 50050, 0, -1, 50000, undefined, usage(1, 100)),
  );
  const exit = enrichOne(
    enricher,
    exitRecord(50050, 50050, 9, 17, 50000, base.timestampNs + SEC, usage(5, 100, true)),
  );
  const belongs = ["cgroup", "unit", "container_id"];
  const head = ["user", "uid"];
  assert.deepEqual(Object.keys(fork.event), [...FORK_FIELDS, "cmdline_truncated", "ancestors"]);
  assert.deepEqual(Object.keys(thread.event).slice(-3), [
    "cmdline_truncated",
    "thread",
    "ancestors",
  ]);
  assert.deepEqual(Object.keys(exec.event), [
    "event",
    "time",
    "pid",
    ...head,
    "ppid",
    "cmdline",
    "cmdline_truncated",
    "comm",
    "exe",
    ...belongs,
    "cwd",
    "env",
    "env_truncated",
    "ancestors",
  ]);
  assert.deepEqual(Object.keys(exit.event), [
    "event",
    "time",
    "pid",
    "exit_code",
    "signal",
    "core_dumped",
    ...head,
    "ppid",
    "cmdline",
    "cmdline_truncated",
    "duration_s",
    ...USAGE_FIELDS,
    ...belongs,
    "ancestors",
  ]);
  assert.deepEqual(Object.keys(threadExit.event).slice(3, 5), ["exit_code", "exit_status"]);
  assert.deepEqual(Object.keys(threadExit.event).slice(-2), ["thread", "ancestors"]);
});
