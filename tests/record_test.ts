import { concat } from "./support/bytes.ts";
import assert from "node:assert/strict";
import {
  decodeBatch,
  decodeEvent,
  RecordFlag,
  RecordKind,
  RecordLayout,
} from "../lib/kernel/record.ts";

/** Builds one record as libprocconn lays it out (native/procconn.h). */
function record(
  what: number,
  data: number[],
  extra: { flags?: number; cpu?: number; ts?: bigint; snapshot?: Snapshot } = {},
): Uint8Array {
  const L = RecordLayout;
  const snap = extra.snapshot;
  const cmd = snap ? new Uint8Array(snap.cmdline) : new Uint8Array();
  const exe = snap?.exe ? new TextEncoder().encode(snap.exe) : new Uint8Array();
  const enc = (text: string | undefined) => new TextEncoder().encode(text ?? "");
  const extras = [enc(snap?.cwd), enc(snap?.env), enc(snap?.cgroup)];
  const tail = concat([cmd, exe, ...extras]);
  const raw = snap ? L.snapshotSize + tail.length : L.headSize;
  const size = Math.ceil(raw / 8) * 8;
  const bytes = new Uint8Array(size);
  const v = new DataView(bytes.buffer);
  v.setUint32(L.size, size, true);
  v.setUint32(L.what, what, true);
  v.setUint32(L.cpu, extra.cpu ?? 1, true);
  v.setUint32(L.flags, (extra.flags ?? 0) | (snap ? RecordFlag.snapshot : 0), true);
  v.setBigUint64(L.timestampNs, extra.ts ?? 123_456_789_012n, true);
  data.forEach((x, i) => v.setUint32(L.data + 4 * i, x >>> 0, true));
  if (snap) {
    v.setUint32(L.ruid, snap.ruid, true);
    v.setUint32(L.euid, snap.euid, true);
    v.setInt32(L.ppid, snap.ppid, true);
    v.setUint16(L.cmdlineLen, cmd.length, true);
    v.setUint16(L.exeLen, exe.length, true);
    v.setUint16(L.cwdLen, extras[0].length, true);
    v.setUint16(L.envLen, extras[1].length, true);
    v.setUint16(L.cgroupLen, extras[2].length, true);
    bytes.set(new TextEncoder().encode(snap.comm), L.comm);
    bytes.set(tail, L.snapshotSize);
  }
  return bytes;
}

interface Snapshot {
  ruid: number;
  euid: number;
  ppid: number;
  comm: string;
  cmdline: number[];
  exe?: string;
  cwd?: string;
  /** "NAME=value\0" entries, as libprocconn writes them. */
  env?: string;
  cgroup?: string;
}

const view = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);

Deno.test("decodeEvent() decodes a fork with parent and child ids", () => {
  const { record: r, size } = decodeEvent(
    view(record(RecordKind.fork, [100, 100, 200, 200], { cpu: 1, ts: 5n })),
    0,
  );
  assert.equal(size, 48);
  assert.deepEqual(r, {
    cpu: 1,
    timestampNs: 5n,
    kind: "fork",
    parentPid: 100,
    parentTgid: 100,
    childPid: 200,
    childTgid: 200,
  });
});

Deno.test("decodeEvent() decodes an exec snapshot with cmdline, exe and comm", () => {
  const cmdline = [...new TextEncoder().encode("/bin/true\0MARKER\0")];
  const bytes = record(RecordKind.exec, [300, 300], {
    snapshot: { ruid: 1000, euid: 0, ppid: 42, comm: "true", cmdline, exe: "/usr/bin/true" },
  });
  const { record: r, size } = decodeEvent(view(bytes), 0);
  assert.equal(size, bytes.length);
  assert.equal(r.kind, "exec");
  if (r.kind !== "exec") return;
  assert.equal(r.pid, 300);
  assert.ok(r.snapshot);
  assert.equal(r.snapshot.ruid, 1000);
  assert.equal(r.snapshot.euid, 0);
  assert.equal(r.snapshot.ppid, 42);
  assert.equal(r.snapshot.comm, "true");
  assert.deepEqual([...r.snapshot.cmdline], cmdline);
  assert.equal(r.snapshot.exe, "/usr/bin/true");
  assert.equal(r.snapshot.cmdlineTruncated, false);
  assert.equal(r.snapshot.gone, false);
});

Deno.test("decodeEvent() decodes an exec snapshot's cwd, env and cgroup after the exe", () => {
  const bytes = record(RecordKind.exec, [300, 300], {
    flags: RecordFlag.envTruncated,
    snapshot: {
      ruid: 0,
      euid: 0,
      ppid: 1,
      comm: "nginx",
      cmdline: [...new TextEncoder().encode("nginx\0")],
      exe: "/usr/sbin/nginx",
      cwd: "/var/www",
      env: "LANG=C.UTF-8\0EMPTY=\0EQ=a=b\0",
      cgroup: "/system.slice/nginx.service",
    },
  });
  const { record: r, size } = decodeEvent(view(bytes), 0);
  assert.equal(size, bytes.length);
  assert.ok(r.kind === "exec" && r.snapshot !== null);
  assert.equal(r.snapshot.exe, "/usr/sbin/nginx");
  assert.equal(r.snapshot.cwd, "/var/www");
  assert.deepEqual(r.snapshot.env, [["LANG", "C.UTF-8"], ["EMPTY", ""], ["EQ", "a=b"]]);
  assert.equal(r.snapshot.envTruncated, true);
  assert.equal(r.snapshot.cgroup, "/system.slice/nginx.service");
});

Deno.test("decodeEvent() gives null cwd and cgroup and no env when they were not read", () => {
  const bytes = record(RecordKind.exec, [300, 300], {
    snapshot: { ruid: 0, euid: 0, ppid: 1, comm: "x", cmdline: [120, 0] },
  });
  const { record: r } = decodeEvent(view(bytes), 0);
  assert.ok(r.kind === "exec" && r.snapshot !== null);
  assert.equal(r.snapshot.cwd, null);
  assert.equal(r.snapshot.cgroup, null);
  assert.deepEqual(r.snapshot.env, []);
  assert.equal(r.snapshot.envTruncated, false);
});

Deno.test("decodeEvent() rejects an exec record whose cgroup runs past its size", () => {
  const bytes = record(RecordKind.exec, [300, 300], {
    snapshot: { ruid: 0, euid: 0, ppid: 1, comm: "x", cmdline: [120, 0], cgroup: "/a" },
  });
  new DataView(bytes.buffer).setUint16(RecordLayout.cgroupLen, 200, true);
  assert.throws(() => decodeEvent(view(bytes), 0), /Malformed exec record at offset 0/);
});

Deno.test("decodeEvent() reports a truncated cmdline and a vanished process", () => {
  const cut = decodeEvent(
    view(record(RecordKind.exec, [1, 1], {
      flags: RecordFlag.cmdlineTruncated | RecordFlag.noExe,
      snapshot: { ruid: 0, euid: 0, ppid: 1, comm: "x", cmdline: [65, 66] },
    })),
    0,
  ).record;
  assert.ok(cut.kind === "exec" && cut.snapshot?.cmdlineTruncated && cut.snapshot.exe === null);
  const gone = decodeEvent(
    view(record(RecordKind.exec, [2, 2], {
      flags: RecordFlag.gone | RecordFlag.noExe,
      snapshot: { ruid: 0, euid: 0, ppid: -1, comm: "", cmdline: [] },
    })),
    0,
  ).record;
  assert.ok(gone.kind === "exec" && gone.snapshot?.gone && gone.snapshot.ppid === -1);
});

Deno.test("decodeEvent() decodes an exit killed by SIGKILL", () => {
  const { record: r } = decodeEvent(view(record(RecordKind.exit, [7, 7, 9, 17, 1, 1])), 0);
  assert.deepEqual(
    { ...r, cpu: 0, timestampNs: 0n },
    {
      cpu: 0,
      timestampNs: 0n,
      kind: "exit",
      pid: 7,
      tgid: 7,
      exitCode: 9,
      exitSignal: 17,
      parentPid: 1,
      parentTgid: 1,
      usage: null,
    },
  );
});

/** An exit record with a usage block (PC_F_USAGE), byte by byte as libprocconn writes it. */
function exitWithUsage(flags: number, usage: bigint[]): Uint8Array {
  const head = record(RecordKind.exit, [9, 7, 256, 17, 1, 1], { flags });
  const bytes = new Uint8Array(104);
  bytes.set(head);
  const v = new DataView(bytes.buffer);
  v.setUint32(RecordLayout.size, 104, true);
  usage.forEach((x, i) => v.setBigUint64(48 + 8 * i, x, true));
  return bytes;
}

Deno.test("decodeEvent() decodes an exit's usage block: CPU, peak memory, I/O, switches", () => {
  const bytes = exitWithUsage(
    RecordFlag.usage | RecordFlag.usageLast,
    [310_000n, 5_000n, 106_496n, 8192n, 5_000_000_000n, 12n, 3n],
  );
  const { record: r, size } = decodeEvent(view(bytes), 0);
  assert.equal(size, 104);
  assert.ok(r.kind === "exit");
  assert.equal(r.pid, 9);
  assert.equal(r.exitCode, 256);
  assert.deepEqual(r.usage, {
    cpuUserUs: 310_000,
    cpuSysUs: 5_000,
    maxRssKb: 106_496,
    readBytes: 8192,
    writeBytes: 5_000_000_000,
    ctxVoluntary: 12,
    ctxInvoluntary: 3,
    last: true,
  });
  const notLast = decodeEvent(view(exitWithUsage(RecordFlag.usage, [1n])), 0).record;
  assert.ok(notLast.kind === "exit" && notLast.usage?.last === false);
});

Deno.test("decodeEvent() rejects an exit flagged with usage but too short for it", () => {
  const short = record(RecordKind.exit, [9, 7, 0, 17, 1, 1], { flags: RecordFlag.usage });
  assert.throws(() => decodeEvent(view(short), 0), /no room for its usage/);
});

Deno.test("decodeEvent() reads a thread's exit_signal of -1 as signed", () => {
  const { record: r } = decodeEvent(view(record(RecordKind.exit, [8, 7, 0, -1, 1, 1])), 0);
  assert.ok(r.kind === "exit" && r.exitSignal === -1 && r.exitCode === 0);
});

Deno.test("decodeEvent() decodes uid, gid, sid, ptrace, comm and coredump", () => {
  const uid = decodeEvent(view(record(RecordKind.uid, [5, 5, 1000, 0])), 0).record;
  assert.ok(uid.kind === "uid" && uid.ruid === 1000 && uid.euid === 0);
  const gid = decodeEvent(view(record(RecordKind.gid, [5, 5, 100, 101])), 0).record;
  assert.ok(gid.kind === "gid" && gid.rgid === 100 && gid.egid === 101);
  const sid = decodeEvent(view(record(RecordKind.sid, [5, 5])), 0).record;
  assert.ok(sid.kind === "sid" && sid.pid === 5);
  const pt = decodeEvent(view(record(RecordKind.ptrace, [5, 5, 9, 9])), 0).record;
  assert.ok(pt.kind === "ptrace" && pt.tracerPid === 9 && pt.tracerTgid === 9);
  const commBytes = record(RecordKind.comm, [5, 6]);
  commBytes.set(new TextEncoder().encode("worker-1"), RecordLayout.data + 8);
  const comm = decodeEvent(view(commBytes), 0).record;
  assert.ok(comm.kind === "comm" && comm.comm === "worker-1" && comm.tgid === 6);
  const core = decodeEvent(view(record(RecordKind.coredump, [5, 5, 4, 4])), 0).record;
  assert.ok(core.kind === "coredump" && core.parentTgid === 4);
});

Deno.test("decodeEvent() decodes a full 16-byte comm without a NUL", () => {
  const bytes = record(RecordKind.comm, [5, 5]);
  bytes.set(new TextEncoder().encode("abcdefghijklmnop"), RecordLayout.data + 8);
  const comm = decodeEvent(view(bytes), 0).record;
  assert.ok(comm.kind === "comm");
  assert.equal(comm.comm, "abcdefghijklmnop");
});

Deno.test("decodeEvent() decodes lost records from the kernel and the ring", () => {
  const k = decodeEvent(view(record(RecordKind.lost, [1, 42])), 0).record;
  assert.ok(k.kind === "lost" && k.where === "kernel" && k.count === 42);
  const b = decodeEvent(view(record(RecordKind.lost, [2, 7])), 0).record;
  assert.ok(b.kind === "lost" && b.where === "buffer" && b.count === 7);
  const u = decodeEvent(view(record(RecordKind.lost, [3, 5])), 0).record;
  assert.ok(u.kind === "lost" && u.where === "usage" && u.count === 5);
  assert.throws(() => decodeEvent(view(record(RecordKind.lost, [4, 1])), 0), TypeError);
});

Deno.test("decodeEvent() throws TypeError for an unknown kind", () => {
  assert.throws(
    () => decodeEvent(view(record(0x8, [1, 1])), 0),
    (e: unknown) => e instanceof TypeError && /Unknown record kind 0x00000008/.test(e.message),
  );
});

Deno.test("decodeEvent() throws RangeError for truncated buffers", () => {
  const full = record(RecordKind.fork, [1, 1, 2, 2]);
  assert.throws(() => decodeEvent(view(full.subarray(0, 20)), 0), RangeError);
  const exec = record(RecordKind.exec, [1, 1], {
    snapshot: {
      ruid: 0,
      euid: 0,
      ppid: 1,
      comm: "a",
      cmdline: [...new TextEncoder().encode("a b c d e f g h")],
    },
  });
  assert.throws(() => decodeEvent(view(exec.subarray(0, exec.length - 8)), 0), RangeError);
  assert.throws(() => decodeEvent(view(full), 8), RangeError);
});

Deno.test("decodeEvent() rejects a malformed size or a snapshot that overflows its record", () => {
  const bad = record(RecordKind.fork, [1, 1, 2, 2]);
  new DataView(bad.buffer).setUint32(0, 44, true);
  assert.throws(() => decodeEvent(view(bad), 0), TypeError);
  const exec = record(RecordKind.exec, [1, 1], {
    snapshot: { ruid: 0, euid: 0, ppid: 1, comm: "a", cmdline: [65] },
  });
  new DataView(exec.buffer).setUint16(RecordLayout.cmdlineLen, 500, true);
  assert.throws(() => decodeEvent(view(exec), 0), TypeError);
});

Deno.test("decodeBatch() walks records of different sizes in order", () => {
  const batch = concat([
    record(RecordKind.fork, [1, 1, 2, 2]),
    record(RecordKind.exec, [2, 2], {
      snapshot: {
        ruid: 0,
        euid: 0,
        ppid: 1,
        comm: "sh",
        cmdline: [...new TextEncoder().encode("sh\0-c\0x\0")],
      },
    }),
    record(RecordKind.exit, [2, 2, 256, 17, 1, 1]),
  ]);
  const kinds: string[] = [];
  decodeBatch(view(concat([batch, new Uint8Array(64)])), batch.length, (r) => kinds.push(r.kind));
  assert.deepEqual(kinds, ["fork", "exec", "exit"]);
});

Deno.test("RecordLayout matches struct pc_record in native/procconn.h", () => {
  const header = Deno.readTextFileSync(new URL("../native/procconn.h", import.meta.url));
  const struct = /^struct pc_record \{$([\s\S]*?)^\};/m.exec(header)?.[1] ?? "";
  const fields = struct.matchAll(/^\s+\S+ (\w+)(?:\[\d+\])?;\s+\/\* *(\d+)/gm);
  const offsets = [...fields].map((m) => [m[1], Number(m[2])]);
  const expected: Record<string, number> = {
    size: RecordLayout.size,
    what: RecordLayout.what,
    cpu: RecordLayout.cpu,
    flags: RecordLayout.flags,
    timestamp_ns: RecordLayout.timestampNs,
    data: RecordLayout.data,
    ruid: RecordLayout.ruid,
    euid: RecordLayout.euid,
    ppid: RecordLayout.ppid,
    cmdline_len: RecordLayout.cmdlineLen,
    exe_len: RecordLayout.exeLen,
    comm: RecordLayout.comm,
    cwd_len: RecordLayout.cwdLen,
    env_len: RecordLayout.envLen,
    cgroup_len: RecordLayout.cgroupLen,
    reserved: 86,
  };
  assert.deepEqual(Object.fromEntries(offsets), expected);
  const define = (name: string) => Number(new RegExp(`#define ${name} (\\d+)u`).exec(header)?.[1]);
  assert.equal(define("PC_RECORD_HEAD_SIZE"), RecordLayout.headSize);
  assert.equal(define("PC_RECORD_SNAPSHOT_SIZE"), RecordLayout.snapshotSize);
  assert.equal(
    RecordLayout.maxSize,
    define("PC_RECORD_SNAPSHOT_SIZE") + define("PC_CMDLINE_MAX") + define("PC_EXE_MAX") +
      define("PC_CWD_MAX") + define("PC_ENV_MAX") + define("PC_CGROUP_MAX"),
  );
  assert.match(header, /#define PC_F_ENV_TRUNCATED 0x40u/);
  assert.equal(RecordFlag.envTruncated, 0x40);
});

Deno.test("RecordLayout's usage offsets match struct pc_usage in native/procconn.h", () => {
  const header = Deno.readTextFileSync(new URL("../native/procconn.h", import.meta.url));
  const struct = /^struct pc_usage \{$([\s\S]*?)^\};/m.exec(header)?.[1] ?? "";
  const fields = struct.matchAll(/^\s+\S+ (\w+);\s+\/\* *(\d+)/gm);
  const offsets = Object.fromEntries([...fields].map((m) => [m[1], Number(m[2])]));
  assert.deepEqual(offsets, {
    cpu_user_us: RecordLayout.cpuUserUs,
    cpu_sys_us: RecordLayout.cpuSysUs,
    max_rss_kb: RecordLayout.maxRssKb,
    read_bytes: RecordLayout.readBytes,
    write_bytes: RecordLayout.writeBytes,
    ctx_voluntary: RecordLayout.ctxVoluntary,
    ctx_involuntary: RecordLayout.ctxInvoluntary,
  });
  const define = (name: string) =>
    Number(new RegExp(`#define ${name} (0x)?(\\w+)u`).exec(header)?.[2]);
  assert.equal(define("PC_RECORD_USAGE_SIZE"), RecordLayout.usageSize);
  assert.equal(define("PC_LOST_USAGE"), 3);
  const flag = (name: string) => Number(new RegExp(`#define ${name} (0x\\w+)u`).exec(header)?.[1]);
  assert.equal(flag("PC_F_USAGE"), RecordFlag.usage);
  assert.equal(flag("PC_F_USAGE_LAST"), RecordFlag.usageLast);
});
