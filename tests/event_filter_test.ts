import assert from "node:assert/strict";
import type { Enriched } from "../lib/events/enricher.ts";
import { EventFilter, type FilterOptions } from "../lib/events/event_filter.ts";
import type { ProcEvent } from "../lib/events/event.ts";

const all: FilterOptions = {
  events: ["fork", "exec", "exit", "comm"],
  threads: false,
  uids: null,
  match: null,
  pids: null,
};
const time = "2026-01-01T00:00:00.000000Z";

function fork(parent: number, child: number, thread = false): Enriched {
  const event: ProcEvent = {
    event: "fork",
    time,
    child_pid: child,
    parent_pid: parent,
    child_tgid: thread ? parent : child,
    parent_tgid: parent,
    user: "root",
    uid: 0,
    cmdline: "sh",
    ...(thread ? { thread: true as const } : {}),
  };
  return {
    event,
    tgid: thread ? parent : child,
    parentTgid: thread ? null : parent,
    uid: 0,
    cmdline: "sh",
    thread,
  };
}

function exec(pid: number, cmdline: string, uid = 0): Enriched {
  return {
    event: { event: "exec", time, pid, user: String(uid), uid, ppid: 1, cmdline },
    tgid: pid,
    parentTgid: null,
    uid,
    cmdline,
    thread: false,
  };
}

function exit(pid: number, tgid = pid): Enriched {
  return {
    event: {
      event: "exit",
      time,
      pid,
      exit_code: 0,
      exit_status: 0,
      core_dumped: false,
      user: "root",
      uid: 0,
      ppid: 1,
      cmdline: "sh",
      ...(pid !== tgid ? { thread: true as const } : {}),
    },
    tgid,
    parentTgid: null,
    uid: 0,
    cmdline: "sh",
    thread: pid !== tgid,
  };
}

const lost: Enriched = {
  event: { event: "lost", time, count: 3, where: "kernel" },
  tgid: 0,
  parentTgid: null,
  uid: null,
  cmdline: "",
  thread: false,
};

Deno.test("EventFilter keeps only the events selected with -e, and always lost", () => {
  const f = new EventFilter({ ...all, events: ["exec"] });
  assert.equal(f.accept(fork(1, 2)), false);
  assert.equal(f.accept(exec(2, "x")), true);
  assert.equal(f.accept(exit(2)), false);
  assert.equal(f.accept(lost), true);
});

Deno.test("EventFilter hides thread events unless --threads", () => {
  assert.equal(new EventFilter(all).accept(fork(10, 11, true)), false);
  assert.equal(new EventFilter(all).accept(exit(11, 10)), false);
  assert.equal(new EventFilter({ ...all, threads: true }).accept(fork(10, 11, true)), true);
  assert.equal(new EventFilter({ ...all, threads: true }).accept(exit(11, 10)), true);
});

Deno.test("EventFilter --user keeps only the given uids", () => {
  const f = new EventFilter({ ...all, uids: new Set([1000]) });
  assert.equal(f.accept(exec(5, "a", 1000)), true);
  assert.equal(f.accept(exec(6, "b", 0)), false);
});

Deno.test("EventFilter --match tests the cmdline", () => {
  const f = new EventFilter({ ...all, match: /nginx|MARK/g });
  assert.equal(f.accept(exec(5, "/usr/sbin/nginx -g daemon off;")), true);
  assert.equal(f.accept(exec(6, "/bin/true MARK")), true); // a /g regex must not keep lastIndex
  assert.equal(f.accept(exec(7, "/bin/true MARK")), true);
  assert.equal(f.accept(exec(8, "/bin/false")), false);
});

Deno.test("EventFilter --pid follows the subtree through forks, from the scan and live", () => {
  // At start: 100 → 101 → 102, and 200 unrelated.
  const f = new EventFilter({ ...all, pids: [100] }, [[101, 100], [102, 101], [200, 1]]);
  assert.equal(f.accept(exec(102, "a")), true);
  assert.equal(f.accept(exec(200, "b")), false);
  assert.equal(f.accept(fork(102, 103)), true);
  assert.equal(f.accept(exec(103, "c")), true);
  assert.equal(f.accept(fork(200, 201)), false);
  assert.equal(f.accept(exec(201, "d")), false);
  // Once 103 has exited, a recycled 103 outside the tree is not followed.
  assert.equal(f.accept(exit(103)), true);
  assert.equal(f.accept(fork(200, 103)), false);
  assert.equal(f.accept(exec(103, "recycled")), false);
});

Deno.test("EventFilter --pid follows forks even when fork events are not shown", () => {
  const f = new EventFilter({ ...all, events: ["exec"], pids: [100] });
  assert.equal(f.accept(fork(100, 101)), false);
  assert.equal(f.accept(exec(101, "child")), true);
});
