/**
 * The process table: what procMonitor remembers of each live process, so that an exit
 * (which arrives after the process's memory, and so its /proc cmdline, is gone) still
 * carries its user and cmdline.
 *
 * Keyed by tgid (the process id). Seeded by a scan of /proc at start-up, then kept by
 * fork and exec events; an exit removes its entry. pids are recycled (pid_max may be 32768),
 * so a fork always replaces whatever entry its child pid had.
 *
 * Bounded twice, the stalest entries going first: in entries (131,072 live processes) and
 * in bytes (64 MiB), since 131,072 cmdlines of 4 KiB would be 512 MiB. The bytes are an
 * upper estimate: a fixed cost per entry plus two bytes per cmdline character (V8 needs
 * one for ASCII), over live and recently exited processes alike; when they run short the
 * exited go first.
 *
 * @module
 */

import type { Timer } from "../timers.ts";
import { CMDLINE_LIMIT, decodeCmdline } from "./cmdline.ts";
import { type Belonging, belongingOf, pickCgroupPath } from "./cgroup.ts";

/** What is known of one process. */
export interface ProcInfo {
  /** Real uid, or null when unknown. */
  uid: number | null;
  /** Not to be changed in place: the table counts its size when the entry is set. */
  cmdline: string;
  cmdlineTruncated: boolean;
  /** Parent's tgid, or null when unknown. */
  ppid: number | null;
  /** Start time on CLOCK_MONOTONIC in ns, or null when unknown. */
  startNs: bigint | null;
  /** When the process last exec'd (CLOCK_MONOTONIC ns), if seen. */
  execNs?: bigint;
  /** The kernel's name for it (stat's comm), for ancestry; absent when unknown. */
  comm?: string;
  /** Its cgroup, unit and container; absent or null when unknown. Shared: not to be changed. */
  belong?: Belonging | null;
}

/** Default bound on entries: above any pid_max's live-process count we expect. */
export const DEFAULT_TABLE_LIMIT = 131072;

/** How many exited processes are remembered for the exits of their remaining threads. */
export const EXITED_LIMIT = 4096;

/** Default bound on the bytes of all entries, as {@link entryBytes} counts them. */
export const DEFAULT_TABLE_BYTES = 64 * 1024 * 1024;

/** What one entry is counted as costing besides its cmdline: the map slot, the object and
 * its start time, rounded up. */
export const ENTRY_OVERHEAD_BYTES = 128;

/** The bytes `info` is counted as taking: at most two a cmdline character, plus overhead. */
export function entryBytes(info: ProcInfo): number {
  return ENTRY_OVERHEAD_BYTES + 2 * info.cmdline.length;
}

/** A bounded pid → {@link ProcInfo} map; the least recently written entries go first. */
export class ProcTable {
  readonly #limit: number;
  readonly #byteLimit: number;
  readonly #entries = new Map<number, ProcInfo>();
  /** Processes that just exited, for their threads' exits, which may come after. */
  readonly #exited = new Map<number, ProcInfo>();
  /** {@link entryBytes} of every entry, live and exited. */
  #bytes = 0;
  #evicted = 0;

  /** Creates a table holding at most `limit` processes and `byteLimit` bytes. */
  constructor(limit = DEFAULT_TABLE_LIMIT, byteLimit = DEFAULT_TABLE_BYTES) {
    if (!(limit >= 1)) throw new RangeError(`ProcTable limit must be at least 1, not ${limit}`);
    if (!(byteLimit >= 1)) {
      throw new RangeError(`ProcTable byte limit must be at least 1, not ${byteLimit}`);
    }
    this.#limit = limit;
    this.#byteLimit = byteLimit;
  }

  /** Bytes of all entries, live and recently exited, as {@link entryBytes} counts them. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Number of processes held. */
  get size(): number {
    return this.#entries.size;
  }

  /** Live entries dropped to stay within the bounds since creation. */
  get evicted(): number {
    return this.#evicted;
  }

  /** The entry for `tgid`, if any. */
  get(tgid: number): ProcInfo | undefined {
    return this.#entries.get(tgid);
  }

  /** Stores `info` for `tgid`, replacing any entry of an earlier process with that pid. */
  set(tgid: number, info: ProcInfo): void {
    // Re-inserting moves the key to the end, so eviction takes the stalest entry.
    this.#forget(this.#entries, tgid);
    this.#forget(this.#exited, tgid);
    this.#entries.set(tgid, info);
    this.#bytes += entryBytes(info);
    if (this.#entries.size > this.#limit) this.#evictLive();
    // The exited go first; the entry just set stays, whatever its size.
    while (this.#bytes > this.#byteLimit && this.#exited.size > 0) this.#forgetOldest();
    while (this.#bytes > this.#byteLimit && this.#entries.size > 1) this.#evictLive();
  }

  /**
   * Forgets the process `tgid`, which exited; returns its entry. The entry stays
   * reachable through {@link getExited} until the pid is reused or
   * {@link EXITED_LIMIT} later exits, since the exits of its last threads can follow.
   */
  take(tgid: number): ProcInfo | undefined {
    const info = this.#entries.get(tgid);
    if (info === undefined) return undefined;
    this.#entries.delete(tgid);
    this.#exited.set(tgid, info); // its bytes stay counted
    if (this.#exited.size > EXITED_LIMIT) this.#forgetOldest();
    return info;
  }

  /** A live process's entry, or the entry of a process that exited recently. */
  getExited(tgid: number): ProcInfo | undefined {
    return this.#entries.get(tgid) ?? this.#exited.get(tgid);
  }

  /** Removes `tgid` from `map`, with its bytes. */
  #forget(map: Map<number, ProcInfo>, tgid: number): void {
    const info = map.get(tgid);
    if (info === undefined) return;
    map.delete(tgid);
    this.#bytes -= entryBytes(info);
  }

  /** Drops the stalest live entry. */
  #evictLive(): void {
    this.#forget(this.#entries, this.#entries.keys().next().value as number);
    this.#evicted++;
  }

  /** Forgets the process that exited longest ago. */
  #forgetOldest(): void {
    this.#forget(this.#exited, this.#exited.keys().next().value as number);
  }

  /** tgid → parent tgid for every entry whose parent is known. */
  *parents(): IterableIterator<[number, number]> {
    for (const [tgid, info] of this.#entries) {
      if (info.ppid !== null) yield [tgid, info.ppid];
    }
  }

  /**
   * Adds every process under `procRoot` (default /proc). A process that vanishes while
   * it is read is skipped. Returns how many processes were added.
   *
   * A cmdline read takes the target's memory lock and hangs with a process stuck in D
   * state: cmdlines are read off this thread, a few at a time, and one that takes longer
   * than `cmdlineMs` is left out (the process is still added, without it). Cgroups are read
   * with `cgroup` (`--cgroup-info` and the cgroup filters).
   */
  async scan(
    procRoot = PROC_ROOT,
    cmdlineMs = SCAN_CMDLINE_MS,
    cgroup = false,
  ): Promise<number> {
    const pids: string[] = [];
    for (const entry of Deno.readDirSync(procRoot)) {
      if (entry.isDirectory && /^[0-9]+$/.test(entry.name)) pids.push(entry.name);
    }
    let added = 0;
    for (let i = 0; i < pids.length; i += SCAN_PARALLEL) {
      const chunk = pids.slice(i, i + SCAN_PARALLEL);
      const raws = await Promise.all(
        chunk.map((pid) => settledWithin(Deno.readFile(`${procRoot}/${pid}/cmdline`), cmdlineMs)),
      );
      chunk.forEach((pid, j) => {
        const info = readProc(`${procRoot}/${pid}`, raws[j], cgroup);
        if (info === null) return;
        this.set(Number(pid), info);
        added++;
      });
    }
    return added;
  }
}

/**
 * Where processes are read: /proc, or `PROCMONITOR_PROC_ROOT` (a proc tree mounted
 * elsewhere), which libprocconn reads too.
 */
export const PROC_ROOT = Deno.env.get("PROCMONITOR_PROC_ROOT") || "/proc";

/** How long the scan waits for one process's cmdline. */
const SCAN_CMDLINE_MS = 250;
/** Cmdlines the scan reads at once (each takes a thread of Deno's blocking pool). */
const SCAN_PARALLEL = 8;

/** What `read` gave within `ms`: its bytes, null when it failed, undefined when late. */
async function settledWithin(
  read: Promise<Uint8Array>,
  ms: number,
): Promise<Uint8Array | null | undefined> {
  let timer: Timer | undefined;
  const late = new Promise<undefined>((resolve) =>
    timer = setTimeout(() => resolve(undefined), ms)
  );
  try {
    return await Promise.race([read.catch(() => null), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The cgroup of the process at `dir`, or null when unreadable. /proc/PID/cgroup is the
 * kernel's own bookkeeping, never the process's memory, but it takes the kernel's cgroup
 * locks and walks every hierarchy (17 µs an exec in the bench): read only when asked for.
 */
function readBelonging(dir: string): Belonging | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`${dir}/cgroup`);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.PermissionDenied) {
      return null;
    }
    if (error instanceof Error && /ESRCH|No such process/.test(error.message)) return null;
    throw error;
  }
  const path = pickCgroupPath(text);
  return path === null ? null : belongingOf(path);
}

/** Clock ticks per second of /proc/PID/stat's starttime (USER_HZ, 100 on Linux). */
const USER_HZ = 100n;

/**
 * Reads one process's entry from `/proc/PID`, or null when it has gone. The start time
 * counts from boot including suspend (CLOCK_BOOTTIME), close enough to the kernel's
 * CLOCK_MONOTONIC event stamps on a server that does not sleep.
 *
 * Only `status` and `stat` are read here: they never wait for the process. The cmdline
 * is the caller's, read where a hang cannot stop anything: undefined when not read (or too
 * late), null when the read failed; the entry then has none.
 */
export function readProc(
  dir: string,
  raw?: Uint8Array | null,
  cgroup = false,
): ProcInfo | null {
  if (raw === null) return null; // gone (or unreadable) by the time cmdline was read
  try {
    const status = Deno.readTextFileSync(`${dir}/status`);
    const stat = Deno.readTextFileSync(`${dir}/stat`);
    const uid = /^Uid:\s+(\d+)/m.exec(status);
    const ppid = /^PPid:\s+(\d+)/m.exec(status);
    // comm may hold spaces and parentheses: the fields after it start at the last ')'.
    const after = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = after[19]; // field 22, starttime
    const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const truncated = raw !== undefined && raw.length > CMDLINE_LIMIT;
    let cmdline = raw === undefined
      ? ""
      : decodeCmdline(truncated ? raw.subarray(0, CMDLINE_LIMIT) : raw);
    if (raw !== undefined && cmdline === "") {
      // Kernel threads have no cmdline: show their name in brackets, as ps does.
      const name = /^Name:\t(.*)$/m.exec(status);
      cmdline = `[${name?.[1] ?? "?"}]`;
    }
    return {
      uid: uid ? Number(uid[1]) : null,
      cmdline,
      cmdlineTruncated: truncated,
      ppid: ppid ? Number(ppid[1]) : null,
      startNs: ticks !== undefined && /^\d+$/.test(ticks)
        ? BigInt(ticks) * (1_000_000_000n / USER_HZ)
        : null,
      comm,
      belong: cgroup ? readBelonging(dir) : null,
    };
  } catch (error) {
    // The process exited between readdir and read: ENOENT, or ESRCH for some files.
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.PermissionDenied) {
      return null;
    }
    if (error instanceof Error && /ESRCH|No such process/.test(error.message)) return null;
    throw error;
  }
}
