/**
 * Turns decoded kernel records into the events users see: adds time, user, cmdline, the
 * decoded exit status and duration, and keeps the process table up to date.
 *
 * @module
 */

import { decodeCmdline } from "./cmdline.ts";
import type { ExecEvent, ExitEvent, ForkEvent, ProcEvent } from "./event.ts";
import { decodeExitCode } from "./exit_code.ts";
import type { KernelClock } from "../kernel/kernel_clock.ts";
import { PROC_ROOT, type ProcInfo, type ProcTable, readProc } from "./proc_table.ts";
import type { RawRecord } from "../kernel/record.ts";
import { type ExitRecord, ThreadGroups } from "./thread_groups.ts";
import { GroupUsage } from "./group_usage.ts";
import type { TaskUsage } from "../kernel/record.ts";
import { type Belonging, belongingOf } from "./cgroup.ts";
import { type Ancestor, ancestorsOf } from "./ancestry.ts";

type ForkRecord = Extract<RawRecord, { kind: "fork" }>;
type ExecRecord = Extract<RawRecord, { kind: "exec" }>;
import type { UserNames } from "./user_names.ts";

/** An event and what the filters need to know about its process. */
export interface Enriched {
  event: ProcEvent;
  /** The process (tgid) the event is about; 0 for `lost`. */
  tgid: number;
  /** For a process fork, the parent's tgid (the --pid filter follows it). */
  parentTgid: number | null;
  /** The process's real uid, when known. */
  uid: number | null;
  /** The process's cmdline, as far as known. */
  cmdline: string;
  /** A thread-level event: hidden unless --threads. */
  thread: boolean;
  /** The process's cgroup, unit and container, when known (the --unit, --cgroup and
   * --container filters). */
  belong?: Belonging | null;
  /** Its ancestors, nearest first, as far as {@link EnricherOptions.ancestryWalk} goes
   * (the --ancestor and --not-ancestor filters). */
  ancestors?: Ancestor[];
}

/** What the Enricher adds beyond the v1 fields. */
export interface EnricherOptions {
  /** Ancestors that fork, exec and exit events show (`--ancestry N`); 0 = none. */
  ancestry?: number;
  /** Ancestors looked up for the filters; never fewer than `ancestry`. 0 = none. */
  ancestryWalk?: number;
  /** Whether exec events carry `env` (`--env`): the snapshot has only the names asked for. */
  env?: boolean;
  /** Whether events carry cgroup, unit and container_id (default true). Off when the exec
   * snapshot does not read it: what the table has would go stale. */
  cgroup?: boolean;
}

/** Receives the events of one record: usually one; none or two around held exits. */
export type EnrichedSink = (enriched: Enriched) => void;

/** Stateful: one Enricher per record stream, fed every record in kernel order. */
export class Enricher {
  readonly #table: ProcTable;
  readonly #users: UserNames;
  readonly #clock: KernelClock;
  readonly #groups = new ThreadGroups();
  readonly #usage = new GroupUsage();
  readonly #ancestry: number;
  readonly #walk: number;
  readonly #env: boolean;
  readonly #cgroup: boolean;

  /** Uses `table` for what it remembers of processes, and updates it. */
  constructor(
    table: ProcTable,
    users: UserNames,
    clock: KernelClock,
    options: EnricherOptions = {},
  ) {
    this.#table = table;
    this.#users = users;
    this.#clock = clock;
    this.#ancestry = options.ancestry ?? 0;
    this.#walk = Math.max(this.#ancestry, options.ancestryWalk ?? 0);
    this.#env = options.env ?? false;
    this.#cgroup = options.cgroup ?? true;
  }

  /** Where the process of `info` belongs, unless cgroups are left out. */
  #belong(info: ProcInfo | undefined): Belonging | null {
    return this.#cgroup ? info?.belong ?? null : null;
  }

  /** The ancestors above `ppid` the filters need, or undefined when none are asked for. */
  #ancestorsFrom(ppid: number | null): Ancestor[] | undefined {
    return this.#walk > 0 ? ancestorsOf(this.#table, ppid, this.#walk) : undefined;
  }

  /** Adds the `ancestors` field of fork, exec and exit events, with `--ancestry N`. */
  #addAncestors(event: { ancestors?: Ancestor[] }, ancestors: Ancestor[] | undefined): void {
    if (this.#ancestry > 0 && ancestors !== undefined) {
      event.ancestors = ancestors.slice(0, this.#ancestry);
    }
  }

  /**
   * Looks a process up, reading /proc once for one the table never saw: its status and
   * stat only, which never wait for the process; its cmdline read could hang this thread
   * on a process stuck in D state, so such a process is shown without one.
   */
  #process(tgid: number): ProcInfo | undefined {
    let info = this.#table.get(tgid);
    if (info === undefined && tgid > 0) {
      const read = readProc(`${PROC_ROOT}/${tgid}`, undefined, this.#cgroup);
      if (read !== null) {
        this.#table.set(tgid, read);
        info = read;
      }
    }
    return info;
  }

  /** How many main-thread exits wait for their process's other threads. */
  get holding(): number {
    return this.#groups.holding;
  }

  /**
   * Passes the events for `record` to `out`, after updating the process table. The exit of
   * a process's main thread while other threads run is held (the process has not ended)
   * and goes out, as the process's exit, with its last thread's; an exec from another
   * thread shows it was replaced (de_thread), and it goes out as a thread's exit.
   */
  enrich(record: RawRecord, out: EnrichedSink): void {
    switch (record.kind) {
      case "fork":
        return this.#fork(record, out);
      case "exec":
        return this.#exec(record, out);
      case "exit":
        return this.#exit(record, out);
      case "lost":
        // Thread counts may be off now: let held exits go rather than wait for ever. So may
        // the thread sums: their processes end without usage rather than with part of it.
        this.expire(null, out);
        this.#usage.lost();
        return out(this.#other(record));
      default:
        return out(this.#other(record));
    }
  }

  /**
   * Lets held main-thread exits from before `beforeNs` (all of them when null) go out as
   * their processes' exits: their last threads' exits never came.
   */
  expire(beforeNs: bigint | null, out: EnrichedSink): void {
    for (const record of this.#groups.expire(beforeNs)) out(this.#heldEnded(record));
  }

  /** The event of a record that neither forks, execs nor exits. */
  #other(record: Exclude<RawRecord, { kind: "fork" | "exec" | "exit" }>): Enriched {
    const time = this.#clock.format(record.timestampNs);
    switch (record.kind) {
      case "uid": {
        const info = this.#process(record.tgid);
        if (info !== undefined) info.uid = record.ruid;
        return this.#simple(record.tgid, record.pid !== record.tgid, {
          event: "uid",
          time,
          pid: record.pid,
          ruid: record.ruid,
          euid: record.euid,
          user: this.#users.name(record.ruid),
        });
      }
      case "gid":
        return this.#simple(record.tgid, record.pid !== record.tgid, {
          event: "gid",
          time,
          pid: record.pid,
          rgid: record.rgid,
          egid: record.egid,
          user: this.#users.name(this.#process(record.tgid)?.uid ?? null),
        });
      case "sid":
        return this.#simple(record.tgid, record.pid !== record.tgid, {
          event: "sid",
          time,
          pid: record.pid,
          user: this.#users.name(this.#process(record.tgid)?.uid ?? null),
        });
      case "ptrace":
        return this.#simple(record.tgid, record.pid !== record.tgid, {
          event: "ptrace",
          time,
          pid: record.pid,
          tracer_pid: record.tracerTgid,
        });
      case "comm": {
        const info = record.pid === record.tgid ? this.#table.get(record.tgid) : undefined;
        if (info !== undefined) info.comm = record.comm;
        return this.#simple(record.tgid, record.pid !== record.tgid, {
          event: "comm",
          time,
          pid: record.pid,
          comm: record.comm,
        });
      }
      case "coredump":
        return this.#simple(record.tgid, record.pid !== record.tgid, {
          event: "coredump",
          time,
          pid: record.pid,
          parent_pid: record.parentTgid,
        });
      case "lost":
        return {
          event: { event: "lost", time, count: record.count, where: record.where },
          tgid: 0,
          parentTgid: null,
          uid: null,
          cmdline: "",
          thread: false,
        };
    }
  }

  /** A fork: the child inherits what its parent runs, as far as the table knows. */
  #fork(record: ForkRecord, out: EnrichedSink): void {
    const thread = record.childPid !== record.childTgid;
    if (thread) {
      this.#groups.threadStarted(record.childTgid);
    } else {
      // The pid is new again: a process held under it has certainly ended.
      const ended = this.#groups.newProcess(record.childTgid);
      if (ended !== undefined) out(this.#heldEnded(ended));
      // Threads of an earlier process under this pid whose end was lost must not count.
      this.#usage.forget(record.childTgid);
    }
    out(this.#forkEvent(record, thread));
  }

  #forkEvent(record: ForkRecord, thread: boolean): Enriched {
    const time = this.#clock.format(record.timestampNs);
    // A new thread's "parent" is its process's parent (the kernel reports real_parent),
    // so what it runs is the process it joins, not that parent.
    const parent = this.#process(thread ? record.childTgid : record.parentTgid);
    const uid = parent?.uid ?? null;
    const cmdline = parent?.cmdline ?? "";
    const truncated = parent?.cmdlineTruncated ?? false;
    const belong = this.#belong(parent);
    // The child may run on another CPU and exec before its fork event is queued: then
    // the table already holds what it runs now, which the fork must not undo.
    const execFirst = this.#table.get(record.childTgid);
    if (!thread && execFirst?.execNs !== undefined && execFirst.execNs >= record.timestampNs) {
      execFirst.startNs = record.timestampNs;
      execFirst.ppid ??= record.parentTgid;
    } else if (!thread) {
      this.#table.set(record.childTgid, {
        uid,
        cmdline,
        cmdlineTruncated: truncated,
        ppid: record.parentTgid,
        startNs: record.timestampNs,
        comm: parent?.comm,
        belong,
      });
    }
    const ancestors = this.#ancestorsFrom(
      thread ? this.#table.get(record.childTgid)?.ppid ?? null : record.parentTgid,
    );
    const event: ForkEvent = {
      event: "fork",
      time,
      child_pid: record.childPid,
      parent_pid: record.parentPid,
      child_tgid: record.childTgid,
      parent_tgid: record.parentTgid,
      user: this.#users.name(uid),
      uid,
      cmdline,
    };
    if (truncated) event.cmdline_truncated = true;
    addBelonging(event, belong);
    if (thread) event.thread = true;
    this.#addAncestors(event, ancestors);
    return {
      event,
      tgid: record.childTgid,
      parentTgid: thread ? null : record.parentTgid,
      uid,
      cmdline,
      thread,
      belong,
      ancestors,
    };
  }

  /** An exec: what the process runs now, from the reader's snapshot. */
  #exec(record: ExecRecord, out: EnrichedSink): void {
    const replaced = this.#groups.exec(record.tgid);
    if (replaced !== undefined) out(this.#exitEvent(replaced, true, replaced.usage));
    out(this.#execEvent(record));
  }

  #execEvent(record: ExecRecord): Enriched {
    const time = this.#clock.format(record.timestampNs);
    const snap = record.snapshot;
    const before = this.#table.get(record.tgid);
    const known = snap !== null && !snap.gone;
    // A process gone before /proc was read leaves no trace of its new program: an
    // empty cmdline is honest, the pre-exec one would be wrong.
    const cmdline = known ? decodeCmdline(snap.cmdline) : "";
    const truncated = known && snap.cmdlineTruncated;
    // exec keeps the real uid, so the table's (from the fork, the scan or a uid event)
    // is right; libprocconn reports only the effective one, the fallback.
    // (uid_t)-1 is libprocconn's "unknown".
    const uid = known && snap.ruid !== 0xffffffff
      ? snap.ruid
      : before?.uid ?? (known && snap.euid !== 0xffffffff ? snap.euid : null);
    const ppid = snap !== null && snap.ppid >= 0 ? snap.ppid : before?.ppid ?? null;
    // Not read, or the process gone first: it is still where its parent put it.
    const belong = known && snap.cgroup ? belongingOf(snap.cgroup) : this.#belong(before);
    this.#table.set(record.tgid, {
      uid,
      cmdline,
      cmdlineTruncated: truncated,
      ppid,
      startNs: before?.startNs ?? null,
      execNs: record.timestampNs,
      comm: known && snap.comm !== "" ? snap.comm : before?.comm,
      belong,
    });
    const ancestors = this.#ancestorsFrom(ppid);
    const event: ExecEvent = {
      event: "exec",
      time,
      pid: record.tgid,
      user: this.#users.name(uid),
      uid,
      ppid,
      cmdline,
    };
    if (truncated) event.cmdline_truncated = true;
    if (known && snap.comm !== "") event.comm = snap.comm;
    if (known && snap.exe !== null) event.exe = snap.exe;
    addBelonging(event, belong);
    if (known && snap.cwd) event.cwd = snap.cwd;
    if (known && this.#env) {
      event.env = Object.fromEntries(snap.env ?? []);
      if (snap.envTruncated) event.env_truncated = true;
    }
    this.#addAncestors(event, ancestors);
    return {
      event,
      tgid: record.tgid,
      parentTgid: null,
      uid,
      cmdline,
      thread: false,
      belong,
      ancestors,
    };
  }

  /** An exit: the decoded status, with what the table remembers of the process. */
  #exit(record: ExitRecord, out: EnrichedSink): void {
    // Every task's usage counts towards its process's: the exits that do not end the process
    // add theirs, the one that does gets the sum.
    const { tgid, usage } = record;
    if (record.pid === tgid) {
      if (this.#groups.mainExited(record)) this.#usage.add(tgid, usage);
      else out(this.#exitEvent(record, false, this.#usage.end(tgid, usage)));
      return;
    }
    const main = this.#groups.threadExited(tgid);
    if (main === undefined) this.#usage.add(tgid, usage);
    out(this.#exitEvent(record, true, usage));
    if (main !== undefined) {
      // The last thread's exit is the process's end, with the group's exit code.
      const end = { ...record, pid: tgid, parentTgid: main.parentTgid };
      out(this.#exitEvent(end, false, this.#usage.end(tgid, usage)));
    }
  }

  /** A held main thread's exit that ends its process after all (its usage was added). */
  #heldEnded(record: ExitRecord): Enriched {
    return this.#exitEvent(record, false, this.#usage.end(record.tgid, record.usage, true));
  }

  /** An exit event: a thread's, or the process's end. */
  #exitEvent(record: ExitRecord, thread: boolean, usage: TaskUsage | null): Enriched {
    const time = this.#clock.format(record.timestampNs);
    const info = thread ? this.#table.getExited(record.tgid) : this.#table.take(record.tgid);
    const uid = info?.uid ?? null;
    const cmdline = info?.cmdline ?? "";
    const status = decodeExitCode(record.exitCode);
    const duration = !thread && info?.startNs != null && record.timestampNs >= info.startNs
      ? Math.round(Number(record.timestampNs - info.startNs) / 1000) / 1e6
      : undefined;
    // The kernel gives 0 for a thread, and for a process whose parent reaped it
    // before the event was built: the table knows the parent.
    const ppid = record.parentTgid === 0 ? info?.ppid ?? 0 : record.parentTgid;
    const ancestors = this.#ancestorsFrom(ppid);
    const pid = record.pid;
    const exit_code = record.exitCode;
    const core_dumped = status.core_dumped;
    const user = this.#users.name(uid);
    // Two literals rather than one with a spread: the decoded status sits mid-object.
    const event: ExitEvent = "signal" in status
      ? {
        event: "exit",
        time,
        pid,
        exit_code,
        signal: status.signal,
        core_dumped,
        user,
        uid,
        ppid,
        cmdline,
      }
      : {
        event: "exit",
        time,
        pid,
        exit_code,
        exit_status: status.exit_status,
        core_dumped,
        user,
        uid,
        ppid,
        cmdline,
      };
    if (info?.cmdlineTruncated) event.cmdline_truncated = true;
    if (duration !== undefined) event.duration_s = duration;
    if (usage !== null) addUsageFields(event, usage);
    addBelonging(event, this.#belong(info));
    if (thread) event.thread = true;
    this.#addAncestors(event, ancestors);
    return {
      event,
      tgid: record.tgid,
      parentTgid: null,
      uid,
      cmdline,
      thread,
      belong: this.#belong(info),
      ancestors,
    };
  }

  #simple(tgid: number, thread: boolean, event: ProcEvent): Enriched {
    const info = this.#table.get(tgid);
    return {
      event,
      tgid,
      parentTgid: null,
      uid: info?.uid ?? null,
      cmdline: info?.cmdline ?? "",
      thread,
      belong: this.#belong(info),
      ancestors: this.#ancestorsFrom(info?.ppid ?? null),
    };
  }
}

// The fork, exec and exit events are built field by field in their schema order (JSON keeps
// insertion order), not with spreads of optional parts: at a few hundred processes a second
// this runs cold, and an object spread takes the runtime's generic copying paths, which
// showed in the profile (200 processes/s, the JS thread) as much as the rest of the enricher.

/** Adds an exit event's usage fields (SPEC §12), in their schema order. */
function addUsageFields(event: ExitEvent, u: TaskUsage): void {
  event.cpu_user_s = u.cpuUserUs / 1e6;
  event.cpu_sys_s = u.cpuSysUs / 1e6;
  event.max_rss_kb = u.maxRssKb;
  event.read_bytes = u.readBytes;
  event.write_bytes = u.writeBytes;
  event.ctx_voluntary = u.ctxVoluntary;
  event.ctx_involuntary = u.ctxInvoluntary;
}

/** Adds where the process belongs, as far as known, in the schema's order. */
function addBelonging(event: Partial<Belonging>, belong: Belonging | null): void {
  if (belong === null) return;
  event.cgroup = belong.cgroup;
  if (belong.unit !== undefined) event.unit = belong.unit;
  if (belong.container_id !== undefined) event.container_id = belong.container_id;
}
