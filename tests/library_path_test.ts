/**
 * The native library is found next to the sources wherever they are, even under a path
 * that a URL spells differently (a space is `%20` in a URL).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** Loads the library from the copy's sources; prints "loaded" or why not. */
const PROBE = `
import { NativeError, ProcConnector } from "./lib/ffi.ts";
try {
  const opts = { eventMask: 0x2, ringBytes: 65536, realtime: false, ackTimeoutMs: 2000 };
  await (await ProcConnector.open(opts)).close();
  console.log("loaded");
} catch (error) {
  // Loaded, but the connector is out of reach here (not root): the path was right.
  console.log(error instanceof NativeError ? "loaded" : String(error));
}
`;

Deno.test("the library is found in a copy of the sources whose path has a space", async () => {
  const copy = await Deno.makeTempDir({ prefix: "pm sources with spaces " });
  try {
    await Deno.mkdir(`${copy}/lib`);
    await Deno.mkdir(`${copy}/native`);
    for await (const e of Deno.readDir(`${ROOT}lib`)) {
      if (e.isFile) await Deno.copyFile(`${ROOT}lib/${e.name}`, `${copy}/lib/${e.name}`);
    }
    await Deno.copyFile(`${ROOT}native/libprocconn.so`, `${copy}/native/libprocconn.so`);
    await Deno.writeTextFile(`${copy}/probe.ts`, PROBE);
    const env = Deno.env.toObject();
    delete env.PROCMONITOR_LIB;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-q", "-A", "--no-config", "probe.ts"],
      cwd: copy,
      clearEnv: true,
      env,
      stdin: "null",
    }).output();
    const text = new TextDecoder();
    assert.equal(text.decode(out.stdout).trim(), "loaded", text.decode(out.stderr));
  } finally {
    await Deno.remove(copy, { recursive: true });
  }
});
