/**
 * Connections as the outputs use them: the {@link HubConn} shape, and the helpers that
 * write to, close and name them (used by the hub, the listeners and the client).
 *
 * @module
 */
import { describe, StartupError } from "../errors.ts";
import { settlesWithin, type Timer } from "../timers.ts";

/**
 * What the hub needs of a client connection. `Deno.Conn`, `Deno.TlsConn`,
 * `Deno.UnixConn` and `Deno.stdout` all fit.
 */
export interface HubConn {
  /** Writes some of `p`, returning how many bytes were written. */
  write(p: Uint8Array): Promise<number>;
  /**
   * When present: sends what of `p` fits now without waiting, returning how many bytes
   * were sent, or null when none fit. Throws as {@link write} would reject.
   */
  trySend?(p: Uint8Array): number | null;
  /** When present, the hub reads (and discards) to notice a client that went away. */
  read?(p: Uint8Array): Promise<number | null>;
  /** When present, used to close politely (FIN after the last line, then linger). */
  closeWrite?(): Promise<void>;
  /** Closes the connection; cancels a read or write in progress. */
  close(): void;
}

/**
 * Scratch space for reads whose bytes are thrown away (the hub's, closeGracefully's): as
 * nothing is kept, every such read can share this one buffer.
 */
export const DISCARD = new Uint8Array(16 * 1024);

/** `host:port`, with brackets around an IPv6 address. */
export function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Closes `conn`, ignoring that it may be closed already. */
export function closeQuietly(conn: { close(): void }): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

/**
 * Writes all of `data` (looping over partial writes) unless that takes longer than `ms`:
 * then the connection is closed, which cancels the write. Resolves true when all was
 * written; false after a timeout or error (the connection is then closed).
 */
export async function writeAllWithin(
  conn: HubConn,
  data: Uint8Array,
  ms: number,
): Promise<boolean> {
  const write = (async () => {
    let off = 0;
    while (off < data.length) off += await conn.write(data.subarray(off));
  })();
  let timer: Timer | undefined;
  let ok = false;
  try {
    ok = await Promise.race([
      write.then(() => true),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), ms)),
    ]);
  } catch {
    ok = false;
  } finally {
    clearTimeout(timer);
  }
  if (!ok) {
    closeQuietly(conn);
    await write.catch(() => {});
  }
  return ok;
}

/**
 * Ends a connection after the last line was written, without losing that line: sends FIN
 * (closeWrite), then reads and discards what the peer still sends until it closes or
 * `lingerMs` passes, then closes. Closing a TCP socket with unread input makes the kernel
 * send a reset, which can destroy the reply the peer has not read yet (a client that sent
 * a 1 MiB "password" would never see "Authentication failed").
 *
 * `pendingRead`, when given, is a read already in progress on `conn` that must finish
 * before another read starts.
 */
export async function closeGracefully(
  conn: HubConn,
  lingerMs: number,
  pendingRead?: Promise<unknown>,
): Promise<void> {
  const read = conn.read?.bind(conn);
  const closeWrite = conn.closeWrite?.bind(conn);
  if (read === undefined || closeWrite === undefined) {
    closeQuietly(conn);
    return;
  }
  const drain = (async () => {
    try {
      await closeWrite();
      if (pendingRead !== undefined) await pendingRead;
      while (await read(DISCARD) !== null) {
        // Discard.
      }
    } catch {
      // Reset by the peer, or cancelled by the close below: either way done.
    }
  })();
  await settlesWithin(drain, lingerMs);
  closeQuietly(conn);
  await drain;
}

/**
 * One sentence for a TCP port that cannot be bound, the same for the TCP listener and the
 * metrics server: `doing` starts it (e.g. "Cannot listen on TCP 0.0.0.0:9000"), `host` is
 * the address asked for.
 */
export function bindError(error: unknown, doing: string, host: string): StartupError {
  const cause = { cause: error };
  if (error instanceof Deno.errors.AddrInUse) {
    return new StartupError(`${doing} as the port is already in use`, cause);
  }
  if (error instanceof Deno.errors.AddrNotAvailable) {
    return new StartupError(`${doing} as ${host} is not an address of this host`, cause);
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return new StartupError(
      `${doing} as permission is denied (ports below 1024 need root)`,
      cause,
    );
  }
  return new StartupError(`${doing}: ${describe(error)}`, cause);
}
