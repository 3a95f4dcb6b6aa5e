/**
 * Decoding of the records libprocconn writes into a batch buffer.
 *
 * The layout is `struct pc_record` in native/procconn.h; every offset used here is in
 * {@link RecordLayout}, next to the header's own comments. Decoding is pure: no /proc, no
 * clock, no allocation beyond the returned object and the exec snapshot's byte views.
 *
 * @module
 */

/** The `what` values of native/procconn.h (the kernel's PROC_EVENT_* plus PC_EVENT_LOST). */
export const RecordKind = {
  fork: 0x00000001,
  exec: 0x00000002,
  uid: 0x00000004,
  gid: 0x00000040,
  sid: 0x00000080,
  ptrace: 0x00000100,
  comm: 0x00000200,
  coredump: 0x40000000,
  exit: 0x80000000,
  lost: 0x00010000,
} as const;

/** A record kind name. */
export type RecordKind = keyof typeof RecordKind;

/** Byte offsets and sizes of `struct pc_record` (native/procconn.h). */
export const RecordLayout = {
  size: 0,
  what: 4,
  cpu: 8,
  flags: 12,
  timestampNs: 16,
  data: 24,
  /** Size of the head every record has (PC_RECORD_HEAD_SIZE). */
  headSize: 48,
  ruid: 48,
  euid: 52,
  ppid: 56,
  cmdlineLen: 60,
  exeLen: 62,
  comm: 64,
  /** An exit's usage block (struct pc_usage, with PC_F_USAGE): u64 each, after the head. */
  cpuUserUs: 48,
  cpuSysUs: 56,
  maxRssKb: 64,
  readBytes: 72,
  writeBytes: 80,
  ctxVoluntary: 88,
  ctxInvoluntary: 96,
  /** Size of an exit record with usage (PC_RECORD_USAGE_SIZE). */
  usageSize: 104,
  cwdLen: 80,
  envLen: 82,
  cgroupLen: 84,
  /** Where the exec snapshot's cmdline bytes start (PC_RECORD_SNAPSHOT_SIZE); then come
   * the exe, cwd, env and cgroup bytes. */
  snapshotSize: 88,
  /** The largest record (PC_RECORD_MAX): a batch buffer must hold at least this. */
  maxSize: 88 + 4096 + 1024 + 1024 + 2048 + 1024,
} as const;

/** Record flags (PC_F_*). */
export const RecordFlag = {
  snapshot: 0x1,
  cmdlineTruncated: 0x2,
  gone: 0x4,
  noExe: 0x8,
  usage: 0x10,
  usageLast: 0x20,
  envTruncated: 0x40,
} as const;

/** Where a lost record says events were lost (PC_LOST_*). */
export const LostCode = { kernel: 1, buffer: 2, usage: 3 } as const;

/** Fields every record has. */
interface RecordBase {
  /** CPU the kernel reported the event on. */
  cpu: number;
  /** CLOCK_MONOTONIC nanoseconds, as a bigint to keep full precision. */
  timestampNs: bigint;
}

/** What libprocconn read from /proc the moment an exec arrived. */
export interface ExecSnapshot {
  ruid: number;
  euid: number;
  /** -1 when unknown. */
  ppid: number;
  comm: string;
  /** Raw /proc/PID/cmdline bytes (NUL-separated), a view into the batch buffer. */
  cmdline: Uint8Array;
  cmdlineTruncated: boolean;
  /** The process was gone before /proc could be read: nothing but the ids is known. */
  gone: boolean;
  /** The /proc/PID/exe target, or null when unreadable. */
  exe: string | null;
  // Optional so a snapshot can be written down without them; decoding always sets them.
  /** The working directory, or null when not read or unreadable. */
  cwd?: string | null;
  /** The cgroup path (v2, else systemd's v1), or null when not read or unknown. */
  cgroup?: string | null;
  /** The asked-for environment variables found, in the environment's order. */
  env?: [name: string, value: string][];
  /** A value was cut, or a variable left out for lack of room (PC_F_ENV_TRUNCATED). */
  envTruncated?: boolean;
}

/** An exited task's own resource usage, from the kernel's taskstats (struct pc_usage). */
export interface TaskUsage {
  /** User CPU time, microseconds. */
  cpuUserUs: number;
  /** System CPU time, microseconds. */
  cpuSysUs: number;
  /** Peak resident memory of the task's address space (shared by its threads), KiB. */
  maxRssKb: number;
  /** Bytes read from storage (page-cache hits not counted), in whole KiB. */
  readBytes: number;
  /** Bytes written to storage, in whole KiB. */
  writeBytes: number;
  ctxVoluntary: number;
  ctxInvoluntary: number;
  /** The kernel says this task was the last of its process (taskstats AGROUP). */
  last: boolean;
}

/** A decoded record, discriminated on `kind`. */
export type RawRecord =
  & RecordBase
  & (
    | { kind: "fork"; parentPid: number; parentTgid: number; childPid: number; childTgid: number }
    | { kind: "exec"; pid: number; tgid: number; snapshot: ExecSnapshot | null }
    | { kind: "uid"; pid: number; tgid: number; ruid: number; euid: number }
    | { kind: "gid"; pid: number; tgid: number; rgid: number; egid: number }
    | { kind: "sid"; pid: number; tgid: number }
    | { kind: "ptrace"; pid: number; tgid: number; tracerPid: number; tracerTgid: number }
    | { kind: "comm"; pid: number; tgid: number; comm: string }
    | { kind: "coredump"; pid: number; tgid: number; parentPid: number; parentTgid: number }
    | {
      kind: "exit";
      pid: number;
      tgid: number;
      exitCode: number;
      exitSignal: number;
      parentPid: number;
      parentTgid: number;
      /** The task's resource usage, or null when none came (off, or lost). */
      usage: TaskUsage | null;
    }
    | { kind: "lost"; where: "kernel" | "buffer" | "usage"; count: number }
  );

/** A record and how many bytes it took. */
export interface Decoded {
  record: RawRecord;
  size: number;
}

const utf8 = new TextDecoder("utf-8");

/** Reads a NUL-padded C string of `max` bytes (comm) as UTF-8 with replacement. */
function cString(view: DataView, offset: number, max: number): string {
  const bytes = new Uint8Array(view.buffer, view.byteOffset + offset, max);
  const end = bytes.indexOf(0);
  return utf8.decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/**
 * Decodes the record at `offset` of `view`.
 *
 * @throws {RangeError} when the buffer ends before the record does (truncated batch).
 * @throws {TypeError} when the record's kind is unknown or its size is malformed.
 */
export function decodeEvent(view: DataView, offset: number): Decoded {
  const size = recordSize(view, offset);
  return { size, record: decodeRecord(view, offset, size) };
}

/** The size of the record at `offset`, once its head is whole and the size is sane. */
function recordSize(view: DataView, offset: number): number {
  const L = RecordLayout;
  if (offset + L.headSize > view.byteLength) {
    throw new RangeError(
      `Truncated record at offset ${offset}: ${view.byteLength - offset} bytes left, ` +
        `a record head needs ${L.headSize}`,
    );
  }
  const size = view.getUint32(offset + L.size, true);
  if (size < L.headSize || size % 8 !== 0 || size > L.maxSize) {
    throw new TypeError(`Malformed record at offset ${offset}: size ${size}`);
  }
  if (offset + size > view.byteLength) {
    throw new RangeError(
      `Truncated record at offset ${offset}: size ${size}, ${view.byteLength - offset} bytes left`,
    );
  }
  return size;
}

/** The record of `size` bytes at `offset`, by its kind. */
function decodeRecord(view: DataView, offset: number, size: number): RawRecord {
  const L = RecordLayout;
  const what = view.getUint32(offset + L.what, true);
  const flags = view.getUint32(offset + L.flags, true);
  const u = (i: number) => view.getUint32(offset + L.data + 4 * i, true);
  const s = (i: number) => view.getInt32(offset + L.data + 4 * i, true);
  const base = {
    cpu: view.getUint32(offset + L.cpu, true),
    timestampNs: view.getBigUint64(offset + L.timestampNs, true),
  };

  switch (what) {
    case RecordKind.fork:
      return {
        ...base,
        kind: "fork",
        parentPid: u(0),
        parentTgid: u(1),
        childPid: u(2),
        childTgid: u(3),
      };
    case RecordKind.exec: {
      const snapshot = decodeSnapshot(view, offset, size, flags);
      return { ...base, kind: "exec", pid: u(0), tgid: u(1), snapshot };
    }
    case RecordKind.uid:
      return { ...base, kind: "uid", pid: u(0), tgid: u(1), ruid: u(2), euid: u(3) };
    case RecordKind.gid:
      return { ...base, kind: "gid", pid: u(0), tgid: u(1), rgid: u(2), egid: u(3) };
    case RecordKind.sid:
      return { ...base, kind: "sid", pid: u(0), tgid: u(1) };
    case RecordKind.ptrace:
      return { ...base, kind: "ptrace", pid: u(0), tgid: u(1), tracerPid: u(2), tracerTgid: u(3) };
    case RecordKind.comm: {
      const comm = cString(view, offset + L.data + 8, 16);
      return { ...base, kind: "comm", pid: u(0), tgid: u(1), comm };
    }
    case RecordKind.coredump:
      return {
        ...base,
        kind: "coredump",
        pid: u(0),
        tgid: u(1),
        parentPid: u(2),
        parentTgid: u(3),
      };
    case RecordKind.exit:
      return {
        ...base,
        kind: "exit",
        pid: u(0),
        tgid: u(1),
        exitCode: u(2),
        exitSignal: s(3),
        parentPid: u(4),
        parentTgid: u(5),
        usage: decodeUsage(view, offset, size, flags),
      };
    case RecordKind.lost:
      return { ...base, kind: "lost", where: lostWhere(u(0), offset), count: u(1) };
    default:
      throw new TypeError(
        `Unknown record kind 0x${what.toString(16).padStart(8, "0")} at offset ${offset}`,
      );
  }
}

/** Where a `lost` record's events were lost, from its code. */
function lostWhere(code: number, offset: number): "kernel" | "buffer" | "usage" {
  switch (code) {
    case LostCode.kernel:
      return "kernel";
    case LostCode.buffer:
      return "buffer";
    case LostCode.usage:
      return "usage";
    default:
      throw new TypeError(`Unknown loss location ${code} in record at offset ${offset}`);
  }
}

/** Decodes an exit's usage block, when the record carries one. */
function decodeUsage(
  view: DataView,
  offset: number,
  size: number,
  flags: number,
): TaskUsage | null {
  const L = RecordLayout;
  if ((flags & RecordFlag.usage) === 0) return null;
  if (size < L.usageSize) {
    throw new TypeError(
      `Malformed exit record at offset ${offset}: size ${size} has no room for its usage`,
    );
  }
  // Counters far below 2^53 in any real process: a number keeps the events plain JSON, and
  // two 32-bit reads make it without a BigInt per field.
  const u = (field: number) =>
    view.getUint32(offset + field, true) + view.getUint32(offset + field + 4, true) * 2 ** 32;
  return {
    cpuUserUs: u(L.cpuUserUs),
    cpuSysUs: u(L.cpuSysUs),
    maxRssKb: u(L.maxRssKb),
    readBytes: u(L.readBytes),
    writeBytes: u(L.writeBytes),
    ctxVoluntary: u(L.ctxVoluntary),
    ctxInvoluntary: u(L.ctxInvoluntary),
    last: (flags & RecordFlag.usageLast) !== 0,
  };
}

/** Decodes the exec snapshot that follows the head, when the record carries one. */
function decodeSnapshot(
  view: DataView,
  offset: number,
  size: number,
  flags: number,
): ExecSnapshot | null {
  const L = RecordLayout;
  if ((flags & RecordFlag.snapshot) === 0) return null;
  if (size < L.snapshotSize) {
    throw new TypeError(
      `Malformed exec record at offset ${offset}: size ${size} has no room for its snapshot`,
    );
  }
  const lengths = [L.cmdlineLen, L.exeLen, L.cwdLen, L.envLen, L.cgroupLen].map((at) =>
    view.getUint16(offset + at, true)
  );
  const [cmdlineLen, exeLen, cwdLen, envLen, cgroupLen] = lengths;
  if (L.snapshotSize + lengths.reduce((a, b) => a + b, 0) > size) {
    throw new TypeError(
      `Malformed exec record at offset ${offset}: ${
        lengths.join(" + ")
      } bytes do not fit in ${size}`,
    );
  }
  const start = view.byteOffset + offset + L.snapshotSize;
  const text = (at: number, length: number) =>
    length === 0 ? null : utf8.decode(new Uint8Array(view.buffer, start + at, length));
  const exe = (flags & RecordFlag.noExe) !== 0 ? null : text(cmdlineLen, exeLen);
  const cwdAt = cmdlineLen + exeLen;
  return {
    ruid: view.getUint32(offset + L.ruid, true),
    euid: view.getUint32(offset + L.euid, true),
    ppid: view.getInt32(offset + L.ppid, true),
    comm: cString(view, offset + L.comm, 16),
    cmdline: new Uint8Array(view.buffer, start, cmdlineLen),
    cmdlineTruncated: (flags & RecordFlag.cmdlineTruncated) !== 0,
    gone: (flags & RecordFlag.gone) !== 0,
    exe,
    cwd: text(cwdAt, cwdLen),
    env: decodeEnv(new Uint8Array(view.buffer, start + cwdAt + cwdLen, envLen)),
    envTruncated: (flags & RecordFlag.envTruncated) !== 0,
    cgroup: text(cwdAt + cwdLen + envLen, cgroupLen),
  };
}

/** "NAME=value\0" entries as [name, value] pairs; invalid UTF-8 becomes U+FFFD. */
function decodeEnv(bytes: Uint8Array): [string, string][] {
  if (bytes.length === 0) return [];
  const pairs: [string, string][] = [];
  for (const entry of utf8.decode(bytes).split("\0")) {
    const eq = entry.indexOf("=");
    if (eq > 0) pairs.push([entry.slice(0, eq), entry.slice(eq + 1)]);
  }
  return pairs;
}

/** Decodes every record in `view[0, length)`, calling `each` in order. */
export function decodeBatch(
  view: DataView,
  length: number,
  each: (record: RawRecord) => void,
): void {
  const bounded = length === view.byteLength
    ? view
    : new DataView(view.buffer, view.byteOffset, length);
  for (let offset = 0; offset < length;) {
    const { record, size } = decodeEvent(bounded, offset);
    each(record);
    offset += size;
  }
}
