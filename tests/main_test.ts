/**
 * The program as a user runs it: exit codes and messages for bad command lines. These need
 * no privilege: usage errors are found before the kernel is touched.
 */
import assert from "node:assert/strict";
import { runMain } from "./support/live.ts";
import { kernelHasFilter, kernelLine, libraryLine } from "../lib/cli/version.ts";

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
  assert.match(out.stdout, /^procMonitor \d+\.\d+\.\d+\n/);
  assert.equal(out.stderr, "");
});

Deno.test("procMonitor --version prints Deno's, libprocconn's and the kernel's lines", async () => {
  const denoJson = JSON.parse(Deno.readTextFileSync(new URL("../deno.json", import.meta.url)));
  const header = Deno.readTextFileSync(new URL("../native/procconn.h", import.meta.url));
  const native = /#define PC_VERSION "([^"]+)"/.exec(header)?.[1];
  const filter = kernelHasFilter(Deno.osRelease()) ? "available" : "not available";
  for (const args of [["--version"], ["-V"], ["client", "-V"]]) {
    const out = await runMain(args);
    assert.equal(out.code, 0, out.stderr);
    const lines = out.stdout.split("\n");
    assert.deepEqual(lines.slice(0, 3), [
      `procMonitor ${denoJson.version}`,
      `Deno ${Deno.version.deno}`,
      `libprocconn ${native}`,
    ]);
    assert.match(lines[3], new RegExp(`^kernel \\S+: event filter ${filter}\\b`));
    assert.equal(lines.length, 5);
  }
  // Without the library, the line says so and --version still succeeds.
  const out = await runMain(["--version"], { env: { PROCMONITOR_LIB: "/nonexistent/lib.so" } });
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout, /\nlibprocconn not loaded: .*\/nonexistent\/lib\.so.*\nkernel /);
});

Deno.test("kernelLine() says whether the event filter (Linux 6.6+) is there", () => {
  assert.equal(kernelLine("6.18.44-fc-v657"), "kernel 6.18.44-fc-v657: event filter available");
  assert.equal(kernelLine("6.6.0"), "kernel 6.6.0: event filter available");
  assert.equal(kernelLine("7.0.1"), "kernel 7.0.1: event filter available");
  assert.match(
    kernelLine("6.1.0-28-amd64"),
    /^kernel 6\.1\.0-28-amd64: event filter not available/,
  );
  assert.match(kernelLine("5.15.0"), /not available \(needs Linux 6\.6\+/);
  assert.match(kernelLine(""), /^kernel unknown: event filter unknown/);
  assert.equal(libraryLine(() => ({ version: "9.9.9" })), "libprocconn 9.9.9");
  assert.equal(
    libraryLine(() => {
      throw new Error("no such file");
    }),
    "libprocconn not loaded: no such file",
  );
});

Deno.test("procMonitor --user with an unknown name exits 2 naming it", async () => {
  const out = await runMain(["-d", "--user", "no-such-user-xyz"]);
  assert.equal(out.code, 2, out.stderr);
  assert.match(out.stderr, /--user.*"no-such-user-xyz"/);
});

Deno.test("make compile says in one sentence when denort is missing", async () => {
  const root = new URL("../", import.meta.url).pathname;
  const built = `${root}dist/procMonitor`;
  const exists = (path: string) => {
    try {
      Deno.statSync(path);
      return true;
    } catch {
      return false;
    }
  };
  const before = exists(built);
  const tmp = await Deno.makeTempDir();
  const run = async (env: Record<string, string>, make = false) => {
    const out = await new Deno.Command(make ? "make" : "bash", {
      args: make ? ["-s", "compile"] : ["scripts/compile.sh"],
      cwd: root,
      env: { TMPDIR: tmp, ...env },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  };
  try {
    const named = await run({ DENORT_BIN: "/nonexistent/denort" });
    assert.equal(named.code, 1);
    assert.equal(
      named.stderr,
      "procMonitor: cannot compile as DENORT_BIN (/nonexistent/denort) is not an executable file\n",
    );

    // The full deno is no denort: its result would open a REPL.
    const deno = Deno.execPath();
    const full = await run({ DENORT_BIN: deno }, true);
    assert.notEqual(full.code, 0);
    assert.equal(
      full.stderr.split("\n")[0],
      `procMonitor: cannot compile as DENORT_BIN (${deno}) is the full deno, not the denort ` +
        `${Deno.version.deno} base binary (a program built on it would open a REPL)`,
    );
    assert.equal(exists(built), before);

    // Nor is any other executable: the result is run once before it reaches dist/.
    const other = await run({ DENORT_BIN: "/bin/true" });
    assert.equal(other.code, 1);
    assert.match(other.stderr, /^procMonitor: cannot compile as .*\/bin\/true.*DENORT_BIN.*\n$/);
    assert.equal(exists(built), before);

    // Without DENORT_BIN, deno compile fetches denort: here (no internet) one sentence and no
    // file; with internet, a working binary.
    const emptyCache = await Deno.makeTempDir({ dir: tmp });
    const plain = await run({ DENORT_BIN: "", DENO_DIR: emptyCache }, true);
    if (plain.code === 0) {
      assert.match(plain.stderr, /Built dist\/procMonitor/);
      assert.ok(exists(built));
    } else {
      assert.match(
        plain.stderr.split("\n")[0],
        /^procMonitor: cannot compile as deno compile could not download its denort [\d.]+ base binary .*DENORT_BIN/,
      );
      assert.equal(exists(built), before);
    }
    await Deno.remove(emptyCache, { recursive: true });
    // No partial output was left behind in the temporary directory either.
    assert.deepEqual([...Deno.readDirSync(tmp)], []);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
