/**
 * What `procMonitor client` writes to stdout, whichever source the events come from (the
 * Unix socket, TCP, or NATS with `--nats`): `--format json` prints each event line exactly
 * as received; `--format text` prints {@link TextFormatter} lines, coloured only on a
 * terminal and never with `NO_COLOR`. A closed stdout (`procMonitor client | head`) is
 * {@link StdoutClosed}, which ends the client quietly with exit 0.
 *
 * @module
 */

import type { ClientConfig } from "./config_types.ts";
import { ALL_EVENT_NAMES, type ProcEvent } from "../events/event.ts";
import { getLogger } from "../log.ts";
import { escapeControl, TextFormatter, useColor } from "../events/text_format.ts";

const log = getLogger("client");

/** Every event kind the text format knows: the selectable ones and `lost`. */
const TEXT_KINDS: readonly string[] = [...ALL_EVENT_NAMES, "lost"];

/** stdout was closed by its reader (`| head`): stop quietly, exit 0. */
export class StdoutClosed extends Error {
  constructor() {
    super("stdout closed");
    this.name = "StdoutClosed";
  }
}

/** stdout failed otherwise (a full disk, an I/O error): the message is one sentence; exit 1. */
export class StdoutFailed extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StdoutFailed";
  }
}

/** Writes a sentence through LogTape without its `{placeholder}` syntax touching it. */
export function literal(sentence: string): string {
  return sentence.replace(/[{}]/g, (brace) => brace + brace);
}

/** A line from the server, shortened and made safe to show in a log sentence. */
export function shown(line: string): string {
  return JSON.stringify(line.length > 80 ? line.slice(0, 77) + "..." : line);
}

/** `line` parsed as a JSON object, or null when it is not JSON or not an object. */
export function parseObject(line: string): Record<string, unknown> | null {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return null;
  }
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? value as Record<string, unknown>
    : null;
}

/** Renders event lines in the chosen format and writes them to stdout. */
export class ClientOutput {
  readonly #text: TextFormatter | null;
  readonly #encoder = new TextEncoder();
  readonly #unknownKinds = new Set<string>();

  /** `format`: json prints lines as received; text formats them (colour decided here). */
  constructor(format: ClientConfig["format"]) {
    this.#text = format === "text"
      ? new TextFormatter({ color: useColor(Deno.stdout.isTerminal(), Deno.env.toObject()) })
      : null;
  }

  /**
   * The stdout text for one event line, or null to skip it: `line` is a JSON object with an
   * `event` field. JSON format: the line itself; text format: the formatted event.
   */
  render(line: string, event: Record<string, unknown>): string | null {
    if (this.#text === null) return line + "\n";
    const kind = String(event.event);
    if (!TEXT_KINDS.includes(kind)) {
      if (!this.#unknownKinds.has(kind)) {
        this.#unknownKinds.add(kind);
        log.warning(literal(
          `Skipping events of unknown kind ${
            shown(kind)
          } in the text format (--format json shows them)`,
        ));
      }
      return null;
    }
    try {
      return this.#text.format(event as unknown as ProcEvent);
    } catch {
      log.warning(literal(`Skipping a malformed ${escapeControl(kind)} event: ${shown(line)}`));
      return null;
    }
  }

  /**
   * Writes `text` to stdout whole.
   *
   * @throws {StdoutClosed} when the reader closed stdout
   * @throws {StdoutFailed} on any other write error
   */
  async write(text: string): Promise<void> {
    if (text === "") return;
    const bytes = this.#encoder.encode(text);
    try {
      for (let done = 0; done < bytes.byteLength;) {
        done += await Deno.stdout.write(bytes.subarray(done));
      }
    } catch (error) {
      if (error instanceof Deno.errors.BrokenPipe) throw new StdoutClosed();
      throw new StdoutFailed(`Cannot write to stdout: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
}
