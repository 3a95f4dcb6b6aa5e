/**
 * The TCP listener (SPEC §5 "TCP"), optionally inside TLS, with v1's password handshake:
 *
 * 1. the server sends `Password: ` (no newline);
 * 2. the client sends the password and `\n` (it may do so before the prompt arrives);
 * 3. the server sends `Authentication successful.\n` and the client joins the {@link Hub},
 *    or `Authentication failed. Disconnecting.\n` and closes.
 *
 * Beyond v1: the comparison is constant-time; the password line is at most 1 KiB; a
 * trailing `\r` is ignored; an empty line, a line that is not UTF-8, or one that is too
 * long fails; a client that closes early is just dropped. The password is never logged.
 *
 * ## Defences against floods and guessing
 *
 * Each connection goes through two bounded stages, and holds a slot only while it is up to
 * the client to act:
 *
 * 1. **Waiting** (from accept until the password line is complete, including the TLS
 *    handshake): at most `maxPending` (32) connections in all and 8 per address key
 *    ({@link addressKey}: an IPv4 address, or an IPv6 /64). A newcomer is never refused:
 *    the oldest waiter of its own key, or else of the key with the most waiters, is closed
 *    instead (see {@link WaitingRoom}; OpenSSH's MaxStartups has the same aim). So silent
 *    connections cannot lock out a client that sends its password at once. The whole stage
 *    must end within `authTimeoutMs` (10 s) of accept: a silent plain TCP peer is then sent
 *    the failure line and closed, a TLS peer still in its handshake is closed at once.
 * 2. **Checking** (the line is complete): the line waits in a {@link CheckQueue} until its
 *    key may be checked again (0.25 s after a failure, doubling to 8 s; checks of one key
 *    run one at a time) and the global failure budget (10 a second, bursts of 30) allows
 *    it. The check itself is delayed, not only the answer, because with parallel
 *    connections a slow "no" is no brake. At most 64 lines wait (8 per key; past that the
 *    oldest of the busiest key is dropped). The answer goes out as soon as the check runs.
 *
 * A timeout or a drop is not a failed password: it adds no delay. Drops are logged
 * summarised, at most one line a second per stage.
 *
 * TLS runs on `node:tls` over the accepted TCP connection rather than `Deno.listenTls`,
 * whose connections cannot be closed while their handshake is pending; see
 * lib/outputs/node_socket_conn.ts.
 *
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { createSecureContext, type SecureContext } from "node:tls";
import { addressKey, DropLog, WaitingRoom } from "./admission.ts";
import {
  CheckQueue,
  FailureBudget,
  type FailureBudgetOptions,
  FailureThrottle,
  type FailureThrottleOptions,
  passwordMatches,
} from "./auth.ts";
import { describe, StartupError } from "../errors.ts";
import {
  bindError,
  closeGracefully,
  closeQuietly,
  hostPort,
  type HubConn,
  writeAllWithin,
} from "./connections.ts";
import type { Hub } from "./hub.ts";
import { getLogger } from "../log.ts";
import { startServerTls } from "./node_socket_conn.ts";
import { sleep, type Timer } from "../timers.ts";

const log = getLogger("tcp");

/** The prompt, byte for byte as v1 sends it. */
export const PROMPT = "Password: ";
/** Sent after a correct password, byte for byte as v1. */
export const AUTH_SUCCESS = "Authentication successful.\n";
/** Sent before closing after a failed authentication, byte for byte as v1. */
export const AUTH_FAILURE = "Authentication failed. Disconnecting.\n";
/** Longest accepted password line, in bytes, without its `\n`. */
export const MAX_PASSWORD_LINE = 1024;
/** Default time from accept to a complete password line (TLS handshake included). */
export const DEFAULT_AUTH_TIMEOUT_MS = 10_000;
/** Default cap on connections waiting for authentication. */
export const DEFAULT_MAX_PENDING = 32;
/** Connections one address key may have waiting to authenticate. */
export const MAX_PENDING_PER_ADDRESS = 8;
/** Default cap on password lines waiting for their check. */
export const DEFAULT_MAX_CHECKING = 64;

/** How long writing the prompt or a reply may take before the connection is cut. */
const REPLY_MS = 2000;
/** How long to keep reading (and discarding) after the failure reply; see closeGracefully. */
const LINGER_MS = 1000;
/** At most one log line per this interval about dropped connections, per stage. */
const DROP_LOG_MS = 1000;

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
  /** Time from accept to a complete password line, TLS handshake included (default 10 s). */
  authTimeoutMs?: number;
  /** Maximum connections waiting for authentication (default 32, at least 1). */
  maxPending?: number;
  /** Maximum password lines waiting for their check (default 64, at least 1). */
  maxChecking?: number;
  /** Delays between checks of one address key after failures. */
  failureDelay?: FailureThrottleOptions;
  /** Global cap on failed checks over all addresses. */
  failureBudget?: FailureBudgetOptions;
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

  constructor(readonly conn: Conn, max: number) {
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

/** A connection both ways: a Deno TCP connection or a TLS one (NodeSocketConn). */
type Conn = HubConn & Required<Pick<HubConn, "read" | "closeWrite">>;

/** Why a connection stopped waiting before its line was complete. */
type EndReason = "timeout" | "dropped" | "closing";

/** A connection from accept until its password line is complete. */
interface Waiter {
  readonly tcp: Deno.TcpConn;
  /** `host:port` of the peer, for logs. */
  readonly peer: string;
  /** {@link addressKey} of the peer. */
  readonly key: string;
  /** Resolves when the wait must end early. */
  readonly ended: Promise<EndReason>;
  readonly end: (why: EndReason) => void;
  timer: Timer | undefined;
}

/**
 * Failed authentications: a `password` line that was checked and was wrong (or empty, too
 * long, not UTF-8), or no password line at all within the `timeout`.
 */
export interface AuthFailures {
  password: number;
  timeout: number;
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
  readonly #listener: Deno.TcpListener;
  readonly #secureContext: SecureContext | null;
  readonly #password: string;
  readonly #maxClients: number;
  readonly #authTimeoutMs: number;
  readonly #waiting: WaitingRoom<Waiter>;
  readonly #checks: CheckQueue;
  readonly #waitDrops: DropLog;
  readonly #checkDrops: DropLog;
  /** Every connection's handshake task, until it ends. */
  readonly #tasks = new Set<Promise<void>>();
  readonly #group: string;
  readonly #authFailures: AuthFailures = { password: 0, timeout: 0 };
  readonly #acceptLoop: Promise<void>;
  #closing = false;
  #closed: Promise<void> | null = null;

  private constructor(
    hub: Hub,
    listener: Deno.TcpListener,
    secureContext: SecureContext | null,
    opts: TcpListenerOptions,
  ) {
    this.#hub = hub;
    this.#listener = listener;
    this.#secureContext = secureContext;
    this.tls = secureContext !== null;
    this.port = listener.addr.port;
    this.bind = opts.bind;
    this.#password = opts.password;
    this.#maxClients = opts.maxClients;
    this.#authTimeoutMs = opts.authTimeoutMs ?? DEFAULT_AUTH_TIMEOUT_MS;
    const maxPending = opts.maxPending ?? DEFAULT_MAX_PENDING;
    this.#waiting = new WaitingRoom(maxPending, MAX_PENDING_PER_ADDRESS);
    const maxChecking = opts.maxChecking ?? DEFAULT_MAX_CHECKING;
    this.#checks = new CheckQueue({
      throttle: new FailureThrottle(opts.failureDelay),
      budget: new FailureBudget(opts.failureBudget),
      maxWaiting: maxChecking,
      maxPerKey: MAX_PENDING_PER_ADDRESS,
    });
    this.#waitDrops = new DropLog(DROP_LOG_MS, (count, latest) =>
      log.warning(
        "Dropped {count} connection(s) waiting for authentication, latest from {client}: " +
          "newer connections needed the slots (at most {max}, {perAddress} per address)",
        { count, client: latest, max: maxPending, perAddress: MAX_PENDING_PER_ADDRESS },
      ));
    this.#checkDrops = new DropLog(DROP_LOG_MS, (count, latest) =>
      log.warning(
        "Dropped {count} connection(s) waiting for their password check, latest from " +
          "{client}: newer ones needed the slots (at most {max}, {perAddress} per address)",
        { count, client: latest, max: maxChecking, perAddress: MAX_PENDING_PER_ADDRESS },
      ));
    this.#group = `${this.tls ? "tls" : "tcp"}:${hostPort(opts.bind, this.port)}`;
    this.#acceptLoop = this.#accept();
  }

  /**
   * Binds `opts.bind`:`opts.port` (with TLS when `tlsCert` and `tlsKey` are given, their
   * PEM contents read and checked now) and starts accepting.
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
    let context: SecureContext | null = null;
    if (opts.tlsCert !== null && opts.tlsKey !== null) {
      context = tlsContext(
        opts.tlsCert,
        await readPem(opts.tlsCert, "certificate"),
        opts.tlsKey,
        await readPem(opts.tlsKey, "key"),
      );
    }
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: opts.bind, port: opts.port, transport: "tcp" });
    } catch (err) {
      throw bindError(err, `Cannot listen on TCP ${where}`, opts.bind);
    }
    const self = new TcpListener(hub, listener, context, opts);
    log.info("Listening on {proto} {address} (up to {max} clients)", {
      proto: context === null ? "TCP" : "TLS",
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

  /** Connections waiting for authentication (until their password line is complete). */
  get waiting(): number {
    return this.#waiting.size;
  }

  /** Password lines waiting for their check. */
  get checking(): number {
    return this.#checks.size;
  }

  /** How the hub and the logs name this listener: `tcp:ADDR:PORT` or `tls:ADDR:PORT`. */
  get group(): string {
    return this.#group;
  }

  /** Connections answered with the failure line since the listener opened, by cause. */
  get authFailures(): Readonly<AuthFailures> {
    return this.#authFailures;
  }

  /** Nothing to remove for TCP; present so a server can treat all listeners alike. */
  removeSocketFileNow(): void {}

  async #shutdown(): Promise<void> {
    this.#closing = true;
    closeQuietly(this.#listener);
    await this.#acceptLoop;
    for (const w of this.#waiting.values()) w.end("closing");
    this.#checks.close();
    await Promise.all(this.#tasks);
    this.#waitDrops.close();
    this.#checkDrops.close();
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
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
        await sleep(100);
        continue;
      }
      // Events go out in whole batches; waiting for more to coalesce only adds latency.
      conn.setNoDelay(true);
      conn.setKeepAlive(true);
      this.#admit(conn);
    }
  }

  /** Gives `tcp` a waiting slot (dropping an older waiter if need be) and its timer. */
  #admit(tcp: Deno.TcpConn): void {
    const addr = tcp.remoteAddr;
    let end: (why: EndReason) => void = () => {};
    const ended = new Promise<EndReason>((resolve) => end = resolve);
    const w: Waiter = {
      tcp,
      peer: hostPort(addr.hostname, addr.port),
      key: addressKey(addr.hostname),
      ended,
      end,
      timer: undefined,
    };
    for (const old of this.#waiting.add(w.key, w)) {
      old.end("dropped");
      this.#waitDrops.note(old.peer);
    }
    w.timer = setTimeout(() => w.end("timeout"), this.#authTimeoutMs);
    const task: Promise<void> = this.#authenticate(w)
      .catch((err) => {
        // Not expected (every I/O is caught); never let one client hurt the server.
        log.error("Handshake with {client} failed: {error}", {
          client: w.peer,
          error: describe(err),
        });
        closeQuietly(tcp);
      })
      .finally(() => {
        this.#leave(w);
        this.#tasks.delete(task);
      });
    this.#tasks.add(task);
  }

  /** Frees `w`'s waiting slot and stops its timer (idempotent). */
  #leave(w: Waiter): void {
    clearTimeout(w.timer);
    this.#waiting.delete(w.key, w);
  }

  /** Runs the handshake; on success the connection goes to the hub, otherwise it is closed. */
  async #authenticate(w: Waiter): Promise<void> {
    const context = this.#secureContext;
    const conn = context === null ? w.tcp : await this.#tlsHandshake(w, context);
    if (conn === null) return;
    // The client may send its password before the prompt arrives, so read and write at
    // once; the reply is written only after the prompt (one write at a time).
    const prompt = writeAllWithin(conn, PROMPT_BYTES, REPLY_MS);
    const line = new LineReader(conn, MAX_PASSWORD_LINE).readLine();
    const got = await Promise.race([line, w.ended]);
    // The line is complete (or the wait is over): the slot goes to the next connection.
    this.#leave(w);
    if (got === "dropped" || got === "closing") {
      closeQuietly(conn);
      await Promise.all([prompt, line]);
    } else if (got === "timeout") {
      // Not a guess, so no delay for the address: the peer only lost its own time.
      this.#authFailures.timeout++;
      log.warning("Authentication of {client} failed: {reason}", {
        client: w.peer,
        reason: `no password line within ${this.#authTimeoutMs} ms`,
      });
      await answerFailure(conn, prompt, line);
    } else if (got.kind === "eof" || got.kind === "error") {
      // Nobody to answer or to slow down.
      log.info("Client {client} disconnected before authenticating{detail}", {
        client: w.peer,
        detail: got.kind === "error" ? `: ${describe(got.error)}` : "",
      });
      closeQuietly(conn);
      await prompt;
    } else {
      await this.#checkAndAnswer(w, conn, prompt, got);
    }
  }

  /**
   * Runs the TLS handshake within the wait; the TLS connection, or null when it failed,
   * timed out or was dropped (then all is closed).
   */
  async #tlsHandshake(w: Waiter, context: SecureContext): Promise<Conn | null> {
    const tls = startServerTls(w.tcp, context);
    const shake = await Promise.race([tls.secured, w.ended]);
    if (shake === null) return tls.conn;
    if (shake === "timeout") {
      log.warning("TLS handshake with {client} timed out", { client: w.peer });
    } else if (shake instanceof Error) {
      log.warning("TLS handshake with {client} failed: {error}", {
        client: w.peer,
        error: describe(shake),
      });
    }
    tls.conn.close();
    // Closing the TLS socket closes the TCP connection too; this makes sure of it.
    closeQuietly(w.tcp);
    return null;
  }

  /** Queues the line for its check, then answers: success (to the hub) or failure. */
  async #checkAndAnswer(
    w: Waiter,
    conn: Conn,
    prompt: Promise<boolean>,
    got: Exclude<LineResult, { kind: "eof" | "error" }>,
  ): Promise<void> {
    const outcome = await this.#checks.check(w.key, () => this.#verify(got));
    if (outcome.kind === "dropped" || outcome.kind === "closed") {
      if (outcome.kind === "dropped") this.#checkDrops.note(w.peer);
      closeQuietly(conn);
      await prompt;
    } else if (outcome.kind === "failure") {
      this.#authFailures.password++;
      log.warning(
        "Authentication of {client} failed: {reason} (next check from {key} in {delay} ms)",
        { client: w.peer, reason: outcome.reason, key: w.key, delay: outcome.nextDelayMs },
      );
      await answerFailure(conn, prompt);
    } else if (!await prompt || !await writeAllWithin(conn, SUCCESS_BYTES, REPLY_MS)) {
      log.info("Client {client} authenticated but the connection failed", { client: w.peer });
    } else {
      log.info("Client {client} authenticated", { client: w.peer });
      this.#hub.addClient(conn, {
        description: w.peer,
        group: this.#group,
        maxClients: this.#maxClients,
      });
    }
  }

  /** Null when the line is the password, otherwise why it is not (never the line itself). */
  #verify(got: Exclude<LineResult, { kind: "eof" | "error" }>): string | null {
    if (got.kind === "too-long") return `password line longer than ${MAX_PASSWORD_LINE} bytes`;
    const line = got.bytes;
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

/**
 * Sends the failure line after the prompt, then closes without losing it (see
 * closeGracefully). `pendingRead` is the line read when it may still be in progress.
 */
async function answerFailure(
  conn: Conn,
  prompt: Promise<boolean>,
  pendingRead?: Promise<unknown>,
): Promise<void> {
  if (await prompt && await writeAllWithin(conn, FAILURE_BYTES, REPLY_MS)) {
    await closeGracefully(conn, LINGER_MS, pendingRead);
  } else {
    await pendingRead;
  }
}

/** A TLS context for the PEM `cert` and `key`, checked now so errors come at startup. */
function tlsContext(certFile: string, cert: string, keyFile: string, key: string): SecureContext {
  let matches: boolean;
  try {
    // node:tls checks neither until a handshake; node:crypto does, with clear errors.
    matches = new X509Certificate(cert).checkPrivateKey(createPrivateKey(key));
  } catch (err) {
    throw new StartupError(
      `Cannot use the TLS certificate ${certFile} and key ${keyFile}: ${describe(err)}`,
      { cause: err },
    );
  }
  if (!matches) {
    throw new StartupError(
      `Cannot use the TLS certificate ${certFile} and key ${keyFile}: the key does not belong to the certificate`,
    );
  }
  return createSecureContext({ cert, key });
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
