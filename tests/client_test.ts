/**
 * Tests for `procMonitor client` (lib/cli/client.ts, SPEC §3 and §5).
 *
 * Each test serves a real socket itself (a Unix socket in a temp dir, TCP on 127.0.0.1 port
 * 0, or TLS with a certificate made by openssl at test time) that speaks procMonitor's wire
 * protocol, spawns `deno run -A main.ts client ...`, and checks its stdout, stderr and exit
 * code. No root is needed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { accept, closeQuietly, delay, execLine, type Result, Spawned } from "./support/spawned.ts";
import { makeCert } from "./support/tls.ts";
import { listeningPorts } from "./support/ports.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const enc = new TextEncoder();
const dec = new TextDecoder();

/** `procMonitor client ARGS`, run from source. */
class Client extends Spawned {
  constructor(args: string[], options: { env?: Record<string, string>; stdout?: boolean } = {}) {
    super(Deno.execPath(), ["run", "-A", "--quiet", "main.ts", "client", ...args], {
      cwd: ROOT,
      ...options,
    });
  }
}

/** Reads until the first "\n" (inclusive); fails at EOF. */
async function readLine(conn: Deno.Conn): Promise<string> {
  const bytes: number[] = [];
  const buf = new Uint8Array(4096);
  while (!bytes.includes(10)) {
    const n = await conn.read(buf);
    assert.notEqual(
      n,
      null,
      `client closed before sending a line (got ${
        JSON.stringify(dec.decode(new Uint8Array(bytes)))
      })`,
    );
    bytes.push(...buf.subarray(0, n!));
  }
  return dec.decode(new Uint8Array(bytes));
}

/** Reads whatever the client still sends until it closes its side. */
async function readRest(conn: Deno.Conn): Promise<string> {
  let text = "";
  const buf = new Uint8Array(4096);
  for (;;) {
    const n = await conn.read(buf).catch(() => null);
    if (n === null) return text;
    text += dec.decode(buf.subarray(0, n));
  }
}

async function write(conn: Deno.Conn, data: string | Uint8Array): Promise<void> {
  const bytes = typeof data === "string" ? enc.encode(data) : data;
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

/** A temp dir, removed afterwards. */
async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "pm_client_test_" });
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  };
}

function tcpPort(listener: Deno.Listener): number {
  return (listener.addr as Deno.NetAddr).port;
}

Deno.test("json: event lines pass through exactly, across split lines and split UTF-8", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/pm.sock`;
  using listener = Deno.listen({ transport: "unix", path });
  await using client = new Client(["--socket", path]);
  const conn = await accept(listener, client);
  const a = execLine(10, "/bin/sh -c 'echo \"hi\"'");
  const b = execLine(11, "split line");
  const c = execLine(12, "café ☕ 日本");
  const cBytes = enc.encode(c + "\n");
  const cut = enc.encode(c.slice(0, c.indexOf("☕"))).length + 1; // inside the 3-byte ☕
  try {
    await write(conn, a + "\n" + b.slice(0, 20));
    await client.waitFor(a + "\n");
    await write(conn, b.slice(20) + "\n");
    await client.waitFor(b + "\n");
    await write(conn, cBytes.subarray(0, cut));
    await delay(50); // lets the client read the first part on its own
    await write(conn, cBytes.subarray(cut));
    await write(conn, "\nnot json\n[1,2]\n");
    await client.waitFor(c + "\n");
  } finally {
    closeQuietly(conn);
  }
  const r = await client.result();
  assert.equal(r.code, 0, client.dump());
  assert.equal(r.stdout, `${a}\n${b}\n${c}\n`);
  assert.match(r.stderr, /not a JSON object: "not json"/);
  assert.match(r.stderr, /not a JSON object: "\[1,2\]"/);
});

Deno.test("SIGUSR1 opens no debugger in the client: it goes on printing events", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/pm.sock`;
  using listener = Deno.listen({ transport: "unix", path });
  await using client = new Client(["--socket", path]);
  const conn = await accept(listener, client);
  const before = execLine(20, "before SIGUSR1");
  const after = execLine(21, "after SIGUSR1");
  try {
    await write(conn, before + "\n");
    await client.waitFor(before + "\n");
    // Deno's own SIGUSR1 listener, which would start its inspector on 127.0.0.1:9229, is
    // installed 500 ms after start.
    await delay(1000);
    client.child.kill("SIGUSR1");
    client.child.kill("SIGUSR1");
    await delay(1000);
    assert.deepEqual(listeningPorts(client.child.pid), [], "the client listens on no TCP port");
    await write(conn, after + "\n");
    await client.waitFor(after + "\n");
  } finally {
    closeQuietly(conn);
  }
  const r = await client.result();
  assert.equal(r.code, 0, client.dump());
  assert.equal(r.stdout, `${before}\n${after}\n`);
  assert.doesNotMatch(r.stderr, /Debugger|inspector/i);
});

Deno.test("text: prints the formatted event without colour into a pipe", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/pm.sock`;
  using listener = Deno.listen({ transport: "unix", path });
  await using client = new Client(["--socket", path, "--format", "text"], {
    env: { TERM: "xterm-256color" },
  });
  const conn = await accept(listener, client);
  try {
    await write(conn, execLine(4242, "/usr/bin/true --flag") + "\n");
    await write(conn, JSON.stringify({ event: "exit" }) + "\n"); // malformed: skipped
    await client.waitFor("--flag");
  } finally {
    closeQuietly(conn);
  }
  const r = await client.result();
  assert.equal(r.code, 0, client.dump());
  assert.match(r.stdout, /^03:04:05\.000006 exec +4242 +1 root +\/usr\/bin\/true --flag\n$/);
  assert.ok(!r.stdout.includes("\x1b"), "no ANSI escapes when stdout is a pipe");
  assert.match(r.stderr, /Skipping a malformed exit event/);
});

Deno.test("text: prints lost events, and events with a host in a host column", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/pm.sock`;
  using listener = Deno.listen({ transport: "unix", path });
  await using client = new Client(["--socket", path, "--format", "text"]);
  const conn = await accept(listener, client);
  const lost = { event: "lost", time: "2025-01-02T03:04:05.000007Z", count: 3, where: "kernel" };
  try {
    await write(conn, JSON.stringify(lost) + "\n");
    await write(conn, JSON.stringify({ ...lost, host: "web1" }) + "\n");
    await client.waitFor("web1");
  } finally {
    closeQuietly(conn);
  }
  const r = await client.result();
  assert.equal(r.code, 0, client.dump());
  assert.equal(
    r.stdout,
    "03:04:05.000007 lost           -       - -          LOST 3 events (kernel)\n" +
      "03:04:05.000007 web1         lost           -       - -          LOST 3 events (kernel)\n",
  );
  assert.doesNotMatch(r.stderr, /Skipping/);
});

Deno.test("unix: a server at its client limit → exit 1 with one sentence", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/pm.sock`;
  using listener = Deno.listen({ transport: "unix", path });
  await using client = new Client(["--socket", path]);
  const conn = await accept(listener, client);
  try {
    await write(conn, '{"error":"too many clients","limit":3}\n');
  } finally {
    closeQuietly(conn);
  }
  const r = await client.result();
  assert.equal(r.code, 1, client.dump());
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /The server refused the connection: too many clients \(limit 3\)/);
});

Deno.test("unix: no socket file → exit 1 with one sentence", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/missing.sock`;
  await using client = new Client(["--socket", path]);
  const r = await client.result();
  assert.equal(r.code, 1, client.dump());
  assert.equal(r.stdout, "");
  assert.ok(
    r.stderr.includes(`Cannot connect to ${path}: no such file (is procMonitor running?)`),
    client.dump(),
  );
  assert.equal(r.stderr.trim().split("\n").length, 1, "one line on stderr");
});

Deno.test("tcp: sends exactly the password line, before the prompt, then prints events", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using client = new Client([
    "--tcp",
    "--host",
    "127.0.0.1",
    "--port",
    String(tcpPort(listener)),
    "--auth",
    "pw",
  ]);
  const conn = await accept(listener, client);
  const ev1 = execLine(1, "first");
  const ev2 = execLine(2, "second");
  try {
    // The client must not wait for the prompt before sending the password.
    assert.equal(await readLine(conn), "pw\n");
    // Prompt, result and the first event in one write; the next event split.
    await write(conn, `Password: Authentication successful.\n${ev1}\n${ev2.slice(0, 9)}`);
    await client.waitFor(ev1 + "\n");
    await write(conn, ev2.slice(9) + "\n");
    await client.waitFor(ev2 + "\n");
    await conn.closeWrite();
    assert.equal(await readRest(conn), "", "nothing after the password line");
  } finally {
    closeQuietly(conn);
  }
  const r = await client.result();
  assert.equal(r.code, 0, client.dump());
  assert.equal(r.stdout, `${ev1}\n${ev2}\n`);
  assert.ok(!r.stderr.includes("pw"), "the password is never logged");
});

Deno.test("tcp: prompt and result split anywhere still authenticate", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using client = new Client([
    "--tcp",
    "--port",
    String(tcpPort(listener)),
  ], { env: { PROCMONITOR_AUTH: "s3cret" } });
  const conn = await accept(listener, client);
  const ev = execLine(7, "after handshake");
  try {
    await write(conn, "Pass");
    await delay(30);
    await write(conn, "word: ");
    assert.equal(await readLine(conn), "s3cret\n");
    await write(conn, "Authentication succ");
    await delay(30);
    await write(conn, `essful.\n${ev}\n`);
    await client.waitFor(ev + "\n");
  } finally {
    closeQuietly(conn);
  }
  const r = await client.result();
  assert.equal(r.code, 0, client.dump());
  assert.equal(r.stdout, ev + "\n");
});

Deno.test("tcp: wrong password → exit 1 with one sentence, no retry even with --reconnect", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using client = new Client([
    "--tcp",
    "--port",
    String(tcpPort(listener)),
    "--auth",
    "wrong-pw",
    "--reconnect",
  ]);
  const conn = await accept(listener, client);
  try {
    await write(conn, "Password: ");
    assert.equal(await readLine(conn), "wrong-pw\n");
    await write(conn, "Authentication failed. Disconnecting.\n");
  } finally {
    closeQuietly(conn);
  }
  const r = await client.result();
  assert.equal(r.code, 1, client.dump());
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /Authentication failed: the server rejected the password/);
  assert.doesNotMatch(r.stderr, /Reconnecting/);
  assert.ok(!r.stderr.includes("wrong-pw"), "the password is never logged");
});

Deno.test("tcp: the server closing during the handshake → exit 1 with one sentence", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = tcpPort(listener);
  await using client = new Client(["--tcp", "--port", String(port), "--auth", "pw"]);
  const conn = await accept(listener, client);
  try {
    await write(conn, "Password: ");
    await readLine(conn);
  } finally {
    closeQuietly(conn);
  }
  const r = await client.result();
  assert.equal(r.code, 1, client.dump());
  assert.match(
    r.stderr,
    new RegExp(`127\\.0\\.0\\.1:${port} closed the connection during authentication`),
  );
});

Deno.test("tls: with --ca the handshake runs inside TLS", async () => {
  await using dir = await tempDir();
  const { certFile, cert, key } = await makeCert(dir.path);
  using listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
  await using client = new Client([
    "--tcp",
    "--host",
    "127.0.0.1",
    "--port",
    String(tcpPort(listener)),
    "--auth",
    "pw",
    "--tls",
    "--ca",
    certFile,
  ]);
  const conn = await accept(listener, client);
  const ev = execLine(99, "over tls");
  try {
    await write(conn, "Password: ");
    assert.equal(await readLine(conn), "pw\n");
    await write(conn, `Authentication successful.\n${ev}\n`);
    await client.waitFor(ev + "\n");
  } finally {
    closeQuietly(conn);
  }
  const r = await client.result();
  assert.equal(r.code, 0, client.dump());
  assert.equal(r.stdout, ev + "\n");
});

/** Runs a TLS server with the test certificate that the client is expected to refuse. */
async function tlsRefusal(
  hostname: string,
  extra: (certFile: string) => string[],
): Promise<Result> {
  await using dir = await tempDir();
  const { certFile, cert, key } = await makeCert(dir.path);
  using listener = Deno.listenTls({ hostname, port: 0, cert, key });
  await using client = new Client([
    "--tcp",
    "--host",
    hostname,
    "--port",
    String(tcpPort(listener)),
    "--auth",
    "pw",
    "--tls",
    ...extra(certFile),
  ]);
  const conn = await accept(listener, client);
  try {
    await conn.handshake().catch(() => {}); // the client rejects the certificate
    const r = await client.result();
    assert.equal(r.code, 1, client.dump());
    assert.equal(r.stdout, "");
    return r;
  } finally {
    closeQuietly(conn);
  }
}

Deno.test("tls: without --ca an untrusted certificate → exit 1, suggests --ca", async () => {
  const r = await tlsRefusal("127.0.0.1", () => []);
  assert.match(r.stderr, /with TLS: the server's certificate is not trusted \(.*--ca FILE\)/);
});

Deno.test("tls: a certificate for another name → exit 1 and says so", async () => {
  // The certificate is for localhost and 127.0.0.1; 127.0.0.2 is loopback too on Linux.
  const r = await tlsRefusal("127.0.0.2", (certFile) => ["--ca", certFile]);
  assert.match(r.stderr, /certificate is not valid for the name 127\.0\.0\.2/);
});

Deno.test("--reconnect: reconnects after the server closes; SIGTERM exits 0", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/pm.sock`;
  using listener = Deno.listen({ transport: "unix", path });
  await using client = new Client(["--socket", path, "--reconnect"]);
  const first = execLine(1, "first connection");
  const second = execLine(2, "second connection");
  const conn1 = await accept(listener, client);
  try {
    await write(conn1, first + "\n");
    await client.waitFor(first + "\n");
  } finally {
    closeQuietly(conn1);
  }
  const conn2 = await accept(listener, client);
  try {
    await write(conn2, second + "\n");
    await client.waitFor(second + "\n");
    client.child.kill("SIGTERM");
    const r = await client.result();
    assert.equal(r.code, 0, client.dump());
    assert.equal(r.stdout, `${first}\n${second}\n`);
    assert.match(r.stderr, /Reconnecting to .* in 0\.5 s/);
    assert.match(r.stderr, /Reconnected to /);
  } finally {
    closeQuietly(conn2);
  }
});

Deno.test("--reconnect: retries while the socket is missing; SIGINT exits 0", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/later.sock`;
  await using client = new Client(["--socket", path, "--reconnect"]);
  await client.waitFor("Reconnecting", "stderr");
  using listener = Deno.listen({ transport: "unix", path });
  const conn = await accept(listener, client);
  try {
    const ev = execLine(3, "server came up");
    await write(conn, ev + "\n");
    await client.waitFor(ev + "\n");
    client.child.kill("SIGINT");
    const r = await client.result();
    assert.equal(r.code, 0, client.dump());
    assert.match(r.stderr, /no such file \(is procMonitor running\?\)/);
  } finally {
    closeQuietly(conn);
  }
});

Deno.test("a closed stdout (| head) ends the client quietly with exit 0", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/pm.sock`;
  using listener = Deno.listen({ transport: "unix", path });
  await using client = new Client(["--socket", path], { stdout: false });
  const conn = await accept(listener, client);
  try {
    const batch = enc.encode((execLine(5, "x".repeat(200)) + "\n").repeat(500));
    // Keep sending until the client, failing to write to stdout, goes away.
    const exited = client.child.status.then(() => true);
    let gone = false;
    while (!gone) {
      gone = await Promise.race([write(conn, batch).then(() => false, () => true), exited]);
    }
  } finally {
    closeQuietly(conn);
  }
  const r = await client.result();
  assert.equal(r.code, 0, client.dump());
  assert.equal(r.stderr, "");
});
