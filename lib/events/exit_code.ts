/**
 * Decoding of the kernel's exit `exit_code`, a wait(2)-style status (KERNEL.md):
 *
 * - normal exit: `(status & 0xff) << 8`, low 7 bits 0 (exit 1 → 256);
 * - fatal signal: the signal number in the low 7 bits, `0x80` set when a core was dumped.
 *
 * Pure functions, no I/O: the signal table is built once at module load.
 *
 * @module
 */
import { constants } from "node:os";

/** A decoded exit status: either a normal exit or a death by signal. */
export type DecodedExit =
  | { exit_status: number; core_dumped: false }
  | { signal: string; core_dumped: boolean };

/**
 * Names that share a number with a better-known name. `node:os` lists both (SIGIOT and SIGABRT
 * are 6) and the order it lists them in is not a promise, so the canonical name is chosen
 * explicitly instead of "first one wins".
 */
const ALIASES: ReadonlySet<string> = new Set([
  "SIGIOT", // = SIGABRT
  "SIGCLD", // = SIGCHLD
  "SIGPOLL", // = SIGIO
  "SIGUNUSED", // = SIGSYS (removed from glibc; still in libuv's table)
  "SIGLOST", // = SIGPWR on some architectures
  "SIGINFO", // = SIGPWR on some architectures
]);

/** Signal number → canonical name, inverted once from `node:os` `constants.signals`. */
const SIGNAL_NAMES: ReadonlyMap<number, string> = (() => {
  const names = new Map<number, string>();
  for (const [name, num] of Object.entries(constants.signals as Record<string, number>)) {
    if (typeof num !== "number") continue;
    const current = names.get(num);
    // Take this name when the slot is free, or when it replaces an alias by a canonical name.
    if (current === undefined || (ALIASES.has(current) && !ALIASES.has(name))) {
      names.set(num, name);
    }
  }
  return names;
})();

/**
 * Linux's first realtime signal as user space sees it. The kernel's SIGRTMIN is 32, but glibc
 * (and musl) reserve 32 and 33 for their own threading, so `kill -l` and `strsignal` call 34
 * SIGRTMIN; the names below follow that convention so they match what admins type.
 */
const RTMIN = 34;
/** Linux's last realtime signal (`_NSIG - 1` on every architecture procMonitor targets). */
const RTMAX = 64;

/**
 * The name of signal `n`: the canonical name from `node:os` (`SIGKILL`, `SIGABRT` rather than
 * `SIGIOT`, `SIGCHLD` rather than `SIGCLD`, `SIGIO` rather than `SIGPOLL`); for realtime
 * signals `SIGRTMIN` (34), `SIGRTMIN+k` (35..63) and `SIGRTMAX` (64); for any other number
 * (0, 32, 33, 65..127, negative) `SIG<n>`, e.g. `SIG32`, `SIG127`. Never throws.
 */
export function signalName(n: number): string {
  const known = SIGNAL_NAMES.get(n);
  if (known !== undefined) return known;
  if (n === RTMIN) return "SIGRTMIN";
  if (n === RTMAX) return "SIGRTMAX";
  if (n > RTMIN && n < RTMAX) return `SIGRTMIN+${n - RTMIN}`;
  return `SIG${n}`;
}

/**
 * Decodes the kernel's raw exit `exit_code` (a wait(2) status).
 *
 * - low 7 bits 0: a normal exit, `{ exit_status: (code >> 8) & 0xff, core_dumped: false }`;
 * - otherwise: death by the signal in the low 7 bits,
 *   `{ signal: signalName(code & 0x7f), core_dumped: (code & 0x80) !== 0 }`.
 *
 * A low-7-bits value of 0x7f means "stopped" (or with 0xffff "continued") in wait(2); the
 * kernel never reports that for an exit, so it is not special-cased beyond reporting signal
 * 127 (`SIG127`) with `core_dumped: false`: in those encodings bit 0x80 belongs to the stop
 * signal's number, not to a core flag. Never throws.
 *
 * @example
 * decodeExitCode(768); // { exit_status: 3, core_dumped: false }
 * decodeExitCode(0x8b); // { signal: "SIGSEGV", core_dumped: true }
 */
export function decodeExitCode(code: number): DecodedExit {
  const sig = code & 0x7f;
  if (sig === 0) return { exit_status: (code >> 8) & 0xff, core_dumped: false };
  if (sig === 0x7f) return { signal: signalName(sig), core_dumped: false };
  return { signal: signalName(sig), core_dumped: (code & 0x80) !== 0 };
}
