/**
 * Pieces of the storm benchmark (scripts/bench.ts): the processes it starts (procMonitor,
 * forkstat, the storm generator), the Unix-socket clients that count what they receive,
 * latency histograms and /proc readings.
 *
 * Everything started here is registered in {@link children} so that the benchmark can kill
 * it on any way out, and every wait is bounded.
 *
 * @module
 */

import { settlesWithin, sleep } from "../lib/timers.ts";

export const ROOT = new URL("../", import.meta.url).pathname;
export const MAIN = `${ROOT}main.ts`;

/** Wall-clock time in microseconds, with microsecond resolution (like procMonitor's). */
export function wallUs(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}

// ---------------------------------------------------------------------------------------
// Processes

/** Something the benchmark started and must stop on the way out. */
interface Owned {
  name: string;
  /** Kills it at once (SIGKILL), without waiting. */
  killNow(): void;
}

/** Everything started and still running; see {@link killAllNow}. */
export const children = new Set<Owned>();

/** Kills every registered process at once (the last resort of every way out). */
export function killAllNow(): void {
  for (const c of children) {
    try {
      c.killNow();
    } catch {
      // Gone already.
    }
  }
  children.clear();
}

function tryKill(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // Already exited.
  }
}

/** CPU time of a process (all its threads), in seconds. */
export interface CpuTimes {
  user: number;
  sys: number;
}

/** CPU time of a process from /proc/PID/stat; null if gone. */
export function cpuTimes(pid: number | "self", clockTicks: number): CpuTimes | null {
  return statTimes(`/proc/${pid}/stat`, clockTicks);
}

/** utime and stime of a /proc/.../stat file, in seconds; null if gone. */
function statTimes(path: string, clockTicks: number): CpuTimes | null {
  const rest = statFields(path);
  if (rest === null) return null;
  return { user: Number(rest[11]) / clockTicks, sys: Number(rest[12]) / clockTicks };
}

/** The fields of a /proc/.../stat file from field 3 (state) on; null if gone. */
function statFields(path: string): string[] | null {
  try {
    const stat = Deno.readTextFileSync(path);
    // The command name (field 2) may contain spaces and parentheses: skip past the last ")".
    return stat.slice(stat.lastIndexOf(")") + 2).trim().split(" ");
  } catch {
    return null;
  }
}

/**
 * Scheduler statistics of a process's main thread (for Deno: the JavaScript thread), in
 * seconds: time on a CPU and time spent runnable but waiting for one.
 */
export interface SchedTimes {
  run: number;
  wait: number;
}

/** /proc/PID/schedstat of the main thread; null if gone or not available. */
export function schedTimes(pid: number | "self"): SchedTimes | null {
  try {
    const [run, wait] = Deno.readTextFileSync(`/proc/${pid}/schedstat`).trim().split(" ");
    return { run: Number(run) / 1e9, wait: Number(wait) / 1e9 };
  } catch {
    return null;
  }
}

/**
 * One thread of a process: its role (see {@link threadTimes}), CPU time, and context
 * switches (voluntary + involuntary, from task/TID/status; NaN when unreadable).
 */
export interface ThreadSample {
  role: string;
  user: number;
  sys: number;
  switches: number;
}

/** Every thread of a process by tid, from /proc/PID/task/TID/{stat,status}; empty if gone. */
export function threadSamples(pid: number | "self", clockTicks: number): Map<number, ThreadSample> {
  const samples = new Map<number, ThreadSample>();
  const self = pid === "self" ? Deno.pid : pid;
  try {
    for (const e of Deno.readDirSync(`/proc/${self}/task`)) {
      const f = statFields(`/proc/${self}/task/${e.name}/stat`);
      if (f === null) continue;
      let status: string;
      try {
        status = Deno.readTextFileSync(`/proc/${self}/task/${e.name}/status`);
      } catch {
        continue; // Exited between the two reads.
      }
      const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, "m").exec(status)?.[1];
      samples.set(Number(e.name), {
        role: threadRole(e.name === String(self), f, field("Name") ?? "?"),
        user: Number(f[11]) / clockTicks,
        sys: Number(f[12]) / clockTicks,
        switches: Number(field("voluntary_ctxt_switches")) +
          Number(field("nonvoluntary_ctxt_switches")),
      });
    }
  } catch {
    // Gone.
  }
  return samples;
}

/** A thread's role from its stat fields (from field 3 on) and name; see threadTimes. */
function threadRole(main: boolean, f: string[], name: string): string {
  if (main) return "main";
  // Field 19 is nice, field 41 the scheduling policy (1 FIFO, 2 RR).
  const nice = Number(f[16]);
  const policy = Number(f[38]);
  if (policy === 1 || policy === 2) return "reader (realtime)";
  if (nice < 0) return `reader (nice ${nice})`;
  return name.trim();
}

/**
 * CPU time of each thread of a process by role: "main" (the thread whose id is the pid;
 * for Deno, the JavaScript thread), "reader" (another thread with a realtime policy or a
 * negative nice value: procMonitor's C reader thread), the others summed by thread name
 * (e.g. Deno's "tokio-runtime-w" pool, which also runs FFI calls made with
 * `nonblocking: true`).
 */
export function threadTimes(pid: number | "self", clockTicks: number): Map<string, CpuTimes> {
  return byRole(threadSamples(pid, clockTicks));
}

function byRole(samples: Map<number, ThreadSample>): Map<string, CpuTimes> {
  const times = new Map<string, CpuTimes>();
  for (const t of samples.values()) {
    const sum = times.get(t.role) ?? { user: 0, sys: 0 };
    sum.user += t.user;
    sum.sys += t.sys;
    times.set(t.role, sum);
  }
  return times;
}

/** A process's CPU, main-thread scheduling and per-thread counters, read together. */
export interface Usage {
  cpu: CpuTimes | null;
  sched: SchedTimes | null;
  tasks: Map<number, ThreadSample>;
}

/** Reads a process's {@link Usage} now. */
export function usage(pid: number | "self", clockTicks: number): Usage {
  return {
    cpu: cpuTimes(pid, clockTicks),
    sched: schedTimes(pid),
    tasks: threadSamples(pid, clockTicks),
  };
}

/** What a process used between two {@link usage} readings, rounded to ms. */
export interface UsageDelta {
  cpuS: number;
  userS: number;
  sysS: number;
  /** Main thread: on a CPU, and runnable but waiting for a CPU. */
  mainRunS: number;
  mainWaitS: number;
  /** CPU seconds by thread role (see {@link threadTimes}); threads that exited meanwhile
   * are in "exited threads". */
  threads: Record<string, { userS: number; sysS: number }>;
  /** Context switches (voluntary + involuntary) of the threads alive at the second
   * reading: since the first reading, or since they started. */
  ctxSwitches: number;
  /** Threads alive at the first reading and gone at the second: /proc no longer shows
   * them, so their switches in between are not in ctxSwitches. */
  threadsExited: number;
}

/** The difference between two {@link usage} readings of the same process. */
export function usageDelta(a: Usage, b: Usage): UsageDelta {
  const d = (x: number | undefined, y: number | undefined) =>
    x === undefined || y === undefined ? NaN : round(y - x, 3);
  const userS = d(a.cpu?.user, b.cpu?.user);
  const sysS = d(a.cpu?.sys, b.cpu?.sys);
  return {
    cpuS: round(userS + sysS, 3),
    userS,
    sysS,
    mainRunS: d(a.sched?.run, b.sched?.run),
    mainWaitS: d(a.sched?.wait, b.sched?.wait),
    threads: roleDelta(byRole(a.tasks), byRole(b.tasks), userS, sysS),
    ...switchDelta(a.tasks, b.tasks),
  };
}

/** CPU by role between two readings; what exited threads used goes to "exited threads". */
function roleDelta(
  a: Map<string, CpuTimes>,
  b: Map<string, CpuTimes>,
  userS: number,
  sysS: number,
): UsageDelta["threads"] {
  const threads: UsageDelta["threads"] = {};
  let user = 0, sys = 0;
  for (const [name, t] of b) {
    const before = a.get(name) ?? { user: 0, sys: 0 };
    const u = Math.max(0, t.user - before.user);
    const s = Math.max(0, t.sys - before.sys);
    user += u;
    sys += s;
    if (u + s > 0) threads[name] = { userS: round(u, 3), sysS: round(s, 3) };
  }
  if (userS - user + sysS - sys > 0.005) {
    threads["exited threads"] = {
      userS: round(Math.max(0, userS - user), 3),
      sysS: round(Math.max(0, sysS - sys), 3),
    };
  }
  return threads;
}

/** Context switches between two readings, by tid (a reused tid counts as a new thread). */
function switchDelta(
  a: Map<number, ThreadSample>,
  b: Map<number, ThreadSample>,
): { ctxSwitches: number; threadsExited: number } {
  let ctxSwitches = 0;
  for (const [tid, t] of b) {
    const before = a.get(tid)?.switches ?? 0;
    ctxSwitches += t.switches >= before ? t.switches - before : t.switches;
  }
  let threadsExited = 0;
  for (const tid of a.keys()) if (!b.has(tid)) threadsExited++;
  return { ctxSwitches, threadsExited };
}

/** Resident memory of a process (VmRSS and VmHWM, KiB); null if gone. */
export function memoryKiB(pid: number): { rssKiB: number; hwmKiB: number } | null {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const field = (name: string) =>
      Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(status)?.[1]);
    return { rssKiB: field("VmRSS"), hwmKiB: field("VmHWM") };
  } catch {
    return null;
  }
}

/** Processes and threads created on the machine since boot (/proc/stat `processes`). */
export function forksSinceBoot(): number {
  try {
    return Number(/^processes (\d+)$/m.exec(Deno.readTextFileSync("/proc/stat"))?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}

/** Processes the storm generator created so far: itself, its workers and their children. */
export const stormForks = { count: 0 };

/** Kernel clock ticks per second (for /proc/PID/stat). */
export async function clockTicks(): Promise<number> {
  try {
    const out = await new Deno.Command("getconf", { args: ["CLK_TCK"], stderr: "null" }).output();
    const n = Number(new TextDecoder().decode(out.stdout).trim());
    if (Number.isFinite(n) && n > 0) return n;
  } catch {
    // Fall through.
  }
  return 100;
}

/** The statistics procMonitor logs when it stops. */
export interface MonitorStats {
  events: number;
  kernelLost: number;
  ringLost: number;
  line: string;
}

/**
 * The V8 flags procMonitor runs with (`make run`, `make compile`): the Makefile exports them
 * as PROCMONITOR_V8_FLAGS; none when that is unset.
 */
export function monitorV8Flags(): string[] {
  const flags = Deno.env.get("PROCMONITOR_V8_FLAGS")?.trim() ?? "";
  return flags === "" ? [] : [`--v8-flags=${flags}`];
}

/** procMonitor run from source with `deno run`, its stderr (the log) collected. */
export class MonitorProcess implements Owned {
  readonly name: string;
  readonly pid: number;
  readonly args: string[];
  readonly #child: Deno.ChildProcess;
  readonly #status: Promise<Deno.CommandStatus>;
  readonly #pump: Promise<void>;
  #stderr = "";
  exited: Deno.CommandStatus | null = null;

  private constructor(name: string, args: string[], child: Deno.ChildProcess) {
    this.name = name;
    this.args = args;
    this.#child = child;
    this.pid = child.pid;
    this.#status = child.status.then((s) => this.exited = s);
    this.#pump = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of child.stderr) {
        this.#stderr += decoder.decode(chunk, { stream: true });
      }
    })().catch(() => {});
    children.add(this);
  }

  /** Everything logged so far. */
  get log(): string {
    return this.#stderr;
  }

  /** Starts procMonitor with `args` and waits (up to `timeoutMs`) until it is monitoring. */
  /** Flags every procMonitor gets besides its own (the bench's `--monitor-flag`). */
  static extraArgs: readonly string[] = [];

  /**
   * Runs `procMonitor --version` once, as the package's postinst does, so that Deno's caches
   * of the program (its transpiled TypeScript, V8's code cache) are written before a
   * measured start: a start that must compile the program peaks about 15 MiB higher, which
   * an installed service never pays (README, Install).
   */
  static async prepareCaches(): Promise<void> {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-q", "-A", ...monitorV8Flags(), MAIN, "--version"],
      cwd: ROOT,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    if (!out.success) {
      throw new Error(`procMonitor --version failed:\n${new TextDecoder().decode(out.stderr)}`);
    }
  }

  static async start(name: string, args: string[], timeoutMs = 30_000): Promise<MonitorProcess> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-q", "-A", ...monitorV8Flags(), MAIN, ...args, ...MonitorProcess.extraArgs],
      cwd: ROOT,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const m = new MonitorProcess(name, args, child);
    if (!await m.waitLog(/Monitoring process events/, timeoutMs)) {
      await m.stop(2000);
      throw new Error(`procMonitor (${name}) did not start within ${timeoutMs} ms:\n${m.log}`);
    }
    return m;
  }

  /** Waits until the log matches `re` (true) or `timeoutMs` passes or it exits (false). */
  async waitLog(re: RegExp, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (re.test(this.#stderr)) return true;
      if (this.exited !== null) return re.test(this.#stderr);
      await sleep(20);
    }
    return re.test(this.#stderr);
  }

  /** How many times the log matches `re` (which must be global). */
  count(re: RegExp): number {
    return this.#stderr.match(re)?.length ?? 0;
  }

  /** CPU and scheduling so far. */
  usage(ticks: number): Usage {
    return usage(this.pid, ticks);
  }

  /** SIGTERM, then SIGKILL after `timeoutMs`; returns the exit status and the stats line. */
  async stop(timeoutMs = 15_000): Promise<{ code: number | null; stats: MonitorStats | null }> {
    if (this.exited === null) {
      tryKill(this.#child, "SIGTERM");
      if (!await settlesWithin(this.#status, timeoutMs)) {
        tryKill(this.#child, "SIGKILL");
        await settlesWithin(this.#status, 5000);
      }
    }
    await settlesWithin(this.#pump, 2000);
    children.delete(this);
    const m = /Stopped after (\d+) kernel events \((\d+) lost in the kernel, (\d+) in the ring\)/
      .exec(this.#stderr);
    const stats = m === null ? null : {
      events: Number(m[1]),
      kernelLost: Number(m[2]),
      ringLost: Number(m[3]),
      line: m[0],
    };
    return { code: this.exited?.code ?? null, stats };
  }

  killNow(): void {
    tryKill(this.#child, "SIGKILL");
  }
}

/** forkstat writing its lines to a file (its stdout is block-buffered, like any filter). */
/** What a {@link SinkClient} had counted at one moment. */
export interface SinkCount {
  lines: number;
  lost: number;
}

/**
 * One client as its own process (scripts/sink.c): it reads and counts lines and lost lines,
 * nothing more, and reports its counts on SIGUSR1. The many-clients phase uses these so
 * that the clients' own cost is a simple client's, not one Deno process parsing a hundred
 * streams.
 */
export class SinkClient implements Owned {
  readonly name: string;
  readonly #child: Deno.ChildProcess;
  readonly #lines: AsyncIterator<string>;
  #last: SinkCount = { lines: 0, lost: 0 };
  #ended = false;

  private constructor(child: Deno.ChildProcess, index: number) {
    this.name = `sink#${index}`;
    this.#child = child;
    this.#lines = child.stdout.pipeThrough(new TextDecoderStream())
      .pipeThrough(new LineSplitter())[Symbol.asyncIterator]();
    children.add(this);
  }

  /** Starts `sink PATH` (the binary built from scripts/sink.c). */
  static start(sink: string, path: string, index: number): SinkClient {
    const child = new Deno.Command(sink, {
      args: [path],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    return new SinkClient(child, index);
  }

  /** Whether its stream has ended (known from the last {@link count}). */
  get ended(): boolean {
    return this.#ended;
  }

  /** Its counts now (after the end of its stream: its final counts). */
  async count(): Promise<SinkCount> {
    if (this.#ended) return this.#last;
    try {
      this.#child.kill("SIGUSR1");
    } catch {
      // Exited meanwhile: its last line is the final count.
    }
    const next = await this.#lines.next();
    if (next.done) {
      this.#ended = true;
      return this.#last;
    }
    const [lines, lost] = next.value.split(" ").map(Number);
    this.#last = { lines, lost };
    return this.#last;
  }

  /** Stops it and waits for it. */
  async stop(): Promise<void> {
    this.killNow();
    await this.#child.status;
    children.delete(this);
  }

  killNow(): void {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Gone already.
    }
  }
}

/** Splits a text stream into lines. */
class LineSplitter extends TransformStream<string, string> {
  constructor() {
    let rest = "";
    super({
      transform(chunk, out) {
        const parts = (rest + chunk).split("\n");
        rest = parts.pop() ?? "";
        for (const line of parts) out.enqueue(line);
      },
      flush(out) {
        if (rest !== "") out.enqueue(rest);
      },
    });
  }
}

export class ForkstatProcess implements Owned {
  readonly name = "forkstat";
  readonly pid: number;
  readonly file: string;
  readonly #child: Deno.ChildProcess;
  readonly #status: Promise<Deno.CommandStatus>;

  private constructor(child: Deno.ChildProcess, file: string) {
    this.#child = child;
    this.pid = child.pid;
    this.file = file;
    this.#status = child.status;
    children.add(this);
  }

  /** Starts `forkstat ARGS > file` (through `sh -c exec`, so the pid is forkstat's). */
  static async start(args: string[], file: string): Promise<ForkstatProcess> {
    const quoted = [...args, file].map((a) => `'${a.replaceAll("'", `'\\''`)}'`);
    const target = quoted.pop();
    const child = new Deno.Command("sh", {
      args: ["-c", `exec forkstat ${quoted.join(" ")} > ${target}`],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const f = new ForkstatProcess(child, file);
    // Its output is block-buffered, so nothing tells when it listens: give it a moment to
    // subscribe and scan /proc, and make sure it is still there.
    if (await settlesWithin(f.#status, 1500)) {
      children.delete(f);
      throw new Error("forkstat exited at start (no proc connector access?)");
    }
    return f;
  }

  /** Bytes written to its file so far. */
  size(): number {
    try {
      return Deno.statSync(this.file).size;
    } catch {
      return 0;
    }
  }

  /** Waits until its file stops growing for `idleMs` (at most `maxMs`). */
  async settle(idleMs: number, maxMs: number): Promise<void> {
    const deadline = Date.now() + maxMs;
    let last = this.size();
    let since = Date.now();
    while (Date.now() < deadline) {
      await sleep(100);
      const now = this.size();
      if (now !== last) {
        last = now;
        since = Date.now();
      } else if (Date.now() - since >= idleMs) return;
    }
  }

  usage(ticks: number): Usage {
    return usage(this.pid, ticks);
  }

  async stop(): Promise<void> {
    tryKill(this.#child, "SIGTERM");
    if (!await settlesWithin(this.#status, 5000)) {
      tryKill(this.#child, "SIGKILL");
      await settlesWithin(this.#status, 5000);
    }
    children.delete(this);
  }

  killNow(): void {
    tryKill(this.#child, "SIGKILL");
  }
}

/** What forkstat wrote between two offsets of its file. */
export interface ForkstatScan {
  forkLines: number;
  execs: number;
  exits: number;
  /** Exec lines whose process column is exactly the expected cmdline. */
  execExact: number;
  /** fork lines / 2 (forkstat prints a parent and a child line) + execs + exits. */
  events: number;
}

/** Counts forkstat's lines in `file` from byte `from` to `to`. */
export async function scanForkstat(
  file: string,
  from: number,
  to: number,
  execCmdline: string | null,
): Promise<ForkstatScan> {
  const scan = { forkLines: 0, execs: 0, exits: 0, execExact: 0, events: 0 };
  using f = await Deno.open(file, { read: true });
  await f.seek(from, Deno.SeekMode.Start);
  const decoder = new TextDecoder();
  const buf = new Uint8Array(1 << 20);
  let left = to - from;
  let carry = "";
  const line = (l: string) => {
    // "HH:MM:SS event   PID info duration process"
    if (l.startsWith("fork", 9)) scan.forkLines++;
    else if (l.startsWith("exit", 9)) scan.exits++;
    else if (l.startsWith("exec", 9)) {
      scan.execs++;
      if (execCmdline !== null && l.trim().split(/\s+/).slice(3).join(" ") === execCmdline) {
        scan.execExact++;
      }
    }
  };
  while (left > 0) {
    const n = await f.read(buf.subarray(0, Math.min(buf.length, left)));
    if (n === null) break;
    left -= n;
    const text = carry + decoder.decode(buf.subarray(0, n), { stream: true });
    let start = 0;
    let nl;
    while ((nl = text.indexOf("\n", start)) >= 0) {
      line(text.slice(start, nl));
      start = nl + 1;
    }
    carry = text.slice(start);
  }
  scan.events = Math.floor(scan.forkLines / 2) + scan.execs + scan.exits;
  return scan;
}

/** What the storm generator prints when it is done. */
export interface StormResult {
  mode: "fork" | "exec" | "paced" | "paced-exec";
  made: number;
  failed: number;
  workers: number[];
  pid: number;
  start_ns: number;
  end_ns: number;
  elapsed_s: number;
  rate_per_s: number;
}

/** A storm that has finished but holds its workers' pids until released. */
export interface HeldStorm {
  result: StormResult;
  /** Lets the storm reap its workers and exit (bounded; killed if it does not). */
  release(): Promise<void>;
}

/**
 * Runs the storm generator with `--hold` until it prints its result (killed after
 * `timeoutMs`). Its workers stay zombies, so their pids (by which the clients pick the
 * storm's events) cannot be recycled by other processes until {@link HeldStorm.release}.
 */
export async function runStorm(
  storm: string,
  args: string[],
  timeoutMs: number,
): Promise<HeldStorm> {
  const child = new Deno.Command(storm, {
    args: ["--hold", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const owned: Owned = { name: "storm", killNow: () => tryKill(child, "SIGKILL") };
  children.add(owned);
  const timer = setTimeout(() => tryKill(child, "SIGKILL"), timeoutMs);
  const stdin = child.stdin.getWriter();
  const stderr = new Response(child.stderr).text().catch(() => "");
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    try {
      await stdin.close();
    } catch {
      // Exited already.
    }
    if (!await settlesWithin(child.status, 10_000)) {
      tryKill(child, "SIGKILL");
      await settlesWithin(child.status, 5000);
    }
    clearTimeout(timer);
    children.delete(owned);
  };
  try {
    // Its one line of output, then it waits for stdin to close.
    let text = "";
    const decoder = new TextDecoder();
    for await (const chunk of child.stdout) {
      text += decoder.decode(chunk, { stream: true });
      if (text.includes("\n")) break;
    }
    text = text.trim();
    if (text === "") {
      const status = await child.status;
      throw new Error(
        `storm ${args.join(" ")} failed (${status.signal ?? status.code}): ${
          (await stderr).trim()
        }`,
      );
    }
    const result = JSON.parse(text) as StormResult;
    // The paced modes' worker is the storm itself.
    stormForks.count += result.made + result.workers.length +
      (result.mode.startsWith("paced") ? 0 : 1);
    return { result, release };
  } catch (err) {
    await release();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------
// Latency

/** Latency histogram: 10 µs buckets up to 10 s, plus exact max and mean. */
export class Histogram {
  static readonly BUCKET_US = 10;
  readonly #buckets = new Uint32Array(1_000_001);
  count = 0;
  negative = 0;
  maxUs = 0;
  sumUs = 0;

  add(us: number): void {
    this.count++;
    if (us < 0) {
      this.negative++;
      us = 0;
    }
    if (us > this.maxUs) this.maxUs = us;
    this.sumUs += us;
    const b = Math.min(this.#buckets.length - 1, Math.floor(us / Histogram.BUCKET_US));
    this.#buckets[b]++;
  }

  /** The `q` quantile (0..1) in µs (upper edge of its bucket). */
  quantile(q: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.ceil(q * this.count);
    let seen = 0;
    for (let b = 0; b < this.#buckets.length; b++) {
      seen += this.#buckets[b];
      if (seen >= rank) return Math.min(this.maxUs, (b + 1) * Histogram.BUCKET_US);
    }
    return this.maxUs;
  }

  summary(): LatencySummary {
    return {
      samples: this.count,
      p50_ms: round(this.quantile(0.5) / 1000, 3),
      p99_ms: round(this.quantile(0.99) / 1000, 3),
      p999_ms: round(this.quantile(0.999) / 1000, 3),
      max_ms: round(this.maxUs / 1000, 3),
      mean_ms: round(this.count > 0 ? this.sumUs / this.count / 1000 : NaN, 3),
      negative: this.negative,
    };
  }
}

export interface LatencySummary {
  samples: number;
  p50_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
  mean_ms: number;
  /** Events stamped later than the client read them (clock skew), counted as 0. */
  negative: number;
}

export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

// ---------------------------------------------------------------------------------------
// Clients

/** Where clients put the latency of every event they read; null while not measuring. */
export const measuring: { latency: Histogram | null } = { latency: null };

/** What a client counted since its last {@link BenchClient.reset}. */
export interface Counts {
  /** fork events by parent_tgid. */
  forkBy: Map<number, number>;
  /** exec events by ppid. */
  execBy: Map<number, number>;
  /** exit events by ppid. */
  exitBy: Map<number, number>;
  /** exit events that carry resource usage, by ppid (with countUsage only). */
  exitUsageBy: Map<number, number>;
  /** pids of exit events with ppid 0: the kernel reports no parent when the parent reaped
   * the child before the exit event was built (proc_exit_connector runs after
   * exit_notify). */
  exitNoParent: number[];
  /** exec events whose cmdline is exactly the expected one. */
  execExact: number;
  /** exec events with an empty cmdline (gone before /proc was read). */
  execEmpty: number;
  /** exec events whose cmdline starts with the storm generator's path (pre-exec). */
  execPreExec: number;
  /** `lost` events: their count and where. */
  lost: { count: number; where: string }[];
  lines: number;
  /** With pid tracking: child pids of fork events by parent_tgid, exit pids by ppid. */
  forkKids: Map<number, number[]> | null;
  exitPids: Map<number, number[]> | null;
}

function emptyCounts(track: boolean): Counts {
  return {
    forkBy: new Map(),
    execBy: new Map(),
    exitBy: new Map(),
    exitUsageBy: new Map(),
    exitNoParent: [],
    execExact: 0,
    execEmpty: 0,
    execPreExec: 0,
    lost: [],
    lines: 0,
    forkKids: track ? new Map() : null,
    exitPids: track ? new Map() : null,
  };
}

function push(m: Map<number, number[]>, k: number, v: number): void {
  const list = m.get(k);
  if (list === undefined) m.set(k, [v]);
  else list.push(v);
}

/** What exec cmdline the clients compare against, as JSON text (`"cmdline":"..."`). */
export const expect: { exactCmdline: string | null; preExecPrefix: string | null } = {
  exactCmdline: null,
  preExecPrefix: null,
};

let cachedPrefix = "";
let cachedMs = 0;

/** The event's `time` in µs since the epoch, NaN when it has none. */
function eventTimeUs(line: string): number {
  const p = line.indexOf('"time":"');
  if (p < 0) return NaN;
  const s = p + 8;
  const prefix = line.substring(s, s + 19);
  if (prefix !== cachedPrefix) {
    cachedPrefix = prefix;
    cachedMs = Date.parse(prefix + "Z");
  }
  let us = 0;
  for (let i = s + 20; i < s + 26; i++) us = us * 10 + (line.charCodeAt(i) - 48);
  return cachedMs * 1000 + us;
}

/** The decimal number after `key` in `line`, -1 when absent or not a number. */
function intAfter(line: string, key: string): number {
  const p = line.indexOf(key);
  if (p < 0) return -1;
  let n = 0;
  let digits = 0;
  for (let i = p + key.length; i < line.length; i++) {
    const d = line.charCodeAt(i) - 48;
    if (d < 0 || d > 9) break;
    n = n * 10 + d;
    digits++;
  }
  return digits > 0 ? n : -1;
}

function bump(m: Map<number, number>, k: number): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

/**
 * A Unix-socket client of procMonitor inside the benchmark. Parses lazily: the event kind
 * from a fixed position, the parent pid with one indexOf, `lost` lines fully.
 */
export class BenchClient {
  readonly index: number;
  readonly #conn: Deno.UnixConn;
  /** Remember pids (for finding which events are missing); costs memory, one client does. */
  trackPids = false;
  /** Add this client's latencies to {@link measuring}'s histogram. */
  measureLatency = true;
  /** Count the exits that carry resource usage (`max_rss_kb`) in counts.exitUsageBy. */
  countUsage = false;
  counts: Counts = emptyCounts(false);
  /** Lines since connecting. */
  totalLines = 0;
  /** Bytes since connecting. */
  totalBytes = 0;
  lastDataMs = Date.now();
  eof = false;
  error: string | null = null;
  /** First line received, when it is not an event (e.g. "too many clients"). */
  firstLine: string | null = null;
  /** Called after each read with the total line count. */
  onProgress: ((lines: number) => void) | null = null;
  #reading: Promise<void> | null = null;
  #closed = false;

  private constructor(index: number, conn: Deno.UnixConn) {
    this.index = index;
    this.#conn = conn;
  }

  static async connect(path: string, index: number): Promise<BenchClient> {
    const conn = await Deno.connect({ transport: "unix", path });
    return new BenchClient(index, conn);
  }

  /** Starts reading (a client that is never started never reads: the "slow" client). */
  start(): void {
    this.#reading ??= this.#loop();
  }

  reset(): Counts {
    const old = this.counts;
    this.counts = emptyCounts(this.trackPids);
    return old;
  }

  /**
   * Storm events received: forks whose parent is a worker, execs and exits of their
   * children. Exits the kernel reported without a parent count, up to the storm's `made`
   * children, when their pid is in `kids` (the storm's children, from a client tracking
   * pids), or whatever their pid when `kids` is null.
   */
  stormEvents(
    workers: readonly number[],
    made: number,
    kids: Set<number> | null = null,
  ): { forks: number; execs: number; exits: number; exitsNoParent: number } {
    let forks = 0, execs = 0, exits = 0;
    for (const w of workers) {
      forks += this.counts.forkBy.get(w) ?? 0;
      execs += this.counts.execBy.get(w) ?? 0;
      exits += this.counts.exitBy.get(w) ?? 0;
    }
    // Other processes' exits can come without a parent too, and pids recycle: such exits
    // only fill the storm's shortfall, never count beyond it.
    const orphans = this.counts.exitNoParent;
    const candidates = kids === null
      ? orphans.length
      : orphans.filter((pid) => kids.has(pid)).length;
    const exitsNoParent = Math.min(candidates, Math.max(0, made - exits));
    return { forks, execs, exits: exits + exitsNoParent, exitsNoParent };
  }

  /** The storm's children seen in fork events (with pid tracking), else null. */
  stormKids(workers: readonly number[]): Set<number> | null {
    const kids = this.counts.forkKids;
    if (kids === null) return null;
    const set = new Set<number>();
    for (const w of workers) for (const pid of kids.get(w) ?? []) set.add(pid);
    return set;
  }

  async #loop(): Promise<void> {
    const buf = new Uint8Array(256 * 1024);
    const decoder = new TextDecoder();
    let carry = "";
    try {
      for (;;) {
        const n = await this.#conn.read(buf);
        if (n === null) break;
        const now = wallUs();
        this.lastDataMs = Date.now();
        this.totalBytes += n;
        const text = carry + decoder.decode(buf.subarray(0, n), { stream: true });
        let start = 0;
        let nl;
        while ((nl = text.indexOf("\n", start)) >= 0) {
          this.#line(text.slice(start, nl), now);
          start = nl + 1;
        }
        carry = text.slice(start);
        this.onProgress?.(this.totalLines);
      }
      this.eof = true;
    } catch (err) {
      if (!this.#closed) this.error = err instanceof Error ? err.message : String(err);
    }
  }

  #line(line: string, nowUs: number): void {
    this.totalLines++;
    const c = this.counts;
    c.lines++;
    // {"event":"fork"... : the kind starts at offset 10.
    const k = line.charCodeAt(10);
    if (k === 102 /* f */) {
      const parent = intAfter(line, '"parent_tgid":');
      bump(c.forkBy, parent);
      if (c.forkKids !== null) push(c.forkKids, parent, intAfter(line, '"child_tgid":'));
    } else if (k === 101 /* e */) {
      if (line.charCodeAt(12) === 105 /* exit */) {
        const ppid = intAfter(line, '"ppid":');
        bump(c.exitBy, ppid);
        if (this.countUsage && line.includes('"max_rss_kb":')) bump(c.exitUsageBy, ppid);
        if (ppid === 0) c.exitNoParent.push(intAfter(line, '"pid":'));
        if (c.exitPids !== null) push(c.exitPids, ppid, intAfter(line, '"pid":'));
      } else {
        bump(c.execBy, intAfter(line, '"ppid":'));
        if (expect.exactCmdline !== null && line.includes(expect.exactCmdline)) c.execExact++;
        else if (line.includes('"cmdline":""')) c.execEmpty++;
        else if (expect.preExecPrefix !== null && line.includes(expect.preExecPrefix)) {
          c.execPreExec++;
        }
      }
    } else if (k === 108 /* l */ && line.startsWith('{"event":"lost"')) {
      try {
        const e = JSON.parse(line);
        c.lost.push({ count: e.count, where: e.where });
      } catch {
        c.lost.push({ count: NaN, where: "unparsable" });
      }
    } else if (this.totalLines === 1 && !line.startsWith('{"event"')) {
      this.firstLine = line;
      return;
    }
    const h = measuring.latency;
    if (h !== null && this.measureLatency) {
      const t = eventTimeUs(line);
      if (t === t) h.add(nowUs - t);
    }
  }

  /**
   * With pid tracking: children of `workers` whose fork arrived but whose exit (with a
   * worker as ppid) did not, up to `max`, each with the ppids of any exit of that pid that
   * did arrive; and exits without a fork.
   */
  missing(workers: readonly number[], max = 10): {
    noExit: { pid: number; exitsWithOtherPpid: number[] }[];
    noFork: number[];
  } | null {
    const c = this.counts;
    if (c.forkKids === null || c.exitPids === null) return null;
    const balance = new Map<number, number>();
    for (const w of workers) {
      for (const pid of c.forkKids.get(w) ?? []) balance.set(pid, (balance.get(pid) ?? 0) + 1);
      for (const pid of c.exitPids.get(w) ?? []) balance.set(pid, (balance.get(pid) ?? 0) - 1);
    }
    // Exits without a parent settle a child's balance when one is open.
    for (const pid of c.exitNoParent) {
      const b = balance.get(pid) ?? 0;
      if (b > 0) balance.set(pid, b - 1);
    }
    const noExit: { pid: number; exitsWithOtherPpid: number[] }[] = [];
    const noFork: number[] = [];
    for (const [pid, b] of balance) {
      if (b > 0 && noExit.length < max) {
        const other: number[] = [];
        for (const [ppid, pids] of c.exitPids) {
          if (!workers.includes(ppid) && pids.includes(pid)) other.push(ppid);
        }
        noExit.push({ pid, exitsWithOtherPpid: other });
      } else if (b < 0 && noFork.length < max) noFork.push(pid);
    }
    return { noExit, noFork };
  }

  /** Reads whatever arrives for up to `ms` (for the client that never read). */
  async drain(ms: number): Promise<void> {
    this.start();
    await settlesWithin(this.#reading!, ms);
  }

  close(): void {
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
  }

  /** Closes and waits for the reader to finish (bounded). */
  async done(): Promise<void> {
    this.close();
    if (this.#reading !== null) await settlesWithin(this.#reading, 2000);
  }
}

// ---------------------------------------------------------------------------------------
// Output

/** Formats rows as an aligned markdown table. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    "| " + cells.map((c, i) => (c ?? "").padEnd(widths[i])).join(" | ") + " |";
  return [
    line(header),
    "|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|",
    ...rows.map(line),
  ]
    .join("\n");
}

/** 12345 -> "12,345". */
export function n(x: number): string {
  return Number.isFinite(x) ? Math.round(x).toLocaleString("en-US") : String(x);
}
