/**
 * The storm benchmark of SPEC §8: `make bench` (root; `make bench ARGS_BENCH="--help"`).
 *
 * Runs procMonitor from source against the real proc connector while a C storm generator
 * (scripts/storm.c, built here with gcc) forks and execs as fast as the machine allows, and
 * measures, side by side with forkstat where it is installed (or installable with apt-get):
 *
 * 1. no loss: a fork storm and an exec storm delivered complete to 10 Unix-socket clients,
 *    and procMonitor's own kernel/ring drop counts when it stops;
 * 2. exec cmdline accuracy, with the reader thread's realtime priority and without;
 * 3. CPU per event of procMonitor and of forkstat in the same storms and under a paced load
 *    (about 200 exec'd processes a second), and context switches per event beside forkstat's;
 * 4. latency from the kernel's event stamp to a client's read, quiet and under the storm;
 * 5. resident memory over a million events;
 * 6. 100 clients, then the same with one client that never reads;
 * 7. workload slowdown: the fork storm's own rate with procMonitor running vs with forkstat
 *    running instead;
 * 8. idle: wakeups (context switches of all threads) a second with nothing happening;
 * 9. NATS (SPEC §11): the fork storm also published to a one-node JetStream stream, with
 *    nothing lost (the stream's message count against the client's lines) and the CPU per
 *    event this adds.
 *
 * Phases: A = procMonitor `-s SOCK -c 20 -e fork,exec,exit` (realtime reader, the default)
 * with 10 clients: quiet latency, the fork storm, the exec storm, the paced load, more fork
 * storms until a million events have passed (memory), an idle window (60 s), then one fork
 * storm and the paced load with a single client (CPU without the fan-out). B = the exec storm
 * again with `--no-bpf` (each exec's /proc read by a reader woken for it, as before BPF), for
 * what BPF buys in the same run. forkstat runs alongside in A and B. C = 100 clients (the
 * first and the last the bench's own, which time every line; 98 between them processes of
 * their own that only count lines, scripts/sink.c), then the same storm with one more client
 * that never reads. D = the workload slowdown: short fork
 * storms with only procMonitor (10 clients) or only forkstat running, alternating, 3 each.
 * N = the same fork storm with 1 client, without and then with `--nats --nats-stream` to a
 * one-node nats-server (`--only-nats` runs this phase alone).
 * E = the cost of exit resource usage: an exit-heavy storm (fork + _exit: half the events
 * are exits) with procMonitor as is and with `--no-usage`, alternating, 2 each
 * (`--usage-only` runs just this phase).
 *
 * Which events are the storm's: the storm prints its workers' pids; every child's fork event
 * has a worker as parent_tgid, its exec and exit events a worker as ppid (an exit the kernel
 * reports with parent 0, because the worker reaped the child before the event was built,
 * is counted by pid). The workers stay zombies until the clients have counted (`storm
 * --hold`), so no other process can take their pids meanwhile, however fast pids recycle.
 *
 * Prints a table and writes bench/out/report.json. Everything it starts is killed on the way
 * out (including Ctrl-C), the temporary socket directory removed, and every wait bounded.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  BenchClient,
  children,
  clockTicks,
  expect,
  forksSinceBoot,
  ForkstatProcess,
  type HeldStorm,
  Histogram,
  killAllNow,
  type LatencySummary,
  measuring,
  memoryKiB,
  MonitorProcess,
  type MonitorStats,
  monitorV8Flags,
  n,
  ROOT,
  round,
  runStorm,
  scanForkstat,
  SinkClient,
  type SinkCount,
  stormForks,
  type StormResult,
  table,
  type Usage,
  usage,
  type UsageDelta,
  usageDelta,
} from "./bench_support.ts";
import { sleep } from "../lib/timers.ts";
import { NatsCluster } from "../tests/support/nats_cluster.ts";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";

const HELP = `Usage: make bench [ARGS_BENCH="options"]   (as root)

Runs the storms of SPEC §8 against procMonitor (and forkstat, when installed) and prints a
table; the full report goes to bench/out/report.json.

Options:
  --forks N          fork storm size, children (default 100000)
  --execs N          exec storm size (default 5000)
  --workers N        storm workers (default 2)
  --clients N        Unix-socket clients in the no-loss runs (default 10)
  --own-clients N    how many of them are the bench's own, which time and count every
                     event; the rest only count lines (scripts/sink.c) (default 2)
  --many N           clients in the fan-out run (default 100)
  --monitor-flag=F   one more flag for every procMonitor the bench starts, e.g.
                     --monitor-flag=--no-bpf
                     to measure the /proc path throughout; repeatable
  --many-forks N     fork storm size in the fan-out run (default 20000)
  --memory-events N  events to pass for the memory check (default 1000000)
  --memory-budget S  most seconds spent reaching them (default 150)
  --quiet N          spaced processes for the quiet-latency sample (default 300)
  --paced-rate N     processes a second in the paced load (default 200)
  --paced-seconds S  length of each paced load (default 10)
  --idle S           length of the idle window (default 60; 0 leaves it out)
  --slowdown-forks N fork storm size in the workload-slowdown runs (default 20000)
  --slowdown-runs N  runs with each of procMonitor and forkstat (default 3)
  --usage-forks N    fork storm size in the usage-cost runs (default 20000)
  --usage-runs N     runs with usage on and with --no-usage each (default 2; 0 leaves it out)
  --usage-only       run only the usage-cost phase (E)
  --no-forkstat      do not run (or install) forkstat
  --nats-forks N     fork storm size in the NATS phase (default 20000; 0 leaves it out)
  --only-nats        run only the NATS phase (needs nats-server)
  --out DIR          where report.json goes (default bench/out)
  -h, --help`;

interface Options {
  forks: number;
  execs: number;
  workers: number;
  clients: number;
  ownClients: number;
  /** Flags added to every procMonitor's (`--monitor-flag`). */
  monitorFlags: string[];
  many: number;
  manyForks: number;
  memoryEvents: number;
  memoryBudget: number;
  quiet: number;
  pacedRate: number;
  pacedSeconds: number;
  idle: number;
  slowdownForks: number;
  slowdownRuns: number;
  usageForks: number;
  usageRuns: number;
  usageOnly: boolean;
  forkstat: boolean;
  out: string;
  natsForks: number;
  onlyNats: boolean;
}

function options(): Options {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      forks: { type: "string", default: "100000" },
      execs: { type: "string", default: "5000" },
      workers: { type: "string", default: "2" },
      clients: { type: "string", default: "10" },
      "own-clients": { type: "string", default: "2" },
      "monitor-flag": { type: "string", multiple: true },
      many: { type: "string", default: "100" },
      "many-forks": { type: "string", default: "20000" },
      "memory-events": { type: "string", default: "1000000" },
      "memory-budget": { type: "string", default: "150" },
      quiet: { type: "string", default: "300" },
      "paced-rate": { type: "string", default: "200" },
      "paced-seconds": { type: "string", default: "10" },
      idle: { type: "string", default: "60" },
      "slowdown-forks": { type: "string", default: "20000" },
      "slowdown-runs": { type: "string", default: "3" },
      "usage-forks": { type: "string", default: "20000" },
      "usage-runs": { type: "string", default: "2" },
      "usage-only": { type: "boolean", default: false },
      "no-forkstat": { type: "boolean", default: false },
      "nats-forks": { type: "string", default: "20000" },
      "only-nats": { type: "boolean", default: false },
      out: { type: "string", default: `${ROOT}bench/out` },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const int = (name: string, text: string, min: number, max: number) => {
    const v = Number(text);
    if (!Number.isInteger(v) || v < min || v > max) {
      console.error(`bench: --${name} must be an integer from ${min} to ${max}, not "${text}"`);
      Deno.exit(2);
    }
    return v;
  };
  return {
    forks: int("forks", values.forks, 1, 10_000_000),
    execs: int("execs", values.execs, 1, 1_000_000),
    workers: int("workers", values.workers, 1, 64),
    clients: int("clients", values.clients, 1, 1000),
    ownClients: int("own-clients", values["own-clients"], 1, 1000),
    monitorFlags: values["monitor-flag"] ?? [],
    many: int("many", values.many, 1, 1000),
    manyForks: int("many-forks", values["many-forks"], 1, 10_000_000),
    memoryEvents: int("memory-events", values["memory-events"], 0, 100_000_000),
    memoryBudget: int("memory-budget", values["memory-budget"], 0, 3600),
    quiet: int("quiet", values.quiet, 1, 100_000),
    pacedRate: int("paced-rate", values["paced-rate"], 1, 10_000),
    pacedSeconds: int("paced-seconds", values["paced-seconds"], 1, 600),
    idle: int("idle", values.idle, 0, 3600),
    slowdownForks: int("slowdown-forks", values["slowdown-forks"], 1, 10_000_000),
    slowdownRuns: int("slowdown-runs", values["slowdown-runs"], 0, 20),
    usageForks: int("usage-forks", values["usage-forks"], 1, 10_000_000),
    usageRuns: int("usage-runs", values["usage-runs"], 0, 20),
    usageOnly: values["usage-only"],
    forkstat: !values["no-forkstat"],
    out: values.out,
    natsForks: int("nats-forks", values["nats-forks"], values["only-nats"] ? 1 : 0, 10_000_000),
    onlyNats: values["only-nats"],
  };
}

// ---------------------------------------------------------------------------------------
// Small helpers

const decoder = new TextDecoder();

/**
 * How much longer than on a machine that forks 5,000 times a second a storm may take before
 * it is taken for hung: the storm's own rate alone, measured first, sets it. On a slow VM
 * (fork + _exit at 600/s) the default 100,000-fork storm outlasted a fixed 180 s limit.
 */
let stormTimeScale = 1;

/** A storm's time limit, `ms` on a machine that forks 5,000 times a second. */
function scaled(ms: number): number {
  return Math.round(ms * stormTimeScale);
}

/** Runs a command to completion, killed after `timeoutMs`; never throws. */
async function command(
  cmd: string,
  args: string[],
  timeoutMs: number,
  env: Record<string, string> = {},
): Promise<{ ok: boolean; out: string }> {
  try {
    const child = new Deno.Command(cmd, {
      args,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const owned = { name: cmd, killNow: () => child.kill("SIGKILL") };
    children.add(owned);
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited meanwhile.
      }
    }, timeoutMs);
    try {
      const r = await child.output();
      return { ok: r.success, out: (decoder.decode(r.stdout) + decoder.decode(r.stderr)).trim() };
    } finally {
      clearTimeout(timer);
      children.delete(owned);
    }
  } catch (err) {
    return { ok: false, out: err instanceof Error ? err.message : String(err) };
  }
}

/** forkstat on PATH, or installed with apt-get; the status in words. */
async function ensureForkstat(): Promise<{ available: boolean; note: string; version: string }> {
  const version = async () =>
    (await command("forkstat", ["-h"], 5000)).out.split("\n")[0]?.trim() ?? "";
  if ((await command("sh", ["-c", "command -v forkstat"], 5000)).ok) {
    return { available: true, note: "installed", version: await version() };
  }
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  console.error("bench: forkstat is missing; installing it with apt-get (bounded to 4 min)");
  let r = await command("apt-get", ["install", "-y", "-qq", "forkstat"], 120_000, env);
  if (!r.ok) {
    await command("apt-get", ["update", "-qq"], 120_000, env);
    r = await command("apt-get", ["install", "-y", "-qq", "forkstat"], 120_000, env);
  }
  if (r.ok && (await command("sh", ["-c", "command -v forkstat"], 5000)).ok) {
    return { available: true, note: "installed by the bench (apt-get)", version: await version() };
  }
  const why = r.out.split("\n").filter((l) => l.trim() !== "").slice(-1)[0] ?? "unknown error";
  return { available: false, note: `could not be installed: ${why}`, version: "" };
}

/** Other processes that listen to the proc connector (they compete for the same CPUs). */
function competitors(own: Set<number>): { pid: number; cmdline: string }[] {
  const found: { pid: number; cmdline: string }[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const pid = Number(e.name);
    if (pid === Deno.pid || own.has(pid)) continue;
    try {
      const cmd = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").join(" ").trim();
      if (/(^|\/)forkstat( |$)|procMonitor|deno.*[ /]main\.ts( |$)/.test(cmd)) {
        found.push({ pid, cmdline: cmd.slice(0, 160) });
      }
    } catch {
      // Gone.
    }
  }
  return found;
}

function readOr(path: string, fallback: string): string {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch {
    return fallback;
  }
}

/** Connects `count` clients (numbered from `first`) and waits until procMonitor took them. */
async function connectClients(
  monitor: MonitorProcess,
  path: string,
  count: number,
  first = 0,
  read = true,
): Promise<BenchClient[]> {
  const before = monitor.count(/ connected to /g);
  const clients: BenchClient[] = [];
  for (let i = 0; i < count; i++) {
    const c = await BenchClient.connect(path, first + i);
    if (read) c.start();
    clients.push(c);
  }
  const deadline = Date.now() + 15_000;
  while (monitor.count(/ connected to /g) < before + count && Date.now() < deadline) {
    await sleep(20);
  }
  const got = monitor.count(/ connected to /g) - before;
  if (got < count) {
    throw new Error(`procMonitor accepted ${got} of ${count} clients within 15 s`);
  }
  return clients;
}

/** Starts `count` sink clients and waits until procMonitor has accepted them all. */
async function connectSinks(
  monitor: MonitorProcess,
  sink: string,
  path: string,
  count: number,
): Promise<SinkClient[]> {
  const before = monitor.count(/ connected to /g);
  const sinks: SinkClient[] = [];
  for (let i = 0; i < count; i++) sinks.push(SinkClient.start(sink, path, i + 1));
  const deadline = Date.now() + 15_000;
  while (monitor.count(/ connected to /g) < before + count && Date.now() < deadline) {
    await sleep(20);
  }
  const got = monitor.count(/ connected to /g) - before;
  if (got < count) {
    for (const k of sinks) await k.stop();
    throw new Error(`procMonitor accepted ${got} of ${count} sink clients within 15 s`);
  }
  return sinks;
}

/** One procMonitor's clients: the bench's own and the counting sinks. */
interface PhaseClients {
  clients: BenchClient[];
  sinks: SinkClient[];
}

/**
 * Connects `opt.clients` clients: `opt.ownClients` of the bench's own, which time and count
 * every event (the first and the last to connect: the hub writes to clients in that order),
 * and sink processes between them that count lines and `lost` lines (scripts/sink.c). Ten
 * clients in the bench's one Deno process need as much CPU as procMonitor to parse every
 * line, on the same two cores: the latency and slowdown rows then measured the bench as much
 * as procMonitor.
 */
async function connectPhaseClients(
  monitor: MonitorProcess,
  sink: string,
  path: string,
  opt: Pick<Options, "clients" | "ownClients">,
): Promise<PhaseClients> {
  const total = opt.clients;
  const mine = Math.min(opt.ownClients, total);
  const first = Math.ceil(mine / 2);
  const clients = await connectClients(monitor, path, first);
  let sinks: SinkClient[] = [];
  try {
    sinks = await connectSinks(monitor, sink, path, total - mine);
    clients.push(...await connectClients(monitor, path, mine - first, first));
  } catch (error) {
    for (const c of clients) await c.done();
    for (const k of sinks) await k.stop();
    throw error;
  }
  return { clients, sinks };
}

// ---------------------------------------------------------------------------------------
// One measured storm

interface PerClient {
  client: number;
  forks: number;
  execs: number;
  /** Including exits the kernel reported with parent 0 (see exitsNoParent). */
  exits: number;
  exitsNoParent: number;
  received: number;
  lost: { count: number; where: string }[];
}

interface StormReport {
  label: string;
  /** Storm events the monitor delivered per second of the storm (expected / elapsed). */
  eventRatePerS: number;
  args: string[];
  storm: StormResult;
  expectedPerClient: number;
  clients: PerClient[];
  receivedMin: number;
  receivedMax: number;
  complete: boolean;
  lostEvents: number;
  settleMs: number;
  latency: LatencySummary | null;
  monitorCpuS: number;
  monitorEvents: number;
  monitorUsPerEvent: number;
  /** procMonitor's CPU split and its JavaScript thread's time on and waiting for a CPU. */
  monitorUsage: UsageDelta;
  /** Children whose fork or exit did not arrive at client 0 (with pid tracking). */
  missing: ReturnType<BenchClient["missing"]>;
  forkstat: {
    usage: UsageDelta;
    cpuS: number;
    events: number;
    usPerEvent: number;
    execs: number;
    execExact: number;
    forks: number;
    exits: number;
  } | null;
  benchCpuS: number;
  benchUsage: UsageDelta;
  exec: {
    exact: number;
    empty: number;
    preExec: number;
    accuracy: number;
  } | null;
  memoryAfter: { rssKiB: number; hwmKiB: number } | null;
  /** The sink clients' lines and lost lines over the storm; null without sinks. */
  sinks: SinkReport | null;
}

interface SinkReport {
  count: number;
  /** Fewest and most lines a sink read over the storm: every line, storm or not. */
  linesMin: number;
  linesMax: number;
  /** Lost lines (`{"event":"lost"...}`) the sinks read, all together. */
  lostLines: number;
  /** Every sink read at least the storm's events and no lost line. */
  complete: boolean;
}

interface StormPlan {
  label: string;
  storm: string;
  args: string[];
  monitor: MonitorProcess;
  clients: BenchClient[];
  /** Clients that are processes of their own and only count lines (phase C). */
  sinks?: SinkClient[];
  forkstat: ForkstatProcess | null;
  latency: boolean;
  exactCmdline?: string;
  timeoutMs: number;
  settleMaxMs: number;
  ticks: number;
}

async function measuredStorm(p: StormPlan): Promise<StormReport> {
  for (const c of p.clients) c.reset();
  expect.exactCmdline = p.exactCmdline === undefined
    ? null
    : `"cmdline":${JSON.stringify(p.exactCmdline)}`;
  expect.preExecPrefix = `"cmdline":${JSON.stringify(p.storm).slice(0, -1)} `;
  const hist = p.latency ? new Histogram() : null;
  const lead = p.clients[0];
  const mon0 = p.monitor.usage(p.ticks);
  const fs0 = p.forkstat?.usage(p.ticks) ?? null;
  const fsOff0 = p.forkstat?.size() ?? 0;
  const bench0 = usage("self", p.ticks);
  const lines0 = lead.totalLines;
  const sinks0 = await Promise.all((p.sinks ?? []).map((k) => k.count()));
  measuring.latency = hist;

  let held: HeldStorm;
  try {
    held = await runStorm(p.storm, p.args, p.timeoutMs);
  } catch (err) {
    measuring.latency = null;
    throw err;
  }
  try {
    const report = await count(p, held.result, hist, { mon0, fs0, fsOff0, bench0, lines0 });
    report.sinks = await countSinks(p, sinks0, report.expectedPerClient);
    if (report.sinks !== null && !report.sinks.complete) report.complete = false;
    return report;
  } finally {
    measuring.latency = null;
    await held.release();
  }
}

/**
 * Waits until every sink has read at least `expected` lines since `before` (or their
 * counts stop moving for 2 s, or `p.settleMaxMs` passes) and sums them up.
 */
async function countSinks(
  p: StormPlan,
  before: SinkCount[],
  expected: number,
): Promise<SinkReport | null> {
  const sinks = p.sinks ?? [];
  if (sinks.length === 0) return null;
  const t0 = Date.now();
  let last = -1;
  let lastChange = Date.now();
  let lines: number[] = [];
  let lost = 0;
  for (;;) {
    const now = await Promise.all(sinks.map((k) => k.count()));
    lines = now.map((c, i) => c.lines - before[i].lines);
    lost = now.reduce((a, c, i) => a + c.lost - before[i].lost, 0);
    const total = lines.reduce((a, b) => a + b, 0);
    if (Math.min(...lines) >= expected) break;
    if (total !== last) {
      last = total;
      lastChange = Date.now();
    } else if (Date.now() - lastChange > 2000) break;
    if (Date.now() - t0 > p.settleMaxMs) break;
    await sleep(100);
  }
  const linesMin = Math.min(...lines);
  return {
    count: sinks.length,
    linesMin,
    linesMax: Math.max(...lines),
    lostLines: lost,
    complete: linesMin >= expected && lost === 0,
  };
}

/** Waits for the storm's events at the clients and counts them (see measuredStorm). */
async function count(
  p: StormPlan,
  storm: StormResult,
  hist: Histogram | null,
  before: { mon0: Usage; fs0: Usage | null; fsOff0: number; bench0: Usage; lines0: number },
): Promise<StormReport> {
  const { mon0, fs0, fsOff0, bench0, lines0 } = before;
  const lead = p.clients[0];
  const execs = storm.mode === "exec" || storm.mode === "paced-exec";
  const want = { forks: storm.made, execs: execs ? storm.made : 0, exits: storm.made };
  const expected = want.forks + want.execs + want.exits;

  // Wait until every client has every storm event, or storm events stop coming.
  const t0 = Date.now();
  let lastTotal = -1;
  let lastChange = Date.now();
  for (;;) {
    let total = 0;
    let complete = true;
    for (const c of p.clients) {
      const s = c.stormEvents(storm.workers, storm.made);
      total += s.forks + s.execs + s.exits;
      if (s.forks < want.forks || s.execs < want.execs || s.exits < want.exits) complete = false;
    }
    if (complete) break;
    if (total !== lastTotal) {
      lastTotal = total;
      lastChange = Date.now();
    } else if (Date.now() - lastChange > 2000) break;
    if (Date.now() - t0 > p.settleMaxMs) break;
    await sleep(25);
  }
  const settleMs = Date.now() - t0;
  measuring.latency = null;

  const monitorUsage = usageDelta(mon0, p.monitor.usage(p.ticks));
  const monitorEvents = lead.totalLines - lines0;
  const benchUsage = usageDelta(bench0, usage("self", p.ticks));
  let fs: StormReport["forkstat"] = null;
  if (p.forkstat !== null && fs0 !== null) {
    // A moment for forkstat's backlog; its CPU and its lines are cut at the same time.
    await p.forkstat.settle(500, 3000);
    const fsUsage = usageDelta(fs0, p.forkstat.usage(p.ticks));
    const scan = await scanForkstat(
      p.forkstat.file,
      fsOff0,
      p.forkstat.size(),
      p.exactCmdline ?? null,
    );
    const cpuS = fsUsage.cpuS;
    fs = {
      usage: fsUsage,
      cpuS: round(cpuS, 3),
      events: scan.events,
      usPerEvent: round((cpuS * 1e6) / scan.events, 2),
      execs: scan.execs,
      execExact: scan.execExact,
      forks: scan.forkLines / 2,
      exits: scan.exits,
    };
  }

  const kids = lead.stormKids(storm.workers);
  const clients: PerClient[] = p.clients.map((c) => {
    const s = c.stormEvents(storm.workers, storm.made, kids);
    return {
      client: c.index,
      ...s,
      received: s.forks + s.execs + s.exits,
      lost: c.counts.lost,
    };
  });
  const received = clients.map((c) => c.received);
  const lostEvents = clients.reduce((a, c) => a + c.lost.reduce((b, l) => b + l.count, 0), 0);
  const complete = clients.every((c) =>
    c.forks === want.forks && c.execs === want.execs && c.exits === want.exits
  );
  const monitorCpuS = monitorUsage.cpuS;
  const lc = lead.counts;
  return {
    label: p.label,
    eventRatePerS: round(expected / storm.elapsed_s, 1),
    args: p.args,
    storm,
    expectedPerClient: expected,
    clients,
    receivedMin: Math.min(...received),
    receivedMax: Math.max(...received),
    complete,
    lostEvents,
    settleMs,
    latency: hist?.summary() ?? null,
    monitorCpuS: round(monitorCpuS, 3),
    monitorEvents,
    monitorUsPerEvent: round((monitorCpuS * 1e6) / monitorEvents, 2),
    monitorUsage,
    missing: complete ? null : lead.missing(storm.workers),
    forkstat: fs,
    benchCpuS: benchUsage.cpuS,
    benchUsage,
    exec: execs
      ? {
        exact: lc.execExact,
        empty: lc.execEmpty,
        preExec: lc.execPreExec,
        accuracy: storm.made > 0 ? lc.execExact / storm.made : NaN,
      }
      : null,
    memoryAfter: memoryKiB(p.monitor.pid),
    sinks: null,
  };
}

// ---------------------------------------------------------------------------------------
// The idle window and the workload slowdown

/** One process over the idle window: CPU ticks and context switches of all its threads. */
interface IdleSide {
  cpuTicks: number;
  ctxSwitches: number;
  wakeupsPerS: number;
  usage: UsageDelta;
}

interface IdleReport {
  seconds: number;
  /** Wait before the window, after the last storm's events arrived. */
  settleS: number;
  /** Clients connected at the start, and still connected (not disconnected) at the end. */
  clients: number;
  clientsConnected: number;
  /** Events client 0 read in the window (other processes on the machine). */
  eventsArrived: number;
  /** Processes and threads created machine-wide in the window (/proc/stat). */
  forksOnMachine: number;
  monitor: IdleSide;
  forkstat: IdleSide | null;
}

/**
 * procMonitor (and forkstat, when running) over `seconds` of nothing happening: no storm,
 * the clients connected and reading; the bench itself only sleeps.
 */
async function idleWindow(
  monitor: MonitorProcess,
  { clients, sinks }: PhaseClients,
  forkstat: ForkstatProcess | null,
  ticks: number,
  seconds: number,
): Promise<IdleReport> {
  const settleS = 2;
  await sleep(settleS * 1000);
  const lines0 = clients[0].totalLines;
  const forks0 = forksSinceBoot();
  const mon0 = monitor.usage(ticks);
  const fs0 = forkstat?.usage(ticks) ?? null;
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const mon = usageDelta(mon0, monitor.usage(ticks));
  const fs = forkstat !== null && fs0 !== null ? usageDelta(fs0, forkstat.usage(ticks)) : null;
  const elapsed = (performance.now() - t0) / 1000;
  await Promise.all(sinks.map((k) => k.count()));
  const side = (u: UsageDelta): IdleSide => ({
    cpuTicks: Math.round(u.cpuS * ticks),
    ctxSwitches: u.ctxSwitches,
    wakeupsPerS: round(u.ctxSwitches / elapsed, 3),
    usage: u,
  });
  return {
    seconds: round(elapsed, 3),
    settleS,
    clients: clients.length + sinks.length,
    clientsConnected: clients.filter((c) => !c.eof && c.error === null).length +
      sinks.filter((k) => !k.ended).length,
    eventsArrived: clients[0].totalLines - lines0,
    forksOnMachine: forksSinceBoot() - forks0,
    monitor: side(mon),
    forkstat: fs === null ? null : side(fs),
  };
}

/** One fork storm of the workload-slowdown phase, with one listener running. */
interface SlowdownRun {
  listener: "procMonitor" | "forkstat";
  ratePerS: number;
  made: number;
  /** procMonitor: every client received every storm event. */
  complete: boolean | null;
}

interface SlowdownReport {
  forks: number;
  warmupForks: number;
  clients: number;
  runs: SlowdownRun[];
  medianMonitorPerS: number;
  medianForkstatPerS: number | null;
}

interface SlowdownContext {
  storm: string;
  /** The counting client (scripts/sink.c). */
  sink: string;
  sockDir: string;
  ticks: number;
  events: string;
  forkstat: boolean;
}

/**
 * Phase D: the fork storm's own rate with only procMonitor (10 clients) running, and with
 * only forkstat running instead, alternating which goes first, `opt.slowdownRuns` each.
 * Each listener is started fresh and warmed up with a small unmeasured storm first.
 */
async function slowdownPhase(
  opt: Options,
  ctx: SlowdownContext,
  progress: (what: string) => void,
): Promise<SlowdownReport> {
  const warmupForks = Math.min(2000, opt.slowdownForks);
  const runs: SlowdownRun[] = [];
  for (let i = 0; i < opt.slowdownRuns; i++) {
    const order = i % 2 === 0 ? ["procMonitor", "forkstat"] : ["forkstat", "procMonitor"];
    for (const who of order) {
      if (who === "forkstat" && !ctx.forkstat) continue;
      const run = who === "procMonitor"
        ? await slowdownMonitorRun(opt, ctx, i, warmupForks)
        : await slowdownForkstatRun(opt, ctx, warmupForks);
      progress(`phase D run ${i + 1}, ${who} alone: ${n(run.ratePerS)} forks/s`);
      runs.push(run);
    }
  }
  const median = (who: SlowdownRun["listener"]) => {
    const r = runs.filter((x) => x.listener === who).map((x) => x.ratePerS).sort((x, y) => x - y);
    return r.length === 0 ? null : r[Math.floor((r.length - 1) / 2)];
  };
  return {
    forks: opt.slowdownForks,
    warmupForks,
    clients: opt.clients,
    runs,
    medianMonitorPerS: median("procMonitor") ?? NaN,
    medianForkstatPerS: median("forkstat"),
  };
}

/** One exit-heavy storm of the usage-cost phase. */
interface UsageRun {
  usage: boolean;
  monitorUsPerEvent: number;
  monitorCpuS: number;
  monitorEvents: number;
  ratePerS: number;
  complete: boolean;
  /** Children the storm made. */
  made: number;
  /** Storm exits at client 0 that name a worker as parent, and of those with usage. */
  exitsSeen: number;
  exitsWithUsage: number | null;
}

interface UsageCostReport {
  forks: number;
  clients: number;
  runs: UsageRun[];
  medianOnUsPerEvent: number;
  medianOffUsPerEvent: number;
  /** What usage adds per exit: (on - off) µs/event × events / exits. */
  extraUsPerExit: number;
}

/**
 * Phase E: the fork storm (each child one fork and one exit) with usage (the default) and
 * with `--no-usage`, alternating which goes first, `opt.usageRuns` each; each a fresh
 * procMonitor with `opt.clients` clients, warmed up with a small unmeasured storm.
 */
async function usagePhase(
  opt: Options,
  ctx: SlowdownContext,
  progress: (what: string) => void,
): Promise<UsageCostReport> {
  const runs: UsageRun[] = [];
  for (let i = 0; i < opt.usageRuns; i++) {
    for (const on of i % 2 === 0 ? [true, false] : [false, true]) {
      const r = await usageRun(opt, ctx, `E${i + 1}${on ? "on" : "off"}`, on);
      progress(
        `phase E run ${i + 1}, usage ${on ? "on" : "off"}: ` +
          `${r.monitorUsPerEvent.toFixed(2)} µs/event, ${n(r.ratePerS)} forks/s`,
      );
      runs.push(r);
    }
  }
  const median = (on: boolean) => {
    const r = runs.filter((x) => x.usage === on).map((x) => x.monitorUsPerEvent)
      .sort((x, y) => x - y);
    return r.length === 0 ? NaN : r[Math.floor((r.length - 1) / 2)];
  };
  const on = median(true);
  const off = median(false);
  return {
    forks: opt.usageForks,
    clients: opt.clients,
    runs,
    medianOnUsPerEvent: on,
    medianOffUsPerEvent: off,
    extraUsPerExit: round((on - off) * 2, 2), // two events (fork, exit) per child
  };
}

/**
 * What the storms of phases D and E share: procMonitor alone (no forkstat), its socket
 * clients, no latency histogram, the same time limits.
 */
function aloneStorm(
  monitor: MonitorProcess,
  { clients, sinks }: PhaseClients,
  ctx: SlowdownContext,
): Omit<StormPlan, "label" | "args"> {
  return {
    monitor,
    clients,
    sinks,
    forkstat: null,
    ticks: ctx.ticks,
    storm: ctx.storm,
    latency: false,
    timeoutMs: scaled(120_000),
    settleMaxMs: 30_000,
  };
}

/**
 * A fresh procMonitor (`-s SOCK -c 20 -e EVENTS` and `extra`) alone with its clients, warmed up
 * with an unmeasured storm of `warmupForks`; `measure` runs against it, then all is stopped.
 */
async function warmMonitorRun<T>(
  opt: Options,
  ctx: SlowdownContext,
  name: string,
  extra: string[],
  warmupForks: number,
  measure: (base: Omit<StormPlan, "label" | "args">, clients: BenchClient[]) => Promise<T>,
): Promise<T> {
  const sock = `${ctx.sockDir}/${name}.sock`;
  const args = ["-s", sock, "-c", "20", "-e", ctx.events, ...extra];
  const monitor = await MonitorProcess.start(name, args);
  let clients: BenchClient[] = [];
  let sinks: SinkClient[] = [];
  try {
    ({ clients, sinks } = await connectPhaseClients(monitor, ctx.sink, sock, opt));
    const base = aloneStorm(monitor, { clients, sinks }, ctx);
    await measuredStorm({ ...base, label: "warm-up", args: forkArgs(opt, warmupForks) });
    return await measure(base, clients);
  } finally {
    for (const c of clients) await c.done();
    for (const k of sinks) await k.stop();
    await monitor.stop();
  }
}

/** A fresh procMonitor, with or without usage; a warm-up storm, then the measured one. */
function usageRun(
  opt: Options,
  ctx: SlowdownContext,
  name: string,
  on: boolean,
): Promise<UsageRun> {
  const extra = on ? [] : ["--no-usage"];
  return warmMonitorRun(opt, ctx, name, extra, 2000, async (base, clients) => {
    clients[0].countUsage = true;
    const s = await measuredStorm({
      ...base,
      label: `usage ${on ? "on" : "off"}`,
      args: forkArgs(opt, opt.usageForks),
    });
    return {
      usage: on,
      monitorUsPerEvent: s.monitorUsPerEvent,
      monitorCpuS: s.monitorCpuS,
      monitorEvents: s.monitorEvents,
      ratePerS: s.storm.rate_per_s,
      complete: s.complete,
      made: s.storm.made,
      exitsSeen: byWorker(s.storm.workers, clients[0].counts.exitBy),
      exitsWithUsage: on ? byWorker(s.storm.workers, clients[0].counts.exitUsageBy) : null,
    };
  });
}

/** The sinks' counts over several storms, summed; null without sinks. */
function sumSinks(storms: StormReport[]): SinkReport | null {
  const all = storms.map((s) => s.sinks);
  if (all.some((k) => k === null)) return null;
  const sum = (f: (k: SinkReport) => number) => all.reduce((a, k) => a + f(k!), 0);
  return {
    count: all[0]!.count,
    linesMin: sum((k) => k.linesMin),
    linesMax: sum((k) => k.linesMax),
    lostLines: sum((k) => k.lostLines),
    complete: all.every((k) => k!.complete),
  };
}

/** The sum of `counts` over the storm's workers. */
function byWorker(workers: number[], counts: Map<number, number>): number {
  return workers.reduce((sum, w) => sum + (counts.get(w) ?? 0), 0);
}

/** The usage-cost row: µs/event with and without usage, in the same run. */
function usageCostRow(add: AddRow, E: UsageCostReport): void {
  const each = E.runs.map((r) => `${r.usage ? "on" : "off"} ${r.monitorUsPerEvent.toFixed(2)}`);
  add(
    `5 usage cost: CPU µs/event, fork storm of ${n(E.forks)} (fork + exit), on vs --no-usage`,
    `${E.medianOnUsPerEvent.toFixed(2)} vs ${E.medianOffUsPerEvent.toFixed(2)} ` +
      `(+${E.extraUsPerExit.toFixed(2)} µs per exit; runs: ${each.join(", ")})`,
    "info",
    "-",
  );
  const on = E.runs.filter((r) => r.usage);
  const carried = on.map((r) => `${n(r.exitsWithUsage ?? 0)}/${n(r.exitsSeen)}`);
  add(
    "5 usage: storm exits carrying usage (client 0), usage on",
    carried.join(", "),
    "all",
    verdict(on.every((r) => r.complete && r.exitsWithUsage === r.exitsSeen)),
  );
}

function forkArgs(opt: Options, count: number): string[] {
  return ["fork", String(count), String(opt.workers)];
}

/** A fresh procMonitor with `opt.clients` clients; a warm-up storm, then the measured one. */
function slowdownMonitorRun(
  opt: Options,
  ctx: SlowdownContext,
  i: number,
  warmupForks: number,
): Promise<SlowdownRun> {
  return warmMonitorRun(opt, ctx, `D${i + 1}`, [], warmupForks, async (base) => {
    const s = await measuredStorm({
      ...base,
      label: `slowdown ${i + 1}, procMonitor alone`,
      args: forkArgs(opt, opt.slowdownForks),
    });
    return {
      listener: "procMonitor",
      ratePerS: s.storm.rate_per_s,
      made: s.storm.made,
      complete: s.complete,
    };
  });
}

/** A fresh forkstat (writing to a file); a warm-up storm, then the measured one. */
async function slowdownForkstatRun(
  opt: Options,
  ctx: SlowdownContext,
  warmupForks: number,
): Promise<SlowdownRun> {
  const file = `${ctx.sockDir}/forkstat-d.out`;
  const fs = await ForkstatProcess.start(["-e", ctx.events], file);
  try {
    const warm = await runStorm(ctx.storm, forkArgs(opt, warmupForks), 60_000);
    await warm.release();
    const held = await runStorm(ctx.storm, forkArgs(opt, opt.slowdownForks), 120_000);
    await held.release();
    const r = held.result;
    return { listener: "forkstat", ratePerS: r.rate_per_s, made: r.made, complete: null };
  } finally {
    await fs.stop();
    try {
      Deno.removeSync(file);
    } catch {
      // Never written.
    }
  }
}

// ---------------------------------------------------------------------------------------
// The run

interface MemorySample {
  label: string;
  /** k of the k/8 checkpoints, 0 for other samples. */
  checkpoint: number;
  events: number;
  rssKiB: number;
  hwmKiB: number;
}

interface Report {
  generated: string;
  command: string;
  options: Options;
  environment: Record<string, unknown>;
  phases: Record<string, unknown>;
  errors: string[];
  summary: { measure: string; value: string; target: string; result: string }[];
}

const MiB = (kib: number) => (kib / 1024).toFixed(1);
const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
const ms = (l: LatencySummary | null) =>
  l === null
    ? "n/a"
    : `${l.p50_ms.toFixed(2)} / ${l.p99_ms.toFixed(2)} / ${l.max_ms.toFixed(2)} ms`;

/** Builds scripts/NAME.c into DIR/NAME with gcc (warnings are errors); returns its path. */
async function buildC(dir: string, name: string): Promise<string> {
  const out = `${dir}/${name}`;
  const flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2"];
  const cc = await command("gcc", [...flags, "-o", out, `${ROOT}scripts/${name}.c`], 60_000);
  if (!cc.ok) throw new Error(`building scripts/${name}.c failed:\n${cc.out}`);
  return out;
}

async function run(opt: Options, sockDir: string, report: Report): Promise<void> {
  const ticks = await clockTicks();
  await Deno.mkdir(opt.out, { recursive: true });

  // The storm generator, and the many-clients phase's counting clients.
  const storm = await buildC(opt.out, "storm");
  const sink = await buildC(opt.out, "sink");

  const fsInfo = opt.forkstat
    ? await ensureForkstat()
    : { available: false, note: "not run (--no-forkstat)", version: "" };
  const env = report.environment;
  env.forkstat = fsInfo;
  if (!fsInfo.available) console.error(`bench: forkstat ${fsInfo.note}; measuring without it`);

  const marker = `pmbench-${crypto.randomUUID().slice(0, 8)}`;
  const execCmdline = `/bin/true ${marker}`;
  const stormArgs = {
    fork: (count: number) => forkArgs(opt, count),
    exec: () => ["exec", String(opt.execs), String(opt.workers), "/bin/true", marker],
    paced: () => [
      "paced-exec",
      String(opt.pacedRate * opt.pacedSeconds),
      String(Math.round(1e6 / opt.pacedRate)),
      "/bin/true",
      marker,
    ],
  };
  const events = "fork,exec,exit";
  const phases = report.phases;
  const t0 = Date.now();
  const progress = (what: string) =>
    console.error(`bench: [${((Date.now() - t0) / 1000).toFixed(0).padStart(3)} s] ${what}`);

  if (opt.onlyNats) {
    phases.N = await natsPhase(opt, { storm, sockDir, ticks, events }, progress);
    progress("done");
    return;
  }
  if (opt.usageOnly) {
    progress(`phase E only: usage cost, ${opt.usageRuns} × 2 fork storms of ${n(opt.usageForks)}`);
    phases.E = await usagePhase(
      opt,
      { storm, sink, sockDir, ticks, events, forkstat: false },
      progress,
    );
    return;
  }

  await MonitorProcess.prepareCaches();
  // The machine's own limit: the fork storm with no listener of ours running.
  {
    // 20,000 forks take 44 s at 450/s, the slowest day seen: this limit only catches a hang.
    const alone = await runStorm(storm, stormArgs.fork(Math.min(opt.forks, 20_000)), 300_000);
    await alone.release();
    env.stormAlone = {
      made: alone.result.made,
      ratePerS: alone.result.rate_per_s,
      note: "fork storm before procMonitor and forkstat start (other listeners may run)",
    };
    stormTimeScale = Math.max(1, 5000 / Math.max(alone.result.rate_per_s, 1));
    progress(
      `storm alone: ${n(alone.result.rate_per_s)} forks/s` +
        (stormTimeScale > 1 ? ` (storm time limits ×${stormTimeScale.toFixed(1)})` : ""),
    );
  }

  let forkstat: ForkstatProcess | null = null;
  if (fsInfo.available) {
    try {
      forkstat = await ForkstatProcess.start(["-e", events], `${sockDir}/forkstat.out`);
      env.forkstatCommand = `forkstat -e ${events} > FILE`;
    } catch (err) {
      fsInfo.available = false;
      fsInfo.note = `did not start: ${err instanceof Error ? err.message : err}`;
    }
  }

  // ---- Phase A: 10 clients, realtime (the default): quiet latency, fork storm, exec storm,
  // then more fork storms until a million events have passed (memory).
  {
    progress(`phase A: procMonitor -s SOCK -c 20 -e ${events}, ${opt.clients} clients`);
    const sock = `${sockDir}/a.sock`;
    const args = ["-s", sock, "-c", "20", "-e", events];
    const monitor = await MonitorProcess.start("A", args);
    const a: Record<string, unknown> = { monitorArgs: args };
    const own = new Set([monitor.pid, forkstat?.pid ?? 0]);
    const seen = env.otherListeners as { pid: number }[];
    for (const o of competitors(own)) {
      if (!seen.some((s) => s.pid === o.pid)) seen.push(o);
    }
    phases.A = a;
    let clients: BenchClient[] = [];
    let sinks: SinkClient[] = [];
    try {
      ({ clients, sinks } = await connectPhaseClients(monitor, sink, sock, opt));
      clients[0].trackPids = true;
      const memory: MemorySample[] = [];
      const sample = (label: string, checkpoint = 0) => {
        const m = memoryKiB(monitor.pid);
        if (m !== null) memory.push({ label, checkpoint, events: clients[0].totalLines, ...m });
      };
      sample("after start");
      a.memory = memory;
      // Every eighth of the way (the table shows the quarters).
      const checkpoints = [1, 2, 3, 4, 5, 6, 7, 8].map((k) => Math.round(k / 8 * opt.memoryEvents));
      let next = 0;
      clients[0].onProgress = (lines) => {
        while (next < checkpoints.length && lines >= checkpoints[next]) {
          sample(`${n(checkpoints[next])} events`, next + 1);
          next++;
        }
      };
      const base = { monitor, clients, sinks, forkstat, ticks, storm };
      const paced = () => {
        const count = clients.length + sinks.length;
        const label = `paced ~${opt.pacedRate}/s, ${count} client` + (count === 1 ? "" : "s");
        progress(`${label}: ${opt.pacedSeconds} s of ${execCmdline}`);
        return measuredStorm({
          ...base,
          label,
          args: stormArgs.paced(),
          latency: true,
          exactCmdline: execCmdline,
          timeoutMs: opt.pacedSeconds * 3000 + 60_000,
          settleMaxMs: 10_000,
        });
      };

      progress(`quiet: ${opt.quiet} processes 10 ms apart`);
      a.quiet = await measuredStorm({
        ...base,
        label: "quiet",
        args: ["paced", String(opt.quiet), "10000"],
        latency: true,
        timeoutMs: 60_000,
        settleMaxMs: 10_000,
      });

      progress(`fork storm: ${n(opt.forks)} forks over ${opt.workers} workers`);
      a.fork = await measuredStorm({
        ...base,
        label: "fork storm",
        args: stormArgs.fork(opt.forks),
        latency: true,
        timeoutMs: scaled(180_000),
        settleMaxMs: 30_000,
      });

      progress(`exec storm: ${n(opt.execs)} × ${execCmdline}`);
      a.exec = await measuredStorm({
        ...base,
        label: "exec storm",
        args: stormArgs.exec(),
        latency: true,
        exactCmdline: execCmdline,
        timeoutMs: scaled(120_000),
        settleMaxMs: 30_000,
      });

      a.paced = await paced();

      // Memory: more fork storms until the memory target has passed, within a time budget.
      const more: StormReport[] = [];
      a.memoryStorms = more;
      const budgetEnd = Date.now() + opt.memoryBudget * 1000;
      const size = Math.max(opt.forks, 1);
      while (
        clients[0].totalLines < opt.memoryEvents * 1.01 && Date.now() < budgetEnd &&
        more.length < 20 && !clients[0].eof && clients[0].error === null
      ) {
        const left = opt.memoryEvents * 1.01 - clients[0].totalLines;
        const count = Math.min(size, Math.max(1000, Math.ceil(left / 2)));
        progress(
          `memory: fork storm of ${n(count)} (${n(clients[0].totalLines)} events so far)`,
        );
        more.push(
          await measuredStorm({
            ...base,
            label: `memory storm ${more.length + 1}`,
            args: stormArgs.fork(count),
            latency: true,
            timeoutMs: scaled(180_000),
            settleMaxMs: 30_000,
          }),
        );
      }
      sample("end");
      a.eventsSeen = clients[0].totalLines;

      if (opt.idle > 0) {
        progress(`idle: ${opt.idle} s, ${opt.clients} clients connected, no storm`);
        a.idle = await idleWindow(monitor, { clients, sinks }, forkstat, ticks, opt.idle);
      }

      // CPU per event without the fan-out: the same fork storm with one client.
      for (const c of clients.splice(1)) await c.done();
      for (const k of sinks.splice(0)) await k.stop();
      const oneClient = Math.max(1000, Math.round(opt.forks / 2));
      progress(`fork storm of ${n(oneClient)} with 1 client (CPU without fan-out)`);
      a.forkOneClient = await measuredStorm({
        ...base,
        label: "fork storm, 1 client",
        args: stormArgs.fork(oneClient),
        latency: true,
        timeoutMs: scaled(180_000),
        settleMaxMs: 30_000,
      });
      a.pacedOneClient = await paced();
    } finally {
      for (const c of clients) await c.done();
      for (const k of sinks) await k.stop();
      const stop = await monitor.stop();
      a.exitCode = stop.code;
      a.stats = stop.stats;
      a.warnings = warnings(monitor.log);
      progress(`phase A done: ${stop.stats?.line ?? "no stats line"}`);
    }
  }

  // ---- Phase B: the exec storm with --no-bpf, for comparison.
  {
    progress(`phase B: procMonitor --no-bpf, exec storm`);
    const sock = `${sockDir}/b.sock`;
    const args = ["-s", sock, "-c", "20", "-e", events, "--no-bpf"];
    const monitor = await MonitorProcess.start("B", args);
    const b: Record<string, unknown> = { monitorArgs: args };
    phases.B = b;
    let clients: BenchClient[] = [];
    let sinks: SinkClient[] = [];
    try {
      ({ clients, sinks } = await connectPhaseClients(monitor, sink, sock, opt));
      clients[0].trackPids = true;
      b.exec = await measuredStorm({
        monitor,
        clients,
        sinks,
        forkstat,
        ticks,
        storm,
        label: "exec storm --no-bpf",
        args: stormArgs.exec(),
        latency: true,
        exactCmdline: execCmdline,
        timeoutMs: scaled(120_000),
        settleMaxMs: 30_000,
      });
    } finally {
      for (const c of clients) await c.done();
      for (const k of sinks) await k.stop();
      const stop = await monitor.stop();
      b.exitCode = stop.code;
      b.stats = stop.stats;
      b.warnings = warnings(monitor.log);
    }
  }
  if (forkstat !== null) {
    await forkstat.stop();
    try {
      env.forkstatOutputBytes = Deno.statSync(forkstat.file).size;
      Deno.removeSync(forkstat.file);
    } catch {
      // Never written.
    }
  }

  // ---- Phase C: many clients, then the same storm with one client that never reads.
  {
    progress(`phase C: ${opt.many} clients, fork storm of ${n(opt.manyForks)}`);
    const sock = `${sockDir}/c.sock`;
    const args = ["-s", sock, "-c", String(opt.many + 20), "-e", events];
    const monitor = await MonitorProcess.start("C", args);
    const c: Record<string, unknown> = { monitorArgs: args };
    phases.C = c;
    let clients: BenchClient[] = [];
    let sinks: SinkClient[] = [];
    let slow: BenchClient | null = null;
    try {
      // The first and the last client to connect are the bench's own, which time every
      // line (the hub writes to clients in the order they came); the ones between are
      // processes of their own that only count (scripts/sink.c).
      clients = await connectClients(monitor, sock, 1);
      sinks = await connectSinks(monitor, sink, sock, Math.max(0, opt.many - 2));
      if (opt.many > 1) clients.push(...await connectClients(monitor, sock, 1, opt.many - 1));
      clients[0].trackPids = true;
      const base = { monitor, clients, sinks, forkstat: null, ticks, storm, latency: true };
      c.all = await measuredStorm({
        ...base,
        label: `${opt.many} clients, fresh procMonitor`,
        args: stormArgs.fork(opt.manyForks),
        timeoutMs: scaled(180_000),
        settleMaxMs: 30_000,
      });
      // Once more, warm: the baseline for the run with the client that never reads.
      progress(`phase C: the same storm again (warm)`);
      c.allWarm = await measuredStorm({
        ...base,
        label: `${opt.many} clients, warm`,
        args: stormArgs.fork(opt.manyForks),
        timeoutMs: scaled(180_000),
        settleMaxMs: 30_000,
      });

      progress(`phase C: + 1 client that never reads, same storm`);
      [slow] = await connectClients(monitor, sock, 1, opt.many, false);
      const connected = [...monitor.log.matchAll(/Client "?(unix#\d+)"? connected to /g)];
      const slowName = connected[connected.length - 1][1];
      c.slowClient = slowName;
      c.withSlow = await measuredStorm({
        ...base,
        label: `${opt.many} clients + 1 not reading`,
        args: stormArgs.fork(opt.manyForks),
        timeoutMs: scaled(180_000),
        settleMaxMs: 30_000,
      });
      // Its fate: procMonitor drops it after 10 s stuck full (documented), so wait for that.
      const name = `"?${slowName}"?(?!\\d)`;
      const gone = new RegExp(`Disconnecting client ${name}|Client ${name} disconnected`);
      const fateWait = Date.now();
      const disconnected = await monitor.waitLog(gone, 15_000);
      c.slowDisconnectWaitMs = Date.now() - fateWait;
      await slow.drain(3000);
      const mentions = new RegExp(name);
      c.slow = {
        disconnectedInLog: disconnected,
        log: monitor.log.split("\n").filter((l) => mentions.test(l))
          .map((l) => l.replace(/^\S+ \S+ \S+ /, "")),
        linesReadAfterwards: slow.totalLines,
        lostLines: slow.counts.lost,
        eof: slow.eof,
        error: slow.error,
      };
    } finally {
      for (const cl of clients) await cl.done();
      for (const k of sinks) await k.stop();
      await slow?.done();
      const stop = await monitor.stop();
      c.exitCode = stop.code;
      c.stats = stop.stats;
      c.warnings = warnings(monitor.log);
    }
  }
  if (opt.slowdownRuns > 0) {
    progress(
      `phase D: workload slowdown, ${opt.slowdownRuns} × ${n(opt.slowdownForks)} forks ` +
        "with procMonitor alone and with forkstat alone",
    );
    phases.D = await slowdownPhase(opt, {
      storm,
      sink,
      sockDir,
      ticks,
      events,
      forkstat: fsInfo.available,
    }, progress);
  }
  if (opt.natsForks > 0) {
    phases.N = await natsPhase(opt, { storm, sockDir, ticks, events }, progress);
  }
  if (opt.usageRuns > 0) {
    progress(`phase E: usage cost, ${opt.usageRuns} × 2 fork storms of ${n(opt.usageForks)}`);
    phases.E = await usagePhase(
      opt,
      { storm, sink, sockDir, ticks, events, forkstat: false },
      progress,
    );
  }
  progress("done");
}

// ---------------------------------------------------------------------------------------
// Phase N: NATS

/** One fork storm of phase N, with or without `--nats`. */
interface NatsRun {
  nats: boolean;
  storm: StormReport;
  /** Messages the stream gained, and lines the client read, from before the storm until
   * the stream stopped growing (other processes' events included in both). */
  streamMessages: number | null;
  clientLines: number;
  exitCode: number | null;
  warnings: string[];
}

interface NatsPhaseReport {
  forks: number;
  runs: NatsRun[];
  /** streamMessages - clientLines of the NATS run: 0 when nothing was lost. */
  difference: number | null;
  addedUsPerEvent: number | null;
}

/** The stream's message count once it has not changed for 1.5 s (at most 60 s). */
async function settledStreamCount(nc: NatsConnection, stream: string): Promise<number> {
  const deadline = Date.now() + 60_000;
  let last = -1;
  let since = Date.now();
  while (Date.now() < deadline) {
    let count = last;
    try {
      count = (await (await jetstreamManager(nc)).streams.info(stream)).state.messages;
    } catch (error) {
      if (!(error instanceof Error)) throw error; // not created yet
    }
    if (count !== last) {
      last = count;
      since = Date.now();
    } else if (count >= 0 && Date.now() - since >= 1500) {
      return count;
    }
    await sleep(200);
  }
  throw new Error(`the stream ${stream} did not settle within 60 s`);
}

/**
 * Phase N: the fork storm with 1 client, first plain, then with `--nats --nats-stream` to a
 * one-node nats-server on loopback: the CPU per event it adds, and no loss, checked by the
 * stream's message count against the lines the client read over the same span.
 */
async function natsPhase(
  opt: Options,
  ctx: { storm: string; sockDir: string; ticks: number; events: string },
  progress: (what: string) => void,
): Promise<NatsPhaseReport> {
  await using cluster = await NatsCluster.start({ nodes: 1 });
  const nc = await natsConnect({ servers: cluster.urls });
  const runs: NatsRun[] = [];
  try {
    for (const nats of [false, true]) {
      const sock = `${ctx.sockDir}/n${runs.length}.sock`;
      const natsArgs = ["--nats", cluster.url, "--nats-stream", "BENCH", "--host-id", "bench"];
      const args = ["-s", sock, "-c", "20", "-e", ctx.events, ...(nats ? natsArgs : [])];
      progress(`phase N: fork storm of ${n(opt.natsForks)}, 1 client${nats ? ", --nats" : ""}`);
      const monitor = await MonitorProcess.start(nats ? "N-nats" : "N", args);
      let clients: BenchClient[] = [];
      try {
        clients = await connectClients(monitor, sock, 1);
        clients[0].trackPids = true;
        const stream0 = nats ? await settledStreamCount(nc, "BENCH") : 0;
        const lines0 = clients[0].totalLines;
        const storm = await measuredStorm({
          monitor,
          clients,
          forkstat: null,
          ticks: ctx.ticks,
          storm: ctx.storm,
          label: `fork storm, 1 client${nats ? ", --nats" : ""}`,
          args: forkArgs(opt, opt.natsForks),
          latency: false,
          timeoutMs: scaled(180_000),
          settleMaxMs: 30_000,
        });
        const streamMessages = nats ? await settledStreamCount(nc, "BENCH") - stream0 : null;
        const clientLines = clients[0].totalLines - lines0;
        for (const c of clients.splice(0)) await c.done();
        const stop = await monitor.stop();
        runs.push({
          nats,
          storm,
          streamMessages,
          clientLines,
          exitCode: stop.code,
          warnings: warnings(monitor.log),
        });
        progress(
          `phase N: ${storm.monitorUsPerEvent} µs/event` +
            (nats ? `, stream +${n(streamMessages!)} for ${n(clientLines)} client lines` : ""),
        );
      } finally {
        for (const c of clients) await c.done();
        await monitor.stop();
      }
    }
  } finally {
    await nc.close();
  }
  const [plain, withNats] = runs;
  return {
    forks: opt.natsForks,
    runs,
    difference: withNats?.streamMessages == null
      ? null
      : withNats.streamMessages - withNats.clientLines,
    addedUsPerEvent: plain && withNats
      ? round(withNats.storm.monitorUsPerEvent - plain.storm.monitorUsPerEvent, 2)
      : null,
  };
}

/** procMonitor's warning and error lines (first 40), without their time stamps. */
function warnings(log: string): string[] {
  return log.split("\n").filter((l) => /\[(WRN|ERR|FTL)\]/.test(l)).slice(0, 40);
}

// ---------------------------------------------------------------------------------------
// The summary table

type AddRow = (measure: string, value: string, target: string, result: string) => void;

const verdict = (ok: boolean) => (ok ? "PASS" : "FAIL");

function summarize(report: Report): void {
  const rows = report.summary;
  const add: AddRow = (measure, value, target, result) =>
    rows.push({ measure, value, target, result });
  const A = report.phases.A as Record<string, unknown> | undefined;
  const B = report.phases.B as Record<string, unknown> | undefined;
  const C = report.phases.C as Record<string, unknown> | undefined;
  const fork = A?.fork as StormReport | undefined;
  const exec = A?.exec as StormReport | undefined;
  const quiet = A?.quiet as StormReport | undefined;
  const one = A?.forkOneClient as StormReport | undefined;
  const paced = A?.paced as StormReport | undefined;
  const pacedOne = A?.pacedOneClient as StormReport | undefined;
  const more = (A?.memoryStorms as StormReport[] | undefined) ?? [];
  const execNoBpf = B?.exec as StormReport | undefined;
  const sinkText = (k: SinkReport | null) =>
    k === null
      ? ""
      : ` and ${k.count} counting clients ${n(k.linesMin)}..${n(k.linesMax)} lines, ` +
        `${n(k.lostLines)} lost lines`;
  const received = (s: StormReport) =>
    `${n(s.receivedMin)}..${n(s.receivedMax)} of ${n(s.expectedPerClient)} ` +
    `(${s.clients.length} clients; ${
      n(Math.max(0, s.monitorEvents - (s.clients[0]?.received ?? 0)))
    } other events)${sinkText(s.sinks)}`;
  const rate = (s: StormReport) => `${n(s.storm.rate_per_s)}/s (${n(s.eventRatePerS)} events/s)`;

  if (fork) {
    add(
      `1 no loss: fork storm, ${n(fork.storm.made)} forks at ${rate(fork)}`,
      received(fork),
      "= made",
      verdict(fork.complete),
    );
  }
  if (exec) {
    add(
      `1 no loss: exec storm, ${n(exec.storm.made)} execs at ${rate(exec)}`,
      received(exec),
      "= made",
      verdict(exec.complete),
    );
  }
  if (more.length > 0) {
    const made = more.reduce((a, s) => a + s.storm.made, 0);
    const min = more.reduce((a, s) => a + s.receivedMin, 0);
    const max = more.reduce((a, s) => a + s.receivedMax, 0);
    const short = more.filter((s) => !s.complete).length;
    add(
      `1 no loss: ${more.length} more fork storms, ${n(made)} forks`,
      `${n(min)}..${n(max)} of ${n(made * 2)} (${more[0].clients.length} clients)` +
        sinkText(sumSinks(more)) +
        (short > 0 ? `; ${short} storm(s) short` : ""),
      "= made",
      verdict(short === 0),
    );
  }
  if (one) {
    add(
      `1 no loss: fork storm, ${n(one.storm.made)} forks, 1 client`,
      received(one),
      "= made",
      verdict(one.complete),
    );
  }
  for (const s of [paced, pacedOne]) if (s) pacedNoLossRow(add, s, received(s));
  const stormsA = [quiet, fork, exec, paced, ...more, one, pacedOne]
    .filter((s) => s !== undefined);
  if (stormsA.length > 0) {
    const lost = stormsA.reduce((a, s) => a + s.lostEvents, 0);
    const lines = stormsA.reduce(
      (a, s) => a + s.clients.reduce((b, c) => b + c.lost.length, 0) + (s.sinks?.lostLines ?? 0),
      0,
    );
    add(
      "1 no loss: `lost` lines at the clients (phase A)",
      `${n(lines)} lines, ${n(lost)} events`,
      "0",
      verdict(lines === 0),
    );
  }
  if (stormsA.length > 0) {
    const orphans = stormsA.reduce((a, s) => a + (s.clients[0]?.exitsNoParent ?? 0), 0);
    add(
      "1 exits the kernel sent with parent 0 (counted above by pid)",
      `${n(orphans)} (the parent reaped the child before proc_exit_connector ran)`,
      "info",
      "-",
    );
  }
  const statsA = A?.stats as MonitorStats | null | undefined;
  if (A) {
    add(
      "1 no loss: procMonitor's drops at shutdown (phase A)",
      statsA
        ? `${n(statsA.kernelLost)} kernel, ${n(statsA.ringLost)} ring, of ${n(statsA.events)}`
        : "no stats line logged",
      "0 kernel",
      verdict(statsA != null && statsA.kernelLost === 0 && statsA.ringLost === 0),
    );
  }
  if (exec?.exec) {
    add(
      "2 exec cmdline exact (realtime reader)",
      `${pct(exec.exec.accuracy)} (${n(exec.exec.exact)}/${n(exec.storm.made)}; ` +
        `${n(exec.exec.empty)} empty, ${n(exec.exec.preExec)} pre-exec)`,
      ">= 99%",
      verdict(exec.exec.accuracy >= 0.99),
    );
  }
  if (execNoBpf?.exec) {
    add(
      "2 exec cmdline exact (--no-bpf)",
      `${pct(execNoBpf.exec.accuracy)} (${n(execNoBpf.exec.exact)}/${n(execNoBpf.storm.made)}; ` +
        `${n(execNoBpf.exec.empty)} empty, ${n(execNoBpf.exec.preExec)} pre-exec)`,
      ">= 99%",
      verdict(execNoBpf.exec.accuracy >= 0.99),
    );
    const statsB = B?.stats as MonitorStats | null | undefined;
    add(
      "1 no loss: exec storm --no-bpf",
      `${received(execNoBpf)}; drops ${statsB ? `${statsB.kernelLost}/${statsB.ringLost}` : "?"}`,
      "= made",
      verdict(execNoBpf.complete && statsB != null && statsB.kernelLost === 0),
    );
    if (execNoBpf.forkstat) {
      add(
        "1 CPU us/event, exec storm --no-bpf",
        `${execNoBpf.monitorUsPerEvent} vs forkstat ${execNoBpf.forkstat.usPerEvent}`,
        "info",
        "-",
      );
    }
  }
  if (exec?.forkstat) {
    const f = exec.forkstat;
    add(
      "2 forkstat exec cmdline exact (same storm)",
      `${pct(f.execExact / exec.storm.made)} (${n(f.execExact)}/${n(exec.storm.made)}; ` +
        `saw ${n(f.execs)} execs)`,
      "info",
      "-",
    );
  }
  for (const s of [fork, exec, one, paced, pacedOne]) {
    if (!s) continue;
    const f = s.forkstat;
    const u = s.monitorUsage;
    const mine = `${s.monitorUsPerEvent.toFixed(1)} (${s.monitorCpuS.toFixed(2)} s: ` +
      `${u.userS.toFixed(2)} user + ${u.sysS.toFixed(2)} sys, ${n(s.monitorEvents)} events)`;
    add(
      `3 CPU µs/event, ${s.label}: procMonitor vs forkstat`,
      f
        ? `${mine} vs ${f.usPerEvent.toFixed(1)} (${f.cpuS.toFixed(2)} s, ${n(f.events)} events)`
        : `${mine}; forkstat n/a`,
      "<= forkstat",
      f ? verdict(s.monitorUsPerEvent <= f.usPerEvent) : "n/a",
    );
  }
  for (const s of [fork, exec, paced, pacedOne]) if (s) switchesRow(add, s);
  if (quiet) {
    add(
      `4 latency p50/p99/max, quiet (${n(quiet.storm.made)} processes 10 ms apart)`,
      ms(quiet.latency),
      "p99 < 2 ms",
      verdict(quiet.latency !== null && quiet.latency.p99_ms < 2),
    );
  }
  if (fork?.latency) {
    add(
      "4 latency p50/p99/max, fork storm",
      ms(fork.latency),
      "p99 < 5 ms",
      verdict(fork.latency.p99_ms < 5),
    );
  }
  for (const s of [exec, one, ...more.slice(0, 1), paced, pacedOne]) {
    if (s?.latency) add(`4 latency p50/p99/max, ${s.label}`, ms(s.latency), "info", "-");
  }
  if (fork) {
    const u = fork.monitorUsage;
    add(
      "4 procMonitor JS thread in the fork storm: on CPU / waiting for one",
      `${u.mainRunS.toFixed(2)} s / ${u.mainWaitS.toFixed(2)} s over ${
        fork.storm.elapsed_s.toFixed(1)
      } s (bench client: ${fork.benchUsage.mainRunS.toFixed(2)} / ${
        fork.benchUsage.mainWaitS.toFixed(2)
      } s)`,
      "info",
      "-",
    );
  }
  for (const s of [fork, one]) {
    if (!s) continue;
    const parts = Object.entries(s.monitorUsage.threads).sort((x, y) =>
      (y[1].userS + y[1].sysS) - (x[1].userS + x[1].sysS)
    ).map(([name, t]) => `${name} ${t.userS.toFixed(2)}+${t.sysS.toFixed(2)}`);
    add(`3 procMonitor CPU by thread (user+sys s), ${s.label}`, parts.join(", "), "info", "-");
  }
  const memory = (A?.memory as MemorySample[] | undefined) ?? [];
  if (memory.length > 0) {
    const quarters = [2, 4, 6, 8].map((k) => memory.find((m) => m.checkpoint === k));
    const shown = [memory[0], ...quarters].filter((m) => m !== undefined);
    const value = shown.map((m) =>
      `${m.checkpoint === 0 ? "start" : m.label.replace(" events", "")}: ${MiB(m.rssKiB)}`
    ).join(", ");
    // Flat: no growth over the second half (the first half is the V8 heap warming up);
    // the growth since the first quarter is shown too.
    const [q1, half, , last] = quarters;
    const end = memory[memory.length - 1];
    const plus = (a: MemorySample, b: MemorySample) => {
      const g = b.rssKiB - a.rssKiB;
      return `${g >= 0 ? "+" : ""}${MiB(g)} MiB (${g >= 0 ? "+" : ""}${
        (g / a.rssKiB * 100).toFixed(1)
      }%) from ${a.label.replace(" events", "")}`;
    };
    let growth: string;
    let result = "FAIL";
    if (q1 && half && last) {
      growth = `${plus(half, last)}; ${plus(q1, last)}`;
      result = verdict(last.rssKiB - half.rssKiB <= half.rssKiB * 0.1);
    } else {
      growth = `only ${n(end.events)} events reached`;
    }
    add(`5 memory: RSS MiB by events`, value, "flat", "-");
    add(`5 memory: RSS growth to the last checkpoint`, growth, "< +10% over 2nd half", result);
    peakMemoryRow(add, memory, report.options);
  }
  const all = C?.all as StormReport | undefined;
  const warm = C?.allWarm as StormReport | undefined;
  const withSlow = C?.withSlow as StormReport | undefined;
  const fanout = (s: StormReport) =>
    `bench clients ${received(s)}, lost ${n(s.lostEvents)}; ` +
    `latency p50/p99 ${s.latency?.p50_ms.toFixed(1)}/${s.latency?.p99_ms.toFixed(1)} ms`;
  const clientCount = (s: StormReport) => s.clients.length + (s.sinks?.count ?? 0);
  if (all) {
    add(
      `6 clients: ${clientCount(all)} clients, ${n(all.storm.made)}-fork storm at ${rate(all)}, ` +
        "fresh procMonitor",
      fanout(all),
      "all receive all",
      verdict(all.complete),
    );
    add(
      `4 latency p50/p99/max, ${clientCount(all)} clients (fresh procMonitor)`,
      ms(all.latency),
      "p99 < 20 ms",
      verdict(all.latency !== null && all.latency.p99_ms < 20),
    );
    const u = all.monitorUsage;
    add(
      `6 procMonitor JS thread in that storm: on CPU / waiting`,
      `${u.mainRunS.toFixed(2)} s / ${u.mainWaitS.toFixed(2)} s over ${
        all.storm.elapsed_s.toFixed(1)
      } s; CPU ${all.monitorCpuS.toFixed(2)} s (bench ${all.benchCpuS.toFixed(2)} s)`,
      "info",
      "-",
    );
  }
  if (warm) {
    add(
      `6 clients: the same storm again (warm) at ${rate(warm)}`,
      fanout(warm),
      "all receive all",
      verdict(warm.complete),
    );
  }
  if (withSlow) {
    add(
      `6 clients: + 1 client that never reads, same storm at ${rate(withSlow)}`,
      fanout(withSlow),
      "unchanged",
      verdict(withSlow.complete),
    );
    const slow = C?.slow as
      | { disconnectedInLog: boolean; log: string[]; linesReadAfterwards: number }
      | undefined;
    if (slow) {
      const fate = slow.log.filter((l) => !/ connected to /.test(l)).map((l) =>
        l.replace(/^\[\w+\] [\w.]+: /, "")
      ).join("; ");
      const overflowed = slow.disconnectedInLog || /losing|not keeping up/.test(fate);
      add(
        "6 clients: the non-reading client's fate (log)",
        fate ||
          `nothing logged; it read ${n(slow.linesReadAfterwards)} lines later ` +
            "(the storm did not fill its queue)",
        "lost or disconnect",
        overflowed ? "PASS" : "-",
      );
    }
  }
  const D = report.phases.D as SlowdownReport | undefined;
  if (D) slowdownRow(add, D, report.environment.stormAlone as { ratePerS: number } | undefined);
  const E = report.phases.E as UsageCostReport | undefined;
  if (E) usageCostRow(add, E);
  const idle = A?.idle as IdleReport | undefined;
  if (idle) idleRows(add, idle);
  const N = report.phases.N as NatsPhaseReport | undefined;
  if (N) natsRows(add, N);
  for (const e of report.errors) add("error", e.split("\n")[0].slice(0, 160), "-", "FAIL");
}

/** Phase N: no loss into the stream, and the CPU per event NATS adds. */
function natsRows(add: AddRow, N: NatsPhaseReport): void {
  const [plain, withNats] = N.runs;
  if (!withNats) return;
  const s = withNats.storm;
  add(
    `9 NATS: fork storm, ${n(s.storm.made)} forks at ${n(s.storm.rate_per_s)}/s, into a ` +
      "1-node JetStream stream",
    `stream +${n(withNats.streamMessages ?? 0)} messages for ${n(withNats.clientLines)} ` +
      `client lines; client ${s.complete ? "complete" : "short"}`,
    "0 lost",
    verdict(N.difference === 0 && s.complete),
  );
  if (plain) {
    add(
      "9 NATS: CPU per event added by --nats --nats-stream (1 client)",
      `${N.addedUsPerEvent} µs (${plain.storm.monitorUsPerEvent} → ${s.monitorUsPerEvent})`,
      "-",
      "-",
    );
  }
}

/** Delivery and cmdline accuracy of a paced-load run. */
function pacedNoLossRow(add: AddRow, s: StormReport, received: string): void {
  const exact = s.exec ? `; cmdline exact ${pct(s.exec.accuracy)}` : "";
  add(
    `1 no loss: ${s.label} exec (${n(s.storm.made)} at ${n(s.storm.rate_per_s)}/s)`,
    received + exact,
    "= made",
    verdict(s.complete),
  );
}

/** Context switches per event, procMonitor (all threads) beside forkstat, in one storm. */
function switchesRow(add: AddRow, s: StormReport): void {
  const u = s.monitorUsage;
  const exited = u.threadsExited > 0
    ? `; ${u.threadsExited} thread(s) exited meanwhile, not counted`
    : "";
  const per = (x: number, events: number) => events > 0 ? (x / events).toFixed(2) : "n/a";
  const mine = `${per(u.ctxSwitches, s.monitorEvents)} (${n(u.ctxSwitches)} / ` +
    `${n(s.monitorEvents)} events${exited})`;
  const f = s.forkstat;
  const theirs = f
    ? ` vs ${per(f.usage.ctxSwitches, f.events)} (${n(f.usage.ctxSwitches)} / ` +
      `${n(f.events)} events)`
    : "; forkstat n/a";
  add(`3 context switches/event, ${s.label}: procMonitor vs forkstat`, mine + theirs, "info", "-");
}

/** Peak resident memory from start through the memory storms (SPEC: at most 64 MiB). */
function peakMemoryRow(add: AddRow, memory: MemorySample[], opt: Options): void {
  const end = memory[memory.length - 1];
  const maxRss = Math.max(...memory.map((m) => m.rssKiB));
  const reached = end.events >= opt.memoryEvents;
  add(
    `5 memory: peak RSS, start through ${n(end.events)} events, ${opt.clients} clients`,
    `max sampled RSS ${MiB(maxRss)} MiB (${memory.length} samples); VmHWM at the end ` +
      `${MiB(end.hwmKiB)} MiB` + (reached ? "" : `; only ${n(end.events)} events reached`),
    "VmHWM <= 64 MiB",
    verdict(reached && end.hwmKiB <= 64 * 1024),
  );
}

/** The storm's own rate with procMonitor alone vs with forkstat alone (phase D). */
function slowdownRow(add: AddRow, d: SlowdownReport, alone?: { ratePerS: number }): void {
  const list = (who: SlowdownRun["listener"]) =>
    d.runs.filter((r) => r.listener === who).map((r) => n(r.ratePerS)).join(", ");
  const short = d.runs.filter((r) => r.complete === false).length;
  const fs = d.medianForkstatPerS;
  const runs = d.runs.filter((r) => r.listener === "procMonitor").length;
  add(
    `7 workload slowdown: fork storm rate with procMonitor (${d.clients} clients) vs with ` +
      `forkstat instead; median of ${runs} alternating ` +
      `${n(d.forks)}-fork runs, one listener at a time`,
    `${n(d.medianMonitorPerS)}/s (${list("procMonitor")}) vs ` +
      (fs === null ? "forkstat n/a" : `${n(fs)}/s (${list("forkstat")})`) +
      (alone ? `; storm alone ${n(alone.ratePerS)}/s` : "") +
      (short > 0 ? `; ${short} procMonitor run(s) incomplete` : ""),
    ">= forkstat",
    fs === null ? "n/a" : verdict(d.medianMonitorPerS >= fs && short === 0),
  );
}

/** Wakeups a second with nothing happening, procMonitor and forkstat in the same window. */
function idleRows(add: AddRow, idle: IdleReport): void {
  const side = (s: IdleSide) =>
    `${s.wakeupsPerS.toFixed(2)}/s (${n(s.ctxSwitches)} context switches, ` +
    `${n(s.cpuTicks)} CPU ticks = ${(s.usage.cpuS * 1000).toFixed(0)} ms` +
    (s.usage.threadsExited > 0 ? `; ${s.usage.threadsExited} thread(s) exited, not counted` : "") +
    ")";
  const arrived = `; ${n(idle.forksOnMachine)} processes/threads created on the machine, ` +
    `${n(idle.eventsArrived)} events at client 0` +
    (idle.clientsConnected < idle.clients
      ? `; only ${idle.clientsConnected} of ${idle.clients} clients still connected`
      : "");
  add(
    `8 idle: wakeups/s over ${idle.seconds.toFixed(0)} s, ${idle.clients} clients connected ` +
      "(context switches of all threads / s)",
    side(idle.monitor) + arrived,
    "<= 1/s",
    verdict(idle.monitor.wakeupsPerS <= 1),
  );
  if (idle.forkstat) {
    add("8 idle: forkstat in the same window", side(idle.forkstat), "info", "-");
  }
}

// ---------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const opt = options();
  MonitorProcess.extraArgs = opt.monitorFlags;
  if (Deno.uid() !== 0) {
    console.error(
      "bench: the proc connector needs root here; run it as root (sudo make bench).",
    );
    return 1;
  }
  const sockDir = await Deno.makeTempDir({ prefix: "pmbench-" });
  const cleanup = () => {
    killAllNow();
    try {
      Deno.removeSync(sockDir, { recursive: true });
    } catch {
      // Gone already.
    }
  };
  const onSignal = () => {
    console.error("\nbench: interrupted; stopping everything it started");
    cleanup();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  // The last resort: the whole bench never runs past 12 minutes on a machine that forks
  // 5,000 times a second, longer in proportion on a slower one (known once the storm alone
  // has run), and longer by what --memory-budget adds to its default.
  const startedAt = Date.now();
  const limitMs = () => scaled(12 * 60_000) + Math.max(0, opt.memoryBudget - 150) * 1000;
  let watchdog: ReturnType<typeof setTimeout> | undefined;
  const guard = () => {
    const left = startedAt + limitMs() - Date.now();
    if (left > 0) {
      watchdog = setTimeout(guard, left);
      Deno.unrefTimer(watchdog);
      return;
    }
    const minutes = Math.round(limitMs() / 60_000);
    console.error(`bench: still running after ${minutes} minutes; stopping everything it started`);
    cleanup();
    Deno.exit(1);
  };
  guard();

  const report: Report = {
    generated: new Date().toISOString(),
    command: `deno run -A scripts/bench.ts ${Deno.args.join(" ")}`.trim(),
    options: opt,
    environment: {
      kernel: Deno.osRelease(),
      cpus: navigator.hardwareConcurrency,
      memTotal: /MemTotal:\s+(.*)/.exec(readOr("/proc/meminfo", ""))?.[1] ?? "",
      pidMax: Number(readOr("/proc/sys/kernel/pid_max", "0")),
      deno: Deno.version.deno,
      loadAvgBefore: readOr("/proc/loadavg", ""),
      monitorV8Flags: monitorV8Flags(),
      otherListeners: competitors(new Set()),
    },
    phases: {},
    errors: [],
    summary: [],
  };
  const head = await command("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"], 5000);
  const dirty = await command("git", ["-C", ROOT, "status", "--porcelain"], 5000);
  report.environment.git = {
    head: head.ok ? head.out : "unknown",
    modified: dirty.ok ? dirty.out.split("\n").filter((l) => l !== "") : [],
  };
  const started = Date.now();
  const forks0 = forksSinceBoot();
  try {
    await run(opt, sockDir, report);
  } catch (err) {
    const msg = err instanceof Error ? (err.stack ?? err.message) : String(err);
    report.errors.push(msg);
    console.error(`bench: ${msg}`);
  } finally {
    measuring.latency = null;
    cleanup();
    clearTimeout(watchdog);
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
  report.environment.durationS = Math.round((Date.now() - started) / 1000);
  report.environment.loadAvgAfter = readOr("/proc/loadavg", "");
  // Other work on the machine shares the CPUs and sends the listeners its events.
  report.environment.forks = {
    onMachine: forksSinceBoot() - forks0,
    byStorms: stormForks.count,
    note: "processes and threads created during the bench (/proc/stat), and by the storms",
  };

  summarize(report);
  const env = report.environment;
  const fsInfo = env.forkstat as { note: string; version: string } | undefined;
  const others = env.otherListeners as { pid: number; cmdline: string }[];
  console.log(
    `\nprocMonitor benchmark: ${env.cpus} CPUs, kernel ${env.kernel}, pid_max ${env.pidMax}, ` +
      `Deno ${env.deno}, git ${(env.git as { head: string }).head}, forkstat: ${
        fsInfo ? `${fsInfo.version || "-"} (${fsInfo.note})` : "not checked"
      }, ${env.durationS} s` +
      (env.stormAlone
        ? `; fork storm alone: ${n((env.stormAlone as { ratePerS: number }).ratePerS)}/s`
        : ""),
  );
  const forks = env.forks as { onMachine: number; byStorms: number };
  if (forks.onMachine - forks.byStorms > 10_000) {
    console.log(
      `WARNING: ${n(forks.onMachine - forks.byStorms)} processes/threads were created on the ` +
        "machine besides the storms' during the bench (other work shared the CPUs and sent " +
        "its events to the listeners)",
    );
  }
  if (others.length > 0) {
    console.log(
      `WARNING: ${others.length} other proc-connector listener(s) ran during the bench ` +
        `(they share the CPUs): ${others.map((o) => o.pid).join(", ")}`,
    );
  }
  console.log();
  console.log(
    table(
      ["SPEC §8 measure", "value", "target", "result"],
      report.summary.map((r) => [r.measure, r.value, r.target, r.result]),
    ),
  );
  const path = `${opt.out}/report.json`;
  try {
    await Deno.mkdir(opt.out, { recursive: true });
    await Deno.writeTextFile(path, JSON.stringify(report, null, 2) + "\n");
    console.log(`\nReport: ${path}`);
  } catch (err) {
    console.error(`bench: cannot write ${path}: ${err instanceof Error ? err.message : err}`);
    return 1;
  }
  return report.errors.length > 0 ? 1 : 0;
}

Deno.exit(await main());
