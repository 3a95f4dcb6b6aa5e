/**
 * Unit tests of lib/outputs/metrics.ts: every family from plain stand-ins for the monitor,
 * the hub, the listeners and the NATS output, rendered as `/metrics` renders them.
 */
import assert from "node:assert/strict";
import { collectMetrics, EventCounts, type MetricsSources } from "../lib/outputs/metrics.ts";
import { renderExposition } from "../lib/outputs/exposition.ts";
import type { ListenerStats } from "../lib/outputs/hub.ts";
import { promtoolCheck } from "./support/promtool.ts";

const UNIX = "unix:/run/pm.sock";
const TCP = "tcp:0.0.0.0:8080";

/** Sources with distinct values, so a value in the wrong series shows. */
function sources(overrides: Partial<MetricsSources> = {}): MetricsSources {
  const events = new EventCounts(["exec", "exit", "lost"]);
  events.add([{ event: "exec" }, { event: "exec" }, { event: "exit" }, { event: "fork" }]);
  const stats: Record<string, ListenerStats> = {
    [UNIX]: {
      clients: 2,
      dropped: 7,
      disconnects: { closed: 3, slow: 1, shutdown: 0 },
      refused: 4,
    },
  };
  return {
    monitor: {
      stats: () => ({
        events: 1000,
        kernelLost: 11,
        enobufs: 2,
        ringLost: 13,
        ringHigh: 4096,
        execGone: 8,
        execStuck: 1,
        usage: true,
        usageLost: 3,
        usageMissing: 4,
        execBpf: true,
        execBpfMissed: 5,
        steps: 90,
        slowSteps: 60,
      }),
      table: { size: 321, bytes: 65432 },
      readerEnded: false,
    },
    events,
    hub: {
      listenerStats: (group) =>
        stats[group] ??
          { clients: 0, dropped: 0, disconnects: { closed: 0, slow: 0, shutdown: 0 }, refused: 0 },
    },
    listeners: [{ group: UNIX }, { group: TCP, authFailures: { password: 5, timeout: 6 } }],
    loopLag: () => 0.002,
    rss: () => 50_000_000,
    openFds: () => 17,
    ...overrides,
  };
}

/** The sample lines of a scrape (no comments), as a set to look lines up in. */
function samples(text: string): Set<string> {
  return new Set(text.split("\n").filter((l) => l !== "" && !l.startsWith("#")));
}

function scrape(overrides: Partial<MetricsSources> = {}): string {
  return renderExposition(collectMetrics(sources(overrides)));
}

Deno.test("collectMetrics() reports the connector's counters and the reader", () => {
  const lines = samples(scrape());
  for (
    const line of [
      "procmonitor_reader_up 1",
      "procmonitor_kernel_events_total 1000",
      'procmonitor_lost_events_total{where="kernel"} 11',
      'procmonitor_lost_events_total{where="ring"} 13',
      "procmonitor_kernel_enobufs_total 2",
      "procmonitor_ring_high_water_bytes 4096",
      "procmonitor_exec_without_cmdline_total 8",
      "procmonitor_reader_stuck_total 1",
      "procmonitor_exec_bpf_up 1",
      "procmonitor_exec_bpf_missed_total 5",
      'procmonitor_reader_steps_total{step="short"} 30',
      'procmonitor_reader_steps_total{step="sparse"} 60',
      "procmonitor_usage_up 1",
      "procmonitor_usage_lost_total 3",
      "procmonitor_exit_without_usage_total 4",
      "procmonitor_process_table_size 321",
      "procmonitor_process_table_bytes 65432",
    ]
  ) assert.ok(lines.has(line), `missing ${line}`);
});

Deno.test("collectMetrics() says reader_up 0 once the reader ended", () => {
  const base = sources();
  const lines = samples(scrape({ monitor: { ...base.monitor, readerEnded: true } }));
  assert.ok(lines.has("procmonitor_reader_up 0"));
});

Deno.test("collectMetrics() counts events by kind, selected kinds from 0", () => {
  const text = scrape();
  assert.deepEqual(text.split("\n").filter((l) => l.startsWith("procmonitor_events_total")), [
    'procmonitor_events_total{event="exec"} 2',
    'procmonitor_events_total{event="exit"} 1',
    'procmonitor_events_total{event="lost"} 0',
    'procmonitor_events_total{event="fork"} 1',
  ]);
  assert.ok(text.includes("# TYPE procmonitor_events_total counter\n"));
});

Deno.test("collectMetrics() reports every listener, one with no clients yet at 0", () => {
  const lines = samples(scrape());
  for (
    const line of [
      `procmonitor_clients{listener="${UNIX}"} 2`,
      `procmonitor_clients{listener="${TCP}"} 0`,
      `procmonitor_client_dropped_events_total{listener="${UNIX}"} 7`,
      `procmonitor_client_disconnects_total{listener="${UNIX}",reason="closed"} 3`,
      `procmonitor_client_disconnects_total{listener="${UNIX}",reason="slow"} 1`,
      `procmonitor_client_disconnects_total{listener="${UNIX}",reason="shutdown"} 0`,
      `procmonitor_client_disconnects_total{listener="${TCP}",reason="closed"} 0`,
      `procmonitor_clients_refused_total{listener="${UNIX}"} 4`,
    ]
  ) assert.ok(lines.has(line), `missing ${line}`);
});

Deno.test("collectMetrics() reports auth failures of TCP listeners only", () => {
  const text = scrape();
  assert.deepEqual(text.split("\n").filter((l) => l.startsWith("procmonitor_auth_failures")), [
    `procmonitor_auth_failures_total{listener="${TCP}",reason="password"} 5`,
    `procmonitor_auth_failures_total{listener="${TCP}",reason="timeout"} 6`,
  ]);
});

Deno.test("collectMetrics() without a hub (-d only) has no client families", () => {
  const text = scrape({ hub: null, listeners: [] });
  assert.ok(!text.includes("procmonitor_clients"), text);
  assert.ok(!text.includes("procmonitor_auth_failures_total"));
  assert.ok(text.includes("procmonitor_events_total"));
});

Deno.test("collectMetrics() without a NATS source has no NATS families", () => {
  for (const text of [scrape(), scrape({ nats: () => null })]) {
    const nats = [...samples(text)].filter((l) => l.includes("nats"));
    assert.deepEqual(nats, []);
    assert.ok(!text.includes("# TYPE procmonitor_nats"));
  }
});

Deno.test("collectMetrics() with a NATS source reports its buffer, publishes, acks and losses", () => {
  const text = scrape({ nats: () => ({ buffered: 12, published: 3400, acked: 3390, lost: 9 }) });
  const lines = samples(text);
  for (
    const line of [
      "procmonitor_nats_buffered_messages 12",
      "procmonitor_nats_published_total 3400",
      "procmonitor_nats_acked_total 3390",
      'procmonitor_lost_events_total{where="nats"} 9',
    ]
  ) assert.ok(lines.has(line), `missing ${line}`);
  assert.ok(text.includes("# TYPE procmonitor_nats_buffered_messages gauge\n"));
  assert.ok(text.includes("# TYPE procmonitor_nats_acked_total counter\n"));
  // One family for every loss, so sum() covers them all.
  assert.equal(text.split("# TYPE procmonitor_lost_events_total").length, 2);
});

Deno.test("collectMetrics() reports memory, open files, loop lag and build info", () => {
  const lines = samples(scrape());
  const { version } = JSON.parse(
    Deno.readTextFileSync(new URL("../deno.json", import.meta.url)),
  );
  for (
    const line of [
      "process_resident_memory_bytes 50000000",
      "process_open_fds 17",
      "procmonitor_event_loop_lag_seconds 0.002",
      `procmonitor_build_info{version="${version}",deno="${Deno.version.deno}"} 1`,
    ]
  ) assert.ok(lines.has(line), `missing ${line}`);
});

Deno.test("collectMetrics() leaves out the loop lag before its first measurement", () => {
  assert.ok(!scrape({ loopLag: () => null }).includes("procmonitor_event_loop_lag_seconds"));
});

Deno.test("collectMetrics() reads this process's memory and open files by default", () => {
  const { rss: _rss, openFds: _fds, ...rest } = sources();
  const text = renderExposition(collectMetrics(rest));
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
  assert.ok(value("process_resident_memory_bytes") > 1_000_000);
  assert.ok(value("process_open_fds") >= 3);
});

Deno.test("EventCounts counts kinds it was not given too", () => {
  const counts = new EventCounts([]);
  counts.add([{ event: "comm" }]);
  counts.add([{ event: "comm" }, { event: "uid" }]);
  assert.deepEqual(counts.entries(), [["comm", 2], ["uid", 1]]);
});

Deno.test("collectMetrics() with every source present passes promtool check metrics", async () => {
  const verdict = await promtoolCheck(
    scrape({ nats: () => ({ buffered: 1, published: 2, acked: 2, lost: 0 }) }),
  );
  if (verdict === null) return;
  assert.deepEqual(verdict, { code: 0, output: "" });
});
