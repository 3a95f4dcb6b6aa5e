/**
 * The command line (SPEC §3): parsing, validation and `--help`.
 *
 * Flags are parsed by `node:util`'s `parseArgs` (strict), then validated here into a
 * {@linkcode Config}. Every problem is a {@linkcode UsageError} whose message is one sentence
 * naming the flag and the bad value; the caller prints it and exits 2. A password never
 * appears in any message.
 *
 * @module
 */

import ipRegex from "ip-regex";
import { parseArgs } from "node:util";
import denoJson from "../../deno.json" with { type: "json" };
import { DEFAULT_NATS_SUBJECT_PREFIX, type NatsClientConfig } from "./config_types.ts";
import {
  type BelongConfig,
  type ClientConfig,
  type Config,
  DEFAULT_MAX_CLIENTS,
  DEFAULT_METRICS_ADDRESS,
  DEFAULT_SOCKET_PATH,
  type MetricsAddress,
  type ServerConfig,
} from "./config_types.ts";
import type { LogLevel } from "../log.ts";
import type { OutputFormat } from "../outputs/console_output.ts";
import { ALL_EVENT_NAMES, DEFAULT_EVENT_NAMES, type EventName } from "../events/event.ts";
import type { NatsConfig } from "./config_types.ts";
import { defaultHostId, isHostId, isSubjectPrefix, MAX_HOST_ID } from "../events/host_id.ts";
import { DEFAULT_NATS_BUFFER_BYTES, type NatsAuth, requiresTls } from "../outputs/nats_settings.ts";
import { MAX_ANCESTRY } from "../events/ancestry.ts";

/** procMonitor's version, from deno.json's `"version"`. */
export const VERSION: string = denoJson.version;

/** Environment variable holding the TCP password when neither `-a` nor `--auth-file` is given. */
export const AUTH_ENV = "PROCMONITOR_AUTH";

/**
 * Longest accepted password, in UTF-8 bytes: the password and its newline must fit the
 * server's 1 KiB handshake line (SPEC §5).
 */
export const MAX_PASSWORD_BYTES = 1023;

/** Largest `-c/--clients`. */
export const MAX_CLIENTS_LIMIT = 10000;

/** Default TCP bind address (v1 listened on every address). */
export const DEFAULT_BIND_ADDRESS = "0.0.0.0";

/** Default host of `procMonitor client --tcp`. */
export const DEFAULT_CLIENT_HOST = "127.0.0.1";

/** Default file mode of the Unix socket file (v1's). */
export const DEFAULT_SOCKET_MODE = 0o666;

/** Longest Unix socket path in bytes (`sun_path` is 108 bytes with its NUL). */
const MAX_SOCKET_PATH_BYTES = 107;

/** Linux's PID_MAX_LIMIT: no pid is larger. */
const MAX_PID = 4194304;

/** Largest valid uid or gid ((uid_t)-1 means "no id"). */
const MAX_ID = 4294967294;

const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warning", "error"];
const FORMATS: readonly OutputFormat[] = ["json", "text"];

/** A command-line problem: the caller prints the message and exits with status 2. */
export class UsageError extends Error {
  /** @param message one sentence naming the flag and the bad value (never a password) */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** One flag as `parseArgs` wants it. */
interface OptionSpec {
  type: "string" | "boolean";
  short?: string;
  multiple?: boolean;
}

/** The NATS credential and CA flags, the same for the server and `client --nats` (natsAuth). */
const NATS_CREDENTIAL_OPTIONS = {
  "nats-user": { type: "string" },
  "nats-password-file": { type: "string" },
  "nats-token-file": { type: "string" },
  "nats-creds": { type: "string" },
  "nats-ca": { type: "string" },
} as const satisfies Record<string, OptionSpec>;

const SERVER_OPTIONS = {
  events: { type: "string", short: "e", multiple: true },
  clients: { type: "string", short: "c" },
  socket: { type: "string", short: "s" },
  tcp: { type: "string", short: "t" },
  auth: { type: "string", short: "a" },
  "auth-file": { type: "string" },
  direct: { type: "boolean", short: "d" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
  bind: { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  format: { type: "string" },
  threads: { type: "boolean" },
  user: { type: "string", multiple: true },
  match: { type: "string" },
  pid: { type: "string", multiple: true },
  "socket-mode": { type: "string" },
  "socket-group": { type: "string" },
  "log-level": { type: "string" },
  syslog: { type: "boolean" },
  realtime: { type: "boolean" },
  "no-realtime": { type: "boolean" },
  // NATS publishing (SPEC §11): natsConfig() below.
  nats: { type: "string" },
  "nats-subject-prefix": { type: "string" },
  "host-id": { type: "string" },
  ...NATS_CREDENTIAL_OPTIONS,
  "nats-buffer": { type: "string" },
  "nats-stream": { type: "string" },
  "nats-replicas": { type: "string" },
  "nats-max-age": { type: "string" },
  unit: { type: "string", multiple: true },
  cgroup: { type: "string", multiple: true },
  container: { type: "boolean" },
  ancestry: { type: "string" },
  ancestor: { type: "string" },
  "not-ancestor": { type: "string" },
  env: { type: "string", multiple: true },
  "cgroup-info": { type: "boolean" },
  cwd: { type: "boolean" },
  metrics: { type: "string" },
  "no-usage": { type: "boolean" },
  "no-bpf": { type: "boolean" },
} as const satisfies Record<string, OptionSpec>;

/** `procMonitor client --nats` and the flags only it uses (parseClientNats). */
const CLIENT_NATS_OPTIONS = {
  nats: { type: "string" },
  subject: { type: "string" },
  "host-id": { type: "string" },
  "nats-subject-prefix": { type: "string" },
  stream: { type: "string" },
  since: { type: "string" },
  ...NATS_CREDENTIAL_OPTIONS,
} as const satisfies Record<string, OptionSpec>;

const CLIENT_OPTIONS = {
  socket: { type: "string" },
  tcp: { type: "boolean" },
  host: { type: "string" },
  port: { type: "string" },
  auth: { type: "string" },
  "auth-file": { type: "string" },
  tls: { type: "boolean" },
  ca: { type: "string" },
  format: { type: "string" },
  reconnect: { type: "boolean" },
  "log-level": { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
  ...CLIENT_NATS_OPTIONS,
} as const satisfies Record<string, OptionSpec>;

/** A value quoted for a message: JSON-escaped (one line), long values shortened. */
function quote(value: string): string {
  const short = value.length > 80 ? value.slice(0, 77) + "…" : value;
  return JSON.stringify(short);
}

/** `-e/--events` for a flag with a short form, `--bind` otherwise. */
function label(options: Record<string, OptionSpec>, name: string): string {
  const short = options[name]?.short;
  return short ? `-${short}/--${name}` : `--${name}`;
}

/**
 * Runs `parseArgs` (strict) and turns its errors into UsageErrors naming the flag.
 * Its own messages are not reused: some of them would repeat the argument that followed.
 */
function parseStrict<T extends Record<string, OptionSpec>>(
  args: string[],
  options: T,
  command: string,
) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false, tokens: true });
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    const message = error instanceof Error ? error.message : String(error);
    const flag = flagOf(options, message);
    switch (code) {
      case "ERR_PARSE_ARGS_UNKNOWN_OPTION": {
        const raw = /'([^']*)'/.exec(message)?.[1] ?? "";
        throw new UsageError(
          `Unknown option ${quote(raw)}; run ${command} --help for the list of options`,
        );
      }
      case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
        throw new UsageError(strayMessage(args, options, command));
      case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
        if (flag && message.includes("does not take an argument")) {
          throw new UsageError(`${flag} takes no value`);
        }
        if (flag && message.includes("ambiguous")) {
          throw new UsageError(
            `${flag} needs a value, but the next argument starts with "-"; ` +
              `write ${flag.replace(/^-.\//, "")}=-VALUE if the value really starts with a dash`,
          );
        }
        if (flag) throw new UsageError(`${flag} needs a value`);
    }
    throw new UsageError(`Invalid command line: ${message.split("\n")[0]}`);
  }
}

/**
 * The first stray word, named by the option before it and never quoted: a word the shell split
 * off a value may be a password (`-a my secret`). Only the subcommand's own name is quoted.
 */
function strayMessage(
  args: string[],
  options: Record<string, OptionSpec>,
  command: string,
): string {
  const { tokens } = parseArgs({
    args,
    options,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const stray = tokens.findIndex((token) => token.kind === "positional");
  const word = stray >= 0 && tokens[stray].kind === "positional" ? tokens[stray].value : "";
  if (word === "client") {
    return `"client" is a subcommand and comes first, as in procMonitor client -s PATH`;
  }
  const last = tokens.slice(0, Math.max(stray, 0)).reverse().find((t) => t.kind !== "positional");
  const place = last === undefined
    ? `(word ${(tokens[stray]?.index ?? 0) + 1})`
    : last.kind === "option-terminator"
    ? "after --"
    : `after ${last.name in options ? label(options, last.name) : `--${last.name}`}`;
  const hint = "events" in options ? "; a list takes commas, as in -e fork,exec" : "";
  return `Unexpected argument ${place}: ${command} takes no positional arguments${hint} ` +
    `(run ${command} --help)`;
}

/** The flag a parseArgs message is about, as `-e/--events`, or null. */
function flagOf(options: Record<string, OptionSpec>, message: string): string | null {
  const long = /^Option '(?:-\w, )?--([\w-]+)/.exec(message)?.[1];
  if (long && long in options) return label(options, long);
  const short = /^Option '-(\w)'/.exec(message)?.[1];
  if (short) {
    const name = Object.keys(options).find((key) => options[key].short === short);
    if (name) return label(options, name);
  }
  return null;
}

/** A whole number in [min, max] written in decimal digits, or a UsageError with `what`. */
function wholeNumber(text: string, min: number, max: number, what: string): number {
  const value = /^\d{1,10}$/.test(text) ? Number(text) : NaN;
  if (!(value >= min && value <= max)) throw new UsageError(`${what}, not ${quote(text)}`);
  return value;
}

/** A non-empty path without NUL bytes. */
function path(text: string, flag: string): string {
  if (text === "") throw new UsageError(`${flag} needs a non-empty path`);
  if (text.includes("\0")) {
    throw new UsageError(`${flag} path ${quote(text)} must not contain a NUL byte`);
  }
  return text;
}

/** A Unix socket path that fits `sun_path`. */
function socketPath(text: string, flag: string): string {
  path(text, flag);
  const bytes = new TextEncoder().encode(text).length;
  if (bytes > MAX_SOCKET_PATH_BYTES) {
    throw new UsageError(
      `${flag} path ${quote(text)} is ${bytes} bytes long; ` +
        `Unix socket paths are limited to ${MAX_SOCKET_PATH_BYTES} bytes`,
    );
  }
  return text;
}

function format(text: string | undefined): OutputFormat {
  if (text === undefined) return "json";
  if (!(FORMATS as readonly string[]).includes(text)) {
    throw new UsageError(`--format must be json or text, not ${quote(text)}`);
  }
  return text as OutputFormat;
}

function logLevel(text: string | undefined): LogLevel {
  if (text === undefined) return "info";
  if (!(LOG_LEVELS as readonly string[]).includes(text)) {
    throw new UsageError(`--log-level must be debug, info, warning or error, not ${quote(text)}`);
  }
  return text as LogLevel;
}

/** `-e` values: comma lists (repeatable), names or `all`, duplicates removed, order kept. */
function events(values: string[] | undefined): EventName[] {
  if (values === undefined) return [...DEFAULT_EVENT_NAMES];
  const flag = "-e/--events";
  const choices = `${ALL_EVENT_NAMES.join(", ")} or all`;
  const seen = new Set<EventName>();
  for (const value of values) {
    const items = value.split(",").map((item) => item.trim()).filter((item) => item !== "");
    if (items.length === 0) {
      throw new UsageError(
        `${flag} needs at least one event name, not ${quote(value)}; choose from ${choices}`,
      );
    }
    for (const item of items) {
      const name = item.toLowerCase();
      if (name === "all") {
        for (const each of ALL_EVENT_NAMES) seen.add(each);
      } else if ((ALL_EVENT_NAMES as readonly string[]).includes(name)) {
        seen.add(name as EventName);
      } else {
        throw new UsageError(`Unknown event ${quote(item)} for ${flag}; choose from ${choices}`);
      }
    }
  }
  return [...seen];
}

/** Items of repeatable, comma-separated flags, trimmed; an empty item is an error. */
function listItems(values: string[] | undefined, flag: string, what: string): string[] {
  const items: string[] = [];
  for (const value of values ?? []) {
    for (const raw of value.split(",")) {
      const item = raw.trim();
      if (item === "") throw new UsageError(`${flag} needs ${what}, not ${quote(value)}`);
      if (!items.includes(item)) items.push(item);
    }
  }
  return items;
}

/** A user or group: a name (no blanks, colons or control characters) or a numeric id. */
function account(item: string, flag: string, what: string): string {
  if (/^\d+$/.test(item)) {
    wholeNumber(item, 0, MAX_ID, `${flag} must be ${what} or a numeric id from 0 to ${MAX_ID}`);
  } else if (/[\s:\p{Cc}]/u.test(item)) {
    throw new UsageError(`${flag} must be ${what} or a numeric id, not ${quote(item)}`);
  }
  return item;
}

function users(values: string[] | undefined): string[] {
  return listItems(values, "--user", "a user name or uid").map((item) =>
    account(item, "--user", "a user name")
  );
}

function pids(values: string[] | undefined): number[] {
  const what = `--pid must be a process id from 1 to ${MAX_PID}`;
  return [
    ...new Set(
      listItems(values, "--pid", "a process id").map((item) => {
        return wholeNumber(item, 1, MAX_PID, what);
      }),
    ),
  ];
}

function socketMode(text: string | undefined): number {
  if (text === undefined) return DEFAULT_SOCKET_MODE;
  const digits = text.replace(/^0o/i, "");
  const mode = /^[0-7]{1,4}$/.test(digits) ? parseInt(digits, 8) : NaN;
  if (!(mode >= 0 && mode <= 0o777)) {
    throw new UsageError(
      `--socket-mode must be an octal file mode from 0 to 0777 such as 0660, not ${quote(text)}`,
    );
  }
  return mode;
}

/**
 * 4 or 6 for an IPv4 or IPv6 address, else 0 (as `node:net`'s isIP, which is not imported:
 * it loads Node's whole networking layer, 3.5 MiB of resident memory for every run).
 */
function isIP(text: string): 0 | 4 | 6 {
  if (ipRegex.v4({ exact: true }).test(text)) return 4;
  return ipRegex.v6({ exact: true }).test(text) ? 6 : 0;
}

function bindAddress(text: string): string {
  const bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  if (bare !== "localhost" && isIP(bare) === 0) {
    throw new UsageError(
      `--bind must be an IPv4 or IPv6 address or "localhost", not ${quote(text)}`,
    );
  }
  return bare;
}

/**
 * The reason of a file-system error, short: "no such file", "permission denied", ... Not
 * errors.ts's describe(): this cuts at any " (os error" and starts in lower case.
 */
function fsReason(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.NotCapable) return "permission denied (Deno permissions)";
  if (error instanceof Deno.errors.IsADirectory) return "it is a directory";
  const message = error instanceof Error ? error.message : String(error);
  const reason = message.split(" (os error")[0];
  return reason.charAt(0).toLowerCase() + reason.slice(1);
}

/** Reads at most `limit` bytes, stopping early after the first newline. */
function readHead(file: string, limit: number): Uint8Array {
  const handle = Deno.openSync(file);
  try {
    const buffer = new Uint8Array(limit);
    let length = 0;
    while (length < limit) {
      const count = handle.readSync(buffer.subarray(length));
      if (count === null) break;
      length += count;
      if (buffer.subarray(0, length).includes(0x0a)) break;
    }
    return buffer.subarray(0, length);
  } finally {
    handle.close();
  }
}

/** Rejects passwords the line-based TCP handshake cannot carry. `source` names where it came from. */
function checkPassword(password: string, source: string): string {
  if (password === "") throw new UsageError(`${source} gives an empty password`);
  if (/[\r\n]/.test(password)) {
    throw new UsageError(
      `${source} gives a password with a line break, which the line-based TCP handshake ` +
        `cannot carry`,
    );
  }
  const bytes = new TextEncoder().encode(password).length;
  if (bytes > MAX_PASSWORD_BYTES) {
    throw new UsageError(
      `${source} gives a password of ${bytes} bytes; the limit is ${MAX_PASSWORD_BYTES} bytes`,
    );
  }
  return password;
}

/**
 * Reads a password from the first line of `file` (`--auth-file`): the trailing newline and
 * CR are stripped, nothing else. Reads at most a little more than the longest password, so
 * `/dev/stdin` works and a huge file is not slurped.
 *
 * @param file the path given to the flag
 * @param flag the flag's name for messages
 * @throws {UsageError} when the file cannot be read, is not UTF-8, or its first line is empty,
 *   too long or otherwise not a usable password (the message names the flag and the path)
 */
export function readAuthFile(file: string, flag = "--auth-file"): string {
  path(file, flag);
  const where = `${flag} ${quote(file)}`;
  let head: Uint8Array;
  try {
    if (Deno.statSync(file).isDirectory) {
      throw new UsageError(`${where} cannot be read: it is a directory`);
    }
    head = readHead(file, MAX_PASSWORD_BYTES + 2);
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError(`${where} cannot be read: ${fsReason(error)}`);
  }
  const newline = head.indexOf(0x0a);
  let line = newline === -1 ? head : head.subarray(0, newline);
  if (line.at(-1) === 0x0d) line = line.subarray(0, -1);
  let password: string;
  try {
    password = new TextDecoder("utf-8", { fatal: true }).decode(line);
  } catch {
    throw new UsageError(`${where} does not hold a UTF-8 password on its first line`);
  }
  if (password === "") {
    throw new UsageError(`${where} has an empty first line; put the password there`);
  }
  return checkPassword(password, where);
}

/**
 * The password from `auth` (`-a`), then `authFile` (`--auth-file`), then the environment;
 * null when none is given. Both flags at once is an error.
 */
function password(
  auth: string | undefined,
  authFile: string | undefined,
  env: Record<string, string | undefined>,
  authFlag: string,
): string | null {
  if (auth !== undefined && authFile !== undefined) {
    throw new UsageError(`${authFlag} and --auth-file cannot be combined; give the password once`);
  }
  if (auth !== undefined) return checkPassword(auth, authFlag);
  if (authFile !== undefined) return readAuthFile(authFile);
  const fromEnv = env[AUTH_ENV];
  if (fromEnv !== undefined && fromEnv !== "") return checkPassword(fromEnv, AUTH_ENV);
  return null;
}

/** `--realtime`/`--no-realtime`: the last one given wins; default on. */
function realtime(tokens: { kind: string; name?: string }[]): boolean {
  let on = true;
  for (const token of tokens) {
    if (token.kind !== "option") continue;
    if (token.name === "realtime") on = true;
    if (token.name === "no-realtime") on = false;
  }
  return on;
}

function parseServer(args: string[], env: Record<string, string | undefined>): Config {
  const { values: v, tokens } = parseStrict(args, SERVER_OPTIONS, "procMonitor");
  if (v.help) return { mode: "info", text: helpText() };
  if (v.version) return { mode: "info", text: `procMonitor ${VERSION}`, version: true };

  // With several mistakes, the first one checked is reported: keep this order.
  const tcpPort = v.tcp === undefined
    ? null
    : wholeNumber(v.tcp, 1, 65535, "-t/--tcp must be a port from 1 to 65535");
  const tcp = tcpPort !== null;
  const direct = v.direct ?? false;
  let socket: string | null = null;
  if (v.socket !== undefined) socket = socketPath(v.socket, "-s/--socket");
  else if (!tcp && !direct && v.nats === undefined) socket = DEFAULT_SOCKET_PATH;
  const auth = serverPassword(tcp, v.auth, v["auth-file"], env);
  const bind = bindFlag(tcp, v.bind);
  const { tlsCert, tlsKey } = tlsFlags(tcp, v["tls-cert"], v["tls-key"]);
  if (v.format !== undefined && !direct) {
    throw new UsageError(
      `--format ${quote(v.format)} only changes the -d/--direct output, which is not given; ` +
        `socket and TCP clients always get JSON lines`,
    );
  }
  const socketGroup = socketGroupFlag(socket !== null, v["socket-mode"], v["socket-group"]);
  const nats = natsConfig(v);

  const config: ServerConfig = {
    mode: "server",
    events: events(v.events),
    maxClients: v.clients === undefined ? DEFAULT_MAX_CLIENTS : wholeNumber(
      v.clients,
      1,
      MAX_CLIENTS_LIMIT,
      `-c/--clients must be a whole number from 1 to ${MAX_CLIENTS_LIMIT}`,
    ),
    socketPath: socket,
    socketMode: socketMode(v["socket-mode"]),
    socketGroup,
    tcpPort,
    bindAddress: bind,
    auth,
    tlsCert,
    tlsKey,
    direct,
    format: format(v.format),
    threads: v.threads ?? false,
    users: users(v.user),
    match: regex(v.match, "--match"),
    pids: pids(v.pid),
    logLevel: logLevel(v["log-level"]),
    syslog: v.syslog ?? false,
    realtime: realtime(tokens),
    belong: belongFlags(v),
    metrics: metricsFlag(v.metrics),
    nats,
    hostId: hostIdFlag(v["host-id"], nats !== null),
    usage: !(v["no-usage"] ?? false),
    bpf: !(v["no-bpf"] ?? false),
  };
  return config;
}

/** Most variables `--env` reads, and their names' bytes with a NUL each (procconn.h). */
export const MAX_ENV_NAMES = 32;
const MAX_ENV_NAME_BYTES = 255;

/** The flags on where processes belong and come from. */
function belongFlags(v: {
  unit?: string[];
  cgroup?: string[];
  container?: boolean;
  ancestry?: string;
  ancestor?: string;
  "not-ancestor"?: string;
  env?: string[];
  "cgroup-info"?: boolean;
  cwd?: boolean;
}): BelongConfig {
  // The cgroup filters need what --cgroup-info reads.
  const filtered = v.unit !== undefined || v.cgroup !== undefined || v.container === true;
  return {
    units: listItems(v.unit, "--unit", "a unit name or glob").map(unitGlob),
    cgroups: listItems(v.cgroup, "--cgroup", "a cgroup path").map(cgroupPrefix),
    container: v.container ?? false,
    ancestry: v.ancestry === undefined ? 0 : wholeNumber(
      v.ancestry,
      1,
      MAX_ANCESTRY,
      `--ancestry must be a whole number of ancestors from 1 to ${MAX_ANCESTRY}`,
    ),
    ancestor: regex(v.ancestor, "--ancestor"),
    notAncestor: regex(v["not-ancestor"], "--not-ancestor"),
    env: envNames(v.env),
    readCgroup: (v["cgroup-info"] ?? false) || filtered,
    readCwd: v.cwd ?? false,
  };
}

function unitGlob(item: string): string {
  if (item.includes("/") || /[\s\p{Cc}]/u.test(item)) {
    throw new UsageError(
      `--unit must be a unit name or glob such as nginx.service or nginx*.service, not ${
        quote(item)
      }`,
    );
  }
  return item;
}

function cgroupPrefix(item: string): string {
  if (!item.startsWith("/") || /\p{Cc}/u.test(item)) {
    throw new UsageError(
      `--cgroup must be a cgroup path starting with "/", such as /system.slice, not ${quote(item)}`,
    );
  }
  return item;
}

function envNames(values: string[] | undefined): string[] {
  const names = listItems(values, "--env", "environment variable names");
  for (const name of names) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      throw new UsageError(
        `--env must name environment variables (letters, digits and _, not starting with a ` +
          `digit), not ${quote(name)}`,
      );
    }
  }
  if (names.length > MAX_ENV_NAMES) {
    throw new UsageError(`--env names ${names.length} variables; the limit is ${MAX_ENV_NAMES}`);
  }
  const bytes = names.reduce((sum, name) => sum + name.length + 1, 0);
  if (bytes > MAX_ENV_NAME_BYTES) {
    throw new UsageError(
      `--env names take ${bytes} bytes with a separator each; the limit is ${MAX_ENV_NAME_BYTES}`,
    );
  }
  return names;
}

/** A non-empty JavaScript regular expression for `flag`. */
function regex(text: string | undefined, flag: string): RegExp | null {
  if (text === undefined) return null;
  if (text === "") throw new UsageError(`${flag} needs a non-empty regular expression`);
  try {
    return new RegExp(text);
  } catch (error) {
    // V8: "Invalid regular expression: /(/: Unterminated group"
    const reason = (error instanceof Error ? error.message : String(error)).split(": ").at(-1) ??
      "";
    throw new UsageError(
      `${flag} ${quote(text)} is not a valid regular expression: ` +
        reason.charAt(0).toLowerCase() + reason.slice(1),
    );
  }
}

/**
 * `--metrics [ADDR:]PORT`: a port alone means loopback; ADDR is IPv4, `[IPv6]` or
 * localhost. A bare IPv6 address is refused, since its last group could be the port.
 */
function metricsFlag(text: string | undefined): MetricsAddress | null {
  if (text === undefined) return null;
  const split = /^(?:(\[[^\]]*\]|[^:]*):)?([^:]*)$/.exec(text);
  if (split === null) {
    throw new UsageError(
      `--metrics must be PORT or ADDR:PORT, with an IPv6 ADDR in brackets as in [::1]:9464, ` +
        `not ${quote(text)}`,
    );
  }
  const [, host, portText] = split;
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) {
    throw new UsageError(
      `--metrics needs a port from 1 to 65535, as in 9464 or 127.0.0.1:9464, not ${quote(text)}`,
    );
  }
  if (host === undefined) return { address: DEFAULT_METRICS_ADDRESS, port };
  const bracketed = host.startsWith("[");
  const bare = bracketed ? host.slice(1, -1) : host;
  if (bracketed ? isIP(bare) !== 6 : bare !== "localhost" && isIP(bare) !== 4) {
    throw new UsageError(
      `--metrics address must be an IPv4 address, an IPv6 address in brackets or localhost, ` +
        `not ${quote(host)}`,
    );
  }
  return { address: bare, port };
}

/** The error for a flag that only -t/--tcp uses, given without it. */
function notWithoutTcp(flag: string): UsageError {
  return new UsageError(`${flag} is only used with -t/--tcp, which is not given`);
}

/** The server's TCP password: needed with `tcp`, refused without it. */
function serverPassword(
  tcp: boolean,
  auth: string | undefined,
  authFile: string | undefined,
  env: Record<string, string | undefined>,
): string | null {
  if (!tcp) {
    if (auth !== undefined && authFile !== undefined) {
      throw new UsageError(`-a/--auth and --auth-file cannot be combined; give the password once`);
    }
    if (auth !== undefined) throw notWithoutTcp("-a/--auth");
    if (authFile !== undefined) throw notWithoutTcp("--auth-file");
    return null;
  }
  const found = password(auth, authFile, env, "-a/--auth");
  if (found === null) {
    throw new UsageError(
      `--tcp needs a password: give -a/--auth, --auth-file or ${AUTH_ENV}`,
    );
  }
  return found;
}

/** `--bind`, only with `tcp`. */
function bindFlag(tcp: boolean, text: string | undefined): string {
  if (text === undefined) return DEFAULT_BIND_ADDRESS;
  if (!tcp) throw notWithoutTcp(`--bind ${quote(text)}`);
  return bindAddress(text);
}

/** `--tls-cert` and `--tls-key`: both or neither, only with `tcp`. */
function tlsFlags(
  tcp: boolean,
  cert: string | undefined,
  key: string | undefined,
): { tlsCert: string | null; tlsKey: string | null } {
  const tlsCert = cert === undefined ? null : path(cert, "--tls-cert");
  const tlsKey = key === undefined ? null : path(key, "--tls-key");
  if (tlsCert !== null || tlsKey !== null) {
    if (!tcp) throw notWithoutTcp(tlsCert !== null ? "--tls-cert" : "--tls-key");
    if (tlsKey === null) throw new UsageError(`--tls-cert needs --tls-key too (both or neither)`);
    if (tlsCert === null) throw new UsageError(`--tls-key needs --tls-cert too (both or neither)`);
  }
  return { tlsCert, tlsKey };
}

/**
 * `--socket-group`, after checking that it and `--socket-mode` have a Unix socket to apply
 * to (`socket`). The mode's value is read later, by socketMode().
 */
function socketGroupFlag(
  socket: boolean,
  mode: string | undefined,
  group: string | undefined,
): string | null {
  if (!socket) {
    for (const [flag, value] of [["socket-mode", mode], ["socket-group", group]] as const) {
      if (value !== undefined) {
        throw new UsageError(
          `--${flag} ${quote(value)} needs a Unix socket, which is off with -t/--tcp or ` +
            `-d/--direct alone; add -s/--socket PATH`,
        );
      }
    }
  }
  if (group === undefined) return null;
  if (group.trim() === "") {
    throw new UsageError(`--socket-group needs a group name or gid, not ${quote(group)}`);
  }
  return account(group, "--socket-group", "a group name");
}

// ---- NATS publishing (SPEC §11; lib/outputs/nats_output.ts) ------------------------------

/** Default `--nats-subject-prefix`. */
export const DEFAULT_NATS_PREFIX = "procmonitor";

/** Largest `--nats-replicas` (JetStream's limit). */
const MAX_NATS_REPLICAS = 5;

/** The `--nats*` flags' values as parseArgs gives them. */
type NatsValues = Partial<
  Record<
    | "nats"
    | "nats-subject-prefix"
    | "nats-user"
    | "nats-password-file"
    | "nats-token-file"
    | "nats-creds"
    | "nats-ca"
    | "nats-buffer"
    | "nats-stream"
    | "nats-replicas"
    | "nats-max-age",
    string
  >
>;

/** `--nats` and its companions, or null without `--nats` (when the others are refused). */
function natsConfig(v: NatsValues): NatsConfig | null {
  if (v.nats === undefined) {
    const stray = (Object.keys(v) as (keyof NatsValues)[]).find((key) =>
      key.startsWith("nats-") && v[key] !== undefined
    );
    if (stray !== undefined) {
      throw new UsageError(`--${stray} is only used with --nats, which is not given`);
    }
    return null;
  }
  const prefix = v["nats-subject-prefix"] ?? DEFAULT_NATS_PREFIX;
  if (!isSubjectPrefix(prefix)) {
    throw new UsageError(
      `--nats-subject-prefix must be dot-separated words of letters, digits, "_" or "-" ` +
        `such as procmonitor or acme.prod, not ${quote(prefix)}`,
    );
  }
  return {
    servers: natsServerUrls(v.nats),
    subjectPrefix: prefix,
    auth: serverNatsAuth(v),
    ca: v["nats-ca"] === undefined ? null : pemFile(v["nats-ca"], "--nats-ca", "CERTIFICATE"),
    bufferBytes: v["nats-buffer"] === undefined
      ? DEFAULT_NATS_BUFFER_BYTES
      : byteSize(v["nats-buffer"], "--nats-buffer"),
    stream: natsStream(v),
  };
}

/**
 * Refuses a `--nats` URL with a user or password in it (anyone can read a command line with
 * ps, and the URL would be logged), naming the URL with them left out.
 */
function refuseUrlCredentials(server: string, url: URL): void {
  if (url.username === "" && url.password === "") return;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(server)?.[0] ?? "";
  throw new UsageError(
    `--nats URL ${scheme}…@${url.host} carries a user or password, which others can see ` +
      `with ps; use --nats-user with --nats-password-file, --nats-token-file or --nats-creds`,
  );
}

/** `--nats`: a comma list of nats://, tls:// or bare HOST:PORT addresses. */
function natsServerUrls(text: string): string[] {
  const servers = listItems([text], "--nats", "a NATS server URL");
  for (const server of servers) {
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(server)?.[1]?.toLowerCase();
    let ok = scheme === undefined || scheme === "nats" || scheme === "tls";
    if (ok) {
      try {
        const url = new URL(scheme === undefined ? `nats://${server}` : server);
        ok = url.hostname !== "" && (url.pathname === "" || url.pathname === "/");
        refuseUrlCredentials(server, url);
      } catch (error) {
        if (!(error instanceof TypeError)) throw error; // not a URL
        ok = false;
      }
    }
    if (!ok) {
      throw new UsageError(
        `--nats must be a comma list of nats://HOST:PORT or tls://HOST:PORT URLs, not ` +
          quote(server),
      );
    }
  }
  return servers;
}

/** The credentials the server accepts: one kind at most, each secret read from its file. */
function serverNatsAuth(v: NatsValues): NatsAuth {
  const kinds = [
    v["nats-user"] !== undefined || v["nats-password-file"] !== undefined,
    v["nats-token-file"] !== undefined,
    v["nats-creds"] !== undefined,
  ].filter(Boolean).length;
  if (kinds > 1) {
    throw new UsageError(
      `--nats-user, --nats-token-file and --nats-creds cannot be combined; give one kind of ` +
        `credentials`,
    );
  }
  const user = v["nats-user"];
  const passwordFile = v["nats-password-file"];
  if (passwordFile === undefined && user !== undefined) {
    throw new UsageError(`--nats-user needs --nats-password-file too (both or neither)`);
  }
  if (user === undefined && passwordFile !== undefined) {
    throw new UsageError(`--nats-password-file needs --nats-user too (both or neither)`);
  }
  return natsAuth(v, (file) => pemFile(file, "--nats-creds", "NATS USER JWT"));
}

/** The NATS credential flags' values as parseArgs gives them (the server's and the client's). */
type NatsCredentialValues = Partial<
  Record<"nats-user" | "nats-password-file" | "nats-token-file" | "nats-creds", string>
>;

/**
 * The credentials from the NATS flags, for the server and `client --nats` alike, once the
 * caller has checked that one kind at most is given and `--nats-user` comes with
 * `--nats-password-file` (each says so in its own sentences, which tests and users know).
 * Secrets are read from their files, never the command line.
 *
 * @param readCreds reads and checks a `--nats-creds` file, returning its text
 */
function natsAuth(v: NatsCredentialValues, readCreds: (file: string) => string): NatsAuth {
  const user = v["nats-user"];
  if (user !== undefined) {
    if (user === "" || /[\s\p{Cc}]/u.test(user)) {
      throw new UsageError(`--nats-user must be a user name without blanks, not ${quote(user)}`);
    }
    const password = readAuthFile(v["nats-password-file"]!, "--nats-password-file");
    return { kind: "user", user, password };
  }
  if (v["nats-token-file"] !== undefined) {
    return { kind: "token", token: readAuthFile(v["nats-token-file"], "--nats-token-file") };
  }
  const credsFile = v["nats-creds"];
  if (credsFile !== undefined) {
    const creds = new TextEncoder().encode(readCreds(credsFile));
    return { kind: "creds", creds, path: credsFile };
  }
  return { kind: "none" };
}

/** A file's text, which must hold a `-----BEGIN <label>-----` block. */
function pemFile(file: string, flag: string, label: string): string {
  const text = readFlagFile(file, flag);
  if (!text.includes(`-----BEGIN ${label}-----`)) {
    throw new UsageError(`${flag} ${quote(file)} holds no "-----BEGIN ${label}-----" block`);
  }
  return text;
}

/** `--nats-stream` with `--nats-replicas` and `--nats-max-age`, or null. */
function natsStream(v: NatsValues): NatsConfig["stream"] {
  const name = v["nats-stream"];
  if (name === undefined) {
    for (const flag of ["nats-replicas", "nats-max-age"] as const) {
      if (v[flag] !== undefined) {
        throw new UsageError(`--${flag} is only used with --nats-stream, which is not given`);
      }
    }
    return null;
  }
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(name)) {
    throw new UsageError(
      `--nats-stream must be a name of 1 to 64 letters, digits, "_" or "-", not ${quote(name)}`,
    );
  }
  const replicas = v["nats-replicas"] === undefined ? 1 : wholeNumber(
    v["nats-replicas"],
    1,
    MAX_NATS_REPLICAS,
    `--nats-replicas must be a whole number from 1 to ${MAX_NATS_REPLICAS}`,
  );
  const maxAgeMs = v["nats-max-age"] === undefined ? 0 : duration(v["nats-max-age"]);
  return { name, replicas, maxAgeMs };
}

const SIZE_UNITS: Record<string, number> = { "": 1, k: 1 << 10, m: 1 << 20, g: 1 << 30 };

/**
 * A size in bytes, from 1 KiB to 1 GiB: `65536`, `64K`, `64KiB`, `8M`, `8MiB`, `1G`. K, M and
 * G count in 1024s, as KiB, MiB and GiB; `KB`, `MB` and `GB` are refused, as some read them
 * as 1000s.
 */
function byteSize(text: string, flag: string): number {
  const match = /^(\d{1,10})\s*(?:([kmg])(i?b)?|b)?$/i.exec(text.trim());
  if (match !== null && match[3]?.toLowerCase() === "b") {
    const binary = `${match[1]}${match[2].toUpperCase()}iB`;
    const decimal = Number(match[1]) * 1000 ** (" kmg".indexOf(match[2].toLowerCase()));
    throw new UsageError(
      `${flag} ${quote(text)} is ambiguous (1000s or 1024s?): write ${binary} ` +
        `(${Number(match[1]) * SIZE_UNITS[match[2].toLowerCase()]} bytes) or ${decimal}`,
    );
  }
  const bytes = match === null
    ? NaN
    : Number(match[1]) * SIZE_UNITS[(match[2] ?? "").toLowerCase()];
  if (!(bytes >= 1 << 10 && bytes <= 1 << 30)) {
    throw new UsageError(
      `${flag} must be a size from 1KiB to 1GiB such as 8MiB or 65536, not ${quote(text)}`,
    );
  }
  return bytes;
}

const DURATION_UNITS: Record<string, number> = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 };

/** `--nats-max-age`: 0, or a whole number of seconds, minutes, hours or days, in ms. */
function duration(text: string): number {
  const match = /^(\d{1,6})([smhd])$/.exec(text.trim());
  const ms = text.trim() === "0"
    ? 0
    : match === null
    ? NaN
    : Number(match[1]) * DURATION_UNITS[match[2]];
  if (!(ms >= 0 && ms <= 3650 * 86400e3)) {
    throw new UsageError(
      `--nats-max-age must be a duration such as 90s, 30m, 24h or 7d (0 for no limit), ` +
        `not ${quote(text)}`,
    );
  }
  return ms;
}

/** `--host-id`, checked; with `--nats` alone, the hostname made subject-safe; else null. */
function hostIdFlag(text: string | undefined, nats: boolean): string | null {
  if (text === undefined) return nats ? defaultHostId() : null;
  if (!isHostId(text)) {
    throw new UsageError(
      `--host-id must be 1 to ${MAX_HOST_ID} letters, digits, "_" or "-" (it is a NATS ` +
        `subject token), not ${quote(text)}`,
    );
  }
  return text;
}

function parseClient(args: string[], env: Record<string, string | undefined>): Config {
  const { values: v } = parseStrict(args, CLIENT_OPTIONS, "procMonitor client");
  if (v.help) return { mode: "info", text: clientHelpText() };
  if (v.version) return { mode: "info", text: `procMonitor ${VERSION}`, version: true };

  const nats = parseClientNats(v, Date.now());
  let tcp: ClientConfig["tcp"] = null;
  let socket = DEFAULT_SOCKET_PATH;
  if (v.tcp) {
    if (v.socket !== undefined) {
      throw new UsageError(
        `--socket ${quote(v.socket)} and --tcp cannot be combined; choose one connection`,
      );
    }
    if (v.port === undefined) throw new UsageError(`--tcp needs --port PORT (1 to 65535)`);
    const port = wholeNumber(v.port, 1, 65535, "--port must be a port from 1 to 65535");
    let host = DEFAULT_CLIENT_HOST;
    if (v.host !== undefined) {
      host = v.host.startsWith("[") && v.host.endsWith("]") ? v.host.slice(1, -1) : v.host;
      if (host === "" || /[\s/\p{Cc}]/u.test(host)) {
        throw new UsageError(`--host must be a host name or an IP address, not ${quote(v.host)}`);
      }
    }
    const auth = password(v.auth, v["auth-file"], env, "--auth");
    if (auth === null) {
      throw new UsageError(`--tcp needs a password: give --auth, --auth-file or ${AUTH_ENV}`);
    }
    if (v.ca !== undefined && !v.tls) {
      throw new UsageError(`--ca ${quote(v.ca)} is only used with --tls, which is not given`);
    }
    const ca = v.ca === undefined ? null : path(v.ca, "--ca");
    tcp = { host, port, auth, tls: v.tls ?? false, ca };
  } else {
    for (const flag of ["host", "port", "auth", "auth-file", "tls", "ca"] as const) {
      if (v[flag] !== undefined) {
        // Never echo --auth's value.
        const shown = flag === "auth" || typeof v[flag] !== "string" ? "" : ` ${quote(v[flag])}`;
        throw new UsageError(`--${flag}${shown} is only used with --tcp, which is not given`);
      }
    }
    if (v.socket !== undefined) socket = socketPath(v.socket, "--socket");
  }

  return {
    mode: "client",
    socketPath: socket,
    tcp,
    format: format(v.format),
    reconnect: v.reconnect ?? false,
    logLevel: logLevel(v["log-level"]),
    nats,
  };
}

// ---- procMonitor client --nats ----------------------------------------------------------

/** The flags only `--nats` uses, in the order `--help` lists them. */
const NATS_ONLY_FLAGS = [
  "subject",
  "host-id",
  "nats-subject-prefix",
  "stream",
  "since",
  "nats-user",
  "nats-password-file",
  "nats-token-file",
  "nats-creds",
  "nats-ca",
] as const;

/** The flags of the socket and TCP sources, which `--nats` replaces. */
const NON_NATS_FLAGS = ["socket", "tcp", "host", "port", "auth", "auth-file", "tls", "ca"] as const;

type ClientValues = ReturnType<typeof parseStrict<typeof CLIENT_OPTIONS>>["values"];

/**
 * The `--nats` source from the client's flags, or null without `--nats` (then none of its
 * flags may be given). `now` (ms since the epoch) anchors a relative `--since`.
 */
function parseClientNats(v: ClientValues, now: number): NatsClientConfig | null {
  if (v.nats === undefined) {
    for (const flag of NATS_ONLY_FLAGS) {
      if (v[flag] !== undefined) {
        throw new UsageError(
          `--${flag} ${quote(v[flag])} is only used with --nats, which is not given`,
        );
      }
    }
    return null;
  }
  for (const flag of NON_NATS_FLAGS) {
    if (v[flag] !== undefined) {
      throw new UsageError(`--nats and --${flag} cannot be combined; choose one source of events`);
    }
  }
  const servers = natsServers(v.nats);
  const stream = v.stream === undefined ? null : natsStreamName(v.stream);
  if (v.since !== undefined && stream === null) {
    throw new UsageError(
      `--since ${quote(v.since)} needs --stream NAME: only a JetStream stream keeps past events`,
    );
  }
  const ca = v["nats-ca"] === undefined ? null : natsCa(v["nats-ca"]);
  return {
    servers,
    subject: natsSubject(v),
    stream,
    since: v.since === undefined ? null : since(v.since, now),
    auth: clientNatsAuth(v),
    ca,
    tls: requiresTls(ca?.pem ?? null, servers),
  };
}

/** `--nats`: a comma list of nats://, tls:// or bare host[:port] URLs without credentials. */
function natsServers(text: string): string[] {
  const servers = text.split(",").map((item) => item.trim());
  for (const server of servers) {
    if (server === "") {
      throw new UsageError(`--nats needs a URL such as nats://host:4222, not ${quote(text)}`);
    }
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(server)?.[1].toLowerCase();
    if (scheme !== undefined && scheme !== "nats" && scheme !== "tls") {
      throw new UsageError(
        `--nats URL ${quote(server)} must start with nats:// or tls:// (or be host:port)`,
      );
    }
    let url: URL;
    try {
      url = new URL(scheme === undefined ? `nats://${server}` : server);
    } catch {
      throw new UsageError(
        `--nats URL ${quote(server)} is not a valid URL such as nats://host:4222`,
      );
    }
    refuseUrlCredentials(server, url);
    if (
      url.hostname === "" || !/^\/?$/.test(url.pathname) || url.search !== "" || url.hash !== ""
    ) {
      throw new UsageError(
        `--nats URL ${quote(server)} must be only a host and a port, such as nats://host:4222`,
      );
    }
  }
  return servers;
}

/** The subject: `--subject`, or `PREFIX.HOST.>` / `PREFIX.>` from the shortcuts. */
function natsSubject(v: ClientValues): string {
  if (v.subject !== undefined) {
    for (const flag of ["host-id", "nats-subject-prefix"] as const) {
      if (v[flag] !== undefined) {
        throw new UsageError(
          `--subject and --${flag} cannot be combined; --subject gives the whole subject`,
        );
      }
    }
    return subjectText(v.subject, "--subject");
  }
  const prefix = v["nats-subject-prefix"] === undefined
    ? DEFAULT_NATS_SUBJECT_PREFIX
    : subjectText(v["nats-subject-prefix"], "--nats-subject-prefix", false);
  if (v["host-id"] === undefined) return `${prefix}.>`;
  const host = v["host-id"];
  if (!/^[^\s.*>\p{Cc}]+$/u.test(host)) {
    throw new UsageError(
      `--host-id must be one subject token (no dots, spaces, * or >) as in the events' host ` +
        `field (a server named web1.example.com publishes as web1_example_com), not ${quote(host)}`,
    );
  }
  return `${prefix}.${host}.>`;
}

/**
 * A NATS subject: dot-separated non-empty tokens without blanks; `*` only as a whole token,
 * `>` only as the whole last one (`wildcards` false: none at all, for a prefix).
 */
function subjectText(text: string, flag: string, wildcards = true): string {
  const tokens = text.split(".");
  const bad = tokens.some((token, i) =>
    token === "" || /[\s\p{Cc}]/u.test(token) ||
    (token !== "*" && token !== ">" && /[*>]/.test(token)) ||
    (token === ">" && i !== tokens.length - 1) ||
    (!wildcards && (token === "*" || token === ">"))
  );
  if (bad) {
    throw new UsageError(
      wildcards
        ? `${flag} must be a NATS subject such as procmonitor.web1.> (dot-separated tokens, * for one token, > for the rest), not ${
          quote(text)
        }`
        : `${flag} must be dot-separated subject tokens without wildcards, such as procmonitor, not ${
          quote(text)
        }`,
    );
  }
  return text;
}

/** A JetStream stream name: no blanks, dots, wildcards or path separators. */
function natsStreamName(text: string): string {
  if (text === "" || /[\s.*>/\\\p{Cc}]/u.test(text)) {
    throw new UsageError(
      `--stream must be a JetStream stream name (no spaces, dots, *, >, / or \\), not ${
        quote(text)
      }`,
    );
  }
  return text;
}

/** Seconds per unit of a relative `--since`. */
const SINCE_UNITS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86400 };

/**
 * `--since`: an RFC 3339 time (`2026-12-01T17:00:00Z`, an offset instead of Z, optional
 * fractions) or a time ago such as `90s`, `10m`, `2h`, `1d` or `1h30m`.
 */
function since(text: string, now: number): Date {
  if (/^(\d+(\.\d+)?[smhd])+$/.test(text)) {
    let seconds = 0;
    for (const [, amount, unit] of text.matchAll(/(\d+(?:\.\d+)?)([smhd])/g)) {
      seconds += Number(amount) * SINCE_UNITS[unit];
    }
    return new Date(now - seconds * 1000);
  }
  const rfc3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
  const date = rfc3339.test(text) ? new Date(text.replace(" ", "T")) : null;
  if (date === null || Number.isNaN(date.getTime())) {
    throw new UsageError(
      `--since must be an RFC 3339 time such as 2026-12-01T17:00:00Z or a time ago such as ` +
        `10m, 2h or 1d, not ${quote(text)}`,
    );
  }
  return date;
}

/** The credentials `client --nats` accepts: user and password, a token or a creds file. */
function clientNatsAuth(v: ClientValues): NatsAuth {
  const user = v["nats-user"];
  const passwordFile = v["nats-password-file"];
  if ((user === undefined) !== (passwordFile === undefined)) {
    throw new UsageError(
      user === undefined
        ? `--nats-password-file needs --nats-user NAME`
        : `--nats-user needs --nats-password-file FILE (the password is never taken from the command line)`,
    );
  }
  const given = [
    user && "--nats-user",
    v["nats-token-file"] && "--nats-token-file",
    v["nats-creds"] && "--nats-creds",
  ]
    .filter((flag) => typeof flag === "string");
  if (given.length > 1) {
    throw new UsageError(
      `${given.join(" and ")} cannot be combined; give one kind of NATS credentials`,
    );
  }
  return natsAuth(v, natsCreds);
}

/** Largest credentials or certificate file the client reads for a flag. */
const MAX_SMALL_FILE_BYTES = 1 << 20;

/**
 * Reads a whole file for a flag; unreadable (or larger than `maxBytes`) is a usage error
 * naming the flag, the path and the reason.
 */
function readFlagFile(file: string, flag: string, maxBytes = Infinity): string {
  path(file, flag);
  const where = `${flag} ${quote(file)}`;
  try {
    const info = Deno.statSync(file);
    if (info.isDirectory) throw new UsageError(`${where} cannot be read: it is a directory`);
    if (info.size > maxBytes) {
      throw new UsageError(
        `${where} is larger than ${maxBytes >> 20} MiB, too large for a credentials file`,
      );
    }
    return Deno.readTextFileSync(file);
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError(`${where} cannot be read: ${fsReason(error)}`);
  }
}

/** `--nats-creds`: a .creds file holding a user JWT and an nkey seed. */
function natsCreds(file: string): string {
  const text = readFlagFile(file, "--nats-creds", MAX_SMALL_FILE_BYTES);
  if (!/BEGIN NATS USER JWT/.test(text) || !/BEGIN USER NKEY SEED/.test(text)) {
    throw new UsageError(
      `--nats-creds ${
        quote(file)
      } holds no NATS user JWT and nkey seed (a .creds file as nsc writes it)`,
    );
  }
  return text;
}

/** `--nats-ca`: PEM CA certificate(s) to verify the NATS servers with. */
function natsCa(file: string): { path: string; pem: string } {
  const pem = readFlagFile(file, "--nats-ca", MAX_SMALL_FILE_BYTES);
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new UsageError(`--nats-ca ${quote(file)} holds no PEM certificate`);
  }
  return { path: file, pem };
}

/**
 * Parses and validates a command line (without the program name).
 *
 * `args[0] === "client"` selects the client subcommand; anything else is the server.
 * `-h/--help` and `-V/--version` return an {@linkcode InfoRequest} to print and exit 0.
 *
 * @param args the arguments, e.g. `Deno.args`
 * @param env the environment, read for `PROCMONITOR_AUTH` only
 * @returns the validated server, client or info configuration
 * @throws {UsageError} on any bad flag or value (exit 2); the message is one sentence naming
 *   the flag and the value, and never contains a password
 */
export function parseConfig(
  args: string[],
  env: Record<string, string | undefined> = Deno.env.toObject(),
): Config {
  if (args[0] === "client") return parseClient(args.slice(1), env);
  return parseServer(args, env);
}

/** The server's `--help`: usage, every flag with its default, examples and exit codes. */
export function helpText(): string {
  return `procMonitor ${VERSION}: streams Linux process events from the kernel's proc connector.

Usage:
  procMonitor [options]          run the monitor (needs root or CAP_NET_ADMIN)
  procMonitor client [options]   connect to a running monitor and print its events
  procMonitor -h | -V

Events go out as JSON lines to every selected output: -s, -t, -d and --nats combine. With
none of them, the Unix socket ${DEFAULT_SOCKET_PATH} is served (as in v1).

Events and filters:
  -e, --events LIST        events to report: comma list of ${
    ALL_EVENT_NAMES.slice(0, 5).join(", ")
  },
                           ${ALL_EVENT_NAMES.slice(5).join(", ")}, or all; repeatable
                           (default: ${DEFAULT_EVENT_NAMES.join(",")})
  --threads                also report thread-level forks and exits (default: off)
  --user NAME|UID          only events of these users; repeatable, comma lists allowed
                           (default: every user)
  --match REGEX            only events whose cmdline matches this JavaScript regular
                           expression (default: every cmdline)
  --pid PID                only this process and its descendants; repeatable, comma lists
                           allowed (default: every process)
  --no-usage               exits without their resource usage (cpu_user_s, cpu_sys_s,
                           max_rss_kb, read_bytes, write_bytes, ctx_*) from the kernel's
                           taskstats (default: with it)
  --no-bpf                 read each exec's cmdline, exe and parent from /proc the moment
                           it comes, even where a BPF program can take them in the kernel
                           at the exec (default: BPF where it works, which costs less)

Where processes belong and come from (each read costs CPU in an exec storm: README):
  --cgroup-info            read each exec's cgroup: fork, exec and exit carry cgroup, unit
                           and container_id (default: off; on with --unit, --cgroup,
                           --container)
  --cwd                    read each exec's working directory: exec carries cwd
                           (default: off)
  --unit PATTERN           only processes in these systemd units, e.g. nginx.service or a
                           glob such as nginx*.service; repeatable, comma lists allowed
                           (default: every unit, and none)
  --cgroup PREFIX          only processes in this cgroup or below it, e.g. /system.slice;
                           repeatable, comma lists allowed (default: every cgroup)
  --container              only processes in a docker, containerd, cri-o or podman
                           container (default: off)
  --ancestry N             add "ancestors", parent first, up to N (1-${MAX_ANCESTRY}), to fork,
                           exec and exit events (default: none)
  --ancestor REGEX         only processes with an ancestor whose cmdline matches
                           (default: off)
  --not-ancestor REGEX     leave out processes with an ancestor whose cmdline matches,
                           e.g. health checks (default: off)
  --env NAME[,NAME...]     add "env" to exec events: these variables, when set; never the
                           whole environment; up to ${MAX_ENV_NAMES} names (default: none)

Outputs:
  -s, --socket PATH        serve events on a Unix socket at PATH
                           (default: ${DEFAULT_SOCKET_PATH} when none of -t, -d, --nats)
  -t, --tcp PORT           serve events over TCP on PORT, 1-65535; needs a password
                           (default: off)
  -d, --direct             print events to stdout (default: off)
  --format json|text       format of -d's output; text is aligned, coloured on a TTY unless
                           NO_COLOR is set (default: json)
  -c, --clients N          most clients connected at once, per listener, 1-${MAX_CLIENTS_LIMIT}
                           (default: ${DEFAULT_MAX_CLIENTS})

TCP and TLS (only with -t):
  -a, --auth PASSWORD      TCP password; other users can see it with ps, so prefer
                           --auth-file or ${AUTH_ENV} (no default: a password is required)
  --auth-file PATH         read the TCP password from the first line of PATH
  --bind ADDR              address to listen on: IPv4, IPv6 or localhost
                           (default: ${DEFAULT_BIND_ADDRESS}, every IPv4 address)
  --tls-cert PATH          PEM certificate: run TCP inside TLS (with --tls-key; default: off)
  --tls-key PATH           PEM private key of --tls-cert

Unix socket (only when one is served):
  --socket-mode OCTAL      file mode of the socket file, e.g. 0660
                           (default: 0${DEFAULT_SOCKET_MODE.toString(8)}, anyone may connect)
  --socket-group NAME|GID  group owning the socket file (default: unchanged)

NATS publishing (every event also to a NATS cluster, for fleets):
  --nats URLS              publish to these servers of one cluster: a comma list of
                           nats://HOST:PORT or tls://HOST:PORT (default: off)
  --nats-subject-prefix P  subjects are P.HOST.EVENT (default: ${DEFAULT_NATS_PREFIX})
  --host-id ID             HOST in subjects and every event's "host" field, on every
                           output; letters, digits, _ and - (default with --nats: the
                           hostname, other characters as _; without: no "host" field)
  --nats-user NAME         NATS user, with --nats-password-file (default: none)
  --nats-password-file F   read the NATS user's password from the first line of F
  --nats-token-file F      read a NATS token from the first line of F (default: none)
  --nats-creds F           NATS credentials file: user JWT and nkey seed (default: none)
  --nats-ca F              PEM CA certificate to verify the servers with; TLS on
                           (default: TLS only for tls:// URLs, with the system's roots)
  --nats-buffer SIZE       events waiting for the broker, up to SIZE bytes, e.g. 64MiB
                           (K, M, G are KiB, MiB, GiB; KB, MB, GB are refused); beyond,
                           a "lost" event with where "nats" (default: 8MiB)
  --nats-stream NAME       publish into this JetStream stream over P.>, acknowledged and
                           deduplicated; created when missing (default: core NATS)
  --nats-replicas N        replicas of a stream it creates, 1-${MAX_NATS_REPLICAS} (default: 1)
  --nats-max-age DUR       oldest message a stream it creates keeps, e.g. 7d, 24h, 30m;
                           0 for no limit (default: 0)

Metrics (default: off):
  --metrics [ADDR:]PORT    serve Prometheus /metrics and /healthz over HTTP on PORT at ADDR:
                           IPv4, [IPv6] or localhost (default address: ${DEFAULT_METRICS_ADDRESS})

Logging and priority:
  --log-level LEVEL        debug, info, warning or error (default: info)
  --syslog                 log to syslog instead of stderr (default: off)
  --realtime               raise the kernel reader thread's priority (default: on)
  --no-realtime            keep the kernel reader thread at normal priority

Information:
  -h, --help               print this help and exit
  -V, --version            print the versions of procMonitor, Deno and libprocconn, and
                           whether the kernel filters events itself (Linux 6.6+), and exit

Environment:
  ${AUTH_ENV}         the TCP password when neither -a nor --auth-file is given
  NO_COLOR                 no colour in the text format
  PROCMONITOR_SYSLOG_SOCKET  the syslog socket for --syslog (default: /dev/log)

Examples:
  procMonitor -e exec,exit -s /tmp/pm.sock   exec and exit events on a Unix socket
  procMonitor -t 8080 -a secret              default events on TCP port 8080, password secret
  procMonitor -d -e all                      every event printed on the console
  procMonitor -d --nats nats://n1:4222,nats://n2:4222 --nats-stream PROCMON --nats-replicas 3
                                             also into a replicated JetStream stream

Client subcommand:
  procMonitor client [--socket PATH] [options]
  procMonitor client --tcp --port PORT [--host HOST] [--auth-file PATH] [--tls] [options]
  procMonitor client --nats URLS [--subject S] [--stream NAME [--since TIME]] [options]
  Run procMonitor client --help for its options.

Exit codes: 0 clean shutdown, 1 runtime failure, 2 usage error.
`;
}

/** The `procMonitor client --help` text. */
export function clientHelpText(): string {
  return `procMonitor client ${VERSION}: connects to a running procMonitor and prints its events.

Usage:
  procMonitor client [--socket PATH] [options]
  procMonitor client --tcp --port PORT [--host HOST] [--auth-file PATH] [--tls [--ca FILE]]
                     [options]
  procMonitor client --nats URLS [--subject S | --host-id H] [--stream NAME [--since TIME]]
                     [NATS credentials] [options]

Connection (the Unix socket, or TCP with --tcp):
  --socket PATH        the server's Unix socket (default: ${DEFAULT_SOCKET_PATH})
  --tcp                connect over TCP instead (default: off)
  --host HOST          TCP server's host name or address (default: ${DEFAULT_CLIENT_HOST})
  --port PORT          TCP server's port, 1-65535 (required with --tcp)
  --auth PASSWORD      TCP password; other users can see it with ps, so prefer --auth-file
                       or ${AUTH_ENV} (a password is required with --tcp)
  --auth-file PATH     read the TCP password from the first line of PATH
  --tls                run the TCP connection inside TLS (default: off)
  --ca FILE            PEM CA certificate to verify the server with, only with --tls
                       (default: Mozilla's roots, built into Deno; set
                       DENO_TLS_CA_STORE=system for the system's store)

NATS (events a fleet of procMonitor servers publishes; instead of --socket or --tcp):
  --nats URLS          NATS servers, a comma list of nats://HOST:PORT or tls://HOST:PORT
                       (default: off)
  --subject S          subject to read, wildcards allowed, e.g. procmonitor.*.exec
                       (default: ${DEFAULT_NATS_SUBJECT_PREFIX}.>, every host and event)
  --host-id H          only the host H: the subject PREFIX.H.> (default: every host)
  --nats-subject-prefix P  the servers' subject prefix, for --host-id and the default
                       subject (default: ${DEFAULT_NATS_SUBJECT_PREFIX})
  --stream NAME        read from this JetStream stream: replays it from --since (or from
                       its start), then follows it live (default: live events only)
  --since TIME         where the replay starts: RFC 3339 (2026-12-01T17:00:00Z) or a time
                       ago such as 10m, 2h, 1d; only with --stream (default: the start)
  --nats-user NAME     NATS user name, with --nats-password-file (default: none)
  --nats-password-file PATH  read the NATS password from the first line of PATH
  --nats-token-file PATH  read a NATS token from the first line of PATH (default: none)
  --nats-creds PATH    NATS credentials file with a user JWT and nkey seed (default: none)
  --nats-ca FILE       PEM CA certificate to verify the NATS servers with; requires TLS
                       (default: Deno's built-in roots for tls:// URLs)

Output:
  --format json|text   print events as JSON lines or aligned text; with a host column
                       when the events carry host (default: json)
  --reconnect          reconnect with backoff when the connection drops; with --nats, keep
                       trying every server for ever, also at start (default: off)
  --log-level LEVEL    debug, info, warning or error (default: info)
  -h, --help           print this help and exit
  -V, --version        print the versions of procMonitor, Deno and libprocconn, and
                       whether the kernel filters events itself, and exit

Environment:
  ${AUTH_ENV}     the TCP password when neither --auth nor --auth-file is given
  NO_COLOR             no colour in the text format

Examples:
  procMonitor client                                   events from ${DEFAULT_SOCKET_PATH}
  procMonitor client --socket /tmp/pm.sock --format text
  ${AUTH_ENV}=secret procMonitor client --tcp --host mon1 --port 8080 --reconnect
  procMonitor client --nats nats://nats1:4222 --subject 'procmonitor.*.exec' --format text
  procMonitor client --nats nats://nats1:4222 --host-id web1 --stream PROCMON --since 1h

Exit codes: 0 clean shutdown, 1 runtime failure, 2 usage error.
`;
}
