import assert from "node:assert/strict";
import type { ExecEvent, ExitEvent, ProcEvent } from "../lib/events/event.ts";
import { formatJson } from "../lib/events/json_format.ts";

const HOSTILE = 'say "hi" \\ back\\slash\nnew line\ttab \x01 \x1b[31m \uFFFD 😀 \u2028 end';

function exec(cmdline: string): ExecEvent {
  return {
    event: "exec",
    time: "2025-01-02T03:04:05.123456Z",
    pid: 4242,
    user: "root",
    uid: 0,
    ppid: 1,
    cmdline,
    comm: "sh",
  };
}

/** Asserts the line is one JSON object on one line ending in "\n", in valid UTF-8. */
function assertOneLine(line: string): void {
  assert.ok(line.endsWith("\n"), "ends with a newline");
  assert.equal(line.indexOf("\n"), line.length - 1, "no raw newline before the end");
  assert.ok(!line.includes("\r"), "no raw carriage return");
  const bytes = new TextEncoder().encode(line);
  new TextDecoder("utf-8", { fatal: true }).decode(bytes); // throws on invalid UTF-8
}

Deno.test("formatJson() round-trips a cmdline with quotes, backslashes and controls", () => {
  const line = formatJson(exec(HOSTILE));
  assertOneLine(line);
  const back = JSON.parse(line) as ExecEvent;
  assert.equal(back.cmdline, HOSTILE);
});

Deno.test("formatJson() escapes control bytes instead of writing them raw", () => {
  const line = formatJson(exec("a\x01b\x1bc\td"));
  // deno-lint-ignore no-control-regex -- checking that no raw control character remains
  assert.ok(!/[\x00-\x09\x0b-\x1f]/.test(line), JSON.stringify(line));
  assert.ok(line.includes("\\u0001") && line.includes("\\u001b") && line.includes("\\t"));
});

Deno.test("formatJson() produces well-formed output for a lone surrogate", () => {
  const line = formatJson(exec("bad \ud800 half"));
  assertOneLine(line);
  assert.ok(line.isWellFormed());
  assert.ok(line.includes("\\ud800"));
  assert.equal((JSON.parse(line) as ExecEvent).cmdline, "bad \ud800 half");
});

Deno.test("formatJson() writes non-ASCII text as valid UTF-8 bytes", () => {
  const line = formatJson(exec("\uFFFD 😀 é"));
  const decoded = new TextDecoder("utf-8", { fatal: true }).decode(
    new TextEncoder().encode(line),
  );
  assert.equal(decoded, line);
  assert.equal((JSON.parse(line) as ExecEvent).cmdline, "\uFFFD 😀 é");
});

Deno.test("formatJson() keeps the producer's key order with event first", () => {
  const ev: ExitEvent = {
    event: "exit",
    time: "2025-01-02T03:04:05.123456Z",
    pid: 10,
    exit_code: 768,
    exit_status: 3,
    core_dumped: false,
    user: "alice",
    uid: 1000,
    ppid: 1,
    cmdline: "false",
    duration_s: 1.25,
  };
  const line = formatJson(ev);
  assertOneLine(line);
  assert.ok(line.startsWith('{"event":"exit",'), line);
  assert.deepEqual(Object.keys(JSON.parse(line)), Object.keys(ev));
});

Deno.test("formatJson() leaves out fields that are undefined", () => {
  const ev: ProcEvent = { ...exec("x"), comm: undefined };
  assert.ok(!formatJson(ev).includes("comm"));
});

Deno.test("formatJson() formats a lost event", () => {
  const line = formatJson({
    event: "lost",
    time: "2025-01-02T03:04:05.000000Z",
    count: 42,
    where: "kernel",
  });
  assert.equal(
    line,
    '{"event":"lost","time":"2025-01-02T03:04:05.000000Z","count":42,"where":"kernel"}\n',
  );
});
