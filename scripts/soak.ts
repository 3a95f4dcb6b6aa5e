/**
 * The soak test: `make soak` (root; `make soak ARGS_SOAK="--help"`).
 *
 * Runs procMonitor from source with 10 Unix-socket clients through alternating fork and
 * exec storms until at least a million events have passed, and every 10 s samples its
 * resident size and open file descriptors (from /proc) and, through SIGUSR2's stats line,
 * its process-table size and bytes and the largest client queue. A daemon that leaks shows
 * it here: every series must be flat in the second half (its peak there no higher than in
 * the first half, within a margin). Prints a table and writes bench/out/soak.json.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  BenchClient,
  children,
  killAllNow,
  MonitorProcess,
  n,
  ROOT,
  runStorm,
  table,
} from "./bench_support.ts";
import { sleep } from "../lib/timers.ts";

const HELP = `Usage: make soak [ARGS_SOAK="options"]   (as root)

Options:
  --events N     events to pass (default 1000000)
  --clients N    Unix-socket clients (default 10)
  --every S      seconds between samples (default 10)
  --budget S     most seconds to spend (default 600)
  --out DIR      where soak.json goes (default bench/out)
  -h, --help`;

interface Sample {
  seconds: number;
  events: number;
  rssKiB: number;
  fds: number;
  tableSize: number;
  tableBytes: number;
  clients: number;
  queueBytes: number;
}

const STATS = new RegExp(
  "Stats: (\\d+) kernel events.*table (\\d+) processes, (\\d+) bytes; (\\d+) clients, " +
    "largest queue (\\d+) bytes",
  "g",
);

function options() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      events: { type: "string", default: "1000000" },
      clients: { type: "string", default: "10" },
      every: { type: "string", default: "10" },
      budget: { type: "string", default: "600" },
      out: { type: "string", default: `${ROOT}bench/out` },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const int = (name: string, text: string) => {
    const v = Number(text);
    if (!Number.isInteger(v) || v < 1) {
      console.error(`soak: --${name} must be a positive integer, not "${text}"`);
      Deno.exit(2);
    }
    return v;
  };
  return {
    events: int("events", values.events),
    clients: int("clients", values.clients),
    everyS: int("every", values.every),
    budgetS: int("budget", values.budget),
    out: values.out,
  };
}

/** One sample: /proc for RSS and fds, the monitor's own stats line for the rest. */
async function sample(monitor: MonitorProcess, t0: number): Promise<Sample | null> {
  const before = monitor.count(STATS);
  Deno.kill(monitor.pid, "SIGUSR2");
  const deadline = Date.now() + 5000;
  while (monitor.count(STATS) === before && Date.now() < deadline) await sleep(20);
  const lines = [...monitor.log.matchAll(STATS)];
  const last = lines.at(-1);
  if (last === undefined || lines.length === before) return null;
  const status = await Deno.readTextFile(`/proc/${monitor.pid}/status`);
  let fds = 0;
  for await (const _ of Deno.readDir(`/proc/${monitor.pid}/fd`)) fds++;
  return {
    seconds: Math.round((Date.now() - t0) / 1000),
    events: Number(last[1]),
    rssKiB: Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0),
    fds,
    tableSize: Number(last[2]),
    tableBytes: Number(last[3]),
    clients: Number(last[4]),
    queueBytes: Number(last[5]),
  };
}

/** Whether `key` is flat: its second-half peak at most `margin` above its first-half peak. */
function flat(samples: Sample[], key: keyof Sample, margin: (firstPeak: number) => number) {
  const half = Math.floor(samples.length / 2);
  const peak = (xs: Sample[]) => Math.max(...xs.map((s) => s[key]));
  const first = peak(samples.slice(0, half));
  const second = peak(samples.slice(half));
  return { first, second, flat: second <= first + margin(first) };
}

async function buildStorm(out: string): Promise<string> {
  const storm = `${out}/storm`;
  const cc = await new Deno.Command("gcc", {
    args: ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-o", storm, `${ROOT}scripts/storm.c`],
  }).output();
  if (!cc.success) throw new Error(new TextDecoder().decode(cc.stderr));
  return storm;
}

async function soak(opt: ReturnType<typeof options>): Promise<boolean> {
  await Deno.mkdir(opt.out, { recursive: true });
  const storm = await buildStorm(opt.out);
  const dir = await Deno.makeTempDir({ prefix: "procmonitor-soak-" });
  const sock = `${dir}/pm.sock`;
  await MonitorProcess.prepareCaches();
  const monitor = await MonitorProcess.start("soak", ["-s", sock, "-c", "20", "-e", "all"]);
  const clients: BenchClient[] = [];
  const samples: Sample[] = [];
  try {
    for (let i = 0; i < opt.clients; i++) {
      const c = await BenchClient.connect(sock, i);
      c.measureLatency = false;
      c.start();
      clients.push(c);
    }
    const t0 = Date.now();
    let next = t0;
    let round = 0;
    const first = await sample(monitor, t0);
    if (first !== null) samples.push(first);
    while (Date.now() - t0 < opt.budgetS * 1000) {
      const last = samples.at(-1);
      if (last !== undefined && last.events >= opt.events && samples.length >= 6) break;
      const args = round++ % 3 === 2 ? ["exec", "3000", "2", "/bin/true", "soak"] : [
        "fork",
        "30000",
        "2",
      ];
      const held = await runStorm(storm, args, 120_000);
      await held.release();
      if (Date.now() >= next) {
        const s = await sample(monitor, t0);
        if (s !== null) {
          samples.push(s);
          console.error(`soak: [${s.seconds} s] ${n(s.events)} events, RSS ${s.rssKiB} KiB`);
        }
        next = Date.now() + opt.everyS * 1000;
      }
    }
  } finally {
    for (const c of clients) c.close();
    await monitor.stop();
    await Deno.remove(dir, { recursive: true });
  }
  return report(opt, samples, clients);
}

function report(opt: ReturnType<typeof options>, samples: Sample[], clients: BenchClient[]) {
  const checks = [
    { what: "RSS KiB", ...flat(samples, "rssKiB", (p) => p * 0.1), margin: "+10%" },
    { what: "open fds", ...flat(samples, "fds", () => 2), margin: "+2" },
    { what: "process table bytes", ...flat(samples, "tableBytes", (p) => p * 0.2), margin: "+20%" },
    {
      what: "largest client queue bytes",
      ...flat(samples, "queueBytes", () => 4 << 20),
      margin: "+4 MiB",
    },
  ];
  const rows = samples.map((s) => [
    String(s.seconds),
    n(s.events),
    n(s.rssKiB),
    String(s.fds),
    n(s.tableSize),
    n(s.tableBytes),
    String(s.clients),
    n(s.queueBytes),
  ]);
  console.log(
    table(
      ["s", "events", "RSS KiB", "fds", "table", "table bytes", "clients", "queue bytes"],
      rows,
    ),
  );
  const dropped = clients.filter((c) => c.eof || c.error !== null).length;
  const enough = (samples.at(-1)?.events ?? 0) >= opt.events;
  console.log();
  console.log(table(
    ["series", "peak, first half", "peak, second half", "margin", "result"],
    [
      ...checks.map((c) => [c.what, n(c.first), n(c.second), c.margin, c.flat ? "PASS" : "FAIL"]),
      [
        "events passed",
        "",
        n(samples.at(-1)?.events ?? 0),
        `>= ${n(opt.events)}`,
        enough ? "PASS" : "FAIL",
      ],
      [
        "clients still connected",
        "",
        String(opt.clients - dropped),
        String(opt.clients),
        dropped === 0 ? "PASS" : "FAIL",
      ],
    ],
  ));
  Deno.writeTextFileSync(`${opt.out}/soak.json`, JSON.stringify({ samples, checks }, null, 2));
  return enough && dropped === 0 && checks.every((c) => c.flat);
}

if (import.meta.main) {
  Deno.addSignalListener("SIGINT", () => {
    killAllNow();
    Deno.exit(130);
  });
  try {
    Deno.exit(await soak(options()) ? 0 : 1);
  } catch (error) {
    console.error(`soak: ${error instanceof Error ? error.message : error}`);
    for (const c of children) c.killNow();
    Deno.exit(1);
  }
}
