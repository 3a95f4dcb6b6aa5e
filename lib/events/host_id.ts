/**
 * The host name events carry (`host`) and NATS subjects are built from (SPEC §11).
 *
 * A NATS subject token may not contain `.`, `*`, `>` or white space, and a host id that
 * changes spelling between runs would split one host's events over two subjects: so the id
 * is the hostname with every character outside `[A-Za-z0-9_-]` replaced by `_`, or what
 * `--host-id` gives, checked to be safe already.
 *
 * @module
 */

/** Characters a host id and each subject prefix token may use. */
export const SUBJECT_TOKEN = /^[A-Za-z0-9_-]+$/;

/** Longest host id accepted, in characters. */
export const MAX_HOST_ID = 64;

/** `name` made into one subject token: "web1.example.com" becomes "web1_example_com". */
export function subjectSafe(name: string): string {
  const safe = name.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, MAX_HOST_ID);
  return safe === "" ? "unknown" : safe;
}

/** This machine's host id: its hostname, made subject-safe. */
export function defaultHostId(): string {
  return subjectSafe(Deno.hostname());
}

/** Whether `id` can be a host id as given (one subject token, not too long). */
export function isHostId(id: string): boolean {
  return id.length <= MAX_HOST_ID && SUBJECT_TOKEN.test(id);
}

/** Whether `prefix` can start every subject: dot-separated tokens of safe characters. */
export function isSubjectPrefix(prefix: string): boolean {
  return prefix.split(".").every((token) => SUBJECT_TOKEN.test(token));
}
