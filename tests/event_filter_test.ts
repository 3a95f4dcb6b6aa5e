import assert from "node:assert/strict";
import type { Enriched } from "../lib/events/enricher.ts";
import {
  type BelongFilter,
  EventFilter,
  type FilterOptions,
  globRegExp,
} from "../lib/events/event_filter.ts";
import { belongingOf } from "../lib/events/cgroup.ts";
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

// ---- where a process belongs and comes from ----

const ID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/** An exec in `cgroup`, under `ancestors` (cmdlines, nearest first). */
function placed(pid: number, cgroup: string | null, ancestors: string[] = []): Enriched {
  const e = exec(pid, "x");
  return {
    ...e,
    belong: cgroup === null ? null : belongingOf(cgroup),
    ancestors: ancestors.map((cmdline, i) => ({ pid: 1000 + i, comm: "", cmdline })),
  };
}

const anywhere: BelongFilter = {
  units: [],
  cgroups: [],
  container: false,
  ancestor: null,
  notAncestor: null,
};

Deno.test("EventFilter --unit keeps processes whose unit matches a glob", () => {
  const f = new EventFilter({
    ...all,
    belong: { ...anywhere, units: ["nginx*.service", "cron.service"] },
  });
  assert.equal(f.accept(placed(1, "/system.slice/nginx.service")), true);
  assert.equal(f.accept(placed(2, "/system.slice/nginx-proxy.service")), true);
  assert.equal(f.accept(placed(3, "/system.slice/cron.service")), true);
  assert.equal(f.accept(placed(4, "/system.slice/nginx.scope")), false);
  assert.equal(f.accept(placed(5, "/system.slice/xnginx.service")), false);
  assert.equal(f.accept(placed(6, "/")), false); // no unit
  assert.equal(f.accept(placed(7, null)), false); // not known
  assert.equal(f.accept(lost), true);
});

Deno.test("globRegExp() reads *, ? and [...] and nothing else as special", () => {
  assert.ok(globRegExp("a?c.service").test("abc.service"));
  assert.ok(!globRegExp("a?c.service").test("abcxservice"));
  assert.ok(globRegExp("session-[0-9]*.scope").test("session-3.scope"));
  assert.ok(!globRegExp("session-[!0-9]*.scope").test("session-3.scope"));
  assert.ok(globRegExp("a+b(c).service").test("a+b(c).service"));
  assert.ok(!globRegExp("nginx").test("nginx.service")); // anchored
});

Deno.test("EventFilter --cgroup keeps a cgroup and what is below it, path by path", () => {
  const f = new EventFilter({ ...all, belong: { ...anywhere, cgroups: ["/system.slice/"] } });
  assert.equal(f.accept(placed(1, "/system.slice")), true);
  assert.equal(f.accept(placed(2, "/system.slice/nginx.service")), true);
  assert.equal(f.accept(placed(3, "/system.slicer/x.service")), false);
  assert.equal(f.accept(placed(4, "/user.slice")), false);
  assert.equal(f.accept(placed(5, null)), false);
  const root = new EventFilter({ ...all, belong: { ...anywhere, cgroups: ["/"] } });
  assert.equal(root.accept(placed(6, "/user.slice")), true);
});

Deno.test("EventFilter --container keeps processes with a container id", () => {
  const f = new EventFilter({ ...all, belong: { ...anywhere, container: true } });
  assert.equal(f.accept(placed(1, `/system.slice/docker-${ID}.scope`)), true);
  assert.equal(f.accept(placed(2, "/system.slice/docker.service")), false);
  assert.equal(f.accept(placed(3, null)), false);
});

Deno.test("EventFilter --ancestor and --not-ancestor test every ancestor's cmdline", () => {
  const under = new EventFilter({ ...all, belong: { ...anywhere, ancestor: /^sshd/g } });
  assert.equal(under.accept(placed(1, "/", ["-bash", "sshd: root", "/sbin/init"])), true);
  assert.equal(under.accept(placed(2, "/", ["-bash", "sshd: root"])), true); // no lastIndex
  assert.equal(under.accept(placed(3, "/", ["cron", "/sbin/init"])), false);
  assert.equal(under.accept(placed(4, "/", [])), false);
  assert.equal(under.accept(lost), true);
  const not = new EventFilter({ ...all, belong: { ...anywhere, notAncestor: /healthcheck/ } });
  assert.equal(not.accept(placed(5, "/", ["sh /usr/bin/healthcheck", "dockerd"])), false);
  assert.equal(not.accept(placed(6, "/", ["-bash", "sshd: root"])), true);
  assert.equal(not.accept(placed(7, "/", [])), true);
});
