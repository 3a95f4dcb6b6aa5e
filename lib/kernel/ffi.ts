/**
 * The FFI boundary: the only user of `Deno.dlopen` in procMonitor.
 *
 * libprocconn.so (native/) owns the netlink socket and a reader thread; this file loads it,
 * types its symbols and wraps the handle in {@link ProcConnector}. The library is found at
 * `$PROCMONITOR_LIB`, else next to the sources (native/libprocconn.so), else, inside a
 * binary made by `deno compile --include`, copied out of the embedded file system first
 * (dlopen needs a real file).
 *
 * @module
 */

import { constants } from "node:os";
import { fileURLToPath } from "node:url";
import { RecordLayout } from "./record.ts";
import { sleep, type Timer } from "../timers.ts";

/** The C library version this file was written against (PC_VERSION). */
export const NATIVE_VERSION = "1.14.0";

const symbols = {
  /** const char *pc_version(void) */
  pc_version: { parameters: [], result: "pointer" },
  /** uint64_t pc_now_ns(void): CLOCK_MONOTONIC, the clock of record timestamps */
  pc_now_ns: { parameters: [], result: "u64" },
  /** int pc_ignore_signal(int32_t signo): SIG_IGN for the whole process */
  pc_ignore_signal: { parameters: ["i32" /* int32_t signo */], result: "i32" },
  /** uint64_t pc_realtime_ns(void): CLOCK_REALTIME, wall time */
  pc_realtime_ns: { parameters: [], result: "u64" },
  /** int pc_release_pages(uint64_t start, uint64_t len): MADV_PAGEOUT, then MADV_DONTNEED */
  pc_release_pages: {
    parameters: [
      "u64", // uint64_t start
      "u64", // uint64_t len
    ],
    result: "i32",
  },
  /** int pc_open(const struct pc_options *opts, pc_handle **out); waits for the kernel's ack */
  pc_open: {
    parameters: [
      "buffer", // const struct pc_options *opts
      "buffer", // pc_handle **out
    ],
    result: "i32",
    nonblocking: true,
  },
  /** int pc_bell_name(pc_handle *h, char *buf, uint32_t cap): the doorbell's abstract name */
  pc_bell_name: {
    parameters: [
      "pointer", // pc_handle *h
      "buffer", // char *buf
      "u32", // uint32_t cap
    ],
    result: "i32",
  },
  /** int pc_bell_accept(pc_handle *h): takes this process's connection to the doorbell */
  pc_bell_accept: { parameters: ["pointer" /* pc_handle *h */], result: "i32" },
  /** int pc_running(pc_handle *h): 1 while the reader thread runs */
  pc_running: { parameters: ["pointer" /* pc_handle *h */], result: "i32" },
  /** int pc_arm(pc_handle *h): 1 = records (or the end) already there, 0 = wait for the bell */
  pc_arm: { parameters: ["pointer" /* pc_handle *h */], result: "i32" },
  /** int pc_wait(pc_handle *h, int32_t timeout_ms): PC_WAIT_* bits; blocks this thread */
  pc_wait: {
    parameters: [
      "pointer", // pc_handle *h
      "i32", // int32_t timeout_ms
    ],
    result: "i32",
  },
  /** int pc_take(pc_handle *h, uint8_t *buf, uint32_t cap); never waits */
  pc_take: {
    parameters: [
      "pointer", // pc_handle *h
      "buffer", // uint8_t *buf
      "u32", // uint32_t cap
    ],
    result: "i32",
  },
  /** int pc_stats(pc_handle *h, struct pc_stats *out) */
  pc_stats: {
    parameters: [
      "pointer", // pc_handle *h
      "buffer", // struct pc_stats *out
    ],
    result: "i32",
  },
  /** int pc_error(pc_handle *h) */
  pc_error: { parameters: ["pointer" /* pc_handle *h */], result: "i32" },
  /** int pc_stop(pc_handle *h) */
  pc_stop: { parameters: ["pointer" /* pc_handle *h */], result: "i32" },
  /** int pc_exec_bpf(pc_handle *h): exec snapshots from a BPF program; slow (loads libbpf) */
  pc_exec_bpf: { parameters: ["pointer" /* pc_handle *h */], result: "i32", nonblocking: true },
  /** int pc_close(pc_handle *h); joins the reader (2 s at most); 1 = a stuck one left behind */
  pc_close: { parameters: ["pointer" /* pc_handle *h */], result: "i32", nonblocking: true },
  /** int pc_cl_open(const char *path, int32_t backlog, uint32_t cap, pc_clients **out) */
  pc_cl_open: {
    parameters: [
      "buffer", // const char *path (NUL-terminated)
      "i32", // int32_t backlog
      "u32", // uint32_t cap
      "buffer", // pc_clients **out
    ],
    result: "i32",
  },
  /** int pc_cl_bell_name(pc_clients *c, char *buf, uint32_t cap) */
  pc_cl_bell_name: {
    parameters: [
      "pointer", // pc_clients *c
      "buffer", // char *buf
      "u32", // uint32_t cap
    ],
    result: "i32",
  },
  /** int pc_cl_bell_accept(pc_clients *c) */
  pc_cl_bell_accept: { parameters: ["pointer" /* pc_clients *c */], result: "i32" },
  /** int pc_cl_ready(pc_clients *c, uint32_t *out, uint32_t cap): (id, PC_CL_*) pairs */
  pc_cl_ready: {
    parameters: [
      "pointer", // pc_clients *c
      "buffer", // uint32_t *out
      "u32", // uint32_t cap (u32s)
    ],
    result: "i32",
  },
  /** int pc_cl_send(pc_clients *c, uint32_t id, const uint8_t *buf, uint32_t len); never waits */
  pc_cl_send: {
    parameters: [
      "pointer", // pc_clients *c
      "u32", // uint32_t id
      "buffer", // const uint8_t *buf
      "u32", // uint32_t len
    ],
    result: "i32",
  },
  /** int pc_cl_shutdown_write(pc_clients *c, uint32_t id) */
  pc_cl_shutdown_write: {
    parameters: [
      "pointer", // pc_clients *c
      "u32", // uint32_t id
    ],
    result: "i32",
  },
  /** int pc_cl_close(pc_clients *c, uint32_t id) */
  pc_cl_close: {
    parameters: [
      "pointer", // pc_clients *c
      "u32", // uint32_t id
    ],
    result: "i32",
  },
  /** int pc_cl_stop_listen(pc_clients *c): closes the listening socket; clients stay */
  pc_cl_stop_listen: { parameters: ["pointer" /* pc_clients *c */], result: "i32" },
  /** int pc_cl_free(pc_clients *c); joins the clients' thread */
  pc_cl_free: { parameters: ["pointer" /* pc_clients *c */], result: "i32", nonblocking: true },
} as const satisfies Deno.ForeignLibraryInterface;

type Native = Deno.DynamicLibrary<typeof symbols>;

/** errno names for the codes libprocconn returns; others print as numbers. */
const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  22: "EINVAL",
  24: "EMFILE",
  32: "EPIPE",
  93: "EPROTONOSUPPORT",
  97: "EAFNOSUPPORT",
  105: "ENOBUFS",
  110: "ETIMEDOUT",
  7: "E2BIG",
  5: "EIO",
  98: "EADDRINUSE",
  104: "ECONNRESET",
  36: "ENAMETOOLONG",
  23: "ENFILE",
  38: "ENOSYS",
  79: "ELIBACC",
  95: "EOPNOTSUPP",
  114: "EALREADY",
};

/** The name of a positive errno ("EPERM"), or "errno N" for one not in the table. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

/** A negative return from libprocconn, with its errno. */
export class NativeError extends Error {
  /** The positive errno. */
  readonly errno: number;
  /** The errno's name, e.g. "EPERM". */
  readonly code: string;

  /** Creates the error for `call` failing with `-errno`. */
  constructor(call: string, errno: number) {
    const code = errnoName(errno);
    super(`${call} failed: ${code}`);
    this.name = "NativeError";
    this.errno = errno;
    this.code = code;
  }
}

/** Every C return goes through here: negative values are `-errno`. */
function unwrap(call: string, result: number): number {
  if (result < 0) throw new NativeError(call, -result);
  return result;
}

/**
 * Connects this process to the library's doorbell (an abstract Unix socket) and has the
 * library take that connection; records are announced on it from then on.
 */
async function ringDoorbell(native: Native, handle: Deno.PointerObject): Promise<Deno.UnixConn> {
  const name = new Uint8Array(64);
  const length = unwrap("pc_bell_name", native.symbols.pc_bell_name(handle, name, name.length));
  const path = "\0" + new TextDecoder().decode(name.subarray(0, length));
  const bell = await Deno.connect({ transport: "unix", path });
  try {
    unwrap("pc_bell_accept", native.symbols.pc_bell_accept(handle));
  } catch (error) {
    bell.close();
    throw error;
  }
  return bell;
}

/**
 * Runs a library call that writes a new handle to its last argument and returns the handle;
 * on any failure the library is closed again (nothing else uses this `native` yet).
 */
async function openHandle(
  native: Native,
  call: string,
  open: (out: BigUint64Array) => number | Promise<number>,
): Promise<Deno.PointerObject> {
  const out = new BigUint64Array(1);
  try {
    unwrap(call, await open(out));
  } catch (error) {
    native.close();
    throw error;
  }
  return handleIn(native, call, out);
}

/** {@link openHandle} for a call that does not wait. */
function openHandleSync(
  native: Native,
  call: string,
  open: (out: BigUint64Array) => number,
): Deno.PointerObject {
  const out = new BigUint64Array(1);
  try {
    unwrap(call, open(out));
  } catch (error) {
    native.close();
    throw error;
  }
  return handleIn(native, call, out);
}

/** The handle a call wrote to `out`; a null one closes the library and throws. */
function handleIn(native: Native, call: string, out: BigUint64Array): Deno.PointerObject {
  const handle = Deno.UnsafePointer.create(out[0]);
  if (handle === null) {
    native.close();
    throw new Error(`${call} returned a null handle`);
  }
  return handle;
}

/**
 * Makes the kernel drop `signal` for this whole process from now on. For SIGUSR1: Deno
 * (2.9.2 and later) starts an unauthenticated V8 inspector on 127.0.0.1:9229 when the
 * process gets it, which would give any local user code execution as root, and has no
 * option to turn that off. Deno installs one process-wide handler per signal, when its
 * first listener is added (its own SIGUSR1 listener comes 500 ms after start), and never
 * again: so a listener is added here first, then the disposition set to SIG_IGN stays.
 */
export function ignoreSignal(signal: "SIGUSR1"): void {
  Deno.addSignalListener(signal, () => {});
  const native = loadLibrary();
  try {
    unwrap("pc_ignore_signal", native.symbols.pc_ignore_signal(constants.signals[signal]));
  } finally {
    native.close();
  }
}

/** A page-aligned range of this process's address space. */
export interface PageRange {
  /** The first byte's address. */
  readonly start: bigint;
  /** Its length in bytes. */
  readonly length: bigint;
}

/**
 * Gives the resident pages of `ranges` back to the kernel (`pc_release_pages`): it frees
 * those no other process maps and unmaps the rest from this one. Only for read-only file
 * mappings without private pages, whose contents come back from the file when used again.
 *
 * @returns how many ranges the kernel refused (one unmapped since it was listed: ENOMEM)
 */
export function releasePages(ranges: readonly PageRange[]): number {
  const native = loadLibrary();
  let refused = 0;
  try {
    for (const range of ranges) {
      try {
        unwrap("pc_release_pages", native.symbols.pc_release_pages(range.start, range.length));
      } catch (error) {
        if (!(error instanceof NativeError)) throw error;
        refused++;
      }
    }
  } finally {
    native.close();
  }
  return refused;
}

/** The file name of the native library as loaded (libprocconn.so unless overridden). */
export function nativeLibraryName(): string {
  return libraryPath().split("/").pop() ?? "";
}

/** Where to load libprocconn.so from. */
function libraryPath(): string {
  const override = Deno.env.get("PROCMONITOR_LIB");
  if (override) return override;
  // Not the URL's pathname, which is percent-encoded (a space in the path is %20).
  return fileURLToPath(new URL("../../native/libprocconn.so", import.meta.url));
}

/**
 * Opens the library. A binary made by `deno compile` embeds the .so in a virtual file
 * system that dlopen cannot see, so on failure the file is copied to a private temporary
 * file, loaded from there and removed (the mapping stays valid).
 */
function openLibrary(path: string): Native {
  let native: Native;
  try {
    native = Deno.dlopen(path, symbols);
  } catch (first) {
    let bytes: Uint8Array;
    try {
      bytes = Deno.readFileSync(path);
    } catch {
      throw new Error(
        `Cannot load the native library ${path}; build it with "make" or set PROCMONITOR_LIB`,
        { cause: first },
      );
    }
    const dir = Deno.makeTempDirSync({ prefix: "procmonitor-" });
    const copy = `${dir}/libprocconn.so`;
    try {
      Deno.writeFileSync(copy, bytes, { mode: 0o500 });
      native = Deno.dlopen(copy, symbols);
    } catch (second) {
      throw new Error(`Cannot load the native library embedded as ${path}`, { cause: second });
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  }
  return native;
}

/** The library's `pc_version()` string ("" when it returns NULL). */
function versionOf(native: Native): string {
  const ptr = native.symbols.pc_version();
  return ptr === null ? "" : new Deno.UnsafePointerView(ptr).getCString();
}

/** Opens the library and checks that it is the version this code was written for. */
function loadLibrary(): Native {
  const path = libraryPath();
  const native = openLibrary(path);
  const version = versionOf(native);
  if (version !== NATIVE_VERSION) {
    native.close();
    throw new Error(
      `The native library ${path} is version ${version || "unknown"}, expected ` +
        `${NATIVE_VERSION}; rebuild it with "make"`,
    );
  }
  return native;
}

/**
 * libprocconn's own version (`pc_version()`), for `--version`: the library is loaded and
 * closed again, whatever its version.
 *
 * @returns the version and the path it was loaded from
 * @throws {Error} naming the path when the library cannot be loaded
 */
export function nativeLibraryVersion(): { version: string; path: string } {
  const path = libraryPath();
  const native = openLibrary(path);
  try {
    return { version: versionOf(native) || "unknown", path };
  } finally {
    native.close();
  }
}

/** Options for {@link ProcConnector.open}; omitted fields take the library's defaults. */
export interface ConnectorOptions {
  /** PROC_EVENT_* bits for the kernel's own filter (Linux 6.6+); 0 or omitted = all. */
  eventMask?: number;
  /** Ring capacity in bytes (default 8 MiB). */
  ringBytes?: number;
  /** Netlink receive buffer in bytes (default 32 MiB). */
  rcvbufBytes?: number;
  /** Raise the reader thread's priority (default true). */
  realtime?: boolean;
  /** How long to wait for the kernel to acknowledge the subscription (default 1000 ms). */
  ackTimeoutMs?: number;
  /** Join exits with their resource usage from taskstats (default true). */
  usage?: boolean;
  /** The exec snapshot's extra reads (default: none). */
  snapshot?: SnapshotReads;
}

/** The exec snapshot's extra reads (PC_READ_* in native/procconn.h). */
export interface SnapshotReads {
  /** The working directory (/proc/PID/cwd). */
  cwd?: boolean;
  /** The cgroup path (/proc/PID/cgroup). */
  cgroup?: boolean;
  /** These environment variables (/proc/PID/environ); none when empty. */
  env?: readonly string[];
}

/** `struct pc_options` (native/procconn.h): 7 u32, then the env names. */
const OPTIONS = { snapshotReads: 24, envNames: 28, size: 28 + 256 } as const;
const READ_CWD = 0x1;
const READ_CGROUP = 0x2;
const READ_ENV = 0x4;

/**
 * The bytes of `struct pc_options`. The env names go NUL-separated; names with "=" or a
 * NUL, more than 32 of them, or more bytes than fit are the caller's to refuse first
 * (pc_open says EINVAL).
 */
export function optionBytes(options: ConnectorOptions): Uint8Array {
  const bytes = new Uint8Array(OPTIONS.size);
  const view = new DataView(bytes.buffer);
  const words = [
    options.eventMask ?? 0,
    options.ringBytes ?? 0,
    options.rcvbufBytes ?? 0,
    options.realtime === false ? 1 : 0,
    options.ackTimeoutMs ?? 0,
    options.usage === false ? 1 : 0,
  ];
  words.forEach((word, i) => view.setUint32(4 * i, word, true));
  const reads = options.snapshot ?? {};
  const env = reads.env ?? [];
  const names = new TextEncoder().encode(env.map((name) => name + "\0").join(""));
  if (names.length > OPTIONS.size - OPTIONS.envNames) {
    throw new RangeError(`The environment variable names take ${names.length} bytes, over 256`);
  }
  bytes.set(names, OPTIONS.envNames);
  view.setUint32(
    OPTIONS.snapshotReads,
    (reads.cwd ? READ_CWD : 0) | (reads.cgroup ? READ_CGROUP : 0) |
      (env.length > 0 ? READ_ENV : 0),
    true,
  );
  return bytes;
}

/** The library's counters (struct pc_stats). */
export interface ConnectorStats {
  /** Kernel events received. */
  events: number;
  /** Events the kernel dropped (ENOBUFS, sequence gaps). */
  kernelLost: number;
  /** Times the netlink receive buffer overflowed. */
  enobufs: number;
  /** Events dropped because the ring was full. */
  ringLost: number;
  /** The most bytes ever waiting in the ring. */
  ringHigh: number;
  /** Exec events whose process was gone before /proc could be read. */
  execGone: number;
  /** Of those, exec events whose pid already belonged to a newer process. */
  execReused: number;
  /** Of those, exec events whose /proc read hung: a new reader thread took over. */
  execStuck: number;
  /** Whether the kernel's own event filter is in force. */
  filtered: boolean;
  /** The reader thread's priority: SCHED_FIFO, nice -20, or normal. */
  priority: "fifo" | "nice" | "normal";
  /** Whether exits carry resource usage (taskstats is registered). */
  usage: boolean;
  /** Why usage is off although asked for: an errno name ("EPERM"), or null. */
  usageError: string | null;
  /** taskstats messages lost to ENOBUFS: exits that went out without usage. */
  usageLost: number;
  /** Exits delivered without usage while usage was on. */
  usageMissing: number;
  /** Whether exec snapshots come from the BPF program ({@link ProcConnector.execBpf}). */
  execBpf: boolean;
  /** Why the BPF program could not be used: an errno name, or null. */
  execBpfError: string | null;
  /** Execs with BPF on that had no entry, so /proc was read instead. */
  execBpfMissed: number;
  /** Entries the BPF program had no room for in its ring. */
  execBpfDropped: number;
  /** Gathering steps the reader ended with a bell (each a consumer wakeup at most). */
  steps: number;
  /** Of those, the steps of a sparse stream (a slow storm): 4 ms, not 1, back to back. */
  slowSteps: number;
}

const STATS_FIELDS = 20;
/** PC_WAIT_* (native/procconn.h): what pc_wait() found. */
const WAIT_RECORDS = 0x1;
const ENOENT = 2;
/**
 * While records are waited for by blocking this thread (see {@link ProcConnector.nextBatch}),
 * the event loop still runs at least this often: its timers are late by no more.
 */
const BLOCK_SPAN_MS = 50;
/**
 * ...and after at most this many batches taken without a turn: V8 finishes its garbage
 * collections in tasks the loop runs, and a storm's garbage left for 50 ms cost 3-4 MiB of
 * resident memory (soak, alternating runs).
 */
const BLOCK_BATCHES = 8;
/**
 * After stop(), how long nextBatch() waits for the reader thread to end, delivering what it
 * reads meanwhile; a reader stuck in a /proc read of a hung process is left behind then.
 */
const STOP_GRACE_MS = 1000;

/**
 * An open, subscribed proc connector with its reader thread running.
 *
 * Records are taken with a synchronous call on the JS thread; when there are none, the
 * connector arms the library's doorbell and waits for its one byte like for any socket,
 * so no thread of Deno's pool sits blocked in a call and a record wakes exactly one
 * thread, this one. At most one {@link nextBatch} call may be in flight. Close with
 * {@link close}, which stops the reader, waits for the call in flight, then frees the
 * handle and unloads the library, in that order, since unloading under a running call
 * crashes the process.
 */
export class ProcConnector implements AsyncDisposable {
  #native: Native;
  #handle: Deno.PointerObject | null;
  readonly #bell: Deno.UnixConn;
  readonly #ding = new Uint8Array(64);
  #ringing: Promise<number | null> | null = null;
  #waiting = false;
  /** Nonblocking calls in flight other than nextBatch: close waits for them. */
  #calls = 0;
  #stopped = false;
  #bellGone = false;
  /** After a stop, how long nextBatch waits for the reader to finish the read in hand. */
  #stopDeadline = Infinity;
  #closing: Promise<void> | null = null;
  /** When a wait last went through the event loop (performance.now()). */
  #turnAt = -Infinity;
  /** False once the library found no epoll set of Deno's watching the doorbell. */
  #canBlock = true;
  #blockedBatches = 0;
  /** Batches taken since the loop last had a turn. */
  #sinceTurn = 0;
  /** When the last batch was taken (performance.now()). */
  #batchAt = -Infinity;
  /** Whether it came within BLOCK_SPAN_MS of the one before: batches keep coming. */
  #steady = false;

  private constructor(native: Native, handle: Deno.PointerObject, bell: Deno.UnixConn) {
    this.#native = native;
    this.#handle = handle;
    this.#bell = bell;
  }

  /**
   * Loads the library, subscribes to the connector and starts the reader thread.
   *
   * @throws {NativeError} with the errno when the connector cannot be used.
   */
  static async open(options: ConnectorOptions = {}): Promise<ProcConnector> {
    const opts = optionBytes(options);
    const native = loadLibrary();
    const handle = await openHandle(native, "pc_open", (out) => native.symbols.pc_open(opts, out));
    let bell: Deno.UnixConn;
    try {
      bell = await ringDoorbell(native, handle);
    } catch (error) {
      await native.symbols.pc_close(handle);
      native.close();
      throw error;
    }
    return new ProcConnector(native, handle, bell);
  }

  #live(): Deno.PointerObject {
    if (this.#handle === null) throw new Error("The proc connector is closed");
    return this.#handle;
  }

  /** Copies whole records into `buffer` without waiting; 0 when there are none. */
  #take(buffer: Uint8Array): number {
    const result = this.#native.symbols.pc_take(this.#live(), buffer, buffer.byteLength);
    if (result === -32 /* EPIPE */) {
      const errno = this.#native.symbols.pc_error(this.#live());
      throw new NativeError("The connector's reader thread", errno || 32);
    }
    return unwrap("pc_take", result);
  }

  /** Whether the reader thread still runs; false once the doorbell's peer has gone too. */
  #readerRunning(): boolean {
    return !this.#bellGone &&
      unwrap("pc_running", this.#native.symbols.pc_running(this.#live())) === 1;
  }

  /** Waits for the doorbell's byte, at most `ms`; false on timeout. */
  async #awaitBell(ms: number): Promise<boolean> {
    this.#ringing ??= this.#bell.read(this.#ding);
    const ring = this.#ringing.then((n) => {
      this.#ringing = null;
      // The library closed its end: nothing will ever ring again.
      if (n === null) this.#bellGone = this.#stopped = true;
    });
    if (!Number.isFinite(ms)) {
      await ring;
      return true;
    }
    let timer: Timer | undefined;
    const late = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
    try {
      return await Promise.race([ring.then(() => true), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Takes a batch without going round the event loop: the records there are, or those a
   * blocking wait brings while `mayBlock()` allows one (see {@link nextBatch}). 0 when the
   * caller must wait in the loop with {@link nextBatch}: nothing came, the loop's turn is
   * due, or the connector has stopped. Spares a steady stream the promise and the await of
   * an async call per batch.
   */
  takeBatch(buffer: Uint8Array, mayBlock: () => boolean): number {
    this.#checkTake(buffer);
    if (this.#stopped || this.#turnDue(mayBlock)) return 0;
    for (;;) {
      const length = this.#take(buffer);
      if (length > 0) return this.#taken(length);
      if (!mayBlock() || !this.#block(Infinity)) return 0;
    }
  }

  /**
   * Copies whole records into `buffer`, waiting up to `timeoutMs` (default: no limit) when
   * there are none. Resolves to the number of bytes written: 0 on timeout, and once stopped
   * and every record read before the stop has been taken. `buffer` must not be touched
   * until the promise settles.
   *
   * When `mayBlock()` says so, the wait blocks this thread in the library (`pc_wait()`)
   * instead of going round the event loop: a turn of Deno's loop (epoll, the runtime, the
   * promise) costs several times a plain wakeup, once per batch. It returns to the loop as
   * soon as the loop has I/O or a signal, and at least every BLOCK_SPAN_MS (for its timers)
   * and every BLOCK_BATCHES batches (for V8's tasks). The caller says yes only while nothing
   * of its own waits on the loop (queued writes).
   */
  async nextBatch(
    buffer: Uint8Array,
    timeoutMs = Infinity,
    mayBlock: () => boolean = () => false,
  ): Promise<number> {
    this.#checkTake(buffer);
    this.#waiting = true;
    try {
      // A clock read costs a call into the runtime, run cold once per batch at low rates.
      const deadline = timeoutMs === Infinity ? Infinity : performance.now() + timeoutMs;
      for (let turn = !this.#stopped && this.#turnDue(mayBlock);; turn = false) {
        // A turn that is due comes first, records waiting or not: the bell then rings at once.
        const length = turn ? 0 : this.#take(buffer);
        if (length > 0) return this.#taken(length);
        if (this.#stopped && !this.#readerRunning()) return 0;
        if (!turn && !this.#stopped && mayBlock() && this.#block(deadline)) continue;
        // Armed, the library rings once records come (or, after a stop, once the reader
        // has ended); if some came meanwhile it rings at once, and the wait still lets this
        // thread's other I/O go first.
        unwrap("pc_arm", this.#native.symbols.pc_arm(this.#live()));
        const until = Math.min(deadline, this.#stopped ? this.#stopDeadline : Infinity);
        if (!await this.#awaitBell(Math.max(0, until - performance.now()))) return 0;
        this.#turnAt = performance.now();
        this.#sinceTurn = 0;
      }
    } finally {
      this.#waiting = false;
    }
  }

  /** Throws unless a batch may be taken into `buffer` now. */
  #checkTake(buffer: Uint8Array): void {
    if (this.#waiting) throw new Error("nextBatch() is already in flight");
    // A call started after close() began would run on a freed handle.
    if (this.#closing !== null) throw new Error("The proc connector is closing");
    if (buffer.byteLength < RecordLayout.maxSize) {
      throw new RangeError(`A batch buffer needs at least ${RecordLayout.maxSize} bytes`);
    }
  }

  /** Notes when a batch was taken, and whether batches keep coming; returns `length`. */
  #taken(length: number): number {
    const now = performance.now();
    this.#steady = now - this.#batchAt < BLOCK_SPAN_MS;
    this.#batchAt = now;
    this.#sinceTurn++;
    return length;
  }

  /**
   * Whether the event loop must have a turn before the next batch is taken, even with
   * records waiting: BLOCK_BATCHES batches or BLOCK_SPAN_MS since its last, or one batch
   * while the caller has something waiting on the loop (`mayBlock()` false: a client's
   * queued write, which the loop's I/O, a notice of room in its socket, lets go on). A
   * backlog (the reader ahead while this thread waited for a CPU) was otherwise taken in
   * one run: with 100 clients a client whose socket was full at its start got no notice
   * until the ring was empty, its queue overran its 4 MiB, and it lost events.
   */
  #turnDue(mayBlock: () => boolean): boolean {
    return this.#sinceTurn >= (mayBlock() ? BLOCK_BATCHES : 1) ||
      this.#batchAt - this.#turnAt >= BLOCK_SPAN_MS;
  }

  /**
   * Waits for records in `pc_wait()`, blocking this thread, if batches keep coming and the
   * event loop has had a turn lately (BLOCK_SPAN_MS, BLOCK_BATCHES); true when records came.
   * False also when the loop has I/O (or a signal) to handle: the caller then goes round it,
   * which handles that first.
   */
  #block(deadline: number): boolean {
    const now = performance.now();
    const ms = Math.floor(Math.min(this.#turnAt + BLOCK_SPAN_MS, deadline) - now);
    // A lone batch (a process now and then) waits in the loop: blocking after it would
    // only add a wakeup when the wait times out.
    if (!this.#canBlock || !this.#steady || ms < 1 || this.#sinceTurn >= BLOCK_BATCHES) {
      return false;
    }
    const result = this.#native.symbols.pc_wait(this.#live(), ms);
    if (result === -ENOENT) {
      this.#canBlock = false;
      return false;
    }
    const found = unwrap("pc_wait", result);
    // Records with I/O: the batch first; the next wait finds the loop's I/O again.
    if ((found & WAIT_RECORDS) === 0) return false;
    this.#blockedBatches++;
    return true;
  }

  /** When the last batch was taken (performance.now()): a clock read callers can share. */
  get batchAt(): number {
    return this.#batchAt;
  }

  /** How many waits for a batch blocked this thread instead of going round the event loop. */
  get blockedBatches(): number {
    return this.#blockedBatches;
  }

  /** CLOCK_MONOTONIC now in ns: the clock of the records' timestamps. */
  monotonicNowNs(): bigint {
    return BigInt(this.#native.symbols.pc_now_ns());
  }

  /** CLOCK_REALTIME now in ns: wall time, following clock steps (NTP). */
  realtimeNowNs(): bigint {
    return BigInt(this.#native.symbols.pc_realtime_ns());
  }

  /** The library's counters. */
  stats(): ConnectorStats {
    const out = new BigUint64Array(STATS_FIELDS);
    unwrap("pc_stats", this.#native.symbols.pc_stats(this.#live(), out));
    const n = (i: number) => Number(out[i]);
    return {
      events: n(0),
      kernelLost: n(1),
      enobufs: n(2),
      ringLost: n(3),
      ringHigh: n(4),
      execGone: n(5),
      filtered: out[6] !== 0n,
      priority: out[7] === 2n ? "fifo" : out[7] === 1n ? "nice" : "normal",
      execReused: n(8),
      execStuck: n(9),
      usage: out[10] !== 0n,
      usageError: out[11] === 0n ? null : errnoName(n(11)),
      usageLost: n(12),
      usageMissing: n(13),
      execBpf: out[14] !== 0n,
      execBpfError: out[15] === 0n ? null : errnoName(n(15)),
      execBpfMissed: n(16),
      execBpfDropped: n(17),
      steps: n(18),
      slowSteps: n(19),
    };
  }

  /**
   * Has each exec's cmdline, exe, parent and name taken in the kernel at the exec, by the
   * library's BPF program, instead of read from /proc by a reader woken at once for it.
   * Slow (libbpf parses the kernel's type information, about 11 MiB for a moment): call it
   * once started. Resolves when the reader will take the program at its next read.
   *
   * @throws {NativeError} why not: EPERM (no CAP_BPF), ELIBACC (no libbpf.so.1), ENOENT
   *   (no kernel BTF), ENOSYS (built without it), EOPNOTSUPP (extra exec reads asked for).
   */
  async execBpf(): Promise<void> {
    const handle = this.#live();
    this.#calls++;
    try {
      unwrap("pc_exec_bpf", await this.#native.symbols.pc_exec_bpf(handle));
    } finally {
      this.#calls--;
    }
  }

  /**
   * Stops the reader thread and wakes a waiting {@link nextBatch}. Records already read
   * stay available: nextBatch returns them, and those the reader reads until it ends (at
   * most STOP_GRACE_MS), before it returns 0. Idempotent.
   */
  stop(): void {
    if (this.#stopped || this.#handle === null) return;
    this.#stopped = true;
    this.#stopDeadline = performance.now() + STOP_GRACE_MS;
    unwrap("pc_stop", this.#native.symbols.pc_stop(this.#handle));
  }

  /** Whether the reader thread has ended (after {@link stop}, it finishes the read in hand). */
  get readerEnded(): boolean {
    return this.#handle === null || !this.#readerRunning();
  }

  /** Stops, waits for the call in flight, frees the handle and unloads the library. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#handle === null) return;
      this.stop();
      // The stop rang an armed bell, so a waiting nextBatch returns now.
      while (this.#waiting || this.#calls > 0) await sleep(1);
      const handle = this.#handle;
      this.#handle = null;
      this.#bell.close();
      // A reader stuck in a /proc read returns into the library's code when the read does:
      // unloading it then would crash the process, so it stays loaded.
      if (unwrap("pc_close", await this.#native.symbols.pc_close(handle)) === 0) {
        this.#native.close();
      }
    })();
    return this.#closing;
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** PC_CL_* (native/procconn.h): what a notice of {@link NativeClients} says of a client. */
export const ClientNotice = {
  /** A client connected; its id is new. */
  NEW: 0x1,
  /** It closed its end (or its sending side), or was reset. */
  HUP: 0x2,
  /** A send that found its socket full may be retried. */
  WRITABLE: 0x4,
  /** accept() failed (the id is the errno); the library retries in 100 ms. */
  FAILED: 0x8,
} as const;

/** Notices fetched per pc_cl_ready call: (id, flags) pairs. */
const NOTICE_PAIRS = 256;
const EAGAIN = 11;

/**
 * A Unix listening socket whose clients' sockets the library owns (pc_cl_* in
 * native/procconn.h): sends are plain send() calls on this thread, so a client reading
 * wakes nothing here, and a thread of the library's tells this one, through a doorbell
 * like the connector's, only of connects, hang-ups, and room in a socket that was full.
 *
 * Lifetime: {@link stopListening} closes the listening socket; once that is done and every
 * client id has been {@link close}d, the thread is joined, the handle freed and the library
 * unloaded, in that order.
 */
export class NativeClients {
  #native: Native;
  #handle: Deno.PointerObject | null;
  #bell: Deno.UnixConn | null = null;
  #onNotice: ((id: number, flags: number) => void) | null = null;
  readonly #pairs = new Uint32Array(2 * NOTICE_PAIRS);
  #open = 0;
  #listening = true;
  #pump: Promise<void> = Promise.resolve();
  #freed: Promise<void> | null = null;
  readonly #done = Promise.withResolvers<void>();

  private constructor(native: Native, handle: Deno.PointerObject) {
    this.#native = native;
    this.#handle = handle;
  }

  /**
   * Loads the library and binds, at `path`, a socket that listens with `backlog`, holding
   * up to `capacity` clients at once (more wait in the backlog). Nothing is unlinked, even
   * on failure: `path` is the caller's.
   *
   * @throws {NativeError} with the errno of socket(), bind() or listen().
   */
  static listen(path: string, backlog: number, capacity: number): NativeClients {
    const native = loadLibrary();
    const cpath = new TextEncoder().encode(path + "\0");
    const handle = openHandleSync(
      native,
      "pc_cl_open",
      (out) => native.symbols.pc_cl_open(cpath, backlog, capacity, out),
    );
    return new NativeClients(native, handle);
  }

  #live(): Deno.PointerObject {
    if (this.#handle === null) throw new Error("The native clients are closed");
    return this.#handle;
  }

  /**
   * Connects the doorbell and from then on hands every notice to `onNotice` (id and
   * {@link ClientNotice} bits; for FAILED the id is the errno). A NEW id is the caller's
   * to {@link close} eventually.
   */
  async start(onNotice: (id: number, flags: number) => void): Promise<void> {
    const handle = this.#live();
    const name = new Uint8Array(64);
    const length = unwrap(
      "pc_cl_bell_name",
      this.#native.symbols.pc_cl_bell_name(handle, name, 64),
    );
    const path = "\0" + new TextDecoder().decode(name.subarray(0, length));
    const bell = await Deno.connect({ transport: "unix", path });
    try {
      unwrap("pc_cl_bell_accept", this.#native.symbols.pc_cl_bell_accept(this.#live()));
    } catch (error) {
      bell.close();
      throw error;
    }
    this.#bell = bell;
    this.#onNotice = onNotice;
    this.#pump = this.#run(bell);
  }

  async #run(bell: Deno.UnixConn): Promise<void> {
    const ding = new Uint8Array(64);
    for (;;) {
      this.#drain();
      if (this.#freed !== null) return;
      try {
        if (await bell.read(ding) === null) return;
      } catch {
        return; // closed by free
      }
    }
  }

  /** Hands waiting notices out; without a receiver yet, new clients are closed. */
  #drain(): void {
    const pairs = this.#pairs;
    for (;;) {
      if (this.#handle === null) return;
      const n = unwrap(
        "pc_cl_ready",
        this.#native.symbols.pc_cl_ready(this.#handle, pairs, pairs.length),
      );
      for (let i = 0; i < n; i++) {
        const id = pairs[2 * i];
        const flags = pairs[2 * i + 1];
        if (flags & ClientNotice.NEW) this.#open++;
        if (this.#onNotice !== null) this.#onNotice(id, flags);
        else if (flags & ClientNotice.NEW) this.close(id);
      }
      if (n < NOTICE_PAIRS) return;
    }
  }

  /**
   * Sends what of `bytes` fits without waiting: the count sent, or null when the socket is
   * full (a WRITABLE notice follows).
   *
   * @throws {NativeError} EPIPE or ECONNRESET when the client is gone, EBADF for a closed id.
   */
  send(id: number, bytes: Uint8Array): number | null {
    const result = this.#native.symbols.pc_cl_send(this.#live(), id, bytes, bytes.length);
    if (result === -EAGAIN) return null;
    return unwrap("pc_cl_send", result);
  }

  /** Ends the sending side of client `id` (FIN after what was sent). */
  shutdownWrite(id: number): void {
    unwrap("pc_cl_shutdown_write", this.#native.symbols.pc_cl_shutdown_write(this.#live(), id));
  }

  /** Closes client `id`; its id is dead from then on. */
  close(id: number): void {
    unwrap("pc_cl_close", this.#native.symbols.pc_cl_close(this.#live(), id));
    this.#open--;
    this.#freeWhenDone();
  }

  /**
   * Closes the listening socket. Connections already accepted are handed out first; the
   * clients stay until closed. Idempotent.
   */
  stopListening(): void {
    if (!this.#listening || this.#handle === null) return;
    this.#listening = false;
    unwrap("pc_cl_stop_listen", this.#native.symbols.pc_cl_stop_listen(this.#handle));
    this.#drain();
    this.#freeWhenDone();
  }

  /** Resolves once the thread is joined and the library unloaded (after the last close). */
  get freed(): Promise<void> {
    return this.#done.promise;
  }

  #freeWhenDone(): void {
    if (this.#listening || this.#open > 0 || this.#freed !== null) return;
    this.#freed = (async () => {
      this.#bell?.close();
      await this.#pump; // a drain in progress finishes on a live handle
      const handle = this.#handle!;
      this.#handle = null;
      unwrap("pc_cl_free", await this.#native.symbols.pc_cl_free(handle));
      this.#native.close();
    })();
    this.#freed.then(this.#done.resolve, this.#done.reject);
  }
}
