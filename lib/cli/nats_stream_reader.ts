/**
 * Reading a JetStream stream for `procMonitor client --nats --stream`: an ordered consumer
 * (ephemeral, in memory, one replica, no acks) with one filter subject, which nats-server
 * 2.9 supports. It replays from `--since` (deliver policy "by start time") or from the
 * stream's first message (policy "all"), then follows the stream live.
 *
 * The library recreates an ordered consumer that the server reports gone, but not one whose
 * server died: such a consumer still exists for the cluster, without a leader, and the
 * library then waits for it for ever (nats.js 3.4 against nats-server 2.9, seen with a node
 * killed under a three-replica stream). So this reader watches the consumer itself: when
 * neither a message nor a heartbeat arrived for {@link STALE_AFTER_MS} while connected, it
 * drops the consumer and creates a new one after the last stream sequence printed, so
 * nothing is printed twice or skipped.
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/transport-node";
import {
  type ConsumerMessages,
  DeliverPolicy,
  jetstream,
  type JsMsg,
  type OrderedConsumerOptions,
} from "@nats-io/jetstream";
import type { NatsClientConfig } from "./config_types.ts";
import { getLogger } from "../log.ts";
import { literal } from "./client_output.ts";
import { sleep } from "../timers.ts";

const log = getLogger("client");

/** A pull expires after this; the server sends an idle heartbeat every half of it. */
const CONSUME_EXPIRES_MS = 6_000;

/** Silence (no message, no heartbeat) while connected after which the consumer is replaced. */
export const STALE_AFTER_MS = 10_000;

/** How often the silence is checked. */
const CHECK_EVERY_MS = 2_000;

/** Backoff between attempts to recreate the consumer (a new leader may take seconds). */
const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 5_000;

/** The messages of one stream, read through ordered consumers that are replaced when stale. */
export class StreamReader {
  readonly #nc: NatsConnection;
  readonly #config: NatsClientConfig;
  readonly #stream: string;
  readonly #stop = new AbortController();
  #current: ConsumerMessages | null = null;
  #lastSeq = 0;
  #lastActivity = Date.now();
  #connected = true;
  #stale = false;
  #silenceTimer: ReturnType<typeof setInterval> | undefined;

  /** A reader of `config.stream` (which must be set) over `nc`; {@link open} starts it. */
  constructor(nc: NatsConnection, config: NatsClientConfig) {
    this.#nc = nc;
    this.#config = config;
    this.#stream = config.stream!;
  }

  /**
   * Creates the first consumer. Its errors are the user's to fix (no such stream, no
   * JetStream, a subject outside the stream) and are thrown as the library raised them.
   */
  async open(): Promise<void> {
    this.#current = await this.#consume();
    this.#watchConnection().catch(() => {}); // ends with the connection
    this.#watchSilence();
  }

  /** Ends {@link messages} (at once, also while a consumer is being recreated). */
  stop(): void {
    this.#stop.abort();
    clearInterval(this.#silenceTimer);
    this.#current?.stop();
  }

  /** The stream's messages in order, until stopped or the connection closes for good. */
  async *messages(): AsyncGenerator<JsMsg> {
    while (this.#current !== null) {
      for await (const message of this.#current) {
        this.#lastSeq = message.seq;
        this.#lastActivity = Date.now();
        yield message;
      }
      if (!this.#stale || this.#stop.signal.aborted || this.#nc.isClosed()) return;
      log.warning(literal(
        `The consumer of the stream ${this.#stream} stopped answering (its server may be ` +
          `down); recreating it after stream sequence ${this.#lastSeq}`,
      ));
      this.#current = await this.#recreate();
    }
  }

  /** A new ordered consumer, from where the last one left off (or from the start). */
  async #consume(): Promise<ConsumerMessages> {
    const options: Partial<OrderedConsumerOptions> = {
      filter_subjects: this.#config.subject, // one subject: a list needs nats-server 2.10
    };
    if (this.#lastSeq > 0) options.opt_start_seq = this.#lastSeq + 1;
    else if (this.#config.since !== null) {
      options.opt_start_time = this.#config.since.toISOString();
    } else options.deliver_policy = DeliverPolicy.All;
    const consumer = await jetstream(this.#nc).consumers.get(this.#stream, options);
    const messages = await consumer.consume({ expires: CONSUME_EXPIRES_MS });
    this.#stale = false;
    this.#lastActivity = Date.now();
    this.#watchConsumer(messages).catch(() => {}); // ends with the consumer
    return messages;
  }

  /** Retries {@link #consume} with backoff; null once stopped or closed. */
  async #recreate(): Promise<ConsumerMessages | null> {
    for (let delay = RETRY_FIRST_MS;; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
      if (this.#stop.signal.aborted || this.#nc.isClosed()) return null;
      try {
        const messages = await this.#consume();
        log.info(literal(`Recreated the consumer of the stream ${this.#stream}`));
        return messages;
      } catch (error) {
        log.debug(literal(`Cannot recreate the consumer yet: ${(error as Error).message}`));
      }
      if (!await sleep(delay, this.#stop.signal)) return null;
    }
  }

  /** Any status but a missed heartbeat shows the consumer alive (heartbeats, pulls). */
  async #watchConsumer(messages: ConsumerMessages): Promise<void> {
    for await (const status of messages.status()) {
      if (status.type !== "heartbeats_missed") this.#lastActivity = Date.now();
    }
  }

  /** Silence does not count while the connection is down (the library reconnects then). */
  async #watchConnection(): Promise<void> {
    for await (const status of this.#nc.status()) {
      if (status.type === "disconnect") this.#connected = false;
      if (status.type === "reconnect") {
        this.#connected = true;
        this.#lastActivity = Date.now();
      }
    }
  }

  /** Checks the silence every {@link CHECK_EVERY_MS} until stopped. */
  #watchSilence(): void {
    this.#silenceTimer = setInterval(() => {
      if (this.#nc.isClosed()) {
        clearInterval(this.#silenceTimer);
        return;
      }
      if (!this.#connected || this.#stale) return;
      if (Date.now() - this.#lastActivity < STALE_AFTER_MS) return;
      this.#stale = true;
      this.#current?.stop();
    }, CHECK_EVERY_MS);
  }
}
