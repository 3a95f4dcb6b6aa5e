#!/usr/bin/env node
// processClient.js: connects to a running procMonitor and prints the process events it
// streams, over its Unix socket or over TCP with the v1 password handshake (SPEC §5).
//
// Zero dependencies, CommonJS, and syntax that Node 12 runs: no optional chaining, no
// nullish coalescing, no class fields, no prefixed core module names.
"use strict";

const net = require("net");
const os = require("os");
const process = require("process");
const StringDecoder = require("string_decoder").StringDecoder;

const DEFAULT_SOCKET = "/var/run/procMonitor.sock";
const DEFAULT_HOST = "127.0.0.1";
const DEFAULT_TIMEOUT_S = 15;
const PROMPT = "Password: ";
const AUTH_OK = "Authentication successful.";
const AUTH_FAILED = "Authentication failed";
// A line longer than this is not a procMonitor event (cmdlines are cut far below it).
const MAX_LINE = 8 * 1024 * 1024;

const HELP = [
  "Usage: processClient.js [options]",
  "",
  "Connects to a running procMonitor and prints the process events it streams, one per line.",
  "",
  "Options:",
  "  -s, --socket PATH      Unix socket to connect to (default " + DEFAULT_SOCKET + ")",
  "  -t, --tcp              connect over TCP instead (needs --port and a password);",
  "                         --port or --host alone also select TCP",
  "  -H, --host HOST        TCP host (default " + DEFAULT_HOST + ")",
  "  -p, --port PORT        TCP port",
  "  -a, --auth PASSWORD    TCP password; without -a, PROCMONITOR_AUTH is used",
  "                         (prefer the variable: a password in argv is visible in ps)",
  "      --timeout SECONDS  give up when TCP connect and authentication take longer",
  "                         (default " + DEFAULT_TIMEOUT_S + ")",
  "      --json             print the raw JSON lines instead of readable text",
  "  -h, --help             show this help",
  "",
  "Events go to stdout; warnings and errors go to stderr.",
  "Exit status: 0 when the server ends the stream (or on Ctrl-C), 1 when the connection",
  "fails, the password is refused or the server refuses the client, 2 on a usage error.",
  "",
].join("\n");

class UsageError extends Error {
  constructor(message) {
    super(message);
    this.name = "UsageError";
  }
}

// Options: name -> [key, takes a value].
const LONG = {
  "--socket": ["socket", true],
  "--tcp": ["tcp", false],
  "--host": ["host", true],
  "--port": ["port", true],
  "--auth": ["auth", true],
  "--timeout": ["timeout", true],
  "--json": ["json", false],
  "--help": ["help", false],
};
const SHORT = {
  s: "--socket",
  t: "--tcp",
  H: "--host",
  p: "--port",
  a: "--auth",
  h: "--help",
};

/** getopt-like: `-p 9000`, `-p9000`, `--port 9000`, `--port=9000`, `-tp 9000`. */
function parseArgs(argv, env) {
  const raw = {};
  const given = {};
  const set = function (long, shown, value) {
    const spec = LONG[long];
    raw[spec[0]] = value;
    given[spec[0]] = shown;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      if (i + 1 < argv.length) {
        throw new UsageError("unexpected argument '" + argv[i + 1] + "' (see --help)");
      }
      break;
    }
    if (arg.slice(0, 2) === "--") {
      const eq = arg.indexOf("=");
      const name = eq > 0 ? arg.slice(0, eq) : arg;
      const spec = LONG[name];
      if (!spec) throw new UsageError("unknown option '" + name + "' (see --help)");
      if (!spec[1]) {
        if (eq > 0) throw new UsageError("option " + name + " takes no value");
        set(name, name, true);
      } else if (eq > 0) {
        set(name, name, arg.slice(eq + 1));
      } else {
        if (i + 1 >= argv.length) throw new UsageError("option " + name + " needs a value");
        set(name, name, argv[++i]);
      }
      continue;
    }
    if (arg.length < 2 || arg[0] !== "-") {
      throw new UsageError("unexpected argument '" + arg + "' (see --help)");
    }
    for (let j = 1; j < arg.length; j++) {
      const shown = "-" + arg[j];
      const long = Object.prototype.hasOwnProperty.call(SHORT, arg[j]) ? SHORT[arg[j]] : null;
      if (!long) throw new UsageError("unknown option '" + shown + "' (see --help)");
      if (!LONG[long][1]) {
        set(long, shown, true);
        continue;
      }
      if (j + 1 < arg.length) {
        set(long, shown, arg.slice(j + 1));
      } else {
        if (i + 1 >= argv.length) throw new UsageError("option " + shown + " needs a value");
        set(long, shown, argv[++i]);
      }
      break;
    }
  }

  const opts = {
    help: raw.help === true,
    json: raw.json === true,
    tcp: raw.tcp === true || raw.port !== undefined || raw.host !== undefined,
    socket: raw.socket !== undefined ? raw.socket : DEFAULT_SOCKET,
    host: raw.host !== undefined ? raw.host : DEFAULT_HOST,
    port: 0,
    auth: "",
    timeoutMs: DEFAULT_TIMEOUT_S * 1000,
  };
  if (opts.help) return opts;

  if (raw.socket !== undefined && raw.socket === "") {
    throw new UsageError("option " + given.socket + " needs a non-empty PATH");
  }
  if (raw.timeout !== undefined) {
    const t = Number(raw.timeout);
    if (!/^[0-9]+(\.[0-9]+)?$/.test(raw.timeout) || !(t > 0)) {
      throw new UsageError(
        "bad timeout '" + raw.timeout + "' for " + given.timeout +
          ": expected a number of seconds greater than 0",
      );
    }
    opts.timeoutMs = Math.ceil(t * 1000);
  }
  if (raw.port !== undefined) {
    const port = Number(raw.port);
    if (!/^[0-9]+$/.test(raw.port) || port < 1 || port > 65535) {
      throw new UsageError(
        "bad port '" + raw.port + "' for " + given.port + ": expected a number from 1 to 65535",
      );
    }
    opts.port = port;
  }
  if (!opts.tcp) return opts;

  if (raw.socket !== undefined) {
    throw new UsageError("option " + given.socket + " cannot be combined with TCP (--tcp)");
  }
  if (raw.host !== undefined && raw.host === "") {
    throw new UsageError("option " + given.host + " needs a non-empty HOST");
  }
  if (raw.port === undefined) throw new UsageError("TCP (--tcp) needs --port PORT");
  const auth = raw.auth !== undefined ? raw.auth : env.PROCMONITOR_AUTH;
  if (auth === undefined || auth === "") {
    throw new UsageError(
      "TCP (--tcp) needs a password: -a PASSWORD or the PROCMONITOR_AUTH environment variable",
    );
  }
  if (/[\r\n]/.test(auth)) {
    throw new UsageError(
      "the password (" + (raw.auth !== undefined ? given.auth : "PROCMONITOR_AUTH") +
        ") must not contain a line break",
    );
  }
  opts.auth = auth;
  return opts;
}

// ---- readable output -------------------------------------------------------------------

/** Control characters (a cmdline may hold newlines) are escaped so one event is one line. */
function clean(value) {
  const s = typeof value === "string" ? value : String(value);
  // deno-lint-ignore no-control-regex -- escaping control characters is the point here
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, function (c) {
    if (c === "\n") return "\\n";
    if (c === "\t") return "\\t";
    if (c === "\r") return "\\r";
    const hex = c.charCodeAt(0).toString(16);
    return "\\x" + (hex.length < 2 ? "0" + hex : hex);
  });
}

function field(value) {
  return value === undefined || value === null ? "?" : clean(value);
}

function cmdOf(ev) {
  let cmd = typeof ev.cmdline === "string" ? ev.cmdline : "";
  if (cmd === "" && typeof ev.comm === "string" && ev.comm !== "") cmd = "[" + ev.comm + "]";
  let out = clean(cmd);
  if (ev.cmdline_truncated === true) out += " [truncated]";
  if (ev.thread === true) out += out === "" ? "(thread)" : " (thread)";
  return out === "" ? "" : "  " + out;
}

/** "  [nginx.service]", else "  [0123456789ab]" (12 hex of the container id), else "". */
function placeOf(ev) {
  if (typeof ev.unit === "string" && ev.unit !== "") return "  [" + clean(ev.unit) + "]";
  if (typeof ev.container_id === "string" && ev.container_id !== "") {
    return "  [" + clean(ev.container_id.slice(0, 12)) + "]";
  }
  return "";
}

function kind(name) {
  const s = clean(name);
  return s.length < 6 ? s + "      ".slice(s.length) : s;
}

const SIGNAL_NAMES = (function () {
  const byNumber = {};
  const sigs = os.constants.signals;
  Object.keys(sigs).forEach(function (name) {
    if (byNumber[sigs[name]] === undefined) byNumber[sigs[name]] = name;
  });
  return byNumber;
})();

/** "status 0", "killed by SIGKILL", "killed by SIGSEGV, core dumped". */
function exitHow(ev) {
  let status = typeof ev.exit_status === "number" ? ev.exit_status : null;
  let signal = typeof ev.signal === "string" ? ev.signal : null;
  let core = ev.core_dumped === true;
  if (status === null && signal === null && typeof ev.exit_code === "number") {
    // The raw wait(2) status, as v1 sent it: 256 is exit status 1, 9 is SIGKILL.
    const sig = ev.exit_code & 0x7f;
    if (sig === 0) {
      status = (ev.exit_code >> 8) & 0xff;
    } else {
      signal = SIGNAL_NAMES[sig] || "signal " + sig;
      core = core || (ev.exit_code & 0x80) !== 0;
    }
  }
  let how;
  if (signal !== null) how = "killed by " + clean(signal) + (core ? ", core dumped" : "");
  else if (status !== null) how = "status " + status;
  else how = "status ?";
  if (typeof ev.duration_s === "number" && isFinite(ev.duration_s)) {
    how += " (" + ev.duration_s.toFixed(2) + "s)";
  }
  return how + usageOf(ev);
}

/** " · cpu 0.31s · 104 MiB" (user + system CPU, peak memory), or "" without usage. */
function usageOf(ev) {
  const cpu = ev.cpu_user_s + ev.cpu_sys_s;
  if (typeof cpu !== "number" || !isFinite(cpu)) return "";
  let out = " · cpu " + cpu.toFixed(2) + "s";
  if (typeof ev.max_rss_kb === "number" && isFinite(ev.max_rss_kb)) {
    const mib = ev.max_rss_kb / 1024;
    out += " · " + (mib < 10 ? mib.toFixed(1) : Math.round(mib)) + " MiB";
  }
  return out;
}

function formatEvent(ev) {
  switch (ev.event) {
    case "fork":
      return kind("fork") + " parent " + field(ev.parent_pid) + " -> child " +
        field(ev.child_pid) + "  " + field(ev.user) + cmdOf(ev);
    case "exec":
      return kind("exec") + " pid " + field(ev.pid) + "  " + field(ev.user) + placeOf(ev) +
        cmdOf(ev);
    case "exit":
      return kind("exit") + " pid " + field(ev.pid) + "  " + field(ev.user) + "  " +
        exitHow(ev) + placeOf(ev) + cmdOf(ev);
    case "uid":
      return kind("uid") + " pid " + field(ev.pid) + "  ruid " + field(ev.ruid) + " euid " +
        field(ev.euid) + "  " + field(ev.user);
    case "gid":
      return kind("gid") + " pid " + field(ev.pid) + "  rgid " + field(ev.rgid) + " egid " +
        field(ev.egid) + "  " + field(ev.user);
    case "sid":
      return kind("sid") + " pid " + field(ev.pid) + "  " + field(ev.user) + "  new session";
    case "ptrace":
      return kind("ptrace") + " pid " + field(ev.pid) + "  " +
        (ev.tracer_pid ? "traced by " + field(ev.tracer_pid) : "tracer detached");
    case "comm":
      return kind("comm") + " pid " + field(ev.pid) + "  name " + field(ev.comm);
    case "coredump":
      return kind("coredump") + " pid " + field(ev.pid) + "  parent " + field(ev.parent_pid);
    case "lost":
      // Lost usage loses no event: those exits came without their usage.
      if (ev.where === "usage") return kind("lost") + " usage of " + field(ev.count) + " exits";
      return kind("lost") + " " + field(ev.count) + " events lost (" + field(ev.where) + ")";
    default: {
      const parts = [];
      Object.keys(ev).forEach(function (key) {
        if (key === "event" || key === "time") return;
        const v = ev[key];
        parts.push(clean(key) + "=" + (typeof v === "string" ? clean(v) : JSON.stringify(v)));
      });
      const name = typeof ev.event === "string" && ev.event !== "" ? ev.event : "unknown";
      return kind(name) + " " + parts.join(" ");
    }
  }
}

// ---- connection ------------------------------------------------------------------------

function describeConnectError(err, where, tcp) {
  const hint = tcp ? " (is procMonitor running with --tcp?)" : " (is procMonitor running?)";
  switch (err.code) {
    case "ENOENT":
      return "Cannot connect to " + where + ": no such file" + hint;
    case "ECONNREFUSED":
      return "Cannot connect to " + where + ": connection refused" + hint;
    case "EACCES":
    case "EPERM":
      return "Cannot connect to " + where + ": permission denied";
    case "ENOTSOCK":
      return "Cannot connect to " + where + ": not a socket";
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return "Cannot connect to " + where + ": unknown host";
    default:
      return "Cannot connect to " + where + ": " + err.message;
  }
}

function run(opts) {
  const where = opts.tcp ? opts.host + ":" + opts.port : opts.socket;
  const decoder = new StringDecoder("utf8");
  let state = opts.tcp ? "auth" : "events";
  let connected = false;
  let finished = false;
  let events = 0;
  let pending = "";
  let skipping = false; // inside an over-long line, dropping until its newline

  const socket = opts.tcp
    ? net.createConnection({ host: opts.host, port: opts.port })
    : net.createConnection({ path: opts.socket });

  function finish(code, message) {
    if (finished) return;
    finished = true;
    if (message) process.stderr.write("procMonitor: " + message + "\n");
    process.exitCode = code;
    socket.setTimeout(0);
    socket.destroy();
  }

  function warn(message) {
    process.stderr.write("procMonitor: warning: " + message + "\n");
  }

  function shorten(line) {
    return line.length > 80 ? line.slice(0, 77) + "..." : line;
  }

  function refused(obj) {
    let msg = clean(obj.error);
    if (typeof obj.limit === "number") msg += " (limit " + obj.limit + ")";
    finish(1, (events === 0 ? "server refused: " : "server ended the stream: ") + msg);
  }

  /** The handshake: any number of "Password: " prompts, then the result line. */
  function authLine(line) {
    while (line.slice(0, PROMPT.length) === PROMPT) line = line.slice(PROMPT.length);
    if (line === "") return;
    if (line === AUTH_OK) {
      state = "events";
      socket.setTimeout(0);
      return;
    }
    if (line.slice(0, AUTH_FAILED.length) === AUTH_FAILED) {
      finish(1, "Authentication failed: the server at " + where + " rejected the password.");
      return;
    }
    if (line[0] === "{") {
      // A refusal can come instead of the prompt: {"error":"too many clients","limit":N}.
      let obj = null;
      try {
        obj = JSON.parse(line);
      } catch (_e) {
        obj = null;
      }
      if (obj !== null && typeof obj === "object" && obj.error !== undefined) {
        refused(obj);
        return;
      }
    }
    finish(
      1,
      "unexpected reply from " + where + " during authentication: " +
        JSON.stringify(shorten(line)),
    );
  }

  function eventLine(line, out) {
    let obj;
    try {
      obj = JSON.parse(line);
    } catch (_e) {
      warn("ignoring a line that is not JSON: " + JSON.stringify(shorten(line)));
      return;
    }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
      warn("ignoring a line that is not an event: " + JSON.stringify(shorten(line)));
      return;
    }
    if (obj.event === undefined && obj.error !== undefined) {
      refused(obj);
      return;
    }
    events++;
    out.push(opts.json ? line : formatEvent(obj));
  }

  function handleLine(line, out) {
    if (line[line.length - 1] === "\r") line = line.slice(0, -1);
    if (state === "auth") authLine(line);
    else if (line !== "") eventLine(line, out);
  }

  function handleText(text, atEnd) {
    const out = [];
    let start = 0;
    let nl;
    while (!finished && (nl = text.indexOf("\n", start)) !== -1) {
      const part = text.slice(start, nl);
      start = nl + 1;
      if (skipping) {
        skipping = false;
        pending = "";
        continue;
      }
      const line = pending === "" ? part : pending + part;
      pending = "";
      handleLine(line, out);
    }
    if (!finished && start < text.length && !skipping) {
      pending += text.slice(start);
      if (pending.length > MAX_LINE) {
        warn("dropping a line longer than " + MAX_LINE + " characters");
        pending = "";
        skipping = true;
      }
    }
    if (atEnd && !finished && pending !== "" && !skipping) {
      const line = pending;
      pending = "";
      handleLine(line, out);
    }
    if (out.length > 0 && !process.stdout.write(out.join("\n") + "\n")) {
      socket.pause();
      process.stdout.once("drain", function () {
        socket.resume();
      });
    }
  }

  socket.on("connect", function () {
    connected = true;
    // Like v1's client: the password goes out at once, before the prompt arrives.
    if (opts.tcp) socket.write(opts.auth + "\n");
  });
  if (opts.tcp) {
    socket.setTimeout(opts.timeoutMs, function () {
      finish(
        1,
        (connected ? "no answer from " + where + " during authentication" : "Cannot connect to " +
          where + ": timed out") + " after " + opts.timeoutMs / 1000 + " s",
      );
    });
  }
  socket.on("data", function (chunk) {
    if (!finished) handleText(decoder.write(chunk), false);
  });
  socket.on("end", function () {
    if (!finished) handleText(decoder.end(), true);
  });
  socket.on("error", function (err) {
    if (!connected) finish(1, describeConnectError(err, where, opts.tcp));
    else finish(1, "connection to " + where + " lost: " + err.message);
  });
  socket.on("close", function () {
    if (finished) return;
    if (state === "auth") {
      finish(1, "the server at " + where + " closed the connection before authentication ended");
    } else {
      finish(0);
    }
  });
}

function main() {
  process.on("SIGINT", function () {
    process.exit(0);
  });
  // A closed stdout (`| head`) ends the client quietly.
  process.stdout.on("error", function (err) {
    if (err.code === "EPIPE") process.exit(0);
    process.stderr.write("procMonitor: cannot write to stdout: " + err.message + "\n");
    process.exit(1);
  });

  let opts;
  try {
    opts = parseArgs(process.argv.slice(2), process.env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write("procMonitor: " + err.message + ".\n");
    process.exitCode = 2;
    return;
  }
  if (opts.help) {
    process.stdout.write(HELP);
    return;
  }
  run(opts);
}

if (require.main === module) main();

module.exports = { parseArgs: parseArgs, formatEvent: formatEvent, UsageError: UsageError };
