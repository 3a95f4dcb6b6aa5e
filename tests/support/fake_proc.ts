/**
 * Stand-ins for /proc/PID under a fake proc root (PROCMONITOR_PROC_ROOT), and shells whose
 * pid is known before they exec, so a test can put a stand-in in place first.
 */
import assert from "node:assert/strict";
import { ProcConnector } from "../../lib/kernel/ffi.ts";
import { decodeBatch } from "../../lib/kernel/record.ts";

/** A shell that execs /bin/true with `word` once it reads a line: its pid is known first. */
export function waitingShell(word: string): Deno.ChildProcess {
  return new Deno.Command("/bin/sh", {
    args: ["-c", `read x; exec /bin/true ${word}`],
    stdin: "piped",
  }).spawn();
}

/** Lets a {@link waitingShell} exec, and waits for it to end. */
export async function release(child: Deno.ChildProcess): Promise<void> {
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("\n"));
  await writer.close();
  await child.status;
}

/**
 * A stand-in /proc/PID under `root` whose stat says the process started `startTicks`
 * after boot (fields 3..22 of proc(5): state, ppid, pgrp, session, tty, tpgid, flags, 12
 * counters and values, then starttime), with `cmdline` (a FIFO that blocks whoever opens
 * it when "fifo"), an exe link to /bin/true, and `ppid` as its parent.
 */
export async function fakeProcess(
  root: string,
  pid: number,
  startTicks: string,
  cmdline: string | "fifo",
  ppid = "1",
): Promise<string> {
  const dir = `${root}/${pid}`;
  await Deno.mkdir(dir);
  const fields = ["S", ppid, "1", "1", "0", "-1", "0", ...Array(12).fill("0"), startTicks, "0"];
  await Deno.writeTextFile(`${dir}/stat`, `${pid} (true) ${fields.join(" ")}\n`);
  if (cmdline === "fifo") {
    const out = await new Deno.Command("mkfifo", { args: [`${dir}/cmdline`] }).output();
    assert.ok(out.success);
  } else {
    await Deno.writeTextFile(`${dir}/cmdline`, cmdline);
  }
  await Deno.symlink("/bin/true", `${dir}/exe`);
  return dir;
}

/** What an exec record's snapshot said. */
export interface SeenExec {
  cmdline: string;
  gone: boolean;
  /** -1 when unknown. */
  ppid: number;
}

/**
 * The exec snapshots `connector` delivers for each of `pids`, collected until every pid has
 * `count` of them or 10 s pass. A waiting shell execs twice: itself, then /bin/true.
 */
export async function collectExecs(
  connector: ProcConnector,
  pids: number[],
  count = 2,
): Promise<Map<number, SeenExec[]>> {
  const got = new Map<number, SeenExec[]>(pids.map((pid) => [pid, []]));
  const buffer = new Uint8Array(256 * 1024);
  const deadline = Date.now() + 10_000;
  while ([...got.values()].some((execs) => execs.length < count) && Date.now() < deadline) {
    const n = await connector.nextBatch(buffer, 500);
    decodeBatch(new DataView(buffer.buffer), n, (r) => {
      if (r.kind !== "exec" || r.snapshot === null) return;
      got.get(r.tgid)?.push({
        cmdline: new TextDecoder().decode(r.snapshot.cmdline),
        gone: r.snapshot.gone,
        ppid: r.snapshot.ppid,
      });
    });
  }
  return got;
}

/**
 * An empty fake proc root, and a connector for exec events (or the events of `eventMask`)
 * that reads processes there.
 */
export async function execConnectorOnFakeProc(eventMask = 0x2 /* exec */): Promise<
  { root: string; connector: ProcConnector }
> {
  const root = await Deno.makeTempDir({ prefix: "procmonitor-fakeproc-" });
  // libprocconn reads the variable when it opens; nothing else in this process needs it.
  Deno.env.set("PROCMONITOR_PROC_ROOT", root);
  try {
    return { root, connector: await ProcConnector.open({ eventMask }) };
  } finally {
    Deno.env.delete("PROCMONITOR_PROC_ROOT");
  }
}
