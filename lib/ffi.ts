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

import { RecordLayout } from "./record.ts";

/** The C library version this file was written against (PC_VERSION). */
export const NATIVE_VERSION = "1.1.0";

const symbols = {
  /** const char *pc_version(void) */
  pc_version: { parameters: [], result: "pointer" },
  /** uint64_t pc_now_ns(void): CLOCK_MONOTONIC, the clock of record timestamps */
  pc_now_ns: { parameters: [], result: "u64" },
  /** uint64_t pc_realtime_ns(void): CLOCK_REALTIME, wall time */
  pc_realtime_ns: { parameters: [], result: "u64" },
  /** int pc_open(const struct pc_options *opts, pc_handle **out); waits for the kernel's ack */
  pc_open: {
    parameters: [
      "buffer", // const struct pc_options *opts
      "buffer", // pc_handle **out
    ],
    result: "i32",
    nonblocking: true,
  },
  /** int pc_next_batch(pc_handle *h, uint8_t *buf, uint32_t cap, int32_t timeout_ms) */
  pc_next_batch: {
    parameters: [
      "pointer", // pc_handle *h
      "buffer", // uint8_t *buf
      "u32", // uint32_t cap
      "i32", // int32_t timeout_ms
    ],
    result: "i32",
    nonblocking: true,
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
  /** int pc_close(pc_handle *h); joins the reader thread, which may wait */
  pc_close: { parameters: ["pointer" /* pc_handle *h */], result: "i32", nonblocking: true },
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
};

/** A negative return from libprocconn, with its errno. */
export class NativeError extends Error {
  /** The positive errno. */
  readonly errno: number;
  /** The errno's name, e.g. "EPERM". */
  readonly code: string;

  /** Creates the error for `call` failing with `-errno`. */
  constructor(call: string, errno: number) {
    const code = ERRNO_NAMES[errno] ?? `errno ${errno}`;
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

/** Where to load libprocconn.so from. */
function libraryPath(): string {
  const override = Deno.env.get("PROCMONITOR_LIB");
  if (override) return override;
  return new URL("../native/libprocconn.so", import.meta.url).pathname;
}

/**
 * Opens the library. A binary made by `deno compile` embeds the .so in a virtual file
 * system that dlopen cannot see, so on failure the file is copied to a private temporary
 * file, loaded from there and removed (the mapping stays valid).
 */
function loadLibrary(): Native {
  const path = libraryPath();
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
  const ptr = native.symbols.pc_version();
  const version = ptr === null ? "" : new Deno.UnsafePointerView(ptr).getCString();
  if (version !== NATIVE_VERSION) {
    native.close();
    throw new Error(
      `The native library ${path} is version ${version || "unknown"}, expected ` +
        `${NATIVE_VERSION}; rebuild it with "make"`,
    );
  }
  return native;
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
  /** Whether the kernel's own event filter is in force. */
  filtered: boolean;
  /** The reader thread's priority: SCHED_FIFO, nice -20, or normal. */
  priority: "fifo" | "nice" | "normal";
}

const STATS_FIELDS = 8;

/**
 * An open, subscribed proc connector with its reader thread running.
 *
 * At most one {@link nextBatch} call may be in flight (it occupies one thread of Deno's
 * nonblocking pool). Close with {@link close}, which stops the thread, waits for the call in
 * flight, then frees the handle and unloads the library, in that order, since unloading
 * under a running call crashes the process.
 */
export class ProcConnector implements AsyncDisposable {
  #native: Native;
  #handle: Deno.PointerObject | null;
  #pending: Promise<number> | null = null;
  #stopped = false;
  #closing: Promise<void> | null = null;

  private constructor(native: Native, handle: Deno.PointerObject) {
    this.#native = native;
    this.#handle = handle;
  }

  /**
   * Loads the library, subscribes to the connector and starts the reader thread.
   *
   * @throws {NativeError} with the errno when the connector cannot be used.
   */
  static async open(options: ConnectorOptions = {}): Promise<ProcConnector> {
    const native = loadLibrary();
    const opts = new Uint32Array([
      options.eventMask ?? 0,
      options.ringBytes ?? 0,
      options.rcvbufBytes ?? 0,
      options.realtime === false ? 1 : 0,
      options.ackTimeoutMs ?? 0,
    ]);
    const out = new BigUint64Array(1);
    try {
      unwrap("pc_open", await native.symbols.pc_open(opts, out));
    } catch (error) {
      native.close();
      throw error;
    }
    const handle = Deno.UnsafePointer.create(out[0]);
    if (handle === null) {
      native.close();
      throw new Error("pc_open returned a null handle");
    }
    return new ProcConnector(native, handle);
  }

  #live(): Deno.PointerObject {
    if (this.#handle === null) throw new Error("The proc connector is closed");
    return this.#handle;
  }

  /**
   * Waits up to `timeoutMs` for records and copies whole ones into `buffer`.
   * Resolves to the number of bytes written: 0 on timeout and once stopped and drained.
   * `buffer` must not be touched until the promise settles.
   */
  async nextBatch(buffer: Uint8Array, timeoutMs: number): Promise<number> {
    if (this.#pending !== null) throw new Error("nextBatch() is already in flight");
    // A call started after close() began would run on a freed handle.
    if (this.#closing !== null) throw new Error("The proc connector is closing");
    if (buffer.byteLength < RecordLayout.maxSize) {
      throw new RangeError(`A batch buffer needs at least ${RecordLayout.maxSize} bytes`);
    }
    const call = this.#native.symbols.pc_next_batch(
      this.#live(),
      buffer,
      buffer.byteLength,
      timeoutMs,
    );
    this.#pending = call;
    try {
      const result = await call;
      if (result === -32 /* EPIPE */) {
        const errno = this.#native.symbols.pc_error(this.#live());
        throw new NativeError("The connector's reader thread", errno || 32);
      }
      return unwrap("pc_next_batch", result);
    } finally {
      this.#pending = null;
    }
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
    };
  }

  /**
   * Stops the reader thread and wakes a waiting {@link nextBatch}. Records already read
   * stay available to further nextBatch calls. Idempotent.
   */
  stop(): void {
    if (this.#stopped || this.#handle === null) return;
    this.#stopped = true;
    unwrap("pc_stop", this.#native.symbols.pc_stop(this.#handle));
  }

  /** Stops, waits for the call in flight, frees the handle and unloads the library. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#handle === null) return;
      this.stop();
      while (this.#pending !== null) await this.#pending.catch(() => 0);
      const handle = this.#handle;
      this.#handle = null;
      await this.#native.symbols.pc_close(handle);
      this.#native.close();
    })();
    return this.#closing;
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
