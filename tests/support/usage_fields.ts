/**
 * The usage fields an exit event carries after `duration_s`, in schema order (SPEC §12),
 * for the tests that check them: the enricher's unit tests and the live ones.
 *
 * @module
 */

/** The exit event's usage fields, in the order they are written. */
export const USAGE_FIELDS = [
  "cpu_user_s",
  "cpu_sys_s",
  "max_rss_kb",
  "read_bytes",
  "write_bytes",
  "ctx_voluntary",
  "ctx_involuntary",
] as const;
