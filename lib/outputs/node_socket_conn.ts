/**
 * Bridges between Deno connections and Node.js streams, for serving TLS with `node:tls`.
 *
 * Why not `Deno.listenTls`: closing a Deno TlsConn whose handshake has not completed does
 * not close its TCP socket (Deno's handshake task keeps it), so a peer that never sends
 * its ClientHello could hold a connection for ever. Instead the listener accepts plain TCP
 * (`Deno.listen`), runs the server side of TLS with `node:tls` over that connection
 * ({@link startServerTls}), and closing the TCP connection always ends it.
 *
 * {@link NodeSocketConn} shows the TLS socket as a {@link HubConn}:
 *
 * - `write` resolves once the socket's write callback has run, i.e. when the chunk has
 *   been handed on (for TLS: encrypted and written to the TCP connection). Callers write
 *   one chunk at a time, as the hub does, so at most one chunk is buffered: that is the
 *   backpressure, and `drain` need not be watched.
 * - `read` uses the socket in paused mode: Node reads at most its high-water mark ahead, so
 *   a peer that floods us fills the kernel buffers, not memory. It returns null at the end
 *   of the stream or once the connection is closed, and throws the socket's error, if any.
 * - `closeWrite` ends the writable side (TLS close_notify, then FIN); `close` destroys.
 *
 * Every pending operation settles when the socket closes, so nobody waits for ever on a
 * connection that is gone.
 *
 * @module
 */
import { Duplex } from "node:stream";
import { type SecureContext, TLSSocket } from "node:tls";
import { closeQuietly, type HubConn } from "./connections.ts";

/** The part of a Node.js socket {@link NodeSocketConn} uses. */
export type NodeSocket = Pick<Duplex, "write" | "read" | "end" | "destroy" | "on">;

/** A {@link HubConn} over a Node.js socket; see the module documentation. */
export class NodeSocketConn implements HubConn {
  readonly #socket: NodeSocket;
  /** The part of the last chunk that did not fit the caller's buffer. */
  #rest: Uint8Array | null = null;
  #ended = false;
  #closed = false;
  #closedByUs = false;
  #error: Error | null = null;
  /** Resolves when the socket has closed (or close() was called). */
  readonly #gone: Promise<void>;
  #markGone: () => void = () => {};
  /** Wakes a read waiting for data, the end, or the close. */
  #wake: (() => void) | null = null;

  /** Takes over `socket`: from now on only this object reads from it. */
  constructor(socket: NodeSocket) {
    this.#socket = socket;
    this.#gone = new Promise((resolve) => this.#markGone = resolve);
    socket.on("readable", () => this.#notify());
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    // Without an "error" listener Node's EventEmitter throws the error out of the event loop.
    socket.on("error", (err: Error) => {
      this.#error ??= err;
      this.#notify();
    });
    socket.on("close", () => this.#onClose());
  }

  /** Writes all of `p`; resolves with `p.length` once the socket has taken it. */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(this.#closedError());
    return new Promise<number>((resolve, reject) => {
      let settled = false;
      const settle = (err: Error | null | undefined) => {
        if (settled) return;
        settled = true;
        if (err) reject(err);
        else resolve(p.length);
      };
      this.#gone.then(() => settle(this.#closedError()));
      this.#socket.write(p, settle);
    });
  }

  /** Reads into `p`; null at the end of the stream or after close. */
  async read(p: Uint8Array): Promise<number | null> {
    for (;;) {
      const chunk = this.#rest ?? (this.#closed ? null : this.#socket.read() as Uint8Array | null);
      this.#rest = null;
      if (chunk !== null && chunk.length > 0) {
        const n = Math.min(chunk.length, p.length);
        p.set(chunk.subarray(0, n));
        if (n < chunk.length) this.#rest = chunk.subarray(n);
        return n;
      }
      if (this.#error !== null && !this.#closedByUs) throw this.#error;
      if (this.#ended || this.#closed) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  /** Ends the writable side; resolves when that is done or the connection is gone. */
  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.#gone.then(resolve);
      this.#socket.end(resolve);
    });
  }

  /** Destroys the socket; pending reads return null and pending writes reject. */
  close(): void {
    if (this.#closed) return;
    this.#closedByUs = true;
    this.#socket.destroy();
    this.#onClose();
  }

  #onClose(): void {
    this.#closed = true;
    this.#markGone();
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  #closedError(): Error {
    return this.#error ?? new Deno.errors.BrokenPipe("The connection is closed");
  }
}

/**
 * A Node.js Duplex over `conn`: what it reads comes from `conn`, what is written to it goes
 * to `conn`, ending it half-closes `conn`, destroying it closes `conn`. Owns `conn`.
 */
export function connDuplex(conn: Deno.Conn): Duplex {
  const buf = new Uint8Array(16 * 1024);
  let closed = false;
  return new Duplex({
    read() {
      conn.read(buf).then(
        (n) => {
          if (!closed) this.push(n === null ? null : buf.slice(0, n));
        },
        // After our own close the read fails (BadResource, Interrupted): nothing to report.
        (err) => {
          if (!closed) this.destroy(err);
        },
      );
    },
    write(chunk: Uint8Array, _encoding, callback) {
      writeAll(conn, chunk).then(() => callback(), callback);
    },
    final(callback) {
      conn.closeWrite().then(() => callback(), callback);
    },
    destroy(err, callback) {
      closed = true;
      closeQuietly(conn);
      callback(err);
    },
  });
}

/** A TLS server connection starting over `tcp`; see {@link startServerTls}. */
export interface ServerTls {
  /** The TLS connection; closing it closes `tcp`. Usable once `secured` is null. */
  conn: NodeSocketConn;
  /** Resolves null when the handshake has completed, or with why it failed. */
  secured: Promise<Error | null>;
}

/**
 * Starts the server side of a TLS handshake over `tcp` (which it takes over). Nothing
 * here limits the handshake's time: the caller closes `conn` when it has waited enough.
 */
export function startServerTls(tcp: Deno.Conn, context: SecureContext): ServerTls {
  const socket = new TLSSocket(connDuplex(tcp), { isServer: true, secureContext: context });
  const secured = new Promise<Error | null>((resolve) => {
    socket.once("secure", () => resolve(null));
    socket.once("error", (err: Error) => resolve(err));
    socket.once("close", () => resolve(new Error("the connection closed during the handshake")));
  });
  return { conn: new NodeSocketConn(socket), secured };
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}
