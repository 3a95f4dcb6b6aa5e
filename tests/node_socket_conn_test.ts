/**
 * Unit tests of lib/outputs/node_socket_conn.ts over real loopback sockets: NodeSocketConn over a
 * Duplex made by connDuplex (plain TCP, so the peer is an ordinary Deno.Conn), and the
 * server side of TLS with startServerTls.
 */
import assert from "node:assert/strict";
import { createSecureContext } from "node:tls";
import { makeCert } from "./support/tls.ts";
import { connDuplex, NodeSocketConn, startServerTls } from "../lib/outputs/node_socket_conn.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A connected pair: `server` is the accepted side, `client` the connecting one. */
async function pair(): Promise<{ server: Deno.TcpConn; client: Deno.TcpConn }> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  return { server: await accepted, client };
}

/** Resolves with `p`'s value, or "pending" when it has not settled within `ms`. */
async function settledWithin<T>(p: Promise<T>, ms: number): Promise<T | "pending"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const pending = new Promise<"pending">((r) => timer = setTimeout(() => r("pending"), ms));
  try {
    return await Promise.race([p, pending]);
  } finally {
    clearTimeout(timer);
  }
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}

Deno.test("read: a small buffer gets the rest of a chunk next time; null at the peer's end", async () => {
  const { server, client } = await pair();
  const conn = new NodeSocketConn(connDuplex(server));
  try {
    await writeAll(client, encoder.encode("hello world"));
    await client.closeWrite();
    const buf = new Uint8Array(4);
    let text = "";
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
      assert.ok(n > 0 && n <= 4);
      text += decoder.decode(buf.subarray(0, n));
    }
    assert.equal(text, "hello world");
    assert.equal(await conn.read(buf), null, "and null again");
  } finally {
    conn.close();
    client.close();
  }
});

Deno.test("write: resolves once taken; a peer that does not read holds it back", async () => {
  const { server, client } = await pair();
  const conn = new NodeSocketConn(connDuplex(server));
  try {
    const chunk = new Uint8Array(1024 * 1024);
    let written = 0;
    // Write one chunk at a time, as the hub does, until a write stays pending.
    for (;;) {
      const n = await settledWithin(conn.write(chunk), 300);
      if (n === "pending") break;
      assert.equal(n, chunk.length);
      written += n;
      assert.ok(written < 256 * 1024 * 1024, "no backpressure: 256 MiB taken by a silent peer");
    }
    // What was taken sits in kernel buffers and at most one chunk in Node's: it all arrives.
    const buf = new Uint8Array(64 * 1024);
    let received = 0;
    while (received < written) received += (await client.read(buf)) ?? 0;
    assert.ok(received >= written);
  } finally {
    conn.close();
    client.close();
  }
});

Deno.test("close: a pending read returns null, a pending write rejects, the peer sees the end", async () => {
  const { server, client } = await pair();
  const conn = new NodeSocketConn(connDuplex(server));
  try {
    const reading = conn.read(new Uint8Array(16));
    const big = new Uint8Array(64 * 1024 * 1024); // more than the kernel takes from a silent peer
    const writing = conn.write(big);
    assert.equal(await settledWithin(reading, 50), "pending");
    conn.close();
    assert.equal(await reading, null);
    await assert.rejects(writing);
    await assert.rejects(conn.write(new Uint8Array(1)), "writes after close reject");
    assert.equal(await conn.read(new Uint8Array(1)), null, "reads after close return null");
    // The peer drains what had been sent, then sees EOF or a reset.
    const buf = new Uint8Array(1024 * 1024);
    const end = await settledWithin(
      (async () => {
        try {
          while (await client.read(buf) !== null) { /* drain */ }
          return "eof";
        } catch {
          return "reset";
        }
      })(),
      5000,
    );
    assert.notEqual(end, "pending");
  } finally {
    client.close();
  }
});

Deno.test("closeWrite: the peer reads EOF, and what the peer sends still arrives", async () => {
  const { server, client } = await pair();
  const conn = new NodeSocketConn(connDuplex(server));
  try {
    await conn.write(encoder.encode("bye\n"));
    await conn.closeWrite();
    const buf = new Uint8Array(16);
    const n = await client.read(buf);
    assert.equal(decoder.decode(buf.subarray(0, n ?? 0)), "bye\n");
    assert.equal(await client.read(buf), null);
    await writeAll(client, encoder.encode("late"));
    client.close();
    let text = "";
    for (let m = await conn.read(buf); m !== null; m = await conn.read(buf)) {
      text += decoder.decode(buf.subarray(0, m));
    }
    assert.equal(text, "late");
  } finally {
    conn.close();
  }
});

Deno.test("startServerTls: a trusting client completes the handshake and both talk", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pm-tls-" });
  try {
    const cert = await makeCert(dir);
    const context = createSecureContext({ cert: cert.cert, key: cert.key });
    const { server, client } = await pair();
    const tls = startServerTls(server, context);
    const tlsClient = await Deno.startTls(client, { hostname: "localhost", caCerts: [cert.cert] });
    try {
      await tlsClient.handshake();
      assert.equal(await tls.secured, null);
      await tls.conn.write(encoder.encode("Password: "));
      const buf = new Uint8Array(16);
      const n = await tlsClient.read(buf);
      assert.equal(decoder.decode(buf.subarray(0, n ?? 0)), "Password: ");
      await writeAll(tlsClient, encoder.encode("pw\n"));
      const m = await tls.conn.read(buf);
      assert.equal(decoder.decode(buf.subarray(0, m ?? 0)), "pw\n");
    } finally {
      tls.conn.close();
      tlsClient.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("startServerTls: closing before the ClientHello closes the TCP connection", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pm-tls-" });
  try {
    const cert = await makeCert(dir);
    const context = createSecureContext({ cert: cert.cert, key: cert.key });
    const { server, client } = await pair();
    const tls = startServerTls(server, context);
    try {
      assert.equal(await settledWithin(tls.secured, 100), "pending");
      tls.conn.close();
      assert.ok(await tls.secured instanceof Error, "the handshake did not complete");
      const end = await settledWithin(client.read(new Uint8Array(16)).catch(() => null), 2000);
      assert.equal(end, null, "the silent peer sees its connection end");
    } finally {
      client.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("startServerTls: a peer speaking plain text fails the handshake with an error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pm-tls-" });
  try {
    const cert = await makeCert(dir);
    const context = createSecureContext({ cert: cert.cert, key: cert.key });
    const { server, client } = await pair();
    const tls = startServerTls(server, context);
    try {
      await writeAll(client, encoder.encode("password\n"));
      const err = await tls.secured;
      assert.ok(err instanceof Error, String(err));
    } finally {
      tls.conn.close();
      client.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
