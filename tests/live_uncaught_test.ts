/**
 * An uncaught error while the C reader thread runs: left to Deno it ended in SIGSEGV with no
 * message (the runtime went away under the thread); exitOnUncaught() makes it exit 1.
 */
import assert from "node:assert/strict";
import { liveTest } from "./support/live.ts";
import { runScript } from "./uncaught_test.ts";

const MONITOR = new URL("../lib/events/monitor.ts", import.meta.url).href;
const USERS = new URL("../lib/events/user_names.ts", import.meta.url).href;

liveTest(
  "an uncaught error while the reader thread runs exits 1 with its message, not SIGSEGV",
  async () => {
    const r = await runScript(`import { Monitor } from "${MONITOR}";
import { UserNames } from "${USERS}";
exitOnUncaught();
const m = await Monitor.start({ events: ["exec"], threads: false, uids: null, match: null,
  pids: null, realtime: false, usage: true, users: new UserNames() });
setTimeout(() => { throw new Error("boom while reading"); }, 100);
await m.run(() => {});`);
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, /procMonitor: stopped on an unexpected error: Error: boom while reading\n/);
  },
);
