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

/**
 * `bytes` as a string: ASCII (nearly every comm, path and cmdline) by `String.fromCharCode`,
 * anything else by a TextDecoder, which replaces invalid UTF-8 with U+FFFD. At a few hundred
 * processes a second this runs cold, and the TextDecoder call into the runtime cost more
 * than the whole record's other decoding (profile, 200 execs/s). Pure ASCII has no BOM and
 * nothing to replace, so both ways give the same string.
 */
export function decodeText(bytes: Uint8Array): string {
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] >= 0x80) return utf8.decode(bytes);
  }
  return String.fromCharCode.apply(null, bytes as unknown as number[]);
}

/** Reads a NUL-padded C string of `max` bytes (comm) as UTF-8 with replacement. */
function cString(view: DataView, offset: number, max: number): string {
  const bytes = new Uint8Array(view.buffer, view.byteOffset + offset, max);
  const end = bytes.indexOf(0);
  return decodeText(end < 0 ? bytes : bytes.subarray(0, end));
}

/**
 * Decodes the record at `offset` of `view`.
 *
 * @throws {RangeError} when the buffer ends before the record does (truncated batch).
 * @throws {TypeError} when the record's kind is unknown or its size is malformed.
 */
export function decodeEvent(view: DataView, offset: number): Decoded {
  const size = recordSize(view, offset, view.byteLength);
  return { size, record: decodeRecord(view, offset, size) };
}

/** The size of the record at `offset`, once its head is whole (before `end`) and sane. */
function recordSize(view: DataView, offset: number, end: number): number {
  const L = RecordLayout;
  if (offset + L.headSize > end) {
    throw new RangeError(
      `Truncated record at offset ${offset}: ${end - offset} bytes left, ` +
        `a record head needs ${L.headSize}`,
    );
  }
  const size = view.getUint32(offset + L.size, true);
  if (size < L.headSize || size % 8 !== 0 || size > L.maxSize) {
    throw new TypeError(`Malformed record at offset ${offset}: size ${size}`);
  }
  if (offset + size > end) {
    throw new RangeError(
      `Truncated record at offset ${offset}: size ${size}, ${end - offset} bytes left`,
    );
  }
  return size;
}

/** The `i`th u32 of the record's data, which starts at `at`. */
function u32(view: DataView, at: number, i: number): number {
  return view.getUint32(at + 4 * i, true);
}

/**
 * The record of `size` bytes at `offset`, by its kind. Each kind is one object literal, with
 * no closure or spread per record: at a few hundred processes a second this code runs cold,
 * and the generic paths those take showed in the profile.
 */
function decodeRecord(view: DataView, offset: number, size: number): RawRecord {
  const L = RecordLayout;
  const what = view.getUint32(offset + L.what, true);
  const flags = view.getUint32(offset + L.flags, true);
  const cpu = view.getUint32(offset + L.cpu, true);
  const timestampNs = view.getBigUint64(offset + L.timestampNs, true);
  const at = offset + L.data;
  const pid = u32(view, at, 0);
  const tgid = u32(view, at, 1);

  switch (what) {
    case RecordKind.fork:
      return {
        cpu,
        timestampNs,
        kind: "fork",
        parentPid: pid,
        parentTgid: tgid,
        childPid: u32(view, at, 2),
        childTgid: u32(view, at, 3),
      };
    case RecordKind.exec: {
      const snapshot = decodeSnapshot(view, offset, size, flags);
      return { cpu, timestampNs, kind: "exec", pid, tgid, snapshot };
    }
    case RecordKind.uid:
      return {
        cpu,
        timestampNs,
        kind: "uid",
        pid,
        tgid,
        ruid: u32(view, at, 2),
        euid: u32(view, at, 3),
      };
    case RecordKind.gid:
      return {
        cpu,
        timestampNs,
        kind: "gid",
        pid,
        tgid,
        rgid: u32(view, at, 2),
        egid: u32(view, at, 3),
      };
    case RecordKind.sid:
      return { cpu, timestampNs, kind: "sid", pid, tgid };
    case RecordKind.ptrace:
      return {
        cpu,
        timestampNs,
        kind: "ptrace",
        pid,
        tgid,
        tracerPid: u32(view, at, 2),
        tracerTgid: u32(view, at, 3),
      };
    case RecordKind.comm: {
      const comm = cString(view, at + 8, 16);
      return { cpu, timestampNs, kind: "comm", pid, tgid, comm };
    }
    case RecordKind.coredump:
      return {
        cpu,
        timestampNs,
        kind: "coredump",
        pid,
        tgid,
        parentPid: u32(view, at, 2),
        parentTgid: u32(view, at, 3),
      };
    case RecordKind.exit:
      return {
        cpu,
        timestampNs,
        kind: "exit",
        pid,
        tgid,
        exitCode: u32(view, at, 2),
        exitSignal: view.getInt32(at + 12, true),
        parentPid: u32(view, at, 4),
        parentTgid: u32(view, at, 5),
        usage: decodeUsage(view, offset, size, flags),
      };
    case RecordKind.lost:
      // A lost record's data is its code and its count, not ids.
      return {
        cpu,
        timestampNs,
        kind: "lost",
        where: lostWhere(u32(view, at, 0), offset),
        count: u32(view, at, 1),
      };
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
  return {
    cpuUserUs: u64(view, offset + L.cpuUserUs),
    cpuSysUs: u64(view, offset + L.cpuSysUs),
    maxRssKb: u64(view, offset + L.maxRssKb),
    readBytes: u64(view, offset + L.readBytes),
    writeBytes: u64(view, offset + L.writeBytes),
    ctxVoluntary: u64(view, offset + L.ctxVoluntary),
    ctxInvoluntary: u64(view, offset + L.ctxInvoluntary),
    last: (flags & RecordFlag.usageLast) !== 0,
  };
}

/** The u64 at `at` as a number, from two 32-bit reads. */
function u64(view: DataView, at: number): number {
  return view.getUint32(at, true) + view.getUint32(at + 4, true) * 2 ** 32;
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
  const cmdlineLen = view.getUint16(offset + L.cmdlineLen, true);
  const exeLen = view.getUint16(offset + L.exeLen, true);
  const cwdLen = view.getUint16(offset + L.cwdLen, true);
  const envLen = view.getUint16(offset + L.envLen, true);
  const cgroupLen = view.getUint16(offset + L.cgroupLen, true);
  if (L.snapshotSize + cmdlineLen + exeLen + cwdLen + envLen + cgroupLen > size) {
    throw new TypeError(
      `Malformed exec record at offset ${offset}: ${cmdlineLen} + ${exeLen} + ${cwdLen} + ` +
        `${envLen} + ${cgroupLen} bytes do not fit in ${size}`,
    );
  }
  const buffer = view.buffer;
  const start = view.byteOffset + offset + L.snapshotSize;
  const cwdAt = start + cmdlineLen + exeLen;
  const envAt = cwdAt + cwdLen;
  return {
    ruid: view.getUint32(offset + L.ruid, true),
    euid: view.getUint32(offset + L.euid, true),
    ppid: view.getInt32(offset + L.ppid, true),
    comm: cString(view, offset + L.comm, 16),
    cmdline: new Uint8Array(buffer, start, cmdlineLen),
    cmdlineTruncated: (flags & RecordFlag.cmdlineTruncated) !== 0,
    gone: (flags & RecordFlag.gone) !== 0,
    exe: (flags & RecordFlag.noExe) !== 0 ? null : text(buffer, start + cmdlineLen, exeLen),
    cwd: text(buffer, cwdAt, cwdLen),
    env: envLen === 0 ? [] : decodeEnv(new Uint8Array(buffer, envAt, envLen)),
    envTruncated: (flags & RecordFlag.envTruncated) !== 0,
    cgroup: text(buffer, envAt + envLen, cgroupLen),
  };
}

/** `length` bytes at `at` of `buffer` as text, or null when there are none. */
function text(buffer: ArrayBufferLike, at: number, length: number): string | null {
  return length === 0 ? null : decodeText(new Uint8Array(buffer, at, length));
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
  if (length > view.byteLength) {
    throw new RangeError(`A batch of ${length} bytes does not fit in ${view.byteLength}`);
  }
  for (let offset = 0; offset < length;) {
    const size = recordSize(view, offset, length);
    each(decodeRecord(view, offset, size));
    offset += size;
  }
}
