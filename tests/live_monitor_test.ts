/**
 * Live tests: the real kernel connector, the real program in direct mode, real processes.
 */
import assert from "node:assert/strict";
import type { CommEvent, ExecEvent, ExitEvent, ForkEvent, ProcEvent } from "../lib/events/event.ts";
import { liveTest, marker, MonitorProcess, run, runMain } from "./support/live.ts";
import { listeningPorts } from "./support/ports.ts";

const isExec = (m: string) => (e: ProcEvent): e is ExecEvent =>
  e.event === "exec" && e.cmdline.includes(m);
const isExit = (m: string) => (e: ProcEvent): e is ExitEvent =>
  e.event === "exit" && e.cmdline.includes(m);
const TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

liveTest("a child shows fork, exec and exit with cmdline, user and exit status", async () => {
  await using monitor = await MonitorProcess.start(["-d"]);
  const m = marker("basic");
  // Alive for 50 ms: long enough for a reader slowed by ASan (make asan) to read its /proc.
  const child = await run("/bin/sh", ["-c", "sleep 0.05; exit 3", m]);
  assert.equal(child.status.code, 3);

  const fork = await monitor.waitFor(
    "fork",
    (e): e is ForkEvent => e.event === "fork" && e.child_pid === child.pid,
  );
  assert.equal(fork.child_tgid, child.pid);
  assert.equal(fork.parent_tgid, Deno.pid);
  assert.equal(fork.user, "root");
  assert.equal(fork.uid, 0);
  assert.match(fork.time, TIME);
  assert.equal(fork.thread, undefined);

  const exec = await monitor.waitFor("exec", isExec(m));
  assert.equal(exec.pid, child.pid);
  assert.equal(exec.cmdline, `/bin/sh -c sleep 0.05; exit 3 ${m}`);
  assert.equal(exec.user, "root");
  assert.equal(exec.uid, 0);
  assert.equal(exec.ppid, Deno.pid);
  assert.match(exec.time, TIME);

  const exit = await monitor.waitFor("exit", isExit(m));
  assert.equal(exit.pid, child.pid);
  assert.equal(exit.exit_code, 768);
  assert.equal(exit.exit_status, 3);
  assert.equal(exit.signal, undefined);
  assert.equal(exit.core_dumped, false);
  assert.equal(exit.user, "root");
  assert.equal(exit.uid, 0);
  assert.equal(exit.cmdline, `/bin/sh -c sleep 0.05; exit 3 ${m}`);
  assert.equal(exit.ppid, Deno.pid);
  assert.ok(typeof exit.duration_s === "number" && exit.duration_s >= 0 && exit.duration_s < 10);

  // Kernel order: fork before exec before exit.
  const order = monitor.events.filter((e) => e === fork || e === exec || e === exit);
  assert.deepEqual(order, [fork, exec, exit]);
  const done = await monitor.stop();
  assert.equal(done.code, 0, done.stderr);
});

liveTest("a child killed with SIGKILL exits with signal SIGKILL", async () => {
  await using monitor = await MonitorProcess.start(["-d", "-e", "exec,exit"]);
  const m = marker("kill");
  const child = new Deno.Command("/bin/sh", { args: ["-c", "read x", m], stdin: "piped" }).spawn();
  // Killed only once it runs sh: a kill before the exec would end a process with no cmdline.
  await monitor.waitFor("exec", isExec(m));
  child.kill("SIGKILL");
  await child.status;
  const exit = await monitor.waitFor(
    "exit",
    (e): e is ExitEvent => e.event === "exit" && e.pid === child.pid,
  );
  assert.equal(exit.signal, "SIGKILL");
  assert.equal(exit.exit_status, undefined);
  assert.equal(exit.exit_code, 9);
  assert.equal(exit.user, "root");
  assert.equal(exit.cmdline, `/bin/sh -c read x ${m}`);
  assert.ok(!monitor.events.some((e) => e.event === "fork"), "no forks with -e exec,exit");
});

liveTest("-e comm reports a process renaming itself", async () => {
  await using monitor = await MonitorProcess.start(["-d", "-e", "comm,exit"]);
  const m = marker("comm");
  const name = `w${m.slice(-8)}`; // comm holds 15 characters
  const child = await run("/bin/sh", ["-c", `printf %s ${name} > /proc/self/comm`, m]);
  const comm = await monitor.waitFor(
    "comm",
    (e): e is CommEvent => e.event === "comm" && e.comm === name,
  );
  assert.equal(comm.pid, child.pid);
  await monitor.waitFor("exit", isExit(m));
});

liveTest("--match keeps only processes whose cmdline matches", async () => {
  const m = marker("match");
  await using monitor = await MonitorProcess.start(["-d", "--match", `${m}-yes`]);
  await run("/bin/true", [`${m}-no`]);
  await run("/bin/true", [`${m}-yes`]);
  await monitor.waitFor("exit", isExit(`${m}-yes`));
  // Events arrive in kernel order, so the -no process's events came before this exit.
  assert.ok(monitor.events.some(isExec(`${m}-yes`)));
  assert.ok(!monitor.events.some((e) => JSON.stringify(e).includes(`${m}-no`)));
});

liveTest("--pid follows a process and its descendants only", async () => {
  const m = marker("pid");
  const root = new Deno.Command("/bin/sh", {
    args: ["-c", `read x; /bin/true ${m}-child; exit 0`, `${m}-root`],
    stdin: "piped",
  }).spawn();
  try {
    await using monitor = await MonitorProcess.start(["-d", "--pid", String(root.pid)]);
    await run("/bin/true", [`${m}-outsider`]);
    const writer = root.stdin.getWriter();
    await writer.write(new TextEncoder().encode("\n"));
    await writer.close();
    await root.status;
    const exec = await monitor.waitFor("child exec", isExec(`${m}-child`));
    assert.ok(exec.ppid === root.pid);
    await monitor.waitFor(
      "root exit",
      (e): e is ExitEvent => e.event === "exit" && e.pid === root.pid,
    );
    assert.ok(!monitor.events.some((e) => JSON.stringify(e).includes(`${m}-outsider`)));
    assert.ok(monitor.events.some((e) => e.event === "fork" && e.parent_tgid === root.pid));
  } finally {
    try {
      root.kill("SIGKILL");
    } catch { /* already gone */ }
  }
});

const THREAD_SCRIPT =
  "import threading; t = threading.Thread(target=lambda: None); t.start(); t.join()";

liveTest("a thread is hidden by default and reported with --threads", async () => {
  const m = marker("thread");
  {
    await using monitor = await MonitorProcess.start(["-d", "--match", m]);
    const py = await run("/usr/bin/python3", ["-c", THREAD_SCRIPT, m]);
    await monitor.waitFor("exit", (e): e is ExitEvent => e.event === "exit" && e.pid === py.pid);
    assert.ok(!monitor.events.some((e) => "thread" in e), "no thread events without --threads");
  }
  {
    await using monitor = await MonitorProcess.start(["-d", "--threads", "--match", m]);
    const py = await run("/usr/bin/python3", ["-c", THREAD_SCRIPT, m]);
    await monitor.waitFor(
      "exit",
      (e): e is ExitEvent => e.event === "exit" && e.pid === py.pid && !e.thread,
    );
    const threadFork = monitor.events.find((e): e is ForkEvent =>
      e.event === "fork" && e.thread === true && e.child_tgid === py.pid
    );
    assert.ok(threadFork, "a fork with thread: true");
    assert.notEqual(threadFork.child_pid, py.pid);
    assert.ok(threadFork.cmdline.includes(m));
    // The thread's exit may come just after its process's: wait for it.
    const threadExit = await monitor.waitFor(
      "thread exit",
      (e): e is ExitEvent =>
        e.event === "exit" && e.thread === true && e.pid === threadFork.child_pid,
    );
    assert.ok(threadExit.cmdline.includes(m));
    assert.equal(threadExit.user, "root");
  }
});

liveTest("a process started before the monitor has user and cmdline on its exit", async () => {
  const m = marker("before");
  const child = new Deno.Command("/bin/sh", { args: ["-c", "read x", m], stdin: "piped" }).spawn();
  try {
    await using monitor = await MonitorProcess.start(["-d", "-e", "exit"]);
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode("\n"));
    await writer.close();
    await child.status;
    const exit = await monitor.waitFor(
      "exit",
      (e): e is ExitEvent => e.event === "exit" && e.pid === child.pid,
    );
    assert.equal(exit.user, "root");
    assert.equal(exit.cmdline, `/bin/sh -c read x ${m}`);
    assert.equal(exit.exit_status, 0);
    assert.ok(typeof exit.duration_s === "number" && exit.duration_s > 0);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
});

liveTest(
  "a cmdline with quotes, newlines, control bytes and invalid UTF-8 gives valid JSON",
  async () => {
    await using monitor = await MonitorProcess.start(["-d", "-e", "exec"]);
    const m = marker("bytes");
    // printf builds the hostile argument; sh execs /bin/true with it.
    const script =
      `exec /bin/true "$(printf '%s "q" \\\\ \\n \\001 \\033[31m \\377\\376 end' ${m})"`;
    await run("/bin/sh", ["-c", script]);
    const exec = await monitor.waitFor(
      "exec",
      (e): e is ExecEvent => e.event === "exec" && e.cmdline.startsWith(`/bin/true ${m}`),
    );
    assert.equal(exec.cmdline, `/bin/true ${m} "q" \\ \n \u0001 \u001b[31m \ufffd\ufffd end`);
  },
);

liveTest("a 100 KiB argument is cut at 4096 bytes and marked", async () => {
  await using monitor = await MonitorProcess.start(["-d", "-e", "exec,exit"]);
  const m = marker("long");
  await run("/bin/true", [m, "x".repeat(100 * 1024)]);
  const exec = await monitor.waitFor("exec", isExec(m));
  assert.equal(exec.cmdline_truncated, true);
  assert.equal(new TextEncoder().encode(exec.cmdline).length, 4096);
  const exit = await monitor.waitFor("exit", isExit(m));
  assert.equal(exit.cmdline_truncated, true);
});

liveTest("SIGTERM stops the monitor with exit code 0 and a clean log", async () => {
  const monitor = await MonitorProcess.start(["-d"]);
  const done = await monitor.stop("SIGTERM");
  assert.equal(done.code, 0, done.stderr);
  assert.match(done.stderr, /Stopping on signal/);
  assert.doesNotMatch(done.stderr, /error/i);
});

liveTest("--format text prints aligned, uncoloured lines on a pipe", async () => {
  await using monitor = await MonitorProcess.start(["-d", "--format", "text"]);
  const m = marker("text");
  await run("/bin/sh", ["-c", "exit 4", m]);
  const mine = () => monitor.stdoutText.split("\n").filter((l) => l.includes(m));
  await monitor.until(() => mine().length >= 2, 15_000, "text exec and exit lines");
  const [exec, exit] = mine();
  assert.match(exec, /^\d\d:\d\d:\d\d\.\d{6} exec +\d+ +\d+ root +\/bin\/sh -c exit 4 pm-text-/);
  assert.match(
    exit,
    /^\d\d:\d\d:\d\d\.\d{6} exit +\d+ +\d+ root +exit 4 after .*: \/bin\/sh -c exit 4 pm-text-/,
  );
  // Aligned: the user column starts at the same offset on both lines.
  assert.equal(exec.indexOf(" root "), exit.indexOf(" root "));
  assert.ok(!monitor.stdoutText.includes("\x1b["), "no ANSI escapes on a pipe");
});

liveTest("a monitor in a new user namespace says the kernel ignores it and exits 1", async () => {
  const out = await runMain(["-d"], { prefix: ["unshare", "--user", "--map-root-user"] });
  assert.equal(out.code, 1, out.stderr);
  assert.match(out.stderr, /initial user and pid namespace/);
  assert.equal(out.stdout, "");
});

liveTest("--syslog sends the logs to the syslog socket, not stderr", async () => {
  const dir = await Deno.makeTempDir();
  const socket = `${dir}/log.sock`;
  const file = `${dir}/regular-file`;
  await Deno.writeTextFile(file, "keep me");
  // A syslog daemon stand-in: a datagram socket that prints what it receives.
  const daemon = new Deno.Command("/usr/bin/python3", {
    args: [
      "-c",
      `import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.settimeout(20)
print("ready", flush=True)
while True:
    m = s.recv(65536).decode()
    print(m, flush=True)
    if "regular file" in m: break`,
      socket,
    ],
    stdout: "piped",
  }).spawn();
  try {
    const lines = daemon.stdout.pipeThrough(new TextDecoderStream()).getReader();
    assert.match((await lines.read()).value ?? "", /ready/);
    const out = await runMain(["--syslog", "-s", file], {
      env: { PROCMONITOR_SYSLOG_SOCKET: socket },
    });
    assert.equal(out.code, 1);
    assert.equal(out.stderr, "");
    let received = "";
    while (!received.includes("regular file")) {
      const { value, done } = await lines.read();
      if (done) break;
      received += value;
    }
    // daemon facility (3) * 8 + err (3) = 27
    assert.match(
      received,
      /<27>.*procMonitor\[\d+\]: .*Cannot listen on .*regular-file as it is a regular file/,
    );
    assert.equal(await Deno.readTextFile(file), "keep me");
  } finally {
    try {
      daemon.kill();
    } catch { /* done */ }
    await daemon.status;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--syslog without a syslog socket says so and exits 1", async () => {
  const out = await runMain(["--syslog", "-d"], {
    env: { PROCMONITOR_SYSLOG_SOCKET: "/nonexistent/log" },
  });
  assert.equal(out.code, 1);
  assert.equal(
    out.stderr,
    "procMonitor: Cannot log to syslog as /nonexistent/log is not a socket (is a syslog daemon or journald running?)\n",
  );
});

// Reads a line, then execs from a second thread: the kernel replaces the main thread.
const EXEC_FROM_THREAD = `
import os, sys, threading
sys.stdin.readline()
def run():
    os.execv("/bin/sh", ["/bin/sh", "-c", "sleep 0.1 & wait", sys.argv[1]])
t = threading.Thread(target=run)
t.start()
t.join()
`;

liveTest("an exec from a non-leader thread is not the process's exit; --pid keeps it", async () => {
  const m = marker("dethread");
  const py = new Deno.Command("python3", {
    args: ["-c", EXEC_FROM_THREAD, m],
    stdin: "piped",
  }).spawn();
  try {
    await using monitor = await MonitorProcess.start(["-d", "--pid", String(py.pid)]);
    const writer = py.stdin.getWriter();
    await writer.write(new TextEncoder().encode("\n"));
    await writer.close();
    assert.equal((await py.status).code, 0);
    const exec = await monitor.waitFor("exec from the thread", isExec(m));
    assert.equal(exec.pid, py.pid);
    // The sleep that sh starts after the exec is still in the --pid subtree.
    await monitor.waitFor(
      "sh's fork of sleep",
      (e): e is ForkEvent => e.event === "fork" && e.parent_tgid === py.pid && !e.thread,
    );
    const exit = await monitor.waitFor("the process's exit", isExit(m));
    assert.equal(exit.pid, py.pid);
    assert.equal(exit.exit_status, 0);
    const exits = monitor.events.filter((e) => e.event === "exit" && e.pid === py.pid);
    assert.deepEqual(exits, [exit], "one exit for the process: the sh's, not the old thread's");
  } finally {
    try {
      py.kill("SIGKILL");
    } catch { /* already gone */ }
  }
});

liveTest("SIGUSR1 opens no debugger: the kernel drops it and the monitor goes on", async () => {
  await using monitor = await MonitorProcess.start(["-d", "-e", "exec"]);
  // Deno's own SIGUSR1 listener, which would start its inspector on 127.0.0.1:9229, is
  // installed 500 ms after start.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  monitor.signal("SIGUSR1");
  monitor.signal("SIGUSR1");
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.doesNotMatch(monitor.stderr, /Debugger|inspector/i);
  assert.deepEqual(listeningPorts(monitor.pid), [], "procMonitor -d listens on no TCP port");
  const m = marker("usr1-ignored");
  await run("/bin/sh", ["-c", "sleep 0.1", m]);
  await monitor.waitFor("an exec after SIGUSR1", isExec(m));
  const done = await monitor.stop();
  assert.equal(done.code, 0, done.stderr);
});

liveTest("SIGUSR2 logs one line of counters and the monitor goes on", async () => {
  await using monitor = await MonitorProcess.start(["-d", "-e", "exec"]);
  monitor.signal("SIGUSR2");
  await monitor.until(() => /Stats: /.test(monitor.stderr), 10_000, "the stats line");
  assert.match(
    monitor.stderr,
    /Stats: \d+ kernel events, 0 lost in the kernel, 0 in the ring; table \d+ processes, \d+ bytes; 0 clients, largest queue 0 bytes; RSS \d+ bytes; \d+ open files/,
  );
  const m = marker("usr2");
  await run("/bin/sh", ["-c", "sleep 0.1", m]);
  await monitor.waitFor("an exec after the stats", isExec(m));
  const done = await monitor.stop();
  assert.equal(done.code, 0, done.stderr);
});
