/**
 * Waiting with a bound: the timer type, racing a promise against a timeout, and a sleep
 * that a stop signal cuts short. Used by every stage, so it lives once, here.
 *
 * @module
 */

/** What setTimeout returns (a number in Deno, an object in its Node types). */
export type Timer = ReturnType<typeof setTimeout>;

/**
 * Resolves true when `p` settles (fulfils or rejects) within `ms`, false otherwise; never
 * rejects. The timer is cleared either way. `ms` goes to setTimeout as it is: a negative
 * one makes Deno warn, so a caller that computes it clamps it first.
 */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: Timer | undefined;
  const late = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([p.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits `ms`, then resolves true. With `signal`: resolves false at once when it aborts
 * (or has aborted already), and the timer is cleared.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal === undefined) return new Promise((resolve) => setTimeout(() => resolve(true), ms));
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
