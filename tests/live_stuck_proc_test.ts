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
import { liveTest, marker } from "./support/live.ts";

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
      assert.deepEqual(execs.get(hung.pid)?.[1], { cmdline: "", gone: true });
      assert.deepEqual(execs.get(next.pid)?.[1], { cmdline: "NEXT\0", gone: false });
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
