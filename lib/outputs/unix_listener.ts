/**
 * The Unix socket listener (SPEC §5 "Unix socket"): creates the socket file safely, hands
 * each connection to the {@link Hub}, and removes the file again on close.
 *
 * Safety of the path: an existing path is replaced only when it is a socket that refuses
 * connections (stale, left by a crash). A regular file, a directory, a symbolic link, any
 * other kind of file, or a socket some server answers on is an error, and nothing is
 * deleted.
 *
 * Why a private directory: a socket becomes connectable the moment it is bound, before
 * chmod and chown, and chmod and chown follow symbolic links. So the socket is bound in a
 * fresh directory of mode 0700 next to the real path (same file system), and its mode and
 * group are set there, by a name relative to that directory as the working directory, once
 * that directory is confirmed to be ours and to admit nobody else. No one can then slip a
 * symbolic link in under the name being changed, not even by renaming the private
 * directory itself. From there the socket is hard-linked to the real path, which fails
 * rather than replace a file that appeared meanwhile, or renamed over the stale socket,
 * which replaces it in one step; then the private directory is removed. Only close()
 * removes the real path, and only while it is still the very socket this listener created
 * (same device and inode); the library that binds it never unlinks anything.
 *
 * The sockets themselves (listening and clients) belong to libprocconn
 * ({@link NativeUnixServer}): it accepts on a thread of its own and the hub's writes are
 * plain send() calls, so a client reading wakes nothing on the JS thread. Everything
 * about the socket FILE stays here.
 *
 * @module
 */
import { describe, StartupError } from "../errors.ts";
import { type Hub, MAX_REFUSING } from "./hub.ts";
import { getLogger } from "../log.ts";
import type { Timer } from "../timers.ts";
import { NativeUnixServer } from "./native_conn.ts";

const log = getLogger("unix");

/** Longest socket path Linux accepts (sun_path is 108 bytes including the NUL). */
const MAX_PATH_BYTES = 107;
/** How long the liveness probe of an existing socket may take; no answer means busy. */
const PROBE_MS = 1000;
/**
 * listen()'s backlog: the kernel's usual ceiling (somaxconn), not Deno's 128. The library's
 * thread accepts, apart from the JS thread that hands connections to the hub; a burst of
 * connects waits here rather than failing with EAGAIN while the two catch up.
 */
const BACKLOG = 4096;
/**
 * Connections held at once beyond the client limit: those the hub is refusing, at most
 * 2 × MAX_REFUSING at once (the rest it closes at once). The library accepts ahead of the
 * hub, so this also bounds what a flood of connects can hold open: more wait in the backlog
 * until a slot frees.
 */
const REFUSING_HEADROOM = 2 * MAX_REFUSING;

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
  /** Called once the socket is bound in its private directory, before its mode and group
   * are set; tests use it to meddle at that moment. */
  onBound?: (boundPath: string) => void | Promise<void>;
}

/** Serves the Unix socket: every accepted connection becomes a client of the hub. */
export class UnixListener {
  /** Path of the socket file. */
  readonly path: string;
  readonly #server: NativeUnixServer;
  readonly #dev: number;
  readonly #ino: number;
  #closed: Promise<void> | null = null;

  private constructor(server: NativeUnixServer, path: string, dev: number, ino: number) {
    this.path = path;
    this.#server = server;
    this.#dev = dev;
    this.#ino = ino;
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

    // Within the private directory a relative path would mean something else.
    const target = path.startsWith("/") ? path : `${workingDirectory()}/${path}`;
    const priv = makePrivateDir(path);
    let listener: NativeUnixServer | null = null;
    let st: Deno.FileInfo;
    try {
      listener = bindIn(priv, path, opts.maxClients);
      await opts.onBound?.(`${priv.path}/${priv.name}`);
      st = inPrivateDir(
        priv,
        path,
        (name) => placeSocket(name, path, target, opts.mode, gid, stale),
      );
    } catch (err) {
      listener?.stopListening();
      unlinkBound(priv);
      throw err;
    } finally {
      removePrivateDir(priv, path);
    }
    const self = new UnixListener(listener, path, st.dev, st.ino ?? 0);
    try {
      await self.#start(hub, opts.maxClients);
    } catch (err) {
      await self.close();
      throw new StartupError(`Cannot listen on ${path}: ${describe(err)}`, { cause: err });
    }
    log.info("Listening on {path} (mode {mode}, up to {max} clients)", {
      path,
      mode: "0" + opts.mode.toString(8),
      max: opts.maxClients,
    });
    return self;
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
    this.#server.stopListening();
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

  /** How the hub and the logs name this listener: `unix:PATH`. */
  get group(): string {
    return `unix:${this.path}`;
  }

  /** Hands each connection the library accepts to the hub. */
  #start(hub: Hub, maxClients: number): Promise<void> {
    const group = this.group;
    let n = 0;
    return this.#server.start(
      // SO_PEERCRED is not asked for; a connection number tells clients apart in logs.
      (conn) =>
        hub.addClient(conn, { description: `unix#${++n}`, group, maxClients, lineWrites: false }),
      // E.g. out of file descriptors: the clients there are keep being served, and the
      // library retries in 100 ms.
      (err) =>
        log.error("Accepting on {path} failed: {error}", { path: this.path, error: err.code }),
    );
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

/** The directory the socket is bound in, its identity, and the socket's name in it. */
interface PrivateDir {
  path: string;
  dev: number;
  ino: number;
  /**
   * Random, like the directory's: Deno unlinks `path/name` when the listener closes, so a
   * directory swapped in under `path` could lose only a file of this name, which only
   * someone who may write that directory (and so delete the file anyway) could have made.
   */
  name: string;
}

/** Creates the private directory (mode 0700) the socket is bound in, next to `path`. */
function makePrivateDir(path: string): PrivateDir {
  const dir = dirname(path);
  const random = () => crypto.randomUUID().slice(0, 8);
  try {
    for (let attempt = 1;; attempt++) {
      const priv = `${dir === "/" ? "" : dir}/.pm${random()}`;
      try {
        Deno.mkdirSync(priv, { mode: 0o700 });
      } catch (err) {
        // A file of that random name exists: pick another (never touch it).
        if (err instanceof Deno.errors.AlreadyExists && attempt < 5) continue;
        throw err;
      }
      const st = Deno.lstatSync(priv);
      return { path: priv, dev: st.dev, ino: st.ino ?? 0, name: `s${random()}` };
    }
  } catch (err) {
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

/** Binds the listening socket, in the library, in the private directory `priv`. */
function bindIn(priv: PrivateDir, path: string, maxClients: number): NativeUnixServer {
  const bound = `${priv.path}/${priv.name}`;
  if (new TextEncoder().encode(bound).length > MAX_PATH_BYTES) {
    throw new StartupError(
      `Cannot listen on ${path} as its directory name is too long to create the socket safely`,
    );
  }
  try {
    return NativeUnixServer.bind(bound, BACKLOG, maxClients + REFUSING_HEADROOM);
  } catch (err) {
    throw new StartupError(`Cannot listen on ${path}: ${describe(err)}`, { cause: err });
  }
}

/**
 * After a failed start: removes the socket bound in the private directory, if it is still
 * there, so the directory can go too. By its random name only: a directory swapped in under
 * the private one's name could lose only a file of that name, which only someone who may
 * write that directory (and so delete the file anyway) could have made.
 */
function unlinkBound(priv: PrivateDir): void {
  try {
    Deno.removeSync(`${priv.path}/${priv.name}`);
  } catch {
    // Moved into place already, or never bound.
  }
}

/**
 * Runs `work` (given the socket's name) with the private directory `priv` as the working
 * directory, once it is confirmed to be that very directory, of this user, that no one else
 * may enter, holding the bound socket. Names relative to it then refer to that directory
 * whatever is renamed meanwhile. All synchronous, so nothing else runs before the working
 * directory is restored.
 */
function inPrivateDir<T>(priv: PrivateDir, path: string, work: (name: string) => T): T {
  const replaced = `Cannot listen on ${path} as the private directory it was being created ` +
    "in was replaced";
  const back = workingDirectory();
  try {
    Deno.chdir(priv.path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) {
      throw new StartupError(replaced, { cause: err });
    }
    throw err;
  }
  try {
    const here = Deno.lstatSync(".");
    const bound = lstatOrNullSync(priv.name);
    if (
      !sameFile(here, priv) || here.uid !== Deno.uid() || (here.mode! & 0o077) !== 0 ||
      bound === null || !bound.isSocket
    ) {
      throw new StartupError(replaced);
    }
    return work(priv.name);
  } finally {
    Deno.chdir(back);
  }
}

/** The working directory, or / when it has been removed (a daemon's usual one anyway). */
function workingDirectory(): string {
  try {
    return Deno.cwd();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return "/";
    throw err;
  }
}

/**
 * In the private directory (see {@link inPrivateDir}): sets the mode and group of the socket
 * bound there as `name` and puts it at `path` (as `target`, made absolute beforehand).
 * Returns the socket's identity.
 */
function placeSocket(
  name: string,
  path: string,
  target: string,
  mode: number,
  gid: number | null,
  stale: { dev: number; ino: number } | null,
): Deno.FileInfo {
  try {
    Deno.chmodSync(name, mode);
    if (gid !== null) Deno.chownSync(name, null, gid);
  } catch (err) {
    throw new StartupError(
      `Cannot set the mode or group of the socket ${path}: ${describe(err)}`,
      { cause: err },
    );
  }
  const socket = Deno.lstatSync(name);
  const now = lstatOrNullSync(target);
  try {
    if (stale !== null && now !== null && now.isSocket && sameFile(now, stale)) {
      // Only the very socket found stale a moment ago is replaced, in one step.
      Deno.renameSync(name, target);
      log.warning("Replaced the stale socket {path} (no server was listening on it)", { path });
    } else {
      // Fails rather than replace whatever appeared at the path meanwhile.
      Deno.linkSync(name, target);
      Deno.removeSync(name);
    }
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) {
      throw new StartupError(
        `Cannot listen on ${path} as another file appeared there while starting`,
        { cause: err },
      );
    }
    throw new StartupError(`Cannot listen on ${path}: ${describe(err)}`, { cause: err });
  }
  return socket;
}

/**
 * Removes the private directory, empty by now, unless something else has taken its name;
 * a leftover is only worth a warning.
 */
function removePrivateDir(priv: PrivateDir, path: string): void {
  let why = "another file has taken its name";
  try {
    const st = Deno.lstatSync(priv.path);
    if (st.isDirectory && sameFile(st, priv)) {
      Deno.removeSync(priv.path);
      return;
    }
  } catch (err) {
    // Best effort: whatever stops the clean-up, the listener itself is fine.
    why = describe(err);
  }
  log.warning("Could not remove the directory {dir} made to create {path}: {error}", {
    dir: priv.path,
    path,
    error: why,
  });
}

function sameFile(a: Deno.FileInfo, b: { dev: number; ino: number }): boolean {
  return a.dev === b.dev && (a.ino ?? 0) === b.ino;
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

function lstatOrNullSync(path: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  if (i < 0) return ".";
  return i === 0 ? "/" : path.slice(0, i);
}
