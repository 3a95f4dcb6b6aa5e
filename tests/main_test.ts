/**
 * The program as a user runs it: exit codes and messages for bad command lines. These need
 * no privilege: usage errors are found before the kernel is touched.
 */
import assert from "node:assert/strict";
import { runMain } from "./support/live.ts";

const cases: [string[], RegExp][] = [
  [["-e", "bogus"], /"bogus".*-e\/--events/],
  [["-c", "0"], /-c\/--clients.*"0"/],
  [["--tcp", "99999"], /-t\/--tcp.*"99999"/],
  [["--tcp", "8080"], /--tcp needs a password/],
  [["--frobnicate"], /--frobnicate/],
  [["--format", "xml", "-d"], /--format.*"xml"/],
];

for (const [args, message] of cases) {
  Deno.test(`procMonitor ${args.join(" ")} exits 2 naming the flag`, async () => {
    const out = await runMain(args);
    assert.equal(out.code, 2, out.stderr);
    assert.match(out.stderr, message);
    assert.match(
      out.stderr,
      /^procMonitor: .*\nTry 'procMonitor --help' for more information\.\n$/,
    );
    assert.equal(out.stdout, "");
  });
}

Deno.test("procMonitor --help prints the usage on stdout and exits 0", async () => {
  const out = await runMain(["--help"]);
  assert.equal(out.code, 0);
  assert.match(out.stdout, /--events/);
  assert.match(out.stdout, /--direct/);
  assert.equal(out.stderr, "");
});

Deno.test("procMonitor --version prints the version", async () => {
  const out = await runMain(["--version"]);
  assert.equal(out.code, 0);
  assert.match(out.stdout, /^procMonitor \d+\.\d+\.\d+\n$/);
});

Deno.test("procMonitor --user with an unknown name exits 2 naming it", async () => {
  const out = await runMain(["-d", "--user", "no-such-user-xyz"]);
  assert.equal(out.code, 2, out.stderr);
  assert.match(out.stderr, /--user.*"no-such-user-xyz"/);
});

Deno.test("make compile says in one sentence when denort is missing", async () => {
  const root = new URL("../", import.meta.url).pathname;
  const run = (env: Record<string, string>) =>
    new Deno.Command("bash", {
      args: ["scripts/compile.sh"],
      cwd: root,
      env,
      stdout: "piped",
      stderr: "piped",
    })
      .output();
  const named = await run({ DENORT_BIN: "/nonexistent/denort" });
  assert.equal(named.code, 1);
  assert.equal(
    new TextDecoder().decode(named.stderr),
    "procMonitor: cannot compile as DENORT_BIN (/nonexistent/denort) is not an executable file\n",
  );
  const emptyCache = await Deno.makeTempDir();
  try {
    const none = await run({ DENORT_BIN: "", DENO_DIR: emptyCache, ALLOW_DENORT_DOWNLOAD: "" });
    assert.equal(none.code, 1);
    assert.match(
      new TextDecoder().decode(none.stderr),
      /^procMonitor: cannot compile as deno compile needs its denort [\d.]+ base binary, .*DENORT_BIN.*\n$/,
    );
  } finally {
    await Deno.remove(emptyCache, { recursive: true });
  }
});
