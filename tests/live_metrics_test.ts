/**
 * Live tests of `--metrics`: the real daemon against the real kernel, scraped over HTTP
 * while real processes run and real clients connect (a Unix-socket reader, a TCP client with
 * a wrong password), each scrape checked by the real `promtool check metrics`.
 */
import assert from "node:assert/strict";
import { liveTest, marker, MonitorProcess, run, runMain } from "./support/live.ts";
import { promtoolCheck } from "./support/promtool.ts";
import { WAIT_MS } from "./support/spawned.ts";
import type { Timer } from "../lib/timers.ts";
import { Monitor } from "../lib/events/monitor.ts";
import { UserNames } from "../lib/events/user_names.ts";
import { serveMetrics } from "../lib/cli/serve_metrics.ts";
import { EventCounts } from "../lib/outputs/metrics.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** A TCP port nothing listens on at the moment. */
function freePort(): number {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return listener.addr.port;
}

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: response.status, body: await response.text() };
}

/** The value of the sample `series` (name and labels as written) in `scrape`, or NaN. */
function value(scrape: string, series: string): number {
  const line = scrape.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? NaN : Number(line.slice(series.length + 1));
}

/** Scrapes until `series` satisfies `ok`; the last scrape. */
async function scrapeUntil(
  port: number,
  series: string,
  ok: (value: number) => boolean,
): Promise<string> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const { body } = await get(port, "/metrics");
    if (ok(value(body, series))) return body;
    if (Date.now() > deadline) throw new Error(`${series} never moved as expected:\n${body}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function assertPromtoolClean(scrape: string): Promise<void> {
  const verdict = await promtoolCheck(scrape);
  if (verdict !== null) assert.deepEqual(verdict, { code: 0, output: "" }, scrape);
}

/** Reads a connection until `done` says so; the text read. */
async function readUntil(conn: Deno.Conn, done: (text: string) => boolean): Promise<string> {
  const buffer = new Uint8Array(64 * 1024);
  let text = "";
  let timer: Timer | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Timed out after ${WAIT_MS} ms; read: ${JSON.stringify(text)}`)),
      WAIT_MS,
    );
  });
  try {
    while (!done(text)) {
      const n = await Promise.race([conn.read(buffer), late]);
      if (n === null) break;
      text += decoder.decode(buffer.subarray(0, n), { stream: true });
    }
  } finally {
    clearTimeout(timer);
  }
  return text;
}

liveTest(
  "/metrics passes promtool and its counters move with events, clients and a wrong password",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "pm-metrics-" });
    const socket = `${dir}/pm.sock`;
    const tcp = freePort();
    const http = freePort();
    try {
      await using daemon = await MonitorProcess.start([
        "-s",
        socket,
        "-t",
        String(tcp),
        "--bind",
        "127.0.0.1",
        "--metrics",
        `127.0.0.1:${http}`,
        "-e",
        "exec,exit",
      ], { PROCMONITOR_AUTH: "right-password" });
      const unix = `unix:${socket}`;
      const tcpGroup = `tcp:127.0.0.1:${tcp}`;

      const first = (await get(http, "/metrics")).body;
      await assertPromtoolClean(first);
      assert.equal(value(first, "procmonitor_reader_up"), 1);
      assert.equal(value(first, `procmonitor_clients{listener="${unix}"}`), 0);
      assert.equal(
        value(first, `procmonitor_auth_failures_total{listener="${tcpGroup}",reason="password"}`),
        0,
      );
      assert.ok(value(first, "procmonitor_process_table_size") > 0, first);
      assert.deepEqual(await get(http, "/healthz"), { status: 200, body: "ok\n" });

      // A socket client, then a marker process whose exec it sees.
      const client = await Deno.connect({ transport: "unix", path: socket });
      await scrapeUntil(http, `procmonitor_clients{listener="${unix}"}`, (v) => v === 1);
      const execsBefore = value(
        (await get(http, "/metrics")).body,
        'procmonitor_events_total{event="exec"}',
      );
      const m = marker("metrics");
      await run("/bin/sh", ["-c", "sleep 0.05; exit 0", m]); // 50 ms: time for /proc
      await readUntil(client, (text) => text.includes(m));
      const second = await scrapeUntil(
        http,
        'procmonitor_events_total{event="exec"}',
        (v) => v > execsBefore,
      );
      await assertPromtoolClean(second);
      assert.ok(value(second, "procmonitor_kernel_events_total") > 0, second);
      assert.equal(value(second, 'procmonitor_events_total{event="fork"}'), NaN, "not selected");

      // A wrong password over TCP.
      const guess = await Deno.connect({ hostname: "127.0.0.1", port: tcp });
      await guess.write(encoder.encode("wrong-password\n"));
      const answer = await readUntil(guess, (text) => text.includes("\n"));
      guess.close();
      assert.equal(answer, "Password: Authentication failed. Disconnecting.\n");
      await scrapeUntil(
        http,
        `procmonitor_auth_failures_total{listener="${tcpGroup}",reason="password"}`,
        (v) => v === 1,
      );

      // The socket client leaves.
      client.close();
      const last = await scrapeUntil(
        http,
        `procmonitor_client_disconnects_total{listener="${unix}",reason="closed"}`,
        (v) => v === 1,
      );
      assert.equal(value(last, `procmonitor_clients{listener="${unix}"}`), 0);
      await assertPromtoolClean(last);

      const end = await daemon.stop();
      assert.equal(end.code, 0, end.stderr);
      assert.ok(end.stderr.includes(`Serving metrics on "http://127.0.0.1:${http}/metrics"`));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

liveTest("with -d and --metrics, stdout still carries only events", async () => {
  const http = freePort();
  await using daemon = await MonitorProcess.start(["-d", "--metrics", String(http)]);
  const m = marker("stdout");
  await run("/bin/sh", ["-c", "sleep 0.05; exit 0", m]); // 50 ms: time for /proc
  await daemon.waitFor("the marker's exec", (e): e is typeof e => JSON.stringify(e).includes(m));
  assert.equal((await get(http, "/healthz")).status, 200);
  const end = await daemon.stop();
  assert.equal(end.code, 0, end.stderr);
  const lines = daemon.stdoutText.split("\n").filter((l) => l !== "");
  for (const line of lines) assert.ok(JSON.parse(line).event, `not an event: ${line}`);
});

liveTest("--metrics on a port in use: one sentence, exit 1", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = taken.addr.port;
  const result = await runMain(["-d", "--metrics", `127.0.0.1:${port}`]);
  assert.equal(result.code, 1, result.stderr);
  assert.ok(
    result.stderr.includes(
      `Cannot serve metrics on 127.0.0.1:${port} as the port is already in use`,
    ),
    result.stderr,
  );
  assert.equal(result.stdout, "");
});

Deno.test("a bad --metrics value: one sentence naming it, exit 2", async () => {
  const result = await runMain(["-d", "--metrics", "127.0.0.1:99999"]);
  assert.equal(result.code, 2);
  assert.equal(
    result.stderr.split("\n")[0],
    'procMonitor: --metrics needs a port from 1 to 65535, as in 9464 or 127.0.0.1:9464, not "127.0.0.1:99999"',
  );
});

liveTest(
  "the real reader: /healthz 200 and reader_up 1 while it runs, 503 and 0 once stopped",
  async () => {
    await using monitor = await Monitor.start({
      events: ["exec"],
      threads: false,
      uids: null,
      match: null,
      pids: null,
      realtime: false,
      usage: false,
      users: new UserNames(),
    });
    await using served = serveMetrics({ address: "127.0.0.1", port: 0 }, {
      monitor,
      events: new EventCounts(["exec"]),
      hub: null,
      listeners: [],
    });
    const running = monitor.run(() => {});
    assert.deepEqual(await get(served.port, "/healthz"), { status: 200, body: "ok\n" });
    assert.equal(value((await get(served.port, "/metrics")).body, "procmonitor_reader_up"), 1);
    monitor.stop();
    await running;
    assert.deepEqual(await get(served.port, "/healthz"), {
      status: 503,
      body: "procMonitor is shutting down\n",
    });
    assert.equal(value((await get(served.port, "/metrics")).body, "procmonitor_reader_up"), 0);
  },
);
