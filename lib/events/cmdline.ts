/**
 * Turning the raw bytes of `/proc/PID/cmdline` into the `cmdline` string of an event.
 *
 * @module
 */

/**
 * Bytes of `/proc/PID/cmdline` kept per event. Must equal `PC_CMDLINE_MAX` in
 * `native/procconn.h`: the C reader cuts the snapshot there and sets
 * `PC_F_CMDLINE_TRUNCATED`, which becomes `cmdline_truncated: true` (SPEC §4).
 */
export const CMDLINE_LIMIT = 4096;

/**
 * One decoder for every call: this runs for every exec at storm rates (~20k/s), and a
 * TextDecoder per call would be garbage for nothing. Non-fatal, so invalid UTF-8 becomes
 * U+FFFD instead of throwing. `ignoreBOM: true` keeps a leading EF BB BF as U+FEFF instead of
 * silently stripping it: the string must show what the process's arguments really are.
 */
const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

/**
 * Decodes `/proc/PID/cmdline` bytes into one string: the NUL-separated arguments joined by
 * single spaces, trailing NULs dropped.
 *
 * - Every inner NUL becomes one space, so empty arguments stay visible as extra spaces
 *   (argv `["a", "", "b"]` → `"a  b"`): the string mirrors the bytes, nothing is collapsed.
 * - A process that rewrote its cmdline without NULs (`"nginx: worker process"`) is kept as is.
 * - Invalid UTF-8 is replaced by U+FFFD, never passed through, so the result is always
 *   well-formed (no lone surrogates). A NUL byte is never part of a multi-byte sequence, so
 *   decoding first and replacing NULs after is exact.
 * - Bytes cut at {@link CMDLINE_LIMIT} in the middle of a multi-byte character leave a
 *   U+FFFD at the end; that is expected (the event carries `cmdline_truncated`).
 * - Empty input (or only NULs, e.g. a zombie or kernel thread) → `""`. Never throws.
 */
export function decodeCmdline(bytes: Uint8Array): string {
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0) end--;
  if (end === 0) return "";
  const ascii = asciiCmdline(bytes, end);
  if (ascii !== null) return ascii;
  // subarray is a view, not a copy; the only other allocations are the result strings.
  const text = decoder.decode(end === bytes.length ? bytes : bytes.subarray(0, end));
  // Most rewritten or single-argument cmdlines have no NUL: skip the replace entirely.
  return text.includes("\0") ? text.replaceAll("\0", " ") : text;
}

/** Room for an ASCII cmdline with its NULs made spaces: the snapshot's whole limit. */
const scratch = new Uint8Array(CMDLINE_LIMIT);

/**
 * The first `end` bytes as the cmdline string when they are all ASCII, else null. Nearly
 * every cmdline is: built with `String.fromCharCode` it skips the call into the runtime's
 * UTF-8 decoder and the replace, which at a few hundred execs a second run cold and cost
 * more than the rest of the exec's decoding (profile, 200 execs/s).
 */
function asciiCmdline(bytes: Uint8Array, end: number): string | null {
  if (end > scratch.length) return null;
  for (let i = 0; i < end; i++) {
    const byte = bytes[i];
    if (byte >= 0x80) return null;
    scratch[i] = byte === 0 ? 0x20 : byte;
  }
  return String.fromCharCode.apply(null, scratch.subarray(0, end) as unknown as number[]);
}
