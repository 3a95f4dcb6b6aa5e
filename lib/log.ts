/**
 * Logging: LogTape loggers under the "procmonitor" category, written to stderr or, with
 * `--syslog`, to the system log through logger(1). stdout is reserved for events.
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
import type { LogLevel } from "./config_types.ts";
import { StartupError } from "./errors.ts";

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
  let chain = Promise.resolve();
  const sink: Sink = (record) => {
    const text = format(record).replace(/\n+$/, "").replace(/\n/g, " ");
    const line = `<${FACILITY_DAEMON * 8 + SEVERITY[record.level]}>${text}\n`;
    chain = chain.then(() => writer.write(encoder.encode(line))).catch(() => {});
  };
  return {
    sink,
    close: async () => {
      await chain;
      await writer.close().catch(() => {});
      await child.status;
    },
  };
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
    const encoder = new TextEncoder();
    sink = (record) => {
      const bytes = encoder.encode(format(record));
      for (let done = 0; done < bytes.length;) done += Deno.stderr.writeSync(bytes.subarray(done));
    };
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
