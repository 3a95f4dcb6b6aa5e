/**
 * `procMonitor client --nats`: reads the events procMonitor servers publish to NATS (SPEC §11)
 * and prints them as the socket client does (lib/cli/client_output.ts): `--format json`
 * prints each event exactly as published, one line each; `--format text` adds a host column.
 *
 * - Without `--stream`: a plain subscription to the subject, live events only.
 * - With `--stream`: lib/cli/nats_stream_reader.ts replays the stream from `--since`, or
 *   from its first message without `--since`, then follows it live; after a reconnect or a
 *   lost consumer it goes on where it left off, so nothing is printed twice or skipped.
 *
 * A message may hold its event with or without the trailing newline; both print as one line.
 * Anything that is not a JSON object with an `event` is skipped with a warning.
 *
 * Errors are one sentence on stderr and exit 1: no server answers at start, the server
 * refuses the credentials, no such stream or no JetStream, the subject is not allowed, or
 * the connection is lost and cannot be restored. Once connected, the client reconnects to
 * any server of the cluster by itself: 10 attempts per server, 2 s apart, or with
 * `--reconnect` for ever (and at start too). Credentials are never retried (the library
 * gives up on a repeated authorization error), and never logged. SIGINT/SIGTERM exit 0.
 *
 * @module
 */

import {
  AuthorizationError,
  connect,
  type NatsConnection,
  type NodeConnectionOptions,
  PermissionViolationError,
  type Subscription,
} from "@nats-io/transport-node";
import { JetStreamApiError } from "@nats-io/jetstream";
import type { NatsClientConfig } from "./config_types.ts";
import { StreamReader } from "./nats_stream_reader.ts";
import { getLogger } from "../log.ts";
import { ignoreLateSocketResets, securityOptions } from "../outputs/nats_connect.ts";
import {
  type ClientOutput,
  literal,
  parseObject,
  shown,
  StdoutClosed,
  StdoutFailed,
} from "./client_output.ts";

const log = getLogger("client");

/** Reconnect attempts per server once connected, without `--reconnect` (the library's 10). */
const RECONNECT_ATTEMPTS = 10;
const RECONNECT_WAIT_MS = 2_000;

/** Warnings about bad messages before the rest are only counted. */
const MAX_MESSAGE_WARNINGS = 10;

/** A failure that ends the client with exit 1; the message is one sentence. */
export class NatsClientError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NatsClientError";
  }
}

/**
 * Prints the events of `config`'s subject (or stream) until SIGINT/SIGTERM (`signal`), a
 * closed stdout (both exit 0) or an error (exit 1, one sentence logged).
 *
 * @param config the `--nats` source
 * @param output stdout, in the chosen format
 * @param reconnect `--reconnect`: wait for a server at start and never give up reconnecting
 * @param signal aborted by SIGINT/SIGTERM
 * @returns the exit code
 */
export async function consumeNats(
  config: NatsClientConfig,
  output: ClientOutput,
  reconnect: boolean,
  signal: AbortSignal,
): Promise<number> {
  ignoreLateSocketResets();
  try {
    const nc = await connectUnlessStopped(config, reconnect, signal);
    if (nc === null) return 0;
    try {
      return await printEvents(nc, config, output, signal);
    } finally {
      await nc.close().catch(() => {});
    }
  } catch (error) {
    if (error instanceof StdoutClosed) return 0;
    if (!(error instanceof NatsClientError || error instanceof StdoutFailed)) throw error;
    if (signal.aborted) return 0;
    log.error(literal(error.message));
    return 1;
  }
}

/** Connects; null when SIGINT/SIGTERM came first (a late connection is closed). */
async function connectUnlessStopped(
  config: NatsClientConfig,
  reconnect: boolean,
  signal: AbortSignal,
): Promise<NatsConnection | null> {
  const connecting = open(config, reconnect);
  // With --reconnect, a server that is not there yet is waited for: say so once.
  const waiting = reconnect
    ? setTimeout(() => {
      log.info(literal(`Waiting for NATS at ${where(config)} (--reconnect tries for ever)`));
    }, RECONNECT_WAIT_MS)
    : undefined;
  try {
    const nc = await untilAborted(connecting, signal);
    if (nc === null) connecting.then((late) => late.close(), () => {});
    return nc;
  } finally {
    clearTimeout(waiting);
  }
}

/** The NATS client's options for `config`; credentials go only into these. */
export function natsConnectOptions(
  config: NatsClientConfig,
  reconnect: boolean,
): NodeConnectionOptions {
  const options: NodeConnectionOptions = {
    servers: config.servers,
    name: "procMonitor client",
    maxReconnectAttempts: reconnect ? -1 : RECONNECT_ATTEMPTS,
    reconnectTimeWait: RECONNECT_WAIT_MS,
    waitOnFirstConnect: reconnect,
  };
  return Object.assign(
    options,
    securityOptions(config.auth, config.ca?.pem ?? null, config.servers),
  );
}

/** Connects, or throws the sentence for why not. */
async function open(config: NatsClientConfig, reconnect: boolean): Promise<NatsConnection> {
  try {
    const nc = await connect(natsConnectOptions(config, reconnect));
    log.debug(literal(`Connected to NATS at ${nc.getServer()}`));
    return nc;
  } catch (error) {
    throw connectError(error, config);
  }
}

/** The servers as a message names them. */
function where(config: NatsClientConfig): string {
  return config.servers.join(", ");
}

/** One sentence for a failed connect. */
function connectError(error: unknown, config: NatsClientConfig): NatsClientError {
  const at = `NATS at ${where(config)}`;
  const options = { cause: error };
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof AuthorizationError) {
    return new NatsClientError(`${at} refused ${credentialsShown(config)}`, options);
  }
  const code = (error as { code?: unknown }).code;
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") {
    return new NatsClientError(`Cannot connect to ${at}: unknown host`, options);
  }
  if (/connection refused/i.test(message)) {
    return new NatsClientError(
      `Cannot connect to ${at}: connection refused (is nats-server running there?)`,
      options,
    );
  }
  if (/tls|certificate|self.signed|unable to verify|handshake/i.test(message)) {
    const hint = config.ca === null
      ? " (give the CA certificate with --nats-ca FILE)"
      : ` (check --nats-ca ${config.ca.path})`;
    return new NatsClientError(`Cannot connect to ${at} with TLS: ${message}${hint}`, options);
  }
  return new NatsClientError(`Cannot connect to ${at}: ${message}`, options);
}

/** What the server refused, named by the flags that gave it; never the secret itself. */
function credentialsShown(config: NatsClientConfig): string {
  const auth = config.auth;
  switch (auth.kind) {
    case "user":
      return `the user ${JSON.stringify(auth.user)} and its password ` +
        `(--nats-user, --nats-password-file)`;
    case "token":
      return "the token (--nats-token-file)";
    case "creds":
      return `the credentials in ${auth.path} (--nats-creds)`;
    case "none":
      return "a connection without credentials (give --nats-user with --nats-password-file, " +
        "--nats-token-file or --nats-creds)";
  }
}

/** Where the messages come from, and how to end them (which ends the loop over them). */
interface Messages {
  messages: AsyncIterable<{ string(): string }>;
  stop(): void;
}

/** Subscribes (or opens the stream) and prints until stopped, closed or failed. */
async function printEvents(
  nc: NatsConnection,
  config: NatsClientConfig,
  output: ClientOutput,
  signal: AbortSignal,
): Promise<number> {
  watchStatus(nc).catch(() => {}); // ends with the connection
  const source = config.stream === null
    ? await subscribe(nc, config)
    : await openStream(nc, config);
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    source.stop();
  };
  signal.addEventListener("abort", stop, { once: true });
  nc.closed().then(stop, stop);
  const lines = new EventLines(output);
  try {
    for await (const message of source.messages) {
      await output.write(lines.text(message.string()));
    }
  } catch (error) {
    if (!(error instanceof PermissionViolationError)) throw error;
    throw new NatsClientError(
      `NATS at ${where(config)} does not allow this user to read ${config.subject}`,
      { cause: error },
    );
  } finally {
    signal.removeEventListener("abort", stop);
  }
  if (signal.aborted) return 0;
  const closedWith = nc.isClosed() ? await nc.closed() : undefined;
  throw new NatsClientError(
    `The connection to NATS at ${where(config)} was lost and could not be restored` +
      (closedWith instanceof Error ? `: ${closedWith.message}` : ""),
    { cause: closedWith },
  );
}

/** A plain subscription: live events only. Resolves once the server has it. */
async function subscribe(nc: NatsConnection, config: NatsClientConfig): Promise<Messages> {
  const sub: Subscription = nc.subscribe(config.subject);
  try {
    await nc.flush();
  } catch (error) {
    // The connection closed before the server confirmed the subscription.
    throw new NatsClientError(
      `Cannot subscribe to ${config.subject} on NATS at ${where(config)}: ${
        (error as Error).message
      }`,
      { cause: error },
    );
  }
  log.debug(literal(`Reading live events on ${config.subject} from NATS at ${nc.getServer()}`));
  return {
    messages: sub,
    stop: () => {
      if (!nc.isClosed()) sub.unsubscribe();
    },
  };
}

/** The stream's messages, from `--since` or the stream's start, then live. */
async function openStream(nc: NatsConnection, config: NatsClientConfig): Promise<Messages> {
  const reader = new StreamReader(nc, config);
  try {
    await reader.open();
  } catch (error) {
    throw streamError(error, config.stream!, config);
  }
  log.debug(literal(
    `Reading ${config.subject} from the stream ${config.stream} ` +
      (config.since === null ? "from its start" : `from ${config.since.toISOString()}`),
  ));
  return { messages: reader.messages(), stop: () => reader.stop() };
}

/** One sentence for a stream that cannot be read. */
function streamError(
  error: unknown,
  stream: string,
  config: NatsClientConfig,
): NatsClientError {
  const at = `NATS at ${where(config)}`;
  const options = { cause: error };
  if (error instanceof JetStreamApiError && /stream not found/i.test(error.message)) {
    return new NatsClientError(
      `${at} has no stream ${
        JSON.stringify(stream)
      } (--stream; the servers' --nats-stream names it)`,
      options,
    );
  }
  if (/jetstream (is )?not enabled/i.test(String(error))) {
    return new NatsClientError(`${at} has no JetStream, which --stream needs`, options);
  }
  if (error instanceof PermissionViolationError) {
    return new NatsClientError(
      `${at} does not allow this user to read the stream ${JSON.stringify(stream)}`,
      options,
    );
  }
  if (error instanceof Error) {
    return new NatsClientError(
      `Cannot read the stream ${JSON.stringify(stream)} on ${at} with the subject ` +
        `${config.subject}: ${error.message}`,
      options,
    );
  }
  return new NatsClientError(`Cannot read the stream ${JSON.stringify(stream)} on ${at}`, options);
}

/** Logs the connection's changes (lost, back) while it lasts. */
async function watchStatus(nc: NatsConnection): Promise<void> {
  for await (const status of nc.status()) {
    switch (status.type) {
      case "disconnect":
        log.warning(literal(`Lost the connection to NATS at ${status.server}; reconnecting`));
        break;
      case "reconnect":
        log.info(literal(`Reconnected to NATS at ${status.server}`));
        break;
      case "error":
        // A subject the user may not read ends the client with its own sentence.
        if (!(status.error instanceof PermissionViolationError)) {
          log.warning(literal(`NATS reported an error: ${status.error.message}`));
        }
        break;
      case "slowConsumer":
        log.warning(
          `This client reads too slowly for NATS: events are being dropped (stdout is slow)`,
        );
        break;
    }
  }
}

/**
 * Turns message payloads into stdout text: each line that is a JSON object with an `event`
 * (a payload with or without its trailing newline is one line); others are skipped with a
 * warning, the first {@link MAX_MESSAGE_WARNINGS} of them shown.
 */
export class EventLines {
  readonly #output: ClientOutput;
  #warnings = 0;

  /** Renders through `output` (json: the line as received; text: formatted). */
  constructor(output: ClientOutput) {
    this.#output = output;
  }

  /** The stdout text for one message's payload. */
  text(payload: string): string {
    let out = "";
    for (const raw of payload.split("\n")) {
      const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (line === "") continue;
      const event = parseObject(line);
      if (event === null || typeof event.event !== "string") {
        this.#warn(`Skipping a NATS message that is not an event: ${shown(line)}`);
        continue;
      }
      out += this.#output.render(line, event) ?? "";
    }
    return out;
  }

  #warn(sentence: string): void {
    this.#warnings++;
    if (this.#warnings <= MAX_MESSAGE_WARNINGS) log.warning(literal(sentence));
    if (this.#warnings === MAX_MESSAGE_WARNINGS) {
      log.warning("Further warnings about messages that are not events are not shown");
    }
  }
}

/** Resolves to `promise`'s value, or to null as soon as `signal` aborts. */
async function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | null> {
  if (signal.aborted) return null;
  let onAbort: () => void = () => {};
  const aborted = new Promise<null>((resolve) => {
    onAbort = () => resolve(null);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, aborted]);
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}
