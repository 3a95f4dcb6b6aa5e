/**
 * The last line of defence: an error nobody caught ends procMonitor with one line on stderr
 * and exit code 1.
 *
 * Left to Deno, an uncaught error while the C reader thread runs tears the runtime down under
 * that thread and ends in SIGSEGV (exit 139) without printing the error at all. `Deno.exit()`
 * does not unload the library, so exiting from here is clean.
 *
 * @module
 */

/** Errors known to be harmless when they arrive uncaught (see {@link tolerateUncaught}). */
const tolerated: ((error: unknown) => boolean)[] = [];

let listening = false;
let exiting = false;

/** One listener for both: tolerated errors pass, others exit 1 once {@link exitOnUncaught}. */
function listen(): void {
  if (listening) return;
  listening = true;
  const onUncaught = (event: Event, error: unknown) => {
    if (tolerated.some((isHarmless) => isHarmless(error))) {
      event.preventDefault();
      return;
    }
    if (!exiting) return; // Deno's own handling: a test runner reports it, for one
    event.preventDefault();
    const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
    console.error(`procMonitor: stopped on an unexpected error: ${text}`);
    Deno.exit(1);
  };
  globalThis.addEventListener("error", (event) => onUncaught(event, event.error));
  globalThis.addEventListener("unhandledrejection", (event) => onUncaught(event, event.reason));
}

/**
 * Lets uncaught errors for which `isHarmless` is true pass without ending the process; for
 * a library that can raise an error on an object it has already let go of.
 */
export function tolerateUncaught(isHarmless: (error: unknown) => boolean): void {
  tolerated.push(isHarmless);
  listen();
}

/** Makes any other uncaught error or unhandled rejection print one line and exit 1. */
export function exitOnUncaught(): void {
  exiting = true;
  listen();
}
