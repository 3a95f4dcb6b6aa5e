/**
 * NativeUnixServer / NativeClientConn: the library's Unix sockets as the hub's connections.
 * A full socket makes a write wait for the library's notice, not spin; a hang-up ends the
 * read; a closed id is dead; a connection closed mid-wait rejects the waiting write.
 */
import assert from "node:assert/strict";
import { type NativeClientConn, NativeUnixServer } from "../lib/outputs/native_conn.ts";

async function withServer(
  fn: (path: string, conns: NativeClientConn[], server: NativeUnixServer) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pm-native-conn-" });
  const path = `${dir}/s.sock`;
  const server = NativeUnixServer.bind(path, 16, 8);
  const conns: NativeClientConn[] = [];
  try {
    await server.start((conn) => conns.push(conn), (error) => {
      throw error;
    });
    await fn(path, conns, server);
  } finally {
    server.stopListening();
    for (const conn of conns) {
      try {
        conn.close();
      } catch {
        // Closed by the test.
      }
    }
    await server.released;
    await Deno.remove(dir, { recursive: true });
  }
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("a write to a full socket waits for the reader, then finishes", async () => {
  await withServer(async (path, conns) => {
    const peer = await Deno.connect({ transport: "unix", path });
    try {
      await until(() => conns.length === 1, "the connection");
      const conn = conns[0];
      const block = new Uint8Array(64 * 1024).fill(0x61);
      // Fill the socket: the peer does not read yet.
      let sent = 0;
      let pending: Promise<number> | null = null;
      for (let i = 0; i < 1000; i++) {
        const write = conn.write(block);
        const settled = await Promise.race([write, new Promise((r) => setTimeout(r, 50))]);
        if (typeof settled !== "number") {
          pending = write;
          break;
        }
        sent += settled;
      }
      assert.ok(pending !== null, `the socket never filled (${sent} bytes sent)`);
      // Reading makes room; the waiting write completes.
      const buf = new Uint8Array(1 << 20);
      let read = 0;
      const reading = (async () => {
        while (read < sent + 1) {
          const n = await peer.read(buf);
          if (n === null) break;
          read += n;
        }
      })();
      const more = await pending;
      assert.ok(more > 0);
      await reading;
    } finally {
      peer.close();
    }
  });
});

Deno.test("a hang-up resolves the read with null; sending then fails as a broken pipe", async () => {
  await withServer(async (path, conns) => {
    const peer = await Deno.connect({ transport: "unix", path });
    await until(() => conns.length === 1, "the connection");
    const conn = conns[0];
    const read = conn.read(new Uint8Array(16));
    await peer.write(new TextEncoder().encode("ignored input\n"));
    peer.close();
    assert.equal(await read, null);
    await assert.rejects(
      async () => {
        for (let i = 0; i < 10; i++) await conn.write(new Uint8Array(10));
      },
      (error) =>
        error instanceof Deno.errors.BrokenPipe || error instanceof Deno.errors.ConnectionReset,
    );
  });
});

Deno.test("close() rejects a waiting write and read; the id is dead afterwards", async () => {
  await withServer(async (path, conns) => {
    const peer = await Deno.connect({ transport: "unix", path });
    try {
      await until(() => conns.length === 1, "the connection");
      const conn = conns[0];
      const block = new Uint8Array(256 * 1024);
      let waiting: Promise<number> | null = null;
      for (let i = 0; i < 100 && waiting === null; i++) {
        const write = conn.write(block);
        const settled = await Promise.race([write, new Promise((r) => setTimeout(r, 50))]);
        if (typeof settled !== "number") waiting = write;
      }
      assert.ok(waiting !== null, "the socket filled");
      const read = conn.read(new Uint8Array(16));
      conn.close();
      await assert.rejects(waiting, Deno.errors.Interrupted);
      await assert.rejects(read, Deno.errors.Interrupted);
      await assert.rejects(conn.write(block), Deno.errors.BadResource);
      assert.throws(() => conn.close(), Deno.errors.BadResource);
    } finally {
      peer.close();
    }
  });
});

Deno.test("closeWrite() ends the peer's stream after what was sent", async () => {
  await withServer(async (path, conns) => {
    const peer = await Deno.connect({ transport: "unix", path });
    try {
      await until(() => conns.length === 1, "the connection");
      const conn = conns[0];
      assert.equal(await conn.write(new TextEncoder().encode("last\n")), 5);
      await conn.closeWrite();
      const text = await new Response(peer.readable).text();
      assert.equal(text, "last\n");
    } finally {
      try {
        peer.close();
      } catch {
        // The readable closed it.
      }
    }
  });
});

Deno.test("ids of closed clients are never those of new ones", async () => {
  await withServer(async (path, conns) => {
    const seen = new Set<number>();
    for (let i = 0; i < 20; i++) {
      const peer = await Deno.connect({ transport: "unix", path });
      await until(() => conns.length === i + 1, `connection ${i + 1}`);
      const conn = conns[i];
      assert.ok(!seen.has(conn.id), `id ${conn.id} reused`);
      seen.add(conn.id);
      conn.close();
      peer.close();
    }
  });
});

/** This process's soft RLIMIT_NOFILE, as /proc/self/limits shows it. */
function softNofile(): string {
  const line = Deno.readTextFileSync("/proc/self/limits").split("\n")
    .find((l) => l.startsWith("Max open files"));
  return line?.split(/\s+/)[3] ?? "1024";
}

Deno.test("accepting resumes after EMFILE even while another client keeps sending", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pm-native-conn-" });
  const path = `${dir}/s.sock`;
  const server = NativeUnixServer.bind(path, 16, 8);
  const conns: NativeClientConn[] = [];
  const failures: string[] = [];
  const procs: Deno.ChildProcess[] = [];
  let limiter: Deno.ChildProcess | null = null;
  try {
    await server.start((conn) => conns.push(conn), (error) => failures.push(error.code));
    // A client that sends a line every 20 ms: the library's thread never waits 100 ms idle.
    procs.push(
      new Deno.Command("sh", {
        args: ["-c", `while :; do echo x || exit; sleep 0.02; done | exec nc -U ${path}`],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn(),
    );
    await until(() => conns.length === 1, "the chatty client");
    // Two clients connect at 0.5 s; from 0.2 s to 1.7 s this process is out of descriptors
    // (no free fd below 3), so the library's accept fails with EMFILE meanwhile.
    for (let i = 0; i < 2; i++) {
      procs.push(
        new Deno.Command("sh", {
          args: ["-c", `sleep 0.5; exec nc -U ${path}`],
          stdin: "piped",
          stdout: "null",
          stderr: "null",
        }).spawn(),
      );
    }
    limiter = new Deno.Command("sh", {
      args: [
        "-c",
        `sleep 0.2; prlimit --pid ${Deno.pid} --nofile=3: && sleep 1.5; ` +
        `prlimit --pid ${Deno.pid} --nofile=${softNofile()}:`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    assert.ok((await limiter.status).success, "prlimit failed");
    assert.ok(failures.includes("EMFILE"), `no EMFILE seen: ${failures}`);
    await until(() => conns.length === 3, "the two clients held back by EMFILE", 2000);
  } finally {
    await limiter?.status; // the limit is back before anything else opens a file
    for (const p of procs) {
      try {
        p.kill("SIGKILL");
      } catch {
        // Exited already.
      }
      await p.status;
    }
    server.stopListening();
    for (const conn of conns) conn.close();
    await server.released;
    await Deno.remove(dir, { recursive: true });
  }
});
