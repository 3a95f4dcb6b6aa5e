/**
 * Live tests of `procMonitor client --nats` (lib/cli/nats_client.ts) against a real
 * nats-server (tests/support/nats_cluster.ts): events are published with the official NATS
 * client as procMonitor servers publish them (one JSON object per message, on
 * `procmonitor.<host>.<event>`, into a JetStream stream over `procmonitor.>`), and the client
 * runs as a real subprocess from source. Where nats-server is missing these are skipped
 * loudly, except under CI, where they fail.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { NatsCluster, natsTest } from "./support/nats_cluster.ts";
import { delay, Spawned } from "./support/spawned.ts";
import { makeCert } from "./support/tls.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const USER = "alice";
const PASSWORD = "nats-s3cret";
const STREAM = "PMTEST";

/** `procMonitor client ARGS`, run from source. */
class Client extends Spawned {
  constructor(args: string[]) {
    super(Deno.execPath(), ["run", "-A", "--quiet", "main.ts", "client", ...args], {
      cwd: ROOT,
    });
  }

  /** SIGINT, then how it ended. */
  async interrupt() {
    this.child.kill("SIGINT");
    return await this.result();
  }
}

/** An event line as a procMonitor server with --host-id publishes it. */
function event(host: string, kind: "exec" | "exit", pid: number, time: string): string {
  // As the server writes it: host last, after the event's own fields.
  const common = { time, pid, user: "root", uid: 0, ppid: 1, cmdline: `/bin/job ${pid}` };
  return JSON.stringify(
    kind === "exec"
      ? { event: "exec", ...common, host }
      : { event: "exit", ...common, exit_code: 256, exit_status: 1, core_dumped: false, host },
  );
}

/** A temp dir with the password file, removed afterwards. */
async function secrets(): Promise<AsyncDisposable & { passwordFile: string; wrongFile: string }> {
  const dir = await Deno.makeTempDir({ prefix: "pm_live_nats_client_" });
  await Deno.writeTextFile(`${dir}/password`, PASSWORD + "\n");
  await Deno.writeTextFile(`${dir}/wrong`, "not-the-password\n");
  return {
    passwordFile: `${dir}/password`,
    wrongFile: `${dir}/wrong`,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/** The test's own connection, as a publisher. */
function publisher(cluster: NatsCluster): Promise<NatsConnection & AsyncDisposable> {
  return cluster.connect({ user: USER, pass: PASSWORD });
}

/**
 * A stream over procmonitor.> holding two events published before the returned `since` and
 * two after it (one payload of each pair without, one with a trailing newline).
 */
async function streamWithHistory(nc: NatsConnection) {
  await (await jetstreamManager(nc)).streams.add({ name: STREAM, subjects: ["procmonitor.>"] });
  const js = jetstream(nc);
  const before = [
    event("web1", "exec", 101, "2026-12-01T17:00:00.000001Z"),
    event("db-2", "exec", 102, "2026-12-01T17:00:00.000002Z"),
  ];
  const after = [
    event("web1", "exit", 101, "2026-12-01T17:00:05.000003Z"),
    event("db-2", "exit", 102, "2026-12-01T17:00:05.000004Z"),
  ];
  await js.publish("procmonitor.web1.exec", before[0]);
  await js.publish("procmonitor.db-2.exec", before[1] + "\n");
  // The stream stamps messages with the server's clock (this machine's); a gap on both
  // sides keeps --since (milliseconds) clear of them.
  await delay(50);
  const since = new Date().toISOString();
  await delay(50);
  await js.publish("procmonitor.web1.exit", after[0] + "\n");
  await js.publish("procmonitor.db-2.exit", after[1]);
  return { before, after, since };
}

/**
 * Publishes `line` on `subject` through a connection of the test's own (with `options`),
 * and waits until `client` prints it; the connection is closed before this returns.
 */
async function publishSeen(
  cluster: NatsCluster,
  client: Client,
  subject: string,
  line: string,
  options: Parameters<NatsCluster["connect"]>[0] = {},
): Promise<void> {
  await using nc = await cluster.connect(options);
  nc.publish(subject, line);
  await client.waitFor(line + "\n");
}

/**
 * A nats-server that wants USER and PASSWORD, the password files, and `client(args)`: a
 * Client of it logged in as USER, `args` added. The server is stopped and the files are
 * removed afterwards.
 */
async function passwordBroker() {
  const files = await secrets();
  const cluster = await NatsCluster.start({ auth: { user: USER, password: PASSWORD } });
  const login = ["--nats", cluster.url, "--nats-user", USER, "--nats-password-file"];
  return {
    files,
    cluster,
    client: (args: string[]) => new Client([...login, files.passwordFile, ...args]),
    async [Symbol.asyncDispose]() {
      await cluster[Symbol.asyncDispose]();
      await files[Symbol.asyncDispose]();
    },
  };
}

natsTest(
  "client --nats --stream --since replays only later events, exactly as published",
  async () => {
    await using broker = await passwordBroker();
    await using nc = await publisher(broker.cluster);
    const { after, since } = await streamWithHistory(nc);
    await using client = broker.client(["--stream", STREAM, "--since", since]);
    await client.waitFor(after[1] + "\n");
    const r = await client.interrupt();
    assert.equal(r.code, 0, client.dump());
    assert.equal(r.stdout, `${after[0]}\n${after[1]}\n`);
    assert.ok(!r.stderr.includes(PASSWORD), "the password is never logged");
  },
);

natsTest(
  "client --nats --stream without --since replays the whole stream, then follows it",
  async () => {
    await using broker = await passwordBroker();
    await using nc = await publisher(broker.cluster);
    const { before, after } = await streamWithHistory(nc);
    await using client = broker.client(["--stream", STREAM, "--host-id", "web1"]);
    await client.waitFor(after[0] + "\n");
    const later = event("web1", "exec", 103, "2026-12-01T17:00:09.000005Z");
    await jetstream(nc).publish("procmonitor.web1.exec", later);
    await client.waitFor(later + "\n");
    const r = await client.interrupt();
    assert.equal(r.code, 0, client.dump());
    assert.equal(r.stdout, `${before[0]}\n${after[0]}\n${later}\n`, "web1's events only, in order");
  },
);

natsTest("client --nats --format text prints a host column", async () => {
  await using broker = await passwordBroker();
  await using nc = await publisher(broker.cluster);
  const { since } = await streamWithHistory(nc);
  await using client = broker.client(["--stream", STREAM, "--since", since, "--format", "text"]);
  await client.waitFor("db-2         exit");
  const r = await client.interrupt();
  assert.equal(r.code, 0, client.dump());
  assert.equal(
    r.stdout,
    "17:00:05.000003 web1         exit         101       1 root       exit 1: /bin/job 101\n" +
      "17:00:05.000004 db-2         exit         102       1 root       exit 1: /bin/job 102\n",
  );
});

natsTest(
  "client --nats without --stream receives the events published after it subscribed",
  async () => {
    await using broker = await passwordBroker();
    await using nc = await publisher(broker.cluster);
    await using client = broker.client(["--subject", "procmonitor.*.exec", "--log-level", "debug"]);
    await client.waitFor("Reading live events on procmonitor.*.exec", "stderr");
    const exit = event("web1", "exit", 201, "2026-12-01T17:01:00.000001Z");
    const exec = event("web1", "exec", 202, "2026-12-01T17:01:00.000002Z");
    nc.publish("procmonitor.web1.exit", exit); // not on the subject: never printed
    nc.publish("procmonitor.web1.exec", exec + "\n");
    await client.waitFor(exec + "\n");
    const r = await client.interrupt();
    assert.equal(r.code, 0, client.dump());
    assert.equal(r.stdout, exec + "\n");
  },
);

natsTest("client --nats with a wrong password exits 1 with one sentence", async () => {
  await using broker = await passwordBroker();
  await using client = new Client([
    "--nats",
    broker.cluster.url,
    "--nats-user",
    USER,
    "--nats-password-file",
    broker.files.wrongFile,
  ]);
  const r = await client.result();
  assert.equal(r.code, 1, client.dump());
  assert.equal(r.stdout, "");
  assert.match(
    r.stderr,
    new RegExp(
      `^\\S+ \\S+ \\+00 \\[ERR\\] procmonitor\\.client: NATS at ${broker.cluster.url} refused the ` +
        `user "alice" and its password \\(--nats-user, --nats-password-file\\)\\n$`,
    ),
  );
  assert.ok(!r.stderr.includes("not-the-password"), "the password is never logged");
});

natsTest(
  "client --nats without credentials where they are required exits 1 and says so",
  async () => {
    await using cluster = await NatsCluster.start({ auth: { token: "t0ken" } });
    await using client = new Client(["--nats", cluster.url]);
    const r = await client.result();
    assert.equal(r.code, 1, client.dump());
    assert.ok(
      r.stderr.includes(
        `NATS at ${cluster.url} refused a connection without credentials (give --nats-user ` +
          `with --nats-password-file, --nats-token-file or --nats-creds)`,
      ),
      client.dump(),
    );
  },
);

natsTest("client --nats --stream naming no stream exits 1 with one sentence", async () => {
  await using broker = await passwordBroker();
  await using client = broker.client(["--stream", "NOSUCH"]);
  const r = await client.result();
  assert.equal(r.code, 1, client.dump());
  assert.ok(
    r.stderr.includes(
      `NATS at ${broker.cluster.url} has no stream "NOSUCH" (--stream; the servers' --nats-stream names it)`,
    ),
    client.dump(),
  );
  assert.equal(r.stderr.trim().split("\n").length, 1, "one line on stderr");
});

natsTest(
  "client --nats over TLS: an untrusted certificate is refused, --nats-ca trusts it",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "pm_live_nats_client_tls_" });
    try {
      const cert = await makeCert(dir);
      await using cluster = await NatsCluster.start({ tls: cert });
      assert.match(cluster.url, /^tls:\/\//);
      await using untrusted = new Client(["--nats", cluster.url]);
      const refused = await untrusted.result();
      assert.equal(refused.code, 1, untrusted.dump());
      assert.ok(
        refused.stderr.includes(
          `Cannot connect to NATS at ${cluster.url} with TLS: self-signed certificate ` +
            `(give the CA certificate with --nats-ca FILE)`,
        ),
        untrusted.dump(),
      );
      await using client = new Client([
        "--nats",
        cluster.url,
        "--nats-ca",
        cert.certFile,
        "--log-level",
        "debug",
      ]);
      await client.waitFor("Reading live events on procmonitor.>", "stderr");
      const exec = event("web1", "exec", 301, "2026-12-01T17:02:00.000001Z");
      await publishSeen(cluster, client, "procmonitor.web1.exec", exec, { tls: { ca: cert.cert } });
      const r = await client.interrupt();
      assert.equal(r.code, 0, client.dump());
      assert.equal(r.stdout, exec + "\n");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

natsTest(
  "client --nats --stream goes on when the node of its consumer dies, nothing twice",
  async () => {
    await using cluster = await NatsCluster.start({ nodes: 3 });
    await using nc = await cluster.connect();
    await (await jetstreamManager(nc)).streams.add({
      name: STREAM,
      subjects: ["procmonitor.>"],
      num_replicas: 3,
    });
    const js = jetstream(nc);
    const first = event("web1", "exec", 401, "2026-12-01T17:03:00.000001Z");
    await js.publish("procmonitor.web1.exec", first);
    // The client makes its consumer once, without --reconnect: on a cluster still settling
    // the stream's replicas, that request can time out (seen once in CI).
    await streamSettled(nc, STREAM);
    await using client = new Client([
      "--nats",
      cluster.url,
      "--stream",
      STREAM,
      "--log-level",
      "debug",
    ]);
    await client.waitFor(first + "\n");
    // The consumer lives on one node (one replica, in memory); that node dies.
    const consumers = await (await jetstreamManager(nc)).consumers.list(STREAM).next();
    assert.equal(consumers.length, 1);
    const leader = consumers[0].cluster?.leader ?? "";
    const node = [0, 1, 2].find((i) => leader === `n${i}`);
    assert.notEqual(node, undefined, `consumer leader ${leader}`);
    await cluster.kill(node!);
    const second = event("web1", "exit", 401, "2026-12-01T17:03:01.000002Z");
    await publishRetrying(js, "procmonitor.web1.exit", second);
    await client.waitFor(second + "\n", "stdout", 60_000);
    assert.match(client.stderr, /recreating it after stream sequence 1\n/);
    const r = await client.interrupt();
    assert.equal(r.code, 0, client.dump());
    assert.equal(r.stdout, `${first}\n${second}\n`);
  },
);

/** Waits until `stream` has a leader and every replica is current (at most 30 s). */
async function streamSettled(nc: NatsConnection, stream: string): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const cluster = (await jsm.streams.info(stream)).cluster;
    const replicas = cluster?.replicas ?? [];
    if (cluster?.leader && replicas.every((r) => r.current)) return;
    if (Date.now() > deadline) {
      throw new Error(`stream ${stream} not settled: ${JSON.stringify(cluster)}`);
    }
    await delay(100);
  }
}

/** Publishes into the stream, retrying while the cluster elects new leaders. */
async function publishRetrying(
  js: ReturnType<typeof jetstream>,
  subject: string,
  payload: string,
): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await js.publish(subject, payload, { msgID: subject + payload, timeout: 2_000 });
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await delay(200);
    }
  }
}

natsTest(
  "client --nats --reconnect waits for a server that is down at start, then reads",
  async () => {
    await using cluster = await NatsCluster.start();
    await cluster.stop(0);
    await using client = new Client(["--nats", cluster.url, "--reconnect", "--log-level", "debug"]);
    await client.waitFor(
      `Waiting for NATS at ${cluster.url} (--reconnect tries for ever)`,
      "stderr",
    );
    await cluster.restart(0);
    await client.waitFor("Reading live events on procmonitor.>", "stderr");
    const exec = event("db-2", "exec", 501, "2026-12-01T17:04:00.000001Z");
    await publishSeen(cluster, client, "procmonitor.db-2.exec", exec);
    const r = await client.interrupt();
    assert.equal(r.code, 0, client.dump());
    assert.equal(r.stdout, exec + "\n");
  },
);

natsTest(
  "client --nats --stream with a subject the stream does not hold exits 1 and says so",
  async () => {
    await using cluster = await NatsCluster.start();
    const nc = await connect({ servers: cluster.urls });
    try {
      await (await jetstreamManager(nc)).streams.add({ name: STREAM, subjects: ["procmonitor.>"] });
    } finally {
      await nc.close();
    }
    await using client = new Client([
      "--nats",
      cluster.url,
      "--stream",
      STREAM,
      "--subject",
      "other.>",
    ]);
    const r = await client.result();
    assert.equal(r.code, 1, client.dump());
    assert.equal(r.stdout, "");
    assert.match(
      r.stderr,
      new RegExp(
        `\\[ERR\\] procmonitor\\.client: Cannot read the stream "${STREAM}" on NATS at ` +
          `${cluster.url} with the subject other\\.>: .*subset.*\\n$`,
      ),
    );
    assert.equal(r.stderr.trim().split("\n").length, 1, "one line on stderr");
  },
);

Deno.test("client --nats with no server listening exits 1 with one sentence", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const url = `nats://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
  listener.close(); // nothing listens there now
  await using client = new Client(["--nats", url]);
  const r = await client.result();
  assert.equal(r.code, 1, client.dump());
  assert.equal(r.stdout, "");
  assert.ok(
    r.stderr.includes(
      `Cannot connect to NATS at ${url}: connection refused (is nats-server running there?)`,
    ),
    client.dump(),
  );
  assert.equal(r.stderr.trim().split("\n").length, 1, "one line on stderr");
});
