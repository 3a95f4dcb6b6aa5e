/**
 * The pipeline from the kernel to the outputs:
 * connector batch → decode → enrich → filter → the caller's sink, in kernel order.
 *
 * @module
 */

import { EventFilter, type FilterOptions } from "./event_filter.ts";
import { type Enriched, Enricher } from "./enricher.ts";
import type { EventName, ProcEvent } from "./event.ts";
import { ProcConnector, type SnapshotReads } from "../kernel/ffi.ts";
import { MAX_ANCESTRY } from "./ancestry.ts";
import { KernelClock } from "../kernel/kernel_clock.ts";
import { ProcTable } from "./proc_table.ts";
import { decodeBatch, type RawRecord, RecordKind } from "../kernel/record.ts";
import { UserNames } from "./user_names.ts";
import type { Timer } from "../timers.ts";

/** Batch buffer size: room for hundreds of records per FFI call. */
const BATCH_BYTES = 512 * 1024;
/** How long a main thread's exit waits for its process's other threads before it goes. */
const HELD_EXIT_MS = 5000;
/** How often the monotonic → wall-clock offset is measured again. */
const CALIBRATE_MS = 60_000;

/** What the monitor needs beyond the filters. */
export interface MonitorOptions extends FilterOptions {
  /** Raise the C reader thread's priority. */
  realtime: boolean;
  /** Join exits with their resource usage (taskstats); false for `--no-usage`. */
  usage: boolean;
  users: UserNames;
  /** Ancestors shown on fork, exec and exit (`--ancestry N`); default none. */
  ancestry?: number;
  /** The exec snapshot's extra reads; default none. */
  snapshot?: SnapshotReads;
}

/**
 * The kernel filter mask for the selected events. fork, exec, exit and uid are always
 * needed: they keep the process table (and --pid, and every event's user) right whatever
 * `-e` shows. uid events are rare, and an exec's user comes from the table.
 */
export function kernelMask(events: readonly EventName[]): number {
  let mask = RecordKind.fork | RecordKind.exec | RecordKind.exit | RecordKind.uid;
  for (const name of events) mask |= RecordKind[name];
  const all = Object.values(RecordKind).reduce((a, b) => (a | b) >>> 0, 0) & ~RecordKind.lost;
  return (mask >>> 0) === (all >>> 0) ? 0 : mask >>> 0;
}

/** A running monitor: call {@link run}, then {@link stop} from a signal handler. */
export class Monitor implements AsyncDisposable {
  readonly #connector: ProcConnector;
  readonly #enricher: Enricher;
  readonly #filter: EventFilter;
  readonly #clock: KernelClock;
  readonly #table: ProcTable;
  #stopping = false;
  /** The events of the batch in hand, as the filters accept them. */
  #out: ProcEvent[] = [];
  #expiry: Timer | undefined;
  readonly #accept = (enriched: Enriched) => {
    if (this.#filter.accept(enriched)) this.#out.push(enriched.event);
  };
  readonly #enrich = (record: RawRecord) => this.#enricher.enrich(record, this.#accept);
  /** How many processes the start-up scan of /proc found. */
  readonly scanned: number;

  private constructor(
    connector: ProcConnector,
    table: ProcTable,
    scanned: number,
    options: MonitorOptions,
  ) {
    this.#connector = connector;
    this.#clock = new KernelClock(
      () => connector.monotonicNowNs(),
      () => connector.realtimeNowNs(),
    );
    this.#table = table;
    const belong = options.belong;
    this.#enricher = new Enricher(this.#table, options.users, this.#clock, {
      ancestry: options.ancestry ?? 0,
      // The ancestor filters look as far up as the table goes.
      ancestryWalk: belong?.ancestor || belong?.notAncestor ? MAX_ANCESTRY : 0,
      env: (options.snapshot?.env ?? []).length > 0,
      cgroup: options.snapshot?.cgroup ?? false,
    });
    this.#filter = new EventFilter(options, this.#table.parents());
    this.scanned = scanned;
  }

  /** Subscribes to the kernel and scans /proc. Throws NativeError when the connector fails. */
  static async start(options: MonitorOptions): Promise<Monitor> {
    const connector = await ProcConnector.open({
      eventMask: kernelMask(options.events),
      realtime: options.realtime,
      // Without exit events, taskstats would cost the kernel a message per exit for nothing.
      usage: options.usage && options.events.includes("exit"),
      snapshot: options.snapshot ?? {},
    });
    try {
      // Subscribed first, scanned second: a process that exits during the scan still has
      // its exit waiting in the ring, and finds its entry.
      const table = new ProcTable();
      const scanned = await table.scan(undefined, undefined, options.snapshot?.cgroup ?? false);
      return new Monitor(connector, table, scanned, options);
    } catch (error) {
      await connector.close();
      throw error;
    }
  }

  /** The current wall-clock time as an event `time`. */
  now(): string {
    return this.#clock.now();
  }

  /** Whether the reader thread has ended; true after {@link run} returned in all but the
   * case of a reader stuck in a /proc read. */
  get readerEnded(): boolean {
    return this.#connector.readerEnded;
  }

  /** Whether {@link stop} was called: the monitor is shutting down, not failing. */
  get stopping(): boolean {
    return this.#stopping;
  }

  /** Processes in the table, and the bytes it counts them as taking. */
  get table(): { size: number; bytes: number } {
    return { size: this.#table.size, bytes: this.#table.bytes };
  }

  /** The connector's counters. */
  stats(): ReturnType<ProcConnector["stats"]> {
    return this.#connector.stats();
  }

  /** Exec snapshots from the kernel's BPF from now on; see {@link ProcConnector.execBpf}. */
  execBpf(): Promise<void> {
    return this.#connector.execBpf();
  }

  /**
   * Delivers accepted events to `sink`, one call per kernel batch, until {@link stop}.
   * Rejects if the connector fails. While `mayBlock()` is true (the sink left nothing
   * waiting on the event loop), the next batch is waited for by blocking this thread:
   * see {@link ProcConnector.nextBatch}.
   */
  async run(
    sink: (events: ProcEvent[]) => void,
    mayBlock: () => boolean = () => false,
  ): Promise<void> {
    const buffer = new Uint8Array(BATCH_BYTES);
    const view = new DataView(buffer.buffer);
    let calibrated = performance.now();
    for (;;) {
      // After stop() this still returns what the reader had read, then 0.
      const length = this.#connector.takeBatch(buffer, mayBlock) ||
        await this.#connector.nextBatch(buffer, Infinity, mayBlock);
      if (length === 0) {
        if (!this.#stopping) continue;
        // Held exits belong to processes still running: nothing to deliver for them.
        clearTimeout(this.#expiry);
        this.#expiry = undefined;
        return;
      }
      decodeBatch(view, length, this.#enrich);
      this.#deliver(sink);
      const now = this.#connector.batchAt;
      if (now - calibrated > CALIBRATE_MS) {
        this.#clock.calibrate();
        calibrated = now;
      }
    }
  }

  /**
   * Hands the batch's accepted events to `sink`. While main-thread exits are held (their
   * processes' other threads still run), a timer lets go of those whose threads' exits
   * never came (lost, or threads the monitor never saw start): no timer otherwise.
   */
  #deliver(sink: (events: ProcEvent[]) => void): void {
    if (this.#out.length > 0) {
      sink(this.#out);
      this.#out = [];
    }
    if (this.#enricher.holding === 0 || this.#expiry !== undefined) return;
    this.#expiry = setTimeout(() => {
      this.#expiry = undefined;
      const before = this.#connector.monotonicNowNs() - BigInt(HELD_EXIT_MS) * 1_000_000n;
      this.#enricher.expire(before, this.#accept);
      this.#deliver(sink);
    }, HELD_EXIT_MS);
  }

  /** Stops the reader thread; {@link run} returns once what it had read is delivered. */
  stop(): void {
    this.#stopping = true;
    this.#connector.stop();
  }

  /** Stops and releases the connector. */
  async close(): Promise<void> {
    this.stop();
    await this.#connector.close();
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
