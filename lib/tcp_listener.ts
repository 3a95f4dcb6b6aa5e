/**
 * The TCP listener (SPEC §5 "TCP"), optionally inside TLS, with v1's password handshake:
 *
 * 1. the server sends `Password: ` (no newline);
 * 2. the client sends the password and `\n` (it may do so before the prompt arrives);
 * 3. the server sends `Authentication successful.\n` and the client joins the {@link Hub},
 *    or `Authentication failed. Disconnecting.\n` and closes.
 *
 * Beyond v1: the comparison is constant-time; the password line is at most 1 KiB and must
 * arrive within a timeout (10 s); a trailing `\r` is ignored; an empty line, a line that is
 * not UTF-8, a silent client or one that closes early all fail; at most `maxPending`
 * connections may be waiting for authentication (more are closed at once); failures from
 * one address are answered after a growing delay (0.25 s doubling up to 8 s, forgotten
 * after 15 minutes or a success), which slows down password guessing without blocking
 * anybody else. The password is never logged.
 *
 * @module
 */
import { FailureThrottle, type FailureThrottleOptions, passwordMatches } from "./auth.ts";
import { StartupError } from "./errors.ts";
import { closeGracefully, closeQuietly, type Hub, writeAllWithin } from "./hub.ts";
import { getLogger } from "./log.ts";

/** What setTimeout returns (a number in Deno, an object in its Node types). */
type Timer = ReturnType<typeof setTimeout>;

const log = getLogger("tcp");

/** The prompt, byte for byte as v1 sends it. */
export const PROMPT = "Password: ";
/** Sent after a correct password, byte for byte as v1. */
export const AUTH_SUCCESS = "Authentication successful.\n";
/** Sent before closing after a failed authentication, byte for byte as v1. */
export const AUTH_FAILURE = "Authentication failed. Disconnecting.\n";
/** Longest accepted password line, in bytes, without its `\n`. */
export const MAX_PASSWORD_LINE = 1024;
/** Default time a client has to send its password line. */
export const DEFAULT_AUTH_TIMEOUT_MS = 10_000;
/** Default cap on connections waiting for authentication. */
export const DEFAULT_MAX_PENDING = 32;
/** Connections one address may have waiting to authenticate. */
export const MAX_PENDING_PER_ADDRESS = 8;

/** How long writing the prompt or a reply may take before the connection is cut. */
const REPLY_MS = 2000;
/** How long to keep reading (and discarding) after the failure reply; see closeGracefully. */
const LINGER_MS = 1000;
/** At most one log line per this interval about connections refused at the pending cap. */
const REFUSAL_LOG_MS = 1000;

const encoder = new TextEncoder();
const PROMPT_BYTES = encoder.encode(PROMPT);
const SUCCESS_BYTES = encoder.encode(AUTH_SUCCESS);
const FAILURE_BYTES = encoder.encode(AUTH_FAILURE);

/** Options of {@link TcpListener.open}. */
export interface TcpListenerOptions {
  /** TCP port; 0 picks a free one (see {@link TcpListener.port}). */
  port: number;
  /** Address to bind, e.g. "0.0.0.0", "127.0.0.1", "::". */
  bind: string;
  /** The password clients must send; must not be empty. */
  password: string;
  /** PEM certificate file; with `tlsKey`, the listener speaks TLS. */
  tlsCert: string | null;
  /** PEM private key file. */
  tlsKey: string | null;
  /** Maximum concurrent authenticated clients of this listener. */
  maxClients: number;
  /** Time a client has to send its password line (default 10 s). */
  authTimeoutMs?: number;
  /** Maximum connections waiting for authentication (default 32). */
  maxPending?: number;
  /** Delays applied to repeated failures from one address. */
  failureDelay?: FailureThrottleOptions;
}

type LineResult =
  | { kind: "line"; bytes: Uint8Array }
  | { kind: "too-long" }
  | { kind: "eof" }
  | { kind: "error"; error: unknown };

/** Reads one line of at most `max` bytes; keeps track of the read in progress. */
class LineReader {
  readonly #buf: Uint8Array;
  #len = 0;

  constructor(readonly conn: Deno.Conn, max: number) {
    this.#buf = new Uint8Array(max + 1);
  }

  /** Resolves with the line (without `\n`); never rejects. Bytes after `\n` are dropped:
   * clients send nothing after the password. */
  async readLine(): Promise<LineResult> {
    try {
      for (;;) {
        const start = this.#len;
        const n = await this.conn.read(this.#buf.subarray(start));
        if (n === null) return { kind: "eof" };
        this.#len += n;
        const i = this.#buf.subarray(start, this.#len).indexOf(0x0a);
        if (i >= 0) return { kind: "line", bytes: this.#buf.subarray(0, start + i) };
        if (this.#len >= this.#buf.length) return { kind: "too-long" };
      }
    } catch (error) {
      return { kind: "error", error };
    }
  }
}

/** One connection waiting for authentication. */
interface Pending {
  conn: Deno.Conn;
  /** The peer's address, for the per-address cap. */
  host: string;
  task: Promise<void>;
  /** Resolves when the listener closes, to end waits early. */
  closing: Promise<"closing">;
  abort: () => void;
}

/** Serves TCP (or TLS): authenticates each connection, then hands it to the hub. */
export class TcpListener {
  /** The port actually listened on (useful with port 0). */
  readonly port: number;
  /** The bound address. */
  readonly bind: string;
  /** Whether connections are TLS. */
  readonly tls: boolean;
  readonly #hub: Hub;
  readonly #listener: Deno.Listener<Deno.Conn<Deno.NetAddr>, Deno.NetAddr>;
  readonly #password: string;
  readonly #maxClients: number;
  readonly #authTimeoutMs: number;
  readonly #maxPending: number;
  readonly #throttle: FailureThrottle;
  readonly #pending = new Set<Pending>();
  readonly #group: string;
  readonly #acceptLoop: Promise<void>;
  #closing = false;
  #closed: Promise<void> | null = null;
  #refusedSinceLog = 0;
  #lastRefusalLog = 0;

  private constructor(
    hub: Hub,
    listener: Deno.Listener<Deno.Conn<Deno.NetAddr>, Deno.NetAddr>,
    tls: boolean,
    opts: TcpListenerOptions,
  ) {
    this.#hub = hub;
    this.#listener = listener;
    this.tls = tls;
    this.port = listener.addr.port;
    this.bind = opts.bind;
    this.#password = opts.password;
    this.#maxClients = opts.maxClients;
    this.#authTimeoutMs = opts.authTimeoutMs ?? DEFAULT_AUTH_TIMEOUT_MS;
    this.#maxPending = opts.maxPending ?? DEFAULT_MAX_PENDING;
    this.#throttle = new FailureThrottle(opts.failureDelay);
    this.#group = `${tls ? "tls" : "tcp"}:${hostPort(opts.bind, this.port)}`;
    this.#acceptLoop = this.#accept();
  }

  /**
   * Binds `opts.bind`:`opts.port` (with TLS when `tlsCert` and `tlsKey` are given, their
   * PEM contents read now) and starts accepting.
   *
   * @throws {StartupError} with one sentence when the password is empty, a TLS file
   * cannot be read or used, or the address and port cannot be bound.
   */
  static async open(hub: Hub, opts: TcpListenerOptions): Promise<TcpListener> {
    const where = hostPort(opts.bind, opts.port);
    if (opts.password === "") {
      throw new StartupError(`Cannot listen on TCP ${where} without a password`);
    }
    if ((opts.tlsCert === null) !== (opts.tlsKey === null)) {
      throw new StartupError("TLS needs both a certificate file and a key file");
    }
    let tls: { cert: string; key: string } | null = null;
    if (opts.tlsCert !== null && opts.tlsKey !== null) {
      tls = {
        cert: await readPem(opts.tlsCert, "certificate"),
        key: await readPem(opts.tlsKey, "key"),
      };
    }
    let listener: Deno.Listener<Deno.Conn<Deno.NetAddr>, Deno.NetAddr>;
    try {
      listener = tls === null
        ? Deno.listen({ hostname: opts.bind, port: opts.port, transport: "tcp" })
        : Deno.listenTls({ hostname: opts.bind, port: opts.port, ...tls });
    } catch (err) {
      throw bindError(err, where, opts);
    }
    const self = new TcpListener(hub, listener, tls !== null, opts);
    log.info("Listening on {proto} {address} (up to {max} clients)", {
      proto: tls === null ? "TCP" : "TLS",
      address: hostPort(opts.bind, self.port),
      max: opts.maxClients,
    });
    return self;
  }

  /**
   * Stops accepting and drops connections still authenticating. Authenticated clients
   * stay with the hub. Idempotent.
   */
  close(): Promise<void> {
    return this.#closed ??= this.#shutdown();
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Nothing to remove for TCP; present so a server can treat all listeners alike. */
  removeSocketFileNow(): void {}

  async #shutdown(): Promise<void> {
    this.#closing = true;
    closeQuietly(this.#listener);
    await this.#acceptLoop;
    for (const p of this.#pending) p.abort();
    await Promise.all([...this.#pending].map((p) => p.task));
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.Conn<Deno.NetAddr>;
      try {
        conn = await this.#listener.accept();
      } catch (err) {
        if (this.#closing) return;
        if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
          return;
        }
        if (
          err instanceof Deno.errors.NotConnected || err instanceof Deno.errors.ConnectionReset ||
          err instanceof Deno.errors.ConnectionAborted
        ) {
          // The peer gave up before accept() returned (a reset, a port scan): its loss only.
          log.debug("A connection to {listener} was reset before it was accepted", {
            listener: this.#group,
          });
          continue;
        }
        // E.g. out of file descriptors: keep serving, retry shortly.
        log.error("Accepting on {listener} failed: {error}", {
          listener: this.#group,
          error: describe(err),
        });
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      const addr = conn.remoteAddr;
      const peer = hostPort(addr.hostname, addr.port);
      // One address may not hold every waiting slot and lock the others out.
      const fromPeer = [...this.#pending].filter((p) => p.host === addr.hostname).length;
      if (this.#pending.size >= this.#maxPending || fromPeer >= MAX_PENDING_PER_ADDRESS) {
        closeQuietly(conn);
        this.#noteRefusal(peer);
        continue;
      }
      if ("setNoDelay" in conn) {
        // Events go out in whole batches; waiting for more to coalesce only adds latency.
        (conn as Deno.TcpConn).setNoDelay(true);
        (conn as Deno.TcpConn).setKeepAlive(true);
      }
      let abort = () => {};
      const closing = new Promise<"closing">((resolve) => abort = () => resolve("closing"));
      const p: Pending = { conn, host: addr.hostname, task: Promise.resolve(), closing, abort };
      this.#pending.add(p);
      p.task = this.#authenticate(p, peer, addr.hostname).finally(() => {
        this.#pending.delete(p);
      });
    }
  }

  /** Logs refusals at the pending cap, at most once per REFUSAL_LOG_MS under a flood. */
  #noteRefusal(peer: string): void {
    this.#refusedSinceLog++;
    const now = Date.now();
    if (now - this.#lastRefusalLog < REFUSAL_LOG_MS) return;
    log.warning(
      "Refused {count} connection(s), latest from {client}: {max} connections are already " +
        "waiting for authentication",
      { count: this.#refusedSinceLog, client: peer, max: this.#maxPending },
    );
    this.#refusedSinceLog = 0;
    this.#lastRefusalLog = now;
  }

  /** Runs the handshake; on success the connection goes to the hub, otherwise it is closed. */
  async #authenticate(p: Pending, peer: string, ip: string): Promise<void> {
    const conn = p.conn;
    let timer: Timer | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.#authTimeoutMs);
    });
    try {
      if (this.tls) {
        const shake = await Promise.race([
          (conn as Deno.TlsConn).handshake().then(() => null, (err: unknown) => err),
          timeout,
          p.closing,
        ]);
        if (shake !== null) {
          if (shake === "timeout") {
            log.warning("TLS handshake with {client} timed out", { client: peer });
          } else if (shake !== "closing") {
            log.warning("TLS handshake with {client} failed: {error}", {
              client: peer,
              error: describe(shake),
            });
          }
          closeQuietly(conn);
          return;
        }
      }
      // The client may send its password before the prompt arrives, so read and write at
      // once; the reply is written only after the prompt (one write at a time).
      const prompt = writeAllWithin(conn, PROMPT_BYTES, REPLY_MS);
      const line = new LineReader(conn, MAX_PASSWORD_LINE).readLine();
      const got = await Promise.race([
        line,
        timeout,
        p.closing,
      ]);
      clearTimeout(timer);
      if (got === "closing") {
        closeQuietly(conn);
        await Promise.all([prompt, line]);
        return;
      }
      let failure: string;
      if (got === "timeout") {
        failure = `no password line within ${this.#authTimeoutMs} ms`;
      } else if (got.kind === "eof" || got.kind === "error") {
        // Nobody to answer or to slow down.
        log.info("Client {client} disconnected before authenticating{detail}", {
          client: peer,
          detail: got.kind === "error" ? `: ${describe(got.error)}` : "",
        });
        closeQuietly(conn);
        await prompt;
        return;
      } else if (got.kind === "too-long") {
        failure = `password line longer than ${MAX_PASSWORD_LINE} bytes`;
      } else {
        const check = this.#check(got.bytes);
        if (check === null) {
          this.#throttle.success(ip);
          if (!await prompt || !await writeAllWithin(conn, SUCCESS_BYTES, REPLY_MS)) {
            log.info("Client {client} authenticated but the connection failed", {
              client: peer,
            });
            return;
          }
          log.info("Client {client} authenticated", { client: peer });
          this.#hub.addClient(conn, {
            description: peer,
            group: this.#group,
            maxClients: this.#maxClients,
          });
          return;
        }
        failure = check;
      }
      const delay = this.#throttle.failure(ip);
      log.warning("Authentication of {client} failed: {reason} (answering in {delay} ms)", {
        client: peer,
        reason: failure,
        delay,
      });
      if (!await sleep(delay, p.closing)) {
        closeQuietly(conn);
        await Promise.all([prompt, line]);
        return;
      }
      if (await prompt && await writeAllWithin(conn, FAILURE_BYTES, REPLY_MS)) {
        await closeGracefully(conn, LINGER_MS, line);
      } else {
        await line;
      }
    } catch (err) {
      // Not expected (every I/O above is caught); never let one client hurt the server.
      log.error("Handshake with {client} failed: {error}", { client: peer, error: describe(err) });
      closeQuietly(conn);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Null when `line` is the password, otherwise why it is not (never the line itself). */
  #check(line: Uint8Array): string | null {
    const end = line.length > 0 && line[line.length - 1] === 0x0d ? line.length - 1 : line.length;
    const bytes = line.subarray(0, end);
    if (bytes.length === 0) return "empty password line";
    try {
      new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      return "password line is not UTF-8";
    }
    return passwordMatches(bytes, this.#password) ? null : "wrong password";
  }
}

/** Waits `ms`; resolves false early when `closing` resolves first. */
async function sleep(ms: number, closing: Promise<unknown>): Promise<boolean> {
  let timer: Timer | undefined;
  const slept = new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(true), ms));
  try {
    return await Promise.race([slept, closing.then(() => false)]);
  } finally {
    clearTimeout(timer);
  }
}

/** `host:port`, with brackets around an IPv6 address. */
function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    throw new StartupError(`Cannot read the TLS ${what} file ${path}: ${describe(err)}`, {
      cause: err,
    });
  }
}

function bindError(err: unknown, where: string, opts: TcpListenerOptions): StartupError {
  const cause = { cause: err };
  if (err instanceof Deno.errors.AddrInUse) {
    return new StartupError(`Cannot listen on TCP ${where} as the port is already in use`, cause);
  }
  if (err instanceof Deno.errors.AddrNotAvailable) {
    return new StartupError(
      `Cannot listen on TCP ${where} as ${opts.bind} is not an address of this host`,
      cause,
    );
  }
  if (err instanceof Deno.errors.PermissionDenied) {
    return new StartupError(
      `Cannot listen on TCP ${where} as permission is denied (ports below 1024 need root)`,
      cause,
    );
  }
  if (err instanceof Deno.errors.InvalidData && opts.tlsCert !== null) {
    return new StartupError(
      `Cannot use the TLS certificate ${opts.tlsCert} and key ${opts.tlsKey}: ${describe(err)}`,
      cause,
    );
  }
  return new StartupError(`Cannot listen on TCP ${where}: ${describe(err)}`, cause);
}

/** An error message without the " (os error N): syscall 'path'" tail Deno adds. */
function describe(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/ \(os error \d+\).*$/s, "");
}
