/**
 * The HTTP side of `--metrics`: `GET /metrics` (Prometheus text format) and `GET /healthz`
 * (200 `ok` while healthy, 503 and the reason otherwise). HEAD works like GET without the
 * body; other methods get 405, other paths 404. Served by `Deno.serve`, bound to one
 * address (loopback unless the admin chose another).
 *
 * @module
 */

import { EXPOSITION_CONTENT_TYPE } from "./exposition.ts";
import { describe } from "../errors.ts";
import { bindError, hostPort } from "./connections.ts";
import { getLogger } from "../log.ts";

const log = getLogger("metrics");

const TEXT = "text/plain; charset=utf-8";

/** What {@link MetricsServer.open} serves. */
export interface MetricsServerOptions {
  /** Address to bind: an IPv4 or IPv6 address (without brackets) or `localhost`. */
  hostname: string;
  /** TCP port, 1-65535 (0 picks a free one, for tests). */
  port: number;
  /** The body of `/metrics`, rendered per request. */
  metrics: () => string;
  /** Null while healthy; otherwise one sentence saying why not, the body of a 503. */
  health: () => string | null;
}

/** A running metrics endpoint; close it with {@link close}. */
export class MetricsServer implements AsyncDisposable {
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  /** The port listened on (useful with port 0). */
  readonly port: number;
  /** `ADDR:PORT` as it is logged, with brackets around an IPv6 address. */
  readonly address: string;

  private constructor(server: Deno.HttpServer<Deno.NetAddr>, hostname: string) {
    this.#server = server;
    this.port = server.addr.port;
    this.address = hostPort(hostname, this.port);
  }

  /**
   * Binds and starts serving.
   *
   * @throws {StartupError} with one sentence when the address and port cannot be bound.
   */
  static open(opts: MetricsServerOptions): MetricsServer {
    let server: Deno.HttpServer<Deno.NetAddr>;
    try {
      server = Deno.serve({
        hostname: opts.hostname,
        port: opts.port,
        // Deno.serve would otherwise print "Listening on ..." to stdout, which carries events.
        onListen: () => {},
        onError: (error) => {
          log.error("Answering a metrics request failed: {error}", { error: describe(error) });
          return new Response("Internal server error\n", { status: 500 });
        },
      }, (request) => answer(request, opts));
    } catch (error) {
      throw bindError(
        error,
        `Cannot serve metrics on ${hostPort(opts.hostname, opts.port)}`,
        opts.hostname,
      );
    }
    const self = new MetricsServer(server, opts.hostname);
    log.info("Serving metrics on {url}", { url: `http://${self.address}/metrics` });
    return self;
  }

  /** Stops listening and ends the connections once their answers are sent. Idempotent. */
  async close(): Promise<void> {
    await this.#server.shutdown();
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** The response to one request. */
function answer(
  request: Request,
  opts: Pick<MetricsServerOptions, "metrics" | "health">,
): Response {
  const path = new URL(request.url).pathname;
  if (path !== "/metrics" && path !== "/healthz") {
    return text(404, "Not found: try /metrics or /healthz\n", request);
  }
  if (request.method !== "GET" && request.method !== "HEAD") {
    return text(405, `${request.method} is not allowed here: use GET or HEAD\n`, request, {
      allow: "GET, HEAD",
    });
  }
  if (path === "/metrics") {
    return new Response(request.method === "HEAD" ? null : opts.metrics(), {
      headers: { "content-type": EXPOSITION_CONTENT_TYPE, "cache-control": "no-store" },
    });
  }
  const problem = opts.health();
  return text(problem === null ? 200 : 503, `${problem ?? "ok"}\n`, request);
}

function text(
  status: number,
  body: string,
  request: Request,
  headers: Record<string, string> = {},
): Response {
  return new Response(request.method === "HEAD" ? null : body, {
    status,
    headers: { "content-type": TEXT, "cache-control": "no-store", ...headers },
  });
}
