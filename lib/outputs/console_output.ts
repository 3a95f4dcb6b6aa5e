/**
 * `--direct`: events to stdout, as JSON lines or aligned text.
 *
 * Writes go through a bounded queue and one writer, so a slow terminal or pipe never
 * stalls the monitor or the socket clients; what does not fit is counted and reported as a
 * `lost` event once the queue has room again.
 *
 * @module
 */

import type { ProcEvent } from "../events/event.ts";
import { formatJson } from "../events/json_format.ts";
import { TextFormatter } from "../events/text_format.ts";

/** How events are written to the console (and by the client subcommand). */
export type OutputFormat = "json" | "text";

/** Where console bytes go; Deno.stdout in production. */
export interface ConsoleWriter {
  write(p: Uint8Array): Promise<number>;
}

/** Default queue bound: about a second of a 20k events/s storm. */
const DEFAULT_LIMIT_BYTES = 16 << 20;

/** The console output. */
export class ConsoleOutput {
  readonly #writer: ConsoleWriter;
  readonly #text: TextFormatter | null;
  readonly #limit: number;
  readonly #encoder = new TextEncoder();
  readonly #queue: Uint8Array[] = [];
  #queued = 0;
  #dropped = 0;
  #pump: Promise<void> | null = null;
  #now: () => string;
  #host: string | null;
  #onError: (error: unknown) => void;
  #failed = false;

  /**
   * `now` gives the current time for `lost` events; `color` applies to the text format.
   */
  constructor(
    format: OutputFormat,
    options: {
      color: boolean;
      now: () => string;
      /** With `--nats` or `--host-id`, the `host` every event carries: `lost` events too. */
      host?: string | null;
      /** Called once when stdout fails (a closed pipe, as with `| head`); output stops. */
      onError: (error: unknown) => void;
      writer?: ConsoleWriter;
      limitBytes?: number;
    },
  ) {
    this.#onError = options.onError;
    this.#writer = options.writer ?? Deno.stdout;
    this.#text = format === "text" ? new TextFormatter({ color: options.color }) : null;
    this.#limit = options.limitBytes ?? DEFAULT_LIMIT_BYTES;
    this.#now = options.now;
    this.#host = options.host ?? null;
  }

  /** Queues a batch: `json` is the batch already serialised as JSON lines. */
  write(events: readonly ProcEvent[], json: Uint8Array): void {
    if (this.#failed) return;
    const bytes = this.#text === null
      ? json
      : this.#encoder.encode(events.map((e) => this.#text!.format(e)).join(""));
    if (this.#queued + bytes.byteLength > this.#limit) {
      this.#dropped += events.length;
      return;
    }
    if (this.#dropped > 0) {
      const lost: ProcEvent = {
        event: "lost",
        time: this.#now(),
        count: this.#dropped,
        where: "buffer",
        ...(this.#host !== null ? { host: this.#host } : {}),
      };
      this.#dropped = 0;
      this.#enqueue(
        this.#encoder.encode(this.#text === null ? formatJson(lost) : this.#text.format(lost)),
      );
    }
    this.#enqueue(bytes);
  }

  #enqueue(bytes: Uint8Array): void {
    this.#queue.push(bytes);
    this.#queued += bytes.byteLength;
    if (this.#pump === null) this.#pump = this.#drain();
  }

  /**
   * Writes the queue out. `#pump` is cleared in the same synchronous step that finds the
   * queue empty, so a batch queued at any later moment starts a new drain: none is left
   * waiting for the next one.
   */
  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const chunk = this.#queue[0];
        for (let done = 0; done < chunk.byteLength;) {
          done += await this.#writer.write(chunk.subarray(done));
        }
        this.#queue.shift();
        this.#queued -= chunk.byteLength;
      }
    } catch (error) {
      this.#failed = true;
      this.#queue.length = 0;
      this.#queued = 0;
      this.#onError(error);
    } finally {
      this.#pump = null;
    }
  }

  /** Resolves once everything queued has been written. */
  async flush(): Promise<void> {
    while (this.#pump !== null) await this.#pump;
  }
}
