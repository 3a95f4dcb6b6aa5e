/**
 * Hub tests over real Unix sockets: fan-out order, the client limit, the slow-client
 * policy (lost line, disconnect), shutdown flushing. The test is the publisher.
 */
import assert from "node:assert/strict";
import { captureLogs, logText, records } from "./support/logs.ts";
import {
  DEFAULT_LINE_WRITE_BURST,
  DEFAULT_LINE_WRITES_PER_S,
  Hub,
  MAX_REFUSING,
} from "../lib/outputs/hub.ts";
import { UnixListener } from "../lib/outputs/unix_listener.ts";
import type { HubConn } from "../lib/outputs/connections.ts";

await captureLogs();

const encoder = new TextEncoder();
/** A hub's own `lost` line, with the `host` of a hub given one (`--nats`, `--host-id`). */
const LOST_RE =
  /^\{"event":"lost","time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z","count":(\d+),"where":"buffer","host":"web-1"\}$/;

/** One event line with sequence number `seq`, padded to about `size` bytes. */
function line(seq: number, size = 100): string {
  const head = `{"event":"test","seq":${seq},"pad":"`;
  return head + "x".repeat(Math.max(0, size - head.length - 3)) + '"}\n';
}

/** Lines `from` .. `to - 1` as one chunk. */
function chunk(from: number, to: number, size = 100): Uint8Array {
  let text = "";
  for (let i = from; i < to; i++) text += line(i, size);
  return encoder.encode(text);
}

/**
 * Publishes 50 lines of 200 bytes at a time, yielding now and then so the hub can write,
 * until its only client is disconnected (or a million lines are out).
 */
async function floodUntilDisconnected(hub: Hub): Promise<void> {
  let seq = 0;
  while (hub.clientCount === 1 && seq < 1_000_000) {
    hub.publish(chunk(seq, seq + 50, 200));
    seq += 50;
    if (seq % 1000 === 0) await new Promise((r) => setTimeout(r, 0));
  }
}

/** Polls `pred` until true; fails after `ms`. */
async function until(pred: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A client that reads everything, splitting it into lines. */
class Reader {
  lines: string[] = [];
  partial = "";
  bytes = 0;
  eof = false;
  error: unknown = null;
  readonly done: Promise<void>;

  constructor(
    readonly conn: Deno.Conn,
    readonly keep = true,
    readonly onLine?: (l: string) => void,
  ) {
    this.done = this.#run();
  }

  async #run(): Promise<void> {
    const decoder = new TextDecoder();
    const buf = new Uint8Array(256 * 1024);
    try {
      for (;;) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        this.bytes += n;
        const parts = (this.partial + decoder.decode(buf.subarray(0, n), { stream: true }))
          .split("\n");
        this.partial = parts.pop()!;
        for (const l of parts) {
          this.onLine?.(l);
          if (this.keep) this.lines.push(l);
        }
      }
    } catch (err) {
      this.error = err;
    } finally {
      this.eof = true;
    }
  }

  async close(): Promise<void> {
    try {
      this.conn.close();
    } catch {
      // closed already
    }
    await this.done;
  }
}

/** A temp dir with a hub and a Unix listener in it; everything closed by dispose. */
async function setup(hubOpts: ConstructorParameters<typeof Hub>[0] = {}, maxClients = 10) {
  const dir = await Deno.makeTempDir({ prefix: "pm-hub-" });
  const path = `${dir}/s.sock`;
  const hub = new Hub(hubOpts);
  const listener = await UnixListener.open(hub, { path, mode: 0o666, group: null, maxClients });
  const readers: Reader[] = [];
  const idle: Deno.Conn[] = [];
  return {
    hub,
    path,
    readers,
    idle,
    async connect(keep = true, onLine?: (l: string) => void): Promise<Reader> {
      const r = new Reader(await Deno.connect({ transport: "unix", path }), keep, onLine);
      readers.push(r);
      return r;
    },
    /** A client that never reads. */
    async connectIdle(): Promise<Deno.Conn> {
      const c = await Deno.connect({ transport: "unix", path });
      idle.push(c);
      return c;
    },
    async [Symbol.asyncDispose]() {
      await listener.close();
      await hub.close(200);
      for (const c of idle) {
        try {
          c.close();
        } catch {
          // closed by the test
        }
      }
      for (const r of readers) await r.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("several clients receive the same lines in publish order", async () => {
  await using t = await setup();
  const clients = [await t.connect(), await t.connect(), await t.connect()];
  await until(() => t.hub.clientCount === 3, "3 clients");
  const total = 2000;
  let seq = 0;
  while (seq < total) {
    const n = Math.min(total - seq, 1 + (seq % 23)); // chunks of 1..23 lines
    t.hub.publish(chunk(seq, seq + n));
    seq += n;
    if (seq % 200 < 23) await new Promise((r) => setTimeout(r, 1));
  }
  const expected = Array.from({ length: total }, (_, i) => line(i).slice(0, -1));
  for (const c of clients) {
    await until(() => c.lines.length >= total, "all lines");
    assert.deepEqual(c.lines, expected);
    assert.equal(c.partial, "");
  }
});

Deno.test("over the client limit: exactly the error line, then EOF; a freed slot is reused", async () => {
  await using t = await setup({}, 2);
  const a = await t.connect();
  await t.connect();
  await until(() => t.hub.clientCount === 2, "2 clients");
  const extra = await t.connect();
  await extra.done;
  assert.equal(extra.error, null);
  assert.deepEqual(extra.lines, ['{"error":"too many clients","limit":2}']);
  assert.equal(extra.partial, "");
  assert.equal(t.hub.clientCount, 2);
  assert.ok(logText().some((l) => l.includes("too many clients")), "refusal logged");
  await extra.close(); // the server lingers until the refused client closes its end

  await a.close();
  await until(() => t.hub.clientCount === 1, "slot freed");
  const again = await t.connect();
  await until(() => t.hub.clientCount === 2, "new client joined");
  t.hub.publish(encoder.encode(line(1)));
  await until(() => again.lines.length === 1, "line");
  assert.equal(again.lines[0], line(1).slice(0, -1));
});

Deno.test("a client that never reads does not stop another; it is disconnected", async () => {
  await using t = await setup({ maxOverLimitMs: 1000 });
  let expectSeq = 0;
  let outOfOrder = 0;
  const fast = await t.connect(false, (l) => {
    if (JSON.parse(l).seq !== expectSeq++) outOfOrder++;
  });
  const slow = await t.connectIdle();
  await until(() => t.hub.clientCount === 2, "2 clients");

  // ~50 MiB in 64 KiB chunks of 1 KiB lines; paced by the fast client only (as the
  // kernel paces the real pipeline), never by the slow one.
  const perChunk = 64;
  const total = 50 * 1024;
  const size = 1024;
  let published = 0;
  let maxPublishMs = 0;
  const started = Date.now();
  for (let seq = 0; seq < total; seq += perChunk) {
    await until(() => fast.bytes >= published - 2 * 1024 * 1024, "fast client progress");
    const c = chunk(seq, seq + perChunk, size);
    const t0 = performance.now();
    t.hub.publish(c);
    maxPublishMs = Math.max(maxPublishMs, performance.now() - t0);
    published += c.length;
  }
  await until(() => fast.bytes === published, "fast client has everything", 30_000);
  const elapsed = Date.now() - started;
  assert.equal(outOfOrder, 0);
  assert.equal(expectSeq, total);
  assert.ok(maxPublishMs < 250, `publish took ${maxPublishMs} ms`);
  assert.ok(elapsed < 30_000, `took ${elapsed} ms`);

  // Policy: its queue stayed full for more than maxOverLimitMs, so it was disconnected.
  await until(() => t.hub.clientCount === 1, "slow client disconnected", 5000);
  assert.ok(logText().some((l) => l.startsWith("Disconnecting client unix#2")), "logged");
  // What it gets now is what the kernel buffered: a prefix of the stream, then EOF.
  const r = new Reader(slow);
  await r.done;
  t.idle.length = 0;
  assert.ok(r.lines.length > 0 && r.lines.length < total);
  r.lines.forEach((l, i) => assert.equal(JSON.parse(l).seq, i));
  assert.ok(!r.lines.some((l) => l.includes('"lost"')));
});

Deno.test("a client that falls behind then catches up gets a lost line with the count (and the host)", async () => {
  const limit = 256 * 1024;
  await using t = await setup({ queueLimitBytes: limit, maxOverLimitMs: 60_000, host: "web-1" });
  const fast = await t.connect(false);
  const slow = await t.connectIdle();
  await until(() => t.hub.clientCount === 2, "2 clients");
  let seq = 0;
  let published = 0;
  const publish = async (lines: number) => {
    for (const end = seq + lines; seq < end; seq += 32) {
      await until(() => fast.bytes >= published - limit / 2, "fast client progress");
      const c = chunk(seq, seq + 32, 512);
      t.hub.publish(c);
      published += c.length;
    }
  };
  await publish(32 * 200); // ~3 MiB: far more than the slow client's socket + queue hold
  const r = new Reader(slow);
  t.idle.length = 0;
  t.readers.push(r);
  await until(() => r.lines.some((l) => l.includes('"lost"')), "lost line");
  await publish(32 * 20); // after catching up it receives new events again
  await until(() => fast.bytes === published, "fast client has everything");
  const lastSeq = seq - 1;
  await until(
    () => r.lines.length > 0 && r.lines[r.lines.length - 1].includes(`"seq":${lastSeq},`),
    "slow client has the last line",
  );

  // Every event is either received in order or counted in a lost line, exactly once.
  let next = 0;
  let lostLines = 0;
  for (const l of r.lines) {
    const m = LOST_RE.exec(l);
    if (m) {
      lostLines++;
      assert.ok(Number(m[1]) > 0);
      next += Number(m[1]);
    } else {
      assert.equal(JSON.parse(l).seq, next, "in order, nothing silently missing");
      next++;
    }
  }
  assert.equal(next, seq);
  assert.ok(lostLines >= 1);
  assert.equal(t.hub.clientCount, 2, "not disconnected");
  assert.ok(logText().some((l) => /caught up after losing \d+ events/.test(l)), "logged");
});

Deno.test("a client that misses too many events in total is disconnected", async () => {
  await using t = await setup({ queueLimitBytes: 64 * 1024, maxLostLines: 1000 });
  const slow = await t.connectIdle();
  await until(() => t.hub.clientCount === 1, "1 client");
  await floodUntilDisconnected(t.hub);
  assert.equal(t.hub.clientCount, 0);
  assert.ok(logText().some((l) => l.includes("missed more than 1000 events")), "logged");
  const r = new Reader(slow);
  t.idle.length = 0;
  t.readers.push(r);
  await r.done; // EOF after what the kernel had buffered
  assert.ok(r.eof);
});

Deno.test("close() flushes queued lines whole, then EOF; a stuck client is cut off in time", async () => {
  await using t = await setup();
  const a = await t.connect();
  const stuck = await t.connectIdle();
  await until(() => t.hub.clientCount === 2, "2 clients");
  const total = 10_000; // 3 MB: within the default 4 MiB queue, so nothing is dropped
  for (let seq = 0; seq < total; seq += 100) t.hub.publish(chunk(seq, seq + 100, 300));
  const t0 = Date.now();
  await t.hub.close(1000);
  const took = Date.now() - t0;
  assert.ok(took < 1000 + 500 + 1000, `close took ${took} ms`);
  await a.done;
  assert.equal(a.lines.length, total);
  assert.equal(a.partial, "");
  a.lines.forEach((l, i) => assert.equal(JSON.parse(l).seq, i));
  assert.equal(t.hub.clientCount, 0);
  t.hub.publish(chunk(0, 1)); // ignored after close
  stuck.close();
  t.idle.length = 0;
});

Deno.test("close() past the grace period finishes a slow reader's current line", async () => {
  const logsBefore = logText().length;
  await using t = await setup();
  const conn = await Deno.connect({ transport: "unix", path: t.path });
  t.idle.push(conn);
  await until(() => t.hub.clientCount === 1, "1 client");
  // 3 MB of 1000-byte lines for a client taking 4 KiB every 20 ms (about 200 KB/s): far
  // more than it can read within the grace period.
  for (let seq = 0; seq < 3000; seq += 100) t.hub.publish(chunk(seq, seq + 100, 1000));
  let received = "";
  const decoder = new TextDecoder();
  const reading = (async () => {
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) return;
      received += decoder.decode(buf.subarray(0, n), { stream: true });
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  await t.hub.close(300);
  await reading;
  assert.ok(received.length > 0);
  assert.ok(received.endsWith("\n"), `cut line at the end: ...${received.slice(-40)}`);
  const lines = received.trimEnd().split("\n");
  lines.forEach((l, i) => assert.equal(JSON.parse(l).seq, i));
  assert.ok(lines.length < 3000, "the rest was not sent");
  const logs = logText().slice(logsBefore);
  assert.ok(!logs.some((l) => l.includes("did not read what was queued")), "not cut off");
});

Deno.test("a client that disconnects mid-stream is removed; the others continue", async () => {
  await using t = await setup();
  const a = await t.connect();
  const b = await t.connect();
  await until(() => t.hub.clientCount === 2, "2 clients");
  t.hub.publish(chunk(0, 10));
  await until(() => a.lines.length === 10 && b.lines.length === 10, "first lines");
  await b.close();
  for (let seq = 10; seq < 5000; seq += 10) t.hub.publish(chunk(seq, seq + 10));
  await until(() => t.hub.clientCount === 1, "b removed");
  await until(() => a.lines.length === 5000, "a has all");
  assert.ok(logText().some((l) => /Client unix#\d+ disconnected/.test(l)), "logged");
});

Deno.test("publish shares one buffer among clients and works with no clients", async () => {
  const hub = new Hub();
  hub.publish(chunk(0, 3)); // nobody listening: nothing happens
  hub.publish(new Uint8Array(0));
  assert.equal(hub.clientCount, 0);
  await hub.close();
  await hub.close(); // idempotent
});

/** A connection that records every write; writes wait while `hold` is set. */
class RecordingConn implements HubConn {
  readonly writes: { text: string; at: number }[] = [];
  hold: Promise<void> | null = null;
  written = 0;
  #waiter: { bytes: number; resolve: () => void } | null = null;

  async write(p: Uint8Array): Promise<number> {
    if (this.hold !== null) await this.hold;
    this.writes.push({ text: new TextDecoder().decode(p), at: performance.now() });
    this.written += p.length;
    if (this.#waiter !== null && this.written >= this.#waiter.bytes) this.#waiter.resolve();
    return p.length;
  }

  /** Resolves once `bytes` have been written in all. */
  writtenAtLeast(bytes: number): Promise<void> {
    if (this.written >= bytes) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiter = { bytes, resolve };
    return promise;
  }

  close(): void {}
}

Deno.test("a caught-up client gets each line of a batch in a write of its own, spaced", async () => {
  await using hub = new Hub({ lineWrites: { gapMs: 5 } });
  const conn = new RecordingConn();
  hub.addClient(conn, { description: "v1" });
  hub.publish(chunk(0, 3));
  await until(() => conn.writes.length === 3, "3 writes");
  assert.deepEqual(conn.writes.map((w) => w.text), [line(0), line(1), line(2)]);
  for (let i = 1; i < 3; i++) {
    const gap = conn.writes[i].at - conn.writes[i - 1].at;
    assert.ok(gap >= 4, `writes ${gap.toFixed(2)} ms apart`);
  }
});

Deno.test("past the line budget a backlog is gathered into one write", async () => {
  await using hub = new Hub({ lineWrites: { burst: 4, perSecond: 0, gapMs: 0 } });
  const conn = new RecordingConn();
  const { promise: held, resolve: release } = Promise.withResolvers<void>();
  conn.hold = held;
  hub.addClient(conn, { description: "v1" });
  hub.publish(chunk(0, 3)); // within the budget: three single lines; the first is in write
  await new Promise((r) => setTimeout(r, 10));
  hub.publish(chunk(3, 6)); // over the budget: queued whole behind the single lines...
  hub.publish(chunk(6, 9)); // ...and from then on everything is gathered
  conn.hold = null;
  release();
  await conn.writtenAtLeast(chunk(0, 9).length);
  assert.deepEqual(conn.writes.map((w) => w.text), [
    line(0),
    new TextDecoder().decode(chunk(1, 9)),
  ]);
});

Deno.test("a storm a client keeps up with costs about one write per batch", async () => {
  await using hub = new Hub();
  const conn = new RecordingConn();
  hub.addClient(conn, { description: "tcp" });
  const batches = 200;
  const started = performance.now();
  let published = 0;
  for (let seq = 0; seq < batches * 10; seq += 10) {
    const c = chunk(seq, seq + 10);
    hub.publish(c);
    published += c.length;
    // The client keeps up: the next batch comes once this one is written.
    await conn.writtenAtLeast(published);
  }
  const seconds = (performance.now() - started) / 1000;
  const budget = DEFAULT_LINE_WRITE_BURST + DEFAULT_LINE_WRITES_PER_S * seconds;
  assert.ok(
    conn.writes.length <= batches + budget,
    `${conn.writes.length} writes for ${batches} batches in ${seconds.toFixed(2)} s`,
  );
  assert.equal(conn.writes.map((w) => w.text).join(""), new TextDecoder().decode(chunk(0, 2000)));
});

Deno.test("a client that opts out of line writes gets one write per batch", async () => {
  await using hub = new Hub();
  const conn = new RecordingConn();
  hub.addClient(conn, { description: "unix#1", lineWrites: false });
  hub.publish(chunk(0, 3));
  await until(() => conn.writes.length > 0, "a write");
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(conn.writes.map((w) => w.text), [new TextDecoder().decode(chunk(0, 3))]);
});

/**
 * A connection that can also send without waiting ({@link HubConn.trySend}): `room` bytes
 * fit now (Infinity by default), after that trySend finds the socket full; `failure`, when
 * set, is thrown by both. Records what each path sent.
 */
class SendingConn extends RecordingConn {
  readonly sends: string[] = [];
  room = Infinity;
  failure: Error | null = null;

  trySend(p: Uint8Array): number | null {
    if (this.failure !== null) throw this.failure;
    const n = Math.min(this.room, p.length);
    if (n === 0) return null;
    this.room -= n;
    this.sends.push(new TextDecoder().decode(p.subarray(0, n)));
    return n;
  }

  override write(p: Uint8Array): Promise<number> {
    if (this.failure !== null) return Promise.reject(this.failure);
    return super.write(p);
  }
}

Deno.test("publish() sends a batch at once to a connection that takes it, without its writer", async () => {
  await using hub = new Hub();
  const conn = new SendingConn();
  hub.addClient(conn, { description: "unix#1", lineWrites: false });
  hub.publish(chunk(0, 3));
  assert.deepEqual(conn.sends, [new TextDecoder().decode(chunk(0, 3))]); // before any await
  hub.publish(chunk(3, 5));
  assert.equal(conn.sends.length, 2);
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(conn.writes, [], "the writer wrote nothing");
  assert.equal(hub.largestQueueBytes, 0);
});

Deno.test("a partly sent batch leaves the rest to the writer, ahead of later batches", async () => {
  await using hub = new Hub();
  const conn = new SendingConn();
  conn.room = 150;
  hub.addClient(conn, { description: "unix#1", lineWrites: false });
  hub.publish(chunk(0, 3));
  hub.publish(chunk(3, 6));
  const all = new TextDecoder().decode(chunk(0, 6));
  await conn.writtenAtLeast(all.length - 150);
  assert.deepEqual(conn.sends, [all.slice(0, 150)]);
  assert.equal(conn.sends.join("") + conn.writes.map((w) => w.text).join(""), all);
  // Caught up again, the next batch goes straight out.
  conn.room = Infinity;
  await new Promise((r) => setTimeout(r, 20));
  hub.publish(chunk(6, 7));
  assert.equal(conn.sends.at(-1), new TextDecoder().decode(chunk(6, 7)));
});

Deno.test("a full socket leaves the whole batch to the writer", async () => {
  await using hub = new Hub();
  const conn = new SendingConn();
  conn.room = 0;
  hub.addClient(conn, { description: "unix#1", lineWrites: false });
  hub.publish(chunk(0, 3));
  await until(() => conn.writes.length > 0, "a write");
  assert.deepEqual(conn.sends, []);
  assert.deepEqual(conn.writes.map((w) => w.text), [new TextDecoder().decode(chunk(0, 3))]);
});

Deno.test("allSent holds while every client took its batches in a send that never waits", async () => {
  await using hub = new Hub();
  assert.equal(hub.allSent, true, "no clients");
  const sending = new SendingConn();
  sending.room = 150;
  hub.addClient(sending, { description: "unix#1", lineWrites: false });
  assert.equal(hub.allSent, true);
  hub.publish(chunk(0, 1));
  assert.equal(hub.allSent, true, "sent at once");
  hub.publish(chunk(1, 3)); // over the room: the rest waits for the writer
  assert.equal(hub.allSent, false);
  sending.room = Infinity;
  await until(() => hub.largestQueueBytes === 0, "the writer to catch up");
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(hub.allSent, true, "caught up");
  // A client whose lines go out in writes of their own (TCP) always has its writer run.
  hub.addClient(new SendingConn(), { description: "tcp#1" });
  assert.equal(hub.allSent, false);
});

Deno.test("a send that fails lets the client go as a failed write does", async () => {
  await using hub = new Hub();
  const conn = new SendingConn();
  conn.failure = new Deno.errors.BrokenPipe("Broken pipe");
  hub.addClient(conn, { description: "unix#1", lineWrites: false });
  hub.publish(chunk(0, 3));
  await until(() => hub.clientCount === 0, "the client to go");
  assert.ok(logText().some((l) => /unix#1.*connection reset by the client/.test(l)), "logged");
});

/** Open file descriptors of this process. */
function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

Deno.test("a refusal flood is logged once a second and holds few connections open", async () => {
  const logsBefore = records.length;
  const flood = 500;
  const conns: Deno.Conn[] = [];
  try {
    await using t = await setup({}, 1);
    await t.connect();
    await until(() => t.hub.clientCount === 1, "1 client");
    const fdsBefore = openFds();
    const started = performance.now();
    let most = 0;
    // Connections that neither read nor close: each refusal could wait a second for them.
    for (let i = 0; i < flood; i++) {
      conns.push(await Deno.connect({ transport: "unix", path: t.path }));
      if (i % 50 === 0) most = Math.max(most, openFds() - fdsBefore - conns.length);
    }
    for (let i = 0; i < 20; i++) {
      most = Math.max(most, openFds() - fdsBefore - conns.length);
      await new Promise((r) => setTimeout(r, 10));
    }
    const seconds = (performance.now() - started) / 1000;
    assert.ok(most <= 2 * MAX_REFUSING + 8, `${most} connections held by refusals at once`);
    let refusedWithLine = 0;
    for (const c of conns.splice(0)) {
      const r = new Reader(c);
      await r.done;
      if (r.lines.length > 0) {
        assert.deepEqual(r.lines, ['{"error":"too many clients","limit":1}']);
        refusedWithLine++;
      }
    }
    await t.hub.close(200);
    const refusals = records.slice(logsBefore).filter((r) =>
      String(r.message[0]).startsWith("Refused ")
    );
    assert.ok(
      refusals.length <= Math.ceil(seconds) + 2,
      `${refusals.length} log lines in ${seconds.toFixed(1)} s`,
    );
    const sum = (key: string) => refusals.reduce((n, r) => n + (r.properties[key] as number), 0);
    assert.equal(sum("count"), flood, "every refusal counted");
    assert.equal(refusedWithLine, flood - sum("unsent"), "the others got the error line");
  } finally {
    for (const c of conns) c.close();
  }
});

// ---- counters for /metrics ----

Deno.test("listenerStats() counts clients, refusals and clients that left, per listener", async () => {
  await using t = await setup({}, 1);
  const group = `unix:${t.path}`;
  assert.deepEqual(t.hub.listenerStats(group), {
    clients: 0,
    dropped: 0,
    disconnects: { closed: 0, slow: 0, shutdown: 0 },
    refused: 0,
  });
  const a = await t.connect();
  await until(() => t.hub.listenerStats(group).clients === 1, "1 client");
  const extra = await t.connect();
  await extra.done;
  await extra.close();
  assert.equal(t.hub.listenerStats(group).refused, 1);
  await a.close();
  await until(() => t.hub.clientCount === 0, "client gone");
  assert.deepEqual(t.hub.listenerStats(group), {
    clients: 0,
    dropped: 0,
    disconnects: { closed: 1, slow: 0, shutdown: 0 },
    refused: 1,
  });
  assert.equal(t.hub.listenerStats("unix:/elsewhere").refused, 0);
});

Deno.test("listenerStats() counts a slow client's missed events and its disconnect as slow", async () => {
  await using t = await setup({ queueLimitBytes: 64 * 1024, maxLostLines: 1000 });
  const group = `unix:${t.path}`;
  await t.connectIdle();
  await until(() => t.hub.clientCount === 1, "1 client");
  await floodUntilDisconnected(t.hub);
  const stats = t.hub.listenerStats(group);
  // Disconnected by the batch that took it past 1000 missed events: at most 50 more.
  assert.ok(stats.dropped > 1000 && stats.dropped <= 1050, `dropped ${stats.dropped}`);
  assert.deepEqual(stats.disconnects, { closed: 0, slow: 1, shutdown: 0 });
  assert.equal(stats.clients, 0);
});

Deno.test("listenerStats() counts clients closed at shutdown", async () => {
  const t = await setup();
  const group = `unix:${t.path}`;
  await t.connect();
  await t.connect();
  await until(() => t.hub.clientCount === 2, "2 clients");
  await t[Symbol.asyncDispose]();
  assert.deepEqual(t.hub.listenerStats(group).disconnects, { closed: 0, slow: 0, shutdown: 2 });
  assert.equal(t.hub.listenerStats(group).clients, 0);
});
