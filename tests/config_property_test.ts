/**
 * Property tests of lib/cli/config.ts with fast-check: any command line either parses or is
 * refused with a UsageError of one line that names a flag (SPEC §9: exit 2, one clear
 * line naming the flag), and never repeats the password.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { parseArgs } from "node:util";
import { AUTH_ENV, parseConfig, UsageError } from "../lib/cli/config.ts";

const SECRET = "pr0perty-S3cret";

/** Every flag of the server and of `procMonitor client`, with its short form if any. */
const LONG_FLAGS = [
  "events",
  "clients",
  "socket",
  "tcp",
  "auth",
  "auth-file",
  "direct",
  "help",
  "version",
  "bind",
  "tls-cert",
  "tls-key",
  "format",
  "threads",
  "user",
  "match",
  "pid",
  "socket-mode",
  "socket-group",
  "log-level",
  "syslog",
  "realtime",
  "no-realtime",
  "no-usage",
  "host",
  "port",
  "tls",
  "ca",
  "reconnect",
];
const SHORT_FLAGS = ["e", "c", "s", "t", "a", "d", "h", "V"];

const dir = Deno.makeTempDirSync({ prefix: "config-property-" });
const AUTH_FILES = [
  `${dir}/password`,
  `${dir}/empty-line`,
  `${dir}/not-utf8`,
  `${dir}/missing`,
  dir,
  "",
];
Deno.writeTextFileSync(AUTH_FILES[0], `${SECRET}\n`);
Deno.writeTextFileSync(AUTH_FILES[1], "\nsecond line\n");
Deno.writeFileSync(AUTH_FILES[2], new Uint8Array([0xff, 0xfe, 0x0a]));

/** Values that sit on the edges of what the flags take, and any string at all. */
const value = fc.oneof(
  fc.constantFrom(
    "",
    "0",
    "1",
    "10000",
    "10001",
    "65535",
    "65536",
    "-1",
    "0x10",
    "1e3",
    " 8",
    "all",
    "exec,fork",
    "exec,,exit",
    "EXEC",
    "nope",
    "json",
    "text",
    "debug",
    "0660",
    "0o777",
    "0999",
    "::1",
    "[::1]",
    "localhost",
    "127.0.0.1",
    "/tmp/property.sock",
    "/tmp/" + "x".repeat(120),
    "a\0b",
    "(",
    "[a-",
    "root",
    "nobody,0",
    "a:b",
    "\n",
    "-",
    "--",
  ),
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ maxLength: 12 }),
);

/** One command-line token or a flag with its value, in every spelling parseArgs knows. */
const token: fc.Arbitrary<readonly string[]> = fc.oneof(
  fc.constantFrom(...LONG_FLAGS).map((f) => [`--${f}`]),
  fc.constantFrom(...SHORT_FLAGS).map((f) => [`-${f}`]),
  fc.tuple(fc.constantFrom(...LONG_FLAGS), value).map(([f, v]) => [`--${f}`, v]),
  fc.tuple(fc.constantFrom(...LONG_FLAGS), value).map(([f, v]) => [`--${f}=${v}`]),
  fc.tuple(fc.constantFrom(...SHORT_FLAGS), value).map(([f, v]) => [`-${f}`, v]),
  fc.tuple(fc.constantFrom(...SHORT_FLAGS), value).map(([f, v]) => [`-${f}${v}`]),
  // The password only ever as the value of -a/--auth: no other flag may echo it.
  fc.constantFrom(["-a", SECRET], ["--auth", SECRET], [`--auth=${SECRET}`], [`-a${SECRET}`]),
  fc.constantFrom(...AUTH_FILES).map((f) => ["--auth-file", f]),
  fc.constantFrom(["-t", "8080"], ["-d"], ["-s", "/tmp/p.sock"], ["--tcp"], ["--port", "80"]),
  value.filter((v) => v !== SECRET).map((v) => [v]),
);

const argv = fc.tuple(fc.boolean(), fc.array(token, { maxLength: 8 })).map((
  [isClient, tokens],
) => [...(isClient ? ["client"] : []), ...tokens.flat()]);

const env = fc.oneof(
  fc.constant({}),
  fc.constantFrom("", SECRET, "two\nlines", "x".repeat(2000)).map((v) => ({ [AUTH_ENV]: v })),
);

/** Index of the first argument after the option terminator, as node:util sees it. */
function optionsEnd(args: string[]): number {
  const { tokens } = parseArgs({ args, strict: false, allowPositionals: true, tokens: true });
  const end = tokens.find((t) => t.kind === "option-terminator");
  return end === undefined ? args.length : end.index + 1;
}

/** A flag as a message names it: -e/--events, --bind, "-x"... or the password variable. */
const NAMES_A_FLAG = new RegExp(`(^|[^\\w-])--?[A-Za-z]|${AUTH_ENV}`);

Deno.test("parseConfig() parses any argv or throws a one-line UsageError naming a flag (property)", () => {
  fc.assert(
    fc.property(argv, env, (args, environment) => {
      let config;
      try {
        config = parseConfig(args, environment);
      } catch (error) {
        assert.ok(error instanceof UsageError, `not a UsageError: ${error}`);
        const message = error.message;
        assert.ok(message.length > 0, "a message");
        assert.ok(!message.includes("\n") && !message.includes("\r"), "one line");
        assert.match(message, NAMES_A_FLAG);
        // After the option terminator every argument is positional and is quoted as
        // such: no longer a password. parseArgs also ends options at a short group ending
        // in "-" ("-d-" is "-d --"), so its own tokens say where options end.
        const end = optionsEnd(args);
        if (!args.slice(end).some((a) => a.includes(SECRET))) {
          assert.ok(!message.includes(SECRET), `the password in: ${message}`);
        }
        return;
      }
      assert.ok(["server", "client", "info"].includes(config.mode));
    }),
    { numRuns: 3000 },
  );
});

Deno.test("parseConfig() gives back the values of a valid server command line (property)", () => {
  const port = fc.integer({ min: 1, max: 65535 });
  const clients = fc.integer({ min: 1, max: 10000 });
  const events = fc.subarray(
    ["fork", "exec", "exit", "uid", "gid", "sid", "ptrace", "comm", "coredump"],
    { minLength: 1 },
  );
  fc.assert(
    fc.property(port, clients, events, (p, c, e) => {
      const config = parseConfig(
        ["-t", String(p), "-a", SECRET, "-c", String(c), "-e", e.join(",")],
        {},
      );
      assert.equal(config.mode, "server");
      if (config.mode !== "server") return;
      assert.equal(config.tcpPort, p);
      assert.equal(config.maxClients, c);
      assert.equal(config.auth, SECRET);
      assert.deepEqual(config.events, e);
    }),
    { numRuns: 300 },
  );
});

globalThis.addEventListener("unload", () => {
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("parseConfig() takes a --bind address exactly when node:net's isIP does", async () => {
  // config.ts validates addresses without node:net (it costs 3.5 MiB resident at start).
  const { isIP } = await import("node:net");
  const text = fc.oneof(
    fc.ipV4(),
    fc.ipV4Extended(),
    fc.ipV6(),
    fc.stringMatching(/^[0-9a-fA-F:.]{0,24}$/),
    fc.string(),
  );
  fc.assert(
    fc.property(text, (address) => {
      // Zone ids ("%eth0") are left out: ip-regex takes letters and digits, node:net more.
      fc.pre(!/^\[|^-|%/.test(address) && address !== "localhost");
      let accepted = true;
      try {
        parseConfig(["-t", "80", "-a", SECRET, "--bind", address]);
      } catch (err) {
        if (!(err instanceof UsageError)) throw err;
        accepted = false;
      }
      assert.equal(accepted, isIP(address) !== 0, `--bind ${JSON.stringify(address)}`);
    }),
    { numRuns: 3000 },
  );
});
