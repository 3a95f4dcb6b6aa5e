/**
 * UnixListener tests: what may and may not be at the socket path (SPEC §9), mode and
 * group, removal on close, and that nothing but a stale socket is ever deleted.
 */
import assert from "node:assert/strict";
import { captureLogs, logText } from "./support/logs.ts";
import { StartupError } from "../lib/errors.ts";
import { Hub } from "../lib/outputs/hub.ts";
import { UnixListener, type UnixListenerOptions } from "../lib/outputs/unix_listener.ts";

await captureLogs();

const DEFAULTS = { mode: 0o666, group: null, maxClients: 10 };

/** A temp dir removed afterwards. */
async function tempDir(): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "pm-unix-" });
  return {
    dir,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Asserts that opening a listener on `path` fails with exactly `message`. */
async function assertRefused(
  hub: Hub,
  path: string,
  message: string,
  opts: Partial<UnixListenerOptions> = {},
): Promise<void> {
  await assert.rejects(
    () => UnixListener.open(hub, { path, ...DEFAULTS, ...opts }),
    (err: unknown) => {
      assert.ok(err instanceof StartupError, String(err));
      assert.equal(err.message, message);
      return true;
    },
  );
}

/** Entries of `dir`, sorted. */
async function entries(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

/** Connects, has the hub publish a line until the client reads it, returns what it read. */
async function roundTrip(hub: Hub, path: string): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    const buf = new Uint8Array(100);
    const read = conn.read(buf);
    let got: number | null | undefined;
    read.then((n) => got = n, () => got = null);
    // The client joins the hub asynchronously after connect: publish until it has joined.
    const end = Date.now() + 5000;
    while (got === undefined && Date.now() < end) {
      hub.publish(new TextEncoder().encode('{"event":"ping"}\n'));
      await new Promise((r) => setTimeout(r, 20));
    }
    const n = await read;
    return new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\n")[0];
  } finally {
    conn.close();
  }
}

/** Makes a stale socket at `path`: bound by a process that then exits without removing it. */
async function makeStaleSocket(path: string): Promise<void> {
  const out = await new Deno.Command("python3", {
    args: ["-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])", path],
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.ok((await Deno.lstat(path)).isSocket);
}

Deno.test("creates the socket with mode 0666 by default, serves it, removes it on close", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const path = `${t.dir}/procMonitor.sock`;
  const listener = await UnixListener.open(hub, { path, ...DEFAULTS });
  const st = await Deno.lstat(path);
  assert.ok(st.isSocket);
  assert.equal(st.mode! & 0o7777, 0o666);
  assert.deepEqual(await entries(t.dir), ["procMonitor.sock"], "no temporary name left");
  assert.equal(await roundTrip(hub, path), '{"event":"ping"}');
  await listener.close();
  await listener.close(); // idempotent
  await assert.rejects(() => Deno.lstat(path), Deno.errors.NotFound);
  await assert.rejects(() => Deno.connect({ transport: "unix", path }));
});

Deno.test("custom mode and group (by name and by number)", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const groups = (await Deno.readTextFile("/etc/group")).split("\n").map((l) => l.split(":"));
  const named = groups.find((g) => g.length >= 3 && g[0] !== "" && g[2] !== "0")!;
  {
    const path = `${t.dir}/a.sock`;
    await using _l = await UnixListener.open(hub, {
      path,
      mode: 0o660,
      group: named[0],
      maxClients: 1,
    });
    const st = await Deno.lstat(path);
    assert.equal(st.mode! & 0o7777, 0o660);
    assert.equal(st.gid, Number(named[2]));
  }
  {
    const path = `${t.dir}/b.sock`;
    await using _l = await UnixListener.open(hub, {
      path,
      mode: 0o600,
      group: "4242",
      maxClients: 1,
    });
    const st = await Deno.lstat(path);
    assert.equal(st.mode! & 0o7777, 0o600);
    assert.equal(st.gid, 4242);
  }
  assert.deepEqual(await entries(t.dir), []);
});

Deno.test("an unknown group is refused before anything is created", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const path = `${t.dir}/s.sock`;
  await assert.rejects(
    () => UnixListener.open(hub, { path, mode: 0o660, group: "no-such-group-pm", maxClients: 1 }),
    (err: unknown) => {
      assert.ok(err instanceof StartupError);
      assert.equal(
        err.message,
        `Cannot set the group of ${path} to no-such-group-pm as no such group exists`,
      );
      return true;
    },
  );
  assert.deepEqual(await entries(t.dir), []);
});

Deno.test("a regular file at the path is refused and left unchanged", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const path = `${t.dir}/s.sock`;
  await Deno.writeTextFile(path, "precious data\n");
  await assertRefused(hub, path, `Cannot listen on ${path} as it is a regular file`);
  assert.equal(await Deno.readTextFile(path), "precious data\n");
  assert.deepEqual(await entries(t.dir), ["s.sock"], "no temporary name left");
});

Deno.test("a directory at the path is refused and left in place", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const path = `${t.dir}/s.sock`;
  await Deno.mkdir(path);
  await Deno.writeTextFile(`${path}/inside`, "x");
  await assertRefused(hub, path, `Cannot listen on ${path} as it is a directory`);
  assert.ok((await Deno.lstat(path)).isDirectory);
  assert.equal(await Deno.readTextFile(`${path}/inside`), "x");
});

Deno.test("a symbolic link at the path is refused, even one to a stale socket", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const target = `${t.dir}/target.sock`;
  await makeStaleSocket(target);
  const path = `${t.dir}/s.sock`;
  await Deno.symlink(target, path);
  await assertRefused(hub, path, `Cannot listen on ${path} as it is a symbolic link`);
  assert.ok((await Deno.lstat(path)).isSymlink);
  assert.ok((await Deno.lstat(target)).isSocket);
});

Deno.test("a named pipe at the path is refused and left in place", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const path = `${t.dir}/s.sock`;
  const out = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.equal(out.code, 0);
  await assertRefused(hub, path, `Cannot listen on ${path} as it is a named pipe`);
  assert.ok((await Deno.lstat(path)).isFifo);
});

Deno.test("a live socket is refused and the first server keeps working", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const path = `${t.dir}/s.sock`;
  await using first = await UnixListener.open(hub, { path, ...DEFAULTS });
  await using hub2 = new Hub();
  await assertRefused(
    hub2,
    path,
    `Cannot listen on ${path} as another server is already listening there`,
  );
  assert.ok((await Deno.lstat(path)).isSocket);
  assert.equal(await roundTrip(hub, path), '{"event":"ping"}');
  assert.deepEqual(await entries(t.dir), ["s.sock"]);
  await first.close();
  await assert.rejects(() => Deno.lstat(path), Deno.errors.NotFound);
});

Deno.test("a stale socket from a crash is replaced, with a warning", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const path = `${t.dir}/s.sock`;
  await makeStaleSocket(path);
  const staleIno = (await Deno.lstat(path)).ino;
  await using _l = await UnixListener.open(hub, { path, ...DEFAULTS });
  const st = await Deno.lstat(path);
  assert.ok(st.isSocket);
  assert.notEqual(st.ino, staleIno);
  assert.equal(await roundTrip(hub, path), '{"event":"ping"}');
  assert.ok(logText().some((l) => l.includes(`Replaced the stale socket ${path}`)));
});

Deno.test("a missing directory is a clear error", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const path = `${t.dir}/nope/s.sock`;
  await assertRefused(
    hub,
    path,
    `Cannot listen on ${path} as the directory ${t.dir}/nope does not exist`,
  );
  const viaFile = `${t.dir}/file/s.sock`;
  await Deno.writeTextFile(`${t.dir}/file`, "x");
  await assertRefused(
    hub,
    viaFile,
    `Cannot listen on ${viaFile} as a part of the path is not a directory`,
  );
  const long = `${t.dir}/${"x".repeat(120)}`;
  await assertRefused(hub, long, `Cannot listen on ${long} as the path is longer than 107 bytes`);
});

Deno.test("close() leaves alone a file that replaced the socket", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const path = `${t.dir}/s.sock`;
  const listener = await UnixListener.open(hub, { path, ...DEFAULTS });
  await Deno.remove(path);
  await Deno.writeTextFile(path, "someone else's\n");
  await listener.close();
  assert.equal(await Deno.readTextFile(path), "someone else's\n");
  assert.deepEqual(await entries(t.dir), ["s.sock"]);
});

Deno.test("removeSocketFileNow() removes only our socket, synchronously", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const path = `${t.dir}/s.sock`;
  await using listener = await UnixListener.open(hub, { path, ...DEFAULTS });
  listener.removeSocketFileNow();
  await assert.rejects(() => Deno.lstat(path), Deno.errors.NotFound);
  await Deno.writeTextFile(path, "other\n");
  listener.removeSocketFileNow();
  assert.equal(await Deno.readTextFile(path), "other\n");
});

Deno.test("the per-listener client limit applies to Unix clients", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const path = `${t.dir}/s.sock`;
  await using _l = await UnixListener.open(hub, { path, mode: 0o666, group: null, maxClients: 1 });
  const first = await Deno.connect({ transport: "unix", path });
  try {
    const end = Date.now() + 5000;
    while (hub.clientCount < 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    const second = await Deno.connect({ transport: "unix", path });
    const got: number[] = [];
    const buf = new Uint8Array(1024);
    for (let n; (n = await second.read(buf)) !== null;) got.push(...buf.subarray(0, n));
    second.close();
    assert.equal(
      new TextDecoder().decode(new Uint8Array(got)),
      '{"error":"too many clients","limit":1}\n',
    );
  } finally {
    first.close();
  }
});

Deno.test("the socket is bound, and its mode and group set, in a private 0700 directory", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const path = `${t.dir}/s.sock`;
  const seen: { dirMode: number; parent: string; pathThere: boolean }[] = [];
  await using _l = await UnixListener.open(hub, {
    path,
    mode: 0o660,
    group: "4242",
    maxClients: 1,
    onBound: async (bound) => {
      const dir = bound.slice(0, bound.lastIndexOf("/"));
      assert.ok((await Deno.lstat(bound)).isSocket);
      seen.push({
        dirMode: (await Deno.lstat(dir)).mode! & 0o7777,
        parent: dir.slice(0, dir.lastIndexOf("/")),
        pathThere: await Deno.lstat(path).then(() => true, () => false),
      });
    },
  });
  assert.equal(seen.length, 1, "onBound was called");
  const s = seen[0];
  assert.equal(s.dirMode, 0o700, "a private directory");
  assert.equal(s.parent, t.dir, "next to the socket path, so on the same file system");
  assert.equal(s.pathThere, false, "nothing at the path until mode and group are set");
  const st = await Deno.lstat(path);
  assert.equal(st.mode! & 0o7777, 0o660);
  assert.equal(st.gid, 4242);
  assert.deepEqual(await entries(t.dir), ["s.sock"], "the private directory is gone");
});

Deno.test("a directory swapped in while starting cannot redirect chmod or chown", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const path = `${t.dir}/s.sock`;
  // What an attacker would like made world-writable: a file reached through a symlink
  // named like the socket, in a directory put in place of the private one.
  const victimDir = `${t.dir}/victim`;
  const victim = `${t.dir}/precious`;
  await Deno.writeTextFile(victim, "secret\n", { mode: 0o600 });
  await Deno.mkdir(victimDir, { mode: 0o700 });
  await assertRefused(
    hub,
    path,
    `Cannot listen on ${path} as the private directory it was being created in was replaced`,
    {
      onBound: (bound) => {
        const dir = bound.slice(0, bound.lastIndexOf("/"));
        Deno.symlinkSync(victim, `${victimDir}/${bound.slice(dir.length + 1)}`);
        Deno.renameSync(dir, `${t.dir}/moved-away`);
        Deno.symlinkSync(victimDir, dir);
      },
      mode: 0o666,
      group: "4242",
    },
  );
  const st = await Deno.lstat(victim);
  assert.equal(st.mode! & 0o7777, 0o600, "the mode was not changed through the link");
  assert.equal(st.gid, 0, "nor the group");
  assert.equal(await Deno.readTextFile(victim), "secret\n");
  await assert.rejects(() => Deno.lstat(path), Deno.errors.NotFound);
});

Deno.test("a relative socket path means the working directory's", async () => {
  await using t = await tempDir();
  await using hub = new Hub();
  const before = Deno.cwd();
  Deno.chdir(t.dir);
  try {
    await using _l = await UnixListener.open(hub, { path: "rel.sock", ...DEFAULTS });
    assert.equal(Deno.cwd(), t.dir, "the working directory is restored");
    assert.ok((await Deno.lstat(`${t.dir}/rel.sock`)).isSocket);
    assert.deepEqual(await entries(t.dir), ["rel.sock"]);
  } finally {
    Deno.chdir(before);
  }
});
