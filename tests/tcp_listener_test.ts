/**
 * TcpListener tests over real sockets: v1's handshake byte for byte, every bad-input case
 * of SPEC §9, the waiting slots under floods (plain and TLS), the auth timeout, failure
 * throttling, TLS, and bind errors. Clients from other addresses than 127.0.0.1 use
 * node:net, whose connect can bind a local address (Deno.connect cannot).
 */
import assert from "node:assert/strict";
import net from "node:net";
import { makeCert as makeTestCert } from "./support/tls.ts";
import { captureLogs, logText, records } from "./support/logs.ts";
import { FailureThrottle, passwordMatches } from "../lib/outputs/auth.ts";
import { StartupError } from "../lib/errors.ts";
import { Hub } from "../lib/outputs/hub.ts";
import { NodeSocketConn } from "../lib/outputs/node_socket_conn.ts";
import {
  MAX_PENDING_PER_ADDRESS,
  TcpListener,
  type TcpListenerOptions,
} from "../lib/outputs/tcp_listener.ts";

await captureLogs();

const PASSWORD = "s3cret-Pässword";
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const PROMPT = "Password: ";
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

/** What the helpers below need of a client connection. */
interface Client {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
}

/** Reads until EOF (or a reset, or `ms`); returns the text and how it ended. */
async function readToEnd(
  conn: Client,
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
async function readExactly(conn: Client, bytes: number, ms = 10_000): Promise<string> {
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

async function writeAll(conn: Client, data: Uint8Array): Promise<void> {
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

/** A TCP connection to 127.0.0.1:`port` from the local address `from` (127.0.0.0/8). */
async function connectFrom(from: string, port: number): Promise<NodeSocketConn> {
  const socket = net.connect({ host: "127.0.0.1", port, localAddress: from });
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  return new NodeSocketConn(socket);
}

/** A connection that stays silent, once the listener has admitted it (prompt received). */
async function silent(connect: () => Promise<Client>): Promise<Client> {
  const c = await connect();
  assert.equal(await readExactly(c, PROMPT.length), PROMPT);
  return c;
}

/** Whether `conn` was closed by the server: EOF or reset within `ms`, after any bytes. */
async function closedWithin(conn: Client, ms: number): Promise<boolean> {
  return (await readToEnd(conn, ms)).end !== "timeout";
}

/**
 * A client that sends the password at once (before the prompt) is authenticated and gets
 * an event published right after.
 */
async function promptClientServed(
  t: { hub: Hub; port: number },
  connect: () => Promise<Client>,
): Promise<void> {
  const conn = await connect();
  try {
    await writeAll(conn, encoder.encode(PASSWORD + "\n"));
    assert.equal(await readExactly(conn, OK.length, 5000), OK);
    await until(() => t.hub.clientCount === 1, "client joined");
    t.hub.publish(encoder.encode(EVENT));
    assert.equal(await readExactly(conn, EVENT.length, 5000), EVENT);
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
  connect: () => Promise<Client> = () => Deno.connect({ hostname: "127.0.0.1", port: t.port }),
): Promise<Client> {
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

Deno.test("many parallel guesses: each fails or is dropped, an authenticated client is served", async () => {
  await using t = await setup({ maxPending: 32 });
  const good = await authenticated(t);
  try {
    await until(() => t.hub.clientCount === 1, "client joined");
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => attempt(t.port, `guess-${i}\n`)),
    );
    for (const r of results) {
      // Either the failure reply, or dropped for newer connections (maybe after the prompt).
      assert.ok(
        (r.text === FAILED && r.end === "eof") ||
          ((r.text === "" || r.text === PROMPT) && r.end !== "timeout"),
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

Deno.test("60 silent connections from one address do not lock out a prompt client", async () => {
  await using t = await setup();
  const quiet: Client[] = [];
  try {
    for (let i = 0; i < 60; i++) {
      quiet.push(await silent(() => Deno.connect({ hostname: "127.0.0.1", port: t.port })));
    }
    assert.equal(t.listener.waiting, MAX_PENDING_PER_ADDRESS);
    await promptClientServed(t, () => Deno.connect({ hostname: "127.0.0.1", port: t.port }));
    // The oldest silent ones made room; the newest still wait.
    assert.ok(await closedWithin(quiet[0], 2000), "the oldest silent connection was closed");
    assert.ok(!await closedWithin(quiet[59], 100), "the newest silent connection still waits");
    const drops = logText().filter((l) => /Dropped \d+ connection\(s\) waiting for auth/.test(l));
    assert.ok(drops.length >= 1, "drops logged");
    assert.ok(drops.length < 10, "drops are logged summarised, not one line each");
  } finally {
    for (const c of quiet) c.close();
  }
});

Deno.test("8 silent connections from each of 5 addresses do not lock out a prompt client", async () => {
  await using t = await setup(); // 40 silent connections, over the default 32 slots in all
  const quiet: Client[] = [];
  try {
    for (let a = 2; a <= 6; a++) {
      for (let i = 0; i < 8; i++) {
        quiet.push(await silent(() => connectFrom(`127.0.0.${a}`, t.port)));
      }
    }
    assert.equal(t.listener.waiting, 32);
    await promptClientServed(t, () => Deno.connect({ hostname: "127.0.0.1", port: t.port }));
  } finally {
    for (const c of quiet) c.close();
  }
});

Deno.test("at the pending cap the oldest waiter of the busiest address is dropped, and logged", async () => {
  await using t = await setup({ maxPending: 3 });
  // Oldest first: one from 127.0.0.2, then two from 127.0.0.1.
  const other = await silent(() => connectFrom("127.0.0.2", t.port));
  const first = await silent(() => Deno.connect({ hostname: "127.0.0.1", port: t.port }));
  const second = await silent(() => Deno.connect({ hostname: "127.0.0.1", port: t.port }));
  try {
    const newcomer = await silent(() => connectFrom("127.0.0.3", t.port));
    newcomer.close();
    assert.ok(await closedWithin(first, 2000), "the oldest of the busiest address is dropped");
    assert.ok(!await closedWithin(other, 100), "an older waiter of a quieter address stays");
    assert.ok(!await closedWithin(second, 100));
    await until(
      () => logText().some((l) => /Dropped 1 connection\(s\) waiting for authentication/.test(l)),
      "the drop logged",
    );
  } finally {
    for (const c of [other, first, second]) c.close();
  }
});

Deno.test("one address may hold only 8 waiting slots: its ninth drops its own oldest", async () => {
  await using t = await setup({ maxPending: 32 });
  const quiet: Client[] = [];
  try {
    const other = await silent(() => connectFrom("127.0.0.2", t.port)); // older than all below
    quiet.push(other);
    const mine: Client[] = [];
    for (let i = 0; i < MAX_PENDING_PER_ADDRESS; i++) {
      mine.push(await silent(() => Deno.connect({ hostname: "127.0.0.1", port: t.port })));
    }
    quiet.push(...mine);
    const ninth = await authenticated(t); // gets in, and is served
    ninth.close();
    assert.ok(await closedWithin(mine[0], 2000), "its own oldest is dropped");
    assert.ok(!await closedWithin(other, 100), "not another address's waiter");
    assert.ok(!await closedWithin(mine[1], 100));
  } finally {
    for (const c of quiet) c.close();
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

Deno.test("repeated failures from one address are checked more and more slowly, the right password too", async () => {
  await using t = await setup({ failureDelay: { baseMs: 300, maxMs: 8000 } });
  const timed = async (send: string) => {
    const t0 = performance.now();
    const r = await attempt(t.port, send);
    return { ...r, ms: performance.now() - t0 };
  };
  // The check is delayed, not the answer: the first failure is answered at once, the next
  // check of the address waits 300 ms, the one after 600 ms.
  const first = await timed("bad-1\n");
  const second = await timed("bad-2\n");
  assert.equal(first.text, FAILED);
  assert.equal(second.text, FAILED);
  assert.ok(first.ms < 250, `first failure answered after ${first.ms} ms`);
  assert.ok(second.ms >= 250, `second failure answered after ${second.ms} ms`);
  // The right password waits its turn like any guess (else the lack of an immediate success
  // would tell a parallel guesser the answer), then resets the count.
  const t0 = performance.now();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
  await writeAll(conn, encoder.encode(PASSWORD + "\n"));
  assert.equal(await readExactly(conn, OK.length), OK);
  conn.close();
  const ms = performance.now() - t0;
  assert.ok(ms >= 550, `right password checked after ${ms} ms`);
  const third = await timed("bad-3\n");
  assert.equal(third.text, FAILED);
  assert.ok(third.ms < 250, `after a success: ${third.ms} ms`);
});

Deno.test("parallel guesses from one address are checked one at a time, spaced by the delay", async () => {
  await using t = await setup({ failureDelay: { baseMs: 200, maxMs: 8000 } });
  const t0 = performance.now();
  const times = await Promise.all(
    Array.from({ length: 4 }, async (_, i) => {
      const r = await attempt(t.port, `guess-${i}\n`);
      assert.equal(r.text, FAILED);
      return performance.now() - t0;
    }),
  );
  times.sort((a, b) => a - b);
  // Expected about 0, 200, 600 and 1400 ms: gaps of 200, 400 and 800 ms.
  assert.ok(times[0] < 150, `first answered after ${times[0]} ms`);
  assert.ok(times[1] - times[0] >= 150, times.join(", "));
  assert.ok(times[2] - times[1] >= 350, times.join(", "));
  assert.ok(times[3] - times[2] >= 750, times.join(", "));
});

Deno.test("a failed password holds no waiting slot while its address is throttled", async () => {
  await using t = await setup({ maxPending: 1, failureDelay: { baseMs: 1500, maxMs: 8000 } });
  assert.deepEqual(await attempt(t.port, "wrong-1\n"), { text: FAILED, end: "eof" });
  // The next guess from 127.0.0.1 waits about 1.5 s for its check, outside the one slot.
  const t0 = performance.now();
  const guess = attempt(t.port, "wrong-2\n");
  await until(() => t.listener.checking === 1, "the guess queued for its check");
  assert.equal(t.listener.waiting, 0);
  const good = await connectFrom("127.0.0.2", t.port);
  try {
    await writeAll(good, encoder.encode(PASSWORD + "\n"));
    assert.equal(await readExactly(good, OK.length), OK);
    assert.ok(performance.now() - t0 < 1000, "the good client did not wait for the guess");
  } finally {
    good.close();
  }
  // The guess was not dropped to make room: it gets its answer after the delay.
  assert.deepEqual(await guess, { text: FAILED, end: "eof" });
  assert.ok(performance.now() - t0 >= 1300);
});

Deno.test("a silent peer is closed at the auth timeout, with no failure delay added", async () => {
  await using t = await setup({ authTimeoutMs: 300, failureDelay: { baseMs: 200, maxMs: 8000 } });
  // Earlier failures from this address must not stretch the timeout (they did: the delay
  // was slept before closing, so 10 s became about 18 s).
  for (const guess of ["bad-1\n", "bad-2\n", "bad-3\n"]) {
    assert.equal((await attempt(t.port, guess)).text, FAILED);
  }
  const t0 = performance.now();
  const r = await attempt(t.port, "", 5000);
  const took = performance.now() - t0;
  assert.deepEqual(r, { text: FAILED, end: "eof" });
  assert.ok(took >= 280 && took < 700, `closed after ${took} ms`);
  assert.equal(t.listener.waiting, 0);
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

Deno.test("TLS: a peer that never sends its ClientHello is closed at the auth timeout", async () => {
  const c = await makeCert();
  try {
    await using t = await setup({ tlsCert: c.cert, tlsKey: c.key, authTimeoutMs: 300 });
    const t0 = performance.now();
    const raw = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
    const r = await readToEnd(raw, 5000);
    const took = performance.now() - t0;
    raw.close();
    assert.equal(r.text, "");
    assert.notEqual(r.end, "timeout", "still open after 5 s");
    assert.ok(took >= 280 && took < 700, `closed after ${took} ms`);
    await until(
      () => logText().some((l) => /TLS handshake with .*127\.0\.0\.1:\d+.* timed out/.test(l)),
      "the timeout logged",
    );
  } finally {
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("TLS: the auth timeout counts from accept, the handshake included", async () => {
  const c = await makeCert();
  try {
    await using t = await setup({ tlsCert: c.cert, tlsKey: c.key, authTimeoutMs: 400 });
    const t0 = performance.now();
    const raw = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
    await new Promise((resolve) => setTimeout(resolve, 300)); // a slow handshake...
    const conn = await Deno.startTls(raw, { hostname: "localhost", caCerts: [c.pem] });
    const r = await readToEnd(conn, 5000); // ...then silence
    const took = performance.now() - t0;
    conn.close();
    assert.deepEqual(r, { text: FAILED, end: "eof" });
    // 400 ms after the handshake would be 700 ms or more.
    assert.ok(took >= 380 && took < 650, `closed after ${took} ms`);
  } finally {
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("TLS: 50 connections that never send a ClientHello do not lock out a TLS client", async () => {
  const c = await makeCert();
  try {
    await using t = await setup({ tlsCert: c.cert, tlsKey: c.key });
    const quiet: Client[] = [];
    let closed = 0;
    const ends: Promise<unknown>[] = [];
    try {
      // 50 from 7 addresses: at most 8 each, so the cap in all (32) is what they hit.
      for (let i = 0; i < 50; i++) {
        const conn = await connectFrom(`127.0.0.${2 + i % 7}`, t.port);
        quiet.push(conn);
        ends.push(readToEnd(conn, 10_000).then((r) => r.end !== "timeout" && closed++));
      }
      await until(() => closed === 50 - 32, "18 of the oldest dropped for the newer ones");
      assert.equal(t.listener.waiting, 32);
      await promptClientServed(
        t,
        () => Deno.connectTls({ hostname: "localhost", port: t.port, caCerts: [c.pem] }),
      );
      await until(() => closed === 50 - 32 + 1, "one more dropped for the TLS client");
    } finally {
      for (const q of quiet) q.close();
      await Promise.all(ends);
    }
  } finally {
    await Deno.remove(c.dir, { recursive: true });
  }
});

Deno.test("authFailures counts wrong password lines and timeouts, not successes or early closes", async () => {
  await using t = await setup({ authTimeoutMs: 300 });
  assert.equal(t.listener.group, `tcp:127.0.0.1:${t.port}`);
  assert.deepEqual(t.listener.authFailures, { password: 0, timeout: 0 });
  assert.deepEqual(await attempt(t.port, "wrong\n"), { text: FAILED, end: "eof" });
  assert.deepEqual(await attempt(t.port, "\n"), { text: FAILED, end: "eof" });
  assert.deepEqual(await attempt(t.port, "", 5000), { text: FAILED, end: "eof" });
  const ok = await authenticated(t);
  ok.close();
  const earlyCloses = () =>
    logText().filter((l) => /disconnected before authenticating/.test(l)).length;
  const before = earlyCloses();
  const early = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
  early.close();
  await until(() => earlyCloses() > before, "the early close");
  assert.deepEqual(t.listener.authFailures, { password: 2, timeout: 1 });
});
