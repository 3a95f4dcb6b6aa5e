/**
 * Unit tests of lib/cli/config.ts: the command line of SPEC §3 and its bad inputs (§9).
 */

import assert from "node:assert/strict";
import {
  AUTH_ENV,
  clientHelpText,
  helpText,
  MAX_PASSWORD_BYTES,
  parseConfig,
  readAuthFile,
  UsageError,
  VERSION,
} from "../lib/cli/config.ts";
import type { ClientConfig, ServerConfig } from "../lib/cli/config_types.ts";
import { DEFAULT_SOCKET_PATH } from "../lib/cli/config_types.ts";
import { ALL_EVENT_NAMES } from "../lib/events/event.ts";

const SECRET = "s3cr3t-Pa55word";

/** Parses a server command line with an empty environment unless one is given. */
function server(args: string[], env: Record<string, string | undefined> = {}): ServerConfig {
  const config = parseConfig(args, env);
  assert.equal(config.mode, "server");
  return config as ServerConfig;
}

/** Parses `procMonitor client ...` with an empty environment unless one is given. */
function client(args: string[], env: Record<string, string | undefined> = {}): ClientConfig {
  const config = parseConfig(["client", ...args], env);
  assert.equal(config.mode, "client");
  return config as ClientConfig;
}

/**
 * Asserts that `fn` throws a UsageError whose message is one line containing every `part`
 * and never the test password; returns the message.
 */
function usageError(fn: () => unknown, ...parts: string[]): string {
  let caught: unknown = undefined;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof UsageError, `expected a UsageError, got ${caught}`);
  const message = caught.message;
  assert.equal(caught.name, "UsageError");
  assert.ok(!message.includes("\n"), `message spans lines: ${JSON.stringify(message)}`);
  assert.ok(!message.includes(SECRET), `message reveals the password: ${message}`);
  for (const part of parts) {
    assert.ok(message.includes(part), `${JSON.stringify(message)} lacks ${JSON.stringify(part)}`);
  }
  return message;
}

/** Runs `fn` with a temporary file holding `content`, removed afterwards. */
async function withTempFile(
  content: string | Uint8Array,
  fn: (path: string) => void | Promise<void>,
): Promise<void> {
  const path = await Deno.makeTempFile({ prefix: "pm_auth_" });
  try {
    if (typeof content === "string") await Deno.writeTextFile(path, content);
    else await Deno.writeFile(path, content);
    await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

// ---- defaults and modes ----

Deno.test("parseConfig() with no arguments serves the default socket with v1's defaults", () => {
  const c = server([]);
  assert.deepEqual(c, {
    mode: "server",
    events: ["exec", "fork", "exit"],
    maxClients: 10,
    socketPath: DEFAULT_SOCKET_PATH,
    socketMode: 0o666,
    socketGroup: null,
    tcpPort: null,
    bindAddress: "0.0.0.0",
    auth: null,
    tlsCert: null,
    tlsKey: null,
    direct: false,
    format: "json",
    threads: false,
    users: [],
    match: null,
    pids: [],
    logLevel: "info",
    syslog: false,
    realtime: true,
    belong: {
      units: [],
      cgroups: [],
      container: false,
      ancestry: 0,
      ancestor: null,
      notAncestor: null,
      env: [],
      readCgroup: false,
      readCwd: false,
    },
    metrics: null,
    nats: null,
    hostId: null,
    usage: true,
    bpf: true,
  });
  assert.equal(DEFAULT_SOCKET_PATH, "/var/run/procMonitor.sock");
});

Deno.test("parseConfig() ignores PROCMONITOR_AUTH without --tcp", () => {
  assert.equal(server([], { [AUTH_ENV]: SECRET }).auth, null);
});

Deno.test("parseConfig() with -d only serves no socket", () => {
  const c = server(["-d"]);
  assert.equal(c.direct, true);
  assert.equal(c.socketPath, null);
  assert.equal(c.tcpPort, null);
});

Deno.test("parseConfig() with -t only serves no socket", () => {
  const c = server(["-t", "8080", "-a", SECRET]);
  assert.equal(c.tcpPort, 8080);
  assert.equal(c.auth, SECRET);
  assert.equal(c.socketPath, null);
  assert.equal(c.direct, false);
  assert.equal(c.bindAddress, "0.0.0.0");
});

Deno.test("parseConfig() combines -s, -t and -d", () => {
  const c = server(["-s", "/tmp/pm.sock", "-t", "9000", "-a", SECRET, "-d"]);
  assert.equal(c.socketPath, "/tmp/pm.sock");
  assert.equal(c.tcpPort, 9000);
  assert.equal(c.direct, true);
});

Deno.test("parseConfig() combines -s with -d and long forms with =", () => {
  const c = server(["--socket=/run/x.sock", "--direct", "--events=fork"]);
  assert.equal(c.socketPath, "/run/x.sock");
  assert.equal(c.direct, true);
  assert.deepEqual(c.events, ["fork"]);
});

Deno.test("parseConfig() accepts v1's three examples", () => {
  const a = server(["-e", "exec,exit", "-s", "/tmp/pm.sock"]);
  assert.deepEqual(a.events, ["exec", "exit"]);
  assert.equal(a.socketPath, "/tmp/pm.sock");
  const b = server(["-t", "8080", "-a", "secret"]);
  assert.equal(b.tcpPort, 8080);
  assert.equal(b.auth, "secret");
  const c = server(["-d", "-e", "all"]);
  assert.deepEqual(c.events, [...ALL_EVENT_NAMES]);
  assert.equal(c.socketPath, null);
});

// ---- -e/--events ----

Deno.test("parseConfig() -e all selects every event", () => {
  assert.deepEqual(server(["-e", "all"]).events, [
    "fork",
    "exec",
    "exit",
    "uid",
    "gid",
    "sid",
    "ptrace",
    "comm",
    "coredump",
  ]);
});

Deno.test("parseConfig() -e removes duplicates, tolerates blanks and merges repeats", () => {
  assert.deepEqual(server(["-e", " exec , fork,exec,, "]).events, ["exec", "fork"]);
  assert.deepEqual(server(["-e", "comm", "--events", "ptrace,comm"]).events, ["comm", "ptrace"]);
  assert.deepEqual(server(["-e", "coredump,all"]).events.length, ALL_EVENT_NAMES.length);
});

Deno.test("parseConfig() rejects an unknown event naming the flag and the value", () => {
  const message = usageError(() => server(["-e", "exec,bogus"]), "-e/--events", '"bogus"');
  assert.equal(
    message,
    'Unknown event "bogus" for -e/--events; choose from fork, exec, exit, uid, gid, sid, ' +
      "ptrace, comm, coredump or all",
  );
});

Deno.test("parseConfig() rejects an empty -e list", () => {
  usageError(() => server(["-e", ""]), "-e/--events", '""');
  usageError(() => server(["-e", " , "]), "-e/--events", '" , "');
});

Deno.test("parseConfig() rejects -e without a value", () => {
  usageError(() => server(["-e"]), "-e/--events", "needs a value");
  usageError(() => server(["-e", "-d"]), "-e/--events", "needs a value");
});

// ---- -c/--clients ----

Deno.test("parseConfig() parses -c", () => {
  assert.equal(server(["-c", "1"]).maxClients, 1);
  assert.equal(server(["--clients", "10000"]).maxClients, 10000);
});

Deno.test("parseConfig() rejects -c 0 naming the flag", () => {
  const message = usageError(() => server(["-c", "0"]), "-c/--clients", '"0"');
  assert.equal(message, '-c/--clients must be a whole number from 1 to 10000, not "0"');
});

Deno.test("parseConfig() rejects -c out of range or not a whole number", () => {
  for (const bad of ["10001", "-1", "1.5", "ten", "", " 5", "1e3", "99999999999"]) {
    usageError(() => server([`--clients=${bad}`]), "-c/--clients", JSON.stringify(bad));
  }
});

// ---- -s/--socket ----

Deno.test("parseConfig() rejects an empty or too long -s path", () => {
  usageError(() => server(["-s", ""]), "-s/--socket");
  usageError(() => server(["-s", "/tmp/" + "x".repeat(120)]), "-s/--socket", "107 bytes");
  assert.equal(server(["-s", "/" + "x".repeat(106)]).socketPath?.length, 107);
});

// ---- -t/--tcp ----

Deno.test("parseConfig() parses -t and its port bounds", () => {
  assert.equal(server(["-t", "1", "-a", SECRET]).tcpPort, 1);
  assert.equal(server(["--tcp", "65535", "-a", SECRET]).tcpPort, 65535);
});

Deno.test("parseConfig() rejects a bad -t port naming the flag and the value", () => {
  const message = usageError(() => server(["-t", "99999", "-a", SECRET]), "-t/--tcp", '"99999"');
  assert.equal(message, '-t/--tcp must be a port from 1 to 65535, not "99999"');
  for (const bad of ["0", "http", "80a", "+80", "-80", ""]) {
    usageError(() => server([`--tcp=${bad}`, "-a", SECRET]), "-t/--tcp", JSON.stringify(bad));
  }
});

Deno.test("parseConfig() rejects --tcp without a password", () => {
  const message = usageError(() => server(["-t", "8080"]), "--tcp", "password");
  assert.equal(
    message,
    "--tcp needs a password: give -a/--auth, --auth-file or PROCMONITOR_AUTH",
  );
  usageError(() => server(["-t", "8080"], { [AUTH_ENV]: "" }), "--tcp", "password");
});

// ---- auth ----

Deno.test("parseConfig() takes the password from PROCMONITOR_AUTH", () => {
  assert.equal(server(["-t", "80"], { [AUTH_ENV]: SECRET }).auth, SECRET);
});

Deno.test("parseConfig() prefers -a over PROCMONITOR_AUTH", () => {
  assert.equal(server(["-t", "80", "-a", SECRET], { [AUTH_ENV]: "other" }).auth, SECRET);
});

Deno.test("parseConfig() prefers --auth-file over PROCMONITOR_AUTH", async () => {
  await withTempFile(`${SECRET}\n`, (path) => {
    assert.equal(server(["-t", "80", "--auth-file", path], { [AUTH_ENV]: "other" }).auth, SECRET);
  });
});

Deno.test("parseConfig() reads only the first line of --auth-file, stripping CR/LF", async () => {
  await withTempFile(`${SECRET}\r\nsecond line\n`, (path) => {
    assert.equal(server(["-t", "80", "--auth-file", path]).auth, SECRET);
  });
  await withTempFile(` ${SECRET} `, (path) => {
    assert.equal(server(["-t", "80", "--auth-file", path]).auth, ` ${SECRET} `);
  });
});

Deno.test("parseConfig() rejects -a together with --auth-file", async () => {
  await withTempFile(SECRET, (path) => {
    usageError(
      () => server(["-t", "80", "-a", SECRET, "--auth-file", path]),
      "-a/--auth",
      "--auth-file",
    );
  });
});

Deno.test("parseConfig() rejects a missing --auth-file naming the flag, path and reason", () => {
  const path = "/nonexistent/procMonitor/auth";
  usageError(
    () => server(["-t", "80", "--auth-file", path]),
    "--auth-file",
    JSON.stringify(path),
    "no such file",
  );
});

Deno.test("parseConfig() rejects a directory as --auth-file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    usageError(
      () => server(["-t", "80", "--auth-file", dir]),
      "--auth-file",
      JSON.stringify(dir),
      "directory",
    );
  } finally {
    await Deno.remove(dir);
  }
});

Deno.test("parseConfig() rejects an --auth-file with an empty first line", async () => {
  for (const content of ["", "\n", "\r\n", `\n${SECRET}\n`]) {
    await withTempFile(content, (path) => {
      usageError(
        () => server(["-t", "80", "--auth-file", path]),
        "--auth-file",
        JSON.stringify(path),
        "empty",
      );
    });
  }
});

Deno.test("parseConfig() rejects an --auth-file that is not UTF-8", async () => {
  await withTempFile(new Uint8Array([0x70, 0xff, 0xfe, 0x0a]), (path) => {
    usageError(() => server(["-t", "80", "--auth-file", path]), "--auth-file", "UTF-8");
  });
});

Deno.test("parseConfig() rejects a password longer than the handshake line", async () => {
  const long = "p".repeat(MAX_PASSWORD_BYTES + 1);
  await withTempFile(long + "\n", (path) => {
    usageError(() => server(["-t", "80", "--auth-file", path]), "--auth-file", "bytes");
  });
  await withTempFile("p".repeat(MAX_PASSWORD_BYTES) + "\n", (path) => {
    assert.equal(server(["-t", "80", "--auth-file", path]).auth?.length, MAX_PASSWORD_BYTES);
  });
  const message = usageError(() => server(["-t", "80", "-a", long]), "-a/--auth", "bytes");
  assert.ok(!message.includes(long.slice(0, 20)));
  usageError(() => server(["-t", "80"], { [AUTH_ENV]: long }), AUTH_ENV, "bytes");
});

Deno.test("parseConfig() rejects an empty -a and a password with a line break", () => {
  usageError(() => server(["-t", "80", "-a", ""]), "-a/--auth", "empty");
  usageError(() => server(["-t", "80", "-a", `${SECRET}\nx`]), "-a/--auth", "line break");
  usageError(() => server(["-t", "80"], { [AUTH_ENV]: `${SECRET}\r` }), AUTH_ENV, "line break");
});

Deno.test("parseConfig() rejects -a and --auth-file without --tcp", () => {
  usageError(() => server(["-a", SECRET]), "-a/--auth", "-t/--tcp");
  usageError(() => server(["--auth-file", "/etc/hostname"]), "--auth-file", "-t/--tcp");
});

Deno.test("readAuthFile() returns the first line and names a custom flag", async () => {
  await withTempFile(`${SECRET}\nrest`, (path) => {
    assert.equal(readAuthFile(path), SECRET);
  });
  usageError(() => readAuthFile("/nonexistent/x", "--pw-file"), "--pw-file", '"/nonexistent/x"');
});

Deno.test("parseConfig() never puts the password in an error message", async () => {
  const cases: string[][] = [
    ["-t", "0", "-a", SECRET],
    ["-t", "80", "-a", SECRET, "-e", "bogus"],
    ["-t", "80", "-a", SECRET, "-c", "0"],
    ["-t", "80", "-a", SECRET, "--bind", "nowhere"],
    ["-t", "80", "-a", SECRET, "--tls-cert", "c.pem"],
    ["-t", "80", "-a", SECRET, "--bogus"],
    ["-t", "80", `--auth=${SECRET}`, "--direct=yes"],
    ["-a", SECRET],
    ["-t", "80", "-a", SECRET, "-a"],
    ["--pasword=" + SECRET],
    ["-t", "80", "-a", SECRET + "\n"],
    ["-t", "80", "--auth", "-" + SECRET],
    ["-t", "80", "-a" + SECRET, "--format", "xml", "-d"],
  ];
  for (const args of cases) usageError(() => server(args));
  usageError(() => server(["-t", "0"], { [AUTH_ENV]: SECRET }));
  usageError(() => client(["--auth", SECRET]));
  usageError(() => client(["--tcp", "--port", "0", "--auth", SECRET]));
  usageError(() => client(["--tcp", "--port", "1", "--auth", SECRET, "--socket", "/x"]));
  await withTempFile(SECRET + "\n", (path) => {
    usageError(() => server(["-t", "80", "--auth-file", path, "-a", SECRET]));
    usageError(() => server(["--auth-file", path]));
  });
});

// ---- --bind ----

Deno.test("parseConfig() parses --bind IPv4, IPv6 and localhost", () => {
  const tcp = ["-t", "80", "-a", SECRET];
  assert.equal(server([...tcp, "--bind", "127.0.0.1"]).bindAddress, "127.0.0.1");
  assert.equal(server([...tcp, "--bind", "::1"]).bindAddress, "::1");
  assert.equal(server([...tcp, "--bind", "[::]"]).bindAddress, "::");
  assert.equal(server([...tcp, "--bind", "localhost"]).bindAddress, "localhost");
});

Deno.test("parseConfig() rejects a bad --bind naming the flag and the value", () => {
  const tcp = ["-t", "80", "-a", SECRET];
  for (const bad of ["256.1.1.1", "example.com", "", "1.2.3", ":::"]) {
    usageError(() => server([...tcp, "--bind", bad]), "--bind", JSON.stringify(bad));
  }
});

Deno.test("parseConfig() rejects --bind without --tcp", () => {
  usageError(() => server(["--bind", "127.0.0.1"]), "--bind", '"127.0.0.1"', "-t/--tcp");
});

// ---- TLS ----

Deno.test("parseConfig() parses --tls-cert with --tls-key", () => {
  const c = server(["-t", "443", "-a", SECRET, "--tls-cert", "c.pem", "--tls-key", "k.pem"]);
  assert.equal(c.tlsCert, "c.pem");
  assert.equal(c.tlsKey, "k.pem");
  assert.equal(server(["-t", "443", "-a", SECRET]).tlsCert, null);
});

Deno.test("parseConfig() rejects one of --tls-cert/--tls-key alone", () => {
  const tcp = ["-t", "443", "-a", SECRET];
  usageError(() => server([...tcp, "--tls-cert", "c.pem"]), "--tls-cert", "--tls-key");
  usageError(() => server([...tcp, "--tls-key", "k.pem"]), "--tls-key", "--tls-cert");
  usageError(() => server([...tcp, "--tls-cert", "", "--tls-key", "k"]), "--tls-cert");
});

Deno.test("parseConfig() rejects TLS without --tcp", () => {
  usageError(() => server(["--tls-cert", "c", "--tls-key", "k"]), "--tls-cert", "-t/--tcp");
  usageError(() => server(["--tls-key", "k"]), "--tls-key", "-t/--tcp");
});

// ---- format, threads, filters ----

Deno.test("parseConfig() parses --format with -d and rejects a bad one", () => {
  assert.equal(server(["-d", "--format", "text"]).format, "text");
  assert.equal(server(["-d", "--format", "json"]).format, "json");
  usageError(() => server(["-d", "--format", "xml"]), "--format", '"xml"');
});

Deno.test("parseConfig() rejects --format without -d", () => {
  usageError(() => server(["--format", "text"]), "--format", '"text"', "-d/--direct");
});

Deno.test("parseConfig() parses --threads and --syslog", () => {
  const c = server(["--threads", "--syslog"]);
  assert.equal(c.threads, true);
  assert.equal(c.syslog, true);
});

Deno.test("parseConfig() parses --user, repeated and as comma lists", () => {
  assert.deepEqual(
    server(["--user", "root,1000", "--user", " www-data ", "--user", "root"]).users,
    [
      "root",
      "1000",
      "www-data",
    ],
  );
});

Deno.test("parseConfig() rejects a bad --user naming the flag and the value", () => {
  usageError(() => server(["--user", "root,,bob"]), "--user", '"root,,bob"');
  usageError(() => server(["--user", "a b"]), "--user", '"a b"');
  usageError(() => server(["--user", "x:y"]), "--user", '"x:y"');
  usageError(() => server(["--user", "4294967295"]), "--user", '"4294967295"');
});

Deno.test("parseConfig() parses --match into a RegExp", () => {
  const re = server(["--match", "^/usr/bin/(ssh|scp) "]).match;
  assert.ok(re instanceof RegExp);
  assert.ok(re.test("/usr/bin/ssh host"));
  assert.ok(!re.test("/bin/true"));
});

Deno.test("parseConfig() rejects an invalid --match quoting the regex and the reason", () => {
  const message = usageError(() => server(["--match", "(ssh"]), "--match", '"(ssh"');
  assert.match(message, /unterminated group/i);
  usageError(() => server(["--match", ""]), "--match");
});

Deno.test("parseConfig() parses --pid, repeated and as comma lists", () => {
  assert.deepEqual(server(["--pid", "1", "--pid", "42,4194304,42"]).pids, [1, 42, 4194304]);
});

Deno.test("parseConfig() rejects a bad --pid naming the flag and the value", () => {
  for (const bad of ["0", "-5", "abc", "4194305", "1.0"]) {
    usageError(() => server([`--pid=${bad}`]), "--pid", JSON.stringify(bad));
  }
  usageError(() => server(["--pid", "1,"]), "--pid", '"1,"');
});

// ---- Unix socket options ----

Deno.test("parseConfig() parses --socket-mode in octal", () => {
  assert.equal(server(["--socket-mode", "660"]).socketMode, 0o660);
  assert.equal(server(["--socket-mode", "0600"]).socketMode, 0o600);
  assert.equal(server(["--socket-mode", "0o640"]).socketMode, 0o640);
  assert.equal(server(["--socket-mode", "0"]).socketMode, 0);
  assert.equal(server(["--socket-mode", "777"]).socketMode, 0o777);
});

Deno.test("parseConfig() rejects a bad --socket-mode naming the flag and the value", () => {
  for (const bad of ["999", "1777", "rw-rw----", "", "0x1ff", "8"]) {
    usageError(() => server([`--socket-mode=${bad}`]), "--socket-mode", JSON.stringify(bad));
  }
});

Deno.test("parseConfig() parses --socket-group as a name or gid", () => {
  assert.equal(server(["--socket-group", "adm"]).socketGroup, "adm");
  assert.equal(server(["-s", "/tmp/a.sock", "--socket-group", "4"]).socketGroup, "4");
  usageError(() => server(["--socket-group", ""]), "--socket-group");
  usageError(() => server(["--socket-group", "a b"]), "--socket-group", '"a b"');
});

Deno.test("parseConfig() rejects --socket-mode/--socket-group without a Unix socket", () => {
  usageError(() => server(["-d", "--socket-mode", "660"]), "--socket-mode", '"660"', "-s/--socket");
  usageError(
    () => server(["-t", "80", "-a", SECRET, "--socket-group", "adm"]),
    "--socket-group",
    '"adm"',
  );
  assert.equal(server(["-d", "-s", "/tmp/a.sock", "--socket-mode", "600"]).socketMode, 0o600);
});

// ---- logging and priority ----

Deno.test("parseConfig() parses --log-level and rejects a bad one", () => {
  for (const level of ["debug", "info", "warning", "error"] as const) {
    assert.equal(server(["--log-level", level]).logLevel, level);
  }
  usageError(() => server(["--log-level", "loud"]), "--log-level", '"loud"');
});

Deno.test("parseConfig() --realtime/--no-realtime: default on, last one wins", () => {
  assert.equal(server([]).realtime, true);
  assert.equal(server(["--no-realtime"]).realtime, false);
  assert.equal(server(["--no-realtime", "--realtime"]).realtime, true);
  assert.equal(server(["--realtime", "--no-realtime"]).realtime, false);
});

Deno.test("parseConfig() --no-usage turns exit resource usage off; default on", () => {
  assert.equal(server([]).usage, true);
  assert.equal(server(["--no-usage"]).usage, false);
  usageError(() => server(["--no-usage=yes"]), "--no-usage", "takes no value");
});

// ---- parseArgs errors ----

Deno.test("parseConfig() rejects an unknown option naming it", () => {
  usageError(() => server(["--bogus"]), '"--bogus"', "Unknown option");
  usageError(() => server(["-x"]), '"-x"');
  usageError(() => server(["--no-direct"]), '"--no-direct"');
});

Deno.test("parseConfig() rejects a stray word naming the option before it, never the word", () => {
  const stray = (args: string[], place: string) => {
    const message = usageError(() => server(args), `Unexpected argument ${place}:`, "positional");
    assert.ok(!message.includes(args.at(-1)!), `the word itself in: ${message}`);
  };
  stray(["-d", "stray"], "after -d/--direct");
  stray(["--", "-d"], "after --");
  stray(["-e", "exec", "exit"], "after -e/--events");
  stray(["-t", "8080", "-a", "my", "secret"], "after -a/--auth");
  stray(["loose"], "(word 1)");
});

Deno.test("parseConfig() rejects a value given to a boolean flag", () => {
  usageError(() => server(["--direct=yes"]), "-d/--direct", "takes no value");
  usageError(() => server(["--threads=1"]), "--threads", "takes no value");
});

Deno.test("parseConfig() rejects a missing value naming the flag", () => {
  usageError(() => server(["-t"]), "-t/--tcp", "needs a value");
  usageError(() => server(["--bind"]), "--bind", "needs a value");
  usageError(() => server(["-t", "-d"]), "-t/--tcp", "needs a value");
  usageError(() => server(["-s", "--direct"]), "-s/--socket", "needs a value");
});

// ---- help and version ----

Deno.test("parseConfig() -h and --help return the help text", () => {
  for (const flag of ["-h", "--help"]) {
    assert.deepEqual(parseConfig([flag], {}), { mode: "info", text: helpText() });
  }
  assert.deepEqual(parseConfig(["-d", "-h"], {}), { mode: "info", text: helpText() });
});

Deno.test("parseConfig() -V and --version return the version from deno.json", async () => {
  const denoJson = JSON.parse(
    await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
  );
  assert.equal(VERSION, denoJson.version);
  assert.match(VERSION, /^\d+\.\d+\.\d+/);
  for (const flag of ["-V", "--version"]) {
    assert.deepEqual(parseConfig([flag], {}), {
      mode: "info",
      text: `procMonitor ${VERSION}`,
      version: true,
    });
  }
});

Deno.test("helpText() documents every flag, the defaults, v1's examples and exit codes", () => {
  const text = helpText();
  for (
    const flag of [
      "-e, --events",
      "-c, --clients",
      "-s, --socket",
      "-t, --tcp",
      "-a, --auth",
      "-d, --direct",
      "-h, --help",
      "-V, --version",
      "--auth-file",
      "--bind",
      "--tls-cert",
      "--tls-key",
      "--format",
      "--threads",
      "--user",
      "--match",
      "--pid",
      "--socket-mode",
      "--socket-group",
      "--log-level",
      "--syslog",
      "--realtime",
      "--no-realtime",
      "PROCMONITOR_AUTH",
      "procMonitor client",
    ]
  ) {
    assert.ok(text.includes(flag), `help lacks ${flag}`);
  }
  for (
    const part of [
      "Usage:",
      "(default: exec,fork,exit)",
      "(default: 10)",
      "/var/run/procMonitor.sock",
      "(default: 0.0.0.0",
      "(default: 0666",
      "(default: json)",
      "(default: info)",
      "procMonitor -e exec,exit -s /tmp/pm.sock",
      "procMonitor -t 8080 -a secret",
      "procMonitor -d -e all",
      "0 clean shutdown, 1 runtime failure, 2 usage error",
    ]
  ) {
    assert.ok(text.includes(part), `help lacks ${part}`);
  }
});

Deno.test("helpText() and clientHelpText() keep lines within 100 characters", () => {
  for (const line of (helpText() + clientHelpText()).split("\n")) {
    assert.ok(line.length <= 100, `line of ${line.length} characters: ${line}`);
  }
});

// ---- client subcommand ----

Deno.test("parseConfig() client with no options uses the default socket", () => {
  assert.deepEqual(client([]), {
    mode: "client",
    socketPath: DEFAULT_SOCKET_PATH,
    tcp: null,
    format: "json",
    reconnect: false,
    logLevel: "info",
    nats: null,
  });
});

Deno.test("parseConfig() client parses --socket, --format, --reconnect and --log-level", () => {
  const c = client([
    "--socket",
    "/tmp/pm.sock",
    "--format",
    "text",
    "--reconnect",
    "--log-level",
    "debug",
  ]);
  assert.equal(c.socketPath, "/tmp/pm.sock");
  assert.equal(c.tcp, null);
  assert.equal(c.format, "text");
  assert.equal(c.reconnect, true);
  assert.equal(c.logLevel, "debug");
});

Deno.test("parseConfig() client parses --tcp with its defaults", () => {
  const c = client(["--tcp", "--port", "8080", "--auth", SECRET]);
  assert.deepEqual(c.tcp, { host: "127.0.0.1", port: 8080, auth: SECRET, tls: false, ca: null });
});

Deno.test("parseConfig() client parses --tcp --host --tls --ca and PROCMONITOR_AUTH", () => {
  const c = client(
    ["--tcp", "--host", "mon1.example", "--port", "443", "--tls", "--ca", "ca.pem"],
    {
      [AUTH_ENV]: SECRET,
    },
  );
  assert.deepEqual(c.tcp, {
    host: "mon1.example",
    port: 443,
    auth: SECRET,
    tls: true,
    ca: "ca.pem",
  });
  assert.equal(client(["--tcp", "--host", "[::1]", "--port", "1", "--auth", "x"]).tcp?.host, "::1");
});

Deno.test("parseConfig() client reads --auth-file", async () => {
  await withTempFile(`${SECRET}\n`, (path) => {
    const c = client(["--tcp", "--port", "80", "--auth-file", path], { [AUTH_ENV]: "other" });
    assert.equal(c.tcp?.auth, SECRET);
    usageError(
      () => client(["--tcp", "--port", "80", "--auth-file", path, "--auth", SECRET]),
      "--auth",
      "--auth-file",
    );
  });
});

Deno.test("parseConfig() client rejects --socket with --tcp", () => {
  usageError(
    () => client(["--socket", "/tmp/a", "--tcp", "--port", "1", "--auth", SECRET]),
    "--socket",
    "--tcp",
  );
});

Deno.test("parseConfig() client rejects --tcp without --port or a password", () => {
  usageError(() => client(["--tcp", "--auth", SECRET]), "--tcp", "--port");
  const message = usageError(() => client(["--tcp", "--port", "80"]), "--tcp", "password");
  assert.equal(message, "--tcp needs a password: give --auth, --auth-file or PROCMONITOR_AUTH");
});

Deno.test("parseConfig() client rejects a bad --port or --host naming the value", () => {
  usageError(() => client(["--tcp", "--port", "70000", "--auth", "x"]), "--port", '"70000"');
  usageError(() => client(["--tcp", "--port", "1", "--host", "", "--auth", "x"]), "--host", '""');
  usageError(() => client(["--tcp", "--port", "1", "--host", "a b", "--auth", "x"]), "--host");
});

Deno.test("parseConfig() client rejects TCP-only options without --tcp", () => {
  usageError(() => client(["--port", "80"]), "--port", '"80"', "--tcp");
  usageError(() => client(["--host", "h"]), "--host", "--tcp");
  usageError(() => client(["--tls"]), "--tls", "--tcp");
  usageError(() => client(["--ca", "ca.pem"]), "--ca", "--tcp");
  usageError(() => client(["--auth", SECRET]), "--auth", "--tcp");
  usageError(() => client(["--auth-file", "/x"]), "--auth-file", "--tcp");
});

Deno.test("parseConfig() client rejects --ca without --tls", () => {
  usageError(
    () => client(["--tcp", "--port", "1", "--auth", "x", "--ca", "ca.pem"]),
    "--ca",
    '"ca.pem"',
    "--tls",
  );
});

Deno.test("parseConfig() client rejects bad --format and --log-level, and stray words", () => {
  usageError(() => client(["--format", "yaml"]), "--format", '"yaml"');
  usageError(() => client(["--log-level", "trace"]), "--log-level", '"trace"');
  usageError(() => client(["--tcp", "8080"]), "after --tcp:", "procMonitor client takes no");
  usageError(() => client(["-s", "/tmp/a"]), '"-s"', "procMonitor client --help");
  usageError(() => client(["--socket"]), "--socket", "needs a value");
  usageError(() => client(["--tcp=yes"]), "--tcp", "takes no value");
});

Deno.test("parseConfig() client -h, --help and -V return info", () => {
  for (const flag of ["-h", "--help"]) {
    assert.deepEqual(parseConfig(["client", flag], {}), { mode: "info", text: clientHelpText() });
  }
  assert.deepEqual(parseConfig(["client", "-V"], {}), {
    mode: "info",
    text: `procMonitor ${VERSION}`,
    version: true,
  });
});

Deno.test("clientHelpText() documents every client option and its defaults", () => {
  const text = clientHelpText();
  for (
    const part of [
      "procMonitor client",
      "--socket PATH",
      "--tcp",
      "--host HOST",
      "--port PORT",
      "--auth PASSWORD",
      "--auth-file PATH",
      "--tls",
      "--ca FILE",
      "--format json|text",
      "--reconnect",
      "--log-level",
      "-h, --help",
      "(default: /var/run/procMonitor.sock)",
      "(default: 127.0.0.1)",
      "2 usage error",
    ]
  ) {
    assert.ok(text.includes(part), `client help lacks ${part}`);
  }
});

Deno.test("parseConfig() treats client as a subcommand only in first position", () => {
  usageError(() => server(["-d", "client"]), '"client"');
});

// ---- NATS publishing ----

Deno.test("parseConfig() --nats alone publishes to NATS only, with the defaults", () => {
  const c = server(["--nats", "nats://a:4222,tls://b:4443,c:4222"]);
  assert.equal(c.socketPath, null);
  assert.deepEqual(c.nats, {
    servers: ["nats://a:4222", "tls://b:4443", "c:4222"],
    subjectPrefix: "procmonitor",
    auth: { kind: "none" },
    ca: null,
    bufferBytes: 8 << 20,
    stream: null,
  });
  assert.match(c.hostId!, /^[A-Za-z0-9_-]+$/);
});

Deno.test("parseConfig() --nats-stream takes replicas, max age, buffer size and host id", () => {
  const c = server([
    "-d",
    "--nats=n1:4222",
    "--nats-stream=PROCMON",
    "--nats-replicas=3",
    "--nats-max-age=7d",
    "--nats-buffer=64KiB",
    "--nats-subject-prefix=acme.prod",
    "--host-id=web-1",
  ]);
  assert.deepEqual(c.nats?.stream, { name: "PROCMON", replicas: 3, maxAgeMs: 7 * 86400e3 });
  assert.equal(c.nats?.bufferBytes, 65536);
  assert.equal(c.nats?.subjectPrefix, "acme.prod");
  assert.equal(c.hostId, "web-1");
});

Deno.test("parseConfig() --nats-buffer: K, M and G count in 1024s, as KiB, MiB and GiB", () => {
  const buffer = (size: string) => server(["--nats", "n:4222", "--nats-buffer", size]).nats!;
  assert.equal(buffer("8M").bufferBytes, 8 << 20);
  assert.equal(buffer("8MiB").bufferBytes, 8 << 20);
  assert.equal(buffer("64k").bufferBytes, 64 << 10);
  assert.equal(buffer("1G").bufferBytes, 1 << 30);
  assert.equal(buffer("65536").bufferBytes, 65536);
});

Deno.test("parseConfig() --host-id without --nats adds host to events, nothing else", () => {
  const c = server(["-d", "--host-id", "web1"]);
  assert.equal(c.nats, null);
  assert.equal(c.hostId, "web1");
});

Deno.test("parseConfig() reads NATS secrets from files, never the command line", async () => {
  await withTempFile(`${SECRET}\n`, (file) => {
    const user = server(["--nats", "n:4222", "--nats-user", "pm", "--nats-password-file", file]);
    assert.deepEqual(user.nats?.auth, { kind: "user", user: "pm", password: SECRET });
    const token = server(["--nats", "n:4222", "--nats-token-file", file]);
    assert.deepEqual(token.nats?.auth, { kind: "token", token: SECRET });
    usageError(
      () => server(["--nats", "n:4222", "--nats-creds", file]),
      `--nats-creds "${file}" holds no "-----BEGIN NATS USER JWT-----" block`,
    );
    usageError(
      () => server(["--nats", "n:4222", "--nats-token-file", file, "--nats-creds", file]),
      "cannot be combined; give one kind of credentials",
    );
  });
});

Deno.test("parseConfig() rejects bad NATS flags in one sentence naming the flag", () => {
  const n = ["--nats", "n:4222"];
  usageError(() => server(["-d", "--nats-stream", "S"]), "--nats-stream is only used with --nats");
  usageError(
    () => server([...n, "--nats-replicas", "3"]),
    "--nats-replicas is only used with --nats-stream",
  );
  usageError(
    () => server(["--nats", "http://x:80"]),
    "--nats must be a comma list",
    '"http://x:80"',
  );
  usageError(() => server(["--nats", "a:1,,b:2"]), "--nats needs a NATS server URL");
  assert.equal(
    usageError(() => server(["--nats", `n:4222,nats://pm:${SECRET}@127.0.0.1:14221`])),
    "--nats URL nats://…@127.0.0.1:14221 carries a user or password, which others can see " +
      "with ps; use --nats-user with --nats-password-file, --nats-token-file or --nats-creds",
  );
  usageError(() => server(["--nats", `pm:${SECRET}@n:4222`]), "--nats URL …@n:4222 carries");
  usageError(() => server([...n, "--nats-stream", "a.b"]), "--nats-stream must be a name");
  usageError(
    () => server([...n, "--nats-stream", "S", "--nats-replicas", "6"]),
    '--nats-replicas must be a whole number from 1 to 5, not "6"',
  );
  usageError(
    () => server([...n, "--nats-stream", "S", "--nats-max-age", "1w"]),
    "--nats-max-age must be a duration such as 90s",
  );
  usageError(() => server([...n, "--nats-buffer", "12"]), "--nats-buffer must be a size from 1KiB");
  usageError(() => server([...n, "--nats-buffer", "2G"]), "--nats-buffer must be a size");
  assert.equal(
    usageError(() => server([...n, "--nats-buffer", "8MB"])),
    '--nats-buffer "8MB" is ambiguous (1000s or 1024s?): write 8MiB (8388608 bytes) or 8000000',
  );
  usageError(() => server([...n, "--nats-buffer", "64kb"]), "write 64KiB (65536 bytes) or 64000");
  usageError(() => server([...n, "--nats-buffer", "1GB"]), "write 1GiB", "or 1000000000");
  usageError(() => server([...n, "--host-id", "web1.example"]), "--host-id must be 1 to 64");
  usageError(() => server([...n, "--nats-subject-prefix", "a.>"]), "--nats-subject-prefix must");
  usageError(() => server([...n, "--nats-user", "pm"]), "--nats-user needs --nats-password-file");
  usageError(
    () => server([...n, "--nats-ca", "/nonexistent/ca.pem"]),
    '--nats-ca "/nonexistent/ca.pem" cannot be read: no such file',
  );
});

// ---- where processes belong and come from ----

Deno.test("parseConfig() reads --unit, --cgroup, --container, --ancestry, --ancestor, --not-ancestor, --env", () => {
  const c = server([
    "--unit",
    "nginx*.service,cron.service",
    "--unit",
    "nginx*.service",
    "--cgroup",
    "/system.slice",
    "--container",
    "--ancestry",
    "3",
    "--ancestor",
    "^sshd",
    "--not-ancestor",
    "healthcheck",
    "--env",
    "LANG, TERM",
    "--env",
    "_X1",
  ]);
  assert.deepEqual(c.belong, {
    units: ["nginx*.service", "cron.service"],
    cgroups: ["/system.slice"],
    container: true,
    ancestry: 3,
    ancestor: /^sshd/,
    notAncestor: /healthcheck/,
    env: ["LANG", "TERM", "_X1"],
    readCgroup: true,
    readCwd: false,
  });
});

Deno.test("parseConfig() --cgroup-info and --cwd turn the exec reads on", () => {
  const c = server(["--cgroup-info", "--cwd"]);
  assert.equal(c.belong.readCgroup, true);
  assert.equal(c.belong.readCwd, true);
});

Deno.test("parseConfig() turns the cgroup read on for --unit, --cgroup and --container", () => {
  for (const args of [["--unit", "a.service"], ["--cgroup", "/a"], ["--container"]]) {
    assert.equal(server(args).belong.readCgroup, true, args[0]);
  }
  assert.equal(server(["--ancestor", "x"]).belong.readCgroup, false);
});

Deno.test("parseConfig() rejects bad --unit, --cgroup and --ancestry values naming the flag", () => {
  usageError(() => server(["--unit", "system.slice/nginx.service"]), "--unit", "nginx*.service");
  usageError(() => server(["--unit", "a,,b"]), "--unit", '"a,,b"');
  usageError(() => server(["--cgroup", "system.slice"]), "--cgroup", '"system.slice"', '"/"');
  for (const bad of ["0", "65", "-1", "two", "1.5"]) {
    usageError(
      () => server([`--ancestry=${bad}`]),
      "--ancestry",
      "from 1 to 64",
      JSON.stringify(bad),
    );
  }
});

Deno.test("parseConfig() rejects bad --ancestor and --not-ancestor expressions naming the flag", () => {
  usageError(
    () => server(["--ancestor", "("]),
    "--ancestor",
    '"("',
    "not a valid regular expression",
  );
  usageError(() => server(["--not-ancestor", "["]), "--not-ancestor", '"["');
  usageError(() => server(["--ancestor="]), "--ancestor needs a non-empty regular expression");
});

Deno.test("parseConfig() rejects --env names that are not variable names, or too many", () => {
  for (const bad of ["A=B", "1ABC", "A-B", "A B"]) {
    usageError(() => server(["--env", bad]), "--env", JSON.stringify(bad));
  }
  const many = Array.from({ length: 33 }, (_, i) => `V${i}`).join(",");
  usageError(() => server(["--env", many]), "--env names 33 variables; the limit is 32");
  const long = Array.from({ length: 8 }, (_, i) => `${"N".repeat(40)}${i}`).join(",");
  usageError(() => server(["--env", long]), "--env names take 336 bytes", "limit is 255");
});

// ---- --metrics ----

Deno.test("parseConfig() --metrics PORT serves on loopback, ADDR:PORT on ADDR", () => {
  assert.deepEqual(server(["--metrics", "9464"]).metrics, { address: "127.0.0.1", port: 9464 });
  assert.deepEqual(server(["--metrics", "0.0.0.0:80"]).metrics, { address: "0.0.0.0", port: 80 });
  assert.deepEqual(server(["--metrics", "[::1]:9464"]).metrics, { address: "::1", port: 9464 });
  assert.deepEqual(server(["--metrics", "localhost:65535"]).metrics, {
    address: "localhost",
    port: 65535,
  });
});

Deno.test("parseConfig() rejects a bad --metrics port naming the flag and the value", () => {
  for (const bad of ["0", "65536", "abc", "", "127.0.0.1:", "[::1]:0", "94 64"]) {
    usageError(() => server(["--metrics", bad]), "--metrics", "1 to 65535", JSON.stringify(bad));
  }
});

Deno.test("parseConfig() rejects a bad --metrics address naming the flag and the address", () => {
  for (
    const [bad, shown] of [["1.2.3:9", "1.2.3"], ["[127.0.0.1]:9", "[127.0.0.1]"], [
      "example.com:9",
      "example.com",
    ], [":9464", '""']]
  ) {
    usageError(() => server(["--metrics", bad]), "--metrics address", shown);
  }
});

Deno.test("parseConfig() rejects an IPv6 --metrics address without brackets", () => {
  usageError(() => server(["--metrics", "::1:9464"]), "--metrics", "[::1]:9464", '"::1:9464"');
});

Deno.test("helpText() documents --metrics and its loopback default", () => {
  assert.ok(helpText().includes("--metrics [ADDR:]PORT"));
  assert.ok(helpText().includes("(default address: 127.0.0.1)"));
});
