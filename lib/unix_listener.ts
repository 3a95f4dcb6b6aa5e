/**
 * The Unix socket listener (SPEC §5 "Unix socket"): creates the socket file safely, hands
 * each connection to the {@link Hub}, and removes the file again on close.
 *
 * Safety of the path: an existing path is replaced only when it is a socket that refuses
 * connections (stale, left by a crash). A regular file, a directory, a symbolic link, any
 * other kind of file, or a socket some server answers on is an error, and nothing is
 * deleted.
 *
 * Why a temporary name: Deno's UnixListener unlinks its path when closed, whatever file is
 * there by then, and a socket becomes connectable the moment it is bound, before chmod and
 * chgrp. So the socket is bound under a hidden temporary name in the same directory, given
 * its mode and group, then hard-linked to the real path (link(2) fails rather than replace
 * a file that appeared meanwhile) and the temporary name removed. Deno's unlink at close
 * then hits a name that no longer exists, and close() removes the real path itself, only
 * when it is still the very socket this listener created (same device and inode).
 *
 * @module
 */
import { StartupError } from "./errors.ts";
import type { Hub } from "./hub.ts";
import { getLogger } from "./log.ts";

/** What setTimeout returns (a number in Deno, an object in its Node types). */
type Timer = ReturnType<typeof setTimeout>;

const log = getLogger("unix");

/** Longest socket path Linux accepts (sun_path is 108 bytes including the NUL). */
const MAX_PATH_BYTES = 107;
/** How long the liveness probe of an existing socket may take; no answer means busy. */
const PROBE_MS = 1000;

/** Options of {@link UnixListener.open}. */
export interface UnixListenerOptions {
  /** Path of the socket file. */
  path: string;
  /** File mode of the socket file, e.g. 0o666 (v1's, and the default of `--socket-mode`). */
  mode: number;
  /** Group owning the socket file: a name from /etc/group or a numeric gid; null keeps
   * the process's group. */
  group: string | null;
  /** Maximum concurrent clients of this listener. */
  maxClients: number;
}

/** Serves the Unix socket: every accepted connection becomes a client of the hub. */
export class UnixListener {
  /** Path of the socket file. */
  readonly path: string;
  readonly #listener: Deno.UnixListener;
  readonly #dev: number;
  readonly #ino: number;
  readonly #acceptLoop: Promise<void>;
  #closed: Promise<void> | null = null;

  private constructor(
    hub: Hub,
    listener: Deno.UnixListener,
    path: string,
    dev: number,
    ino: number,
    maxClients: number,
  ) {
    this.path = path;
    this.#listener = listener;
    this.#dev = dev;
    this.#ino = ino;
    this.#acceptLoop = this.#accept(hub, maxClients);
  }

  /**
   * Creates the socket file at `opts.path` (see the module documentation for what may be
   * there already), sets its mode and group, and starts accepting clients.
   *
   * @throws {StartupError} with one sentence naming the path when the path is taken, its
   * directory is missing or not writable, or the group does not exist.
   */
  static async open(hub: Hub, opts: UnixListenerOptions): Promise<UnixListener> {
    const path = opts.path;
    if (new TextEncoder().encode(path).length > MAX_PATH_BYTES) {
      throw new StartupError(
        `Cannot listen on ${path} as the path is longer than ${MAX_PATH_BYTES} bytes`,
      );
    }
    // Resolve the group before creating anything, so a typo leaves no trace.
    const gid = opts.group === null ? null : await resolveGroup(opts.group, path);
    const stale = await inspectPath(path);

    const dir = dirname(path);
    const { listener, tmp } = bindTemporary(path, dir);
    try {
      await Deno.chmod(tmp, opts.mode);
      if (gid !== null) await Deno.chown(tmp, null, gid);
    } catch (err) {
      listener.close(); // unlinks tmp, which is ours
      throw new StartupError(
        `Cannot set the mode or group of the socket ${path}: ${describe(err)}`,
        { cause: err },
      );
    }

    try {
      if (stale !== null) {
        // Remove only the very socket found stale a moment ago, nothing put there since.
        const now = await lstatOrNull(path);
        if (now !== null && now.isSocket && now.dev === stale.dev && now.ino === stale.ino) {
          await Deno.remove(path);
          log.warning("Replaced the stale socket {path} (no server was listening on it)", {
            path,
          });
        }
      }
      await Deno.link(tmp, path);
    } catch (err) {
      listener.close();
      if (err instanceof Deno.errors.AlreadyExists) {
        throw new StartupError(
          `Cannot listen on ${path} as another file appeared there while starting`,
          { cause: err },
        );
      }
      throw new StartupError(`Cannot listen on ${path}: ${describe(err)}`, { cause: err });
    }
    const st = await Deno.lstat(path);
    try {
      await Deno.remove(tmp);
    } catch (err) {
      log.warning("Could not remove the temporary name {tmp} of {path}: {error}", {
        tmp,
        path,
        error: describe(err),
      });
    }
    log.info("Listening on {path} (mode {mode}, up to {max} clients)", {
      path,
      mode: "0" + opts.mode.toString(8),
      max: opts.maxClients,
    });
    return new UnixListener(hub, listener, path, st.dev, st.ino ?? 0, opts.maxClients);
  }

  /**
   * Stops accepting and removes the socket file if it is still the one this listener
   * created. Clients already connected stay with the hub. Idempotent.
   */
  close(): Promise<void> {
    return this.#closed ??= this.#shutdown();
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * For an immediate exit (a second signal): synchronously removes the socket file if it
   * is still the one this listener created, without waiting for anything else.
   */
  removeSocketFileNow(): void {
    try {
      const st = Deno.lstatSync(this.path);
      if (st.isSocket && st.dev === this.#dev && st.ino === this.#ino) Deno.removeSync(this.path);
    } catch {
      // Gone already, or not ours to remove: exiting anyway.
    }
  }

  async #shutdown(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    await this.#acceptLoop;
    const st = await lstatOrNull(this.path);
    if (st !== null && st.isSocket && st.dev === this.#dev && st.ino === this.#ino) {
      try {
        await Deno.remove(this.path);
      } catch (err) {
        log.warning("Could not remove the socket {path}: {error}", {
          path: this.path,
          error: describe(err),
        });
      }
    } else {
      log.warning("Left {path} in place: it is no longer the socket this server created", {
        path: this.path,
      });
    }
  }

  async #accept(hub: Hub, maxClients: number): Promise<void> {
    const group = `unix:${this.path}`;
    let n = 0;
    for (;;) {
      let conn: Deno.UnixConn;
      try {
        conn = await this.#listener.accept();
      } catch (err) {
        if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) {
          return; // closed
        }
        // E.g. out of file descriptors: keep serving the clients there are, retry later.
        log.error("Accepting on {path} failed: {error}", { path: this.path, error: describe(err) });
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      // SO_PEERCRED is out of Deno's reach; a connection number tells clients apart in logs.
      hub.addClient(conn, { description: `unix#${++n}`, group, maxClients, lineWrites: false });
    }
  }
}

/**
 * Checks what is at `path`. Returns null when nothing is there, the stale socket's
 * identity when it may be replaced, and throws a StartupError otherwise.
 */
async function inspectPath(path: string): Promise<{ dev: number; ino: number } | null> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      await checkDirectory(path);
      return null;
    }
    throw pathError(path, err);
  }
  if (st.isSocket) {
    if (await isLive(path)) {
      throw new StartupError(
        `Cannot listen on ${path} as another server is already listening there`,
      );
    }
    return { dev: st.dev, ino: st.ino ?? 0 };
  }
  const kind = st.isFile
    ? "a regular file"
    : st.isDirectory
    ? "a directory"
    : st.isSymlink
    ? "a symbolic link"
    : st.isFifo
    ? "a named pipe"
    : st.isBlockDevice || st.isCharDevice
    ? "a device file"
    : "not a socket";
  throw new StartupError(`Cannot listen on ${path} as it is ${kind}`);
}

/** Whether a server answers on the socket at `path`. */
async function isLive(path: string): Promise<boolean> {
  const attempt = Deno.connect({ transport: "unix", path });
  let timer: Timer | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), PROBE_MS);
  });
  try {
    const result = await Promise.race([attempt, timeout]);
    if (result === "timeout") {
      // A server too busy to accept is still a server. Close the probe if it ever connects.
      attempt.then((c) => c.close(), () => {});
      return true;
    }
    result.close();
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.ConnectionRefused) return false;
    if (err instanceof Deno.errors.NotFound) return false; // vanished meanwhile
    if (err instanceof Deno.errors.PermissionDenied) {
      throw new StartupError(
        `Cannot listen on ${path} as a socket is there that this user may not connect to`,
        { cause: err },
      );
    }
    throw new StartupError(`Cannot listen on ${path}: ${describe(err)}`, { cause: err });
  } finally {
    clearTimeout(timer);
  }
}

/** Throws a StartupError unless the parent directory of `path` exists. */
async function checkDirectory(path: string): Promise<void> {
  const dir = dirname(path);
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(dir);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new StartupError(`Cannot listen on ${path} as the directory ${dir} does not exist`, {
        cause: err,
      });
    }
    throw pathError(path, err);
  }
  if (!st.isDirectory) {
    throw new StartupError(`Cannot listen on ${path} as ${dir} is not a directory`);
  }
}

/** Binds a listener under a fresh hidden name next to `path`. */
function bindTemporary(path: string, dir: string): { listener: Deno.UnixListener; tmp: string } {
  for (let attempt = 0;; attempt++) {
    const tmp = `${dir === "/" ? "" : dir}/.pm${crypto.randomUUID().slice(0, 8)}`;
    if (new TextEncoder().encode(tmp).length > MAX_PATH_BYTES) {
      throw new StartupError(
        `Cannot listen on ${path} as its directory name is too long to create the socket safely`,
      );
    }
    try {
      return { listener: Deno.listen({ transport: "unix", path: tmp }), tmp };
    } catch (err) {
      // A file of that random name exists: pick another (never touch it).
      if (err instanceof Deno.errors.AddrInUse && attempt < 5) continue;
      if (err instanceof Deno.errors.PermissionDenied) {
        throw new StartupError(
          `Cannot listen on ${path} as permission to create files in ${dir} is denied`,
          { cause: err },
        );
      }
      if (err instanceof Deno.errors.NotFound) {
        throw new StartupError(`Cannot listen on ${path} as the directory ${dir} does not exist`, {
          cause: err,
        });
      }
      throw new StartupError(`Cannot listen on ${path}: ${describe(err)}`, { cause: err });
    }
  }
}

/** The gid for `group`: a number as is, a name looked up in /etc/group. */
async function resolveGroup(group: string, path: string): Promise<number> {
  if (/^[0-9]+$/.test(group)) return Number(group);
  let text: string;
  try {
    text = await Deno.readTextFile("/etc/group");
  } catch (err) {
    throw new StartupError(
      `Cannot set the group of ${path} to ${group} as /etc/group cannot be read: ${describe(err)}`,
      { cause: err },
    );
  }
  for (const line of text.split("\n")) {
    const fields = line.split(":");
    if (fields.length >= 3 && fields[0] === group && /^[0-9]+$/.test(fields[2])) {
      return Number(fields[2]);
    }
  }
  throw new StartupError(`Cannot set the group of ${path} to ${group} as no such group exists`);
}

function pathError(path: string, err: unknown): StartupError {
  if (err instanceof Deno.errors.PermissionDenied) {
    return new StartupError(`Cannot listen on ${path} as permission to access it is denied`, {
      cause: err,
    });
  }
  if (err instanceof Deno.errors.NotADirectory) {
    return new StartupError(
      `Cannot listen on ${path} as a part of the path is not a directory`,
      { cause: err },
    );
  }
  return new StartupError(`Cannot listen on ${path}: ${describe(err)}`, { cause: err });
}

async function lstatOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.lstat(path);
  } catch {
    return null;
  }
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  if (i < 0) return ".";
  return i === 0 ? "/" : path.slice(0, i);
}

/** An OS error message without the " (os error N): syscall 'path'" tail Deno adds. */
function describe(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/ \(os error \d+\).*$/s, "");
}
