/**
 * `--metrics`: puts the metrics together (lib/outputs/metrics.ts), measures the event
 * loop's lag, and serves both over HTTP (lib/outputs/metrics_server.ts) until closed.
 *
 * @module
 */

import { collectMetrics, type MetricsSources } from "../outputs/metrics.ts";
import { renderExposition } from "../outputs/exposition.ts";
import { LoopLag } from "../outputs/loop_lag.ts";
import { MetricsServer } from "../outputs/metrics_server.ts";

/** What `/metrics` and `/healthz` read; the loop lag is measured here. */
export interface ServedSources extends Omit<MetricsSources, "loopLag" | "monitor"> {
  monitor: MetricsSources["monitor"] & { readonly stopping: boolean };
}

/** The running endpoint: close it before the monitor. */
export interface ServedMetrics extends AsyncDisposable {
  /** The port listened on. */
  readonly port: number;
}

/**
 * Serves `/metrics` and `/healthz` on `where` until disposed.
 *
 * @throws {StartupError} when the address and port cannot be bound
 */
export function serveMetrics(
  where: { address: string; port: number },
  sources: ServedSources,
): ServedMetrics {
  const lag = new LoopLag();
  const all: MetricsSources = { ...sources, loopLag: () => lag.seconds };
  let server: MetricsServer;
  try {
    server = MetricsServer.open({
      hostname: where.address,
      port: where.port,
      metrics: () => renderExposition(collectMetrics(all)),
      health: () => healthProblem(sources.monitor),
    });
  } catch (error) {
    lag.stop();
    throw error;
  }
  return {
    port: server.port,
    async [Symbol.asyncDispose]() {
      lag.stop();
      await server.close();
    },
  };
}

/** Null while the reader thread runs; otherwise why `/healthz` answers 503. */
export function healthProblem(
  monitor: { readonly readerEnded: boolean; readonly stopping: boolean },
): string | null {
  if (monitor.stopping) return "procMonitor is shutting down";
  if (monitor.readerEnded) return "The kernel reader thread has stopped";
  return null;
}
