import assert from "node:assert/strict";
import {
  bootId,
  messageIdStem,
  NatsOutput,
  type NatsOutputOptions,
  natsSubject,
} from "../lib/outputs/nats_output.ts";
import { defaultHostId, isHostId, isSubjectPrefix, subjectSafe } from "../lib/events/host_id.ts";
import { natsProblem } from "../lib/outputs/nats_connect.ts";
import { AuthorizationError, ConnectionError } from "@nats-io/transport-node";
import type { LostEvent } from "../lib/events/event.ts";
import { captureLogs, logText } from "./support/logs.ts";

await captureLogs();

const TIME = "2026-01-02T03:04:05.000006Z";

/** A publisher with no servers: everything stays in its buffer. */
function offline(bufferBytes: number, lost: LostEvent[]): NatsOutput {
  const options: NatsOutputOptions = {
    connect: { servers: [], auth: { kind: "none" }, ca: null, name: "test" },
    prefix: "procmonitor",
    host: "h1",
    bufferBytes,
    stream: null,
    now: () => TIME,
    onLost: (event) => lost.push(event),
    idStem: "h1.boot.start",
  };
  return new NatsOutput(options);
}

/** An exec line of exactly `length` characters. */
function line(length: number): string {
  const head = '{"event":"exec","cmdline":"';
  const json = head + "x".repeat(length - head.length - 2) + '"}';
  assert.equal(json.length, length);
  return json + "\n";
}

Deno.test("natsSubject() is <prefix>.<host>.<event>", () => {
  assert.equal(natsSubject("procmonitor", "web1", "exec"), "procmonitor.web1.exec");
  assert.equal(natsSubject("acme.prod", "web1", "lost"), "acme.prod.web1.lost");
});

Deno.test("subjectSafe() turns a hostname into one subject token", () => {
  assert.equal(subjectSafe("web1.example.com"), "web1_example_com");
  assert.equal(subjectSafe("a b*c>d"), "a_b_c_d");
  assert.equal(subjectSafe("ok-host_1"), "ok-host_1");
  assert.equal(subjectSafe(""), "unknown");
  assert.equal(subjectSafe("x".repeat(100)).length, 64);
  assert.ok(isHostId(defaultHostId()));
});

Deno.test("isHostId() and isSubjectPrefix() refuse what would break a subject", () => {
  assert.ok(isHostId("web1"));
  for (const bad of ["", "a.b", "a*", "a>", "a b", "x".repeat(65)]) {
    assert.ok(!isHostId(bad), bad);
  }
  assert.ok(isSubjectPrefix("procmonitor"));
  assert.ok(isSubjectPrefix("acme.prod"));
  for (const bad of ["", ".a", "a.", "a..b", "a.*", "a.>", "a b"]) {
    assert.ok(!isSubjectPrefix(bad), bad);
  }
});

Deno.test("messageIdStem() joins host, boot id and start instant; runs differ", () => {
  const boot = bootId();
  assert.match(boot, /^[0-9a-f]{32}$/);
  assert.equal(messageIdStem("web1", "abc", 1_700_000_000_000), "web1.abc.loyw3v28");
  assert.notEqual(messageIdStem("web1", boot, 1000), messageIdStem("web1", boot, 1001));
});

Deno.test("NatsOutput buffers up to its bound and counts what does not fit as lost", async () => {
  const lost: LostEvent[] = [];
  // Each entry counts its JSON (199), its subject (21) and 64 bytes: 284; 1000 bytes hold 3.
  const output = offline(1000, lost);
  for (let i = 0; i < 10; i++) output.push("exec", line(200));
  assert.deepEqual(output.stats(), { buffered: 3, published: 0, acked: 0, lost: 7 });
  assert.deepEqual(lost, []);
  output.reportLost();
  assert.deepEqual(lost, [{ event: "lost", time: TIME, count: 7, where: "nats", host: "h1" }]);
  // The lost event itself waits for NATS too, past the bound.
  assert.deepEqual(output.stats(), { buffered: 4, published: 0, acked: 0, lost: 7 });
  output.reportLost();
  assert.equal(lost.length, 1, "nothing new lost, no new event");
  assert.equal(await output.close(0), 4);
});

Deno.test("NatsOutput reports what it lost on close, to the other outputs", async () => {
  const lost: LostEvent[] = [];
  // One entry of 1000 + 21 + 64 bytes fits in 1100.
  const output = offline(1100, lost);
  for (let i = 0; i < 5; i++) output.push("fork", line(1000));
  assert.equal(output.stats().lost, 4);
  assert.equal(await output.close(0), 2);
  assert.deepEqual(lost.map((e) => e.count), [4]);
});

Deno.test("NatsOutput with the broker down at start logs it once, however often it retries", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dead = `nats://127.0.0.1:${listener.addr.port}`;
  listener.close();
  const output = new NatsOutput({
    connect: { servers: [dead], auth: { kind: "none" }, ca: null, name: "test" },
    prefix: "procmonitor",
    host: "h1",
    bufferBytes: 1 << 20,
    stream: { name: "DOWN", replicas: 1, maxAgeMs: 0 },
    now: () => TIME,
    onLost: () => {},
    idStem: "h1.boot.down",
  });
  output.push("exec", line(100));
  await new Promise((resolve) => setTimeout(resolve, 2_500)); // two retries at least
  assert.equal(await output.close(0), 1);
  assert.deepEqual(logText().filter((l) => l.includes("out of reach")), [
    `NATS at ${dead} is out of reach (connection refused); events wait in the buffer (1048576 bytes)`,
  ]);
});

Deno.test("natsProblem() says in one sentence which credentials were refused", () => {
  const refused = new AuthorizationError("Authorization Violation");
  const url = "nats://127.0.0.1:4222";
  assert.equal(
    natsProblem(refused, url, { kind: "user", user: "u", password: "p" }),
    "NATS at nats://127.0.0.1:4222 refused procMonitor's user and password",
  );
  assert.equal(
    natsProblem(refused, url, { kind: "token", token: "t" }),
    "NATS at nats://127.0.0.1:4222 refused procMonitor's token (--nats-token-file)",
  );
  assert.match(
    natsProblem(refused, url, { kind: "none" }),
    /requires credentials: give --nats-user/,
  );
  assert.equal(
    natsProblem(new ConnectionError("connection refused"), url, { kind: "none" }),
    "NATS at nats://127.0.0.1:4222 is out of reach (connection refused)",
  );
});

/**
 * A NATS server that answers the client's first PING, so the client counts itself
 * connected, and then reads everything and answers nothing: a server too slow to take more.
 */
function silentServer(): { port: number; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      (async () => {
        const enc = new TextEncoder();
        await conn.write(enc.encode(
          'INFO {"server_id":"SILENT","version":"2.9.10","proto":1,"headers":true,' +
            '"max_payload":1048576}\r\n',
        ));
        let answered = false;
        const buf = new Uint8Array(65536);
        let seen = "";
        while (true) {
          const n = await conn.read(buf).catch(() => null);
          if (n === null) return;
          if (!answered) {
            seen += new TextDecoder().decode(buf.subarray(0, n));
            if (seen.includes("PING\r\n")) {
              answered = true;
              await conn.write(enc.encode("PONG\r\n"));
            }
          }
        }
      })();
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close() {
      for (const conn of conns) conn.close();
      listener.close();
    },
  };
}

Deno.test("NatsOutput (core NATS) keeps a batch counted until the server has it: a silent server fills the buffer and the rest is lost", async () => {
  const server = silentServer();
  const lost: LostEvent[] = [];
  const output = new NatsOutput({
    connect: {
      servers: [`nats://127.0.0.1:${server.port}`],
      auth: { kind: "none" },
      ca: null,
      name: "test",
    },
    prefix: "procmonitor",
    host: "h1",
    bufferBytes: 64 * 1024,
    stream: null,
    now: () => TIME,
    onLost: (event) => lost.push(event),
    idStem: "h1.boot.start",
  });
  try {
    // 284 bytes each: the 64 KiB buffer holds 230 of them. Longer than the 3 s a flush is
    // given, after which a batch used to be let go uncounted.
    for (let round = 0; round < 80; round++) {
      for (let i = 0; i < 25; i++) output.push("exec", line(200));
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const stats = output.stats();
    assert.ok(stats.published > 0, "connected and handed a batch over");
    assert.ok(
      stats.published <= 231,
      `published ${stats.published}: no more than the buffer holds`,
    );
    assert.ok(stats.lost >= 2000 - 231 - 1, `lost ${stats.lost}`);
  } finally {
    await output.close(0);
    server.close();
  }
});
