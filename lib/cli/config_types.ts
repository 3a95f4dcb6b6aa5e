/**
 * The validated configuration the server and the client subcommand run with.
 * Produced by lib/cli/config.ts from the command line and environment (SPEC §3).
 *
 * @module
 */

import type { EventName } from "../events/event.ts";
import type { LogLevel } from "../log.ts";
import type { OutputFormat } from "../outputs/console_output.ts";
import type { NatsAuth } from "../outputs/nats_settings.ts";
import type { NatsStreamConfig } from "../outputs/nats_output.ts";

/** Default Unix socket path (v1's). */
export const DEFAULT_SOCKET_PATH = "/var/run/procMonitor.sock";

/** Default per-listener client limit (v1's). */
export const DEFAULT_MAX_CLIENTS = 10;

/** The server's configuration. */
export interface ServerConfig {
  mode: "server";
  /** Events to report (`-e`); never empty. */
  events: EventName[];
  /** Maximum concurrent clients per listener (`-c`), >= 1. */
  maxClients: number;
  /** Unix socket path to serve, or null when the Unix listener is off. */
  socketPath: string | null;
  /** File mode of the socket file (`--socket-mode`, octal), default 0o666. */
  socketMode: number;
  /** Group name or numeric gid owning the socket file (`--socket-group`), or null. */
  socketGroup: string | null;
  /** TCP port (`-t`), or null when TCP is off. */
  tcpPort: number | null;
  /** TCP bind address (`--bind`), default "0.0.0.0" (v1 listened on all addresses). */
  bindAddress: string;
  /** The TCP password (from `-a`, `--auth-file` or PROCMONITOR_AUTH); null without TCP. */
  auth: string | null;
  /** TLS certificate and key paths; both or neither. */
  tlsCert: string | null;
  tlsKey: string | null;
  /** Print events to stdout (`-d`). */
  direct: boolean;
  /** Console format (`--format`). */
  format: OutputFormat;
  /** Report thread-level events too (`--threads`). */
  threads: boolean;
  /** Only events of these users: names or numeric uids (`--user`, repeatable/comma list). */
  users: string[];
  /** Only events whose cmdline matches (`--match`). */
  match: RegExp | null;
  /** Only this process and its descendants (`--pid`). */
  pids: number[];
  logLevel: LogLevel;
  /** Log to syslog instead of stderr (`--syslog`). */
  syslog: boolean;
  /** Raise the reader thread's priority (default true; `--no-realtime` turns it off). */
  realtime: boolean;
  /** Where processes belong and come from: fields and filters (issue 10). */
  belong: BelongConfig;
  /** Where to serve `/metrics` and `/healthz` (`--metrics`), or null when off. */
  metrics: MetricsAddress | null;
  /** Exit events carry resource usage from taskstats (default true; `--no-usage` off). */
  usage: boolean;
  /** Exec snapshots taken in the kernel by BPF where it works (default true; `--no-bpf` off). */
  bpf: boolean;
  /** Publish to NATS (`--nats`), or null. */
  nats: NatsConfig | null;
  /**
   * Every event's `host`: `--host-id`, or with `--nats` the hostname made subject-safe;
   * null when neither is given (events carry no host).
   */
  hostId: string | null;
}

/** `--nats` and its companions (SPEC §11). */
export interface NatsConfig {
  /** Server URLs, in the order given. */
  servers: string[];
  /** `--nats-subject-prefix` (default "procmonitor"). */
  subjectPrefix: string;
  /** Credentials, read from their files already. */
  auth: NatsAuth;
  /** `--nats-ca`'s PEM text, or null. */
  ca: string | null;
  /** `--nats-buffer` in bytes. */
  bufferBytes: number;
  /** `--nats-stream` with its replicas and max age, or null for core NATS. */
  stream: NatsStreamConfig | null;
}

/** `--unit`, `--cgroup`, `--container`, `--ancestry`, `--ancestor`, `--not-ancestor`, `--env`. */
export interface BelongConfig {
  /** Only processes in these units: names or globs (`nginx*.service`). */
  units: string[];
  /** Only processes in these cgroups or below (paths starting with "/"). */
  cgroups: string[];
  /** Only processes in a container. */
  container: boolean;
  /** Ancestors shown on fork, exec and exit events; 0 = none. */
  ancestry: number;
  /** Only processes with an ancestor whose cmdline matches. */
  ancestor: RegExp | null;
  /** No processes with an ancestor whose cmdline matches. */
  notAncestor: RegExp | null;
  /** Environment variables read at exec. */
  env: string[];
  /** Read the cgroup at exec, and carry cgroup, unit, container_id (`--cgroup-info`, or
   * a cgroup filter). */
  readCgroup: boolean;
  /** Read the working directory at exec (`--cwd`). */
  readCwd: boolean;
}

/** Default address of `--metrics PORT`: loopback, as metrics are for the host's scraper. */
export const DEFAULT_METRICS_ADDRESS = "127.0.0.1";

/** The HTTP address of `--metrics`. */
export interface MetricsAddress {
  /** IPv4 or IPv6 address (no brackets) or `localhost`. */
  address: string;
  port: number;
}

/** The `procMonitor client` subcommand's configuration. */
export interface ClientConfig {
  mode: "client";
  /** Unix socket path (default DEFAULT_SOCKET_PATH) when not TCP. */
  socketPath: string;
  /** TCP target, or null for the Unix socket. */
  tcp: { host: string; port: number; auth: string; tls: boolean; ca: string | null } | null;
  format: OutputFormat;
  /**
   * Reconnect with backoff after the connection drops (with `nats`: retry for ever, also
   * at start).
   */
  reconnect: boolean;
  logLevel: LogLevel;
  /** Events from NATS instead of a procMonitor server (`--nats`), or null. */
  nats: NatsClientConfig | null;
}

/** Default subject prefix of the events procMonitor publishes to NATS (SPEC §11). */
export const DEFAULT_NATS_SUBJECT_PREFIX = "procmonitor";

/** `procMonitor client --nats`: where the events come from, and which. */
export interface NatsClientConfig {
  /** Server URLs (`--nats`, a comma list), as given; none carries credentials. */
  servers: string[];
  /** The subject subscribed to: `--subject`, or built from `--host-id`/`--nats-subject-prefix`. */
  subject: string;
  /** JetStream stream to read from (`--stream`), or null for a live subscription only. */
  stream: string | null;
  /** Where the replay starts (`--since`); null with a stream replays all of it. */
  since: Date | null;
  /** The credentials: `--nats-user` with `--nats-password-file`, `--nats-token-file` or `--nats-creds`. */
  auth: NatsAuth;
  /** PEM CA certificate(s) from `--nats-ca`, or null. */
  ca: { path: string; pem: string } | null;
  /** Whether TLS is required: a tls:// URL or `--nats-ca`. */
  tls: boolean;
}

/** `--help` or `--version` was asked for: print `text` to stdout and exit 0. */
export interface InfoRequest {
  mode: "info";
  /** The help text, or the first line of the version (procMonitor's own). */
  text: string;
  /** Set for `--version`: main.ts prints the full report (lib/cli/version.ts) instead. */
  version?: true;
}

/** Any result of parsing a command line. */
export type Config = ServerConfig | ClientConfig | InfoRequest;
