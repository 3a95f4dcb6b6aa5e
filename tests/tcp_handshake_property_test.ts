/**
 * Property test of the TCP password handshake with fast-check, over real loopback
 * connections. The line reader itself (LineReader in lib/outputs/tcp_listener.ts) is not
 * exported, so the property is stated on what a client sees: for any bytes, sent in any
 * pieces, the answer is the one a model of the reader and the check predicts, and the
 * listener keeps serving.
 *
 * Model (SPEC §5, lib/outputs/tcp_listener.ts): the line is what comes before the first "\n" if
 * that is within the first 1024 bytes; one trailing "\r" is dropped; only a line equal to
 * the password in UTF-8 succeeds. 1025 bytes without "\n" fail ("too long"); fewer, then
 * the end of input, get no answer beyond the prompt.
 */
import { concat } from "./support/bytes.ts";
import assert from "node:assert/strict";
import fc from "fast-check";
import { captureLogs, logText } from "./support/logs.ts";
import { Hub } from "../lib/outputs/hub.ts";
import {
  AUTH_FAILURE,
  AUTH_SUCCESS,
  MAX_PASSWORD_LINE,
  PROMPT,
  TcpListener,
} from "../lib/outputs/tcp_listener.ts";

await captureLogs();

const PASSWORD = "s3cret-Pässword";
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const PASSWORD_BYTES = encoder.encode(PASSWORD);

type Verdict = "success" | "failure" | "none";

/** What the server must answer to `data` followed by the end of the client's input. */
function expected(data: Uint8Array): Verdict {
  const newline = data.indexOf(0x0a);
  if (newline < 0 || newline > MAX_PASSWORD_LINE) {
    return data.length > MAX_PASSWORD_LINE ? "failure" : "none";
  }
  let line = data.subarray(0, newline);
  if (line.at(-1) === 0x0d) line = line.subarray(0, -1);
  const same = line.length === PASSWORD_BYTES.length &&
    line.every((b, i) => b === PASSWORD_BYTES[i]);
  return same ? "success" : "failure";
}

/** Bytes near the interesting cases: the password, its neighbours, long and binary lines. */
const payload = fc.oneof(
  fc.constantFrom(
    `${PASSWORD}\n`,
    `${PASSWORD}\r\n`,
    `${PASSWORD}\n${PASSWORD}\n`,
    `${PASSWORD}\r\r\n`,
    `${PASSWORD} \n`,
    `\n${PASSWORD}\n`,
    `${PASSWORD}`,
    "\n",
    "\r\n",
  ).map((s) => encoder.encode(s)),
  fc.tuple(
    fc.constantFrom(PASSWORD_BYTES, new Uint8Array()),
    fc.uint8Array({ maxLength: 40 }),
    fc.constantFrom("\n", "\r\n", "", "\n\n"),
  ).map(([a, b, c]) => concat([a, b, encoder.encode(c)])),
  fc.uint8Array({ maxLength: 64 }),
  // Around the 1024-byte limit, with or without the newline.
  fc.tuple(
    fc.integer({ min: MAX_PASSWORD_LINE - 3, max: MAX_PASSWORD_LINE + 3 }),
    fc.integer({ min: 0x20, max: 0x7e }),
    fc.boolean(),
  ).map(([n, byte, nl]) =>
    concat([new Uint8Array(n).fill(byte), nl ? encoder.encode("\n") : new Uint8Array()])
  ),
  fc.uint8Array({ minLength: 1000, maxLength: 1100 }),
);

/** The payload and where to cut it into the pieces the client writes one by one. */
const sending = payload.chain((data) =>
  fc.record({
    data: fc.constant(data),
    cuts: fc.uniqueArray(fc.integer({ min: 1, max: Math.max(1, data.length - 1) }), {
      maxLength: 4,
    }).map((c) => c.filter((x) => x < data.length).sort((a, b) => a - b)),
  })
);

/** Reads until EOF, a reset, or the success line (the hub then keeps the connection). */
async function readToEnd(conn: Deno.Conn): Promise<string> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(4096);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
      if (decoder.decode(concat(chunks)) === PROMPT + AUTH_SUCCESS) break;
    }
  } catch {
    // A reset after the answer: what was read stands.
  }
  return decoder.decode(concat(chunks));
}

Deno.test("the TCP handshake answers any bytes as the line model says (property)", async () => {
  const hub = new Hub();
  const listener = await TcpListener.open(hub, {
    port: 0,
    bind: "127.0.0.1",
    password: PASSWORD,
    tlsCert: null,
    tlsKey: null,
    maxClients: 1000,
    authTimeoutMs: 5000,
    failureDelay: { baseMs: 1, maxMs: 2 },
    failureBudget: { perSecond: 100000, burst: 100000 },
  });
  try {
    await fc.assert(
      fc.asyncProperty(sending, async ({ data, cuts }) => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.port });
        try {
          const reading = readToEnd(conn);
          const writing = (async () => {
            let from = 0;
            for (const to of [...cuts, data.length]) {
              let off = from;
              while (off < to) off += await conn.write(data.subarray(off, to));
              from = to;
              await new Promise((r) => setTimeout(r, 0));
            }
            await conn.closeWrite();
          })().catch(() => {/* the server may close first: it has its answer */});
          const text = await reading;
          await writing;
          const verdict = expected(data);
          if (verdict === "none") {
            // The client left first: nothing to answer (the prompt may not be out yet).
            assert.ok(PROMPT.startsWith(text), `no answer expected, got ${JSON.stringify(text)}`);
          } else {
            assert.equal(text, PROMPT + (verdict === "success" ? AUTH_SUCCESS : AUTH_FAILURE));
          }
        } finally {
          conn.close();
        }
      }),
      { numRuns: 150 },
    );
    // Never a password in the logs, whatever was sent.
    assert.ok(!logText().some((l) => l.includes(PASSWORD)));
  } finally {
    await listener.close();
    await hub.close(200);
  }
});
