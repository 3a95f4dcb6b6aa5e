/**
 * Live tests of the Unix-socket clients whose sockets libprocconn owns (README, Design,
 * "Native clients"): the real program against the real kernel, with clients this project
 * did not write (nc -U). What a user relies on: every client gets the same lines; one that
 * never reads neither slows the others nor stays connected forever; one that leaves is
 * noticed at once, with no event sent to find out.
 */
import assert from "node:assert/strict";
import { liveTest, marker, MonitorProcess, run } from "./support/live.ts";

const NC = "/usr/bin/nc";
const EXEC_TIMEOUT = 15_000;
const CONNECTED = /Client "[^"]+" connected to/g;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `cond` until it holds or `ms` pass. */
async function waitUntil(cond: () => boolean, ms: number, what: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() >= deadline) throw new Error(`Timed out after ${ms} ms waiting for ${what()}`);
    await delay(10);
  }
}

function connectedCount(monitor: MonitorProcess): number {
  return monitor.stderr.match(CONNECTED)?.length ?? 0;
}

/** Lines read from a stream as they arrive; `onLine` sees each one. */
class Lines {
  readonly lines: string[] = [];
  ended = false;
  readonly done: Promise<void>;

  constructor(source: ReadableStream<Uint8Array>, readonly keep = true) {
    this.done = this.#pump(source);
  }

  count = 0;
  onLine: ((line: string) => void) | null = null;

  async #pump(source: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let partial = "";
    try {
      for await (const chunk of source) {
        partial += decoder.decode(chunk, { stream: true });
        let nl;
        while ((nl = partial.indexOf("\n")) >= 0) {
          const line = partial.slice(0, nl);
          partial = partial.slice(nl + 1);
          this.count++;
          if (this.keep) this.lines.push(line);
          this.onLine?.(line);
        }
      }
    } catch {
      // Killed: the stream ends.
    } finally {
      this.ended = true;
    }
  }

  has(pred: (line: string) => boolean): boolean {
    return this.lines.some(pred);
  }
}

/** `nc -U PATH`, stdin kept open (nc may end its sending side at stdin's EOF). */
class NcClient implements AsyncDisposable {
  readonly out: Lines;
  readonly #proc: Deno.ChildProcess;

  constructor(path: string, keep = true) {
    this.#proc = new Deno.Command(NC, {
      args: ["-U", path],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.out = new Lines(this.#proc.stdout, keep);
  }

  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      this.#proc.kill(signal);
    } catch {
      // Gone already.
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.kill("SIGKILL");
    await this.#proc.status;
    await this.#proc.stdin.close().catch(() => {});
    await this.out.done;
  }
}

async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "pm-native-" });
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }).catch(() => {}),
  };
}

/** A process whose exec, forks and exit carry `m` (it lives long enough to be read). */
async function runMarker(m: string): Promise<number> {
  const { pid, status } = await run("/bin/sh", ["-c", "sleep 0.05; /bin/true; exit 0", m]);
  assert.equal(status.code, 0);
  return pid;
}

const isExecOf = (m: string) => (line: string) =>
  line.startsWith('{"event":"exec"') && line.includes(m);

async function startClients(monitor: MonitorProcess, path: string, n: number, keep = true) {
  const before = connectedCount(monitor);
  const clients: NcClient[] = [];
  for (let i = 0; i < n; i++) clients.push(new NcClient(path, keep));
  await monitor.until(
    () => connectedCount(monitor) >= before + n,
    20_000,
    `${n} nc clients to be registered`,
  );
  return clients;
}

async function disposeAll(clients: NcClient[]): Promise<void> {
  await Promise.all(clients.map((c) => c[Symbol.asyncDispose]()));
}

liveTest("50 nc -U clients all get the same marker exec line", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/pm.sock`;
  await using monitor = await MonitorProcess.start(["-s", sock, "-c", "60"]);
  const clients = await startClients(monitor, sock, 50);
  try {
    const m = marker("fifty");
    const pid = await runMarker(m);
    await waitUntil(
      () => clients.every((c) => c.out.has(isExecOf(m))),
      EXEC_TIMEOUT,
      () => `the exec on every client (${clients.filter((c) => c.out.has(isExecOf(m))).length})`,
    );
    const lines = clients.map((c) => c.out.lines.find(isExecOf(m))!);
    assert.equal(JSON.parse(lines[0]).pid, pid);
    for (const line of lines) assert.equal(line, lines[0], "byte for byte the same line");
  } finally {
    await disposeAll(clients);
  }
});

liveTest(
  "a client that never reads does not slow the others and is cut off as the hub says",
  async () => {
    await using dir = await tempDir();
    const sock = `${dir.path}/pm.sock`;
    await using monitor = await MonitorProcess.start(["-s", sock, "-e", "fork,exec,exit"]);
    // unix#1 connects and never reads.
    const stalled = await Deno.connect({ transport: "unix", path: sock });
    try {
      await monitor.until(() => connectedCount(monitor) >= 1, 10_000, "the stalled client");
      const readers = await startClients(monitor, sock, 3, false);
      try {
        // Each exec line carries a 3,000-byte argument: 2,000 of them (6 MB) overflow the
        // stalled client's 4 MiB queue and its socket buffer.
        const m = marker("stall");
        const pad = m + "x".repeat(3000);
        const STORM = 2000;
        let stormPid = -1;
        const counts = readers.map((r) => {
          const state = { forks: 0, lost: 0, stormExit: false };
          r.out.onLine = (line) => {
            if (line.startsWith('{"event":"lost"')) state.lost++;
            else if (line.startsWith('{"event":"fork"')) {
              if (JSON.parse(line).parent_tgid === stormPid) state.forks++;
            } else if (line.startsWith('{"event":"exit"') && line.includes(m)) {
              if (JSON.parse(line).pid === stormPid) state.stormExit = true;
            }
          };
          return state;
        });
        const storm = new Deno.Command("/bin/sh", {
          args: [
            "-c",
            `i=0; while [ "$i" -lt ${STORM} ]; do /bin/true "$0"; i=$((i+1)); done`,
            pad,
          ],
          stdin: "null",
        }).spawn();
        stormPid = storm.pid;
        assert.equal((await storm.status).code, 0);
        await waitUntil(
          () => counts.every((c) => c.stormExit),
          30_000,
          () => `the storm's exit on every reader: ${JSON.stringify(counts)}`,
        );
        for (const c of counts) {
          assert.equal(c.lost, 0, "a reading client lost nothing");
          assert.equal(c.forks, STORM, "every fork of the storm reached every reading client");
        }
        // The hub's policy (README, Serving clients): full for 10 s, or 100,000 events missed
        // (sooner, on a machine busy with other processes), then disconnected.
        await monitor.until(
          () =>
            /Disconnecting client "unix#1": "(its queue stayed full|it missed more than)/.test(
              monitor.stderr,
            ),
          20_000,
          "the stalled client to be cut off",
        );
        // Its stream ends: reading now gets what was sent, then EOF.
        const buf = new Uint8Array(1 << 16);
        let bytes = 0;
        for (;;) {
          const n = await stalled.read(buf);
          if (n === null) break;
          bytes += n;
        }
        assert.ok(bytes > 0, "it had been sent lines before it was cut off");
        // The others are still served.
        const after = marker("after");
        const seen = readers.map(() => false);
        readers.forEach((r, i) => {
          r.out.onLine = (line) => {
            if (isExecOf(after)(line)) seen[i] = true;
          };
        });
        await runMarker(after);
        await waitUntil(() => seen.every(Boolean), EXEC_TIMEOUT, () => `the exec after: ${seen}`);
      } finally {
        await disposeAll(readers);
      }
    } finally {
      try {
        stalled.close();
      } catch {
        // Closed already.
      }
    }
  },
);

liveTest("a client that disconnects is noticed at once, with no event sent to it", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/pm.sock`;
  // Nothing matches this: no line is ever written to the clients.
  const never = marker("never");
  await using monitor = await MonitorProcess.start(["-s", sock, "--match", never]);
  const clients = await startClients(monitor, sock, 3);
  try {
    clients[2].kill();
    await monitor.until(
      () => /Client "unix#[0-9]+" disconnected: "closed by the client"/.test(monitor.stderr),
      5_000,
      "the hang-up to be noticed",
    );
    for (const c of clients) assert.deepEqual(c.out.lines, [], "no line was sent");
    // The slot is free again: a new client takes it and is served.
    const more = await startClients(monitor, sock, 1);
    await disposeAll(more);
  } finally {
    await disposeAll(clients);
  }
});

liveTest("a client that floods its input is left blocked, not read for ever", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/pm.sock`;
  await using monitor = await MonitorProcess.start(["-s", sock]);
  const flooder = await Deno.connect({ transport: "unix", path: sock });
  try {
    await monitor.until(() => connectedCount(monitor) >= 1, 10_000, "the flooding client");
    // Nothing reads what a client sends: once the sockets' buffers are full (a few hundred
    // KiB), the sender waits. Reading it all would cost the daemon a CPU for as long as
    // the client likes.
    const chunk = new Uint8Array(64 * 1024);
    let sent = 0;
    const flood = (async () => {
      for (;;) sent += await flooder.write(chunk);
    })().catch(() => {});
    await delay(1500);
    assert.ok(sent < 8 * 1024 * 1024, `the daemon took ${sent} bytes of input`);
    // It still serves that client, and notices when it leaves.
    flooder.close();
    await flood;
    await monitor.until(
      () => /Client "unix#1" disconnected/.test(monitor.stderr),
      10_000,
      "the flooding client's hang-up",
    );
  } finally {
    try {
      flooder.close();
    } catch { /* closed above */ }
  }
});
