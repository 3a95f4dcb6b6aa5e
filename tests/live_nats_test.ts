/**
 * Live tests of `--nats`: the real program against the real kernel, publishing to real
 * nats-server clusters on loopback (tests/support/nats_cluster.ts), read back by the official
 * client and by a subscriber this project did not write (Python speaking the NATS protocol
 * over a raw socket, tests/support/nats_sub.py).
 */
import assert from "node:assert/strict";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { liveTest, marker, MonitorProcess, run } from "./support/live.ts";
import { NATS_SERVER, NatsCluster, natsTest } from "./support/nats_cluster.ts";
import { Spawned } from "./support/spawned.ts";
import { makeCert } from "./support/tls.ts";
import { subjectSafe } from "../lib/events/host_id.ts";
import { NatsOutput } from "../lib/outputs/nats_output.ts";
import type { ExecEvent, LostEvent, ProcEvent } from "../lib/events/event.ts";

const NATS_SUB = new URL("./support/nats_sub.py", import.meta.url).pathname;

/** A live test that also needs nats-server: skipped loudly outside CI where it is missing. */
const liveNatsTest = NATS_SERVER === null ? natsTest : liveTest;

const isExec = (e: ProcEvent): e is ExecEvent => e.event === "exec";
const isLost = (e: ProcEvent): e is LostEvent => e.event === "lost";

/**
 * procMonitor printing and publishing only the execs of this test: those whose cmdline ends
 * in `MARK-<i>` (not the storm's shell, whose cmdline ends in `done`).
 */
function monitorArgs(mark: string, nats: string, ...more: string[]): string[] {
  return ["-d", "-e", "exec", "--match", ` ${mark}-\\d+$`, "--nats", nats, ...more];
}

/**
 * One marker exec that lives long enough (0.2 s) for its cmdline to be read however loaded
 * the machine is: its cmdline ends in `MARK-0`.
 */
function oneMarker(mark: string): Promise<unknown> {
  return run("/usr/bin/python3", ["-c", "import time; time.sleep(0.2)", `${mark}-0`]);
}

/**
 * Runs `/bin/true MARK-0` … `/bin/true MARK-<count-1>` from one shell, one after another.
 * Under load some end before their cmdline is read; those are not printed (nor published),
 * so the tests compare NATS with what procMonitor printed.
 */
function storm(mark: string, count: number): Promise<unknown> {
  const script = `i=0; while [ $i -lt ${count} ]; do /bin/true ${mark}-$i; i=$((i+1)); done`;
  return run("/bin/sh", ["-c", script]);
}

/** The marker execs procMonitor printed, as their cmdlines. */
function printed(pm: MonitorProcess): string[] {
  return pm.events.filter(isExec).map((e) => e.cmdline);
}

/** Every message of `stream`, in stream order, as subject and parsed event. */
async function readStream(
  nc: NatsConnection,
  stream: string,
): Promise<{ subject: string; event: ProcEvent }[]> {
  const jsm = await jetstreamManager(nc);
  const { state } = await jsm.streams.info(stream);
  const out: { subject: string; event: ProcEvent }[] = [];
  for (let seq = state.first_seq; seq <= state.last_seq; seq += 200) {
    const batch = [];
    for (let s = seq; s < seq + 200 && s <= state.last_seq; s++) {
      batch.push(jsm.streams.getMessage(stream, { seq: s }));
    }
    for (const msg of await Promise.all(batch)) {
      if (msg !== null) out.push({ subject: msg.subject, event: msg.json<ProcEvent>() });
    }
  }
  return out;
}

/** Polls the stream until it holds `count` messages (or more); returns what it holds. */
async function streamUntil(
  nc: NatsConnection,
  stream: string,
  count: number,
  ms = 30_000,
): Promise<number> {
  const deadline = Date.now() + ms;
  let messages = 0;
  while (Date.now() < deadline) {
    try {
      const jsm = await jetstreamManager(nc);
      messages = (await jsm.streams.info(stream)).state.messages;
      if (messages >= count) return messages;
    } catch (error) {
      if (!(error instanceof Error)) throw error; // no stream yet, or a leader election under way
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`stream ${stream} holds ${messages} messages, not ${count}, after ${ms} ms`);
}

/** The node procMonitor is connected to (its connection is named "procMonitor <host>"). */
async function connectedNode(cluster: NatsCluster): Promise<number> {
  for (let i = 0; i < 3; i++) {
    const connz = await (await fetch(`${cluster.monitorUrl(i)}/connz`)).json();
    const names = (connz.connections ?? []).map((c: { name?: string }) => c.name ?? "");
    if (names.some((name: string) => name.startsWith("procMonitor "))) return i;
  }
  throw new Error("procMonitor is connected to no node");
}

/** A loopback port nobody listens on right now. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Asserts that every cmdline of `expected` is in the stream exactly once, and nothing else. */
function assertExactlyOnce(stored: { event: ProcEvent }[], expected: string[]): void {
  const cmdlines = stored.map((m) => m.event).filter(isExec).map((e) => e.cmdline);
  const duplicates = cmdlines.filter((c, i) => cmdlines.indexOf(c) !== i);
  assert.deepEqual(duplicates, [], "stored twice");
  assert.deepEqual([...cmdlines].sort(), [...expected].sort());
}

liveNatsTest(
  "--nats publishes a marker exec to procmonitor.<host>.exec, to a Python subscriber and into the stream",
  async () => {
    await using cluster = await NatsCluster.start({ nodes: 3 });
    const mark = marker("nats");
    const subject = `procmonitor.${subjectSafe(Deno.hostname())}.exec`;
    await using python = new Spawned("python3", [
      NATS_SUB,
      "127.0.0.1",
      `${cluster.port(1)}`,
      subject,
    ]);
    await python.waitFor("READY");
    await using pm = await MonitorProcess.start(
      monitorArgs(mark, cluster.url, "--nats-stream", "PM", "--nats-replicas", "3"),
    );
    await pm.until(() => /Created the JetStream stream/.test(pm.stderr), 15_000, "the stream");
    await oneMarker(mark);
    const exec = await pm.waitFor("the marker exec", isExec);
    assert.equal(exec.host, subjectSafe(Deno.hostname()));
    await python.waitFor(`${mark}-0"`);
    const [subjectSeen, payload] = python.stdout.split("\n").find((l) => l.includes(mark))!
      .split(/ (.*)/s);
    assert.equal(subjectSeen, subject);
    assert.deepEqual(JSON.parse(payload), exec);

    await using nc = await cluster.connect();
    await streamUntil(nc, "PM", 1);
    const stored = await readStream(nc, "PM");
    assert.deepEqual(stored, [{ subject, event: exec }]);
  },
);

liveNatsTest(
  "--nats-stream with three replicas: a node killed mid-storm loses and duplicates nothing",
  async () => {
    await using cluster = await NatsCluster.start({ nodes: 3 });
    const mark = marker("kill");
    const count = 2000;
    await using pm = await MonitorProcess.start(
      monitorArgs(mark, cluster.url, "--nats-stream", "PM", "--nats-replicas", "3"),
    );
    await pm.until(() => /Created the JetStream stream/.test(pm.stderr), 15_000, "the stream");
    await using nc = await cluster.connect();
    const storming = storm(mark, count);
    await pm.until(() => printed(pm).length >= count / 3, 30_000, "a third of the storm");
    // The node procMonitor publishes through: acknowledgements in flight are lost with it.
    const victim = await connectedNode(cluster);
    await cluster.kill(victim);
    await storming;
    await new Promise((resolve) => setTimeout(resolve, 1000)); // the last batches
    const expected = printed(pm);
    assert.ok(expected.length >= count / 2, `only ${expected.length} execs printed`);
    await streamUntil(nc, "PM", expected.length);
    const stopped = await pm.stop();
    assert.equal(stopped.code, 0, stopped.stderr);
    assertExactlyOnce(await readStream(nc, "PM"), expected);
    assert.deepEqual(pm.events.filter(isLost), []);
  },
);

liveNatsTest(
  "--nats with the broker down at start: events wait in the buffer, then arrive once",
  async () => {
    await using cluster = await NatsCluster.start({ nodes: 1 });
    await cluster.stop(0);
    const mark = marker("down");
    await using pm = await MonitorProcess.start(
      monitorArgs(mark, cluster.url, "--nats-stream", "PM"),
    );
    await pm.until(() => /is out of reach/.test(pm.stderr), 15_000, "the out-of-reach log");
    await storm(mark, 20);
    await new Promise((resolve) => setTimeout(resolve, 2500)); // a few retries, logged once
    const expected = printed(pm);
    assert.ok(expected.length > 0, "no marker exec printed");
    await cluster.restart(0);
    const nc = await connect({ servers: cluster.urls });
    try {
      await streamUntil(nc, "PM", expected.length);
      assertExactlyOnce(await readStream(nc, "PM"), expected);
    } finally {
      await nc.close();
    }
    const stopped = await pm.stop();
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(stopped.stderr.match(/is out of reach/g)?.length, 1, stopped.stderr);
    assert.match(
      stopped.stderr,
      new RegExp(`NATS at ${cluster.url} is out of reach \\(connection refused\\)`),
    );
  },
);

liveNatsTest(
  "--nats-buffer overflow with the broker down: a lost event with where nats and the count, on stdout and in the stream",
  async () => {
    await using cluster = await NatsCluster.start({ nodes: 1 });
    await cluster.stop(0);
    const mark = marker("lost");
    const count = 30;
    await using pm = await MonitorProcess.start(
      monitorArgs(mark, cluster.url, "--nats-stream", "PM", "--nats-buffer", "1KiB"),
    );
    await storm(mark, count);
    await pm.waitFor("a lost event", isLost);
    await new Promise((resolve) => setTimeout(resolve, 1500)); // any later one, a second on
    const execs = printed(pm).length;
    await cluster.restart(0);
    const lostOnStdout = pm.events.filter(isLost);
    assert.ok(lostOnStdout.every((e) => e.where === "nats" && e.host !== undefined));
    const lostCount = lostOnStdout.reduce((sum, e) => sum + e.count, 0);
    assert.ok(lostCount > 0 && lostCount < execs, `lost ${lostCount} of ${execs}`);
    await using nc = await cluster.connect();
    await streamUntil(nc, "PM", execs - lostCount + lostOnStdout.length);
    const stored = await readStream(nc, "PM");
    const storedLost = stored.map((m) => m.event).filter(isLost);
    assert.deepEqual(storedLost, lostOnStdout);
    const storedExecs = stored.map((m) => m.event).filter(isExec);
    assert.equal(storedExecs.length + lostCount, execs);
  },
);

liveNatsTest(
  "--nats with a wrong password: one clear sentence, and the other outputs keep running",
  async () => {
    await using cluster = await NatsCluster.start({
      nodes: 1,
      auth: { user: "pm", password: "right-password" },
    });
    const file = await Deno.makeTempFile();
    await Deno.writeTextFile(file, "wrong-password\n");
    try {
      const mark = marker("auth");
      await using pm = await MonitorProcess.start(
        monitorArgs(mark, cluster.url, "--nats-user", "pm", "--nats-password-file", file),
      );
      const sentence = `NATS at ${cluster.url} refused procMonitor's user and password`;
      await pm.until(() => pm.stderr.includes(sentence), 15_000, "the refusal");
      await oneMarker(mark);
      await pm.waitFor("the marker exec on stdout", isExec);
      const stopped = await pm.stop();
      assert.equal(stopped.code, 0, stopped.stderr);
      assert.equal(stopped.stderr.split(sentence).length - 1, 1, stopped.stderr);
      assert.doesNotMatch(stopped.stderr, /^\s+at /m, "no stack trace");
      assert.doesNotMatch(stopped.stderr, /wrong-password|right-password/);
    } finally {
      await Deno.remove(file);
    }
  },
);

/** A publisher into stream PM of `cluster` whose message ids start with `idStem`. */
function publisher(cluster: NatsCluster, idStem: string): NatsOutput {
  return new NatsOutput({
    connect: { servers: cluster.urls, auth: { kind: "none" }, ca: null, name: "test" },
    prefix: "procmonitor",
    host: "h1",
    bufferBytes: 1 << 20,
    stream: { name: "PM", replicas: 1, maxAgeMs: 0 },
    now: () => "2026-01-02T03:04:05.000006Z",
    onLost: () => {
      throw new Error("nothing may be lost here");
    },
    idStem,
  });
}

/** Publishes events 0..9 and waits until the stream acknowledged all of them. */
async function publishTen(output: NatsOutput): Promise<void> {
  for (let i = 0; i < 10; i++) output.push("exec", `{"event":"exec","n":${i}}\n`);
  const deadline = Date.now() + 15_000;
  while (output.stats().acked < 10 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.deepEqual(output.stats(), { buffered: 0, published: 10, acked: 10, lost: 0 });
  assert.equal(await output.close(1000), 0);
}

natsTest(
  "NatsOutput: a resend with the same message ids is stored once; another run's ids are stored",
  async () => {
    await using cluster = await NatsCluster.start({ nodes: 1 });
    await publishTen(publisher(cluster, "h1.boot.run1"));
    await publishTen(publisher(cluster, "h1.boot.run1")); // as a retry after a failover
    await using nc = await cluster.connect();
    assert.equal(await streamUntil(nc, "PM", 10), 10);
    await publishTen(publisher(cluster, "h1.boot.run2")); // a restart in the same boot
    assert.equal(await streamUntil(nc, "PM", 20), 20);
    const stored = await readStream(nc, "PM");
    assert.deepEqual(stored[0], {
      subject: "procmonitor.h1.exec",
      event: { event: "exec", n: 0 },
    });
  },
);

liveNatsTest(
  "--nats (core) delivers to a raw-protocol subscriber and /metrics counts it; SIGTERM with the broker gone exits 0 and says what was not delivered",
  async () => {
    await using cluster = await NatsCluster.start({ nodes: 1 });
    const mark = marker("core");
    const host = "core-host";
    await using python = new Spawned("python3", [
      NATS_SUB,
      "127.0.0.1",
      `${cluster.port(0)}`,
      `procmonitor.${host}.*`,
    ]);
    await python.waitFor("READY");
    const metrics = freePort();
    await using pm = await MonitorProcess.start(
      monitorArgs(mark, cluster.url, "--host-id", host, "--metrics", `${metrics}`),
    );
    await pm.until(() => /Publishing events to NATS/.test(pm.stderr), 15_000, "the connection");
    await oneMarker(mark);
    await python.waitFor(`procmonitor.${host}.exec {"event":"exec"`);
    assert.match(
      python.stdout,
      new RegExp(`"cmdline":"/usr/bin/python3 .* ${mark}-0".*"host":"${host}"}`),
    );
    const scrape = await (await fetch(`http://127.0.0.1:${metrics}/metrics`)).text();
    assert.match(scrape, /^procmonitor_nats_published_total 1$/m);
    assert.match(scrape, /^procmonitor_nats_acked_total 0$/m);
    assert.match(scrape, /^procmonitor_nats_buffered_messages 0$/m);

    await cluster.kill(0);
    await pm.until(() => /Lost the connection to NATS/.test(pm.stderr), 15_000, "the loss");
    await storm(mark, 5);
    await new Promise((resolve) => setTimeout(resolve, 500)); // the last batch
    const unsent = printed(pm).length - 1;
    assert.ok(unsent > 0, "no marker exec printed after the kill");
    const stopped = await pm.stop();
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.match(
      stopped.stderr,
      new RegExp(`${unsent} events were not delivered to NATS within 3000 ms of the stop`),
    );
    assert.equal(stopped.stderr.match(/Lost the connection to NATS/g)?.length, 1);
  },
);

liveNatsTest("--nats over TLS with --nats-ca and a token file delivers a marker", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cert = await makeCert(dir);
    await Deno.writeTextFile(`${dir}/token`, "t0ken-for-procmonitor\n");
    await using cluster = await NatsCluster.start({
      nodes: 1,
      tls: cert,
      auth: { token: "t0ken-for-procmonitor" },
    });
    assert.match(cluster.url, /^tls:\/\//);
    const mark = marker("tls");
    await using pm = await MonitorProcess.start(
      monitorArgs(
        mark,
        cluster.url,
        "--nats-ca",
        cert.certFile,
        "--nats-token-file",
        `${dir}/token`,
        "--nats-stream",
        "PM",
      ),
    );
    await pm.until(() => /Created the JetStream stream/.test(pm.stderr), 15_000, "the stream");
    await oneMarker(mark);
    const exec = await pm.waitFor("the marker exec", isExec);
    const nc = await connect({
      servers: cluster.urls,
      token: "t0ken-for-procmonitor",
      tls: { ca: cert.cert },
    });
    try {
      await streamUntil(nc, "PM", 1);
      assert.deepEqual((await readStream(nc, "PM")).map((m) => m.event), [exec]);
    } finally {
      await nc.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

liveNatsTest(
  "--nats-stream bound to an existing stream with a short duplicate window says that resends may be stored twice",
  async () => {
    await using cluster = await NatsCluster.start({ nodes: 1 });
    {
      await using nc = await cluster.connect();
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({
        name: "SHORT",
        subjects: ["procmonitor.>"],
        duplicate_window: 10 * 1_000_000_000,
      });
    }
    const mark = marker("window");
    await using pm = await MonitorProcess.start(
      monitorArgs(mark, cluster.url, "--nats-stream", "SHORT"),
    );
    const sentence = "The JetStream stream SHORT drops duplicates for 10 s only: events resent " +
      "after a longer outage may be stored twice (procMonitor creates its streams with 120 s)";
    await pm.until(() => pm.stderr.includes(sentence), 10_000, "the duplicate-window warning");
  },
);
