/**
 * The human-readable text format (`--format text`): one aligned line per event, coloured
 * only on a terminal (SPEC §4).
 *
 * Columns, separated by one space:
 *
 * ```
 * HH:MM:SS.ffffff event      pid    ppid user       detail
 * 12:34:56.123456 exec     12345       1 root       /usr/bin/true --flag
 * 12:34:56.124001 exit     12345       1 root       exit 3 after 1.25s · cpu 0.31s · 104 MiB: /usr/bin/true --flag
 * 12:34:56.124500 exec     12346       1 root       /usr/sbin/nginx · nginx.service
 * 12:34:56.125001 exit     12346       1 root       exit 0 after 2.01s · cpu 0.31s · 104 MiB · nginx.service: /usr/sbin/nginx
 * ```
 *
 * Events that carry a `host` (from a server with `--nats` or `--host-id`, e.g. read back by
 * `procMonitor client --nats` from a whole fleet) get a host column after the time.
 *
 * Strings that come from processes (cmdline, comm, exe, and user names for good measure) have
 * their control characters escaped, so a hostile cmdline cannot move the cursor, retitle the
 * terminal or hide itself. The text format is for eyes; the JSON format is the exact one.
 *
 * @module
 */
import type { ExitEvent, ProcEvent } from "./event.ts";
import { decodeExitCode } from "./exit_code.ts";

/**
 * Whether the text format should use colour: only on a terminal, never when `NO_COLOR` is set
 * to a non-empty value (no-color.org: an empty `NO_COLOR` does not count), and never on a
 * `TERM=dumb` terminal, which cannot render escape sequences.
 *
 * @param isTerminal whether the output is a TTY (e.g. `Deno.stdout.isTerminal()`)
 * @param env the environment (e.g. `Deno.env.toObject()`)
 */
export function useColor(isTerminal: boolean, env: Record<string, string | undefined>): boolean {
  if (!isTerminal) return false;
  const noColor = env.NO_COLOR;
  if (noColor !== undefined && noColor !== "") return false;
  return env.TERM !== "dumb";
}

/** Options of {@link TextFormatter}. */
export interface TextFormatterOptions {
  /** Emit ANSI colour sequences (decide with {@link useColor}). */
  color: boolean;
}

// Column widths. pid_max is at most 4194304 (7 digits), so pids never push the columns out.
const TIME_WIDTH = 15; // "HH:MM:SS.ffffff"
const EVENT_WIDTH = 8; // longest event name, "coredump"
const PID_WIDTH = 7;
const USER_WIDTH = 10;
// Host ids are short host names as a rule; a longer one is cut, as user names are, so the
// columns of a fleet's events stay aligned.
const HOST_WIDTH = 12;

// ANSI SGR sequences.
const RESET = "\x1b[0m";
const DIM = "\x1b[2m";
const RED = "\x1b[31m";
const BOLD_RED = "\x1b[1;31m";
const GREEN = "\x1b[32m";
const YELLOW = "\x1b[33m";
const BLUE = "\x1b[34m";
const MAGENTA = "\x1b[35m";
const CYAN = "\x1b[36m";

/** One colour per event kind, so kinds can be told apart while the log scrolls by. */
const EVENT_COLOR: Readonly<Record<ProcEvent["event"], string>> = {
  fork: CYAN,
  exec: GREEN,
  exit: YELLOW,
  uid: MAGENTA,
  gid: MAGENTA,
  sid: BLUE,
  ptrace: MAGENTA,
  comm: BLUE,
  coredump: BOLD_RED,
  lost: BOLD_RED,
};

/**
 * Characters a terminal may act on: C0 controls, DEL, C1 controls (U+0080–U+009F; some
 * terminals treat U+009B as CSI), and the bidirectional overrides/isolates that can make text
 * display in a different order than it runs ("Trojan Source").
 */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
// deno-lint-ignore no-control-regex -- same set, global, for replace
const UNSAFE_ALL = /[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

function escapeChar(ch: string): string {
  switch (ch) {
    case "\n":
      return "\\n";
    case "\r":
      return "\\r";
    case "\t":
      return "\\t";
  }
  const code = ch.charCodeAt(0);
  return code < 0x100
    ? "\\x" + code.toString(16).padStart(2, "0")
    : "\\u" + code.toString(16).padStart(4, "0");
}

/**
 * Escapes terminal-unsafe characters: `\n`, `\r`, `\t` as themselves, other C0/DEL/C1 as
 * `\xNN`, bidi controls as `\uNNNN`. Backslashes are left alone so paths and regexes stay
 * readable; that makes the escaping ambiguous for a cmdline that literally contains `\x1b`,
 * which is acceptable for a display format (JSON is exact).
 */
export function escapeControl(s: string): string {
  // Fast path: nearly every cmdline is clean, and then no new string is built.
  return UNSAFE.test(s) ? s.replace(UNSAFE_ALL, escapeChar) : s;
}

/** Left-aligns `s` in `width` columns; longer text is cut and marked with "+". */
function fitLeft(s: string, width: number): string {
  if (s.length <= width) return s.padEnd(width);
  let cut = width - 1;
  // Do not split a surrogate pair: a lone half would print as U+FFFD.
  const last = s.charCodeAt(cut - 1);
  if (last >= 0xd800 && last <= 0xdbff) cut--;
  // padEnd: after stepping back over a pair the cut text is one column short.
  return (s.slice(0, cut) + "+").padEnd(width);
}

/** Right-aligns a pid, or "-" when there is none. */
function pidCol(pid: number | null | undefined): string {
  return (pid === null || pid === undefined ? "-" : String(pid)).padStart(PID_WIDTH);
}

/** The host column and its separator, or nothing for an event without a host. */
function hostCol(host: string | undefined): string {
  return typeof host === "string" ? fitLeft(escapeControl(host), HOST_WIDTH) + " " : "";
}

const CLOCK = /T(\d{2}:\d{2}:\d{2})(?:[.,](\d+))?/;

/**
 * "HH:MM:SS.ffffff" from the event's RFC 3339 UTC time: the date is left out (it rarely
 * changes while one watches) and the microseconds are kept (storms happen within one
 * millisecond). An unparsable time is shown whole rather than lost.
 */
function clockOf(time: string): string {
  const m = CLOCK.exec(time);
  if (m === null) return escapeControl(time).padEnd(TIME_WIDTH);
  return `${m[1]}.${(m[2] ?? "").padEnd(6, "0").slice(0, 6)}`;
}

/** Short, human duration: "12ms", "1.25s", "12.3s", "3m05s", "2h03m", "4d07h". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const ms = Math.round(seconds * 1000);
  if (ms < 1000) return `${ms}ms`;
  if (seconds < 10) return `${seconds.toFixed(2)}s`;
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const total = Math.floor(seconds);
  const two = (n: number) => String(n).padStart(2, "0");
  if (total < 3600) return `${Math.floor(total / 60)}m${two(total % 60)}s`;
  if (total < 86400) return `${Math.floor(total / 3600)}h${two(Math.floor(total % 3600 / 60))}m`;
  return `${Math.floor(total / 86400)}d${two(Math.floor(total % 86400 / 3600))}h`;
}

/**
 * An exit's resource usage for display, ` · cpu 0.31s · 104 MiB` (CPU is user + system), or
 * "" when the event has none.
 */
export function usageText(ev: ExitEvent): string {
  if (ev.cpu_user_s === undefined || ev.cpu_sys_s === undefined) return "";
  const cpu = ` · cpu ${(ev.cpu_user_s + ev.cpu_sys_s).toFixed(2)}s`;
  return ev.max_rss_kb === undefined ? cpu : `${cpu} · ${formatMiB(ev.max_rss_kb)}`;
}

/** `LOST 42 events (kernel)`; lost usage loses no event: `LOST usage of 3 exits`. */
function lostText(count: number, where: string): string {
  const plural = (word: string) => count === 1 ? word : `${word}s`;
  return where === "usage"
    ? `LOST usage of ${count} ${plural("exit")}`
    : `LOST ${count} ${plural("event")} (${where})`;
}

/** KiB as MiB: one decimal below 10 MiB ("1.8 MiB"), whole above ("104 MiB"). */
export function formatMiB(kib: number): string {
  const mib = kib / 1024;
  return mib < 10 ? `${mib.toFixed(1)} MiB` : `${Math.round(mib)} MiB`;
}

/**
 * Where the process runs, for exec and exit lines: ` · ` and its unit, else the first 12 hex
 * of its container id (as `docker ps` shows it), else nothing.
 */
function placeText(ev: { unit?: string; container_id?: string }): string {
  if (ev.unit !== undefined) return ` · ${escapeControl(ev.unit)}`;
  if (ev.container_id !== undefined) return ` · ${escapeControl(ev.container_id.slice(0, 12))}`;
  return "";
}

/** The cmdline for display: escaped, "-" when empty, marked when the producer cut it. */
function cmdlineText(cmdline: string, truncated: true | undefined): string {
  const shown = cmdline === "" ? "-" : escapeControl(cmdline);
  return truncated ? shown + " [truncated]" : shown;
}

/**
 * Formats events as aligned, human-readable lines.
 *
 * Columns: time (`HH:MM:SS.ffffff`, UTC), host (12 wide, cut with `+`; only for an event
 * that has a `host`), event (8 wide), pid (right-aligned, 7), ppid
 * (right-aligned, 7, `-` when unknown or not applicable), user (10 wide, cut with `+`), then
 * a detail that depends on the event:
 *
 * | event | pid / ppid | detail |
 * |---|---|---|
 * | fork | child_pid / parent_tgid | cmdline; `(thread of TGID)` first for a thread |
 * | exec | pid / ppid | cmdline (else `[comm]`, else exe), ` · unit` |
 * | exit | pid / ppid | `exit 3` or `SIGKILL` / `SIGSEGV (core dumped)`, ` after 1.25s`, ` · cpu 0.31s · 104 MiB`, ` · unit`, `: cmdline` |
 * | uid / gid | pid / - | `ruid=0 euid=1000` / `rgid=0 egid=1000` |
 * | sid | pid / - | `new session` |
 * | ptrace | pid / - | `attached by 123` or `detached` |
 * | comm | pid / - | `renamed to NAME` |
 * | coredump | pid / parent_pid | `dumped core` |
 * | lost | - / - | `LOST 42 events (kernel)`, `LOST usage of 3 exits` |
 *
 * With `color`, ANSI colours mark the event kind, failed exits and signals (red), and lost
 * events (bold red); padding is computed on the plain text so columns stay aligned either way.
 */
export class TextFormatter {
  readonly #color: boolean;

  /** Creates a formatter; `color` turns ANSI colours on (see {@link useColor}). */
  constructor(opts: TextFormatterOptions) {
    this.#color = opts.color;
  }

  /** Formats one event as one line ending in `"\n"`. Never throws for a well-typed event. */
  format(ev: ProcEvent): string {
    let pid: number | null = null;
    let ppid: number | null = null;
    let user = "-";
    let detail: string;
    switch (ev.event) {
      case "fork":
        pid = ev.child_pid;
        // The tgid is the parent process, as ps shows it; parent_pid may be one of its threads.
        ppid = ev.parent_tgid;
        user = ev.user;
        detail = ev.thread
          ? this.#paint(DIM, `(thread of ${ev.child_tgid})`) + " " +
            cmdlineText(ev.cmdline, ev.cmdline_truncated)
          : cmdlineText(ev.cmdline, ev.cmdline_truncated);
        break;
      case "exec":
        pid = ev.pid;
        ppid = ev.ppid;
        user = ev.user;
        // The process may be gone before its cmdline could be read; comm or exe still say who.
        detail = ev.cmdline === "" && ev.comm
          ? `[${escapeControl(ev.comm)}]`
          : ev.cmdline === "" && ev.exe
          ? escapeControl(ev.exe)
          : cmdlineText(ev.cmdline, ev.cmdline_truncated);
        detail += placeText(ev);
        break;
      case "exit":
        pid = ev.pid;
        ppid = ev.ppid;
        user = ev.user;
        detail = this.#exitDetail(ev);
        break;
      case "uid":
        pid = ev.pid;
        user = ev.user;
        detail = `ruid=${ev.ruid} euid=${ev.euid}`;
        break;
      case "gid":
        pid = ev.pid;
        user = ev.user;
        detail = `rgid=${ev.rgid} egid=${ev.egid}`;
        break;
      case "sid":
        pid = ev.pid;
        user = ev.user;
        detail = "new session";
        break;
      case "ptrace":
        pid = ev.pid;
        detail = ev.tracer_pid > 0 ? `attached by ${ev.tracer_pid}` : "detached";
        break;
      case "comm":
        pid = ev.pid;
        detail = `renamed to ${escapeControl(ev.comm)}`;
        break;
      case "coredump":
        pid = ev.pid;
        ppid = ev.parent_pid;
        detail = this.#paint(RED, "dumped core");
        break;
      case "lost":
        detail = this.#paint(BOLD_RED, lostText(ev.count, ev.where));
        break;
    }
    return this.#paint(DIM, clockOf(ev.time)) + " " + hostCol(ev.host) +
      this.#paint(EVENT_COLOR[ev.event], ev.event.padEnd(EVENT_WIDTH)) + " " +
      pidCol(pid) + " " + pidCol(ppid) + " " +
      fitLeft(escapeControl(user), USER_WIDTH) + " " +
      detail + "\n";
  }

  #exitDetail(ev: ExitEvent): string {
    // Use the producer's decoded fields; decode the raw code only if they are missing.
    let status: string;
    let failed: boolean;
    if (ev.signal !== undefined) {
      status = ev.core_dumped ? `${ev.signal} (core dumped)` : ev.signal;
      failed = true;
    } else if (ev.exit_status !== undefined) {
      status = `exit ${ev.exit_status}`;
      failed = ev.exit_status !== 0;
    } else {
      const d = decodeExitCode(ev.exit_code);
      if ("signal" in d) {
        status = d.core_dumped ? `${d.signal} (core dumped)` : d.signal;
        failed = true;
      } else {
        status = `exit ${d.exit_status}`;
        failed = d.exit_status !== 0;
      }
    }
    let out = failed ? this.#paint(RED, status) : status;
    if (ev.thread) out = this.#paint(DIM, "(thread)") + " " + out;
    if (ev.duration_s !== undefined) out += ` after ${formatDuration(ev.duration_s)}`;
    out += usageText(ev);
    out += placeText(ev);
    if (ev.cmdline !== "") out += ": " + cmdlineText(ev.cmdline, ev.cmdline_truncated);
    return out;
  }

  /** Wraps `s` in an SGR colour when colour is on; returns it untouched otherwise. */
  #paint(sgr: string, s: string): string {
    return this.#color ? sgr + s + RESET : s;
  }
}
