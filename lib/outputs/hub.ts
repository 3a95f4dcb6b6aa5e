/**
 * The hub: fans event lines out to every connected client (SPEC §5 "Slow clients", §6).
 *
 * The pipeline serialises each kernel batch once and calls {@link Hub.publish} with the
 * bytes; the hub appends the same `Uint8Array` to every client's queue (no copy, no
 * re-encoding) and each client's own writer sends its queue in order. `publish` never waits
 * and costs O(clients).
 *
 * ## Slow-client policy
 *
 * Every client has its own queue of event lines not yet sent, bounded in bytes (default
 * 4 MiB), and one writer that sends them in publish order. Publishing never waits for a
 * client, so a client that reads slowly or not at all never slows the monitor or the other
 * clients.
 *
 * - When a batch of events does not fit in a client's queue, the client starts losing
 *   events: from then on new events are not queued for it (only for it) and are counted.
 * - When the client has caught up so that its queue is down to half the limit, it first
 *   receives one line `{"event":"lost","time":"<now>","count":N,"where":"buffer"}` (N =
 *   the number of events it missed), then events resume. Nothing is reordered and nothing
 *   is dropped silently.
 * - A client whose queue stays full for more than 10 seconds (it has stopped reading), or
 *   that has missed more than 100,000 events in total since it connected, is disconnected.
 *   Reconnecting gives it a fresh queue.
 * - The server logs, with the client's description (Unix client number or TCP address and
 *   port), when a client connects, starts losing events, resumes (with the count), is
 *   disconnected, or is refused. Refusals come in floods (a loop of connects past the
 *   client limit), so they are logged summarised: the first at once, then at most one line
 *   a second per listener with the count and the latest client.
 * - A refused client is sent one line and closed. At most 64 refusals at once wait (up to
 *   1 s) for the client to take the line and close its end, which keeps a reset from
 *   destroying the line; past that the line is written once and the connection closed
 *   when that write returns (at most 64 such writes at once), and past that too the
 *   connection is closed at once without the line. So a flood of connects can neither
 *   pile up connections and pending writes nor flood the log.
 * - A client that closes its connection, or only its sending side, is treated as gone:
 *   clients of procMonitor only read.
 * - v1's Node client parses every chunk it reads as exactly one JSON object. So a client
 *   that has caught up (by default; the Unix listener opts out, see
 *   {@link ClientOptions.lineWrites}) gets each line of a new batch in a write of its own,
 *   at least 2 ms after the previous write so that the peer reads them apart, within a
 *   budget of 32 lines at once and 200 a second. Past the budget, or as soon as a whole
 *   batch waits behind such lines (load), its queue is gathered into writes of up to
 *   64 KiB again, so a storm costs about what it would without this.
 * - On shutdown each client gets up to 2 seconds to receive what is already queued for it.
 *   After that, the line being written is still finished (so no client sees a cut line) and
 *   the rest is not sent; only a client that takes no bytes for 2 seconds while that line is
 *   finished (it has stopped reading), or is still not done after 10 seconds, is cut off
 *   mid-line.
 *
 * @module
 */
import { DropLog } from "./admission.ts";
import { getLogger } from "../log.ts";
import { settlesWithin, sleep, type Timer } from "../timers.ts";
import {
  closeGracefully,
  closeQuietly,
  DISCARD,
  type HubConn,
  writeAllWithin,
} from "./connections.ts";

const log = getLogger("hub");

/** Default bound of one client's queue, in bytes. */
export const DEFAULT_QUEUE_LIMIT_BYTES = 4 * 1024 * 1024;
/** Default time a client's queue may stay full before the client is disconnected. */
export const DEFAULT_MAX_OVER_LIMIT_MS = 10_000;
/** Default number of missed events after which a client is disconnected. */
export const DEFAULT_MAX_LOST_LINES = 100_000;
/** Default time {@link Hub.close} lets clients receive what is queued for them. */
export const DEFAULT_CLOSE_GRACE_MS = 2000;

/**
 * After the grace period, a client still receiving gets its current line finished as long
 * as it keeps taking bytes: it is cut off only when it takes none for this long...
 */
const FINISH_STALL_MS = 2000;
/** ...or when finishing takes longer than this in all. */
const FINISH_MAX_MS = 10_000;
/** How often finishing clients are checked for progress. */
const FINISH_CHECK_MS = 250;
/** Small queued batches are gathered into one write of at most this many bytes. */
const GATHER_BYTES = 64 * 1024;
/** How long refusing a client (one short line) may take before its connection is cut. */
const REFUSE_MS = 1000;
/** Refusals in progress at most; past this a refused connection is closed at once. */
export const MAX_REFUSING = 64;
/** At most one log line per this interval about refused clients, per listener. */
const REFUSAL_LOG_MS = 1000;
/** Default budget of lines a client may get in writes of their own, at once... */
export const DEFAULT_LINE_WRITE_BURST = 32;
/** ...and a second, in the long run: what a storm may cost in extra writes per client. */
export const DEFAULT_LINE_WRITES_PER_S = 200;
/**
 * Default least time between a write of one line and the write before it, so that a peer
 * reading as fast as it is woken reads them apart (writes closer together arrive as one
 * chunk): Nagle is off, but nothing makes the peer read between two segments.
 */
export const DEFAULT_LINE_GAP_MS = 2;

const NEWLINE = 0x0a;
const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();

/** Tuning of a {@link Hub}; every field has a default. */
export interface HubOptions {
  /** Bound of one client's queue, in bytes (default 4 MiB). */
  queueLimitBytes?: number;
  /** A losing client resumes once its queue is down to this many bytes (default half the
   * limit), so it does not flip between losing and resuming on every batch. */
  resumeBelowBytes?: number;
  /** A client whose queue stays full this long is disconnected (default 10 s). */
  maxOverLimitMs?: number;
  /** A client that has missed more events than this in total is disconnected
   * (default 100,000). */
  maxLostLines?: number;
  /** The `time` of a `lost` line (default: the wall clock, to the millisecond). The server
   * passes the monitor's clock, which event times use too. */
  now?: () => string;
  /** With `--nats` or `--host-id`, the `host` every event carries: `lost` lines carry it too. */
  host?: string | null;
  /** Budget of lines sent in writes of their own (see {@link ClientOptions.lineWrites}):
   * at most `burst` at once ({@link DEFAULT_LINE_WRITE_BURST}) and `perSecond`
   * ({@link DEFAULT_LINE_WRITES_PER_S}) in the long run; `gapMs`
   * ({@link DEFAULT_LINE_GAP_MS}) is the least time between such a write and the one
   * before it. */
  lineWrites?: { burst?: number; perSecond?: number; gapMs?: number };
}

/** How a client joins the hub; see {@link Hub.addClient}. */
export interface ClientOptions {
  /** How the client appears in logs: `unix#3`, `192.0.2.7:51234`. */
  description: string;
  /** The listener it came through (e.g. `unix:/run/procMonitor.sock`); the client limit
   * counts per group. Default: one shared group `""`. */
  group?: string;
  /** Maximum clients of this group; over it the client is refused (default: no limit). */
  maxClients?: number;
  /**
   * Whether the client, while caught up, gets each line in a write of its own (default
   * true). v1's Node client parses every chunk it reads as one JSON object; it talks TCP,
   * so the Unix listener turns this off: Unix clients get one write per batch, which keeps
   * their latency and the cost per event as low as they can be.
   */
  lineWrites?: boolean;
}

/** Why the hub let a client go, as {@link ListenerStats.disconnects} counts it. */
export type DisconnectReason = "closed" | "slow" | "shutdown";

/**
 * A listener's counters since the hub started, for `/metrics`. Each client holds its
 * listener's object, so counting costs one increment and no lookup.
 */
export interface ListenerStats {
  /** Clients connected now. */
  clients: number;
  /** Events not queued for a client of this listener because its queue was full, summed
   * over its clients (one event missed by three clients counts three). */
  dropped: number;
  /** Clients that left: `closed` by the client or a failed connection, disconnected as
   * too `slow` (queue full too long, too many events missed), or closed at `shutdown`. */
  disconnects: Record<DisconnectReason, number>;
  /** Connections refused as over the client limit. */
  refused: number;
}

function newListenerStats(): ListenerStats {
  return { clients: 0, dropped: 0, disconnects: { closed: 0, slow: 0, shutdown: 0 }, refused: 0 };
}

/** The budget of single-line writes; see {@link HubOptions.lineWrites}. */
interface LineBudget {
  burst: number;
  perMs: number;
  gapMs: number;
}

class Client {
  /** Chunks not yet taken by the writer, from `head` on. */
  queue: Uint8Array[] = [];
  head = 0;
  /** How many chunks from `head` on are single lines, each for a write of its own. Only
   * single lines precede them in the queue; a whole batch queued after them ends that. */
  solo = 0;
  /** Lines this client may still get in writes of their own; refilled over time. */
  lineTokens: number;
  /** When `lineTokens` was last refilled (performance.now()). */
  lineTokensAt = performance.now();
  /** Bytes queued and not yet written, including the write in progress. */
  queuedBytes = 0;
  /** Losing events: new chunks are counted instead of queued. */
  dropping = false;
  /** Lines missed since the last `lost` line. */
  lost = 0;
  /** Lines missed since the client connected. */
  lostTotal = 0;
  overTimer: Timer | undefined = undefined;
  /** Resolves the writer's wait for new chunks, when it waits. */
  wake: (() => void) | null = null;
  closed = false;
  /** The hub is closing: send what is queued, then close. */
  draining = false;
  /** Past the grace period: finish the line being written, then stop. */
  stopAtBoundary = false;
  /** When the connection last accepted bytes (performance.now()). */
  progressAt = performance.now();
  scratch: Uint8Array | null = null;
  done: Promise<void> = Promise.resolve();

  constructor(
    readonly conn: HubConn,
    readonly description: string,
    readonly group: string,
    /** The line-write budget, or null when the client gets one write per batch. */
    readonly lines: LineBudget | null,
    /** Its listener's counters. */
    readonly counters: ListenerStats,
  ) {
    this.lineTokens = lines?.burst ?? 0;
  }

  /** Whether the queue holds single lines only (or nothing). */
  get onlySolo(): boolean {
    return this.queue.length - this.head === this.solo;
  }
}

/** One published chunk; its lines are counted and split once, for the clients that need it. */
class Batch {
  #count = -1;
  #lines: Uint8Array[] | null = null;

  constructor(readonly bytes: Uint8Array) {}

  /** Number of lines. */
  get count(): number {
    if (this.#count < 0) this.#count = countLines(this.bytes);
    return this.#count;
  }

  /** The lines, each a view of the chunk (no copy). */
  get lines(): Uint8Array[] {
    return this.#lines ??= splitLines(this.bytes);
  }
}

/**
 * Fans complete event lines out to clients, each with a bounded queue and its own writer;
 * see the module documentation for the slow-client policy.
 */
export class Hub {
  readonly #limit: number;
  readonly #resumeBytes: number;
  readonly #maxOverLimitMs: number;
  readonly #maxLostLines: number;
  readonly #lineBudget: LineBudget;
  readonly #clients = new Set<Client>();
  readonly #groupCounts = new Map<string, number>();
  readonly #refusals = new Set<Promise<void>>();
  /** Refusals sending their line without waiting for the client (see #refuse). */
  #quickRefusals = 0;
  /** Per group, its counters for `/metrics`; kept after its last client leaves. */
  readonly #listenerStats = new Map<string, ListenerStats>();
  /** Per group, the summarised log of its refusals. */
  readonly #refusalLogs = new Map<string, RefusalLog>();
  #closing = false;
  #closed: Promise<void> | null = null;

  /** Creates a hub with no clients. */
  readonly #now: () => string;
  /** `,"host":"…"` for `lost` lines, or "". */
  readonly #hostKey: string;

  constructor(opts: HubOptions = {}) {
    this.#limit = opts.queueLimitBytes ?? DEFAULT_QUEUE_LIMIT_BYTES;
    this.#resumeBytes = opts.resumeBelowBytes ?? Math.floor(this.#limit / 2);
    this.#maxOverLimitMs = opts.maxOverLimitMs ?? DEFAULT_MAX_OVER_LIMIT_MS;
    this.#maxLostLines = opts.maxLostLines ?? DEFAULT_MAX_LOST_LINES;
    this.#now = opts.now ?? rfc3339MicrosNow;
    this.#hostKey = opts.host == null ? "" : `,"host":${JSON.stringify(opts.host)}`;
    this.#lineBudget = {
      burst: opts.lineWrites?.burst ?? DEFAULT_LINE_WRITE_BURST,
      perMs: (opts.lineWrites?.perSecond ?? DEFAULT_LINE_WRITES_PER_S) / 1000,
      gapMs: opts.lineWrites?.gapMs ?? DEFAULT_LINE_GAP_MS,
    };
  }

  /** Number of clients currently receiving events (refused ones never count). */
  get clientCount(): number {
    return this.#clients.size;
  }

  /**
   * The counters of the listener `group` (see {@link ClientOptions.group}), all zero for a
   * group that has had no clients yet. The object is live: read it, do not keep it.
   */
  listenerStats(group: string): Readonly<ListenerStats> {
    return this.#listenerStats.get(group) ?? newListenerStats();
  }

  /** The counters of `group`, created on first use. */
  #countersOf(group: string): ListenerStats {
    let stats = this.#listenerStats.get(group);
    if (stats === undefined) {
      stats = newListenerStats();
      this.#listenerStats.set(group, stats);
    }
    return stats;
  }

  /**
   * Whether every client takes its batches with a send that never waits ({@link
   * HubConn.trySend}, one write per batch) and has sent all it was given, and no refusal
   * is being written: then nothing of the hub's waits on the event loop.
   */
  get allSent(): boolean {
    if (this.#refusals.size > 0) return false;
    for (const c of this.#clients) {
      if (c.wake === null || c.lines !== null || c.conn.trySend === undefined) return false;
    }
    return true;
  }

  /** Bytes queued for the client with the most (0 without clients). */
  get largestQueueBytes(): number {
    let most = 0;
    for (const c of this.#clients) most = Math.max(most, c.queuedBytes);
    return most;
  }

  /**
   * Queues `chunk` (one or more complete lines, each ending in `\n`) for every client.
   * Never waits; the same bytes are shared by all clients, so `chunk` must not be modified
   * afterwards. Ignored once {@link close} has begun.
   */
  publish(chunk: Uint8Array): void {
    if (this.#closing || chunk.length === 0) return;
    const batch = new Batch(chunk);
    // One clock read for the batch, not one per client it is sent to.
    const now = performance.now();
    for (const c of this.#clients) {
      if (!c.dropping) {
        // An empty queue takes any chunk, even one over the limit, so a huge batch is
        // delayed rather than lost.
        if (c.queuedBytes === 0 || c.queuedBytes + chunk.length <= this.#limit) {
          this.#enqueue(c, batch, now);
          continue;
        }
        this.#startDropping(c);
      }
      c.lost += batch.count;
      c.lostTotal += batch.count;
      c.counters.dropped += batch.count;
      if (c.lostTotal > this.#maxLostLines) {
        this.#kick(c, "slow", `it missed more than ${this.#maxLostLines} events`);
      }
    }
  }

  /**
   * Queues `batch` for `c` line by line when `c` takes single lines, has nothing but
   * single lines queued and the budget allows; otherwise whole. Wakes the writer. `now` is
   * performance.now() of the publish.
   */
  #enqueue(c: Client, batch: Batch, now: number): void {
    if (c.lines !== null && c.onlySolo && spendLineTokens(c, c.lines, batch.count)) {
      for (const line of batch.lines) c.queue.push(line);
      c.solo += batch.lines.length;
    } else {
      c.queue.push(batch.bytes);
    }
    c.queuedBytes += batch.bytes.length;
    if (c.wake === null) return;
    // The writer waits, so this batch alone is queued: a connection that can send at once
    // takes it here, which spares the writer's wakeup and its awaits, per client and batch.
    if (c.lines === null && c.conn.trySend !== undefined && this.#sendNow(c, now)) return;
    wakeWriter(c);
  }

  /**
   * Sends `c`'s one queued chunk without waiting. True when all of it went; otherwise what
   * is left stays queued for the writer (a full socket, or an error it will meet again).
   */
  #sendNow(c: Client, now: number): boolean {
    const chunk = c.queue[c.head];
    let sent: number | null;
    try {
      sent = c.conn.trySend!(chunk);
    } catch {
      // The writer's own write meets the error (or what follows it: EPIPE after a reset)
      // and lets the client go as usual.
      return false;
    }
    if (sent === null) return false;
    c.progressAt = now;
    c.queuedBytes -= sent;
    if (sent < chunk.length) {
      c.queue[c.head] = chunk.subarray(sent);
      return false;
    }
    c.queue.length = 0;
    c.head = 0;
    return true;
  }

  /**
   * Adds a connection as a client of `opts.group`. Returns false when it was refused: over
   * `opts.maxClients` it is sent `{"error":"too many clients","limit":N}` and closed (and
   * that is logged); once the hub is closing it is closed at once. Either way the hub owns
   * the connection from now on.
   */
  addClient(conn: HubConn, opts: ClientOptions): boolean {
    const group = opts.group ?? "";
    if (this.#closing) {
      closeQuietly(conn);
      return false;
    }
    const count = this.#groupCounts.get(group) ?? 0;
    const max = opts.maxClients ?? Infinity;
    if (count >= max) {
      this.#refuse(conn, opts.description, group, max);
      return false;
    }
    const lines = opts.lineWrites ?? true ? this.#lineBudget : null;
    const c = new Client(conn, opts.description, group, lines, this.#countersOf(group));
    c.counters.clients++;
    this.#clients.add(c);
    this.#groupCounts.set(group, count + 1);
    log.info("Client {client} connected to {listener} ({count} of {limit})", {
      client: c.description,
      listener: group,
      count: count + 1,
      limit: max,
    });
    const writer = this.#writeLoop(c);
    const reader = this.#readLoop(c);
    c.done = Promise.all([writer, reader]).then(() => {});
    return true;
  }

  /**
   * Stops taking clients and events, lets every client receive what is already queued for
   * it (up to `graceMs`; a write in progress then gets a little longer to finish its batch
   * so no line is cut), then closes all connections. Idempotent.
   */
  close(graceMs: number = DEFAULT_CLOSE_GRACE_MS): Promise<void> {
    return this.#closed ??= this.#shutdown(graceMs);
  }

  /** Same as {@link close} with the default grace period. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #shutdown(graceMs: number): Promise<void> {
    this.#closing = true;
    const clients = [...this.#clients];
    for (const c of clients) {
      c.draining = true;
      wakeWriter(c);
    }
    const all = Promise.all(clients.map((c) => c.done));
    if (!await settlesWithin(all, graceMs)) {
      // Writers still busy: each finishes the line it is writing and stops...
      for (const c of clients) c.stopAtBoundary = true;
      const started = performance.now();
      while (!await settlesWithin(all, FINISH_CHECK_MS)) {
        // ...unless the client has stopped reading: then nothing can save that line.
        const now = performance.now();
        for (const c of clients) {
          if (c.closed) continue;
          if (now - c.progressAt > FINISH_STALL_MS || now - started > FINISH_MAX_MS) {
            this.#kick(c, "shutdown", "it did not read what was queued before shutdown");
          }
        }
      }
    }
    await all;
    await Promise.all(this.#refusals);
    for (const refusals of this.#refusalLogs.values()) refusals.close();
  }

  /** The one writer of a client: sends queued chunks in order, a whole chunk at a time. */
  async #writeLoop(c: Client): Promise<void> {
    try {
      for (;;) {
        if (c.closed) return;
        if (c.head === c.queue.length) {
          if (c.draining) break;
          await new Promise<void>((resolve) => c.wake = resolve);
          c.wake = null;
          continue;
        }
        if (c.stopAtBoundary) break;
        if (await pace(c)) continue;
        const block = this.#take(c);
        let off = 0;
        let end = block.length;
        // conn.write may write only part of the block; never start a second write meanwhile.
        while (off < end) {
          off += await c.conn.write(
            off === 0 && end === block.length ? block : block.subarray(off, end),
          );
          c.progressAt = performance.now();
          if (c.stopAtBoundary && end === block.length) {
            // Shutting down past the grace period: only the line in flight is finished.
            const next = off === 0 ? -1 : block.indexOf(NEWLINE, off - 1);
            end = off === 0 ? 0 : next < 0 ? block.length : next + 1;
          }
        }
        c.queuedBytes -= block.length;
        if (c.dropping && c.queuedBytes <= this.#resumeBytes) this.#resume(c);
      }
    } catch (err) {
      if (!c.closed) this.#gone(c, reason(err));
      return;
    }
    // Closing: everything queued has been sent (or the grace period is over).
    if (!c.closed) {
      if (c.queuedBytes > 0) {
        log.warning("Client {client} closed at shutdown with {bytes} bytes not sent", {
          client: c.description,
          bytes: c.queuedBytes,
        });
      } else {
        log.info("Client {client} closed at shutdown", { client: c.description });
      }
      this.#close(c, "shutdown");
    }
  }

  /** Reads and discards whatever the client sends, to notice when it goes away. */
  async #readLoop(c: Client): Promise<void> {
    const conn = c.conn;
    if (conn.read === undefined) return;
    try {
      while (!c.closed) {
        if (await conn.read(DISCARD) === null) {
          if (!c.closed) this.#gone(c, "closed by the client");
          return;
        }
      }
    } catch (err) {
      if (!c.closed) this.#gone(c, reason(err));
    }
  }

  /** Takes the next block to write: one chunk, or several small ones gathered. */
  #take(c: Client): Uint8Array {
    const q = c.queue;
    const first = q[c.head];
    // A whole batch behind single lines means load: gather them all from now on.
    if (!c.onlySolo) c.solo = 0;
    let block: Uint8Array;
    if (c.solo > 0 || c.head + 1 === q.length || first.length >= GATHER_BYTES / 2) {
      if (c.solo > 0) c.solo--;
      q[c.head++] = EMPTY;
      block = first;
    } else {
      // Under load many small batches queue up; one write for them saves syscalls. The
      // scratch buffer is reused only after the previous write has completed.
      const scratch = c.scratch ??= new Uint8Array(GATHER_BYTES);
      let n = 0;
      while (c.head < q.length && n + q[c.head].length <= GATHER_BYTES) {
        scratch.set(q[c.head], n);
        n += q[c.head].length;
        q[c.head++] = EMPTY;
      }
      block = scratch.subarray(0, n);
    }
    if (c.head === q.length) {
      q.length = 0;
      c.head = 0;
    } else if (c.head >= 1024 && c.head * 2 >= q.length) {
      c.queue = q.slice(c.head);
      c.head = 0;
    }
    return block;
  }

  #startDropping(c: Client): void {
    c.dropping = true;
    log.warning("Client {client} is not keeping up: its queue is full, losing events", {
      client: c.description,
    });
    c.overTimer = setTimeout(() => {
      c.overTimer = undefined;
      this.#kick(c, "slow", `its queue stayed full for more than ${this.#maxOverLimitMs} ms`);
    }, this.#maxOverLimitMs);
  }

  #resume(c: Client): void {
    clearTimeout(c.overTimer);
    c.overTimer = undefined;
    c.dropping = false;
    log.warning("Client {client} caught up after losing {count} events", {
      client: c.description,
      count: c.lost,
    });
    const line = encoder.encode(
      `{"event":"lost","time":"${this.#now()}","count":${c.lost},"where":"buffer"${this.#hostKey}}\n`,
    );
    c.lost = 0;
    // Behind what was queued before the loss and ahead of what comes after it; not
    // subject to the limit, which would otherwise lose the loss report itself.
    c.queue.push(line);
    c.queuedBytes += line.length;
  }

  /** The client went away (EOF, reset, write error). */
  #gone(c: Client, why: string): void {
    log.info("Client {client} disconnected: {reason}", { client: c.description, reason: why });
    this.#close(c, "closed");
  }

  /** The hub disconnects the client. */
  #kick(c: Client, kind: DisconnectReason, why: string): void {
    if (c.closed) return;
    log.warning("Disconnecting client {client}: {reason}", { client: c.description, reason: why });
    this.#close(c, kind);
  }

  #close(c: Client, kind: DisconnectReason): void {
    if (c.closed) return;
    c.closed = true;
    c.counters.clients--;
    c.counters.disconnects[kind]++;
    clearTimeout(c.overTimer);
    c.overTimer = undefined;
    this.#clients.delete(c);
    const n = (this.#groupCounts.get(c.group) ?? 1) - 1;
    if (n > 0) this.#groupCounts.set(c.group, n);
    else this.#groupCounts.delete(c.group);
    c.queue = [];
    c.head = 0;
    c.solo = 0;
    // Closing cancels a write or read in progress; the loops then see `closed` and end.
    closeQuietly(c.conn);
    wakeWriter(c);
  }

  #refuse(conn: HubConn, description: string, group: string, limit: number): void {
    let refusals = this.#refusalLogs.get(group);
    if (refusals === undefined) {
      refusals = new RefusalLog(group);
      this.#refusalLogs.set(group, refusals);
    }
    // A flood must not hold a connection, a timer and a pending write per connect attempt.
    const polite = this.#refusals.size < MAX_REFUSING;
    const quick = !polite && this.#quickRefusals < MAX_REFUSING;
    refusals.note(description, limit, !polite && !quick);
    this.#countersOf(group).refused++;
    if (!polite && !quick) {
      closeQuietly(conn);
      return;
    }
    const line = encoder.encode(`{"error":"too many clients","limit":${limit}}\n`);
    if (quick) {
      // A fresh connection takes a short line at once; close right after, without waiting
      // for the client to read it and close.
      this.#quickRefusals++;
      conn.write(line).catch(() => 0).finally(() => {
        this.#quickRefusals--;
        closeQuietly(conn);
      });
      return;
    }
    const task = (async () => {
      if (await writeAllWithin(conn, line, REFUSE_MS)) await closeGracefully(conn, REFUSE_MS);
    })();
    this.#refusals.add(task);
    task.finally(() => this.#refusals.delete(task));
  }
}

/** The refusals of one listener, logged summarised (see the module documentation). */
class RefusalLog {
  readonly #drops: DropLog;
  /** Of the refusals not logged yet, how many were closed without the error line. */
  #unsent = 0;
  #limit = 0;

  constructor(readonly listener: string) {
    this.#drops = new DropLog(REFUSAL_LOG_MS, (count, latest) => this.#emit(count, latest));
  }

  /** Counts one refused client; `unsent`: it was closed without the error line. */
  note(client: string, limit: number, unsent: boolean): void {
    this.#limit = limit;
    if (unsent) this.#unsent++;
    this.#drops.note(client);
  }

  /** Logs what is not logged yet and stops the timer. */
  close(): void {
    this.#drops.close();
  }

  #emit(count: number, latest: string): void {
    const unsent = this.#unsent;
    this.#unsent = 0;
    const props = { count, client: latest, listener: this.listener, limit: this.#limit, unsent };
    if (count === 1 && unsent === 0) {
      log.warning("Refused client {client} on {listener}: too many clients (limit {limit})", props);
    } else if (unsent === 0) {
      log.warning(
        "Refused {count} clients on {listener}, the latest {client}: too many clients " +
          "(limit {limit})",
        props,
      );
    } else {
      log.warning(
        "Refused {count} clients on {listener}, the latest {client}: too many clients " +
          "(limit {limit}); {unsent} of them were closed without the error line, as too " +
          "many refusals were in progress",
        props,
      );
    }
  }
}

/** Number of lines (`\n` bytes) in `chunk`. */
function countLines(chunk: Uint8Array): number {
  let n = 0;
  for (let i = chunk.indexOf(NEWLINE); i !== -1; i = chunk.indexOf(NEWLINE, i + 1)) n++;
  return n;
}

/** The lines of `chunk`, each a view of it (no copy). */
function splitLines(chunk: Uint8Array): Uint8Array[] {
  const lines: Uint8Array[] = [];
  let start = 0;
  for (let i = chunk.indexOf(NEWLINE); i !== -1; i = chunk.indexOf(NEWLINE, i + 1)) {
    lines.push(chunk.subarray(start, i + 1));
    start = i + 1;
  }
  if (start < chunk.length) lines.push(chunk.subarray(start));
  return lines;
}

/** Takes `n` lines from `c`'s budget, refilled first; false (nothing taken) when short. */
function spendLineTokens(c: Client, budget: LineBudget, n: number): boolean {
  const now = performance.now();
  c.lineTokens = Math.min(budget.burst, c.lineTokens + (now - c.lineTokensAt) * budget.perMs);
  c.lineTokensAt = now;
  if (c.lineTokens < n) return false;
  c.lineTokens -= n;
  return true;
}

/** Resumes `c`'s writer if it waits; `c.wake` is non-null exactly while it does. */
function wakeWriter(c: Client): void {
  const wake = c.wake;
  c.wake = null;
  wake?.();
}

/**
 * Before a single line goes out: waits until the previous write ended at least the gap
 * ago. Returns true when it waited (the queue may have changed meanwhile).
 */
async function pace(c: Client): Promise<boolean> {
  if (c.lines === null || c.solo === 0 || !c.onlySolo) return false;
  const wait = c.progressAt + c.lines.gapMs - performance.now();
  if (wait <= 0) return false;
  await sleep(Math.ceil(wait));
  return true;
}

/** Now as RFC 3339 UTC with microseconds, the format of the events' `time`. */
export function rfc3339MicrosNow(): string {
  // Date has milliseconds only: the microsecond digits are zeros, not invented.
  return `${new Date().toISOString().slice(0, 23)}000Z`;
}

/** A short, log-friendly reason for an I/O error. */
function reason(err: unknown): string {
  if (err instanceof Deno.errors.BrokenPipe || err instanceof Deno.errors.ConnectionReset) {
    return "connection reset by the client";
  }
  return err instanceof Error ? err.message : String(err);
}
