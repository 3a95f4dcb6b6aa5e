import assert from "node:assert/strict";
import fc from "fast-check";
import { CMDLINE_LIMIT, decodeCmdline } from "../lib/events/cmdline.ts";

const enc = new TextEncoder();

/** Bytes from a mix of strings (UTF-8 encoded) and raw byte values. */
function bytes(...parts: (string | number)[]): Uint8Array {
  const out: number[] = [];
  for (const p of parts) {
    if (typeof p === "number") out.push(p);
    else out.push(...enc.encode(p));
  }
  return new Uint8Array(out);
}

Deno.test("decodeCmdline() joins NUL-separated arguments with single spaces", () => {
  assert.equal(decodeCmdline(bytes("ls", 0, "-l", 0, "/tmp", 0)), "ls -l /tmp");
});

Deno.test("decodeCmdline() drops all trailing NULs", () => {
  assert.equal(decodeCmdline(bytes("sleep", 0, "10", 0, 0, 0)), "sleep 10");
});

Deno.test("decodeCmdline() accepts input without a trailing NUL (cut at the limit)", () => {
  assert.equal(decodeCmdline(bytes("a", 0, "bc")), "a bc");
});

Deno.test("decodeCmdline() keeps a rewritten cmdline with spaces and no NULs as is", () => {
  assert.equal(decodeCmdline(bytes("nginx: worker process")), "nginx: worker process");
  assert.equal(decodeCmdline(bytes("nginx: worker process", 0)), "nginx: worker process");
});

Deno.test("decodeCmdline() keeps embedded spaces inside an argument", () => {
  assert.equal(decodeCmdline(bytes("sh", 0, "-c", 0, "echo a  b", 0)), "sh -c echo a  b");
});

Deno.test("decodeCmdline() keeps empty arguments as extra spaces", () => {
  assert.equal(decodeCmdline(bytes("a", 0, 0, "b", 0)), "a  b");
});

Deno.test("decodeCmdline() returns an empty string for empty or all-NUL input", () => {
  assert.equal(decodeCmdline(new Uint8Array(0)), "");
  assert.equal(decodeCmdline(bytes(0, 0)), "");
});

Deno.test("decodeCmdline() decodes valid multi-byte UTF-8", () => {
  assert.equal(decodeCmdline(bytes("echo", 0, "héllo ✓ 😀", 0)), "echo héllo ✓ 😀");
});

Deno.test("decodeCmdline() replaces bytes 0xff 0xfe with U+FFFD", () => {
  assert.equal(decodeCmdline(bytes("x", 0, 0xff, 0xfe, 0)), "x \uFFFD\uFFFD");
});

Deno.test("decodeCmdline() replaces a lone continuation byte with U+FFFD", () => {
  assert.equal(decodeCmdline(bytes("a", 0x80, "b", 0)), "a\uFFFDb");
});

Deno.test("decodeCmdline() replaces a truncated 3-byte sequence before a NUL", () => {
  // "€" is E2 82 AC; only the first two bytes, then the argument ends.
  assert.equal(decodeCmdline(bytes("a", 0xe2, 0x82, 0, "b", 0)), "a\uFFFD b");
});

Deno.test("decodeCmdline() replaces a sequence cut at the end of the input", () => {
  assert.equal(decodeCmdline(bytes("abc", 0xe2, 0x82)), "abc\uFFFD");
});

Deno.test("decodeCmdline() replaces encoded surrogates so the result is well-formed", () => {
  const s = decodeCmdline(bytes("a", 0xed, 0xa0, 0x80, "b"));
  assert.ok(s.isWellFormed(), JSON.stringify(s));
  assert.ok(s.startsWith("a\uFFFD") && s.endsWith("b"), JSON.stringify(s));
});

Deno.test("decodeCmdline() keeps a leading byte order mark", () => {
  assert.equal(decodeCmdline(bytes(0xef, 0xbb, 0xbf, "x", 0)), "\uFEFFx");
});

Deno.test("decodeCmdline() does not modify its input and can be called repeatedly", () => {
  const input = bytes("a", 0, "b", 0);
  const copy = input.slice();
  assert.equal(decodeCmdline(input), "a b");
  assert.equal(decodeCmdline(input), "a b");
  assert.deepEqual(input, copy);
});

Deno.test("CMDLINE_LIMIT matches PC_CMDLINE_MAX in native/procconn.h", async () => {
  const header = await Deno.readTextFile(new URL("../native/procconn.h", import.meta.url));
  const m = /#define\s+PC_CMDLINE_MAX\s+(\d+)u?/.exec(header);
  assert.ok(m, "PC_CMDLINE_MAX not found in procconn.h");
  assert.equal(CMDLINE_LIMIT, Number(m[1]));
});

Deno.test("decodeCmdline() gives what decoding then replacing NULs gives, for any bytes (property)", () => {
  const reference = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
  // Mostly ASCII with NULs (the fast path), and any byte at all (the decoder's).
  const byte = fc.oneof(
    fc.integer({ min: 0, max: 0x7f }),
    fc.constant(0),
    fc.integer({ min: 0, max: 255 }),
  );
  fc.assert(
    fc.property(fc.array(byte, { maxLength: CMDLINE_LIMIT + 8 }), (values) => {
      const bytes = Uint8Array.from(values);
      let end = bytes.length;
      while (end > 0 && bytes[end - 1] === 0) end--;
      const expected = reference.decode(bytes.subarray(0, end)).replaceAll("\0", " ");
      assert.equal(decodeCmdline(bytes), expected);
    }),
    { numRuns: 2000 },
  );
});
