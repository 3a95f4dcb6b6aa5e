/**
 * Live: a /proc read that never returns (a process in D state, a hung FUSE or NFS mapping)
 * must not stop collection or shutdown. Stand-in: a fake proc root whose `cmdline` is a
 * FIFO nobody writes to, so opening it blocks the reader as a hung read would.
 */
import assert from "node:assert/strict";
import {
  collectExecs,
  execConnectorOnFakeProc,
  fakeProcess,
  release,
  waitingShell,
} from "./support/fake_proc.ts";
import { liveTest, marker, run } from "./support/live.ts";

liveTest(
  "a hung /proc read: the exec goes out without cmdline, later ones flow, close returns",
  async () => {
    const { root, connector } = await execConnectorOnFakeProc();
    const hung = waitingShell(marker("hung"));
    const fifo = `${await fakeProcess(root, hung.pid, "1", "fifo")}/cmdline`;
    try {
      await release(hung);
      // After the hung one, a process whose stand-in answers: the takeover's reader reads it.
      const next = waitingShell(marker("next"));
      await fakeProcess(root, next.pid, "1", "NEXT\0");
      await release(next);

      const execs = await collectExecs(connector, [hung.pid, next.pid]);
      // Each shell execs twice: itself at spawn (before its stand-in existed), then /bin/true.
      assert.deepEqual(execs.get(hung.pid)?.[1], { cmdline: "", gone: true, ppid: -1 });
      assert.deepEqual(execs.get(next.pid)?.[1], { cmdline: "NEXT\0", gone: false, ppid: 1 });
      assert.equal(connector.stats().execStuck, 1);
      const started = performance.now();
      await connector.close();
      assert.ok(performance.now() - started < 5000, "close() did not wait for the hung read");
    } finally {
      // Let the reader left behind finish its read, so the test leaves no thread blocked.
      const writer = await Deno.open(fifo, { write: true });
      writer.close();
      await Deno.remove(root, { recursive: true });
    }
  },
);

/** This process's NETLINK_GENERIC sockets (taskstats), by inode: bytes queued and drops. */
async function genericNetlinkSockets(): Promise<Map<string, { rmem: number; drops: number }>> {
  const mine = new Set<string>();
  for await (const fd of Deno.readDir("/proc/self/fd")) {
    const target = await Deno.readLink(`/proc/self/fd/${fd.name}`).catch(() => "");
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    if (inode) mine.add(inode);
  }
  const found = new Map<string, { rmem: number; drops: number }>();
  // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode; Eth 16 = NETLINK_GENERIC.
  for (const line of (await Deno.readTextFile("/proc/self/net/netlink")).split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 10 && f[1] === "16" && mine.has(f[9])) {
      found.set(f[9], { rmem: Number(f[4]), drops: Number(f[8]) });
    }
  }
  return found;
}

liveTest(
  "close with the reader stuck in a /proc read still ends the taskstats registration",
  async () => {
    const before = await genericNetlinkSockets();
    const { root, connector } = await execConnectorOnFakeProc(0x2 | 0x80000000 /* exec, exit */);
    const hung = Array.from({ length: 5 }, (_, i) => waitingShell(marker(`hung${i}`)));
    const fifos: string[] = [];
    try {
      assert.equal(connector.stats().usage, true, "taskstats registered");
      const ours = [...(await genericNetlinkSockets()).keys()].filter((i) => !before.has(i));
      assert.equal(ours.length, 1, "one taskstats socket");
      for (const shell of hung) {
        fifos.push(`${await fakeProcess(root, shell.pid, "1", "fifo")}/cmdline`);
      }
      await Promise.all(hung.map(release));
      // Each hung exec holds a reader PC_STUCK_MS (250 ms) before the next one takes over,
      // only to hang on the next exec: once the first has been taken over, a reader is
      // stuck for the next second. Closing then leaves it unjoined (pc_close() returns 1).
      const deadline = Date.now() + 10_000;
      while (connector.stats().execStuck < 1 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(connector.stats().execStuck, 1);
      const started = performance.now();
      await connector.close();
      const took = performance.now() - started;
      assert.ok(took >= 1500 && took < 5000, `close() waited out the stuck reader: ${took} ms`);

      // Exits after the close: with the registration gone the kernel queues none of them.
      const sh = await run("/bin/sh", ["-c", "for i in 1 2 3 4 5 6 7 8 9 10; do /bin/true; done"]);
      assert.equal(sh.status.code, 0);
      await new Promise((r) => setTimeout(r, 200));
      const after = (await genericNetlinkSockets()).get(ours[0]);
      assert.ok(after, "the socket stays open while a reader may still read it");
      assert.equal(after.rmem, 0, "nothing queued for the exits after close");
      const again = await run("/bin/sh", ["-c", "/bin/true; /bin/true"]);
      assert.equal(again.status.code, 0);
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual((await genericNetlinkSockets()).get(ours[0]), after, "nor dropped");
    } finally {
      // Unblock every reader left in a FIFO's open (an O_RDWR open never blocks, and counts as
      // a writer), and put a plain file where each FIFO was for any reader still to come.
      const writers = await Promise.all(
        fifos.map((fifo) => Deno.open(fifo, { read: true, write: true })),
      );
      for (const fifo of fifos) {
        await Deno.writeTextFile(`${fifo}.plain`, "");
        await Deno.rename(`${fifo}.plain`, fifo);
      }
      for (const writer of writers) writer.close();
      await Deno.remove(root, { recursive: true });
    }
  },
);
