/**
 * `--nats`: every event published to `<prefix>.<host>.<event>` on a NATS cluster, or with
 * `--nats-stream` into a JetStream stream with acknowledgements (SPEC §11).
 *
 * ## Buffer and loss
 *
 * Events wait in one bounded buffer (`--nats-buffer`, bytes, about: each message counts its
 * JSON, its subject and 64 bytes) until the broker has them: flushed to it for core NATS,
 * acknowledged by the stream for JetStream. {@link NatsOutput.push} never waits, so a broker
 * that is slow or gone never slows the pipeline or the other outputs. What does not fit is
 * counted, and at most a second later (or as soon as an event fits again) one `lost` event
 * with `where: "nats"` and the count is made: it goes to the other outputs at once (through
 * `onLost`) and into the buffer, past its bound, so that the subject has it too once the
 * broker is back.
 *
 * ## JetStream
 *
 * Up to {@link WINDOW} publishes are in flight at once, each with a message id
 * `<host>.<boot id>.<start>.<sequence>` (see {@link messageIdStem}): the stream drops a
 * repeat within its duplicate window (2 minutes), so after any failure (a timeout, a node
 * killed, no leader for a moment) everything not yet acknowledged is sent again, in the
 * original order, and nothing is stored twice. The start instant keeps a restart in the same
 * boot from reusing the ids of the run before.
 *
 * @module
 */

import {
  ClosedConnectionError,
  connect,
  DrainingConnectionError,
  type NatsConnection,
} from "@nats-io/transport-node";
import { JetStreamApiCodes, JetStreamApiError, jetstreamManager } from "@nats-io/jetstream";
import { JetStreamAcks } from "./jetstream_acks.ts";
import type { LostEvent } from "../events/event.ts";
import { formatJson } from "../events/json_format.ts";
import { getLogger } from "../log.ts";
import { settlesWithin, sleep, type Timer } from "../timers.ts";
import {
  connectionOptions,
  ignoreLateSocketResets,
  isAuthError,
  type NatsConnectConfig,
  natsProblem,
} from "./nats_connect.ts";

const log = getLogger("nats");

/** JetStream publishes awaiting their acknowledgement at once. */
export const WINDOW = 512;
/** Bytes a message counts beyond its JSON and subject (id, headers, bookkeeping). */
const ENTRY_OVERHEAD = 64;
/** How long a JetStream publish waits for its acknowledgement before it is sent again. */
const ACK_TIMEOUT_MS = 3_000;
/** Pause before sending again what a failure left unacknowledged. */
const RETRY_MS = 250;
/** Pause between first-connection attempts; longer when the credentials were refused. */
const CONNECT_RETRY_MS = 1_000;
const AUTH_RETRY_MS = 10_000;
/** Longest a loss goes unreported while the buffer stays full. */
const LOST_REPORT_MS = 1_000;
/** Core NATS: messages handed to the client between two flushes (its own buffer is unbounded). */
const CORE_BATCH = 1024;
/** The duplicate window of the streams procMonitor creates: 2 minutes, JetStream's default. */
const DUPLICATE_WINDOW_NS = 120 * 1_000_000_000;

/** The stream `--nats-stream` creates or binds. */
export interface NatsStreamConfig {
  name: string;
  /** 1 to 5. */
  replicas: number;
  /** Oldest message kept, in milliseconds; 0 keeps them until other limits apply. */
  maxAgeMs: number;
}

/** What the publisher needs. */
export interface NatsOutputOptions {
  connect: NatsConnectConfig;
  /** Subject prefix (`--nats-subject-prefix`), one or more dot-separated tokens. */
  prefix: string;
  /** Host id: the subject's second part and every event's `host`. */
  host: string;
  /** Bound of the outgoing buffer, in bytes (about). */
  bufferBytes: number;
  stream: NatsStreamConfig | null;
  /** The current time as an event `time`. */
  now: () => string;
  /** Gets each `lost` event (where `nats`) as it is made, for the other outputs. */
  onLost: (event: LostEvent) => void;
  /** Message id stem; default {@link messageIdStem} of this host, boot and instant. */
  idStem?: string;
}

/** The counters `/metrics` reads. */
export interface NatsStats {
  /** Messages waiting: not yet flushed (core) or not yet acknowledged (JetStream). */
  buffered: number;
  /** Messages handed to the broker (each counted once, however often it was retried). */
  published: number;
  /** Messages the stream acknowledged (JetStream only; 0 for core NATS). */
  acked: number;
  /** Events dropped as the buffer was full. */
  lost: number;
}

/** `<prefix>.<host>.<event>`. */
export function natsSubject(prefix: string, host: string, event: string): string {
  return `${prefix}.${host}.${event}`;
}

/** This boot's id, from /proc/sys/kernel/random/boot_id, without dashes. */
export function bootId(): string {
  return Deno.readTextFileSync("/proc/sys/kernel/random/boot_id").trim().replaceAll("-", "");
}

/**
 * The part of every message id one daemon run shares: host, boot id and the run's start
 * instant in milliseconds (base 36). A message's id is the stem, a dot and its sequence.
 */
export function messageIdStem(host: string, boot: string, startMs: number): string {
  return `${host}.${boot}.${startMs.toString(36)}`;
}

interface Entry {
  subject: string;
  data: string;
  seq: number;
  size: number;
  acked: boolean;
}

/** The NATS publisher: {@link push} events, {@link close} on shutdown. */
export class NatsOutput {
  readonly #options: NatsOutputOptions;
  readonly #idStem: string;
  readonly #queue: Entry[] = [];
  /** Index of the first entry not yet done (flushed, or acknowledged). */
  #head = 0;
  /** JetStream: index of the next entry to send. */
  #next = 0;
  #bytes = 0;
  #seq = 0;
  #published = 0;
  #acked = 0;
  #lost = 0;
  /** Events dropped since the last `lost` event. */
  #dropped = 0;
  /** Events dropped since the buffer last had room (logged when it has again). */
  #losing = 0;
  #lostTimer: Timer | undefined;
  /** Why the last JetStream publish failed, until everything unacknowledged is sent again. */
  #failure: string | null = null;
  #connected = false;
  /** Connections lost so far: a drop and a reconnect between two looks are still seen. */
  #disconnects = 0;
  /** The stream exists (always true for core NATS, which has none). */
  #streamReady: boolean;
  /** The last stream problem logged, so that a lasting one is logged once. */
  #streamProblem = "";
  /** Acknowledgements are failing (logged once when they start, once when they resume). */
  #acksFailing = false;
  #nc: NatsConnection | null = null;
  readonly #stop = new AbortController();
  #wake: (() => void) | null = null;
  readonly #running: Promise<void>;
  #closed: Promise<number> | null = null;

  /** Starts connecting in the background; events pushed meanwhile wait in the buffer. */
  constructor(options: NatsOutputOptions) {
    this.#options = options;
    this.#streamReady = options.stream === null;
    this.#idStem = options.idStem ?? messageIdStem(options.host, bootId(), Date.now());
    ignoreLateSocketResets();
    this.#running = options.connect.servers.length === 0 ? Promise.resolve() : this.#connectLoop();
  }

  /** Queues one event; `line` is its JSON line (from formatJson). Never waits. */
  push(event: string, line: string): void {
    const subject = natsSubject(this.#options.prefix, this.#options.host, event);
    const data = line.endsWith("\n") ? line.slice(0, -1) : line;
    const size = data.length + subject.length + ENTRY_OVERHEAD;
    if (this.#bytes + size > this.#options.bufferBytes) {
      this.#drop();
      return;
    }
    if (this.#dropped > 0) this.reportLost();
    if (this.#losing > 0) {
      log.info("The NATS buffer has room again, after {count} events lost", {
        count: this.#losing,
      });
      this.#losing = 0;
    }
    this.#enqueue(subject, data, size);
  }

  /** The counters, as `/metrics` shows them. */
  stats(): NatsStats {
    return {
      buffered: this.#queue.length - this.#head,
      published: this.#published,
      acked: this.#acked,
      lost: this.#lost,
    };
  }

  /**
   * Makes the `lost` event for what was dropped since the last one, if anything: to the
   * other outputs now, to NATS through the buffer.
   */
  reportLost(): void {
    clearTimeout(this.#lostTimer);
    this.#lostTimer = undefined;
    if (this.#dropped === 0) return;
    const event: LostEvent = {
      event: "lost",
      time: this.#options.now(),
      count: this.#dropped,
      where: "nats",
      host: this.#options.host,
    };
    this.#dropped = 0;
    this.#options.onLost(event);
    const data = formatJson(event).slice(0, -1);
    const subject = natsSubject(this.#options.prefix, this.#options.host, "lost");
    this.#enqueue(subject, data, data.length + subject.length + ENTRY_OVERHEAD);
  }

  /**
   * Waits up to `ms` for the buffer to empty, then disconnects. Resolves to the number of
   * messages never delivered (logged when not 0).
   */
  close(ms: number): Promise<number> {
    this.#closed ??= this.#close(ms);
    return this.#closed;
  }

  async #close(ms: number): Promise<number> {
    this.reportLost();
    const deadline = performance.now() + ms;
    while (this.stats().buffered > 0 && this.#nc !== null && performance.now() < deadline) {
      await sleep(20);
    }
    this.#stop.abort();
    this.#signal();
    const nc = this.#nc;
    if (nc !== null) {
      const left = Math.max(0, deadline - performance.now());
      if (!await settlesWithin(nc.close(), Math.max(left, 200))) {
        log.debug("The NATS connection did not close in time");
      }
    }
    await settlesWithin(this.#running, 500);
    const unsent = this.stats().buffered;
    if (unsent > 0) {
      log.warning("{unsent} events were not delivered to NATS within {ms} ms of the stop", {
        unsent,
        ms,
      });
    }
    return unsent;
  }

  #enqueue(subject: string, data: string, size: number): void {
    this.#queue.push({ subject, data, seq: ++this.#seq, size, acked: false });
    this.#bytes += size;
    this.#signal();
  }

  #drop(): void {
    if (this.#dropped === 0 && this.#lostTimer === undefined) {
      this.#lostTimer = setTimeout(() => this.reportLost(), LOST_REPORT_MS);
    }
    if (this.#losing === 0) {
      log.warning(
        "The NATS buffer ({bytes} bytes) is full: events are lost until the broker takes them",
        { bytes: this.#options.bufferBytes },
      );
    }
    this.#dropped++;
    this.#losing++;
    this.#lost++;
  }

  #signal(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /** Resolves on the next push, acknowledgement, status change or stop. */
  #woken(): Promise<void> {
    return new Promise((resolve) => this.#wake = resolve);
  }

  /** Connects (retrying; logging each new problem once), publishes until closed, repeats. */
  async #connectLoop(): Promise<void> {
    const config = this.#options.connect;
    const where = config.servers.join(",");
    const options = connectionOptions(config);
    let problem = "";
    while (!this.#stop.signal.aborted) {
      let error: unknown;
      let nc: NatsConnection | null = null;
      try {
        nc = await connect(options);
      } catch (caught) {
        // Why no server took the connection. Only this is a connection problem: an error from
        // the publishing below is not, and is not caught here (lib/uncaught.ts ends the daemon
        // with it) rather than logged every second as the broker being out of reach.
        error = caught;
      }
      if (nc !== null) {
        if (this.#stop.signal.aborted) {
          await nc.close(); // closed while connecting
          return;
        }
        problem = "";
        const stream = this.#options.stream?.name;
        if (stream === undefined) {
          log.info("Publishing events to NATS at {server}", { server: nc.getServer() });
        } else {
          log.info("Publishing events to NATS at {server}, stream {stream}", {
            server: nc.getServer(),
            stream,
          });
        }
        error = await this.#serve(nc);
      }
      if (this.#stop.signal.aborted) return;
      const next = natsProblem(error, where, config.auth);
      if (next !== problem) {
        // The sentence is the message itself, not a quoted value: it is what the admin reads.
        log.error(`${next}; events wait in the buffer (${this.#options.bufferBytes} bytes)`);
      }
      problem = next;
      await sleep(isAuthError(error) ? AUTH_RETRY_MS : CONNECT_RETRY_MS, this.#stop.signal);
    }
  }

  /** Publishes over `nc` until it closes; resolves to why it closed. */
  async #serve(nc: NatsConnection): Promise<unknown> {
    this.#nc = nc;
    this.#connected = true;
    const watching = this.#watch(nc);
    using acks = this.#options.stream === null ? null : new JetStreamAcks<Entry>(
      nc,
      ACK_TIMEOUT_MS,
      {
        onAck: (entry) => this.#acknowledged(entry),
        onFailure: (reason) => {
          this.#failure ??= reason;
          this.#signal();
        },
      },
    );
    try {
      while (!nc.isClosed() && !this.#stop.signal.aborted) {
        if (!this.#connected || (this.#head === this.#queue.length && this.#streamReady)) {
          await this.#woken();
        } else if (acks === null) {
          await this.#sendCore(nc);
        } else if (await this.#ensureStream(nc)) {
          // At once on connecting, not at the first event: an admin sees the stream.
          await this.#sendJetStream(acks);
        }
      }
    } catch (error) {
      // A publish on a connection the client closed or is draining meanwhile: it says why.
      if (!(error instanceof ClosedConnectionError || error instanceof DrainingConnectionError)) {
        await nc.close(); // a bug of ours: not left open behind the error
        throw error;
      }
    } finally {
      this.#connected = false;
      this.#nc = null;
    }
    await watching;
    return await nc.closed();
  }

  /** Logs each change of the connection's state once, and wakes the sender on each. */
  async #watch(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      if (status.type === "disconnect") {
        this.#connected = false;
        this.#disconnects++;
        log.warning("Lost the connection to NATS at {server}; buffering events and reconnecting", {
          server: status.server,
        });
      } else if (status.type === "reconnect") {
        this.#connected = true;
        log.info("Reconnected to NATS at {server}; {waiting} events waiting", {
          server: status.server,
          waiting: this.stats().buffered,
        });
      } else if (status.type === "error") {
        log.debug("NATS reported: {error}", { error: status.error.message });
      }
      this.#signal();
    }
    this.#signal(); // closed
  }

  /** Core NATS: hands a batch to the client, then waits for the server to have it. */
  async #sendCore(nc: NatsConnection): Promise<void> {
    const end = Math.min(this.#queue.length, this.#head + CORE_BATCH);
    let bytes = 0;
    for (let i = this.#head; i < end; i++) {
      const entry = this.#queue[i];
      nc.publish(entry.subject, entry.data);
      bytes += entry.size;
    }
    this.#published += end - this.#head;
    this.#head = this.#next = end;
    this.#compact();
    // The batch counts against --nats-buffer until the server has it: with a slow server the
    // buffer fills and what does not fit is counted lost, rather than piling up unbounded in
    // the client's own buffer. A dropped connection rejects the flush (the client sends what
    // it still holds after reconnecting); a stop ends the wait.
    while (!await settlesWithin(nc.flush(), ACK_TIMEOUT_MS) && !this.#stop.signal.aborted) {
      if (nc.isClosed()) break;
    }
    this.#bytes -= bytes;
  }

  /** Creates the stream, or binds to it if it exists; false (logged) when neither works. */
  async #ensureStream(nc: NatsConnection): Promise<boolean> {
    if (this.#streamReady) return true;
    const stream = this.#options.stream!;
    const subjects = [`${this.#options.prefix}.>`];
    try {
      const jsm = await jetstreamManager(nc);
      try {
        const info = await jsm.streams.info(stream.name);
        const taken = info.config.subjects ?? [];
        if (taken.includes(subjects[0]) || taken.includes(">")) {
          log.info("Publishing into the existing JetStream stream {name}", { name: stream.name });
          const windowNs = info.config.duplicate_window ?? 0;
          if (windowNs < DUPLICATE_WINDOW_NS) {
            // A resend after a longer outage than the window would be stored twice.
            log.warning(
              `The JetStream stream ${stream.name} drops duplicates for ${windowNs / 1e9} s ` +
                `only: events resent after a longer outage may be stored twice (procMonitor ` +
                `creates its streams with ${DUPLICATE_WINDOW_NS / 1e9} s)`,
            );
          }
        } else {
          // Publishes would find no stream and be retried until the buffer overflows.
          log.error(
            `The existing JetStream stream ${stream.name} takes ${taken.join(", ")}, not ` +
              `${subjects[0]}: events will not be stored until it does`,
          );
        }
      } catch (error) {
        if (
          !(error instanceof JetStreamApiError) || error.code !== JetStreamApiCodes.StreamNotFound
        ) {
          throw error;
        }
        await jsm.streams.add({
          name: stream.name,
          subjects,
          num_replicas: stream.replicas,
          max_age: stream.maxAgeMs * 1_000_000,
          duplicate_window: DUPLICATE_WINDOW_NS,
        });
        log.info("Created the JetStream stream {name} over {subjects}, replicas {replicas}", {
          name: stream.name,
          subjects: subjects[0],
          replicas: stream.replicas,
        });
      }
      this.#streamReady = true;
    } catch (error) {
      const problem = `Cannot create or bind the JetStream stream ${stream.name} (${
        error instanceof Error ? error.message : String(error)
      }); retrying every 5 s`;
      if (problem !== this.#streamProblem) log.error(problem);
      this.#streamProblem = problem;
      await sleep(CONNECT_RETRY_MS * 5, this.#stop.signal);
    }
    return this.#streamReady;
  }

  /**
   * JetStream: keeps up to {@link WINDOW} publishes in flight, in order. After a failure, or
   * a dropped connection (whose acknowledgements went with it), it gives up on those in
   * flight and sends everything unacknowledged again from the oldest; the message ids keep
   * the stream from storing any twice.
   */
  async #sendJetStream(acks: JetStreamAcks<Entry>): Promise<void> {
    const disconnects = this.#disconnects;
    const same = () => this.#connected && this.#disconnects === disconnects;
    while (this.#failure === null && same() && !this.#stop.signal.aborted) {
      while (acks.inflight < WINDOW && this.#next < this.#queue.length) {
        const entry = this.#queue[this.#next++];
        // A resend from the head passes entries acknowledged before the failure.
        if (!entry.acked) this.#sendOne(acks, entry);
      }
      if (acks.inflight === 0 && this.#next === this.#queue.length) return;
      await this.#woken();
    }
    acks.abandon();
    this.#next = this.#head;
    if (this.#failure === null) return; // disconnected or stopping
    if (!this.#acksFailing) {
      log.warning("JetStream did not acknowledge ({reason}); resending in order until it does", {
        reason: this.#failure,
      });
    }
    log.debug("Resending {n} unacknowledged events to NATS after: {reason}", {
      n: this.#queue.length - this.#head,
      reason: this.#failure,
    });
    this.#acksFailing = true;
    await sleep(RETRY_MS, this.#stop.signal);
    this.#failure = null;
  }

  #sendOne(acks: JetStreamAcks<Entry>, entry: Entry): void {
    if (entry.seq > this.#published) this.#published = entry.seq;
    acks.send(entry, entry.subject, entry.data, `${this.#idStem}.${entry.seq}`);
  }

  /** The stream has `entry`: counted once, and the buffer moves past what is done. */
  #acknowledged(entry: Entry): void {
    if (!entry.acked) {
      entry.acked = true;
      this.#acked++;
    }
    if (this.#acksFailing) {
      this.#acksFailing = false;
      log.info("JetStream acknowledges again; {waiting} events waiting", {
        waiting: this.stats().buffered,
      });
    }
    this.#advance();
    this.#signal();
  }

  /**
   * Moves past acknowledged entries at the head. After a resend from the head, the first
   * acknowledgement can carry the head past entries acknowledged before the failure, and so
   * past `#next`: nothing behind the head needs sending again.
   */
  #advance(): void {
    while (this.#head < this.#queue.length && this.#queue[this.#head].acked) {
      this.#bytes -= this.#queue[this.#head].size;
      this.#head++;
    }
    if (this.#next < this.#head) this.#next = this.#head;
    this.#compact();
  }

  /** Drops done entries from the array once they are most of it. */
  #compact(): void {
    if (this.#head < 4096 || this.#head * 2 < this.#queue.length) return;
    this.#queue.splice(0, this.#head);
    this.#next -= this.#head;
    this.#head = 0;
  }
}
