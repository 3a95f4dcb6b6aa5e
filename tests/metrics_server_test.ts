/**
 * Tests of lib/outputs/metrics_server.ts and lib/cli/serve_metrics.ts over real HTTP on
 * loopback: what /metrics and /healthz answer, HEAD, wrong paths and methods, bind errors.
 */
import assert from "node:assert/strict";
import { captureLogs, logText } from "./support/logs.ts";
import { MetricsServer, type MetricsServerOptions } from "../lib/outputs/metrics_server.ts";
import { healthProblem, serveMetrics } from "../lib/cli/serve_metrics.ts";
import { EventCounts } from "../lib/outputs/metrics.ts";
import { StartupError } from "../lib/errors.ts";

await captureLogs();

const NO_STATS = {
  events: 0,
  kernelLost: 0,
  enobufs: 0,
  ringLost: 0,
  ringHigh: 0,
  execGone: 0,
  execStuck: 0,
  usage: true,
  usageLost: 0,
  usageMissing: 0,
  execBpf: false,
  execBpfMissed: 0,
  steps: 0,
  slowSteps: 0,
};
const BODY = "# HELP x_total h\n# TYPE x_total counter\nx_total 1\n";

function open(opts: Partial<MetricsServerOptions> = {}): MetricsServer {
  return MetricsServer.open({
    hostname: "127.0.0.1",
    port: 0,
    metrics: () => BODY,
    health: () => null,
    ...opts,
  });
}

async function get(
  port: number,
  path: string,
  method = "GET",
  host = "127.0.0.1",
): Promise<{ status: number; type: string | null; allow: string | null; body: string }> {
  const response = await fetch(`http://${host}:${port}${path}`, { method });
  return {
    status: response.status,
    type: response.headers.get("content-type"),
    allow: response.headers.get("allow"),
    body: await response.text(),
  };
}

Deno.test("MetricsServer answers GET /metrics with the text format", async () => {
  await using server = open();
  assert.deepEqual(await get(server.port, "/metrics"), {
    status: 200,
    type: "text/plain; version=0.0.4; charset=utf-8",
    allow: null,
    body: BODY,
  });
  assert.ok(
    logText().includes(`Serving metrics on http://127.0.0.1:${server.port}/metrics`),
    logText().join("\n"),
  );
});

Deno.test("MetricsServer renders /metrics anew for every request", async () => {
  let n = 0;
  await using server = open({ metrics: () => `n ${++n}\n` });
  assert.equal((await get(server.port, "/metrics")).body, "n 1\n");
  assert.equal((await get(server.port, "/metrics")).body, "n 2\n");
});

Deno.test("MetricsServer answers /healthz 200 ok while healthy, 503 with the reason after", async () => {
  let problem: string | null = null;
  await using server = open({ health: () => problem });
  assert.deepEqual(await get(server.port, "/healthz"), {
    status: 200,
    type: "text/plain; charset=utf-8",
    allow: null,
    body: "ok\n",
  });
  problem = "The kernel reader thread has stopped";
  const failed = await get(server.port, "/healthz");
  assert.equal(failed.status, 503);
  assert.equal(failed.body, "The kernel reader thread has stopped\n");
});

Deno.test("MetricsServer answers HEAD like GET without a body", async () => {
  await using server = open();
  const head = await get(server.port, "/metrics", "HEAD");
  assert.equal(head.status, 200);
  assert.equal(head.type, "text/plain; version=0.0.4; charset=utf-8");
  assert.equal(head.body, "");
  assert.equal((await get(server.port, "/healthz", "HEAD")).status, 200);
});

Deno.test("MetricsServer answers 404 to other paths and 405 to other methods", async () => {
  await using server = open();
  for (const path of ["/", "/metrics/", "/favicon.ico", "/healthz/x"]) {
    const got = await get(server.port, path);
    assert.equal(got.status, 404, path);
    assert.equal(got.body, "Not found: try /metrics or /healthz\n");
  }
  for (const method of ["POST", "PUT", "DELETE"]) {
    const got = await get(server.port, "/metrics", method);
    assert.deepEqual(got, {
      status: 405,
      type: "text/plain; charset=utf-8",
      allow: "GET, HEAD",
      body: `${method} is not allowed here: use GET or HEAD\n`,
    });
  }
});

Deno.test("MetricsServer serves on IPv6 loopback", async () => {
  await using server = open({ hostname: "::1" });
  assert.equal(server.address, `[::1]:${server.port}`);
  assert.equal((await get(server.port, "/healthz", "GET", "[::1]")).body, "ok\n");
});

Deno.test("MetricsServer on a port in use is a one-sentence StartupError", () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = taken.addr.port;
  assert.throws(() => open({ port }), (error: unknown) => {
    assert.ok(error instanceof StartupError);
    assert.equal(
      error.message,
      `Cannot serve metrics on 127.0.0.1:${port} as the port is already in use`,
    );
    return true;
  });
});

Deno.test("MetricsServer on an address this host does not have is a StartupError", () => {
  assert.throws(() => open({ hostname: "192.0.2.1" }), {
    name: "StartupError",
    message: "Cannot serve metrics on 192.0.2.1:0 as 192.0.2.1 is not an address of this host",
  });
});

Deno.test("healthProblem() is null while the reader runs, a reason once it stopped", () => {
  assert.equal(healthProblem({ readerEnded: false, stopping: false }), null);
  assert.equal(
    healthProblem({ readerEnded: true, stopping: false }),
    "The kernel reader thread has stopped",
  );
  assert.equal(
    healthProblem({ readerEnded: false, stopping: true }),
    "procMonitor is shutting down",
  );
  assert.equal(
    healthProblem({ readerEnded: true, stopping: true }),
    "procMonitor is shutting down",
  );
});

Deno.test("serveMetrics() serves the collected families and the monitor's health", async () => {
  const monitor = {
    stats: () => ({ ...NO_STATS, events: 5 }),
    table: { size: 1, bytes: 2 },
    readerEnded: false,
    stopping: false,
  };
  const events = new EventCounts(["exec"]);
  await using served = serveMetrics({ address: "127.0.0.1", port: 0 }, {
    monitor,
    events,
    hub: null,
    listeners: [],
  });
  events.add([{ event: "exec" }]);
  const body = (await get(served.port, "/metrics")).body;
  assert.ok(body.includes('\nprocmonitor_events_total{event="exec"} 1\n'), body);
  assert.ok(body.includes("\nprocmonitor_kernel_events_total 5\n"), body);
  assert.equal((await get(served.port, "/healthz")).status, 200);
  monitor.readerEnded = true;
  assert.deepEqual(
    [(await get(served.port, "/healthz")).status, (await get(served.port, "/healthz")).body],
    [503, "The kernel reader thread has stopped\n"],
  );
});

Deno.test("serveMetrics() on a port in use throws the one-sentence StartupError", () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const sources = {
    monitor: {
      stats: () => NO_STATS,
      table: { size: 0, bytes: 0 },
      readerEnded: false,
      stopping: false,
    },
    events: new EventCounts([]),
    hub: null,
    listeners: [],
  };
  assert.throws(() => serveMetrics({ address: "127.0.0.1", port: taken.addr.port }, sources), {
    name: "StartupError",
    message: `Cannot serve metrics on 127.0.0.1:${taken.addr.port} as the port is already in use`,
  });
});
