/**
 * The one Deno release procMonitor is tested on, and the check that refuses any other.
 *
 * The hub relies on `close()` cancelling a write in progress, which only some Deno 2.x
 * releases do: on another release a kicked client could keep its file descriptor and
 * SIGTERM could spin. scripts/deno.sh installs this release; a test keeps the two in step.
 *
 * @module
 */

/** The Deno release procMonitor is tested on. */
export const TESTED_DENO_VERSION = "2.9.6";

/** Null when `version` is the tested release, else the sentence that refuses it. */
export function runtimeProblem(version: string): string | null {
  if (version === TESTED_DENO_VERSION) return null;
  return `procMonitor runs on Deno ${TESTED_DENO_VERSION}, the release it is tested on, ` +
    `not ${version}; install it with scripts/deno.sh or use the Debian package or ` +
    `the compiled binary, which carry it`;
}
