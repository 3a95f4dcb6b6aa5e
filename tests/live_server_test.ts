/**
 * Live tests of the server: the real program, run as a subprocess against the real kernel,
 * serving real child processes' events to real clients over its Unix socket, over TCP (v1's
 * password handshake, TLS) and on the console. Where possible the clients are programs this
 * project did not write: Python's socket module, nc or socat, openssl-made certificates,
 * raw sockets.
 */
import assert from "node:assert/strict";
import { type Finished, liveTest, marker, MonitorProcess, run, runMain } from "./support/live.ts";
import { makeCert } from "./support/tls.ts";
import { closeQuietly } from "../lib/outputs/connections.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const MAIN = `${ROOT}main.ts`;
const PYTHON = "/usr/bin/python3";
const NODE = "/usr/bin/node";

const PROMPT = "Password: ";
const AUTH_OK = "Authentication successful.\n";
const AUTH_FAILED = "Authentication failed. Disconnecting.\n";

const encoder = new TextEncoder();

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `cond` until it holds; a throwing `cond` fails the wait at once. */
async function waitUntil(
  cond: () => boolean,
  ms: number,
  what: string | (() => string),
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() >= deadline) {
      throw new Error(
        `Timed out after ${ms} ms waiting for ${typeof what === "string" ? what : what()}`,
      );
    }
    await delay(10);
  }
}

/** How much of a stream {@link Received.text} keeps. */
const TEXT_KEPT = 1 << 20;

/** Everything read from one stream, split into lines as it arrives. */
class Received {
  /** Complete lines, without their `\n`. */
  readonly lines: string[] = [];
  /** What was decoded first (the first MiB: handshakes, refusals). */
  text = "";
  /** Characters decoded in all. */
  length = 0;
  /** The start of a line whose `\n` has not arrived (yet). */
  partial = "";
  /** The stream ended (EOF, reset or closed by us). */
  eof = false;
  /** The read error that ended the stream, if any (e.g. a reset). */
  error: unknown = null;
  readonly done: Promise<void>;

  constructor(
    readonly name: string,
    source: AsyncIterable<Uint8Array>,
    readonly onLine?: (line: string) => void,
  ) {
    this.done = this.#pump(source);
  }

  async #pump(source: AsyncIterable<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of source) this.#add(decoder.decode(chunk, { stream: true }));
    } catch (error) {
      this.error = error;
    }
    this.#add(decoder.decode());
    this.eof = true;
  }

  #add(text: string): void {
    if (text === "") return;
    if (this.text.length < TEXT_KEPT) this.text += text;
    this.length += text.length;
    const parts = (this.partial + text).split("\n");
    this.partial = parts.pop()!;
    for (const line of parts) {
      this.lines.push(line);
      this.onLine?.(line);
    }
  }

  /** Lines that look like JSON objects (skips TCP's handshake line). */
  jsonLines(): string[] {
    return this.lines.filter((l) => l.startsWith("{"));
  }

  describe(): string {
    const tail = this.lines.slice(-8).map((l) => `  ${l.slice(0, 300)}`).join("\n");
    return `${this.name} (${this.lines.length} lines${this.eof ? ", ended" : ""}` +
      `${this.error ? `, error ${this.error}` : ""}); last lines:\n${tail}` +
      (this.partial ? `\n  partial: ${this.partial.slice(0, 300)}` : "");
  }

  /** The first line (since the beginning) matching `pred`; fails if the stream ends first. */
  async waitLine(pred: (line: string) => boolean, ms: number, what: string): Promise<string> {
    let i = 0;
    let found: string | undefined;
    await waitUntil(
      () => {
        for (; i < this.lines.length; i++) {
          if (pred(this.lines[i])) {
            found = this.lines[i];
            return true;
          }
        }
        if (this.eof) throw new Error(`${what}: the stream ended first; ${this.describe()}`);
        return false;
      },
      ms,
      () => `${what}; ${this.describe()}`,
    );
    return found!;
  }

  /** Waits for the end of the stream. */
  async waitEnd(ms: number): Promise<void> {
    await waitUntil(() => this.eof, ms, () => `the end of ${this.describe()}`);
    await this.done;
  }
}

/** Reads a connection until EOF; closing it from our side ends the stream quietly. */
async function* readConn(conn: Deno.Conn, bytes = 64 * 1024): AsyncGenerator<Uint8Array> {
  const buf = new Uint8Array(bytes);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch (error) {
      if (error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted) {
        return;
      }
      throw error;
    }
    if (n === null) return;
    yield buf.slice(0, n);
  }
}

/** Like readConn, but reads nothing until `gate` resolves, then `bytes` per `pauseMs`. */
async function* readPaced(
  conn: Deno.Conn,
  gate: Promise<void>,
  bytes: number,
  pauseMs: number,
): AsyncGenerator<Uint8Array> {
  await gate;
  for await (const chunk of readConn(conn, bytes)) {
    yield chunk;
    await delay(pauseMs);
  }
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** A socket client written here with Deno.connect: reads everything the server sends. */
class SocketClient implements AsyncDisposable {
  readonly received: Received;
  constructor(
    readonly conn: Deno.Conn,
    name: string,
    onLine?: (line: string) => void,
    read: (conn: Deno.Conn) => AsyncIterable<Uint8Array> = readConn,
  ) {
    this.received = new Received(name, read(conn), onLine);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    closeQuietly(this.conn);
    await this.received.done;
  }
}

const CONNECTED = /Client "[^"]+" connected to/g;

/** How many clients the server has logged as connected (a client counts once registered). */
function connectedCount(monitor: MonitorProcess): number {
  return monitor.stderr.match(CONNECTED)?.length ?? 0;
}

/** Waits until the server has registered `n` clients in all (so they receive what follows). */
async function clientsRegistered(monitor: MonitorProcess, n: number, what: string): Promise<void> {
  await monitor.until(() => connectedCount(monitor) >= n, 15_000, what);
}

/** Waits for the server to log a line matching `pattern` (its stderr arrives through a pipe). */
async function logged(monitor: MonitorProcess, pattern: RegExp): Promise<void> {
  await monitor.until(() => pattern.test(monitor.stderr), 10_000, `a log line ${pattern}`);
}

/** A Unix-socket client, returned once the server has registered it. */
async function unixClient(
  monitor: MonitorProcess,
  path: string,
  name: string,
  onLine?: (line: string) => void,
): Promise<SocketClient> {
  const before = connectedCount(monitor);
  const client = new SocketClient(await Deno.connect({ transport: "unix", path }), name, onLine);
  await clientsRegistered(monitor, before + 1, `${name} to be registered`);
  return client;
}

/**
 * A TCP client doing v1's handshake by hand. `promptFirst`: wait for the prompt before
 * sending the password; otherwise send it at once, as v1's Node client did. Returned once
 * authenticated and registered.
 */
async function tcpClient(
  monitor: MonitorProcess,
  port: number,
  password: string,
  name: string,
  promptFirst: boolean,
): Promise<SocketClient> {
  const before = connectedCount(monitor);
  const client = new SocketClient(
    await Deno.connect({ hostname: "127.0.0.1", port, transport: "tcp" }),
    name,
  );
  const r = client.received;
  try {
    if (promptFirst) {
      await waitUntil(() => r.text.length >= PROMPT.length || r.eof, 10_000, `${name}'s prompt`);
      assert.equal(r.text, PROMPT, `${name}: the prompt, and nothing before the password`);
    }
    await writeAll(client.conn, encoder.encode(`${password}\n`));
    const expected = PROMPT + AUTH_OK;
    await waitUntil(
      () => r.text.length >= expected.length || r.eof,
      10_000,
      () => `${name}'s handshake; ${r.describe()}`,
    );
    assert.equal(r.text.slice(0, expected.length), expected, `${name}: v1's handshake`);
    await clientsRegistered(monitor, before + 1, `${name} to be registered`);
  } catch (error) {
    await client[Symbol.asyncDispose]();
    throw error;
  }
  return client;
}

/** A child process whose stdout and stderr are collected. */
class Child implements AsyncDisposable {
  readonly out: Received;
  readonly err: Received;
  readonly status: Promise<Deno.CommandStatus>;
  finished: Deno.CommandStatus | null = null;

  private constructor(readonly name: string, readonly proc: Deno.ChildProcess) {
    this.out = new Received(`${name} stdout`, proc.stdout);
    this.err = new Received(`${name} stderr`, proc.stderr);
    this.status = proc.status.then((s) => this.finished = s);
  }

  /** Starts `cmd ARGS`; `stdin: "piped"` keeps stdin open (never written) until disposal. */
  static spawn(
    name: string,
    cmd: string,
    args: string[],
    opts: { env?: Record<string, string>; stdin?: "null" | "piped" } = {},
  ): Child {
    const proc = new Deno.Command(cmd, {
      args,
      cwd: ROOT,
      stdin: opts.stdin ?? "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", ...opts.env },
    }).spawn();
    return new Child(name, proc);
  }

  get pid(): number {
    return this.proc.pid;
  }

  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      this.proc.kill(signal);
    } catch {
      // Exited already.
    }
  }

  /** Waits for the exit; on a timeout the child is killed and the wait fails. */
  async exit(ms: number): Promise<Deno.CommandStatus> {
    try {
      await waitUntil(
        () => this.finished !== null,
        ms,
        () => `${this.name} to exit; ${this.out.describe()}\n${this.err.text}`,
      );
    } catch (error) {
      this.kill("SIGKILL");
      throw error;
    }
    await Promise.all([this.out.done, this.err.done]);
    return this.finished!;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.finished === null) this.kill("SIGKILL");
    await this.status;
    try {
      await this.proc.stdin.close();
    } catch {
      // Not piped, or the child is gone.
    }
    await Promise.all([this.out.done, this.err.done]);
  }
}

/** `procMonitor client ARGS`. */
function mainClient(name: string, args: string[]): Child {
  return Child.spawn(name, Deno.execPath(), ["run", "-q", "-A", MAIN, "client", ...args]);
}

/** A temporary directory, removed on disposal. */
async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "pm-live-" });
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }).catch(() => {}),
  };
}

/** A TCP port that was free a moment ago. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Starts a server with a free TCP port, retrying when that port was taken meanwhile. */
async function startWithPort(
  args: (port: number) => string[],
): Promise<{ monitor: MonitorProcess; port: number }> {
  for (let attempt = 1;; attempt++) {
    const port = freePort();
    try {
      return { monitor: await MonitorProcess.start(args(port)), port };
    } catch (error) {
      if (attempt < 5 && /already in use/.test(String(error))) continue;
      throw error;
    }
  }
}

/** Stops the server, failing (the server then killed by disposal) when it takes too long. */
async function stopWithin(
  monitor: MonitorProcess,
  signal: Deno.Signal,
  ms: number,
): Promise<Finished> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`procMonitor did not exit within ${ms} ms of ${signal}`)),
      ms,
    );
  });
  try {
    return await Promise.race([monitor.stop(signal), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function password(): string {
  return `pw-${crypto.randomUUID()}`;
}

async function lstatOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.lstat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

/** Whether an executable of that name is installed. */
function installed(name: string): string | null {
  for (const dir of ["/usr/bin", "/bin", "/usr/local/bin"]) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // Not there.
    }
  }
  return null;
}

/** Whether `nc` is a netcat with `-U` (netcat-openbsd, ncat), not netcat-traditional. */
async function supportsUnixSockets(nc: string): Promise<boolean> {
  const help = await new Deno.Command(nc, { args: ["-h"], stdin: "null" }).output();
  const text = new TextDecoder().decode(help.stdout) + new TextDecoder().decode(help.stderr);
  return /^\s*-U\b/m.test(text);
}

/**
 * The marker process: `/bin/sh -c "sleep 0.05; /bin/true; exit 0" MARKER`. It lives long
 * enough for its cmdline to be read at exec time, and its exec, its two forks and its exit
 * all carry the marker (a fork carries its parent's cmdline).
 */
const MARKER_SCRIPT = "sleep 0.05; /bin/true; exit 0";

async function runMarker(m: string): Promise<number> {
  const { pid, status } = await run("/bin/sh", ["-c", MARKER_SCRIPT, m]);
  assert.equal(status.code, 0);
  return pid;
}

function parse(line: string): Record<string, unknown> {
  return JSON.parse(line) as Record<string, unknown>;
}

/** The marker process's exec line. */
const isExecOf = (m: string) => (line: string) =>
  line.startsWith('{"event":"exec"') && line.includes(m);
/** The marker process's exit line. */
const isExitOf = (m: string) => (line: string) =>
  line.startsWith('{"event":"exit"') && line.includes(m);

const EXEC_TIMEOUT = 15_000;

// ---------------------------------------------------------------------------------------------
// Unix socket
// ---------------------------------------------------------------------------------------------

liveTest("three Unix-socket clients receive the same events in the same order", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/pm.sock`;
  await using monitor = await MonitorProcess.start(["-s", sock]);
  await using a = await unixClient(monitor, sock, "client a");
  await using b = await unixClient(monitor, sock, "client b");
  await using c = await unixClient(monitor, sock, "client c");
  const m = marker("order");
  const pid = await runMarker(m);

  const windows: string[][] = [];
  for (const client of [a, b, c]) {
    const r = client.received;
    const exit = await r.waitLine(isExitOf(m), EXEC_TIMEOUT, `the marker's exit at ${r.name}`);
    assert.equal(parse(exit).pid, pid);
    const mine = r.lines.filter((l) => l.includes(m));
    assert.deepEqual(
      mine.map((l) => parse(l).event),
      ["exec", "fork", "fork", "exit"],
      `${r.name}: the marker's events in kernel order`,
    );
    // Every line from the marker's exec to its exit, other processes' events included.
    windows.push(r.lines.slice(r.lines.indexOf(mine[0]), r.lines.indexOf(exit) + 1));
  }
  assert.deepEqual(windows[1], windows[0], "client b saw what client a saw, byte for byte");
  assert.deepEqual(windows[2], windows[0], "client c saw what client a saw, byte for byte");
});

/** Reads the Unix socket, prints the marker's lines, stops after the marker's exit. */
const PY_UNIX_CLIENT = `
import os, socket, sys
m = os.environ["PM_MARKER"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
for raw in s.makefile("rb"):
    line = raw.decode("utf-8")
    if m in line:
        sys.stdout.write(line)
        sys.stdout.flush()
        if line.startswith('{"event":"exit"'):
            break
`;

/** v1's handshake (prompt first, then the password), then as PY_UNIX_CLIENT. */
const PY_TCP_CLIENT = `
import json, os, socket, sys
m = os.environ["PM_MARKER"]
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
prompt = b""
while len(prompt) < 10:
    chunk = s.recv(10 - len(prompt))
    if not chunk:
        break
    prompt += chunk
s.sendall(os.environ["PM_PASSWORD"].encode() + b"\\n")
f = s.makefile("rb")
print(json.dumps([prompt.decode(), f.readline().decode()]), flush=True)
for raw in f:
    line = raw.decode("utf-8")
    if m in line:
        sys.stdout.write(line)
        sys.stdout.flush()
        if line.startswith('{"event":"exit"'):
            break
`;

liveTest("plain Python socket clients receive events over the Unix socket and TCP", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/pm.sock`;
  const pw = password();
  const started = await startWithPort((
    port,
  ) => ["-s", sock, "-t", String(port), "-a", pw, "--bind", "127.0.0.1"]);
  await using monitor = started.monitor;
  const m = marker("python");
  const env = { PM_MARKER: m, PM_PASSWORD: pw };
  await using unix = Child.spawn("python unix client", PYTHON, ["-c", PY_UNIX_CLIENT, sock], {
    env,
  });
  await clientsRegistered(monitor, 1, "the Python Unix client");
  await using tcp = Child.spawn("python tcp client", PYTHON, [
    "-c",
    PY_TCP_CLIENT,
    String(started.port),
  ], { env });
  await clientsRegistered(monitor, 2, "the Python TCP client");
  const pid = await runMarker(m);

  for (const client of [unix, tcp]) {
    const status = await client.exit(EXEC_TIMEOUT);
    assert.equal(status.code, 0, `${client.name}: ${client.err.text}`);
    assert.equal(client.err.text, "", `${client.name} wrote to stderr`);
  }
  assert.deepEqual(JSON.parse(tcp.out.lines[0]), [PROMPT, AUTH_OK], "the TCP handshake");
  for (const lines of [unix.out.lines, tcp.out.lines.slice(1)]) {
    const events = lines.map(parse);
    assert.deepEqual(events.map((e) => e.event), ["exec", "fork", "fork", "exit"]);
    assert.equal(events[0].pid, pid);
    assert.equal(events[0].cmdline, `/bin/sh -c ${MARKER_SCRIPT} ${m}`);
    assert.equal(events[3].pid, pid);
    assert.equal(events[3].exit_status, 0);
  }
  assert.deepEqual(unix.out.lines, tcp.out.lines.slice(1), "the same lines on both transports");
});

liveTest(
  "once started, the daemon gives back its start-up pages and serves events as before",
  async () => {
    await using dir = await tempDir();
    const sock = `${dir.path}/pm.sock`;
    await using monitor = await MonitorProcess.start(["-s", sock, "--log-level", "debug"]);
    const gaveBack =
      /Gave back (\d+) KiB of start-up pages in (\d+) file mappings \((\d+) refused\); resident file pages (\d+) -> (\d+) KiB/;
    await monitor.until(() => gaveBack.test(monitor.stderr), 10_000, "the start-up pages line");
    const [, kib, mappings, refused, before, after] = gaveBack.exec(monitor.stderr)!.map(Number);
    assert.ok(kib > 0 && mappings > 0, `gave back ${kib} KiB in ${mappings} mappings`);
    assert.equal(refused, 0);
    assert.ok(after < before / 2, `resident file pages ${before} -> ${after} KiB`);
    await using client = await unixClient(monitor, sock, "client");
    const m = marker("pages");
    const pid = await runMarker(m);
    const exit = await client.received.waitLine(isExitOf(m), EXEC_TIMEOUT, "the marker's exit");
    assert.equal(parse(exit).pid, pid);
    assert.ok(client.received.lines.some(isExecOf(m)), "the marker's exec with its cmdline");
  },
);

liveTest("nc -U (or socat) receives events over the Unix socket", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/pm.sock`;
  await using monitor = await MonitorProcess.start(["-s", sock]);
  const nc = installed("nc");
  const socat = installed("socat");
  let reader: [string, string[]];
  if (nc !== null && await supportsUnixSockets(nc)) {
    reader = [nc, ["-U", sock]];
  } else if (socat !== null) {
    reader = [socat, ["-u", `UNIX-CONNECT:${sock}`, "STDOUT"]];
  } else if (Deno.env.get("CI")) {
    throw new Error("CI must have nc (netcat-openbsd) or socat: .ci/run installs netcat-openbsd");
  } else {
    // Neither is installed here: a byte copier in Python stands in (no line handling).
    console.warn("live_server_test: neither nc nor socat is installed; using a Python copier");
    reader = [PYTHON, [
      "-c",
      "import os, socket, sys\n" +
      "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n" +
      "while True:\n    b = s.recv(65536)\n    if not b: break\n    os.write(1, b)\n",
      sock,
    ]];
  }
  // stdin stays open: some nc variants shut their sending side at stdin's EOF.
  await using client = Child.spawn(reader[0], reader[0], reader[1], { stdin: "piped" });
  await clientsRegistered(monitor, 1, `${reader[0]} to connect`);
  const m = marker("nc");
  const pid = await runMarker(m);
  const exec = await client.out.waitLine(isExecOf(m), EXEC_TIMEOUT, "the marker's exec");
  assert.equal(parse(exec).pid, pid);
  await client.out.waitLine(isExitOf(m), EXEC_TIMEOUT, "the marker's exit");
  assert.equal(client.finished, null, `${reader[0]} is still connected`);
});

liveTest(
  "-c 2: a third Unix client is told 'too many clients', the first two keep receiving",
  async () => {
    await using dir = await tempDir();
    const sock = `${dir.path}/pm.sock`;
    await using monitor = await MonitorProcess.start(["-s", sock, "-c", "2"]);
    await using a = await unixClient(monitor, sock, "client a");
    await using b = await unixClient(monitor, sock, "client b");
    await using third = new SocketClient(
      await Deno.connect({ transport: "unix", path: sock }),
      "client c",
    );
    await third.received.waitEnd(10_000);
    assert.equal(third.received.text, '{"error":"too many clients","limit":2}\n');
    await logged(monitor, /Refused client "unix#3".*too many clients \(limit 2\)/);

    const m = marker("limit");
    const pid = await runMarker(m);
    for (const client of [a, b]) {
      const exec = await client.received.waitLine(isExecOf(m), EXEC_TIMEOUT, "the marker's exec");
      assert.equal(parse(exec).pid, pid);
    }
  },
);

liveTest(
  "--socket at a regular file or a directory: exit 1, one sentence, nothing touched",
  async () => {
    await using dir = await tempDir();
    const file = `${dir.path}/precious.txt`;
    const content = "do not delete me\n";
    await Deno.writeTextFile(file, content);
    const onFile = await runMain(["-s", file]);
    assert.equal(onFile.code, 1, onFile.stderr);
    assert.equal(onFile.stdout, "");
    const fileLines = onFile.stderr.trim().split("\n");
    assert.equal(fileLines.length, 1, `one line on stderr:\n${onFile.stderr}`);
    assert.match(fileLines[0], new RegExp(`Cannot listen on ${file} as it is a regular file$`));
    assert.equal(await Deno.readTextFile(file), content, "the file is unchanged");

    const sub = `${dir.path}/a-directory`;
    await Deno.mkdir(sub);
    await Deno.writeTextFile(`${sub}/inside`, "x");
    const onDir = await runMain(["-s", sub]);
    assert.equal(onDir.code, 1, onDir.stderr);
    assert.equal(onDir.stdout, "");
    const dirLines = onDir.stderr.trim().split("\n");
    assert.equal(dirLines.length, 1, `one line on stderr:\n${onDir.stderr}`);
    assert.match(dirLines[0], new RegExp(`Cannot listen on ${sub} as it is a directory$`));
    assert.ok((await Deno.lstat(sub)).isDirectory, "the directory is still there");
    assert.equal(await Deno.readTextFile(`${sub}/inside`), "x", "with its content");
  },
);

liveTest(
  "a socket served by a live procMonitor is refused, and the first keeps serving",
  async () => {
    await using dir = await tempDir();
    const sock = `${dir.path}/pm.sock`;
    await using first = await MonitorProcess.start(["-s", sock]);
    const before = await Deno.lstat(sock);
    const second = await runMain(["-s", sock]);
    assert.equal(second.code, 1, second.stderr);
    const lines = second.stderr.trim().split("\n");
    assert.equal(lines.length, 1, `one line on stderr:\n${second.stderr}`);
    assert.match(lines[0], /Cannot listen on .* as another server is already listening there$/);
    const after = await Deno.lstat(sock);
    assert.ok(after.isSocket);
    assert.equal(after.ino, before.ino, "the first server's socket file was left alone");

    // The second server's liveness probe was a (short) client of the first: count it.
    await using client = await unixClient(first, sock, "client");
    const m = marker("live");
    const pid = await runMarker(m);
    const exec = await client.received.waitLine(isExecOf(m), EXEC_TIMEOUT, "the marker's exec");
    assert.equal(parse(exec).pid, pid);
  },
);

liveTest("the socket file has mode 0666 (or --socket-mode) and is removed on SIGTERM", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/pm.sock`;
  for (const [args, mode] of [[[], 0o666], [["--socket-mode", "0660"], 0o660]] as const) {
    await using monitor = await MonitorProcess.start(["-s", sock, ...args]);
    const st = await Deno.lstat(sock);
    assert.ok(st.isSocket, "a socket");
    assert.equal(st.mode! & 0o7777, mode, `mode ${mode.toString(8)} with [${args}]`);
    const done = await stopWithin(monitor, "SIGTERM", 15_000);
    assert.equal(done.code, 0, done.stderr);
    assert.equal(await lstatOrNull(sock), null, "the socket file is removed");
  }
  // No leftovers (such as the temporary name the socket was bound under).
  assert.deepEqual([...Deno.readDirSync(dir.path)], []);
});

liveTest("a stale socket left by a SIGKILLed server is replaced by the next start", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/pm.sock`;
  const killed = await MonitorProcess.start(["-s", sock]);
  const done = await killed.stop("SIGKILL");
  assert.equal(done.signal, "SIGKILL");
  assert.ok((await Deno.lstat(sock)).isSocket, "the socket file stays after SIGKILL");
  await assert.rejects(
    Deno.connect({ transport: "unix", path: sock }),
    Deno.errors.ConnectionRefused,
    "nobody listens on it",
  );

  await using monitor = await MonitorProcess.start(["-s", sock]);
  assert.match(monitor.stderr, /Replaced the stale socket/);
  await using client = await unixClient(monitor, sock, "client");
  const m = marker("stale");
  const pid = await runMarker(m);
  const exec = await client.received.waitLine(isExecOf(m), EXEC_TIMEOUT, "the marker's exec");
  assert.equal(parse(exec).pid, pid);
});

// ---------------------------------------------------------------------------------------------
// TCP
// ---------------------------------------------------------------------------------------------

liveTest(
  "TCP: v1's handshake, before or after the prompt; a wrong password is refused",
  async () => {
    const pw = password();
    const started = await startWithPort((
      port,
    ) => ["-t", String(port), "-a", pw, "--bind", "127.0.0.1"]);
    await using monitor = started.monitor;
    const port = started.port;
    // A careful client that waits for the prompt.
    await using good = await tcpClient(monitor, port, pw, "prompt-first client", true);

    // A wrong password: the prompt, the failure line, then EOF. Meanwhile the good client
    // keeps receiving.
    await using bad = new SocketClient(
      await Deno.connect({ hostname: "127.0.0.1", port }),
      "bad client",
    );
    await writeAll(bad.conn, encoder.encode("wrong password\n"));
    const m1 = marker("tcp1");
    const pid1 = await runMarker(m1);
    const exec1 = await good.received.waitLine(isExecOf(m1), EXEC_TIMEOUT, "exec at good client");
    assert.equal(parse(exec1).pid, pid1);
    await bad.received.waitEnd(15_000);
    assert.equal(bad.received.text, PROMPT + AUTH_FAILED);
    closeQuietly(bad.conn); // the server lingers until the client closes too
    await logged(monitor, /Authentication of "127\.0\.0\.1:\d+" failed: "wrong password"/);

    // v1's own client: the password right after connecting, before reading anything.
    await using v1 = await tcpClient(monitor, port, pw, "v1-style client", false);
    const m2 = marker("tcp2");
    const pid2 = await runMarker(m2);
    for (const client of [good, v1]) {
      const exec = await client.received.waitLine(isExecOf(m2), EXEC_TIMEOUT, "exec");
      assert.equal(parse(exec).pid, pid2);
    }
    // The first line of each stream is the handshake, then only JSON.
    for (const client of [good, v1]) {
      assert.equal(client.received.lines[0], "Password: Authentication successful.");
      for (const line of client.received.lines.slice(1)) parse(line);
    }
    const done = await stopWithin(monitor, "SIGTERM", 15_000);
    assert.equal(done.code, 0, done.stderr);
    assert.ok(!done.stderr.includes(pw), "the password is never logged");
  },
);

liveTest(
  "modes combine: -s, -t and -d at once deliver the same exec line to all three",
  async () => {
    await using dir = await tempDir();
    const sock = `${dir.path}/pm.sock`;
    const pw = password();
    const started = await startWithPort((
      port,
    ) => ["-s", sock, "-t", String(port), "-a", pw, "-d", "--bind", "127.0.0.1"]);
    await using monitor = started.monitor;
    await using unix = await unixClient(monitor, sock, "unix client");
    await using tcp = await tcpClient(monitor, started.port, pw, "tcp client", false);
    const m = marker("modes");
    const pid = await runMarker(m);
    const viaUnix = await unix.received.waitLine(isExecOf(m), EXEC_TIMEOUT, "exec over Unix");
    const viaTcp = await tcp.received.waitLine(isExecOf(m), EXEC_TIMEOUT, "exec over TCP");
    await monitor.until(
      () => monitor.stdoutText.split("\n").some(isExecOf(m)),
      EXEC_TIMEOUT,
      "exec on stdout",
    );
    const viaStdout = monitor.stdoutText.split("\n").find(isExecOf(m))!;
    assert.equal(parse(viaUnix).pid, pid);
    assert.equal(viaTcp, viaUnix);
    assert.equal(viaStdout, viaUnix);
  },
);

liveTest(
  "TLS: the client subcommand gets events; a plain TCP client gets nothing useful",
  async () => {
    await using dir = await tempDir();
    const { certFile: cert, keyFile: key } = await makeCert(dir.path);
    const pw = password();
    const authFile = `${dir.path}/auth`;
    await Deno.writeTextFile(authFile, `${pw}\n`);

    const started = await startWithPort((port) => [
      "-t",
      String(port),
      "--auth-file",
      authFile,
      "--bind",
      "127.0.0.1",
      "--tls-cert",
      cert,
      "--tls-key",
      key,
    ]);
    await using monitor = started.monitor;
    const port = String(started.port);
    await using client = mainClient("procMonitor client --tls", [
      "--tcp",
      "--host",
      "localhost",
      "--port",
      port,
      "--auth-file",
      authFile,
      "--tls",
      "--ca",
      cert,
      "--format",
      "json",
    ]);
    await clientsRegistered(monitor, 1, "the TLS client");
    const m1 = marker("tls1");
    const pid1 = await runMarker(m1);
    const exec1 = await client.out.waitLine(isExecOf(m1), EXEC_TIMEOUT, "exec at the TLS client");
    assert.equal(parse(exec1).pid, pid1);

    // Plain TCP against TLS: no prompt, no events, the connection ends.
    {
      await using plain = new SocketClient(
        await Deno.connect({ hostname: "127.0.0.1", port: started.port }),
        "plain client",
      );
      await writeAll(plain.conn, encoder.encode(`${pw}\n`));
      await plain.received.waitEnd(15_000);
      assert.ok(!plain.received.text.includes("Password"), "no prompt in clear text");
      assert.ok(!plain.received.text.includes("event"), "no events in clear text");
    }
    await logged(monitor, /TLS handshake with "127\.0\.0\.1:\d+" failed/);

    const m2 = marker("tls2");
    const pid2 = await runMarker(m2);
    const exec2 = await client.out.waitLine(isExecOf(m2), EXEC_TIMEOUT, "exec after the plain one");
    assert.equal(parse(exec2).pid, pid2);
    client.kill("SIGTERM");
    const status = await client.exit(10_000);
    assert.equal(status.code, 0, client.err.text);
    for (const line of client.out.lines) parse(line);
    const done = await stopWithin(monitor, "SIGTERM", 15_000);
    assert.equal(done.code, 0, done.stderr);
    assert.ok(!done.stderr.includes(pw), "the password is never logged");
  },
);

// ---------------------------------------------------------------------------------------------
// Clients of this project
// ---------------------------------------------------------------------------------------------

liveTest("the Node client shows events over the Unix socket and over TCP", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/pm.sock`;
  const pw = password();
  const started = await startWithPort((
    port,
  ) => ["-s", sock, "-t", String(port), "-a", pw, "--bind", "127.0.0.1"]);
  await using monitor = started.monitor;
  const script = `${ROOT}clients/processClient.js`;
  await using unix = Child.spawn("node client (unix)", NODE, [script, "-s", sock]);
  await clientsRegistered(monitor, 1, "the Node Unix client");
  await using tcp = Child.spawn("node client (tcp)", NODE, [
    script,
    "-t",
    "-H",
    "127.0.0.1",
    "-p",
    String(started.port),
    "-a",
    pw,
  ]);
  await clientsRegistered(monitor, 2, "the Node TCP client");
  const m = marker("node");
  const pid = await runMarker(m);
  const escaped = m.replace(/[-]/g, "\\-");
  const readable = new RegExp(
    `^exec +pid ${pid} +root +/bin/sh -c sleep 0\\.05; /bin/true; exit 0 ${escaped}$`,
  );
  for (const client of [unix, tcp]) {
    await client.out.waitLine((l) => readable.test(l), EXEC_TIMEOUT, `${client.name}: exec`);
    await client.out.waitLine(
      (l) => l.startsWith("exit ") && l.includes(m),
      EXEC_TIMEOUT,
      `${client.name}: exit`,
    );
    assert.equal(client.finished, null, `${client.name} is still running`);
    client.kill("SIGTERM");
    await client.exit(10_000);
  }
});

/**
 * v1's own client, as it read the stream: every `data` chunk parsed as exactly one JSON
 * object. It sends the password at once and waits for "Authentication successful".
 */
const V1_NODE_CLIENT = `
const net = require("net");
const conn = net.createConnection({ host: "127.0.0.1", port: Number(process.env.PM_PORT) }, () => {
  conn.write(process.env.PM_PASSWORD + "\\n");
});
let authenticated = false;
conn.on("data", (data) => {
  if (!authenticated) {
    authenticated = data.toString().includes("Authentication successful");
    if (authenticated) console.log("authenticated");
    return;
  }
  try {
    console.log(JSON.stringify(JSON.parse(data.toString())));
  } catch (e) {
    console.log("parse failure: " + JSON.stringify(data.toString()));
  }
});
`;

liveTest("v1's Node client, one JSON.parse per chunk, sees every event over TCP", async () => {
  const pw = password();
  const m = marker("v1client");
  // Only the markers' events, so other processes on the machine cannot make a load.
  const started = await startWithPort((
    port,
  ) => ["-t", String(port), "-a", pw, "--bind", "127.0.0.1", "--match", m]);
  await using monitor = started.monitor;
  await using client = Child.spawn("v1's node client", NODE, ["-e", V1_NODE_CLIENT], {
    env: { PM_PORT: String(started.port), PM_PASSWORD: pw },
  });
  await clientsRegistered(monitor, 1, "v1's client");
  await client.out.waitLine((l) => l === "authenticated", 10_000, "v1's handshake");
  // Ten processes 300 ms apart; each one's events come in pairs (exec and a fork, then a
  // fork and the exit), which used to share one write.
  const pids: number[] = [];
  for (let i = 0; i < 10; i++) {
    pids.push(await runMarker(m));
    await delay(300);
  }
  const isExit = (pid: number) => (l: string) =>
    l.startsWith('{"event":"exit"') && parse(l).pid === pid;
  for (const pid of pids) {
    await client.out.waitLine((l) => isExit(pid)(l) || l.startsWith("parse"), EXEC_TIMEOUT, "exit");
  }
  assert.deepEqual(client.out.lines.filter((l) => l.startsWith("parse failure")), []);
  const events = client.out.lines.slice(1).map(parse);
  for (const pid of pids) {
    const mine = events.filter((e) => e.pid === pid || e.parent_tgid === pid).map((e) => e.event);
    assert.deepEqual(mine, ["exec", "fork", "fork", "exit"], `process ${pid}`);
  }
  assert.equal(client.err.text, "");
}, {
  // The hub spaces the lines 2 ms apart; under ASan's allocator the monitor and the
  // harness are slow enough that the client may not read in between.
  timing: "v1's client reads each line within the 2 ms the hub leaves between them",
});

liveTest("procMonitor client --format text shows the exec as a text line", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/pm.sock`;
  await using monitor = await MonitorProcess.start(["-s", sock]);
  await using client = mainClient("procMonitor client", ["--socket", sock, "--format", "text"]);
  await clientsRegistered(monitor, 1, "the client subcommand");
  const m = marker("ctext");
  const pid = await runMarker(m);
  const line = await client.out.waitLine(
    (l) => l.includes(m) && / exec /.test(l),
    EXEC_TIMEOUT,
    "exec",
  );
  assert.match(
    line,
    new RegExp(
      `^\\d\\d:\\d\\d:\\d\\d\\.\\d{6} exec +${pid} +${Deno.pid} +root +` +
        `/bin/sh -c sleep 0\\.05; /bin/true; exit 0 ${m}$`,
    ),
  );
  assert.ok(!client.out.lines.some((l) => l.includes("\x1b[")), "no colour on a pipe");
  client.kill("SIGTERM");
  const status = await client.exit(10_000);
  assert.equal(status.code, 0, client.err.text);
});

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

const STORM = 3000;

liveTest("a client that stops reading does not delay the others during an exec storm", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/pm.sock`;
  await using monitor = await MonitorProcess.start(["-s", sock]);
  // unix#1 never reads (until the end of the test).
  const slow = await Deno.connect({ transport: "unix", path: sock });
  try {
    await clientsRegistered(monitor, 1, "the slow client");
    const m = marker("storm");
    let stormPid = -1;
    /** Counts the storm's execs in a stream, by pid (robust to a missed cmdline). */
    const counter = () => {
      const children = new Set<number>();
      const state = {
        execs: 0,
        marked: 0,
        wrong: [] as string[],
        stormExit: false,
        lost: [] as string[],
      };
      const onLine = (line: string) => {
        if (line.startsWith('{"event":"lost"')) state.lost.push(line);
        if (!line.startsWith('{"event":"fork"') && !line.startsWith('{"event":"exec"')) {
          if (line.startsWith('{"event":"exit"') && parse(line).pid === stormPid) {
            state.stormExit = true;
          }
          return;
        }
        const e = parse(line);
        if (e.event === "fork" && e.parent_tgid === stormPid) {
          children.add(e.child_pid as number);
        } else if (e.event === "exec" && children.has(e.pid as number)) {
          state.execs++;
          if (e.cmdline === `/bin/true ${m}`) state.marked++;
          else if (e.cmdline !== "") state.wrong.push(line);
        }
      };
      return { state, onLine };
    };
    const fast = counter();
    await using reader = await unixClient(monitor, sock, "reading client", fast.onLine);

    const storm = new Deno.Command("/bin/sh", {
      args: ["-c", `i=0; while [ "$i" -lt ${STORM} ]; do /bin/true "$0"; i=$((i+1)); done`, m],
      stdin: "null",
    }).spawn();
    stormPid = storm.pid;
    const status = await storm.status;
    assert.equal(status.code, 0);
    await waitUntil(
      () => {
        if (reader.received.eof) {
          throw new Error(`the reading client's stream ended; ${reader.received.describe()}`);
        }
        return fast.state.stormExit;
      },
      30_000,
      () => `the storm's exit (${fast.state.execs} execs so far); ${reader.received.describe()}`,
    );
    assert.deepEqual(fast.state.lost, [], "the reading client lost nothing");
    assert.equal(fast.state.execs, STORM, "every exec of the storm reached the reading client");
    assert.deepEqual(fast.state.wrong, [], "a storm exec has its own cmdline or none");
    // How many carry their cmdline is a measurement (SPEC §8: at least 99%), not asserted
    // here; none may carry a wrong one (checked above).
    if (fast.state.marked < STORM) {
      console.log(`  ${STORM - fast.state.marked} of ${STORM} storm execs had no cmdline`);
    }

    // The server is alive and still serves.
    const m2 = marker("after");
    const pid = await runMarker(m2);
    const exec = await reader.received.waitLine(isExecOf(m2), EXEC_TIMEOUT, "exec after storm");
    assert.equal(parse(exec).pid, pid);

    // The slow client's fate (README "Slow clients"): it reads now. Either it has every
    // storm exec (nothing lost), or a `lost` line comes before the storm's exit (it lost
    // events and caught up), or its stream ends (disconnected). Whichever the stream shows,
    // the log must say so. Which one happens depends on timing, so none is required.
    const late = counter();
    const drained = new Received("slow client", readConn(slow), late.onLine);
    await waitUntil(
      () => late.state.stormExit || late.state.lost.length > 0 || drained.eof,
      30_000,
      () => `the slow client to catch up; ${drained.describe()}`,
    );
    if (late.state.lost.length > 0) {
      const lost = parse(late.state.lost[0]);
      assert.equal(lost.where, "buffer");
      assert.ok((lost.count as number) > 0);
      await logged(monitor, /Client "unix#1" is not keeping up/);
      await logged(
        monitor,
        new RegExp(`Client "unix#1" caught up after losing ${lost.count} events`),
      );
      console.log(`  slow client: lost ${lost.count} events, then resumed`);
    } else if (!late.state.stormExit) {
      await logged(monitor, /Disconnecting client "unix#1"/);
      console.log("  slow client: disconnected");
    } else {
      assert.equal(late.state.execs, STORM, "nothing lost, so every storm exec, late");
      console.log("  slow client: lost nothing");
    }
    for (const line of drained.lines) parse(line);
    closeQuietly(slow);
    await drained.done;
    assert.equal(monitor.stderr.includes('Disconnecting client "unix#2"'), false);
  } finally {
    closeQuietly(slow);
  }
});

liveTest("SIGTERM under load: exit 0, socket removed, no client gets a partial line", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/pm.sock`;
  const pw = password();
  const started = await startWithPort((
    port,
  ) => ["-s", sock, "-t", String(port), "-a", pw, "--bind", "127.0.0.1"]);
  await using monitor = started.monitor;
  await using a = await unixClient(monitor, sock, "unix client a");
  await using b = await unixClient(monitor, sock, "unix client b");
  await using c = await unixClient(monitor, sock, "unix client c");
  await using tcp = await tcpClient(monitor, started.port, pw, "tcp client", false);
  // A client that falls behind: it reads nothing during the storm, then, from half a second
  // before SIGTERM on, 16 KiB every 20 ms: too slow to get its backlog within the 2 s of
  // grace, so the server stops it at a line boundary (README "Slow clients"). Reading before
  // SIGTERM gets the server's writer for it busy with large writes, which the signal
  // interrupts.
  const { promise: go, resolve: letGo } = Promise.withResolvers<void>();
  const before = connectedCount(monitor);
  await using slow = new SocketClient(
    await Deno.connect({ transport: "unix", path: sock }),
    "slow unix client",
    undefined,
    (conn) => readPaced(conn, go, 16 * 1024, 20),
  );
  await clientsRegistered(monitor, before + 1, "the slow client");
  const clients = [a, b, c, tcp, slow];
  const start = a.received.length;
  const m = marker("sigterm");
  await using storm = Child.spawn("storm", "/bin/sh", [
    "-c",
    'while :; do /bin/true "$0"; done',
    m,
  ]);
  try {
    // The storm goes on until 2.5 MB are queued for the slow client (its queue holds 4 MiB),
    // or for 6 s at most: the test holds whether or not it gets that far behind.
    const deadline = Date.now() + 6000;
    while (a.received.length - start < 2_500_000 && Date.now() < deadline) await delay(10);
    for (const client of [a, b, c, tcp]) {
      const r = client.received;
      let seen = 0;
      let mine = 0;
      await waitUntil(
        () => {
          for (; seen < r.lines.length; seen++) if (r.lines[seen].includes(m)) mine++;
          return mine >= 100;
        },
        EXEC_TIMEOUT,
        () => `the storm at ${r.describe()}`,
      );
    }
  } finally {
    letGo();
  }
  await delay(500);
  const done = await stopWithin(monitor, "SIGTERM", 15_000);
  assert.equal(done.code, 0, done.stderr);
  assert.equal(await lstatOrNull(sock), null, "the socket file is removed");
  storm.kill("SIGKILL");
  // README "Slow clients": after the grace period a client still gets the rest of the batch
  // being written, unless it does not read even that within half a second: only then may
  // its last line be cut, and the server says so.
  const unsent = done.stderr.match(/Client "unix#4" closed at shutdown with (\d+) bytes not sent/);
  const cut = /Disconnecting client "unix#4"/.test(done.stderr);
  console.log(
    `  slow client: ${
      cut ? "cut off" : unsent ? `${unsent[1]} bytes not sent` : "received everything"
    }`,
  );
  for (const client of clients) {
    const r = client.received;
    await r.waitEnd(10_000);
    if (client !== slow || !cut) {
      assert.equal(r.error, null, `${r.name} ended cleanly`);
      assert.equal(r.partial, "", `${r.name}: no partial line at the end; log:\n${done.stderr}`);
    }
    const lines = client === tcp ? r.lines.slice(1) : r.lines;
    assert.ok(lines.length >= (client === slow ? 1 : 100), `${r.name}: ${lines.length} lines`);
    for (const line of lines) {
      assert.doesNotThrow(() => parse(line), `${r.name}: a line that is not JSON: ${line}`);
    }
  }
});
