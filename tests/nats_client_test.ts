/**
 * Unit tests of `procMonitor client --nats`: its flags (lib/cli/config.ts), the NATS client's
 * options (lib/cli/nats_client.ts) and how message payloads become stdout lines. The live
 * tests against a real nats-server are in tests/live_nats_client_test.ts.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { parseConfig, UsageError } from "../lib/cli/config.ts";
import type { ClientConfig, NatsClientConfig } from "../lib/cli/config_types.ts";
import { ClientOutput } from "../lib/cli/client_output.ts";
import { EventLines, natsConnectOptions } from "../lib/cli/nats_client.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SECRET = "n4ts-Pa55word";
const CREDS = `-----BEGIN NATS USER JWT-----
eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln
------END NATS USER JWT------

-----BEGIN USER NKEY SEED-----
SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4
------END USER NKEY SEED------
`;
const PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/** `procMonitor client ARGS` parsed; its NATS source must be there. */
function nats(args: string[]): NatsClientConfig {
  const config = parseConfig(["client", ...args], {}) as ClientConfig;
  assert.equal(config.mode, "client");
  assert.notEqual(config.nats, null);
  return config.nats!;
}

/** The UsageError message of `procMonitor client ARGS`; one line, never the password. */
function usage(args: string[]): string {
  let caught: unknown;
  try {
    parseConfig(["client", ...args], {});
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof UsageError, `expected a UsageError, got ${caught}`);
  assert.ok(!caught.message.includes("\n"), caught.message);
  assert.ok(!caught.message.includes(SECRET), caught.message);
  return caught.message;
}

/** A temporary file with `content`, removed on dispose. */
async function tempFile(content: string): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempFile({ prefix: "pm_nats_client_" });
  await Deno.writeTextFile(path, content);
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path) };
}

// ---- flags ----

Deno.test("parseConfig() client --nats reads every host's live events by default", () => {
  const config = parseConfig(["client", "--nats", "nats://127.0.0.1:4222"], {});
  assert.deepEqual(config, {
    mode: "client",
    socketPath: "/var/run/procMonitor.sock",
    tcp: null,
    format: "json",
    reconnect: false,
    logLevel: "info",
    nats: {
      servers: ["nats://127.0.0.1:4222"],
      subject: "procmonitor.>",
      stream: null,
      since: null,
      auth: { kind: "none" },
      ca: null,
      tls: false,
    },
  });
});

Deno.test("parseConfig() client --nats takes a comma list of nats://, tls:// and host:port", () => {
  const config = nats(["--nats", "nats://a:4222, tls://b:4443,c:4222,d"]);
  assert.deepEqual(config.servers, ["nats://a:4222", "tls://b:4443", "c:4222", "d"]);
  assert.equal(config.tls, true, "a tls:// URL requires TLS");
});

Deno.test("parseConfig() client --nats rejects other schemes, paths, empty items and credentials in URLs", () => {
  assert.equal(
    usage(["--nats", "ws://a:80"]),
    '--nats URL "ws://a:80" must start with nats:// or tls:// (or be host:port)',
  );
  assert.match(usage(["--nats", "nats://a:4222/x"]), /must be only a host and a port/);
  assert.match(
    usage(["--nats", "nats://a:4222,"]),
    /--nats needs a URL such as nats:\/\/host:4222/,
  );
  assert.equal(
    usage(["--nats", `nats://alice:${SECRET}@a:4222`]),
    "--nats URL nats://…@a:4222 carries a user or password, which others can see with ps; " +
      "use --nats-user with --nats-password-file, --nats-token-file or --nats-creds",
  );
  assert.match(usage(["--nats", `alice:${SECRET}@a:4222`]), /^--nats URL …@a:4222 carries/);
  assert.match(usage(["--nats", "tls://alice@a:4222"]), /^--nats URL tls:\/\/…@a:4222 carries/);
});

Deno.test("parseConfig() client --host-id H reads procmonitor.H.>, with --nats-subject-prefix", () => {
  assert.equal(nats(["--nats", "n:4222", "--host-id", "web1"]).subject, "procmonitor.web1.>");
  assert.equal(
    nats(["--nats", "n:4222", "--host-id", "web1", "--nats-subject-prefix", "fleet.pm"]).subject,
    "fleet.pm.web1.>",
  );
  assert.equal(nats(["--nats", "n:4222", "--nats-subject-prefix", "pm"]).subject, "pm.>");
  assert.match(
    usage(["--nats", "n:4222", "--host-id", "web1.example.com"]),
    /^--host-id must be one subject token/,
  );
  assert.match(
    usage(["--nats", "n:4222", "--nats-subject-prefix", "pm.*"]),
    /^--nats-subject-prefix must be dot-separated subject tokens without wildcards/,
  );
});

Deno.test("parseConfig() client --subject takes NATS wildcards and rejects malformed subjects", () => {
  assert.equal(
    nats(["--nats", "n:4222", "--subject", "procmonitor.*.exec"]).subject,
    "procmonitor.*.exec",
  );
  assert.equal(nats(["--nats", "n:4222", "--subject", ">"]).subject, ">");
  for (const bad of ["procmonitor..exec", "procmonitor.>.exec", "pm.ex*c", "pm. x", ""]) {
    assert.match(
      usage(["--nats", "n:4222", `--subject=${bad}`]),
      /^--subject must be a NATS subject such as procmonitor\.web1\.> /,
      bad,
    );
  }
  assert.equal(
    usage(["--nats", "n:4222", "--subject", "pm.>", "--host-id", "web1"]),
    "--subject and --host-id cannot be combined; --subject gives the whole subject",
  );
});

Deno.test("parseConfig() client --since without --stream is a usage error naming both", () => {
  assert.equal(
    usage(["--nats", "n:4222", "--since", "10m"]),
    '--since "10m" needs --stream NAME: only a JetStream stream keeps past events',
  );
});

Deno.test("parseConfig() client --stream without --since replays the whole stream", () => {
  const config = nats(["--nats", "n:4222", "--stream", "PROCMON"]);
  assert.equal(config.stream, "PROCMON");
  assert.equal(config.since, null);
  assert.match(
    usage(["--nats", "n:4222", "--stream", "a.b"]),
    /^--stream must be a JetStream stream name/,
  );
});

Deno.test("parseConfig() client --since takes RFC 3339 times", () => {
  const at = (since: string) => nats(["--nats", "n", "--stream", "S", "--since", since]).since;
  assert.equal(at("2026-12-01T17:00:00Z")?.toISOString(), "2026-12-01T17:00:00.000Z");
  assert.equal(at("2026-12-01T18:30:00.250+01:30")?.toISOString(), "2026-12-01T17:00:00.250Z");
  assert.equal(at("2026-12-01 17:00:00z")?.toISOString(), "2026-12-01T17:00:00.000Z");
});

Deno.test("parseConfig() client --since takes a time ago: 90s, 10m, 2h, 1d, 1h30m", () => {
  for (
    const [text, seconds] of [["90s", 90], ["10m", 600], ["2h", 7200], ["1d", 86400], [
      "1h30m",
      5400,
    ], ["0.5h", 1800]] as const
  ) {
    const before = Date.now();
    const since = nats(["--nats", "n", "--stream", "S", "--since", text]).since!.getTime();
    const after = Date.now();
    assert.ok(
      since >= before - seconds * 1000 && since <= after - seconds * 1000,
      `${text}: ${since - before}`,
    );
  }
});

Deno.test("parseConfig() client --since rejects what is neither a time nor a time ago", () => {
  for (
    const bad of [
      "yesterday",
      "10",
      "10y",
      "2026-12-01",
      "2026-12-01T17:00:00",
      "2026-13-01T00:00:00Z",
      "-5m",
    ]
  ) {
    assert.equal(
      usage(["--nats", "n", "--stream", "S", `--since=${bad}`]),
      "--since must be an RFC 3339 time such as 2026-12-01T17:00:00Z or a time ago such as " +
        `10m, 2h or 1d, not ${JSON.stringify(bad)}`,
    );
  }
});

Deno.test("parseConfig() client --nats cannot be combined with --socket or --tcp", () => {
  assert.equal(
    usage(["--nats", "n:4222", "--socket", "/tmp/pm.sock"]),
    "--nats and --socket cannot be combined; choose one source of events",
  );
  assert.equal(
    usage(["--nats", "n:4222", "--tcp", "--port", "1"]),
    "--nats and --tcp cannot be combined; choose one source of events",
  );
});

Deno.test("parseConfig() client rejects the NATS flags without --nats", () => {
  assert.equal(
    usage(["--stream", "PROCMON"]),
    '--stream "PROCMON" is only used with --nats, which is not given',
  );
  assert.equal(
    usage(["--socket", "/tmp/pm.sock", "--host-id", "web1"]),
    '--host-id "web1" is only used with --nats, which is not given',
  );
});

Deno.test("parseConfig() client --nats-user reads the password from --nats-password-file only", async () => {
  await using file = await tempFile(`${SECRET}\nignored\n`);
  const config = nats(["--nats", "n", "--nats-user", "alice", "--nats-password-file", file.path]);
  assert.deepEqual(config.auth, { kind: "user", user: "alice", password: SECRET });
  assert.equal(
    usage(["--nats", "n", "--nats-user", "alice"]),
    "--nats-user needs --nats-password-file FILE (the password is never taken from the command line)",
  );
  assert.equal(
    usage(["--nats", "n", "--nats-password-file", file.path]),
    "--nats-password-file needs --nats-user NAME",
  );
  assert.match(
    usage(["--nats", "n", "--nats-user", "alice", "--nats-password-file", "/nonexistent/pw"]),
    /^--nats-password-file "\/nonexistent\/pw" cannot be read: no such file$/,
  );
});

Deno.test("parseConfig() client reads --nats-token-file and --nats-creds, one kind at a time", async () => {
  await using token = await tempFile(`${SECRET}\n`);
  await using creds = await tempFile(CREDS);
  assert.deepEqual(nats(["--nats", "n", "--nats-token-file", token.path]).auth, {
    kind: "token",
    token: SECRET,
  });
  assert.deepEqual(nats(["--nats", "n", "--nats-creds", creds.path]).auth, {
    kind: "creds",
    creds: new TextEncoder().encode(CREDS),
    path: creds.path,
  });
  assert.equal(
    usage(["--nats", "n", "--nats-token-file", token.path, "--nats-creds", creds.path]),
    "--nats-token-file and --nats-creds cannot be combined; give one kind of NATS credentials",
  );
  assert.equal(
    usage(["--nats", "n", "--nats-creds", token.path]),
    `--nats-creds ${
      JSON.stringify(token.path)
    } holds no NATS user JWT and nkey seed (a .creds file as nsc writes it)`,
  );
});

Deno.test("parseConfig() client --nats-ca reads a PEM file and requires TLS", async () => {
  await using ca = await tempFile(PEM);
  await using notPem = await tempFile("hello\n");
  const config = nats(["--nats", "nats://n:4222", "--nats-ca", ca.path]);
  assert.deepEqual(config.ca, { path: ca.path, pem: PEM });
  assert.equal(config.tls, true);
  assert.equal(
    usage(["--nats", "n", "--nats-ca", notPem.path]),
    `--nats-ca ${JSON.stringify(notPem.path)} holds no PEM certificate`,
  );
  assert.equal(
    usage(["--nats", "n", "--nats-ca", "/nonexistent/ca.pem"]),
    '--nats-ca "/nonexistent/ca.pem" cannot be read: no such file',
  );
});

Deno.test("procMonitor client --since without --stream exits 2 with one sentence", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-q", "-A", "main.ts", "client", "--nats", "nats://127.0.0.1:1", "--since", "1h"],
    cwd: ROOT,
    stdin: "null",
  }).output();
  assert.equal(out.code, 2);
  assert.equal(new TextDecoder().decode(out.stdout), "");
  assert.equal(
    new TextDecoder().decode(out.stderr),
    'procMonitor: --since "1h" needs --stream NAME: only a JetStream stream keeps past events\n' +
      "Try 'procMonitor client --help' for more information.\n",
  );
});

// ---- the NATS client's options ----

Deno.test("natsConnectOptions() puts each kind of credentials and the CA where the client reads them", async () => {
  await using pw = await tempFile(SECRET);
  await using ca = await tempFile(PEM);
  const userPass = natsConnectOptions(
    nats([
      "--nats",
      "tls://a:1,tls://b:2",
      "--nats-user",
      "alice",
      "--nats-password-file",
      pw.path,
      "--nats-ca",
      ca.path,
    ]),
    false,
  );
  assert.deepEqual(userPass.servers, ["tls://a:1", "tls://b:2"]);
  assert.equal(userPass.user, "alice");
  assert.equal(userPass.pass, SECRET);
  assert.deepEqual(userPass.tls, { ca: PEM });
  assert.equal(userPass.maxReconnectAttempts, 10);
  assert.equal(userPass.waitOnFirstConnect, false);
  const token = natsConnectOptions(nats(["--nats", "a", "--nats-token-file", pw.path]), true);
  assert.equal(token.token, SECRET);
  assert.equal(token.tls, undefined, "no TLS asked for: the server's choice");
  assert.equal(token.maxReconnectAttempts, -1, "--reconnect: for ever");
  assert.equal(token.waitOnFirstConnect, true, "--reconnect: also at start");
});

// ---- payloads to lines ----

const EXEC = {
  event: "exec",
  time: "2026-12-01T17:00:01.000002Z",
  pid: 42,
  user: "root",
  uid: 0,
  ppid: 1,
  cmdline: "/usr/bin/true",
  host: "web1",
};

Deno.test("EventLines.text() prints a payload as one line, with or without its newline", () => {
  const lines = new EventLines(new ClientOutput("json"));
  const json = JSON.stringify(EXEC);
  assert.equal(lines.text(json), json + "\n");
  assert.equal(lines.text(json + "\n"), json + "\n");
  assert.equal(lines.text(json + "\r\n"), json + "\n");
  assert.equal(lines.text(json + "\n" + json), json + "\n" + json + "\n", "two events, two lines");
});

Deno.test("EventLines.text() skips payloads that are not events", () => {
  const lines = new EventLines(new ClientOutput("json"));
  for (const bad of ["hello", "[1,2]", '{"error":"x"}', '{"event":7}', ""]) {
    assert.equal(lines.text(bad), "", bad);
  }
});

Deno.test("EventLines.text() in the text format shows the host column", () => {
  Deno.env.set("NO_COLOR", "1"); // no colour even when the tests run on a terminal
  const lines = new EventLines(new ClientOutput("text"));
  assert.equal(
    lines.text(JSON.stringify(EXEC)),
    "17:00:01.000002 web1         exec          42       1 root       /usr/bin/true\n",
  );
});
