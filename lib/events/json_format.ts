/**
 * The JSON lines format: one event, one JSON object, one line (SPEC §4).
 *
 * @module
 */
import type { ProcEvent } from "./event.ts";

/**
 * Formats an event as one JSON object followed by `"\n"`.
 *
 * The output is always valid JSON on exactly one line, and always valid UTF-8 once encoded:
 * - `JSON.stringify` escapes `"`, `\` and every control character below U+0020 (so a newline
 *   inside a cmdline is written as `\n`, never as a raw line break);
 * - it escapes lone surrogates as `\udXXX` (well-formed JSON.stringify, ES2019), so nothing
 *   unencodable reaches the UTF-8 encoder (cmdlines are already U+FFFD-clean anyway, see
 *   `decodeCmdline`);
 * - U+2028/U+2029 stay raw: they are legal in JSON and are not `"\n"`, so line framing holds.
 *
 * Keys keep the order the producer built the object in (`event` first, then the schema
 * order), because `JSON.stringify` follows insertion order for string keys. Fields that are
 * `undefined` are left out, which is how optional fields (`thread`, `duration_s`) disappear.
 */
export function formatJson(ev: ProcEvent): string {
  return JSON.stringify(ev) + "\n";
}
