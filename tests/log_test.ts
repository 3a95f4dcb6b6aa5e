/**
 * The syslog sink's bounded queue, and that a stuck system log cannot hold up shutdown.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { LineQueue, SYSLOG_CLOSE_MS } from "../lib/log.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

Deno.test("a stuck writer: the newest lines wait, the oldest are dropped and counted", async () => {
  const written: string[] = [];
  const { promise: stuck, resolve: unstick } = Promise.withResolvers<void>();
  const queue = new LineQueue(
    async (line) => {
      if (written.length === 0) await stuck;
      written.push(line);
    },
    3,
    (n) => `dropped ${n}`,
  );
  for (const line of "abcdefghij") queue.push(line); // "a" is being written meanwhile
  assert.equal(queue.unsent, 9);
  unstick();
  assert.equal(await queue.flush(1000), true);
  assert.deepEqual(written, ["a", "dropped 6", "h", "i", "j"]);
  assert.equal(queue.unsent, 0);
  queue.push("k"); // and it goes on
  assert.equal(await queue.flush(1000), true);
  assert.deepEqual(written.slice(-1), ["k"]);
});

Deno.test("flush gives up in time when the writer never returns", async () => {
  const queue = new LineQueue(() => new Promise<void>(() => {}), 10, (n) => `dropped ${n}`);
  for (let i = 0; i < 5; i++) queue.push(`line ${i}`);
  const t0 = performance.now();
  assert.equal(await queue.flush(100), false);
  const took = performance.now() - t0;
  assert.ok(took >= 90 && took < 1000, `flush took ${took} ms`);
  assert.equal(queue.unsent, 4);
});

Deno.test("a writer that fails ends the queue quietly", async () => {
  const queue = new LineQueue(() => Promise.reject(new Error("EPIPE")), 10, String);
  queue.push("a");
  queue.push("b");
  assert.equal(await queue.flush(1000), false);
  queue.push("c"); // ignored
  assert.equal(queue.unsent, 0);
});

/** Logs a lot through --syslog's sink, then closes it and says how long that took. */
const LOGGING = `
import { closeLogging, configureLogging, getLogger } from "${ROOT}lib/log.ts";
await configureLogging("info", true);
const log = getLogger("test");
for (let i = 0; i < 20000; i++) log.info("message {i} " + "x".repeat(200), { i });
const t0 = performance.now();
await closeLogging();
console.log(Math.round(performance.now() - t0));
`;

Deno.test("a system log that takes nothing cannot hold up closing the logs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pm-syslog-" });
  const socket = `${dir}/log.sock`;
  // A syslog daemon that has stopped: its socket exists, nobody reads it.
  const daemon = new Deno.Command("/usr/bin/python3", {
    args: [
      "-c",
      "import socket, sys, time\n" +
      "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1])\n" +
      "print('ready', flush=True); time.sleep(60)\n",
      socket,
    ],
    stdout: "piped",
  }).spawn();
  try {
    const ready = await daemon.stdout.pipeThrough(new TextDecoderStream()).getReader().read();
    assert.match(ready.value ?? "", /ready/);
    await Deno.writeTextFile(`${dir}/logging.ts`, LOGGING);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-q", "-A", "--config", `${ROOT}deno.json`, `${dir}/logging.ts`],
      env: { PROCMONITOR_SYSLOG_SOCKET: socket },
      stdin: "null",
      signal: AbortSignal.timeout(20_000),
    }).output();
    const text = new TextDecoder();
    const stderr = text.decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    const took = Number(text.decode(out.stdout).trim());
    assert.ok(took < SYSLOG_CLOSE_MS + 1000, `closing the logs took ${took} ms`);
    assert.match(
      stderr,
      /^procMonitor: at least \d+ log messages were not passed to syslog, as it did not take them within 2000 ms\n$/,
    );
  } finally {
    daemon.kill();
    await daemon.status;
    await Deno.remove(dir, { recursive: true });
  }
});
