import assert from "node:assert/strict";
import { decodeExitCode, signalName } from "../lib/events/exit_code.ts";

Deno.test("decodeExitCode() decodes exit status 0", () => {
  assert.deepEqual(decodeExitCode(0), { exit_status: 0, core_dumped: false });
});

Deno.test("decodeExitCode() decodes exit status 3 from 768", () => {
  assert.deepEqual(decodeExitCode(768), { exit_status: 3, core_dumped: false });
});

Deno.test("decodeExitCode() decodes exit status 1 from 256 (v1's example)", () => {
  assert.deepEqual(decodeExitCode(256), { exit_status: 1, core_dumped: false });
});

Deno.test("decodeExitCode() decodes exit status 255", () => {
  assert.deepEqual(decodeExitCode(255 << 8), { exit_status: 255, core_dumped: false });
});

Deno.test("decodeExitCode() decodes an exit killed by SIGKILL", () => {
  assert.deepEqual(decodeExitCode(9), { signal: "SIGKILL", core_dumped: false });
});

Deno.test("decodeExitCode() decodes an exit killed by SIGTERM", () => {
  assert.deepEqual(decodeExitCode(15), { signal: "SIGTERM", core_dumped: false });
});

Deno.test("decodeExitCode() decodes SIGSEGV with a core dump (0x8b)", () => {
  assert.deepEqual(decodeExitCode(0x8b), { signal: "SIGSEGV", core_dumped: true });
});

Deno.test("decodeExitCode() decodes SIGABRT with a core dump as SIGABRT, not SIGIOT", () => {
  assert.deepEqual(decodeExitCode(0x86), { signal: "SIGABRT", core_dumped: true });
});

Deno.test("decodeExitCode() reports the stopped encoding (0x7f) as signal 127, no core", () => {
  assert.deepEqual(decodeExitCode(0x137f), { signal: "SIG127", core_dumped: false });
  assert.deepEqual(decodeExitCode(0xffff), { signal: "SIG127", core_dumped: false });
});

Deno.test("signalName() prefers canonical names over aliases", () => {
  assert.equal(signalName(6), "SIGABRT");
  assert.equal(signalName(17), "SIGCHLD");
  assert.equal(signalName(29), "SIGIO");
  assert.equal(signalName(31), "SIGSYS");
});

Deno.test("signalName() names common signals", () => {
  assert.equal(signalName(1), "SIGHUP");
  assert.equal(signalName(2), "SIGINT");
  assert.equal(signalName(9), "SIGKILL");
  assert.equal(signalName(11), "SIGSEGV");
  assert.equal(signalName(13), "SIGPIPE");
});

Deno.test("signalName() names realtime signals relative to SIGRTMIN (34)", () => {
  assert.equal(signalName(34), "SIGRTMIN");
  assert.equal(signalName(35), "SIGRTMIN+1");
  assert.equal(signalName(50), "SIGRTMIN+16");
  assert.equal(signalName(63), "SIGRTMIN+29");
  assert.equal(signalName(64), "SIGRTMAX");
});

Deno.test("signalName() falls back to SIG<n> for unknown numbers", () => {
  assert.equal(signalName(32), "SIG32");
  assert.equal(signalName(33), "SIG33");
  assert.equal(signalName(70), "SIG70");
  assert.equal(signalName(127), "SIG127");
  assert.equal(signalName(0), "SIG0");
});
