import assert from "node:assert/strict";
import { ConsoleOutput, type ConsoleWriter } from "../lib/outputs/console_output.ts";
import type { ProcEvent } from "../lib/events/event.ts";
import { formatJson } from "../lib/events/json_format.ts";

const time = "2026-11-24T01:02:03.000004Z";
const exec = (pid: number): ProcEvent => ({
  event: "exec",
  time,
  pid,
  user: "root",
  uid: 0,
  ppid: 1,
  cmdline: `/bin/true ${pid}`,
});
const encode = (events: ProcEvent[]) => new TextEncoder().encode(events.map(formatJson).join(""));

/** Collects what is written; each write may take only part of the chunk. */
class Collector implements ConsoleWriter {
  text = "";
  constructor(readonly most = Infinity) {}
  write(p: Uint8Array): Promise<number> {
    const n = Math.min(p.byteLength, this.most);
    this.text += new TextDecoder().decode(p.subarray(0, n));
    return Promise.resolve(n);
  }
}

const options = (
  writer: ConsoleWriter,
  extra: Partial<ConstructorParameters<typeof ConsoleOutput>[1]> = {},
) => ({
  color: false,
  now: () => time,
  onError: (error: unknown) => {
    throw error;
  },
  writer,
  ...extra,
});

Deno.test("ConsoleOutput writes every batch, whenever it arrives relative to the writer", async () => {
  // A batch queued at any microtask offset after the previous one must still go out,
  // including in the instant the writer finds its queue empty.
  for (let ticks = 0; ticks < 12; ticks++) {
    const writer = new Collector();
    const out = new ConsoleOutput("json", options(writer));
    out.write([exec(1)], encode([exec(1)]));
    for (let i = 0; i < ticks; i++) await Promise.resolve();
    out.write([exec(2)], encode([exec(2)]));
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(writer.text, formatJson(exec(1)) + formatJson(exec(2)), `after ${ticks} ticks`);
  }
});

Deno.test("ConsoleOutput finishes a chunk the writer takes in pieces", async () => {
  const writer = new Collector(7);
  const out = new ConsoleOutput("json", options(writer));
  const events = [exec(10), exec(11), exec(12)];
  out.write(events, encode(events));
  await out.flush();
  assert.equal(writer.text, events.map(formatJson).join(""));
});

Deno.test("ConsoleOutput --format text writes aligned text lines", async () => {
  const writer = new Collector();
  const out = new ConsoleOutput("text", options(writer));
  out.write([exec(10), exec(12345)], encode([exec(10), exec(12345)]));
  await out.flush();
  const lines = writer.text.split("\n").filter(Boolean);
  assert.equal(lines.length, 2);
  assert.ok(!writer.text.startsWith("{"));
  assert.equal(lines[0].indexOf(" root "), lines[1].indexOf(" root "));
});

Deno.test("ConsoleOutput reports what a full queue dropped as a lost event", async () => {
  let release = () => {};
  const blocked = new Promise<void>((r) => release = r);
  const writer = new Collector();
  const slow: ConsoleWriter = { write: async (p) => (await blocked, writer.write(p)) };
  const one = encode([exec(1)]);
  const out = new ConsoleOutput("json", options(slow, { limitBytes: one.byteLength * 2 }));
  for (let pid = 1; pid <= 5; pid++) out.write([exec(pid)], encode([exec(pid)]));
  release();
  await out.flush();
  out.write([exec(6)], encode([exec(6)]));
  await out.flush();
  const lines = writer.text.trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(
    lines.map((e) => e.event === "exec" ? e.pid : `${e.event}:${e.count}:${e.where}`),
    [
      1,
      2,
      "lost:3:buffer",
      6,
    ],
  );
});

Deno.test("ConsoleOutput gives its lost event the host every event carries", async () => {
  let release = () => {};
  const blocked = new Promise<void>((r) => release = r);
  const writer = new Collector();
  const slow: ConsoleWriter = { write: async (p) => (await blocked, writer.write(p)) };
  const one = encode([exec(1)]);
  const out = new ConsoleOutput(
    "json",
    options(slow, { limitBytes: one.byteLength, host: "web-1" }),
  );
  for (let pid = 1; pid <= 3; pid++) out.write([exec(pid)], encode([exec(pid)]));
  release();
  await out.flush();
  out.write([exec(4)], encode([exec(4)]));
  await out.flush();
  const lost = writer.text.trim().split("\n").map((l) => JSON.parse(l)).find((e) =>
    e.event === "lost"
  );
  assert.deepEqual(Object.entries(lost).filter(([k]) => k !== "time"), [
    ["event", "lost"],
    ["count", 2],
    ["where", "buffer"],
    ["host", "web-1"],
  ]);
});

Deno.test("ConsoleOutput stops and reports once when stdout fails", async () => {
  const errors: unknown[] = [];
  const broken: ConsoleWriter = {
    write: () => Promise.reject(new Deno.errors.BrokenPipe("closed")),
  };
  const out = new ConsoleOutput(
    "json",
    options(broken, { onError: (e: unknown) => errors.push(e) }),
  );
  out.write([exec(1)], encode([exec(1)]));
  await out.flush();
  out.write([exec(2)], encode([exec(2)]));
  await out.flush();
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof Deno.errors.BrokenPipe);
});
