/**
 * Tests for clients/processClient.js, the zero-dependency Node.js client (SPEC §5).
 *
 * Each test serves a real socket itself (a Unix socket in a temp dir, or TCP on 127.0.0.1
 * port 0) that speaks procMonitor's wire protocol, spawns `node clients/processClient.js`,
 * and checks its stdout, stderr and exit code. Needs `node` on PATH (or NODE=path).
 *
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  accept,
  closeQuietly,
  delay,
  execLine,
  type Result,
  Spawned,
  WAIT_MS,
} from "./support/spawned.ts";

const SCRIPT = fileURLToPath(new URL("../clients/processClient.js", import.meta.url));
const NODE = Deno.env.get("NODE") ?? "node";
const enc = new TextEncoder();
const dec = new TextDecoder();

const EXEC = execLine;

/** `node clients/processClient.js ARGS`. */
class Client extends Spawned {
  constructor(args: string[], env: Record<string, string> = {}) {
    super(NODE, [SCRIPT, ...args], { env });
  }
}

/** Reads until the first "\n" (inclusive); fails after `ms` or at EOF. */
async function readLine(conn: Deno.Conn, ms = WAIT_MS): Promise<string> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    closeQuietly(conn); // cancels the pending read
  }, ms);
  const bytes: number[] = [];
  const buf = new Uint8Array(4096);
  try {
    while (!bytes.includes(10)) {
      let n: number | null = null;
      try {
        n = await conn.read(buf);
      } catch (e) {
        if (!timedOut) throw e;
      }
      assert.ok(
        !timedOut,
        `no line from the client within ${ms} ms (got ${
          JSON.stringify(dec.decode(new Uint8Array(bytes)))
        })`,
      );
      assert.notEqual(n, null, "client closed before sending a line");
      bytes.push(...buf.subarray(0, n!));
    }
  } finally {
    clearTimeout(timer);
  }
  return dec.decode(new Uint8Array(bytes));
}

/** Reads whatever the client still sends until it closes its side. */
async function readRest(conn: Deno.Conn): Promise<string> {
  const chunks: string[] = [];
  const buf = new Uint8Array(4096);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) return chunks.join("");
    chunks.push(dec.decode(buf.subarray(0, n)));
  }
}

async function write(conn: Deno.Conn, data: string | Uint8Array): Promise<void> {
  const bytes = typeof data === "string" ? enc.encode(data) : data;
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/** A Unix socket listener in a fresh temp dir, removed afterwards. */
async function withUnixServer(
  fn: (listener: Deno.Listener, path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pm_client_" });
  const path = `${dir}/procMonitor.sock`;
  try {
    using listener = Deno.listen({ transport: "unix", path });
    await fn(listener, path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Serves one Unix-socket client: `serve` writes to it, then the connection is closed. */
async function unixSession(
  args: string[],
  serve: (conn: Deno.Conn, client: Client) => Promise<void>,
): Promise<Result> {
  let result: Result | undefined;
  await withUnixServer(async (listener, path) => {
    await using client = new Client(["-s", path, ...args]);
    const conn = await accept(listener, client);
    try {
      await serve(conn, client);
    } finally {
      closeQuietly(conn);
    }
    result = await client.result();
  });
  return result!;
}

function tcpListener(): Deno.TcpListener {
  return Deno.listen({ hostname: "127.0.0.1", port: 0 });
}

Deno.test("unix: an event split mid-line across writes is printed once, whole", async () => {
  const l1 = EXEC(101, "/bin/true FIRST");
  const l2 = EXEC(102, "/bin/true SECOND");
  const l3 = EXEC(103, "/bin/true THIRD");
  const r = await unixSession([], async (conn, client) => {
    const half = Math.floor(l2.length / 2);
    await write(conn, `${l1}\n${l2.slice(0, half)}`);
    // The first half is with the client (it printed l1 from the same write) before the rest.
    await client.waitFor("FIRST");
    assert.ok(!client.stdout.includes("SECOND"));
    await write(conn, `${l2.slice(half)}\n${l3.slice(0, 5)}`);
    await client.waitFor("SECOND");
    await write(conn, `${l3.slice(5)}\n`);
    await client.waitFor("THIRD");
  });
  assert.equal(r.stderr, "");
  assert.equal(
    r.stdout,
    "exec   pid 101  root  /bin/true FIRST\n" +
      "exec   pid 102  root  /bin/true SECOND\n" +
      "exec   pid 103  root  /bin/true THIRD\n",
  );
  assert.equal(r.code, 0);
});

Deno.test("unix: many events in one write are all printed, in order", async () => {
  const n = 2000;
  const lines = Array.from({ length: n }, (_, i) => EXEC(1000 + i, `/bin/echo ${i}`));
  const r = await unixSession([], async (conn) => {
    await write(conn, lines.join("\n") + "\n");
  });
  assert.equal(r.stderr, "");
  const out = r.stdout.split("\n");
  assert.equal(out.pop(), "");
  assert.equal(out.length, n);
  out.forEach((line, i) => assert.equal(line, `exec   pid ${1000 + i}  root  /bin/echo ${i}`));
  assert.equal(r.code, 0);
});

Deno.test("unix: multi-byte UTF-8 characters split across writes survive", async () => {
  const words = ["caf\u00e9", "\u20ac5", "smile\u{1F600}", "\u65e5\u672c"];
  const lines = words.map((w, i) => enc.encode(EXEC(200 + i, `/bin/echo ${w}`) + "\n"));
  const r = await unixSession([], async (conn, client) => {
    // Cut each line one byte into its first multi-byte character (after its first byte).
    const cut = (b: Uint8Array) => b.findIndex((x) => x >= 0x80) + 1;
    await write(conn, lines[0].subarray(0, cut(lines[0])));
    for (let i = 0; i < lines.length; i++) {
      const rest = lines[i].subarray(cut(lines[i]));
      const next = i + 1 < lines.length ? lines[i + 1].subarray(0, cut(lines[i + 1])) : [];
      await write(conn, new Uint8Array([...rest, ...next]));
      await client.waitFor(`pid ${200 + i} `);
    }
  });
  assert.equal(r.stderr, "");
  assert.ok(!r.stdout.includes("\ufffd"), r.stdout);
  assert.equal(
    r.stdout,
    words.map((w, i) => `exec   pid ${200 + i}  root  /bin/echo ${w}\n`).join(""),
  );
  assert.equal(r.code, 0);
});

Deno.test("tcp: the password goes out before the prompt; prompt, result and events in one chunk", async () => {
  using listener = tcpListener();
  await using client = new Client(["-t", "-p", String(listener.addr.port), "-a", "s3cret pw"]);
  const conn = await accept(listener, client);
  let received = "";
  try {
    // Nothing is written before the password line arrives: a client that waited for the
    // prompt would hang here and fail on the timeout.
    received = await readLine(conn);
    await write(
      conn,
      "Password: Authentication successful.\n" + EXEC(301, "/bin/true A") + "\n" +
        EXEC(302, "/bin/true B") + "\n",
    );
    await conn.closeWrite();
    received += await readRest(conn);
  } finally {
    closeQuietly(conn);
  }
  assert.equal(received, "s3cret pw\n");
  const r = await client.result();
  assert.equal(r.stderr, "");
  assert.equal(r.stdout, "exec   pid 301  root  /bin/true A\nexec   pid 302  root  /bin/true B\n");
  assert.equal(r.code, 0);
});

Deno.test("tcp: handshake split across chunks; PROCMONITOR_AUTH is used without -a", async () => {
  using listener = tcpListener();
  await using client = new Client(["--tcp", "--port", String(listener.addr.port)], {
    PROCMONITOR_AUTH: "from-env",
  });
  const conn = await accept(listener, client);
  let received = "";
  try {
    conn.setNoDelay(true);
    received = await readLine(conn);
    const line = EXEC(401, "/bin/true SPLIT");
    // Short pauses so each piece reaches the client as its own chunk.
    for (
      const piece of [
        "Pass",
        "word: Authen",
        "tication successful.",
        "\n" + line.slice(0, 10),
        line.slice(10) + "\n",
      ]
    ) {
      await write(conn, piece);
      await delay(20);
    }
    await client.waitFor("SPLIT");
  } finally {
    closeQuietly(conn);
  }
  assert.equal(received, "from-env\n");
  const r = await client.result();
  assert.equal(r.stderr, "");
  assert.equal(r.stdout, "exec   pid 401  root  /bin/true SPLIT\n");
  assert.equal(r.code, 0);
});

Deno.test("tcp: a wrong password ends with exit 1 and one sentence", async () => {
  using listener = tcpListener();
  await using client = new Client(["-t", "-p", String(listener.addr.port), "-a", "wrong"]);
  const conn = await accept(listener, client);
  try {
    assert.equal(await readLine(conn), "wrong\n");
    await write(conn, "Password: Authentication failed. Disconnecting.\n");
  } finally {
    closeQuietly(conn);
  }
  const r = await client.result();
  assert.equal(r.stdout, "");
  assert.equal(
    r.stderr,
    `procMonitor: Authentication failed: the server at 127.0.0.1:${listener.addr.port} ` +
      "rejected the password.\n",
  );
  assert.equal(r.code, 1);
});

Deno.test("tcp: no answer to the password within --timeout is exit 1", async () => {
  using listener = tcpListener();
  await using client = new Client([
    "-t",
    "-p",
    String(listener.addr.port),
    "-a",
    "pw",
    "--timeout",
    "0.3",
  ]);
  const conn = await accept(listener, client);
  try {
    assert.equal(await readLine(conn), "pw\n");
    await write(conn, "Password: ");
    const r = await client.result();
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /^procMonitor: no answer from 127\.0\.0\.1:\d+ during authentication/);
    assert.equal(r.code, 1);
  } finally {
    closeQuietly(conn);
  }
});

Deno.test("tcp: the server closing before the result is exit 1", async () => {
  using listener = tcpListener();
  await using client = new Client(["-t", "-p", String(listener.addr.port), "-a", "pw"]);
  const conn = await accept(listener, client);
  try {
    assert.equal(await readLine(conn), "pw\n");
    await write(conn, "Password: ");
  } finally {
    closeQuietly(conn);
  }
  const r = await client.result();
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /closed the connection before authentication ended\n$/);
  assert.equal(r.code, 1);
});

Deno.test("too many clients: the refusal line is exit 1 with one sentence", async () => {
  const r = await unixSession([], async (conn) => {
    await write(conn, '{"error":"too many clients","limit":3}\n');
  });
  assert.equal(r.stdout, "");
  assert.equal(r.stderr, "procMonitor: server refused: too many clients (limit 3)\n");
  assert.equal(r.code, 1);

  // Over TCP the refusal may come in place of the prompt.
  using listener = tcpListener();
  await using client = new Client(["-t", "-p", String(listener.addr.port), "-a", "pw"]);
  const conn = await accept(listener, client);
  try {
    await write(conn, '{"error":"too many clients","limit":7}\n');
  } finally {
    closeQuietly(conn);
  }
  const t = await client.result();
  assert.equal(t.stdout, "");
  assert.equal(t.stderr, "procMonitor: server refused: too many clients (limit 7)\n");
  assert.equal(t.code, 1);
});

Deno.test("connection refused or no socket file: exit 1 with one sentence", async () => {
  const listener = tcpListener();
  const port = listener.addr.port;
  listener.close(); // nothing listens on the port any more
  await using tcp = new Client(["-t", "-p", String(port), "-a", "pw"]);
  const t = await tcp.result();
  assert.equal(t.stdout, "");
  assert.equal(
    t.stderr,
    `procMonitor: Cannot connect to 127.0.0.1:${port}: connection refused ` +
      "(is procMonitor running with --tcp?)\n",
  );
  assert.equal(t.code, 1);

  const dir = await Deno.makeTempDir({ prefix: "pm_client_" });
  try {
    const path = `${dir}/missing.sock`;
    await using unix = new Client(["--socket", path]);
    const u = await unix.result();
    assert.equal(u.stdout, "");
    assert.equal(
      u.stderr,
      `procMonitor: Cannot connect to ${path}: no such file (is procMonitor running?)\n`,
    );
    assert.equal(u.code, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("usage errors: exit 2 and one line naming the option", async () => {
  const cases: [string[], RegExp][] = [
    [["-t", "-p", "70000", "-a", "pw"], /bad port '70000' for -p\b/],
    [["--tcp", "--port", "abc", "-a", "pw"], /bad port 'abc' for --port\b/],
    [["--tcp", "--port=0", "-a", "pw"], /bad port '0' for --port\b/],
    [["--bogus"], /unknown option '--bogus'/],
    [["-x"], /unknown option '-x'/],
    [["-s"], /option -s needs a value/],
    [["-t", "-p", "9000"], /needs a password: -a PASSWORD or the PROCMONITOR_AUTH/],
    [["-t", "-a", "pw"], /needs --port/],
    [["stray"], /unexpected argument 'stray'/],
  ];
  for (const [args, re] of cases) {
    await using client = new Client(args);
    const r = await client.result();
    assert.equal(r.code, 2, `${args.join(" ")}: ${client.dump()}`);
    assert.equal(r.stdout, "", args.join(" "));
    assert.match(r.stderr, re, args.join(" "));
    assert.match(r.stderr, /^procMonitor: [^\n]+\n$/, `one line for ${args.join(" ")}`);
  }
});

Deno.test("--help prints usage to stdout and exits 0", async () => {
  await using client = new Client(["-h"]);
  const r = await client.result();
  assert.equal(r.code, 0);
  assert.equal(r.stderr, "");
  for (const opt of ["--socket", "--tcp", "--host", "--port", "--auth", "--json", "--help"]) {
    assert.ok(r.stdout.includes(opt), `help mentions ${opt}`);
  }
  assert.ok(r.stdout.includes("PROCMONITOR_AUTH"));
});

Deno.test("--json prints the received lines exactly", async () => {
  const lines = [
    '{"event":"fork","child_pid":11,"parent_pid":10,"user":"root","cmdline":"sh"}',
    '{ "pid": 12,  "event": "exec", "user": "b\u00f6b", "cmdline": "a \\"q\\" \\\\ \\n x" }',
    '{"event":"exit","pid":12,"exit_code":256,"user":"b\u00f6b","cmdline":"\u{1F600}"}',
    '{"event":"lost","count":5,"where":"kernel"}',
  ];
  const r = await unixSession(["--json"], async (conn) => {
    await write(conn, lines.join("\n") + "\n");
  });
  assert.equal(r.stderr, "");
  assert.equal(r.stdout, lines.join("\n") + "\n");
  assert.equal(r.code, 0);
});

Deno.test("readable output: one line per event kind", async () => {
  const t = "2025-01-02T03:04:05.000006Z";
  const events: [Record<string, unknown>, string][] = [
    [
      {
        event: "fork",
        time: t,
        child_pid: 1240,
        parent_pid: 1234,
        user: "root",
        cmdline: "bash -c x",
      },
      "fork   parent 1234 -> child 1240  root  bash -c x",
    ],
    [
      { event: "exec", time: t, pid: 1240, user: "root", cmdline: "/bin/true MARKER" },
      "exec   pid 1240  root  /bin/true MARKER",
    ],
    [
      {
        event: "exit",
        time: t,
        pid: 1240,
        exit_code: 0,
        exit_status: 0,
        core_dumped: false,
        user: "root",
        cmdline: "/bin/true MARKER",
        duration_s: 0.0123,
      },
      "exit   pid 1240  root  status 0 (0.01s)  /bin/true MARKER",
    ],
    [
      {
        event: "exit",
        time: t,
        pid: 1244,
        exit_code: 0,
        exit_status: 0,
        core_dumped: false,
        user: "root",
        cmdline: "python3 burn.py",
        duration_s: 2.01,
        cpu_user_s: 0.3,
        cpu_sys_s: 0.012,
        max_rss_kb: 106_496,
        read_bytes: 0,
        write_bytes: 0,
        ctx_voluntary: 4,
        ctx_involuntary: 9,
      },
      "exit   pid 1244  root  status 0 (2.01s) · cpu 0.31s · 104 MiB  python3 burn.py",
    ],
    [
      {
        event: "exit",
        time: t,
        pid: 1241,
        exit_code: 9,
        signal: "SIGKILL",
        core_dumped: false,
        user: "alice",
        cmdline: "sleep 100",
      },
      "exit   pid 1241  alice  killed by SIGKILL  sleep 100",
    ],
    // v1 sent only the raw status: 256 is exit status 1, 139 is SIGSEGV with a core.
    [
      { event: "exit", pid: 1242, exit_code: 256, user: "bob" },
      "exit   pid 1242  bob  status 1",
    ],
    [
      {
        event: "exec",
        pid: 1250,
        user: "www",
        cmdline: "nginx",
        cgroup: "/system.slice/nginx.service",
        unit: "nginx.service",
      },
      "exec   pid 1250  www  [nginx.service]  nginx",
    ],
    [
      {
        event: "exit",
        pid: 1251,
        exit_code: 0,
        exit_status: 0,
        user: "root",
        cmdline: "app",
        container_id: "0123456789abcdef".repeat(4),
      },
      "exit   pid 1251  root  status 0  [0123456789ab]  app",
    ],
    [
      { event: "exit", pid: 1243, exit_code: 139, user: "bob", cmdline: "./crash" },
      "exit   pid 1243  bob  killed by SIGSEGV, core dumped  ./crash",
    ],
    [
      { event: "uid", time: t, pid: 50, ruid: 0, euid: 1000, user: "alice" },
      "uid    pid 50  ruid 0 euid 1000  alice",
    ],
    [
      { event: "gid", time: t, pid: 50, rgid: 0, egid: 100, user: "alice" },
      "gid    pid 50  rgid 0 egid 100  alice",
    ],
    [{ event: "sid", time: t, pid: 51, user: "root" }, "sid    pid 51  root  new session"],
    [{ event: "ptrace", time: t, pid: 52, tracer_pid: 60 }, "ptrace pid 52  traced by 60"],
    [{ event: "ptrace", time: t, pid: 52, tracer_pid: 0 }, "ptrace pid 52  tracer detached"],
    [{ event: "comm", time: t, pid: 53, comm: "worker" }, "comm   pid 53  name worker"],
    [{ event: "coredump", time: t, pid: 54, parent_pid: 1 }, "coredump pid 54  parent 1"],
    [{ event: "lost", time: t, count: 17, where: "buffer" }, "lost   17 events lost (buffer)"],
    [{ event: "lost", time: t, count: 3, where: "usage" }, "lost   usage of 3 exits"],
    [
      { event: "exec", pid: 55, user: "root", cmdline: "printf a\nb\tc\u0007" },
      "exec   pid 55  root  printf a\\nb\\tc\\x07",
    ],
    [
      { event: "fork", child_pid: 57, parent_pid: 56, user: "1001", cmdline: "java", thread: true },
      "fork   parent 56 -> child 57  1001  java (thread)",
    ],
    [{ event: "cgroup", time: t, pid: 58, path: "/a b", n: [1] }, "cgroup pid=58 path=/a b n=[1]"],
  ];
  const r = await unixSession([], async (conn) => {
    await write(conn, events.map(([e]) => JSON.stringify(e) + "\n").join(""));
  });
  assert.equal(r.stderr, "");
  assert.deepEqual(r.stdout.split("\n"), [...events.map(([, line]) => line), ""]);
  assert.equal(r.code, 0);
});

Deno.test("a line that is not JSON is warned about on stderr and skipped", async () => {
  const r = await unixSession([], async (conn) => {
    await write(conn, `${EXEC(1, "before")}\nthis is not json\n\n${EXEC(2, "after")}\n`);
  });
  assert.equal(r.stdout, "exec   pid 1  root  before\nexec   pid 2  root  after\n");
  assert.match(r.stderr, /^procMonitor: warning: [^\n]*not JSON: "this is not json"\n$/);
  assert.equal(r.code, 0);
});

Deno.test("a last line without its newline is still handled when the server closes", async () => {
  const r = await unixSession([], async (conn) => {
    await write(conn, `${EXEC(3, "complete")}\n${EXEC(4, "unterminated")}`);
  });
  assert.equal(r.stderr, "");
  assert.equal(r.stdout, "exec   pid 3  root  complete\nexec   pid 4  root  unterminated\n");
  assert.equal(r.code, 0);

  const cut = await unixSession([], async (conn) => {
    await write(conn, `${EXEC(5, "complete")}\n{"event":"exec","pi`);
  });
  assert.equal(cut.stdout, "exec   pid 5  root  complete\n");
  assert.match(cut.stderr, /^procMonitor: warning: [^\n]*not JSON: "\{\\"event/);
  assert.equal(cut.code, 0);
});

Deno.test("SIGINT ends the client quietly with exit 0", async () => {
  await withUnixServer(async (listener, path) => {
    await using client = new Client(["-s", path]);
    const conn = await accept(listener, client);
    try {
      await write(conn, EXEC(7, "running") + "\n");
      await client.waitFor("running");
      client.child.kill("SIGINT");
      const r = await client.result();
      assert.equal(r.stderr, "");
      assert.equal(r.stdout, "exec   pid 7  root  running\n");
      assert.equal(r.code, 0);
      assert.equal(r.signal, null);
    } finally {
      closeQuietly(conn);
    }
  });
});

Deno.test("processClient.js stays Node 12 compatible", async () => {
  const src = await Deno.readTextFile(SCRIPT);
  assert.ok(src.startsWith("#!/usr/bin/env node\n"), "shebang");
  // Crude guard for syntax and APIs that Node 12 lacks, or ES modules.
  for (const bad of ["?.", "??", "import ", 'require("node:', "require('node:", "||=", "&&="]) {
    assert.ok(!src.includes(bad), `processClient.js contains ${JSON.stringify(bad)}`);
  }
  assert.match(src, /^"use strict";$/m);
  const check = await new Deno.Command(NODE, { args: ["--check", SCRIPT], stderr: "piped" })
    .output();
  assert.equal(check.code, 0, dec.decode(check.stderr));
});
