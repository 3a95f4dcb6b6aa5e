/**
 * TcpListener tests over real sockets: v1's handshake byte for byte, every bad-input case
 * of SPEC §9, the pending cap, failure throttling, TLS, and bind errors.
 */
import assert from "node:assert/strict";
import { makeCert as makeTestCert } from "./support/tls.ts";
import { captureLogs, logText, records } from "./support/logs.ts";
import { FailureThrottle, passwordMatches } from "../lib/auth.ts";
import { StartupError } from "../lib/errors.ts";
import { Hub } from "../lib/hub.ts";
import {
  MAX_PENDING_PER_ADDRESS,
  TcpListener,
  type TcpListenerOptions,
} from "../lib/tcp_listener.ts";

await captureLogs();

const PASSWORD = "s3cret-Pässword";
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const OK = "Password: Authentication successful.\n";
const FAILED = "Password: Authentication failed. Disconnecting.\n";
const EVENT = '{"event":"exec","pid":1}\n';

/** A hub and a listener on 127.0.0.1 with a free port; closed by dispose. */
async function setup(opts: Partial<TcpListenerOptions> = {}) {
  const hub = new Hub();
  const listener = await TcpListener.open(hub, {
    port: 0,
    bind: "127.0.0.1",
    password: PASSWORD,
    tlsCert: null,
    tlsKey: null,
    maxClients: 10,
    failureDelay: { baseMs: 10, maxMs: 40 },
    ...opts,
  });
  return {
    hub,
    listener,
    port: listener.port,
    async [Symbol.asyncDispose]() {
      await listener.close();
      await hub.close(200);
    },
  };
}

/** Reads until EOF (or a reset, or `ms`); returns the text and how it ended. */
async function readToEnd(
  conn: Deno.Conn,
  ms = 10_000,
): Promise<{ text: string; end: "eof" | "reset" | "timeout" }> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(64 * 1024);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), ms));
  let end: "eof" | "reset" | "timeout" = "eof";
  try {
    for (;;) {
      const n = await Promise.race([conn.read(buf), timeout]);
      if (n === "timeout") {
        end = "timeout";
        break;
      }
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
  } catch {
    end = "reset";
  } finally {
    clearTimeout(timer);
  }
  let all = new Uint8Array(0);
  for (const c of chunks) {
    const next = new Uint8Array(all.length + c.length);
    next.set(all);
    next.set(c, all.length);
    all = next;
  }
  return { text: decoder.decode(all), end };
}

/** Reads exactly `text.length` bytes' worth and returns them as text. */
async function readExactly(conn: Deno.Conn, bytes: number, ms = 10_000): Promise<string> {
  const buf = new Uint8Array(bytes);
  let off = 0;
  const end = Date.now() + ms;
  while (off < bytes) {
    if (Date.now() > end) throw new Error("timed out");
    const n = await conn.read(buf.subarray(off));
    if (n === null) break;
    off += n;
  }
  return decoder.decode(buf.subarray(0, off));
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}

/** Connects, sends `send` at once (before the prompt), and reads to the end. */
async function attempt(port: number, send: Uint8Array | string, ms = 10_000) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const data = typeof send === "string" ? encoder.encode(send) : send;
    const writing = writeAll(conn, data).catch(() => {});
    const result = await readToEnd(conn, ms);
    await writing;
    return result;
  } finally {
    conn.close();
  }
}

/** Polls `pred` until true; fails after `ms`. */
async function until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** An authenticated client: after the handshake, publishes until it receives an event. */
async function authenticated(
  t: { hub: Hub; port: number },
  connect: () => Promise<Deno.Conn> = () => Deno.connect({ hostname: "127.0.0.1", port: t.port }),
): Promise<Deno.Conn> {
  const conn = await connect();
  assert.equal(await readExactly(conn, "Password: ".length), "Password: ");
  await writeAll(conn, encoder.encode(PASSWORD + "\n"));
  assert.equal(await readExactly(conn, 27), "Authentication successful.\n");
  return conn;
}

function assertPasswordNeverLogged(): void {
  for (const r of records) {
    assert.ok(!JSON.stringify(r.properties).includes(PASSWORD), "password in log properties");
    assert.ok(!logText().some((l) => l.includes(PASSWORD)), "password in a log message");
  }
}

Deno.test("right password: prompt, success line, then event lines", async () => {
  await using t = await setup();
  const conn = await authenticated(t);
  try {
    await until(() => t.hub.clientCount === 1, "client joined");
    t.hub.publish(encoder.encode(EVENT + EVENT));
    assert.equal(await readExactly(conn, EVENT.length * 2), EVENT + EVENT);
  } finally {
    conn.close();
  }
  assert.ok(logText().some((l) => /Client 127\.0\.0\.1:\d+ authenticated/.test(l)));
  assertPasswordNeverLogged();
});

Deno.test("password sent before the prompt arrives, with \\r\\n, works (v1's client does)", async () => {
  await using t = await setup();
  for (const ending of ["\n", "\r\n"]) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
    try {
      await writeAll(conn, encoder.encode(PASSWORD + ending));
      assert.equal(await readExactly(conn, OK.length), OK);
      await until(() => t.hub.clientCount === 1, "client joined");
      t.hub.publish(encoder.encode(EVENT));
      assert.equal(await readExactly(conn, EVENT.length), EVENT);
    } finally {
      conn.close();
    }
    await until(() => t.hub.clientCount === 0, "client left");
  }
});

Deno.test("wrong password: exact failure line, then EOF", async () => {
  await using t = await setup();
  assert.deepEqual(await attempt(t.port, "wrong\n"), { text: FAILED, end: "eof" });
  assert.deepEqual(await attempt(t.port, PASSWORD + "x\n"), { text: FAILED, end: "eof" });
  assert.deepEqual(await attempt(t.port, PASSWORD.slice(0, -1) + "\n"), {
    text: FAILED,
    end: "eof",
  });
  assert.equal(t.hub.clientCount, 0);
  assert.ok(logText().some((l) => l.includes("failed: wrong password")));
  assertPasswordNeverLogged();
});

Deno.test("empty line, 1 MiB line, binary garbage: failure line, then EOF", async () => {
  await using t = await setup();
  assert.deepEqual(await attempt(t.port, "\n"), { text: FAILED, end: "eof" });
  assert.deepEqual(await attempt(t.port, "\r\n"), { text: FAILED, end: "eof" });

  const huge = new Uint8Array(1024 * 1024).fill(0x61);
  huge[huge.length - 1] = 0x0a;
  assert.deepEqual(await attempt(t.port, huge), { text: FAILED, end: "eof" });
  // Even the password itself followed by more than 1 KiB is too long.
  assert.deepEqual(await attempt(t.port, PASSWORD + "a".repeat(2000) + "\n"), {
    text: FAILED,
    end: "eof",
  });

  const garbage = new Uint8Array([0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x1b, 0x5b, 0x0a]);
  assert.deepEqual(await attempt(t.port, garbage), { text: FAILED, end: "eof" });
  const random = crypto.getRandomValues(new Uint8Array(4096)).map((b) => b === 0x0a ? 0 : b);
  assert.deepEqual(await attempt(t.port, random), { text: FAILED, end: "eof" });

  const logs = logText().join("\n");
  assert.match(logs, /empty password line/);
  assert.match(logs, /password line longer than 1024 bytes/);
  assert.match(logs, /password line is not UTF-8/);
  assertPasswordNeverLogged();
});

Deno.test("no newline within the auth timeout: failure line, then closed", async () => {
  await using t = await setup({ authTimeoutMs: 300 });
  for (const send of ["", PASSWORD]) { // silence, and a password without its newline
    const t0 = Date.now();
    const result = await attempt(t.port, send, 5000);
    const took = Date.now() - t0;
    assert.deepEqual(result, { text: FAILED, end: "eof" });
    assert.ok(took >= 250 && took < 4000, `closed after ${took} ms`);
  }
  assert.ok(logText().some((l) => l.includes("no password line within 300 ms")));
});

Deno.test("a client that closes before sending a password is just dropped", async () => {
  await using t = await setup();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
  conn.close();
  await until(
    () => logText().some((l) => /disconnected before authenticating/.test(l)),
    "logged",
  );
  const ok = await authenticated(t); // still serving
  ok.close();
});

Deno.test("many parallel connects: all rejected or capped, an authenticated client is served", async () => {
  await using t = await setup({ maxPending: 32 });
  const good = await authenticated(t);
  try {
    await until(() => t.hub.clientCount === 1, "client joined");
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => attempt(t.port, `guess-${i}\n`)),
    );
    for (const r of results) {
      // Either the failure reply, or closed at once over the pending cap.
      assert.ok(
        (r.text === FAILED && r.end === "eof") || (r.text === "" && r.end !== "timeout"),
        JSON.stringify(r),
      );
    }
    assert.ok(results.filter((r) => r.text === FAILED).length >= 1);
    t.hub.publish(encoder.encode(EVENT));
    assert.equal(await readExactly(good, EVENT.length), EVENT);
    assert.equal(t.hub.clientCount, 1);
  } finally {
    good.close();
  }
  const again = await authenticated(t); // the server still authenticates newcomers
  again.close();
});

Deno.test("over the pending cap a connection is closed at once, and that is logged", async () => {
  await using t = await setup({ maxPending: 2 });
  const silent = [
    await Deno.connect({ hostname: "127.0.0.1", port: t.port }),
    await Deno.connect({ hostname: "127.0.0.1", port: t.port }),
  ];
  try {
    for (const c of silent) assert.equal(await readExactly(c, 10), "Password: ");
    const extra = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
    const r = await readToEnd(extra, 5000);
    extra.close();
    assert.equal(r.text, "");
    assert.notEqual(r.end, "timeout");
    assert.ok(logText().some((l) => l.includes("already waiting for authentication")));
  } finally {
    for (const c of silent) c.close();
  }
});

Deno.test("one address may hold only 8 connections waiting to authenticate", async () => {
  await using t = await setup({ maxPending: 32 });
  const silent: Deno.Conn[] = [];
  try {
    for (let i = 0; i < MAX_PENDING_PER_ADDRESS; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
      silent.push(c);
      assert.equal(await readExactly(c, 10), "Password: ");
    }
    const extra = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
    const r = await readToEnd(extra, 5000);
    extra.close();
    assert.equal(r.text, "", "the ninth from the same address is closed at once");
    assert.notEqual(r.end, "timeout");
  } finally {
    for (const c of silent) c.close();
  }
});

Deno.test("the per-listener client limit applies after authentication", async () => {
  await using t = await setup({ maxClients: 1 });
  const first = await authenticated(t);
  try {
    await until(() => t.hub.clientCount === 1, "first joined");
    const r = await attempt(t.port, PASSWORD + "\n");
    assert.deepEqual(r, { text: OK + '{"error":"too many clients","limit":1}\n', end: "eof" });
  } finally {
    first.close();
  }
});

Deno.test("repeated failures from one address are answered more and more slowly", async () => {
  await using t = await setup({ failureDelay: { baseMs: 300, maxMs: 8000 } });
  const timed = async (send: string) => {
    const t0 = performance.now();
    const r = await attempt(t.port, send);
    return { ...r, ms: performance.now() - t0 };
  };
  const first = await timed("bad-1\n");
  const second = await timed("bad-2\n");
  assert.equal(first.text, FAILED);
  assert.equal(second.text, FAILED);
  // Expected about 300 ms then 600 ms; assert only the coarse shape.
  assert.ok(first.ms >= 250, `first failure answered after ${first.ms} ms`);
  assert.ok(second.ms > first.ms + 100, `${first.ms} ms then ${second.ms} ms`);
  // Success is not delayed and resets the count.
  const t0 = performance.now();
  const ok = await authenticated(t);
  ok.close();
  assert.ok(performance.now() - t0 < 2000);
  const third = await timed("bad-3\n");
  assert.ok(third.ms < second.ms, `after a success: ${third.ms} ms`);
});

Deno.test("FailureThrottle: doubling delay with a cap, reset on success and after a while", () => {
  const th = new FailureThrottle({ baseMs: 250, maxMs: 8000, forgetMs: 60_000 });
  const delays = Array.from({ length: 8 }, (_, i) => th.failure("a", 1000 + i));
  assert.deepEqual(delays, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
  assert.equal(th.failure("b", 1000), 250, "per address");
  th.success("a");
  assert.equal(th.failure("a", 2000), 250);
  assert.equal(th.failure("a", 2000 + 60_001), 250, "forgotten after forgetMs");
  const small = new FailureThrottle({ maxEntries: 2 });
  small.failure("x", 0);
  small.failure("y", 0);
  small.failure("z", 0);
  assert.equal(small.failures("x", 0), 0, "oldest evicted");
  assert.equal(small.failures("z", 0), 1);
});

Deno.test("passwordMatches compares exactly", () => {
  assert.ok(passwordMatches(encoder.encode(PASSWORD), PASSWORD));
  assert.ok(!passwordMatches(encoder.encode(PASSWORD + " "), PASSWORD));
  assert.ok(!passwordMatches(new Uint8Array(0), PASSWORD));
});

Deno.test("bind errors and an empty password are one-sentence StartupErrors", async () => {
  await using hub = new Hub();
  await using t = await setup();
  const base = {
    bind: "127.0.0.1",
    password: PASSWORD,
    tlsCert: null,
    tlsKey: null,
    maxClients: 1,
  };
  const refused = async (opts: TcpListenerOptions, message: string) => {
    await assert.rejects(() => TcpListener.open(hub, opts), (err: unknown) => {
      assert.ok(err instanceof StartupError, String(err));
      assert.equal(err.message, message);
      return true;
    });
  };
  await refused(
    { ...base, port: t.port },
    `Cannot listen on TCP 127.0.0.1:${t.port} as the port is already in use`,
  );
  await refused(
    { ...base, port: 0, bind: "192.0.2.1" },
    "Cannot listen on TCP 192.0.2.1:0 as 192.0.2.1 is not an address of this host",
  );
  await refused(
    { ...base, port: 0, password: "" },
    "Cannot listen on TCP 127.0.0.1:0 without a password",
  );
  await refused(
    { ...base, port: 0, tlsCert: "/nonexistent/cert.pem", tlsKey: "/nonexistent/key.pem" },
    "Cannot read the TLS certificate file /nonexistent/cert.pem: No such file or directory",
  );
});

/** A self-signed certificate for localhost in a temp dir. */
async function makeCert(): Promise<{ dir: string; cert: string; key: string; pem: string }> {
  const dir = await Deno.makeTempDir({ prefix: "pm-tls-" });
  const made = await makeTestCert(dir);
  return { dir, cert: made.certFile, key: made.keyFile, pem: made.cert };
}

Deno.test("TLS: the same handshake inside TLS; untrusting and plain clients fail alone", async () => {
  const c = await makeCert();
  try {
    await using t = await setup({ tlsCert: c.cert, tlsKey: c.key });
    assert.ok(t.listener.tls);
    const connect = () =>
      Deno.connectTls({ hostname: "localhost", port: t.port, caCerts: [c.pem] });
    const good = await authenticated(t, connect);
    try {
      await until(() => t.hub.clientCount === 1, "client joined");

      // A client that does not trust the certificate: its handshake fails, nothing else.
      const untrusting = await Deno.connectTls({ hostname: "localhost", port: t.port });
      await assert.rejects(() => untrusting.handshake());
      untrusting.close();
      // A plain TCP client talking to the TLS port.
      const plain = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
      await writeAll(plain, encoder.encode(PASSWORD + "\n"));
      const r = await readToEnd(plain, 5000);
      plain.close();
      assert.ok(!r.text.includes("Authentication"));
      await until(
        () => logText().filter((l) => l.includes("TLS handshake with")).length >= 2,
        "handshake failures logged",
      );

      t.hub.publish(encoder.encode(EVENT));
      assert.equal(await readExactly(good, EVENT.length), EVENT);

      // Wrong password inside TLS: the exact failure line.
      const bad = await connect();
      await writeAll(bad, encoder.encode("nope\n"));
      assert.deepEqual(await readToEnd(bad), { text: FAILED, end: "eof" });
      bad.close();

      // Password sent before the prompt, inside TLS.
      const early = await connect();
      await writeAll(early, encoder.encode(PASSWORD + "\n"));
      assert.equal(await readExactly(early, OK.length), OK);
      early.close();
    } finally {
      good.close();
    }
  } finally {
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("TLS: a key that does not fit the certificate is a StartupError", async () => {
  const c = await makeCert();
  try {
    await using hub = new Hub();
    await assert.rejects(
      () =>
        TcpListener.open(hub, {
          port: 0,
          bind: "127.0.0.1",
          password: PASSWORD,
          tlsCert: c.cert,
          tlsKey: c.cert, // no key in it
          maxClients: 1,
        }),
      (err: unknown) => {
        assert.ok(err instanceof StartupError, String(err));
        assert.match(err.message, /^Cannot use the TLS certificate .* and key .*: /);
        return true;
      },
    );
  } finally {
    await Deno.remove(c.dir, { recursive: true });
  }
});
