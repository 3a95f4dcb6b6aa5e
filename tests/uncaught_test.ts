import assert from "node:assert/strict";

const UNCAUGHT = new URL("../lib/uncaught.ts", import.meta.url).href;

/** Runs a Deno script (imports of lib/uncaught.ts resolved) and returns its exit and output. */
export async function runScript(body: string): Promise<{ code: number; out: string; err: string }> {
  const script = `import { exitOnUncaught, tolerateUncaught } from "${UNCAUGHT}";\n${body}`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = out.stdin.getWriter();
  await writer.write(new TextEncoder().encode(script));
  await writer.close();
  const done = await out.output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: done.code, out: text(done.stdout), err: text(done.stderr) };
}

Deno.test("exitOnUncaught() turns an uncaught error into one stderr line and exit 1", async () => {
  const r = await runScript(
    `exitOnUncaught(); setTimeout(() => { throw new Error("boom"); }, 10); setTimeout(() => console.log("alive"), 500);`,
  );
  assert.equal(r.code, 1);
  assert.equal(r.out, "");
  assert.match(r.err, /^procMonitor: stopped on an unexpected error: Error: boom\n/);
});

Deno.test("exitOnUncaught() turns an unhandled rejection into exit 1 too", async () => {
  const r = await runScript(
    `exitOnUncaught(); Promise.reject(new Error("nobody waits")); setTimeout(() => console.log("alive"), 500);`,
  );
  assert.equal(r.code, 1);
  assert.match(r.err, /^procMonitor: stopped on an unexpected error: Error: nobody waits\n/);
});

Deno.test("tolerateUncaught() lets only the errors it names pass", async () => {
  const r = await runScript(
    `exitOnUncaught();
tolerateUncaught((e) => e instanceof Error && e.message === "harmless");
setTimeout(() => { throw new Error("harmless"); }, 10);
setTimeout(() => console.log("alive"), 100);
setTimeout(() => { throw new Error("fatal"); }, 200);`,
  );
  assert.equal(r.out, "alive\n");
  assert.equal(r.code, 1);
  assert.match(r.err, /^procMonitor: stopped on an unexpected error: Error: fatal\n/);
});
