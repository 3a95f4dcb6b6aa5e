/**
 * What the command line decides about NATS, with none of the NATS client behind it: the
 * parser needs these, and importing the client (about 13 MiB of resident memory and 4 MB of
 * heap at start-up) is left to the runs that use `--nats`.
 *
 * @module
 */

/** The credentials the flags gave, each read from its file already (never the command line). */
export type NatsAuth =
  | { kind: "none" }
  | { kind: "user"; user: string; password: string }
  | { kind: "token"; token: string }
  /** The contents of a `.creds` file (a user JWT and its nkey seed), and its path for messages. */
  | { kind: "creds"; creds: Uint8Array; path: string };

/** Default `--nats-buffer`: about a second of a fork storm's events. */
export const DEFAULT_NATS_BUFFER_BYTES = 8 << 20;

/** Whether TLS is required: a CA is given or a server is tls://. */
export function requiresTls(ca: string | null, servers: string[]): boolean {
  return ca !== null || servers.some((s) => s.startsWith("tls://"));
}
