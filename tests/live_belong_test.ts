/**
 * Live tests of where a process belongs and where it comes from: real cgroups made for the
 * test (a systemd-like service, a docker-like scope), a known chain of parents, a known cwd
 * and environment, the real connector and the real program.
 *
 * The service goes into the cgroup v2 hierarchy; the container scope into systemd's v1
 * hierarchy (name=systemd) where the machine has one (a hybrid layout), so both of the
 * snapshot's choices are taken; on a v2-only machine both go into v2. Only the cgroups made
 * here are removed again.
 */
import assert from "node:assert/strict";
import type { ExecEvent, ExitEvent, ProcEvent } from "../lib/events/event.ts";
import { liveTest, MonitorProcess } from "./support/live.ts";

/** Mount points of the v2 hierarchy and of systemd's v1 one, from /proc/mounts. */
function hierarchies(): { v2: string | null; systemd: string | null } {
  let v2: string | null = null;
  let systemd: string | null = null;
  for (const line of Deno.readTextFileSync("/proc/mounts").split("\n")) {
    const [, dir, type, options] = line.split(" ");
    if (type === "cgroup2") v2 ??= dir;
    else if (type === "cgroup" && options.split(",").includes("name=systemd")) systemd ??= dir;
  }
  return { v2, systemd };
}

/** A cgroup made for the test: `path` as /proc/PID/cgroup shows it, under mount `root`. */
class TestCgroup {
  readonly #dirs: string[];
  constructor(readonly root: string, readonly path: string) {
    const parts = path.split("/").filter((p) => p !== "");
    this.#dirs = parts.map((_, i) => `${root}/${parts.slice(0, i + 1).join("/")}`);
    for (const dir of this.#dirs) Deno.mkdirSync(dir);
  }
  get procs(): string {
    return `${this.#dirs.at(-1)}/cgroup.procs`;
  }
  /** Removes what the constructor made, deepest first; only empty cgroups can go. */
  remove(): void {
    for (const dir of this.#dirs.toReversed()) {
      try {
        Deno.removeSync(dir);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
    }
  }
}

/** The exact cmdlines of a chain parent (sh) → middle (sh, moves itself) → marker (sh). */
interface Chain {
  parent: string;
  middle: string;
  marker: string;
  status: number;
}

/** The middle shell: moves itself into $1, changes into $2, starts the marker $3. */
const MIDDLE =
  `echo $$ > "$1" && cd "$2" && PMTEST_VAR='a b=c' /bin/sh -c '${"i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 3"}' "$3"; :
`;

/**
 * Runs the chain: the parent shell (named `parentName`) starts the middle shell
 * (`middleFile`, {@link MIDDLE}), which moves itself into `procs`, changes into `dir` and
 * starts the marker with PMTEST_VAR set; the marker counts for a while and exits 3.
 */
async function runChain(
  parentName: string,
  middleFile: string,
  procs: string,
  dir: string,
  mark: string,
): Promise<Chain> {
  const middle = ["sh", middleFile, procs, dir, mark].join(" ");
  const parent = `${middle}; :`;
  const child = new Deno.Command("/bin/sh", {
    args: ["-c", parent, parentName],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const out = await child.output();
  assert.equal(new TextDecoder().decode(out.stderr), "");
  return {
    parent: ["/bin/sh", "-c", parent, parentName].join(" "),
    middle,
    marker: ["/bin/sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 3", mark]
      .join(" "),
    status: out.code,
  };
}

const execOf = (cmdline: string) => (e: ProcEvent): e is ExecEvent =>
  e.event === "exec" && e.cmdline === cmdline;
const exitOf = (cmdline: string) => (e: ProcEvent): e is ExitEvent =>
  e.event === "exit" && e.cmdline === cmdline;

/** This test process as an ancestor: the scan found it. */
function self(): { pid: number; comm: string; cmdline: string } {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
  const raw = Deno.readTextFileSync("/proc/self/cmdline").replace(/\0+$/, "");
  return { pid: Deno.pid, comm, cmdline: raw.replaceAll("\0", " ") };
}

liveTest(
  "a marker in a service cgroup and one in a container scope carry unit, container, cwd, env and ancestors; the filters select them",
  async () => {
    const { v2, systemd } = hierarchies();
    assert.ok(v2 !== null || systemd !== null, "no cgroup v2 or name=systemd hierarchy mounted");
    const id = crypto.randomUUID().slice(0, 8);
    const hex = Array.from(crypto.getRandomValues(new Uint8Array(32)))
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    const slice = `/pmtest-${id}.slice`;
    const parentName = `pmtest-parent-${id}`;
    const cwd = await Deno.makeTempDir({ prefix: `pmtest-cwd-${id}-` });
    const cgroups: TestCgroup[] = [];
    try {
      const service = new TestCgroup((v2 ?? systemd)!, `${slice}/pmtest.service`);
      cgroups.push(service);
      const scope = new TestCgroup(
        (systemd ?? v2)!,
        `/pmtest-${id}-c.slice/docker-${hex}.scope`,
      );
      cgroups.push(scope);

      const start = (args: string[]) => MonitorProcess.start(["-d", ...args]);
      const [all, unit, cgroup, container, under, notUnder, bare] = await Promise.all([
        start([
          "--cgroup-info",
          "--cwd",
          "--ancestry",
          "3",
          "--env",
          "PMTEST_VAR,PMTEST_UNSET",
          "--match",
          id,
        ]),
        start(["-e", "exec,exit", "--unit", "pmtest*.service"]),
        start(["-e", "exec,exit", "--cgroup", slice]),
        start(["-e", "exec,exit", "--container"]),
        start(["-e", "exec,exit", "--ancestor", ` ${parentName}$`]),
        start(["-e", "exec,exit", "--not-ancestor", ` ${parentName}$`]),
        start(["-e", "exec,exit", "--match", id]),
      ]);
      await using _a = all;
      await using _u = unit;
      await using _g = cgroup;
      await using _c = container;
      await using _y = under;
      await using _n = notUnder;
      await using _b = bare;

      // Each filter's excluded marker runs before its included one: once the included exit
      // is there, the excluded events, earlier in kernel order, would have been too.
      const script = `${cwd}/middle.sh`;
      await Deno.writeTextFile(script, MIDDLE);
      const other = `pmtest-other-${id}`;
      const first = await runChain(other, script, scope.procs, cwd, `pmtest-c1-${id}`);
      const svc = await runChain(parentName, script, service.procs, cwd, `pmtest-svc-${id}`);
      const last = await runChain(other, script, scope.procs, cwd, `pmtest-c2-${id}`);
      for (const chain of [first, svc, last]) assert.equal(chain.status, 0);

      // Every field, exactly, on the service marker's exec and exit.
      const exec = await all.waitFor("the service marker's exec", execOf(svc.marker));
      const exit = await all.waitFor("the service marker's exit", exitOf(svc.marker));
      const middle = await all.waitFor("the middle shell's exec", execOf(svc.middle));
      const parent = await all.waitFor("the parent shell's exec", execOf(svc.parent));
      const ancestors = [
        { pid: middle.pid, comm: "sh", cmdline: svc.middle },
        { pid: parent.pid, comm: "sh", cmdline: svc.parent },
        self(),
      ];
      const path = `${slice}/pmtest.service`;
      assert.equal(exec.ppid, middle.pid);
      assert.deepEqual(
        [exec.cgroup, exec.unit, exec.container_id, exec.cwd, exec.env, exec.env_truncated],
        [path, "pmtest.service", undefined, cwd, { PMTEST_VAR: "a b=c" }, undefined],
      );
      assert.deepEqual(exec.ancestors, ancestors);
      assert.equal(exit.pid, exec.pid);
      assert.equal(exit.exit_status, 3);
      assert.deepEqual([exit.cgroup, exit.unit, exit.container_id], [
        path,
        "pmtest.service",
        undefined,
      ]);
      assert.deepEqual(exit.ancestors, ancestors);
      assert.equal("cwd" in exit || "env" in exit, false);

      // The container marker: its id, its scope as unit, the other parent.
      const cExec = await all.waitFor("the container marker's exec", execOf(last.marker));
      const cExit = await all.waitFor("the container marker's exit", exitOf(last.marker));
      const scopePath = `/pmtest-${id}-c.slice/docker-${hex}.scope`;
      for (const e of [cExec, cExit]) {
        assert.deepEqual(
          [e.cgroup, e.unit, e.container_id],
          [scopePath, `docker-${hex}.scope`, hex],
        );
        assert.equal(e.ancestors?.[1].cmdline, last.parent);
      }

      // The filters: each sees its marker and not the other.
      const sees = async (m: MonitorProcess, chain: Chain, what: string) => {
        await m.waitFor(`${what}: the exec`, execOf(chain.marker));
        await m.waitFor(`${what}: the exit`, exitOf(chain.marker));
      };
      const never = (m: MonitorProcess, chain: Chain, what: string) =>
        assert.equal(
          m.events.find((e) => "cmdline" in e && e.cmdline === chain.marker),
          undefined,
          `${what} let through ${chain.marker}`,
        );
      await sees(unit, svc, "--unit");
      never(unit, first, "--unit");
      await sees(cgroup, svc, "--cgroup");
      never(cgroup, first, "--cgroup");
      await sees(under, svc, "--ancestor");
      never(under, first, "--ancestor");
      await sees(container, last, "--container");
      never(container, svc, "--container");
      await sees(notUnder, last, "--not-ancestor");
      never(notUnder, svc, "--not-ancestor");

      // By default none of the reads: neither the cgroup's fields nor cwd, on exec or exit.
      const bareExec = await bare.waitFor("by default: the exec", execOf(svc.marker));
      const bareExit = await bare.waitFor("by default: the exit", exitOf(svc.marker));
      for (const e of [bareExec, bareExit]) {
        assert.deepEqual(
          ["cgroup", "unit", "container_id", "cwd", "env"].filter((key) => key in e),
          [],
        );
      }

      for (const m of [all, unit, cgroup, container, under, notUnder, bare]) {
        const done = await m.stop();
        assert.equal(done.code, 0, done.stderr);
      }
    } finally {
      for (const c of cgroups) c.remove();
      await Deno.remove(cwd, { recursive: true });
    }
  },
);

/** Burns 0.35 s of CPU holding 100 MiB it has touched, then exits 0; argv[1] is the mark. */
const HUNGRY = `import time
b = bytearray(100 << 20)
for i in range(0, len(b), 4096): b[i] = 1
t = time.process_time()
while time.process_time() - t < 0.35: pass
`;

/** The middle shell: moves itself into $1, changes into $2, runs $3 $4 $5 as a child. */
const HUNGRY_MIDDLE = `echo $$ > "$1" && cd "$2" && "$3" "$4" "$5"; :
`;

/** The Python interpreter itself, not a shim that execs it (pyenv's would add execs). */
async function python(): Promise<string> {
  const out = await new Deno.Command("python3", {
    args: ["-c", "import sys; print(sys.executable)"],
    stderr: "inherit",
  }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

liveTest(
  "a marker that burns CPU and memory in a service cgroup under a known chain: its exec and exit carry unit, ancestors, cwd and usage, and --unit selects it",
  async () => {
    const { v2, systemd } = hierarchies();
    assert.ok(v2 !== null || systemd !== null, "no cgroup v2 or name=systemd hierarchy mounted");
    const id = crypto.randomUUID().slice(0, 8);
    const cwd = await Deno.makeTempDir({ prefix: `pmtest-cwd-${id}-` });
    const service = new TestCgroup((v2 ?? systemd)!, `/pmtest-${id}.slice/pmtest.service`);
    try {
      await using all = await MonitorProcess.start([
        "-d",
        "--cwd",
        "--ancestry",
        "2",
        "--unit",
        "pmtest.service",
      ]);
      const [script, middleFile] = [`${cwd}/hungry.py`, `${cwd}/middle.sh`];
      await Deno.writeTextFile(script, HUNGRY);
      await Deno.writeTextFile(middleFile, HUNGRY_MIDDLE);
      const py = await python();
      const middle = ["sh", middleFile, service.procs, cwd, py, script, `hungry-${id}`].join(" ");
      const parent = `${middle}; :`;
      const run = await new Deno.Command("/bin/sh", {
        args: ["-c", parent, `pmtest-parent-${id}`],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).output();
      assert.equal(new TextDecoder().decode(run.stderr), "");
      assert.equal(run.code, 0);

      const marker = `${py} ${script} hungry-${id}`;
      const exec = await all.waitFor("the hungry marker's exec", execOf(marker));
      const exit = await all.waitFor("the hungry marker's exit", exitOf(marker));
      assert.equal(exec.unit, "pmtest.service");
      assert.equal(exec.cwd, cwd);
      // The middle shell moved itself into the service before it started the marker, so it is
      // in the table; the parent shell is not (outside the unit), but ancestry needs no filter.
      assert.deepEqual(exec.ancestors?.map((a) => a.cmdline), [
        middle,
        `/bin/sh -c ${parent} pmtest-parent-${id}`,
      ]);
      assert.equal(exit.pid, exec.pid);
      assert.equal(exit.unit, "pmtest.service");
      assert.deepEqual(exit.ancestors, exec.ancestors);
      assert.equal(exit.exit_status, 0);
      assert.ok(exit.cpu_user_s! + exit.cpu_sys_s! >= 0.25, `cpu ${exit.cpu_user_s}`);
      assert.ok(exit.max_rss_kb! >= 100 * 1024, `max_rss_kb ${exit.max_rss_kb}`);
      // --unit let nothing from outside the service through.
      assert.deepEqual(all.events.filter((e) => e.event !== "lost" && !("unit" in e)), []);
      assert.deepEqual(all.events.filter((e) => "unit" in e && e.unit !== "pmtest.service"), []);
      const done = await all.stop();
      assert.equal(done.code, 0, done.stderr);
    } finally {
      service.remove();
      await Deno.remove(cwd, { recursive: true });
    }
  },
);
