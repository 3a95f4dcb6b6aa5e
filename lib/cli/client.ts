/**
 * `procMonitor client`: connects to a running procMonitor and prints its events (SPEC §3, §5).
 *
 * - Unix socket: event lines arrive at once. A server at its client limit sends one line
 *   `{"error":"too many clients","limit":N}` and closes.
 * - TCP (optionally inside TLS): the password line goes out as soon as the connection is up
 *   (as v1's client does), then the client expects `Password: ` (no newline) and
 *   `Authentication successful.\n`, or `Authentication failed. Disconnecting.\n`. The
 *   prompt, the result and the first events may arrive in one read or split anywhere.
 *
 * Output (lib/cli/client_output.ts): `--format json` prints each event line exactly as
 * received (only lines that are JSON objects; anything else is skipped with a warning);
 * `--format text` prints TextFormatter lines, coloured only on a terminal and never with
 * `NO_COLOR`. Lines are framed on `\n` across reads, and a UTF-8 character split across
 * reads is decoded whole. A closed stdout (`procMonitor client | head`) ends the client
 * quietly with exit 0.
 *
 * Errors are one sentence on stderr (through the logger) and exit 1. With `--reconnect`,
 * a dropped or failed connection is retried with exponential backoff (0.5 s doubling up to
 * 30 s, back to 0.5 s after a connection that lasted more than 10 s); errors that a retry
 * cannot fix end the client at once: a rejected password (retrying would only hammer the
 * server), a TLS certificate that is not trusted or not valid for the host, a permission
 * denied on the socket, an unreadable `--ca` file. SIGINT and SIGTERM end the client at
 * once with exit 0. The password is never logged.
 *
 * With `--nats`, the events come from NATS instead (lib/cli/nats_client.ts).
 *
 * @module
 */

import type { ClientConfig } from "./config_types.ts";
import { closeLogging, configureLogging, getLogger } from "../log.ts";
import { closeQuietly, hostPort } from "../outputs/connections.ts";
import { escapeControl } from "../events/text_format.ts";
import {
  ClientOutput,
  literal,
  parseObject,
  shown,
  StdoutClosed,
  StdoutFailed,
} from "./client_output.ts";
import { sleep, type Timer } from "../timers.ts";
import { ignoreSignal } from "../kernel/ffi.ts";

const log = getLogger("client");

/** The TCP handshake's texts (SPEC §5). */
const PROMPT = "Password: ";
const AUTH_OK = "Authentication successful";
const AUTH_FAILED = "Authentication failed";

/** How long a TCP connect, and then the handshake, may take before the attempt fails. */
const CONNECT_TIMEOUT_MS = 15_000;
const HANDSHAKE_TIMEOUT_MS = 15_000;

/** Reconnect backoff: first delay, cap, and how long a connection must live to reset it. */
const BACKOFF_INITIAL_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const BACKOFF_RESET_AFTER_MS = 10_000;

/**
 * Longest line kept while framing. Events are far shorter (cmdlines are cut at 4 KiB); a
 * longer line is dropped with a warning rather than growing memory without bound.
 */
const MAX_LINE_CHARS = 1 << 20;

/** Warnings about bad lines per connection before the rest are only counted. */
const MAX_LINE_WARNINGS = 10;

/** An error that ends a connection attempt; `retry` says whether --reconnect may try again. */
class ClientError extends Error {
  readonly retry: boolean;
  constructor(message: string, retry: boolean, options?: ErrorOptions) {
    super(message, options);
    this.name = "ClientError";
    this.retry = retry;
  }
}

/** SIGINT/SIGTERM arrived: stop at once, exit 0. */
class Stopped extends Error {
  constructor() {
    super("stopped");
    this.name = "Stopped";
  }
}

/**
 * Connects to the server named by `config` and prints its events to stdout until the
 * server closes the stream, an error occurs (exit 1) or SIGINT/SIGTERM arrives (exit 0).
 * With `config.reconnect`, reconnects with backoff instead of ending on a dropped or failed
 * connection. Configures logging (stderr) at the start and closes it at the end.
 *
 * @param config the parsed `procMonitor client` configuration
 * @returns the exit code: 0 after a normal end of stream, a signal or a closed stdout; 1 on
 *   an error
 */
export async function runClient(config: ClientConfig): Promise<number> {
  // As in the daemon: on SIGUSR1 Deno would open an unauthenticated debugger on port 9229,
  // through which any local user could run code as this client's user.
  ignoreSignal("SIGUSR1");
  await configureLogging(config.logLevel, false);
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    return await run(config, stop.signal);
  } catch (error) {
    log.error("procMonitor client stopped on an unexpected error: {error}", { error });
    return 1;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await closeLogging();
  }
}

async function run(config: ClientConfig, signal: AbortSignal): Promise<number> {
  if (config.nats !== null) {
    // Loaded only here: the NATS client costs memory a socket client has no use for.
    const { consumeNats } = await import("./nats_client.ts");
    return await consumeNats(
      config.nats,
      new ClientOutput(config.format),
      config.reconnect,
      signal,
    );
  }
  const where = config.tcp === null
    ? config.socketPath
    : hostPort(config.tcp.host, config.tcp.port);
  let ca: string | null;
  try {
    ca = config.tcp?.tls && config.tcp.ca !== null ? await readCa(config.tcp.ca) : null;
  } catch (error) {
    if (!(error instanceof ClientError)) throw error;
    log.error(literal(error.message));
    return 1;
  }
  const output = new ClientOutput(config.format);
  let delay = BACKOFF_INITIAL_MS;
  let attempt = 0;
  for (;;) {
    attempt++;
    let connectedAt: number | null = null;
    try {
      await session(config, where, ca, output, signal, () => {
        connectedAt = Date.now();
        if (attempt > 1) log.info(literal(`Reconnected to ${where}`));
        else log.debug(literal(`Connected to ${where}`));
      });
      if (signal.aborted) return 0;
      if (!config.reconnect) {
        log.info(literal(`The server at ${where} closed the connection`));
        return 0;
      }
      log.warning(literal(`The server at ${where} closed the connection`));
    } catch (error) {
      if (error instanceof Stopped || error instanceof StdoutClosed || signal.aborted) return 0;
      if (error instanceof StdoutFailed) {
        log.error(literal(error.message));
        return 1;
      }
      if (!(error instanceof ClientError)) throw error;
      if (!config.reconnect || !error.retry) {
        log.error(literal(error.message));
        return 1;
      }
      log.warning(literal(error.message));
    }
    if (connectedAt !== null && Date.now() - connectedAt > BACKOFF_RESET_AFTER_MS) {
      delay = BACKOFF_INITIAL_MS;
    }
    log.info(literal(`Reconnecting to ${where} in ${delay / 1000} s (attempt ${attempt + 1})`));
    if (!await sleep(delay, signal)) return 0;
    delay = Math.min(delay * 2, BACKOFF_MAX_MS);
  }
}

/** Reads the `--ca` file once; it must hold at least one PEM certificate. */
async function readCa(path: string): Promise<string> {
  let pem: string;
  try {
    pem = await Deno.readTextFile(path);
  } catch (error) {
    const why = error instanceof Deno.errors.NotFound
      ? "no such file"
      : error instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : error instanceof Deno.errors.IsADirectory
      ? "it is a directory"
      : (error as Error).message;
    throw new ClientError(`Cannot read the CA file ${path} (--ca): ${why}`, false, {
      cause: error,
    });
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new ClientError(`The CA file ${path} (--ca) holds no PEM certificate`, false);
  }
  return pem;
}

/**
 * Races `promise` against the stop signal and a timeout. A connection that arrives after
 * losing the race is closed.
 */
async function connectWithin<C extends Deno.Conn>(
  promise: Promise<C>,
  ms: number,
  signal: AbortSignal,
  onTimeout: () => ClientError,
): Promise<C> {
  let timer: Timer | undefined;
  let onAbort: (() => void) | undefined;
  const lost = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
    onAbort = () => reject(new Stopped());
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, lost]);
  } catch (error) {
    promise.then((conn) => closeQuietly(conn), () => {});
    throw error;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener("abort", onAbort!);
  }
}

/** Opens the connection: Unix socket, TCP, or TCP with a completed TLS handshake. */
async function connect(
  config: ClientConfig,
  where: string,
  ca: string | null,
  signal: AbortSignal,
): Promise<Deno.Conn> {
  const timedOut = () =>
    new ClientError(
      `Cannot connect to ${where}: timed out after ${CONNECT_TIMEOUT_MS / 1000} s`,
      true,
    );
  const tcp = config.tcp;
  if (tcp === null) {
    try {
      return await connectWithin(
        Deno.connect({ transport: "unix", path: config.socketPath }),
        CONNECT_TIMEOUT_MS,
        signal,
        timedOut,
      );
    } catch (error) {
      if (error instanceof Stopped || error instanceof ClientError) throw error;
      throw await unixConnectError(error, config.socketPath);
    }
  }
  let conn: Deno.Conn;
  try {
    conn = await connectWithin<Deno.Conn>(
      tcp.tls
        ? Deno.connectTls({
          hostname: tcp.host,
          port: tcp.port,
          ...(ca === null ? {} : { caCerts: [ca] }),
        })
        : Deno.connect({ hostname: tcp.host, port: tcp.port }),
      CONNECT_TIMEOUT_MS,
      signal,
      timedOut,
    );
  } catch (error) {
    if (error instanceof Stopped || error instanceof ClientError) throw error;
    throw tcpConnectError(error, where);
  }
  if (!tcp.tls) return conn;
  // The TLS handshake runs lazily on first use; run it now so certificate problems are
  // reported as such and not as a failed read.
  const tls = conn as Deno.TlsConn;
  try {
    await connectWithin(
      tls.handshake().then(() => tls),
      CONNECT_TIMEOUT_MS,
      signal,
      () =>
        new ClientError(
          `Cannot connect to ${where}: no TLS handshake within ${CONNECT_TIMEOUT_MS / 1000} s`,
          true,
        ),
    );
  } catch (error) {
    closeQuietly(tls);
    if (error instanceof Stopped || error instanceof ClientError) throw error;
    throw tlsError(error, where, tcp.host, tcp.ca);
  }
  return tls;
}

/** One sentence for a failed connect to a Unix socket. */
async function unixConnectError(error: unknown, path: string): Promise<ClientError> {
  const where = `Cannot connect to ${path}`;
  const options = { cause: error };
  if (error instanceof Deno.errors.NotFound) {
    return new ClientError(`${where}: no such file (is procMonitor running?)`, true, options);
  }
  if (error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable) {
    return new ClientError(
      `${where}: permission denied (the socket's mode or group, set with the server's --socket-mode and --socket-group, must let this user in)`,
      false,
      options,
    );
  }
  if (error instanceof Deno.errors.ConnectionRefused) {
    // A regular file or a directory at the path refuses too; say what it is.
    const info = await Deno.lstat(path).catch(() => null);
    if (info !== null && !info.isSocket) {
      return new ClientError(`${where}: it is not a socket`, true, options);
    }
    return new ClientError(
      `${where}: connection refused (is procMonitor running?)`,
      true,
      options,
    );
  }
  return new ClientError(`${where}: ${(error as Error).message}`, true, options);
}

/** One sentence for a failed TCP connect. */
function tcpConnectError(error: unknown, where: string): ClientError {
  const options = { cause: error };
  const message = (error as Error).message ?? String(error);
  if (error instanceof Deno.errors.ConnectionRefused) {
    return new ClientError(
      `Cannot connect to ${where}: connection refused (is procMonitor running with --tcp?)`,
      true,
      options,
    );
  }
  if (/failed to lookup address|Name or service not known|nodename nor servname/i.test(message)) {
    return new ClientError(`Cannot connect to ${where}: unknown host`, true, options);
  }
  if (error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable) {
    return new ClientError(`Cannot connect to ${where}: permission denied`, false, options);
  }
  if (error instanceof Deno.errors.TimedOut) {
    return new ClientError(`Cannot connect to ${where}: timed out`, true, options);
  }
  return new ClientError(`Cannot connect to ${where}: ${message}`, true, options);
}

/** One sentence for a failed TLS handshake; certificate problems are not retried. */
function tlsError(error: unknown, where: string, host: string, ca: string | null): ClientError {
  const options = { cause: error };
  const message = (error as Error).message ?? String(error);
  const prefix = `Cannot connect to ${where} with TLS`;
  if (/UnknownIssuer|unknown ?issuer|BadSignature|CaUsedAsEndEntity/i.test(message)) {
    return new ClientError(
      ca === null
        ? `${prefix}: the server's certificate is not trusted (give the CA certificate that signed it, or the server's own certificate, with --ca FILE)`
        : `${prefix}: the server's certificate is not signed by the CA in ${ca} (check --ca)`,
      false,
      options,
    );
  }
  if (/not valid for name|NotValidForName/i.test(message)) {
    return new ClientError(
      `${prefix}: the server's certificate is not valid for the name ${host} (use a --host name the certificate has, or check --ca)`,
      false,
      options,
    );
  }
  if (/expired|NotValidYet/i.test(message)) {
    return new ClientError(
      `${prefix}: the server's certificate has expired or is not valid yet`,
      false,
      options,
    );
  }
  if (error instanceof Deno.errors.UnexpectedEof || error instanceof Deno.errors.ConnectionReset) {
    return new ClientError(
      `${prefix}: the server closed the connection during the TLS handshake (is it running with --tls-cert?)`,
      true,
      options,
    );
  }
  if (/corrupt message|InvalidContentType|WrongVersion/i.test(message)) {
    return new ClientError(
      `${prefix}: the server does not speak TLS (is it running with --tls-cert?)`,
      true,
      options,
    );
  }
  if (error instanceof Deno.errors.ConnectionRefused) return tcpConnectError(error, where);
  return new ClientError(`${prefix}: the TLS handshake failed (${message})`, true, options);
}

/**
 * One connection: connect, authenticate (TCP), then print events until the server closes
 * the stream (resolves) or something fails (throws ClientError, Stopped or StdoutClosed).
 * `onConnected` runs once the stream of events begins.
 */
async function session(
  config: ClientConfig,
  where: string,
  ca: string | null,
  output: ClientOutput,
  signal: AbortSignal,
  onConnected: () => void,
): Promise<void> {
  const conn = await connect(config, where, ca, signal);
  const closeOnStop = () => closeQuietly(conn);
  signal.addEventListener("abort", closeOnStop, { once: true });
  let handshakeTimer: Timer | undefined;
  let handshakeTimedOut = false;
  try {
    const tcp = config.tcp;
    if (tcp !== null) {
      await sendPassword(conn, tcp.auth);
      handshakeTimer = setTimeout(() => {
        handshakeTimedOut = true;
        closeQuietly(conn);
      }, HANDSHAKE_TIMEOUT_MS);
    } else {
      onConnected();
    }
    const stream = new ServerStream(where, output, tcp !== null, () => {
      clearTimeout(handshakeTimer);
      onConnected();
    });
    const endedHere = () =>
      signal.aborted ? new Stopped() : handshakeTimedOut ? handshakeTimeout(where) : null;
    await readToEnd(conn, stream, output, endedHere);
  } finally {
    clearTimeout(handshakeTimer);
    signal.removeEventListener("abort", closeOnStop);
    closeQuietly(conn);
  }
}

/**
 * Like v1's client, sends the password line at once, before the prompt arrives. A failed
 * write is not reported here: if the server already closed (a refusal), the read tells why.
 */
async function sendPassword(conn: Deno.Conn, auth: string): Promise<void> {
  try {
    await conn.write(new TextEncoder().encode(auth + "\n"));
  } catch {
    // reported by the read
  }
}

/**
 * Reads `conn` until the server closes it, printing what `stream` makes of each read.
 * `endedHere` says why, when this side ended the connection (a stop, the handshake's time
 * limit): that is what a failed or ended read then throws.
 */
async function readToEnd(
  conn: Deno.Conn,
  stream: ServerStream,
  output: ClientOutput,
  endedHere: () => Error | null,
): Promise<void> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buffer);
    } catch (error) {
      throw endedHere() ?? stream.lost(error);
    }
    if (n === null) {
      const ended = endedHere();
      if (ended !== null) throw ended;
      await output.write(stream.feed(decoder.decode(), true));
      stream.end();
      return;
    }
    await output.write(stream.feed(decoder.decode(buffer.subarray(0, n), { stream: true }), false));
  }
}

/**
 * The text one server sends, as the client reads it: framed into lines across reads, the
 * TCP handshake taken off the front, then each event line turned into stdout text.
 * Throws {@link ClientError} when the server refuses, rejects the password or says
 * something else than expected.
 */
class ServerStream {
  readonly #where: string;
  readonly #output: ClientOutput;
  readonly #onAuthenticated: () => void;
  #authenticating: boolean;
  #pending = "";
  #skipping = false; // inside an over-long line, dropping until its newline
  #warnings = 0;
  #events = 0;

  /** `authenticating`: a TCP handshake comes first; `onAuthenticated` runs once it succeeded. */
  constructor(
    where: string,
    output: ClientOutput,
    authenticating: boolean,
    onAuthenticated: () => void,
  ) {
    this.#where = where;
    this.#output = output;
    this.#authenticating = authenticating;
    this.#onAuthenticated = onAuthenticated;
  }

  /** Takes the next decoded text; returns the stdout text for it. `atEnd` flushes the rest. */
  feed(text: string, atEnd: boolean): string {
    if (!this.#skipping) this.#pending += text;
    else {
      const nl = text.indexOf("\n");
      if (nl < 0) return "";
      this.#skipping = false;
      this.#pending = text.slice(nl + 1);
    }
    if (this.#authenticating) {
      if (!this.#handshake(atEnd)) return "";
      this.#authenticating = false;
      this.#onAuthenticated();
    }
    return this.#eventLines(atEnd);
  }

  /** The server closed the stream: an error while still authenticating. */
  end(): void {
    if (this.#authenticating) {
      throw new ClientError(
        `The server at ${this.#where} closed the connection during authentication (is this a procMonitor TCP port?)`,
        true,
      );
    }
  }

  /** The error for a read that failed. */
  lost(error: unknown): ClientError {
    const message = error instanceof Deno.errors.ConnectionReset
      ? "connection reset"
      : (error as Error).message;
    return new ClientError(
      this.#authenticating
        ? `The server at ${this.#where} closed the connection during authentication (${message})`
        : `The connection to ${this.#where} was lost: ${message}`,
      true,
      { cause: error },
    );
  }

  /** Consumes the handshake at the start of the pending text; true once it succeeded. */
  #handshake(atEnd: boolean): boolean {
    for (;;) {
      while (this.#pending.startsWith(PROMPT)) this.#pending = this.#pending.slice(PROMPT.length);
      // A prompt cut short by the read (or by the server closing) needs more bytes.
      if (PROMPT.startsWith(this.#pending)) return false;
      const nl = this.#pending.indexOf("\n");
      if (nl < 0 && !atEnd) {
        if (this.#pending.length > 4096) throw this.#unexpected(this.#pending);
        return false;
      }
      const line = (nl < 0 ? this.#pending : this.#pending.slice(0, nl)).replace(/\r$/, "");
      this.#pending = nl < 0 ? "" : this.#pending.slice(nl + 1);
      if (line === "") continue;
      if (line.startsWith(AUTH_OK)) return true;
      if (line.startsWith(AUTH_FAILED)) {
        throw new ClientError(
          `Authentication failed: the server rejected the password (${this.#where})`,
          false,
        );
      }
      const refusal = parseObject(line);
      if (refusal !== null && refusal.event === undefined && refusal.error !== undefined) {
        throw refused(refusal, 0);
      }
      throw this.#unexpected(line);
    }
  }

  #unexpected(reply: string): ClientError {
    return new ClientError(
      `The server at ${this.#where} sent an unexpected reply during authentication: ${
        shown(reply)
      }`,
      true,
    );
  }

  /** The stdout text for the complete lines pending (at the end, for all of them). */
  #eventLines(atEnd: boolean): string {
    let out = "";
    let start = 0;
    for (let nl = this.#pending.indexOf("\n"); nl >= 0; nl = this.#pending.indexOf("\n", start)) {
      out += this.#eventLine(this.#pending.slice(start, nl));
      start = nl + 1;
    }
    this.#pending = this.#pending.slice(start);
    if (atEnd && this.#pending !== "") {
      out += this.#eventLine(this.#pending);
      this.#pending = "";
    }
    if (this.#pending.length > MAX_LINE_CHARS) {
      this.#warn(`Skipping a line from the server longer than ${MAX_LINE_CHARS} characters`);
      this.#pending = "";
      this.#skipping = true;
    }
    return out;
  }

  /** The stdout text for one event-stream line. */
  #eventLine(line: string): string {
    if (line === "" || line === "\r") return "";
    const event = parseObject(line);
    if (event === null) {
      this.#warn(`Skipping a line from the server that is not a JSON object: ${shown(line)}`);
      return "";
    }
    if (event.event === undefined && event.error !== undefined) {
      throw refused(event, this.#events);
    }
    if (typeof event.event !== "string") {
      this.#warn(`Skipping a line from the server that is not an event: ${shown(line)}`);
      return "";
    }
    this.#events++;
    return this.#output.render(line, event) ?? "";
  }

  #warn(sentence: string): void {
    this.#warnings++;
    if (this.#warnings <= MAX_LINE_WARNINGS) log.warning(literal(sentence));
    if (this.#warnings === MAX_LINE_WARNINGS) {
      log.warning("Further warnings about bad lines from this connection are not shown");
    }
  }
}

function handshakeTimeout(where: string): ClientError {
  return new ClientError(
    `The server at ${where} did not complete authentication within ${
      HANDSHAKE_TIMEOUT_MS / 1000
    } s`,
    true,
  );
}

/** The server's `{"error":…}` line as one sentence; retried with --reconnect. */
function refused(line: Record<string, unknown>, events: number): ClientError {
  let why = escapeControl(String(line.error));
  if (typeof line.limit === "number") why += ` (limit ${line.limit})`;
  return new ClientError(
    events === 0
      ? `The server refused the connection: ${why}`
      : `The server ended the stream: ${why}`,
    true,
  );
}
