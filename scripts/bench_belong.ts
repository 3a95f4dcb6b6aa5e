/**
 * What the exec snapshot's extra reads cost (issue 10, part 5): the exec storm of
 * scripts/storm.c, run through the connector, the enricher and the JSON format in this
 * process, with the reads off, with the default ones (cwd, cgroup) and with three --env
 * names too, interleaved round by round so that every figure comes from the same run
 * (these VMs change speed from day to day). Root; `make bench` is left alone.
 *
 *   deno run -A scripts/bench_belong.ts [--execs N] [--forks N] [--rounds R]
 *
 * CPU is the sum over this process's threads (the C reader included) of the time on a CPU
 * (/proc/self/task/TID/schedstat, in ns), from the storm's start until every exec and exit
 * of its children has been formatted; per event = that / (forks + execs + exits). A first
 * round of every mode warms the JIT up and is not counted; the table shows each mode's
 * median round.
 * The fork storm (fork + _exit: fork and exit events only) is the exit-heavy one.
 */
import { parseArgs } from "node:util";
import { Enricher } from "../lib/events/enricher.ts";
import { formatJson } from "../lib/events/json_format.ts";
import { KernelClock } from "../lib/kernel/kernel_clock.ts";
import { ProcConnector, type SnapshotReads } from "../lib/kernel/ffi.ts";
import { ProcTable } from "../lib/events/proc_table.ts";
import { decodeBatch } from "../lib/kernel/record.ts";
import { UserNames } from "../lib/events/user_names.ts";
import { ROOT, runStorm } from "./bench_support.ts";

const MODES: [name: string, reads: SnapshotReads][] = [
  ["off", {}],
  ["cwd", { cwd: true }],
  ["cgroup", { cgroup: true }],
  ["cwd+cgroup", { cwd: true, cgroup: true }],
  ["cwd+cgroup+env×3", { cwd: true, cgroup: true, env: ["PATH", "HOME", "LANG"] }],
];

/** ns on a CPU of every thread of this process so far. */
function cpuNs(): number {
  let total = 0;
  for (const task of Deno.readDirSync("/proc/self/task")) {
    try {
      total += Number(
        Deno.readTextFileSync(`/proc/self/task/${task.name}/schedstat`).split(" ")[0],
      );
    } catch {
      // The thread ended meanwhile.
    }
  }
  return total;
}

interface Round {
  events: number;
  cpuNs: number;
  execs: number;
  gone: number;
}

/** One storm through the pipeline with `reads`; counts the storm children's events. */
async function round(storm: string, reads: SnapshotReads, args: string[]): Promise<Round> {
  const connector = await ProcConnector.open({ eventMask: 0x80000003, snapshot: reads });
  const table = new ProcTable();
  await table.scan();
  const clock = new KernelClock(() => connector.monotonicNowNs(), () => connector.realtimeNowNs());
  const enricher = new Enricher(table, new UserNames(), clock, {
    env: (reads.env ?? []).length > 0,
    cgroup: reads.cgroup ?? false, // as without --cgroup-info: forks and exits carry none
  });
  const buffer = new Uint8Array(512 * 1024);
  const view = new DataView(buffer.buffer);
  let workers = new Set<number>();
  const children = new Set<number>();
  let events = 0, execs = 0, gone = 0, exits = 0, bytes = 0;
  const before = cpuNs();
  const held = runStorm(storm, args, 300_000);
  let made = Infinity;
  held.then((h) => {
    made = h.result.made;
    workers = new Set(h.result.workers);
  });
  // Until the storm has said how many it made and all their exits are in.
  const pending: { kind: string; parent: number; child: number; gone: boolean }[] = [];
  while (exits < made) {
    const n = await connector.nextBatch(buffer, 1000);
    decodeBatch(view, n, (record) => {
      if (record.kind === "fork") {
        pending.push({
          kind: "fork",
          parent: record.parentTgid,
          child: record.childTgid,
          gone: false,
        });
      } else if (record.kind === "exec") {
        pending.push({
          kind: "exec",
          parent: 0,
          child: record.tgid,
          gone: record.snapshot?.gone ?? true,
        });
      } else if (record.kind === "exit" && record.pid === record.tgid) {
        pending.push({ kind: "exit", parent: 0, child: record.tgid, gone: false });
      }
      enricher.enrich(record, (e) => {
        bytes += formatJson(e.event).length;
      });
    });
    if (workers.size === 0) continue;
    // The storm's workers are known now: count their children's events.
    for (const p of pending.splice(0)) {
      if (p.kind === "fork" && workers.has(p.parent)) {
        children.add(p.child);
        events++;
      } else if (children.has(p.child)) {
        events++;
        if (p.kind === "exec") {
          execs++;
          if (p.gone) gone++;
        } else {
          children.delete(p.child);
          exits++;
        }
      }
    }
  }
  const used = cpuNs() - before;
  await (await held).release();
  await connector.close();
  if (bytes === 0) throw new Error("nothing was formatted");
  return { events, cpuNs: used, execs, gone };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      execs: { type: "string", default: "3000" },
      forks: { type: "string", default: "20000" },
      rounds: { type: "string", default: "3" },
    },
  });
  const dir = await Deno.makeTempDir({ prefix: "pm-bench-belong-" });
  try {
    await measure(`${dir}/storm`, values);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Builds the storm generator, runs every storm in every mode, prints the tables. */
async function measure(
  storm: string,
  values: { execs: string; forks: string; rounds: string },
): Promise<void> {
  const cc = await new Deno.Command("gcc", {
    args: ["-std=c11", "-O2", "-Wall", "-o", storm, `${ROOT}scripts/storm.c`],
  }).output();
  if (!cc.success) throw new Error(new TextDecoder().decode(cc.stderr));
  const storms: [string, string[]][] = [
    ["exec storm", ["exec", values.execs, "2", "/bin/true"]],
    ["fork storm (exit-heavy)", ["fork", values.forks, "2"]],
  ];
  for (const [label, args] of storms) {
    const rounds = new Map<string, Round[]>(MODES.map(([name]) => [name, []]));
    for (const [, reads] of MODES) await round(storm, reads, args); // warm-up, not counted
    for (let r = 0; r < Number(values.rounds); r++) {
      for (const [name, reads] of MODES) {
        const got = await round(storm, reads, args);
        rounds.get(name)!.push(got);
        const us = (got.cpuNs / 1000 / got.events).toFixed(2);
        console.error(`${label}, round ${r + 1}, ${name}: ${us} µs/event`);
      }
    }
    console.log(`\n${label}, ${values.rounds} rounds interleaved (${args.join(" ")}):`);
    console.log(
      "reads                     events/round   µs CPU/event: median (min-max)   execs gone",
    );
    for (const [name, list] of rounds) {
      const per = list.map((t) => t.cpuNs / 1000 / t.events).sort((a, b) => a - b);
      const execs = list.reduce((n, t) => n + t.execs, 0);
      const gone = list.reduce((n, t) => n + t.gone, 0);
      const cpu = `${per[per.length >> 1].toFixed(2)} (${per[0].toFixed(2)}-${
        per.at(-1)!.toFixed(2)
      })`;
      const lost = execs === 0 ? "-" : `${(100 * gone / execs).toFixed(2)} %`;
      console.log(
        `${name.padEnd(25)} ${String(list[0].events).padStart(12)}   ${cpu.padEnd(32)} ${lost}`,
      );
    }
  }
}

await main();
