/**
 * Live tests of `--nats-creds` (a NATS `.creds` file: a user JWT and its nkey seed) against a
 * real nats-server in operator mode: an operator, accounts and users made at test time
 * (tests/support/nats_jwt.ts), the server trusting the operator and knowing only the
 * preloaded account. The daemon and `procMonitor client --nats` run as real subprocesses;
 * the test's own connections log in with another user of the same account. Where nats-server
 * is missing these are skipped loudly, except under CI, where they fail.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { credsAuthenticator } from "@nats-io/transport-node";
import { liveTest, marker, MonitorProcess, run } from "./support/live.ts";
import { NATS_SERVER, NatsCluster, natsTest } from "./support/nats_cluster.ts";
import { NatsOperator, type NatsUser } from "./support/nats_jwt.ts";
import { Spawned } from "./support/spawned.ts";
import type { ExecEvent, ProcEvent } from "../lib/events/event.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** A live test that also needs nats-server: skipped loudly outside CI where it is missing. */
const liveNatsTest = NATS_SERVER === null ? natsTest : liveTest;

const isExec = (e: ProcEvent): e is ExecEvent => e.event === "exec";

/**
 * A nats-server in operator mode knowing account PM, and `.creds` files (in the cluster's
 * directory, removed with it): `procmonitor` and `reader`, two users of PM, and `stranger`, a
 * user of an account signed by the same operator but unknown to the server. `login` gives
 * the test's own connection as `reader`.
 */
async function credsBroker() {
  const operator = await NatsOperator.create("pm-test");
  const account = await operator.account("PM");
  const unknown = await operator.account("NOT-PRELOADED");
  const cluster = await NatsCluster.start({ auth: { operator, accounts: [account] } });
  const write = async (name: string, user: NatsUser) => {
    const file = `${cluster.dir}/${name}.creds`;
    await Deno.writeTextFile(file, user.creds, { mode: 0o600 });
    return file;
  };
  const reader = await account.user("reader");
  return {
    cluster,
    procmonitor: await write("procmonitor", await account.user("procmonitor")),
    stranger: await write("stranger", await unknown.user("stranger")),
    /** The test's own connection, as `reader`. */
    login: () =>
      cluster.connect({
        authenticator: credsAuthenticator(new TextEncoder().encode(reader.creds)),
      }),
    [Symbol.asyncDispose]: () => cluster[Symbol.asyncDispose](),
  };
}

/** The nkey seed of a `.creds` file, which must never be logged. */
async function seedOf(file: string): Promise<string> {
  return (await Deno.readTextFile(file)).match(/^SU[A-Z2-7]{56}$/m)![0];
}

/** procMonitor printing and publishing only the execs whose cmdline ends in `MARK-<i>`. */
function monitorArgs(mark: string, nats: string, creds: string): string[] {
  return [
    "-d",
    "-e",
    "exec",
    "--match",
    ` ${mark}-\\d+$`,
    "--nats",
    nats,
    "--nats-creds",
    creds,
    "--host-id",
    "creds-host",
  ];
}

/** One marker exec that lives long enough (0.2 s) for its cmdline to be read. */
function oneMarker(mark: string): Promise<unknown> {
  return run("/usr/bin/python3", ["-c", "import time; time.sleep(0.2)", `${mark}-0`]);
}

/** `procMonitor client ARGS`, run from source. */
function client(args: string[]): Spawned {
  return new Spawned(Deno.execPath(), ["run", "-A", "--quiet", "main.ts", "client", ...args], {
    cwd: ROOT,
  });
}

liveNatsTest(
  "--nats-creds: the daemon logs in with a user JWT and publishes a marker exec to procmonitor.<host>.exec",
  async () => {
    await using broker = await credsBroker();
    await using nc = await broker.login();
    const received: string[] = [];
    const sub = nc.subscribe("procmonitor.creds-host.exec", {
      callback: (_error, msg) => void received.push(msg.string()),
    });
    await nc.flush();
    const mark = marker("creds");
    await using pm = await MonitorProcess.start(
      monitorArgs(mark, broker.cluster.url, broker.procmonitor),
    );
    await pm.until(() => /Publishing events to NATS/.test(pm.stderr), 15_000, "the connection");
    await oneMarker(mark);
    const exec = await pm.waitFor("the marker exec", isExec);
    const deadline = Date.now() + 10_000;
    while (received.length === 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    sub.unsubscribe();
    assert.deepEqual(received.map((m) => JSON.parse(m)), [exec], pm.stderr);
    const stopped = await pm.stop();
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.doesNotMatch(stopped.stderr, /refused|out of reach/);
    assert.ok(
      !stopped.stderr.includes(await seedOf(broker.procmonitor)),
      "the seed is never logged",
    );
  },
);

liveNatsTest(
  "--nats-creds of an account the server does not know: one sentence, and the other outputs keep running",
  async () => {
    await using broker = await credsBroker();
    const mark = marker("creds-refused");
    await using pm = await MonitorProcess.start(
      monitorArgs(mark, broker.cluster.url, broker.stranger),
    );
    const sentence =
      `NATS at ${broker.cluster.url} refused procMonitor's credentials (--nats-creds)`;
    await pm.until(() => pm.stderr.includes(sentence), 15_000, "the refusal");
    await oneMarker(mark);
    await pm.waitFor("the marker exec on stdout", isExec);
    const stopped = await pm.stop();
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(stopped.stderr.split(sentence).length - 1, 1, stopped.stderr);
    assert.doesNotMatch(stopped.stderr, /^\s+at /m, "no stack trace");
    assert.ok(!stopped.stderr.includes(await seedOf(broker.stranger)), "the seed is never logged");
  },
);

natsTest("client --nats --nats-creds prints an event published to its subject", async () => {
  await using broker = await credsBroker();
  await using nc = await broker.login();
  await using reader = client([
    "--nats",
    broker.cluster.url,
    "--nats-creds",
    broker.procmonitor,
    "--subject",
    "procmonitor.*.exec",
    "--log-level",
    "debug",
  ]);
  await reader.waitFor("Reading live events on procmonitor.*.exec", "stderr");
  const line = JSON.stringify({
    event: "exec",
    time: "2026-12-01T17:02:00.000001Z",
    pid: 301,
    user: "root",
    uid: 0,
    ppid: 1,
    cmdline: "/bin/job 301",
    host: "web1",
  });
  nc.publish("procmonitor.web1.exec", line + "\n");
  await reader.waitFor(line + "\n");
  reader.child.kill("SIGINT");
  const r = await reader.result();
  assert.equal(r.code, 0, reader.dump());
  assert.equal(r.stdout, line + "\n");
  assert.ok(!r.stderr.includes(await seedOf(broker.procmonitor)), "the seed is never logged");
});

natsTest(
  "client --nats-creds of an account the server does not know exits 1 with one sentence",
  async () => {
    await using broker = await credsBroker();
    await using stranger = client(["--nats", broker.cluster.url, "--nats-creds", broker.stranger]);
    const r = await stranger.result();
    assert.equal(r.code, 1, stranger.dump());
    assert.equal(r.stdout, "");
    assert.equal(
      r.stderr.replace(/^\S+ \S+ \+00 /, ""),
      `[ERR] procmonitor.client: NATS at ${broker.cluster.url} refused the credentials in ` +
        `${broker.stranger} (--nats-creds)\n`,
    );
  },
);
