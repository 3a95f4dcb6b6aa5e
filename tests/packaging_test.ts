/**
 * Packaging (README, "Install"): the systemd unit, `make deb` and `make install`.
 *
 * These need root and Debian's tools (systemd-analyze from systemd, dpkg-deb, dpkg, lintian).
 * Where those are missing the tests are skipped with a loud warning, except under CI (the CI
 * variable set), where they fail. The extracted-package test also needs the proc connector
 * (a live test, tests/support/live.ts).
 */
import assert from "node:assert/strict";
import type { ExecEvent, ProcEvent } from "../lib/events/event.ts";
import { liveTest, marker, MonitorProcess, run } from "./support/live.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TOOLS = ["systemd-analyze", "dpkg-deb", "dpkg", "lintian", "make"];

async function which(tool: string): Promise<boolean> {
  const out = await new Deno.Command("sh", { args: ["-c", `command -v ${tool}`] }).output();
  return out.success;
}

const missing = [
  ...(Deno.uid() === 0 ? [] : ["root"]),
  ...(await Promise.all(TOOLS.map(async (t) => (await which(t)) ? [] : [t]))).flat(),
];
const inCi = (Deno.env.get("CI") ?? "") !== "" && Deno.env.get("CI") !== "false";
if (missing.length > 0 && !inCi) {
  console.warn(
    `\n!!! SKIPPING PACKAGING TESTS: missing ${missing.join(", ")}. ` +
      `Run as root with systemd, dpkg-dev and lintian installed to include them.\n`,
  );
}

function packagingTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name,
    ignore: missing.length > 0 && !inCi,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      if (missing.length > 0) throw new Error(`CI is set but missing: ${missing.join(", ")}`);
      await fn();
    },
  });
}

interface Out {
  ok: boolean;
  code: number;
  stdout: string;
  stderr: string;
}

async function sh(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; clearEnv?: boolean } = {},
): Promise<Out> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: options.cwd ?? ROOT,
    env: options.env,
    clearEnv: options.clearEnv,
    stdin: "null",
  }).output();
  const text = new TextDecoder();
  return {
    ok: out.success,
    code: out.code,
    stdout: text.decode(out.stdout),
    stderr: text.decode(out.stderr),
  };
}

async function must(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await sh(cmd, args, { cwd });
  assert.ok(out.ok, `${cmd} ${args.join(" ")} failed (${out.code}):\n${out.stdout}${out.stderr}`);
  return out.stdout;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/**
 * A directory holding only the tools the launcher uses (sh, dirname, readlink), so that
 * neither deno nor node can be found on a PATH made of it; checked with `command -v`.
 */
async function bareBin(): Promise<string> {
  const bin = await Deno.makeTempDir({ prefix: "procmonitor-bin-" });
  for (const tool of ["sh", "dirname", "readlink"]) {
    await Deno.symlink(await Deno.realPath(`/usr/bin/${tool}`), `${bin}/${tool}`);
  }
  for (const tool of ["deno", "node"]) {
    const found = await sh("/bin/sh", ["-c", `command -v ${tool}`], {
      clearEnv: true,
      env: { PATH: bin },
    });
    assert.ok(!found.ok, `${tool} is on the bare PATH: ${found.stdout}`);
  }
  return bin;
}

let deb: Promise<string> | null = null;
/** Builds the package once (make -s deb) and returns its path. */
function buildDeb(): Promise<string> {
  deb ??= (async () => {
    const out = await must("make", ["-s", "deb"]);
    const path = out.trim().split("\n").at(-1)!;
    const version = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).version;
    const arch = (await must("dpkg", ["--print-architecture"])).trim();
    assert.equal(path, `dist/procmonitor_${version}_${arch}.deb`);
    return `${ROOT}${path}`;
  })();
  return deb;
}

packagingTest(
  "the systemd unit passes systemd-analyze verify with exposure at most 3.0",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "procmonitor-unit-" });
    try {
      // verify wants ExecStart's binary to exist: a copy of the unit points at /bin/true.
      const unit = await Deno.readTextFile(`${ROOT}packaging/procmonitor.service`);
      assert.match(unit, /^ExecStart=\/usr\/bin\/procMonitor \$PROCMONITOR_ARGS$/m);
      assert.doesNotMatch(unit, /^MemoryDenyWriteExecute=/m, "V8's JIT needs W+X mappings");
      const copy = `${dir}/procmonitor.service`;
      await Deno.writeTextFile(
        copy,
        unit.replace(/^ExecStart=\/usr\/bin\/procMonitor/m, "ExecStart=/bin/true"),
      );
      const verify = await sh("systemd-analyze", ["verify", "--man=no", copy]);
      assert.ok(verify.ok, `systemd-analyze verify:\n${verify.stdout}${verify.stderr}`);
      assert.equal(verify.stderr.trim(), "", "verify is silent on a good unit");
      const security = await sh("systemd-analyze", ["security", "--offline=true", copy]);
      const level = security.stdout.match(/Overall exposure level for \S+: ([0-9.]+) (\S+)/);
      assert.ok(level, `no exposure level in:\n${security.stdout}${security.stderr}`);
      console.log(`systemd-analyze security: exposure ${level[1]} ${level[2]}`);
      assert.ok(Number(level[1]) <= 3.0, `exposure ${level[1]} is above 3.0`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

liveTest("the socket is 0666 even under the unit's UMask=0077", async () => {
  const dir = await Deno.makeTempDir({ prefix: "procmonitor-umask-" });
  try {
    const socket = `${dir}/procMonitor.sock`;
    await using monitor = await MonitorProcess.start(["-s", socket], {}, {
      argv: [
        "/bin/sh",
        "-c",
        'umask 077; exec "$0" "$@"',
        Deno.execPath(),
        "run",
        "-q",
        "-A",
        `${ROOT}main.ts`,
      ],
      cwd: ROOT,
    });
    assert.equal((await Deno.stat(socket)).mode! & 0o777, 0o666);
    const done = await monitor.stop();
    assert.equal(done.code, 0, done.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

packagingTest("make deb builds a package lintian passes without errors", async () => {
  const path = await buildDeb();
  const info = await must("dpkg-deb", ["--field", path, "Depends", "Recommends", "Package"]);
  assert.match(info, /^Depends: libc6 \(>= 2\.34\)$/m, "the package depends on libc6 only");
  // libprocconn opens libbpf.so.1 itself when it is there (the exec BPF program).
  assert.match(info, /^Recommends: libbpf1$/m);
  const conffiles = await must("dpkg-deb", ["--ctrl-tarfile", path]);
  assert.ok(conffiles.length > 0);
  const lintian = await sh("lintian", [path]);
  const errors = lintian.stdout.split("\n").filter((l) => l.startsWith("E: "));
  assert.deepEqual(errors, [], lintian.stdout);
  const contents = await must("dpkg-deb", ["--contents", path]);
  for (
    const want of [
      /^-rwxr-xr-x root\/root .* \.\/usr\/bin\/procMonitor$/m,
      /^-rwxr-xr-x root\/root .* \.\/usr\/lib\/procmonitor\/deno$/m,
      / \.\/usr\/lib\/procmonitor\/main\.ts$/m,
      / \.\/usr\/lib\/procmonitor\/native\/libprocconn\.so$/m,
      / \.\/usr\/lib\/procmonitor\/deno_dir\/npm\/registry\.npmjs\.org\/@logtape\/logtape\//m,
      / \.\/lib\/systemd\/system\/procmonitor\.service$/m,
      / \.\/usr\/share\/man\/man8\/procMonitor\.8\.gz$/m,
      / \.\/etc\/default\/procmonitor$/m,
      /^-rw------- root\/root .* \.\/etc\/procmonitor\/auth$/m,
      / \.\/usr\/share\/doc\/procmonitor\/copyright$/m,
    ]
  ) assert.match(contents, want);
});

liveTest("the unpacked .deb runs with no deno or node on PATH and reports an exec", async () => {
  const path = await buildDeb();
  const dir = await Deno.makeTempDir({ prefix: "procmonitor-deb-" });
  const bin = await bareBin();
  try {
    await must("dpkg-deb", ["-x", path, dir]);
    // First read-only, as under the unit's ProtectSystem=strict: nothing needs writing.
    const ro = await sh("/usr/bin/unshare", [
      "-m",
      "/bin/sh",
      "-c",
      'mount --bind -o ro "$0" "$0" && exec /usr/bin/env -i PATH="$1" "$0/usr/bin/procMonitor" -V',
      dir,
      bin,
    ]);
    assert.ok(ro.ok, `read-only run: ${ro.stdout}${ro.stderr}`);
    assert.match(ro.stdout, /^procMonitor \d/m);
    // The launcher finds the program relative to itself: the unpacked copy runs as is.
    await using monitor = await MonitorProcess.start(["-d", "-e", "exec"], {}, {
      argv: ["/usr/bin/env", "-i", `PATH=${bin}`, "NO_COLOR=1", `${dir}/usr/bin/procMonitor`],
      cwd: dir,
    });
    const m = marker("deb");
    const child = await run("/bin/sh", ["-c", "sleep 0.1", m]);
    const exec = await monitor.waitFor(
      "the marker's exec",
      (e: ProcEvent): e is ExecEvent => e.event === "exec" && e.cmdline.includes(m),
    );
    assert.equal(exec.pid, child.pid);
    const done = await monitor.stop();
    assert.equal(done.code, 0, done.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(bin, { recursive: true });
  }
});

packagingTest("dpkg -i installs the package and dpkg --purge leaves nothing behind", async () => {
  const already = await sh("dpkg-query", ["-W", "-f=${Status}", "procmonitor"]);
  if (already.ok && already.stdout.includes("installed")) {
    throw new Error("procmonitor is already installed here; not touching it");
  }
  const path = await buildDeb();
  try {
    await must("dpkg", ["-i", path]);
    const files = (await must("dpkg", ["-L", "procmonitor"])).split("\n")
      .filter((f) => f.startsWith("/"));
    assert.ok(files.includes("/usr/bin/procMonitor"));
    assert.ok(files.includes("/etc/procmonitor/auth"));
    assert.equal((await Deno.stat("/etc/procmonitor/auth")).mode! & 0o777, 0o600);
    // The postinst compiled the program into Deno's caches where the unit keeps them (its
    // CacheDirectory: /usr is read-only there), the shipped npm packages linked in.
    const cache = "/var/cache/procmonitor/deno";
    assert.ok(await exists(`${cache}/gen/file/usr/lib/procmonitor`), "no transpiled sources");
    assert.ok(await exists(`${cache}/v8_code_cache_v2`), "no V8 code cache");
    assert.equal(await Deno.readLink(`${cache}/npm`), "/usr/lib/procmonitor/deno_dir/npm");
    const help = await sh("/usr/bin/procMonitor", ["--help"]);
    assert.ok(help.ok, help.stderr);
    assert.match(help.stdout, /^Usage:/m);
    await must("dpkg", ["--purge", "procmonitor"]);
    // Shared directories (/usr/bin, /etc/default, ...) stay; everything of ours is gone.
    const shared = new Set(
      files.filter((f) => !f.includes("procmonitor") && !f.includes("procMonitor")),
    );
    const left = [];
    for (const f of files) if (!shared.has(f) && await exists(f)) left.push(f);
    assert.deepEqual(left, []);
    assert.ok(!await exists("/etc/procmonitor"));
    assert.ok(!await exists("/var/cache/procmonitor"));
    assert.ok(!await exists("/etc/default/procmonitor"));
  } finally {
    await sh("dpkg", ["--purge", "procmonitor"]);
  }
});

packagingTest(
  "make install honours DESTDIR and PREFIX; make uninstall removes it all",
  async () => {
    const dest = await Deno.makeTempDir({ prefix: "procmonitor-destdir-" });
    const bin = await bareBin();
    try {
      const prefix = "/opt/pm";
      const vars = [`DESTDIR=${dest}`, `PREFIX=${prefix}`];
      await must("make", ["-s", "install", ...vars]);
      const modes: [string, number][] = [
        [`${prefix}/bin/procMonitor`, 0o755],
        [`${prefix}/lib/procmonitor/deno`, 0o755],
        [`${prefix}/lib/procmonitor/main.ts`, 0o644],
        [`${prefix}/lib/procmonitor/native/libprocconn.so`, 0o644],
        [`${prefix}/lib/systemd/system/procmonitor.service`, 0o644],
        [`${prefix}/share/man/man8/procMonitor.8.gz`, 0o644],
        ["/etc/default/procmonitor", 0o644],
        ["/etc/procmonitor/auth", 0o600],
      ];
      for (const [f, mode] of modes) {
        assert.equal((await Deno.stat(`${dest}${f}`)).mode! & 0o7777, mode, f);
      }
      const unit = await Deno.readTextFile(
        `${dest}${prefix}/lib/systemd/system/procmonitor.service`,
      );
      assert.match(unit, new RegExp(`^ExecStart=${prefix}/bin/procMonitor `, "m"));
      const help = await sh(`${dest}${prefix}/bin/procMonitor`, ["--help"], {
        clearEnv: true,
        env: { PATH: bin },
        cwd: "/",
      });
      assert.ok(help.ok, help.stderr);
      assert.match(help.stdout, /^Usage:/m);
      await must("make", ["-s", "uninstall", ...vars]);
      const left = await must("find", [dest, "-mindepth", "1"]);
      assert.equal(left, "");
    } finally {
      await Deno.remove(dest, { recursive: true });
      await Deno.remove(bin, { recursive: true });
    }
  },
);
