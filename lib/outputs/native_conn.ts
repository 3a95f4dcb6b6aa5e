/**
 * Unix-socket clients whose sockets libprocconn owns ({@link NativeClients}), as the hub's
 * {@link HubConn}: a write is a synchronous send() through the FFI, and only a client whose
 * socket is full waits, for the library's notice that there is room again. Nothing wakes
 * the JS thread when a client reads, which a socket in Deno's runtime does (it is
 * registered for EPOLLOUT, edge-triggered, and every read by the peer makes it writable
 * again): with N clients that was N extra wakeups per batch.
 *
 * @module
 */
import { ClientNotice, NativeClients, NativeError } from "../kernel/ffi.ts";
import type { HubConn } from "./connections.ts";

/** One client of a {@link NativeUnixServer}. */
export class NativeClientConn implements HubConn {
  readonly #clients: NativeClients;
  /** The library's id of this client (slot and generation). */
  readonly id: number;
  #closed = false;
  #hungUp = false;
  #writable: PromiseWithResolvers<void> | null = null;
  #reading: PromiseWithResolvers<null> | null = null;
  readonly #onClose: () => void;

  constructor(clients: NativeClients, id: number, onClose: () => void = () => {}) {
    this.#clients = clients;
    this.id = id;
    this.#onClose = onClose;
  }

  /** A notice of the library for this client ({@link ClientNotice} bits). */
  notice(flags: number): void {
    if (flags & ClientNotice.HUP) {
      this.#hungUp = true;
      this.#reading?.resolve(null);
      this.#reading = null;
    }
    if (flags & (ClientNotice.WRITABLE | ClientNotice.HUP)) {
      // After a hang-up the retried send says EPIPE (or sends, if only the peer's sending
      // side was closed).
      this.#writable?.resolve();
      this.#writable = null;
    }
  }

  /** Sends what fits now; waits for room only when the socket is full. */
  async write(p: Uint8Array): Promise<number> {
    if (p.length === 0) return 0;
    for (;;) {
      const sent = this.trySend(p);
      if (sent !== null) return sent;
      this.#writable = Promise.withResolvers<void>();
      await this.#writable.promise;
    }
  }

  /** Sends what fits now: the bytes sent, or null when the socket is full. */
  trySend(p: Uint8Array): number | null {
    if (this.#closed) throw new Deno.errors.BadResource("The connection is closed");
    try {
      return this.#clients.send(this.id, p);
    } catch (error) {
      throw ioError(error);
    }
  }

  /**
   * The library reads and discards what the client sends; this resolves null once the
   * client has hung up (closed, or shut down its sending side).
   */
  read(_p: Uint8Array): Promise<number | null> {
    if (this.#closed) {
      return Promise.reject(new Deno.errors.BadResource("The connection is closed"));
    }
    if (this.#hungUp) return Promise.resolve(null);
    this.#reading ??= Promise.withResolvers<null>();
    return this.#reading.promise;
  }

  /** FIN after what was sent. */
  closeWrite(): Promise<void> {
    try {
      if (this.#closed) throw new Deno.errors.BadResource("The connection is closed");
      this.#clients.shutdownWrite(this.id);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(ioError(error));
    }
  }

  /** Closes the socket; a write or read waiting is rejected. */
  close(): void {
    if (this.#closed) throw new Deno.errors.BadResource("The connection is closed");
    this.#closed = true;
    const interrupted = () => new Deno.errors.Interrupted("The connection was closed");
    this.#writable?.reject(interrupted());
    this.#writable = null;
    this.#reading?.reject(interrupted());
    this.#reading = null;
    this.#onClose();
    this.#clients.close(this.id);
  }
}

/** A NativeError of a send or shutdown as the Deno error a socket would have thrown. */
function ioError(error: unknown): unknown {
  if (!(error instanceof NativeError)) return error;
  const options = { cause: error };
  switch (error.code) {
    case "EPIPE":
      return new Deno.errors.BrokenPipe("Broken pipe", options);
    case "ECONNRESET":
      return new Deno.errors.ConnectionReset("Connection reset by peer", options);
    case "EBADF":
      return new Deno.errors.BadResource("The connection is closed", options);
    case "ENOTCONN":
      return new Deno.errors.NotConnected("Not connected", options);
    default:
      return error;
  }
}

/**
 * A listening Unix socket of the library's and the connections on it: routes the
 * library's notices to their {@link NativeClientConn}s.
 */
export class NativeUnixServer {
  readonly #clients: NativeClients;
  readonly #conns = new Map<number, NativeClientConn>();

  private constructor(clients: NativeClients) {
    this.#clients = clients;
  }

  /**
   * Binds a listening socket at `path` (socket(), bind(), listen(); the file is the
   * caller's to move or remove) for up to `capacity` clients at once.
   *
   * @throws {NativeError} from the socket calls.
   */
  static bind(path: string, backlog: number, capacity: number): NativeUnixServer {
    return new NativeUnixServer(NativeClients.listen(path, backlog, capacity));
  }

  /**
   * Hands every new connection to `onConnect` from now on, and every failed accept (an
   * errno; the library retries it) to `onAcceptError`.
   */
  start(
    onConnect: (conn: NativeClientConn) => void,
    onAcceptError: (error: NativeError) => void,
  ): Promise<void> {
    return this.#clients.start((id, flags) => {
      if (flags & ClientNotice.FAILED) {
        onAcceptError(new NativeError("accept", id));
        return;
      }
      let conn = this.#conns.get(id);
      if (flags & ClientNotice.NEW) {
        conn = new NativeClientConn(this.#clients, id, () => this.#conns.delete(id));
        this.#conns.set(id, conn);
        onConnect(conn);
      }
      conn?.notice(flags & ~ClientNotice.NEW);
    });
  }

  /**
   * Closes the listening socket; connections already made stay open until closed. Once
   * they all are, the library's thread ends. Idempotent.
   */
  stopListening(): void {
    this.#clients.stopListening();
  }

  /** Resolves once the listener and every client are closed and the library released. */
  get released(): Promise<void> {
    return this.#clients.freed;
  }
}
