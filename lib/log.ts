/**
 * Logging: LogTape loggers under the "procmonitor" category, written to stderr or, with
 * `--syslog`, to the system log through logger(1). stdout is reserved for events.
 *
 * A syslog daemon that stops taking messages stalls logger(1), and then the pipe to it:
 * log lines wait in a bounded queue ({@link SYSLOG_QUEUE_LINES}; past it the oldest are
 * dropped and a line says how many), and closing waits at most
 * {@link SYSLOG_CLOSE_MS} for them before logger is killed and stderr says how many were
 * not passed on. A stuck system log never keeps procMonitor from exiting.
 *
 * @module
 */
import {
  configure,
  dispose,
  getLogger as logtapeLogger,
  getTextFormatter,
  type Logger,
  type LogRecord,
  type Sink,
} from "@logtape/logtape";
import { StartupError } from "./errors.ts";
import { settlesWithin, type Timer } from "./timers.ts";

/** Log levels accepted by `--log-level`. */
export type LogLevel = "debug" | "info" | "warning" | "error";

/** A logger for one part of the program, e.g. `getLogger("hub")`. */
export function getLogger(part: string): Logger {
  return logtapeLogger(["procmonitor", part]);
}

/** syslog(3) severities for LogTape's levels. */
const SEVERITY: Record<LogRecord["level"], number> = {
  trace: 7,
  debug: 7,
  info: 6,
  warning: 4,
  error: 3,
  fatal: 2,
};
const FACILITY_DAEMON = 3;

/** Log lines that may wait for logger(1); past this the oldest are dropped and counted. */
export const SYSLOG_QUEUE_LINES = 1000;
/** How long closing the syslog sink waits for logger(1) to take and pass on what is queued. */
export const SYSLOG_CLOSE_MS = 2000;

/**
 * Lines on their way to a writer that may be slow or stuck, one write at a time, in order.
 * At most `maxLines` wait: a new line past that drops the oldest, and before the next line
 * is written, `droppedLine(n)` says how many were dropped.
 */
export class LineQueue {
  readonly #lines: string[] = [];
  #head = 0;
  #dropped = 0;
  #pump: Promise<void> | null = null;
  #failed = false;

  constructor(
    readonly write: (line: string) => Promise<void>,
    readonly maxLines: number,
    readonly droppedLine: (count: number) => string,
  ) {}

  /** Lines not written yet: waiting, and dropped but not yet reported. */
  get unsent(): number {
    return this.#lines.length - this.#head + this.#dropped;
  }

  /** Queues `line`; never waits. Ignored once a write has failed. */
  push(line: string): void {
    if (this.#failed) return;
    if (this.#lines.length - this.#head >= this.maxLines) {
      this.#head++;
      this.#dropped++;
      // Keep the array itself bounded too, not only the lines counted as waiting.
      if (this.#head >= this.maxLines) {
        this.#lines.splice(0, this.#head);
        this.#head = 0;
      }
    }
    this.#lines.push(line);
    this.#pump ??= this.#drain();
  }

  /** Resolves true once all is written, or false after `ms` or a failed write. */
  async flush(ms: number): Promise<boolean> {
    let timer: Timer | undefined;
    const late = new Promise<void>((resolve) => timer = setTimeout(resolve, ms));
    try {
      while (this.#pump !== null && !this.#failed) {
        if (await Promise.race([this.#pump.then(() => true), late.then(() => false)]) === false) {
          return false;
        }
      }
    } finally {
      clearTimeout(timer);
    }
    return !this.#failed;
  }

  async #drain(): Promise<void> {
    try {
      while (this.#head < this.#lines.length) {
        let line: string;
        if (this.#dropped > 0) {
          line = this.droppedLine(this.#dropped);
          this.#dropped = 0;
        } else {
          line = this.#lines[this.#head++];
        }
        if (this.#head === this.#lines.length) {
          this.#lines.length = 0;
          this.#head = 0;
        }
        await this.write(line);
      }
    } catch {
      // The writer is gone (logger exited): nothing further can be passed on.
      this.#failed = true;
      this.#lines.length = 0;
      this.#head = 0;
    } finally {
      this.#pump = null;
    }
  }
}

/**
 * A sink that hands each record to logger(1) with its own priority (`--prio-prefix`), so
 * messages reach journald or rsyslog through /dev/log, which Deno cannot open itself
 * (no Unix datagram sockets).
 */
function syslogSink(): { sink: Sink; close: () => Promise<void> } {
  // logger(1) drops messages silently when nothing listens: check first, and say so.
  const socket = Deno.env.get("PROCMONITOR_SYSLOG_SOCKET") || "/dev/log";
  let isSocket = false;
  try {
    isSocket = Deno.statSync(socket).isSocket === true;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  if (!isSocket) {
    throw new StartupError(
      `Cannot log to syslog as ${socket} is not a socket (is a syslog daemon or journald running?)`,
    );
  }
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("logger", {
      args: ["--prio-prefix", "-t", "procMonitor", `--id=${Deno.pid}`, "--socket", socket],
      stdin: "piped",
      stdout: "null",
      stderr: "inherit",
    }).spawn();
  } catch (error) {
    throw new StartupError("Cannot log to syslog as the logger command is not installed", {
      cause: error,
    });
  }
  const writer = child.stdin.getWriter();
  const encoder = new TextEncoder();
  const format = getTextFormatter({ timestamp: "none", category: "." });
  const warning = FACILITY_DAEMON * 8 + SEVERITY.warning;
  const queue = new LineQueue(
    (line) => writer.write(encoder.encode(line)),
    SYSLOG_QUEUE_LINES,
    (count) =>
      `<${warning}>[WRN] procmonitor.log: Dropped ${count} log messages, the oldest, as the ` +
      "system log did not take them fast enough\n",
  );
  const sink: Sink = (record) => {
    const text = format(record).replace(/\n+$/, "").replace(/\n/g, " ");
    queue.push(`<${FACILITY_DAEMON * 8 + SEVERITY[record.level]}>${text}\n`);
  };
  return {
    sink,
    close: async () => {
      const deadline = performance.now() + SYSLOG_CLOSE_MS;
      // logger exits at the end of its input, once it has passed everything on.
      if (
        await queue.flush(SYSLOG_CLOSE_MS) &&
        await settlesWithin(
          writer.close().then(() => child.status),
          // What is left of the deadline; never negative, which setTimeout warns about.
          Math.max(0, deadline - performance.now()),
        )
      ) {
        return;
      }
      const unsent = queue.unsent;
      try {
        child.kill("SIGKILL");
      } catch (error) {
        if (!(error instanceof TypeError)) throw error; // it has just exited
      }
      await child.status;
      if (unsent > 0) {
        writeStderr(
          `procMonitor: at least ${unsent} log messages were not passed to syslog, as it did ` +
            `not take them within ${SYSLOG_CLOSE_MS} ms\n`,
        );
      }
    },
  };
}

/** Writes all of `text` to stderr, synchronously. */
function writeStderr(text: string): void {
  const bytes = new TextEncoder().encode(text);
  for (let done = 0; done < bytes.length;) done += Deno.stderr.writeSync(bytes.subarray(done));
}

let closeSyslog: (() => Promise<void>) | null = null;

/** Sends procMonitor's logs at `level` and above to stderr, or to syslog. */
export async function configureLogging(level: LogLevel, syslog: boolean): Promise<void> {
  let sink: Sink;
  if (syslog) {
    const s = syslogSink();
    sink = s.sink;
    closeSyslog = s.close;
  } else {
    // Synchronous, and not a stream sink: that would lock stderr and close it on dispose,
    // leaving nothing for a last console.error.
    const format = getTextFormatter({ timestamp: "date-time-tz", category: "." });
    sink = (record) => writeStderr(format(record));
  }
  await configure({
    reset: true,
    sinks: { main: sink },
    loggers: [
      { category: ["procmonitor"], lowestLevel: level, sinks: ["main"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["main"] },
    ],
  });
}

/** Flushes and closes the log sinks; call before exiting. */
export async function closeLogging(): Promise<void> {
  await dispose();
  await closeSyslog?.();
  closeSyslog = null;
}
