/**
 * A TCP proxy on loopback between a NATS client and a real nats-server that forwards
 * everything, except that it drops, once, the message the server delivers on a chosen
 * subject: a lost JetStream acknowledgement, for the publisher's resend path.
 *
 * It reads the server's side of the protocol (`MSG <subject> <sid> [reply] <bytes>` and
 * `HMSG <subject> <sid> [reply] <header bytes> <total bytes>`, each followed by its payload);
 * every other line passes unchanged, and the client's side is not looked at. Plain TCP only.
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const CRLF = encoder.encode("\r\n");

/** Index of `\r\n` in `buf` at or after `from`, or -1. */
function lineEnd(buf: Uint8Array, from: number): number {
  for (let i = from; i + 1 < buf.length; i++) {
    if (buf[i] === CRLF[0] && buf[i + 1] === CRLF[1]) return i;
  }
  return -1;
}

/** Payload bytes (without the trailing CRLF) a `MSG`/`HMSG` control line announces, or -1. */
function payloadSize(tokens: string[]): number {
  if (tokens[0] === "MSG" || tokens[0] === "HMSG") return Number(tokens[tokens.length - 1]);
  return -1;
}

/** The proxy; `await using` closes the listener and every connection. */
export class AckDroppingProxy implements AsyncDisposable {
  readonly #listener: Deno.TcpListener;
  readonly #target: number;
  readonly #drop: (subject: string) => boolean;
  readonly #conns: Deno.Conn[] = [];
  readonly #pumps: Promise<void>[] = [];
  readonly #accepting: Promise<void>;
  /** Subjects of the messages dropped so far (at most one). */
  readonly dropped: string[] = [];

  /**
   * Listens on a free loopback port and forwards to `127.0.0.1:<targetPort>`, dropping the
   * first server message whose subject `drop` accepts.
   */
  constructor(targetPort: number, drop: (subject: string) => boolean) {
    this.#target = targetPort;
    this.#drop = drop;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#accepting = this.#accept();
  }

  /** `nats://127.0.0.1:<port>` of the proxy. */
  get url(): string {
    return `nats://127.0.0.1:${this.#listener.addr.port}`;
  }

  async #accept(): Promise<void> {
    try {
      for await (const client of this.#listener) {
        const server = await Deno.connect({ hostname: "127.0.0.1", port: this.#target });
        this.#conns.push(client, server);
        this.#pumps.push(this.#pipe(client, server), this.#filter(server, client));
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.BadResource)) throw error; // closed
    }
  }

  /** Client to server, unchanged. */
  async #pipe(from: Deno.Conn, to: Deno.Conn): Promise<void> {
    try {
      await from.readable.pipeTo(to.writable);
    } catch {
      // Either side closed: the other is closed on dispose.
    }
  }

  /** Server to client, without the one message to drop. */
  async #filter(from: Deno.Conn, to: Deno.Conn): Promise<void> {
    let pending: Uint8Array = new Uint8Array(0);
    const chunk = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await from.read(chunk);
        if (n === null) break;
        const joined = new Uint8Array(pending.length + n);
        joined.set(pending);
        joined.set(chunk.subarray(0, n), pending.length);
        const out: Uint8Array[] = [];
        let at = 0;
        while (true) {
          const end = lineEnd(joined, at);
          if (end < 0) break;
          const tokens = decoder.decode(joined.subarray(at, end)).split(" ");
          const size = payloadSize(tokens);
          const next = size < 0 ? end + 2 : end + 2 + size + 2;
          if (next > joined.length) break; // the payload is not all here yet
          if (size >= 0 && this.dropped.length === 0 && this.#drop(tokens[1])) {
            this.dropped.push(tokens[1]);
          } else {
            out.push(joined.subarray(at, next));
          }
          at = next;
        }
        pending = joined.slice(at);
        for (const part of out) await writeAll(to, part);
      }
    } catch {
      // Either side closed.
    }
    try {
      to.close();
    } catch (error) {
      if (!(error instanceof Deno.errors.BadResource)) throw error; // closed already
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch (error) {
        if (!(error instanceof Deno.errors.BadResource)) throw error; // closed already
      }
    }
    await Promise.all(this.#pumps);
  }
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let done = 0; done < data.length;) done += await conn.write(data.subarray(done));
}
