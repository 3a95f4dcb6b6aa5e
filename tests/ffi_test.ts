import assert from "node:assert/strict";
import { optionBytes } from "../lib/kernel/ffi.ts";

Deno.test("optionBytes() lays out struct pc_options with no_usage, the snapshot reads and env names", () => {
  const bytes = optionBytes({
    eventMask: 0x80000003,
    ackTimeoutMs: 500,
    realtime: false,
    usage: false,
    snapshot: { cwd: true, cgroup: true, env: ["LANG", "TERM"] },
  });
  const v = new DataView(bytes.buffer);
  assert.equal(bytes.length, 284);
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((i) => v.getUint32(4 * i, true)), [
    0x80000003,
    0,
    0,
    1,
    500,
    1, // no_usage
  ]);
  assert.equal(v.getUint32(24, true), 0x1 | 0x2 | 0x4); // PC_READ_CWD | CGROUP | ENV
  assert.equal(new TextDecoder().decode(bytes.subarray(28, 39)), "LANG\0TERM\0\0");
});

Deno.test("optionBytes() asks for no extra reads by default, and no env read without names", () => {
  const none = new DataView(optionBytes({}).buffer);
  assert.equal(none.getUint32(20, true), 0, "usage on by default");
  assert.equal(none.getUint32(24, true), 0);
  const cgroupOnly = optionBytes({ snapshot: { cgroup: true, env: [] } });
  assert.equal(new DataView(cgroupOnly.buffer).getUint32(24, true), 0x2);
});

Deno.test("optionBytes() refuses env names that do not fit struct pc_options", () => {
  assert.throws(
    () => optionBytes({ snapshot: { env: ["N".repeat(300)] } }),
    /The environment variable names take 301 bytes, over 256/,
  );
});
