/**
 * Property tests of lib/kernel/record.ts with fast-check: decodeBatch() on arbitrary bytes, and
 * on records laid out as native/procconn.h says.
 */
import { concat } from "./support/bytes.ts";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeBatch,
  decodeText,
  LostCode,
  type RawRecord,
  RecordFlag,
  RecordKind,
  RecordLayout,
} from "../lib/kernel/record.ts";

const L = RecordLayout;

/** The errors record.ts throws itself (its @throws), told apart from a DataView's own. */
const OWN_ERROR =
  /^(Truncated record at offset \d+|Malformed record at offset \d+|Malformed (?:exec|exit) record at offset \d+|Unknown record kind 0x[0-9a-f]{8} at offset \d+|Unknown loss location \d+ in record at offset \d+)/;

/** Decodes `length` bytes of `view`; the records, or the error it threw. */
function decodeAll(view: DataView, length: number): { records: RawRecord[]; error?: unknown } {
  const records: RawRecord[] = [];
  try {
    decodeBatch(view, length, (r) => records.push(r));
    return { records };
  } catch (error) {
    return { records, error };
  }
}

function assertOwnError(error: unknown): void {
  assert.ok(
    error instanceof RangeError || error instanceof TypeError,
    `not a decode error: ${error}`,
  );
  assert.match(error.message, OWN_ERROR);
  assert.ok(!error.message.includes("\n"), "one line");
}

const KINDS = Object.values(RecordKind);

/** A record head (48 bytes) with a plausible size and kind, the rest arbitrary. */
const head = fc.record({
  size: fc.oneof(
    fc.constantFrom(L.headSize, L.snapshotSize, L.maxSize, 0, 8, L.maxSize + 8),
    fc.integer({ min: 0, max: L.maxSize + 64 }).map((n) => n & ~7),
    fc.nat(),
  ),
  what: fc.oneof(fc.constantFrom(...KINDS), fc.constant(0), fc.nat()),
  flags: fc.oneof(fc.integer({ min: 0, max: 15 }), fc.nat()),
  rest: fc.uint8Array({ minLength: L.headSize, maxLength: L.headSize }),
  snapshot: fc.record({
    cmdlineLen: fc.oneof(fc.integer({ min: 0, max: 4096 }), fc.integer({ min: 0, max: 65535 })),
    exeLen: fc.oneof(fc.integer({ min: 0, max: 1024 }), fc.integer({ min: 0, max: 65535 })),
  }),
  lostWhere: fc.oneof(fc.constantFrom(LostCode.kernel, LostCode.buffer), fc.nat()),
});

/** Bytes that look like a batch: heads with plausible fields, then arbitrary tails. */
const batchLike = fc.array(fc.tuple(head, fc.uint8Array({ maxLength: 200 })), {
  maxLength: 6,
}).map((parts) => {
  const chunks: Uint8Array[] = [];
  for (const [h, tail] of parts) {
    const bytes = new Uint8Array(L.snapshotSize + tail.length);
    bytes.set(h.rest, 0);
    bytes.set(tail, L.snapshotSize);
    const v = new DataView(bytes.buffer);
    v.setUint32(L.size, h.size >>> 0, true);
    v.setUint32(L.what, h.what >>> 0, true);
    v.setUint32(L.flags, h.flags >>> 0, true);
    v.setUint32(L.data, h.lostWhere >>> 0, true);
    v.setUint16(L.cmdlineLen, h.snapshot.cmdlineLen, true);
    v.setUint16(L.exeLen, h.snapshot.exeLen, true);
    chunks.push(bytes);
  }
  return concat(chunks);
});

/** Arbitrary bytes at an arbitrary offset of a larger buffer, and a length within them. */
const placedBytes = fc.tuple(
  fc.oneof(fc.uint8Array({ maxLength: 2 * L.maxSize }), batchLike),
  fc.nat({ max: 16 }),
  fc.nat({ max: 16 }),
  fc.boolean(),
).chain(([bytes, before, after, whole]) =>
  fc.record({
    bytes: fc.constant(bytes),
    before: fc.constant(before),
    after: fc.constant(after),
    length: whole ? fc.constant(bytes.length) : fc.nat({ max: bytes.length }),
  })
);

Deno.test("decodeBatch() never throws anything but a decode error (property)", () => {
  fc.assert(
    fc.property(placedBytes, ({ bytes, before, after, length }) => {
      const buffer = new Uint8Array(before + bytes.length + after);
      buffer.fill(0xa5);
      buffer.set(bytes, before);
      const view = new DataView(buffer.buffer, before, bytes.length);
      const { records, error } = decodeAll(view, length);
      if (error !== undefined) assertOwnError(error);
      // Each record takes at least a head: the walk always ends, and soon.
      assert.ok(records.length * L.headSize <= length);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("decodeBatch() never reads outside [0, length) of its view (property)", () => {
  fc.assert(
    fc.property(placedBytes, ({ bytes, length }) => {
      // The same bytes followed by garbage or by zeros must decode alike up to `length`.
      const a = new Uint8Array(bytes.length + 64).fill(0xff);
      const b = new Uint8Array(bytes.length + 64);
      a.set(bytes.subarray(0, length));
      b.set(bytes.subarray(0, length));
      const ra = decodeAll(new DataView(a.buffer), length);
      const rb = decodeAll(new DataView(b.buffer), length);
      assert.deepEqual(
        ra.records.map(withoutViews),
        rb.records.map(withoutViews),
      );
      assert.equal(String(ra.error), String(rb.error));
    }),
    { numRuns: 1000 },
  );
});

/** A record with its exec snapshot's byte view copied out, for comparisons. */
function withoutViews(r: RawRecord): unknown {
  if (r.kind === "exec" && r.snapshot) {
    return { ...r, snapshot: { ...r.snapshot, cmdline: [...r.snapshot.cmdline] } };
  }
  return r;
}

/** What a record carries, to lay it out and to compare with what comes back. */
interface Spec {
  what: number;
  cpu: number;
  ts: bigint;
  data: number[];
  snapshot?: {
    flags: number;
    ruid: number;
    euid: number;
    ppid: number;
    comm: Uint8Array;
    cmdline: Uint8Array;
    exe: Uint8Array;
  };
}

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const commBytes = fc.uint8Array({ maxLength: 15 }).map((b) => b.map((x) => x === 0 ? 1 : x));

const spec: fc.Arbitrary<Spec> = fc.oneof(
  fc.record({
    what: fc.constantFrom(...KINDS.filter((k) => k !== RecordKind.exec && k !== RecordKind.lost)),
    cpu: u32,
    ts: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    data: fc.array(u32, { minLength: 6, maxLength: 6 }),
  }),
  fc.record({
    what: fc.constant(RecordKind.lost),
    cpu: u32,
    ts: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    data: fc.tuple(fc.constantFrom(LostCode.kernel, LostCode.buffer), u32).map((d) => [
      ...d,
      0,
      0,
      0,
      0,
    ]),
  }),
  fc.record({
    what: fc.constant(RecordKind.exec),
    cpu: u32,
    ts: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    data: fc.array(u32, { minLength: 6, maxLength: 6 }),
    snapshot: fc.option(
      fc.record({
        flags: fc.integer({ min: 0, max: 15 }).map((f) => f & ~RecordFlag.snapshot),
        ruid: u32,
        euid: u32,
        ppid: fc.integer({ min: -1, max: 0x7fffffff }),
        comm: commBytes,
        cmdline: fc.uint8Array({ maxLength: 4096 }),
        exe: fc.uint8Array({ maxLength: 1024 }),
      }),
      { nil: undefined },
    ),
  }),
);

/** Lays a record out as procconn.c does (struct pc_record, 8-byte aligned). */
function layOut(s: Spec): Uint8Array {
  const snap = s.snapshot;
  const raw = snap ? L.snapshotSize + snap.cmdline.length + snap.exe.length : L.headSize;
  const size = Math.ceil(raw / 8) * 8;
  const bytes = new Uint8Array(size);
  const v = new DataView(bytes.buffer);
  v.setUint32(L.size, size, true);
  v.setUint32(L.what, s.what, true);
  v.setUint32(L.cpu, s.cpu, true);
  v.setUint32(L.flags, snap ? snap.flags | RecordFlag.snapshot : 0, true);
  v.setBigUint64(L.timestampNs, s.ts, true);
  s.data.forEach((x, i) => v.setUint32(L.data + 4 * i, x, true));
  if (snap) {
    v.setUint32(L.ruid, snap.ruid, true);
    v.setUint32(L.euid, snap.euid, true);
    v.setInt32(L.ppid, snap.ppid, true);
    v.setUint16(L.cmdlineLen, snap.cmdline.length, true);
    v.setUint16(L.exeLen, snap.exe.length, true);
    bytes.set(snap.comm, L.comm);
    bytes.set(snap.cmdline, L.snapshotSize);
    bytes.set(snap.exe, L.snapshotSize + snap.cmdline.length);
  }
  return bytes;
}

const utf8 = new TextDecoder();

/** Checks that `r` says what `s` put in. */
function assertDecodedAs(r: RawRecord, s: Spec): void {
  const d = s.data;
  assert.equal(r.cpu, s.cpu);
  assert.equal(r.timestampNs, s.ts);
  assert.equal(RecordKind[r.kind], s.what);
  switch (r.kind) {
    case "fork":
      assert.deepEqual([r.parentPid, r.parentTgid, r.childPid, r.childTgid], d.slice(0, 4));
      break;
    case "uid":
      assert.deepEqual([r.pid, r.tgid, r.ruid, r.euid], d.slice(0, 4));
      break;
    case "gid":
      assert.deepEqual([r.pid, r.tgid, r.rgid, r.egid], d.slice(0, 4));
      break;
    case "sid":
      assert.deepEqual([r.pid, r.tgid], d.slice(0, 2));
      break;
    case "ptrace":
      assert.deepEqual([r.pid, r.tgid, r.tracerPid, r.tracerTgid], d.slice(0, 4));
      break;
    case "coredump":
      assert.deepEqual([r.pid, r.tgid, r.parentPid, r.parentTgid], d.slice(0, 4));
      break;
    case "exit":
      assert.deepEqual(
        [r.pid, r.tgid, r.exitCode, r.exitSignal >>> 0, r.parentPid, r.parentTgid],
        d,
      );
      break;
    case "comm": {
      const bytes = new Uint8Array(new Uint32Array(d.slice(2, 6)).buffer);
      const end = bytes.indexOf(0);
      assert.equal(r.comm, utf8.decode(end < 0 ? bytes : bytes.subarray(0, end)));
      break;
    }
    case "lost":
      assert.equal(r.where, d[0] === LostCode.kernel ? "kernel" : "buffer");
      assert.equal(r.count, d[1]);
      break;
    case "exec": {
      assert.deepEqual([r.pid, r.tgid], d.slice(0, 2));
      const snap = s.snapshot;
      if (!snap) {
        assert.equal(r.snapshot, null);
        break;
      }
      assert.ok(r.snapshot);
      assert.equal(r.snapshot.ruid, snap.ruid);
      assert.equal(r.snapshot.euid, snap.euid);
      assert.equal(r.snapshot.ppid, snap.ppid);
      assert.equal(r.snapshot.comm, utf8.decode(snap.comm));
      assert.deepEqual([...r.snapshot.cmdline], [...snap.cmdline]);
      assert.equal(r.snapshot.cmdlineTruncated, (snap.flags & RecordFlag.cmdlineTruncated) !== 0);
      assert.equal(r.snapshot.gone, (snap.flags & RecordFlag.gone) !== 0);
      const exe = (snap.flags & RecordFlag.noExe) !== 0 || snap.exe.length === 0
        ? null
        : utf8.decode(snap.exe);
      assert.equal(r.snapshot.exe, exe);
      break;
    }
  }
}

Deno.test("decodeBatch() gives back every field of records laid out as procconn.h says (property)", () => {
  fc.assert(
    fc.property(fc.array(spec, { maxLength: 8 }), fc.nat({ max: 7 }), (specs, before) => {
      const batch = concat(specs.map(layOut));
      // At any 8-aligned place of a larger buffer, as in a pc_take() buffer.
      const buffer = new Uint8Array(before * 8 + batch.length + 8).fill(0xee);
      buffer.set(batch, before * 8);
      const got: RawRecord[] = [];
      decodeBatch(new DataView(buffer.buffer, before * 8), batch.length, (r) => got.push(r));
      assert.equal(got.length, specs.length);
      got.forEach((r, i) => assertDecodedAs(r, specs[i]));
    }),
    { numRuns: 500 },
  );
});

Deno.test("decodeText() gives what a TextDecoder gives, for any bytes (property)", () => {
  const reference = new TextDecoder("utf-8");
  const byte = fc.oneof(fc.integer({ min: 0, max: 0x7f }), fc.integer({ min: 0, max: 255 }));
  fc.assert(
    fc.property(fc.array(byte, { maxLength: 2048 }), (values) => {
      const bytes = Uint8Array.from(values);
      assert.equal(decodeText(bytes), reference.decode(bytes));
    }),
    { numRuns: 2000 },
  );
});
