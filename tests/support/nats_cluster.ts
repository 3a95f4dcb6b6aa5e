/**
 * Real nats-server clusters for tests: 1 or 3 nodes with JetStream on free loopback ports, in
 * a temporary directory (config files written at test time), optional user/password, token or
 * JWT (`.creds`) auth and TLS. A node can be killed and restarted; `await using` stops all of them and
 * removes the directory.
 *
 * nats-server comes from Debian (package nats-server, 2.9.10; .ci/run installs it). Where it
 * is missing, {@link natsTest} skips loudly, except under CI, where {@link NatsCluster.start}
 * throws: a test that needs a broker must fail there, not pass without one.
 *
 * ```ts
 * await using cluster = await NatsCluster.start({ nodes: 3 });
 * cluster.urls;          // ["nats://127.0.0.1:4xxxx", ...]
 * await cluster.kill(1); // SIGKILL node 1
 * await cluster.restart(1);
 * ```
 */

import { connect, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import type { NatsAccount, NatsOperator } from "./nats_jwt.ts";

/** The nats-server executable, or null where it is not installed. */
export const NATS_SERVER: string | null = findOnPath("nats-server");

const inCi = (Deno.env.get("CI") ?? "") !== "" && Deno.env.get("CI") !== "false";
if (NATS_SERVER === null && !inCi) {
  console.warn(
    "\n!!! SKIPPING NATS TESTS: nats-server is not installed (apt-get install nats-server).\n",
  );
}

/**
 * Declares a test that needs nats-server: skipped loudly outside CI where it is missing; under
 * CI it runs and fails in {@link NatsCluster.start}.
 */
export function natsTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name,
    ignore: NATS_SERVER === null && !inCi,
    sanitizeResources: false,
    sanitizeOps: false,
    fn,
  });
}

/** How to start a cluster. */
export interface NatsClusterOptions {
  /** 1 (default) or 3 nodes; 3 form one cluster whose JetStream meta group has a leader. */
  nodes?: 1 | 3;
  /**
   * Clients must present this user and password, or this token, or the `.creds` of a user of
   * one of `accounts` (decentralized auth, tests/support/nats_jwt.ts): the server trusts
   * `operator` and knows only `accounts` (and the operator's system account), from a memory
   * resolver preloaded with their JWTs.
   */
  auth?:
    | { user: string; password: string }
    | { token: string }
    | { operator: NatsOperator; accounts: NatsAccount[] };
  /** Clients must speak TLS with this certificate (e.g. tests/support/tls.ts makeCert()). */
  tls?: { certFile: string; keyFile: string };
  /** Milliseconds to wait for readiness (default 20 000). */
  readyMs?: number;
}

interface Node {
  name: string;
  port: number;
  httpPort: number;
  clusterPort: number;
  config: string;
  child: Deno.ChildProcess | null;
}

/** A running nats-server cluster (or single server) with JetStream. */
export class NatsCluster implements AsyncDisposable {
  /** The temporary directory holding configs, JetStream stores and logs. */
  readonly dir: string;
  readonly #nodes: Node[];
  readonly #tls: boolean;
  readonly #readyMs: number;

  private constructor(dir: string, nodes: Node[], tls: boolean, readyMs: number) {
    this.dir = dir;
    this.#nodes = nodes;
    this.#tls = tls;
    this.#readyMs = readyMs;
  }

  /**
   * Writes the configs, starts every node and waits until JetStream is ready on all. The
   * ports are found free and then given to nats-server, so another process can take one in
   * between: a node that could not bind starts the whole cluster again on new ports.
   */
  static async start(options: NatsClusterOptions = {}): Promise<NatsCluster> {
    if (NATS_SERVER === null) {
      throw new Error("nats-server is not installed (apt-get install nats-server)");
    }
    for (let attempt = 1;; attempt++) {
      try {
        return await NatsCluster.#startOnce(options);
      } catch (error) {
        const taken = error instanceof Error && error.message.includes("address already in use");
        if (!taken || attempt === 3) throw error;
      }
    }
  }

  static async #startOnce(options: NatsClusterOptions): Promise<NatsCluster> {
    const count = options.nodes ?? 1;
    const dir = await Deno.makeTempDir({ prefix: "pm-nats-" });
    const nodes: Node[] = [];
    for (let i = 0; i < count; i++) {
      nodes.push({
        name: `n${i}`,
        port: freePort(),
        httpPort: freePort(),
        clusterPort: freePort(),
        config: `${dir}/n${i}.conf`,
        child: null,
      });
    }
    for (const node of nodes) {
      await Deno.writeTextFile(node.config, configFor(node, nodes, dir, options));
    }
    const cluster = new NatsCluster(
      dir,
      nodes,
      options.tls !== undefined,
      options.readyMs ?? 20_000,
    );
    try {
      for (let i = 0; i < count; i++) cluster.#spawn(i);
      await cluster.ready();
    } catch (error) {
      await cluster[Symbol.asyncDispose]();
      throw error;
    }
    return cluster;
  }

  /** Client URLs, one per node (tls:// when TLS is on), in node order. */
  get urls(): string[] {
    const scheme = this.#tls ? "tls" : "nats";
    return this.#nodes.map((n) => `${scheme}://127.0.0.1:${n.port}`);
  }

  /** The client URLs joined with commas, as `--nats` takes them. */
  get url(): string {
    return this.urls.join(",");
  }

  /**
   * The test's own NATS connection to every node, with `options` (credentials, TLS), closed
   * when disposed (`await using`).
   */
  async connect(
    options: Omit<ConnectionOptions, "servers"> = {},
  ): Promise<NatsConnection & AsyncDisposable> {
    const nc = await connect({ ...options, servers: this.urls });
    return Object.assign(nc, { [Symbol.asyncDispose]: () => nc.close() });
  }

  /** Client port of node `i`. */
  port(i: number): number {
    return this.#nodes[i].port;
  }

  /** HTTP monitoring base URL of node `i` (e.g. `${cluster.monitorUrl(0)}/jsz`). */
  monitorUrl(i: number): string {
    return `http://127.0.0.1:${this.#nodes[i].httpPort}`;
  }

  /** Whether node `i` is running (not killed or stopped). */
  running(i: number): boolean {
    return this.#nodes[i].child !== null;
  }

  /** The log of node `i` so far, for failure messages. */
  async log(i: number): Promise<string> {
    try {
      return await Deno.readTextFile(`${this.dir}/${this.#nodes[i].name}.log`);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return "";
      throw error;
    }
  }

  /** Kills node `i` with SIGKILL (a crash, no lame duck) and waits for it to be gone. */
  async kill(i: number): Promise<void> {
    await this.#stopNode(i, "SIGKILL");
  }

  /** Stops node `i` gracefully (SIGTERM), waiting for it to exit. */
  async stop(i: number): Promise<void> {
    await this.#stopNode(i, "SIGTERM");
  }

  /** Starts node `i` again with its config and store, and waits until the cluster is ready. */
  async restart(i: number): Promise<void> {
    if (this.#nodes[i].child !== null) await this.stop(i);
    this.#spawn(i);
    await this.ready();
  }

  /**
   * Waits until every running node answers /healthz and, with several nodes, all of them
   * see the same JetStream meta leader.
   */
  async ready(): Promise<void> {
    const deadline = Date.now() + this.#readyMs;
    let last = "";
    while (Date.now() < deadline) {
      last = await this.#notReady();
      if (last === "") return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const logs = await Promise.all(this.#nodes.map((_, i) => this.log(i)));
    throw new Error(
      `nats-server cluster not ready after ${this.#readyMs} ms (${last}); logs:\n` +
        logs.map((l) => l.split("\n").slice(-15).join("\n")).join("\n---\n"),
    );
  }

  /** Stops every node and removes the directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all(this.#nodes.map((_, i) => this.#stopNode(i, "SIGTERM")));
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  /** "" when ready, else what is missing. */
  async #notReady(): Promise<string> {
    const leaders = new Set<string>();
    for (const [i, node] of this.#nodes.entries()) {
      if (node.child === null) continue;
      const health = await getJson(`${this.monitorUrl(i)}/healthz`);
      if (health?.status !== "ok") return `${node.name} not healthy: ${JSON.stringify(health)}`;
      if (this.#nodes.length > 1) {
        const jsz = await getJson(`${this.monitorUrl(i)}/jsz`);
        const leader = (jsz?.meta_cluster as { leader?: string } | undefined)?.leader ?? "";
        if (leader === "") return `${node.name} sees no JetStream meta leader`;
        leaders.add(leader);
      }
    }
    if (leaders.size > 1) return `nodes disagree on the meta leader: ${[...leaders]}`;
    const running = new Set(this.#nodes.filter((n) => n.child !== null).map((n) => n.name));
    const [leader] = leaders;
    return leader === undefined || running.has(leader) ? "" : `meta leader ${leader} is down`;
  }

  #spawn(i: number): void {
    const node = this.#nodes[i];
    node.child = new Deno.Command(NATS_SERVER!, {
      args: ["-c", node.config],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
  }

  async #stopNode(i: number, signal: Deno.Signal): Promise<void> {
    const child = this.#nodes[i].child;
    if (child === null) return;
    this.#nodes[i].child = null;
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // exited meanwhile
      }
    }, 5_000);
    try {
      child.kill(signal);
    } catch (error) {
      if (!(error instanceof TypeError)) throw error; // already exited
    }
    await child.status;
    clearTimeout(timer);
  }
}

function configFor(node: Node, nodes: Node[], dir: string, options: NatsClusterOptions): string {
  const lines = [
    `server_name: ${node.name}`,
    `listen: "127.0.0.1:${node.port}"`,
    `http: "127.0.0.1:${node.httpPort}"`,
    `log_file: "${dir}/${node.name}.log"`,
    `jetstream { store_dir: "${dir}/${node.name}", max_memory_store: 64MB, max_file_store: 512MB }`,
  ];
  if (nodes.length > 1) {
    const routes = nodes.filter((n) => n !== node)
      .map((n) => `"nats-route://127.0.0.1:${n.clusterPort}"`);
    lines.push(
      `cluster { name: pmtest, listen: "127.0.0.1:${node.clusterPort}", routes: [${
        routes.join(", ")
      }] }`,
    );
  }
  const auth = options.auth;
  if (auth !== undefined && "token" in auth) {
    lines.push(`authorization { token: ${JSON.stringify(auth.token)} }`);
  } else if (auth !== undefined && "operator" in auth) {
    const system = auth.operator.system;
    const preload = [system, ...auth.accounts].map((a) => `${a.publicKey}: "${a.jwt}"`);
    lines.push(
      `operator: "${auth.operator.jwt}"`,
      `system_account: ${system.publicKey}`,
      `resolver: MEMORY`,
      `resolver_preload: { ${preload.join(", ")} }`,
    );
  } else if (auth !== undefined) {
    lines.push(
      `authorization { user: ${JSON.stringify(auth.user)}, password: ${
        JSON.stringify(auth.password)
      } }`,
    );
  }
  if (options.tls !== undefined) {
    lines.push(
      `tls { cert_file: "${options.tls.certFile}", key_file: "${options.tls.keyFile}" }`,
    );
  }
  return lines.join("\n") + "\n";
}

async function getJson(url: string): Promise<Record<string, unknown> | null> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(1_000) });
    const text = await response.text();
    return JSON.parse(text);
  } catch {
    return null; // not listening yet, or mid-election
  }
}

/** A loopback port nobody listens on right now. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function findOnPath(name: string): string | null {
  const dirs = (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":");
  for (const dir of [...dirs, "/usr/sbin", "/usr/local/sbin"]) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // not in this directory
    }
  }
  return null;
}
