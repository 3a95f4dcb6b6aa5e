/**
 * Property tests of lib/events/json_format.ts with fast-check: any event, with any cmdline (raw
 * /proc bytes through decodeCmdline, or any JavaScript string, lone surrogates included),
 * is exactly one line of valid UTF-8 JSON that parses back to the event.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeCmdline } from "../lib/events/cmdline.ts";
import type { ProcEvent } from "../lib/events/event.ts";
import { formatJson } from "../lib/events/json_format.ts";

/** Any UTF-16 string: code units of every kind, so lone surrogates and controls too. */
const anyString = fc.oneof(
  fc.string({ unit: "binary", maxLength: 200 }),
  fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 200 }).map((units) =>
    String.fromCharCode(...units)
  ),
  fc.constantFrom(
    "",
    "\n",
    "\r\n",
    '"',
    "\\",
    "\u2028\u2029",
    "\ud800",
    "\udfff\ud800",
    "\u0000\u001f\u007f",
    "😀",
  ),
);

/** What a cmdline can be: decoded /proc bytes (up to the 4096 kept), or any string. */
const cmdline = fc.oneof(
  fc.uint8Array({ maxLength: 4096 }).map(decodeCmdline),
  fc.uint8Array({ maxLength: 64 }).map(decodeCmdline),
  anyString,
);

const id = fc.integer({ min: 0, max: 0xffffffff });
const pid = fc.integer({ min: 1, max: 4194304 });
const time = fc.date({
  min: new Date("1970-01-01T00:00:00Z"),
  max: new Date("2200-01-01T00:00:00Z"),
  noInvalidDate: true,
}).map((d) => d.toISOString().replace("Z", "000Z"));
const uid = fc.option(id, { nil: null });
const flag = fc.option(fc.constant(true as const), { nil: undefined });

const event: fc.Arbitrary<ProcEvent> = fc.oneof(
  fc.record({
    event: fc.constant("fork" as const),
    time,
    child_pid: pid,
    parent_pid: pid,
    child_tgid: pid,
    parent_tgid: pid,
    user: anyString,
    uid,
    cmdline,
    cmdline_truncated: flag,
    thread: flag,
  }),
  fc.record({
    event: fc.constant("exec" as const),
    time,
    pid,
    user: anyString,
    uid,
    ppid: fc.option(pid, { nil: null }),
    cmdline,
    cmdline_truncated: flag,
    comm: fc.option(anyString, { nil: undefined }),
    exe: fc.option(anyString, { nil: undefined }),
  }),
  fc.record({
    event: fc.constant("exit" as const),
    time,
    pid,
    exit_code: id,
    exit_status: fc.option(fc.integer({ min: 0, max: 255 }), { nil: undefined }),
    signal: fc.option(anyString, { nil: undefined }),
    core_dumped: fc.boolean(),
    user: anyString,
    uid,
    ppid: pid,
    cmdline,
    cmdline_truncated: flag,
    duration_s: fc.option(fc.double({ min: 0, max: 1e9, noNaN: true }).map((x) => x + 0), {
      nil: undefined,
    }),
    thread: flag,
  }),
  fc.record({
    event: fc.constant("uid" as const),
    time,
    pid,
    ruid: id,
    euid: id,
    user: anyString,
  }),
  fc.record({ event: fc.constant("comm" as const), time, pid, comm: anyString }),
  fc.record({
    event: fc.constant("lost" as const),
    time,
    count: fc.integer({ min: 1, max: 0xffffffff }),
    where: fc.constantFrom("kernel" as const, "buffer" as const),
  }),
);

/** The event as JSON.parse gives it back: fields that are undefined are left out. */
function withoutUndefined(ev: ProcEvent): Record<string, unknown> {
  return Object.fromEntries(Object.entries(ev).filter(([, v]) => v !== undefined));
}

Deno.test("formatJson() writes exactly one valid UTF-8 JSON line that parses back (property)", () => {
  const fatal = new TextDecoder("utf-8", { fatal: true });
  fc.assert(
    fc.property(event, (ev) => {
      const line = formatJson(ev);
      assert.ok(line.endsWith("\n"), "ends with a newline");
      assert.equal(line.indexOf("\n"), line.length - 1, "one line");
      assert.ok(!line.includes("\r"), "no raw carriage return");
      // No lone surrogate: the UTF-8 encoding is lossless, and decodes strictly.
      assert.ok(line.isWellFormed(), "well-formed UTF-16, so valid UTF-8 once encoded");
      assert.equal(fatal.decode(new TextEncoder().encode(line)), line);
      assert.deepEqual(JSON.parse(line), withoutUndefined(ev));
      // The key order is the producer's, "event" first.
      assert.ok(line.startsWith('{"event":'));
    }),
    { numRuns: 1000 },
  );
});

Deno.test("decodeCmdline() output is well-formed and has no NUL, whatever the bytes (property)", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 5000 }), (bytes) => {
      const text = decodeCmdline(bytes);
      assert.ok(text.isWellFormed());
      assert.ok(!text.includes("\0"));
      // Only trailing NULs are dropped; every other byte is still there in some form.
      assert.equal(text === "", bytes.every((b) => b === 0));
    }),
    { numRuns: 500 },
  );
});
