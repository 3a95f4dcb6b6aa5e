/**
 * Captures procMonitor's log records in memory, for tests that assert what is logged (and
 * what never is, like a password).
 */
import { configure, type LogRecord } from "@logtape/logtape";

/** Every record logged under "procmonitor" since {@link captureLogs}. */
export const records: LogRecord[] = [];

/** Routes procMonitor's loggers into {@link records}. Call once per test file. */
export async function captureLogs(): Promise<void> {
  await configure({
    reset: true,
    sinks: { memory: (r: LogRecord) => records.push(r) },
    loggers: [
      { category: ["procmonitor"], sinks: ["memory"], lowestLevel: "debug" },
      { category: ["logtape", "meta"], sinks: [], lowestLevel: "warning" },
    ],
  });
}

/** The captured records rendered as text, one string each. */
export function logText(): string[] {
  return records.map((r) =>
    r.message.map((p) => typeof p === "string" ? p : JSON.stringify(p)).join("")
  );
}
