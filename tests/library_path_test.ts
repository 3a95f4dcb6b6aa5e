/**
 * The native library is found next to the sources wherever they are, even under a path
 * that a URL spells differently (a space is `%20` in a URL).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** Loads the library from the copy's sources; prints "loaded" or why not. */
const PROBE = `
import { NativeError, ProcConnector } from "./lib/kernel/ffi.ts";
try {
  const opts = { eventMask: 0x2, ringBytes: 65536, realtime: false, ackTimeoutMs: 2000 };
  await (await ProcConnector.open(opts)).close();
  console.log("loaded");
} catch (error) {
  // Loaded, but the connector is out of reach here (not root): the path was right.
  console.log(error instanceof NativeError ? "loaded" : String(error));
}
`;

/** Copies the files under `from` to `to`, subfolders included. */
async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to);
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyTree(`${from}/${e.name}`, `${to}/${e.name}`);
    else if (e.isFile) await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}

Deno.test("the library is found in a copy of the sources whose path has a space", async () => {
  const copy = await Deno.makeTempDir({ prefix: "pm sources with spaces " });
  try {
    await copyTree(`${ROOT}lib`, `${copy}/lib`);
    await Deno.mkdir(`${copy}/native`);
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
