/**
 * Live: procMonitor run as an unprivileged user (nobody) on a 6.6+ kernel, where the proc
 * connector needs no capability. It must work and say what it cannot see.
 */
import assert from "node:assert/strict";
import type { ExecEvent, ProcEvent } from "../lib/events/event.ts";
import { liveTest, marker, MonitorProcess, run } from "./support/live.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const NOBODY = 65534;

/** A copy of what `deno run main.ts` needs, readable by anybody (the checkout may not be). */
async function publicCopy(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "procmonitor-nobody-" });
  await Deno.chmod(dir, 0o755);
  const copy = async (from: string, to: string) => {
    const out = await new Deno.Command("cp", { args: ["-r", from, to] }).output();
    assert.ok(out.success, `cp ${from}: ${new TextDecoder().decode(out.stderr)}`);
  };
  for (const f of ["main.ts", "lib", "deno.json", "deno.lock"]) await copy(`${ROOT}${f}`, dir);
  await Deno.mkdir(`${dir}/native`);
  await copy(`${ROOT}native/libprocconn.so`, `${dir}/native/`);
  await copy(Deno.execPath(), `${dir}/deno`);
  const info = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"] }).output();
  await copy(JSON.parse(new TextDecoder().decode(info.stdout)).denoDir, `${dir}/denodir`);
  const chmod = await new Deno.Command("chmod", { args: ["-R", "a+rX", dir] }).output();
  assert.ok(chmod.success);
  return dir;
}

liveTest("as nobody on 6.6+ it reports execs and says what it cannot see", async () => {
  const dir = await publicCopy();
  try {
    await using monitor = await MonitorProcess.start(
      ["-d", "-e", "exec,exit"],
      { HOME: dir, DENO_DIR: `${dir}/denodir` },
      {
        argv: [
          "setpriv",
          `--reuid=${NOBODY}`,
          `--regid=${NOBODY}`,
          "--clear-groups",
          "--",
          `${dir}/deno`,
          "run",
          "-q",
          "-A",
          `${dir}/main.ts`,
        ],
        cwd: dir,
      },
    );
    assert.match(
      monitor.stderr,
      /Running as uid 65534: without CAP_SYS_PTRACE, the exe of other users' processes is not shown/,
    );
    assert.match(monitor.stderr, /reader thread could not get SCHED_FIFO/);
    // Exit resource usage needs CAP_NET_ADMIN: one warning, and the monitor runs on.
    const usage =
      /Exit events carry no resource usage.*: "registering for taskstats needs CAP_NET_ADMIN"/g;
    assert.equal(monitor.stderr.match(usage)?.length, 1, monitor.stderr);
    const m = marker("nobody");
    // Alive a while: a reader at normal priority may come late to a process's /proc.
    const child = await run("/bin/sh", ["-c", "sleep 0.3", m]);
    const exec = await monitor.waitFor(
      "the root child's exec",
      (e: ProcEvent): e is ExecEvent => e.event === "exec" && e.cmdline.includes(m),
    );
    assert.equal(exec.pid, child.pid);
    assert.equal(exec.cmdline, `/bin/sh -c sleep 0.3 ${m}`);
    assert.equal(exec.user, "root");
    assert.equal(exec.exe, undefined, "another user's exe is not readable without CAP_SYS_PTRACE");
    const done = await monitor.stop();
    assert.equal(done.code, 0, done.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
