/**
 * How the NATS publisher connects: the client's options from the validated flags, and one
 * sentence for each way a connection can be refused.
 *
 * Reconnecting is the client library's (every cluster member in turn, forever, with jitter);
 * the first connection is retried by the publisher itself, so that a broker out of reach at
 * start-up is logged once rather than blocking start-up or failing it.
 *
 * @module
 */

import {
  AuthorizationError,
  type ConnectionOptions,
  credsAuthenticator,
  UserAuthenticationExpiredError,
} from "@nats-io/transport-node";
import { describe } from "../errors.ts";
import { tolerateUncaught } from "../uncaught.ts";
import { getLogger } from "../log.ts";
import { type NatsAuth, requiresTls } from "./nats_settings.ts";

export type { NatsAuth };

const log = getLogger("nats");

/** Where and how to connect. */
export interface NatsConnectConfig {
  /** Server URLs: nats://host:port, tls://host:port or host:port. */
  servers: string[];
  auth: NatsAuth;
  /** PEM CA certificate(s) to verify the servers with, or null for the system's roots. */
  ca: string | null;
  /** Shown on the servers' monitoring pages. */
  name: string;
}

let resetsIgnored = false;

/**
 * Keeps a late connection reset on a NATS socket the client has given up on from ending the
 * process; the publisher and `procMonitor client --nats` both install it. The client's Node
 * transport removes a socket's listeners before destroying it (after a refused login, for
 * one); under Deno a read already under way can still fail with ECONNRESET then, and an
 * error event with no listener is thrown as an uncaught exception. Only that error (a read
 * ECONNRESET) is let pass; any other still ends the process (lib/uncaught.ts). Idempotent,
 * and it stays for the process's life: the reset can come after the connection is closed.
 */
export function ignoreLateSocketResets(): void {
  if (resetsIgnored) return;
  resetsIgnored = true;
  tolerateUncaught((error) => {
    const late = error instanceof Error &&
      (error as { code?: unknown }).code === "ECONNRESET" &&
      error.message.startsWith("read ECONNRESET");
    if (late) log.debug("Ignored a connection reset on a socket the NATS client had dropped");
    return late;
  });
}

/** Milliseconds between reconnect attempts (plus up to {@link RECONNECT_JITTER_MS}). */
const RECONNECT_WAIT_MS = 250;
const RECONNECT_JITTER_MS = 250;

/** The client's options: reconnect forever, quickly, across every server listed. */
export function connectionOptions(config: NatsConnectConfig): ConnectionOptions {
  const options: ConnectionOptions = {
    servers: config.servers,
    name: config.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: RECONNECT_WAIT_MS,
    reconnectJitter: RECONNECT_JITTER_MS,
    reconnectJitterTLS: RECONNECT_JITTER_MS,
    // A dead server is noticed within seconds, not the default minutes.
    pingInterval: 5_000,
    maxPingOut: 2,
    timeout: 5_000,
  };
  return Object.assign(options, securityOptions(config.auth, config.ca, config.servers));
}

/**
 * The credentials and TLS parts of a NATS client's options, the publisher's and
 * `procMonitor client --nats`'s alike: TLS is required when a CA is given or a server is
 * tls://; otherwise it is the server's choice.
 *
 * @param ca PEM CA certificate(s), or null for the system's roots
 */
export function securityOptions(
  auth: NatsAuth,
  ca: string | null,
  servers: string[],
): Pick<ConnectionOptions, "user" | "pass" | "token" | "authenticator" | "tls"> {
  const options: ConnectionOptions = {};
  if (auth.kind === "user") Object.assign(options, { user: auth.user, pass: auth.password });
  if (auth.kind === "token") options.token = auth.token;
  if (auth.kind === "creds") options.authenticator = credsAuthenticator(auth.creds);
  if (requiresTls(ca, servers)) options.tls = ca === null ? {} : { ca };
  return options;
}

/** What the server refused: procMonitor's credentials, named as the flags gave them. */
function credentialsName(auth: NatsAuth): string {
  switch (auth.kind) {
    case "user":
      return "user and password";
    case "token":
      return "token (--nats-token-file)";
    case "creds":
      return "credentials (--nats-creds)";
    case "none":
      return "connection without credentials";
  }
}

/** Whether `error` means the servers refused the credentials (retrying will not help soon). */
export function isAuthError(error: unknown): boolean {
  return error instanceof AuthorizationError || error instanceof UserAuthenticationExpiredError;
}

/**
 * One sentence for a failed connection to `where` (a server URL or the list), e.g. "NATS at
 * nats://127.0.0.1:4222 refused procMonitor's user and password".
 */
export function natsProblem(error: unknown, where: string, auth: NatsAuth): string {
  if (error === undefined) return `NATS at ${where} closed the connection`;
  if (isAuthError(error)) {
    return auth.kind === "none"
      ? `NATS at ${where} requires credentials: give --nats-user with --nats-password-file, ` +
        `--nats-token-file or --nats-creds`
      : `NATS at ${where} refused procMonitor's ${credentialsName(auth)}`;
  }
  const reason = describe(error).replace(/\.$/, "");
  return `NATS at ${where} is out of reach (${reason})`;
}
