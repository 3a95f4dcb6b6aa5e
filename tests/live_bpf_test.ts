/**
 * Live tests of the exec BPF program (native/exec_args.bpf.c): the real kernel, the real
 * libbpf and real processes; and the daemon's fallback to /proc, with libbpf hidden and
 * without CAP_BPF.
 */
import assert from "node:assert/strict";
import { NativeError, ProcConnector } from "../lib/kernel/ffi.ts";
import { decodeBatch, type ExecSnapshot } from "../lib/kernel/record.ts";
import { liveTest, marker, MonitorProcess, run } from "./support/live.ts";
import type { ProcEvent } from "../lib/events/event.ts";

const EXEC_ONLY = 0x2;
const BATCH = new Uint8Array(512 * 1024);
const ROOT = new URL("../", import.meta.url).pathname;
const MAIN = `${ROOT}main.ts`;

/** A connector whose reader has taken the BPF program (it does so at its next read). */
async function bpfConnector(): Promise<ProcConnector> {
  const connector = await ProcConnector.open({ eventMask: EXEC_ONLY });
  await connector.execBpf();
  await run("/bin/true", []); // the next read: the reader takes the program
  const deadline = Date.now() + 10_000;
  while (!connector.stats().execBpf && Date.now() < deadline) {
    await connector.nextBatch(BATCH, 100);
  }
  assert.equal(connector.stats().execBpf, true, "the reader took the program");
  return connector;
}

/** The exec snapshots of these pids, in order, until each has `want` of them. */
async function snapshots(
  connector: ProcConnector,
  pids: number[],
  want = 1,
): Promise<Map<number, ExecSnapshot[]>> {
  const got = new Map<number, ExecSnapshot[]>(pids.map((p) => [p, []]));
  const deadline = Date.now() + 15_000;
  const done = () => [...got.values()].every((s) => s.length >= want);
  while (!done() && Date.now() < deadline) {
    const n = await connector.nextBatch(BATCH, 200);
    decodeBatch(new DataView(BATCH.buffer), n, (r) => {
      if (r.kind === "exec" && r.snapshot && got.has(r.tgid)) {
        // The views point into BATCH: keep a copy.
        got.get(r.tgid)!.push({ ...r.snapshot, cmdline: r.snapshot.cmdline.slice() });
      }
    });
  }
  return got;
}

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

liveTest("execBpf(): an exec's cmdline, exe, parent and name come from the kernel", async () => {
  await using connector = await bpfConnector();
  const m = marker("bpf");
  const missed = connector.stats().execBpfMissed;
  // Run from another mount (tmpfs) by a relative path: the exe is the file's full path.
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "pm-bpf-" });
  try {
    await Deno.copyFile("/bin/true", `${dir}/prog-${m}`);
    await Deno.chmod(`${dir}/prog-${m}`, 0o755);
    const child = new Deno.Command("/bin/sh", {
      args: ["-c", `cd ${dir} && exec ./prog-${m} "two words" "" last`],
    }).spawn();
    await child.status;
    const got = await snapshots(connector, [child.pid], 2);
    const [shell, prog] = got.get(child.pid)!;
    assert.equal(
      text(shell.cmdline),
      `/bin/sh\0-c\0cd ${dir} && exec ./prog-${m} "two words" "" last\0`,
    );
    assert.equal(text(prog.cmdline), `./prog-${m}\0two words\0\0last\0`);
    assert.equal(prog.exe, `${dir}/prog-${m}`);
    assert.equal(prog.comm, `prog-${m}`.slice(0, 15));
    assert.equal(prog.ppid, Deno.pid);
    assert.equal(prog.euid, 0);
    assert.equal(prog.gone, false);
    assert.equal(connector.stats().execBpfMissed, missed, "no exec fell back to /proc");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

liveTest("execBpf(): the real and effective uid are the process's own at the exec", async () => {
  await using connector = await bpfConnector();
  const m = marker("bpfuid");
  const child = new Deno.Command("setpriv", {
    args: [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "/bin/sh",
      "-c",
      `exec /bin/true ${m}`,
    ],
  }).spawn();
  await child.status;
  const got = (await snapshots(connector, [child.pid], 3)).get(child.pid)!;
  const last = got.find((s) => text(s.cmdline) === `/bin/true\0${m}\0`);
  assert.ok(last, `no exec of /bin/true among ${got.map((s) => text(s.cmdline)).join(", ")}`);
  assert.equal(last.ruid, 65534);
  assert.equal(last.euid, 65534);
});

liveTest("execBpf(): an exe path over 1024 bytes is left out, never cut", async () => {
  await using connector = await bpfConnector();
  let dir = await Deno.makeTempDir({ prefix: "pm-bpf-deep-" });
  const top = dir;
  try {
    while (dir.length < 1100) {
      dir += `/${"d".repeat(200)}`;
      await Deno.mkdir(dir);
    }
    await Deno.copyFile("/bin/true", `${dir}/t`);
    await Deno.chmod(`${dir}/t`, 0o755);
    const child = await run(`${dir}/t`, ["deep"]);
    const [snap] = (await snapshots(connector, [child.pid])).get(child.pid)!;
    assert.equal(snap.exe, null);
    assert.equal(text(snap.cmdline), `${dir}/t\0deep\0`);
  } finally {
    await Deno.remove(top, { recursive: true });
  }
});

liveTest("execBpf(): 300 short-lived execs all come with their own cmdline", async () => {
  await using connector = await bpfConnector();
  const m = marker("bpfstorm");
  const before = connector.stats();
  const shell = new Deno.Command("/bin/sh", {
    args: ["-c", `i=0; while [ $i -lt 300 ]; do /bin/true ${m} $i; i=$((i+1)); done`],
  }).spawn();
  await shell.status;
  const seen = new Set<string>();
  const deadline = Date.now() + 15_000;
  while (seen.size < 300 && Date.now() < deadline) {
    const n = await connector.nextBatch(BATCH, 200);
    decodeBatch(new DataView(BATCH.buffer), n, (r) => {
      if (r.kind !== "exec" || !r.snapshot) return;
      const args = text(r.snapshot.cmdline).split("\0");
      if (args[1] === m) {
        assert.equal(r.snapshot.exe, "/usr/bin/true");
        seen.add(args[2]);
      }
    });
  }
  assert.equal(seen.size, 300);
  const after = connector.stats();
  assert.equal(after.execBpfMissed, before.execBpfMissed);
  assert.equal(after.execGone, before.execGone);
  assert.equal(after.execBpfDropped, 0);
});

liveTest("execBpf() refuses when the exec snapshot reads /proc anyway (cwd)", async () => {
  await using connector = await ProcConnector.open({
    eventMask: EXEC_ONLY,
    snapshot: { cwd: true },
  });
  await assert.rejects(
    () => connector.execBpf(),
    (error) => error instanceof NativeError && error.code === "EOPNOTSUPP",
  );
  assert.equal(connector.stats().execBpf, false);
});

/** Runs a marked `sh` and returns its exec as the daemon reported it. */
async function markedExec(monitor: MonitorProcess): Promise<ProcEvent> {
  const m = marker("bpfd");
  await run("/bin/sh", ["-c", "exit 0", m]);
  return await monitor.waitFor(
    "the marked exec",
    (e): e is ProcEvent => e.event === "exec" && e.cmdline === `/bin/sh -c exit 0 ${m}`,
  );
}

/**
 * Starts the daemon (`-d -e exec`), behind `prefix` (a command that execs the rest), and
 * returns a marked exec and the log once the daemon has said where cmdlines come from.
 */
async function daemonExec(
  args: string[],
  prefix: string[] = [],
): Promise<{ exec: ProcEvent; stderr: string }> {
  const argv = [...prefix, Deno.execPath(), "run", "-q", "-A", MAIN];
  await using monitor = await MonitorProcess.start(["-d", "-e", "exec", ...args], {}, {
    argv,
    cwd: ROOT,
  });
  // The log line comes once the program is loaded, or not: then why.
  await monitor.until(() => /Exec cmdlines are /.test(monitor.stderr), 15_000, "the BPF line");
  return { exec: await markedExec(monitor), stderr: monitor.stderr };
}

liveTest("the daemon takes exec cmdlines in the kernel and says so", async () => {
  const { exec, stderr } = await daemonExec([]);
  assert.match(stderr, /Exec cmdlines are taken in the kernel at each exec \(BPF\)/);
  assert.equal(exec.event === "exec" && exec.exe, "/usr/bin/dash");
});

liveTest("--no-bpf: the daemon reads each exec's /proc, quietly", async () => {
  await using monitor = await MonitorProcess.start(["-d", "-e", "exec", "--no-bpf"]);
  const exec = await markedExec(monitor);
  assert.equal(exec.event === "exec" && exec.exe, "/usr/bin/dash");
  assert.doesNotMatch(monitor.stderr, /Exec cmdlines are/);
});

/** The daemon behind `prefix` falls back to /proc, says `why`, and still reports exactly. */
async function fallsBack(prefix: string[], why: string): Promise<void> {
  const { exec, stderr } = await daemonExec([], prefix);
  assert.ok(
    stderr.includes(`Exec cmdlines are read from /proc at each exec: "${why}"`),
    `not in the log:\n${stderr}`,
  );
  assert.equal(exec.event === "exec" && exec.exe, "/usr/bin/dash");
}

liveTest("without libbpf.so.1 the daemon reads /proc and says why", async () => {
  // A mount namespace of its own, where libbpf.so.1 is an empty file.
  const hide = 'mount --bind /dev/null "$(readlink -f "$0")" && exec "$@"';
  await fallsBack(
    ["unshare", "-m", "--propagation", "private", "sh", "-c", hide, libbpfPath()],
    "libbpf.so.1 is not installed (Debian: libbpf1)",
  );
});

liveTest("without CAP_BPF the daemon reads /proc and says why", async () => {
  await fallsBack(
    ["capsh", "--drop=cap_bpf,cap_perfmon,cap_sys_admin", "--", "-c", 'exec "$0" "$@"'],
    "BPF needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)",
  );
});

/** Where the dynamic linker finds libbpf.so.1 on this machine. */
function libbpfPath(): string {
  for (const dir of ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib64"]) {
    try {
      Deno.statSync(`${dir}/libbpf.so.1`);
      return `${dir}/libbpf.so.1`;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  throw new Error("libbpf.so.1 is not installed here (Debian: libbpf1)");
}
