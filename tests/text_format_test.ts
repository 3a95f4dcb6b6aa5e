import assert from "node:assert/strict";
import type { ExitEvent, ProcEvent } from "../lib/events/event.ts";
import {
  escapeControl,
  formatDuration,
  TextFormatter,
  useColor,
} from "../lib/events/text_format.ts";

const TIME = "2025-01-02T03:04:05.123456Z";

/** One sample per event kind; the mapped type makes a missing kind a type error. */
const SAMPLES: { [K in ProcEvent["event"]]: Extract<ProcEvent, { event: K }> } = {
  fork: {
    event: "fork",
    time: TIME,
    child_pid: 200,
    parent_pid: 100,
    child_tgid: 200,
    parent_tgid: 100,
    user: "root",
    uid: 0,
    cmdline: "bash -l",
  },
  exec: {
    event: "exec",
    time: TIME,
    pid: 200,
    user: "root",
    uid: 0,
    ppid: 100,
    cmdline: "/usr/bin/true --flag",
  },
  exit: {
    event: "exit",
    time: TIME,
    pid: 200,
    exit_code: 768,
    exit_status: 3,
    core_dumped: false,
    user: "root",
    uid: 0,
    ppid: 100,
    cmdline: "/usr/bin/false",
    duration_s: 1.25,
  },
  uid: { event: "uid", time: TIME, pid: 300, ruid: 0, euid: 1000, user: "alice" },
  gid: { event: "gid", time: TIME, pid: 300, rgid: 0, egid: 100, user: "alice" },
  sid: { event: "sid", time: TIME, pid: 300, user: "alice" },
  ptrace: { event: "ptrace", time: TIME, pid: 300, tracer_pid: 123 },
  comm: { event: "comm", time: TIME, pid: 300, comm: "worker" },
  coredump: { event: "coredump", time: TIME, pid: 300, parent_pid: 1 },
  lost: { event: "lost", time: TIME, count: 42, where: "kernel" },
};
const ALL: ProcEvent[] = Object.values(SAMPLES);

const plain = new TextFormatter({ color: false });
const colored = new TextFormatter({ color: true });
const ESC = "\x1b";
// deno-lint-ignore no-control-regex -- stripping ANSI escape sequences
const stripAnsi = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, "");

function exit(fields: Partial<ExitEvent>): ExitEvent {
  return { ...SAMPLES.exit, exit_status: undefined, signal: undefined, ...fields };
}

Deno.test("TextFormatter.format() formats every event kind as one line", () => {
  for (const ev of ALL) {
    for (const f of [plain, colored]) {
      const line = f.format(ev);
      assert.ok(line.endsWith("\n"), `${ev.event}: ends with a newline`);
      assert.equal(line.indexOf("\n"), line.length - 1, `${ev.event}: one line`);
      assert.ok(stripAnsi(line).includes(ev.event), `${ev.event}: names the event`);
    }
  }
});

Deno.test("TextFormatter.format() shows the time as HH:MM:SS.ffffff", () => {
  assert.ok(plain.format(SAMPLES.exec).startsWith("03:04:05.123456 exec "));
  const short = plain.format({ ...SAMPLES.exec, time: "2025-01-02T03:04:05.5Z" });
  assert.ok(short.startsWith("03:04:05.500000 "), short);
});

Deno.test("TextFormatter.format() aligns the user column across pid widths", () => {
  const a = plain.format({ ...SAMPLES.exec, pid: 7, ppid: 1, user: "root" });
  const b = plain.format({ ...SAMPLES.exec, pid: 4194303, ppid: 123456, user: "root" });
  const c = plain.format({ ...SAMPLES.uid, pid: 42, user: "root" });
  assert.equal(a.indexOf(" root "), b.indexOf(" root "));
  assert.equal(a.indexOf(" root "), c.indexOf(" root "));
  // Same alignment once the colours are stripped.
  const ca = stripAnsi(colored.format({ ...SAMPLES.exec, pid: 7, user: "root" }));
  assert.equal(ca.indexOf(" root "), a.indexOf(" root "));
});

Deno.test("TextFormatter.format() aligns the detail column across all kinds", () => {
  // time(15) event(8) pid(7) ppid(7) user(10), each followed by one space.
  const detailAt = 15 + 1 + 8 + 1 + 7 + 1 + 7 + 1 + 10 + 1;
  for (const ev of ALL) {
    const line = plain.format(ev);
    assert.equal(line[detailAt - 1], " ", `${ev.event}: ${JSON.stringify(line)}`);
    assert.notEqual(line[detailAt], " ", `${ev.event}: ${JSON.stringify(line)}`);
  }
  assert.equal(plain.format(SAMPLES.lost).slice(detailAt), "LOST 42 events (kernel)\n");
});

Deno.test("TextFormatter.format() right-aligns pids and shows '-' for an unknown ppid", () => {
  const line = plain.format({ ...SAMPLES.exec, pid: 42, ppid: null });
  assert.ok(line.includes(" exec          42       - root "), line);
});

Deno.test("TextFormatter.format() cuts a long user name with '+'", () => {
  const line = plain.format({ ...SAMPLES.exec, user: "averyveryverylongname" });
  assert.ok(line.includes(" averyvery+ "), line);
  assert.ok(!line.includes("averyveryv"), line);
});

Deno.test("TextFormatter.format() does not split a surrogate pair when cutting a user", () => {
  const line = plain.format({ ...SAMPLES.exec, user: "abcdefgh\u{1F600}xyz" });
  assert.ok(line.isWellFormed(), JSON.stringify(line));
  assert.ok(line.includes(" abcdefgh+  /usr/bin/true"), JSON.stringify(line));
  const ref = plain.format({ ...SAMPLES.exec, user: "root" });
  assert.equal(line.indexOf("/usr/bin/true"), ref.indexOf("/usr/bin/true"));
});

Deno.test("TextFormatter.format() shows a host column after the time when the event has one", () => {
  assert.equal(
    plain.format({ ...SAMPLES.exec, host: "web1" }),
    "03:04:05.123456 web1         exec         200     100 root       /usr/bin/true --flag\n",
  );
  assert.equal(
    plain.format({ ...SAMPLES.lost, host: "db-2" }),
    "03:04:05.123456 db-2         lost           -       - -          LOST 42 events (kernel)\n",
  );
  // Without a host the line is as before: no empty column.
  assert.ok(plain.format(SAMPLES.exec).startsWith("03:04:05.123456 exec "));
});

Deno.test("TextFormatter.format() aligns the detail column of every kind with a host", () => {
  // time(15) host(12) event(8) pid(7) ppid(7) user(10), each followed by one space.
  const detailAt = 15 + 1 + 12 + 1 + 8 + 1 + 7 + 1 + 7 + 1 + 10 + 1;
  for (const ev of ALL) {
    for (const host of ["a", "web-frontend-01.example.com"]) {
      const line = plain.format({ ...ev, host });
      assert.equal(line[detailAt - 1], " ", `${ev.event}: ${JSON.stringify(line)}`);
      assert.notEqual(line[detailAt], " ", `${ev.event}: ${JSON.stringify(line)}`);
      const painted = stripAnsi(colored.format({ ...ev, host }));
      assert.equal(painted, line, `${ev.event}: same columns with colour`);
    }
  }
});

Deno.test("TextFormatter.format() cuts a long host with '+' and escapes control characters", () => {
  const long = plain.format({ ...SAMPLES.exec, host: "web-frontend-01.example.com" });
  assert.ok(long.startsWith("03:04:05.123456 web-fronten+ exec "), long);
  const hostile = plain.format({ ...SAMPLES.exec, host: "h\x1b]0;x\x07" });
  assert.ok(hostile.startsWith("03:04:05.123456 h\\x1b]0;x\\x+ exec "), JSON.stringify(hostile));
  assert.ok(!hostile.includes("\x1b"), JSON.stringify(hostile));
});

Deno.test("TextFormatter.format() without colour writes no ANSI escape", () => {
  for (const ev of ALL) assert.ok(!plain.format(ev).includes(ESC), ev.event);
  assert.ok(!plain.format(exit({ signal: "SIGKILL", exit_code: 9 })).includes(ESC));
});

Deno.test("TextFormatter.format() with colour writes ANSI escapes", () => {
  for (const ev of ALL) assert.ok(colored.format(ev).includes(`${ESC}[`), ev.event);
});

Deno.test("TextFormatter.format() colours a signal death red and a clean exit not", () => {
  const killed = colored.format(exit({ signal: "SIGKILL", exit_code: 9 }));
  assert.ok(killed.includes(`${ESC}[31mSIGKILL${ESC}[0m`), JSON.stringify(killed));
  const failed = colored.format(exit({ exit_status: 3 }));
  assert.ok(failed.includes(`${ESC}[31mexit 3${ESC}[0m`), JSON.stringify(failed));
  const ok = colored.format(exit({ exit_status: 0, exit_code: 0 }));
  assert.ok(!ok.includes(`${ESC}[31mexit 0`), JSON.stringify(ok));
  assert.ok(ok.includes("exit 0"), JSON.stringify(ok));
});

Deno.test("TextFormatter.format() colours a lost event bold red", () => {
  const line = colored.format(SAMPLES.lost);
  assert.ok(line.includes(`${ESC}[1;31mLOST 42 events (kernel)${ESC}[0m`), JSON.stringify(line));
});

Deno.test("TextFormatter.format() escapes control characters in a cmdline", () => {
  const line = plain.format({
    ...SAMPLES.exec,
    cmdline: "evil\n\x1b]0;pwned\x07\x1b[2J\r\t\x7f\u009b end",
  });
  assert.equal(line.indexOf("\n"), line.length - 1, JSON.stringify(line));
  assert.ok(!line.includes(ESC), JSON.stringify(line));
  assert.ok(!line.includes("\x07") && !line.includes("\r") && !line.includes("\u009b"));
  assert.ok(
    line.endsWith("evil\\n\\x1b]0;pwned\\x07\\x1b[2J\\r\\t\\x7f\\x9b end\n"),
    JSON.stringify(line),
  );
});

Deno.test("TextFormatter.format() escapes control characters in comm and user", () => {
  const comm = plain.format({ ...SAMPLES.comm, comm: "a\x1bb" });
  assert.ok(comm.endsWith("renamed to a\\x1bb\n"), JSON.stringify(comm));
  const user = plain.format({ ...SAMPLES.exec, user: "x\ny" });
  assert.ok(user.includes(" x\\ny "), JSON.stringify(user));
});

Deno.test("TextFormatter.format() escapes control characters even with colour on", () => {
  const line = colored.format({ ...SAMPLES.exec, cmdline: "a\x1b[2Jb" });
  assert.ok(line.includes("a\\x1b[2Jb"), JSON.stringify(line));
  assert.ok(!line.includes("\x1b[2J"), JSON.stringify(line));
});

Deno.test("TextFormatter.format() shows exit status, duration and cmdline", () => {
  assert.ok(
    plain.format(SAMPLES.exit).endsWith(" exit 3 after 1.25s: /usr/bin/false\n"),
    plain.format(SAMPLES.exit),
  );
});

Deno.test("TextFormatter.format() shows an exit's CPU (user + system) and peak memory", () => {
  const usage = {
    cpu_user_s: 0.2,
    cpu_sys_s: 0.106,
    max_rss_kb: 106_496,
    read_bytes: 0,
    write_bytes: 4096,
    ctx_voluntary: 3,
    ctx_involuntary: 7,
  };
  const line = plain.format(exit({ exit_status: 0, exit_code: 0, duration_s: 2.01, ...usage }));
  assert.ok(line.endsWith(" exit 0 after 2.01s · cpu 0.31s · 104 MiB: /usr/bin/false\n"), line);
  const small = plain.format(exit({ exit_status: 0, ...usage, max_rss_kb: 1843 }));
  assert.ok(small.includes(" · cpu 0.31s · 1.8 MiB: "), small);
  const none = plain.format(exit({ exit_status: 0, duration_s: undefined }));
  assert.ok(none.endsWith(" exit 0: /usr/bin/false\n"), none);
});

Deno.test("TextFormatter.format() says lost usage is usage of exits, not events", () => {
  const line = plain.format({ ...SAMPLES.lost, count: 3, where: "usage" });
  assert.ok(line.endsWith(" LOST usage of 3 exits\n"), line);
  const one = plain.format({ ...SAMPLES.lost, count: 1, where: "usage" });
  assert.ok(one.endsWith(" LOST usage of 1 exit\n"), one);
});

Deno.test("TextFormatter.format() shows a signal with a core dump", () => {
  const line = plain.format(exit({ signal: "SIGSEGV", core_dumped: true, exit_code: 0x8b }));
  assert.ok(line.includes(" SIGSEGV (core dumped) after 1.25s: "), line);
});

Deno.test("TextFormatter.format() decodes exit_code when the decoded fields are missing", () => {
  const line = plain.format(exit({ exit_code: 9, duration_s: undefined }));
  assert.ok(line.endsWith(" SIGKILL: /usr/bin/false\n"), line);
});

Deno.test("TextFormatter.format() marks thread forks and exits", () => {
  const fork = plain.format({ ...SAMPLES.fork, child_pid: 201, thread: true });
  assert.ok(fork.endsWith("(thread of 200) bash -l\n"), fork);
  assert.ok(fork.includes("     201     100 "), fork);
  const ex = plain.format({ ...SAMPLES.exit, thread: true });
  assert.ok(ex.includes("(thread) exit 3"), ex);
});

Deno.test("TextFormatter.format() details uid, gid, sid, ptrace, comm, coredump", () => {
  assert.ok(plain.format(SAMPLES.uid).endsWith(" ruid=0 euid=1000\n"));
  assert.ok(plain.format(SAMPLES.gid).endsWith(" rgid=0 egid=100\n"));
  assert.ok(plain.format(SAMPLES.sid).endsWith(" new session\n"));
  assert.ok(plain.format(SAMPLES.ptrace).endsWith(" attached by 123\n"));
  assert.ok(plain.format({ ...SAMPLES.ptrace, tracer_pid: 0 }).endsWith(" detached\n"));
  assert.ok(plain.format(SAMPLES.comm).endsWith(" renamed to worker\n"));
  const core = plain.format(SAMPLES.coredump);
  assert.ok(core.includes("     300       1 -"), core);
  assert.ok(core.endsWith(" dumped core\n"), core);
  assert.ok(plain.format({ ...SAMPLES.lost, count: 1 }).endsWith("LOST 1 event (kernel)\n"));
});

Deno.test("TextFormatter.format() shows comm or '-' for an exec without cmdline", () => {
  const withComm = plain.format({ ...SAMPLES.exec, cmdline: "", comm: "true" });
  assert.ok(withComm.endsWith(" [true]\n"), withComm);
  const bare = plain.format({ ...SAMPLES.exec, cmdline: "" });
  assert.ok(bare.endsWith(" -\n"), bare);
});

Deno.test("TextFormatter.format() marks a truncated cmdline", () => {
  const line = plain.format({ ...SAMPLES.exec, cmdline: "x y", cmdline_truncated: true });
  assert.ok(line.endsWith(" x y [truncated]\n"), line);
});

Deno.test("escapeControl() returns clean strings unchanged and escapes bidi overrides", () => {
  assert.equal(escapeControl("plain ✓ 😀 \\x"), "plain ✓ 😀 \\x");
  assert.equal(escapeControl("a\u202eb"), "a\\u202eb");
  assert.equal(escapeControl("\x00\x1f"), "\\x00\\x1f");
});

Deno.test("formatDuration() picks a readable unit", () => {
  assert.equal(formatDuration(0.0123), "12ms");
  assert.equal(formatDuration(1.25), "1.25s");
  assert.equal(formatDuration(12.34), "12.3s");
  assert.equal(formatDuration(185), "3m05s");
  assert.equal(formatDuration(7380), "2h03m");
  assert.equal(formatDuration(3 * 86400 + 4 * 3600), "3d04h");
  assert.equal(formatDuration(-1), "?");
  assert.equal(formatDuration(NaN), "?");
});

Deno.test("useColor() is true only on a terminal without NO_COLOR and not TERM=dumb", () => {
  const cases: [boolean, Record<string, string | undefined>, boolean][] = [
    [true, {}, true],
    [true, { TERM: "xterm-256color" }, true],
    [false, {}, false],
    [false, { TERM: "xterm" }, false],
    [true, { NO_COLOR: "1" }, false],
    [true, { NO_COLOR: "0" }, false],
    [true, { NO_COLOR: "" }, true],
    [true, { NO_COLOR: undefined }, true],
    [false, { NO_COLOR: "" }, false],
    [true, { TERM: "dumb" }, false],
    [true, { TERM: "dumb", NO_COLOR: "" }, false],
  ];
  for (const [tty, env, want] of cases) {
    assert.equal(useColor(tty, env), want, `useColor(${tty}, ${JSON.stringify(env)})`);
  }
});

Deno.test("TextFormatter.format() shows the unit on exec and exit lines", () => {
  const f = new TextFormatter({ color: false });
  const exec = f.format({ ...SAMPLES.exec, cmdline: "/usr/sbin/nginx", unit: "nginx.service" });
  assert.ok(exec.endsWith(" /usr/sbin/nginx · nginx.service\n"), exec);
  const exit = f.format({
    ...SAMPLES.exit,
    exit_code: 0,
    exit_status: 0,
    duration_s: 2.01,
    cmdline: "/usr/sbin/nginx",
    cgroup: "/system.slice/nginx.service",
    unit: "nginx.service",
  });
  assert.ok(exit.endsWith(" exit 0 after 2.01s · nginx.service: /usr/sbin/nginx\n"), exit);
});

Deno.test("TextFormatter.format() shows 12 hex of the container id when there is no unit", () => {
  const f = new TextFormatter({ color: false });
  const id = "0123456789abcdef".repeat(4);
  const exit = f.format({ ...SAMPLES.exit, cmdline: "app", container_id: id });
  assert.ok(exit.endsWith(" after 1.25s · 0123456789ab: app\n"), exit);
  const plain = f.format({ ...SAMPLES.exec, cgroup: "/" });
  assert.ok(!plain.includes("·"), plain);
});
