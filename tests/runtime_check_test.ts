import assert from "node:assert/strict";
import { runtimeProblem, TESTED_DENO_VERSION } from "../lib/cli/runtime_check.ts";

Deno.test("runtimeProblem() accepts only the tested Deno release", () => {
  assert.equal(runtimeProblem(TESTED_DENO_VERSION), null);
  assert.equal(
    runtimeProblem("2.1.4"),
    "procMonitor runs on Deno 2.9.6, the release it is tested on, not 2.1.4; install it " +
      "with scripts/deno.sh or use the Debian package or the compiled binary, which carry it",
  );
  assert.notEqual(runtimeProblem("2.9.7"), null);
});

Deno.test("scripts/deno.sh installs the release the program requires", async () => {
  const script = await Deno.readTextFile(new URL("../scripts/deno.sh", import.meta.url));
  assert.match(
    script,
    new RegExp(`^DENO_VERSION=${TESTED_DENO_VERSION.replaceAll(".", "\\.")}$`, "m"),
  );
});

Deno.test("the tests themselves run on the tested release", () => {
  assert.equal(Deno.version.deno, TESTED_DENO_VERSION);
});
