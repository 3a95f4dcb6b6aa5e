/**
 * procMonitor's metrics (README, "Metrics"): the families `/metrics` serves, read from the
 * counters the pipeline keeps anyway, once per scrape. Nothing here runs per event except
 * {@link EventCounts.add}, one increment per event.
 *
 * @module
 */

import type { MetricFamily, Sample } from "./exposition.ts";
import type { ConnectorStats } from "../kernel/ffi.ts";
import type { AuthFailures } from "./tcp_listener.ts";
import type { ListenerStats } from "./hub.ts";
import denoJson from "../../deno.json" with { type: "json" };

/** What the NATS output reports (lib/outputs/nats_output.ts's `stats()`). */
export interface NatsStats {
  /** Messages waiting in the outgoing buffer. */
  buffered: number;
  /** Messages handed to the broker. */
  published: number;
  /** Of those, messages JetStream acknowledged. */
  acked: number;
  /** Events dropped because the outgoing buffer was full. */
  lost: number;
}

/** Where the metrics come from; see {@link collectMetrics}. */
export interface MetricsSources {
  /** The connector's counters, the process table and the reader thread. */
  monitor: {
    stats(): Pick<
      ConnectorStats,
      | "events"
      | "kernelLost"
      | "enobufs"
      | "ringLost"
      | "ringHigh"
      | "execGone"
      | "execStuck"
      | "usage"
      | "usageLost"
      | "usageMissing"
      | "execBpf"
      | "execBpfMissed"
      | "steps"
      | "slowSteps"
    >;
    readonly table: { size: number; bytes: number };
    readonly readerEnded: boolean;
  };
  /** Events handed to the outputs, by kind. */
  events: EventCounts;
  /** The hub's per-listener counters; null when no listener runs. */
  hub: { listenerStats(group: string): Readonly<ListenerStats> } | null;
  /** The listeners: their names, and the TCP listeners' failed authentications. */
  listeners: readonly { readonly group: string; readonly authFailures?: Readonly<AuthFailures> }[];
  /** The NATS output's counters; absent (or null) when NATS is off. */
  nats?: () => NatsStats | null;
  /** How late the event loop's last timer ran, in seconds; null before the first one. */
  loopLag: () => number | null;
  /** The resident set size in bytes (default: Deno.memoryUsage().rss). */
  rss?: () => number;
  /** Open file descriptors (default: counted in /proc/self/fd). */
  openFds?: () => number;
}

/** Counts the events handed to the outputs, by kind; every selected kind starts at 0. */
export class EventCounts {
  readonly #counts = new Map<string, number>();

  /** @param kinds the kinds shown (at 0) before any event: the `-e` events, then `lost` */
  constructor(kinds: readonly string[]) {
    for (const kind of kinds) this.#counts.set(kind, 0);
  }

  /** Counts one batch. */
  add(events: readonly { event: string }[]): void {
    for (const { event } of events) this.#counts.set(event, (this.#counts.get(event) ?? 0) + 1);
  }

  /** Every kind seen or selected, with its count, in first-seen order. */
  entries(): [string, number][] {
    return [...this.#counts];
  }
}

/** The metric families of `sources`, read now. */
export function collectMetrics(sources: MetricsSources): MetricFamily[] {
  const nats = sources.nats?.() ?? null;
  return [
    ...kernelFamilies(sources.monitor, nats),
    ...eventFamilies(sources.events),
    ...listenerFamilies(sources.hub, sources.listeners),
    ...natsFamilies(nats),
    ...processFamilies(sources),
  ];
}

function counter(name: string, help: string, samples: Sample[]): MetricFamily {
  return { name, help, type: "counter", samples };
}

function gauge(name: string, help: string, samples: Sample[]): MetricFamily {
  return { name, help, type: "gauge", samples };
}

function kernelFamilies(
  monitor: MetricsSources["monitor"],
  nats: NatsStats | null,
): MetricFamily[] {
  const stats = monitor.stats();
  const lost: Sample[] = [
    { labels: { where: "kernel" }, value: stats.kernelLost },
    { labels: { where: "ring" }, value: stats.ringLost },
  ];
  // In the same family as the kernel's and the ring's, so one sum() covers every loss.
  if (nats !== null) lost.push({ labels: { where: "nats" }, value: nats.lost });
  return [
    gauge("procmonitor_reader_up", "1 while the kernel reader thread runs, 0 once it ended.", [
      { value: monitor.readerEnded ? 0 : 1 },
    ]),
    counter("procmonitor_kernel_events_total", "Records read from the proc connector.", [
      { value: stats.events },
    ]),
    counter(
      "procmonitor_lost_events_total",
      "Events lost on the way to the outputs: kernel (netlink buffer overrun or sequence " +
        'gap), ring (procMonitor\'s ring full; "buffer" in lost events), nats (the NATS ' +
        "output's buffer full).",
      lost,
    ),
    counter(
      "procmonitor_kernel_enobufs_total",
      "Times the netlink socket's receive buffer overflowed (ENOBUFS).",
      [{ value: stats.enobufs }],
    ),
    gauge("procmonitor_ring_high_water_bytes", "The most bytes ever waiting in the ring.", [
      { value: stats.ringHigh },
    ]),
    counter(
      "procmonitor_exec_without_cmdline_total",
      "Exec events sent without a cmdline: the process was gone, its pid reused or its /proc " +
        "read hung before it could be read.",
      [{ value: stats.execGone }],
    ),
    counter(
      "procmonitor_reader_stuck_total",
      "Times a /proc read hung and a new reader thread took over.",
      [{ value: stats.execStuck }],
    ),
    gauge(
      "procmonitor_exec_bpf_up",
      "1 while exec cmdlines are taken in the kernel at the exec (BPF), 0 while read from /proc.",
      [{ value: stats.execBpf ? 1 : 0 }],
    ),
    counter(
      "procmonitor_exec_bpf_missed_total",
      "Execs the BPF program had no entry for (its ring full), whose /proc was read instead.",
      [{ value: stats.execBpfMissed }],
    ),
    counter(
      "procmonitor_reader_steps_total",
      "Gathering steps the reader ended with one wakeup of the pipeline: short (1 ms) and " +
        "sparse (4 ms, in a slow steady stream such as a slow machine's fork storm).",
      [
        { labels: { step: "short" }, value: stats.steps - stats.slowSteps },
        { labels: { step: "sparse" }, value: stats.slowSteps },
      ],
    ),
    ...usageFamilies(stats),
    gauge("procmonitor_process_table_size", "Processes in the process table.", [
      { value: monitor.table.size },
    ]),
    gauge("procmonitor_process_table_bytes", "Bytes the process table counts itself as taking.", [
      { value: monitor.table.bytes },
    ]),
  ];
}

/** taskstats: whether exits carry usage, and the exits that went out without it. */
function usageFamilies(
  stats: ReturnType<MetricsSources["monitor"]["stats"]>,
): MetricFamily[] {
  return [
    gauge("procmonitor_usage_up", "1 while exits carry resource usage from taskstats.", [
      { value: stats.usage ? 1 : 0 },
    ]),
    counter(
      "procmonitor_usage_lost_total",
      "taskstats messages lost to ENOBUFS (reported as lost events with where usage).",
      [{ value: stats.usageLost }],
    ),
    counter(
      "procmonitor_exit_without_usage_total",
      "Exit events sent without resource usage while usage was on.",
      [{ value: stats.usageMissing }],
    ),
  ];
}

function eventFamilies(events: EventCounts): MetricFamily[] {
  return [
    counter(
      "procmonitor_events_total",
      "Events handed to the outputs (after the filters), by kind.",
      events.entries().map(([event, value]) => ({ labels: { event }, value })),
    ),
  ];
}

function listenerFamilies(
  hub: MetricsSources["hub"],
  listeners: MetricsSources["listeners"],
): MetricFamily[] {
  if (hub === null) return [];
  const each = listeners.map((l) => ({ listener: l.group, stats: hub.listenerStats(l.group) }));
  const per = (value: (stats: Readonly<ListenerStats>) => number): Sample[] =>
    each.map(({ listener, stats }) => ({ labels: { listener }, value: value(stats) }));
  const reasons = ["closed", "slow", "shutdown"] as const;
  const tcp = listeners.filter((l) => l.authFailures !== undefined);
  return [
    gauge("procmonitor_clients", "Clients connected now, per listener.", per((s) => s.clients)),
    counter(
      "procmonitor_client_dropped_events_total",
      "Events not queued for a client whose queue was full, summed over the listener's " +
        "clients (an event three clients missed counts three).",
      per((s) => s.dropped),
    ),
    counter(
      "procmonitor_client_disconnects_total",
      "Clients that left: closed (by the client, or its connection failed), slow " +
        "(disconnected for not keeping up), shutdown.",
      each.flatMap(({ listener, stats }) =>
        reasons.map((reason) => ({
          labels: { listener, reason },
          value: stats.disconnects[reason],
        }))
      ),
    ),
    counter(
      "procmonitor_clients_refused_total",
      "Connections refused as over the listener's client limit (-c).",
      per((s) => s.refused),
    ),
    counter(
      "procmonitor_auth_failures_total",
      "TCP connections sent the authentication failure: a wrong password line, or none " +
        "within the timeout.",
      tcp.flatMap((l) =>
        (["password", "timeout"] as const).map((reason) => ({
          labels: { listener: l.group, reason },
          value: l.authFailures![reason],
        }))
      ),
    ),
  ];
}

function natsFamilies(nats: NatsStats | null): MetricFamily[] {
  if (nats === null) return [];
  return [
    gauge("procmonitor_nats_buffered_messages", "Messages waiting in the NATS output buffer.", [
      { value: nats.buffered },
    ]),
    counter("procmonitor_nats_published_total", "Messages published to NATS.", [
      { value: nats.published },
    ]),
    counter("procmonitor_nats_acked_total", "Published messages JetStream acknowledged.", [
      { value: nats.acked },
    ]),
  ];
}

function processFamilies(sources: MetricsSources): MetricFamily[] {
  const lag = sources.loopLag();
  return [
    gauge("procmonitor_build_info", "Always 1: the versions of procMonitor and Deno.", [
      { labels: { version: denoJson.version, deno: Deno.version.deno }, value: 1 },
    ]),
    // The standard names of Prometheus' process collector, so existing dashboards work.
    gauge("process_resident_memory_bytes", "Resident memory size in bytes.", [
      { value: (sources.rss ?? (() => Deno.memoryUsage().rss))() },
    ]),
    gauge("process_open_fds", "Number of open file descriptors.", [
      { value: (sources.openFds ?? countOpenFds)() },
    ]),
    gauge(
      "procmonitor_event_loop_lag_seconds",
      "How late the JavaScript thread ran its last once-a-second timer: time it was busy.",
      lag === null ? [] : [{ value: lag }],
    ),
  ];
}

function countOpenFds(): number {
  let fds = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) fds++;
  return fds;
}
