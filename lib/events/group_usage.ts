/**
 * A process's resource usage at its end, summed over its threads.
 *
 * The kernel reports usage per task (thread) as each one exits (taskstats): a thread pool's
 * workers that ended long before the process hold most of its CPU time. The message that
 * the last task of a thread group adds (AGGR_TGID) holds only delay accounting at exit, not
 * the group's CPU or I/O (kernel/taskstats.c, fill_tgid_exit), so the totals are summed
 * here: CPU, I/O and context switches add up; the peak memory is that of the address space
 * the threads share, so the largest report wins.
 *
 * @module
 */

import type { TaskUsage } from "../kernel/record.ts";

/** Processes with summed threads at most: beyond, the oldest are forgotten. */
const MAX_GROUPS = 65_536;

/** Sums the usage of every exited task of a process until the process ends. */
export class GroupUsage {
  /** tgid → the usage of its tasks that exited so far; null once one task's never came. */
  readonly #sums = new Map<number, TaskUsage | null>();

  /** How many processes have usage summed (their threads exited, they have not). */
  get size(): number {
    return this.#sums.size;
  }

  /**
   * A task of process `tgid` exited with `usage`; null when none came, which makes the
   * process's total unknown: a sum without that task would under-report it.
   */
  add(tgid: number, usage: TaskUsage | null): void {
    const sum = this.#sums.get(tgid);
    if (sum === undefined) {
      this.#sums.set(tgid, usage);
      if (this.#sums.size > MAX_GROUPS) {
        this.#sums.delete(this.#sums.keys().next().value as number);
      }
      return;
    }
    this.#sums.set(tgid, sum === null || usage === null ? null : addUsage(sum, usage));
  }

  /**
   * Process `tgid` ended with the exit of a task whose usage is `last` (already given to
   * {@link add} when `added`): the sum of its tasks' usage, forgotten here. Null when `last`
   * or an earlier task's usage never came: part of the total would be missing. A process
   * that had no other task costs no map write, which is almost every process.
   */
  end(tgid: number, last: TaskUsage | null, added = false): TaskUsage | null {
    const sum = this.#sums.get(tgid);
    if (sum === undefined) return last;
    this.#sums.delete(tgid);
    if (last === null || sum === null) return null;
    return added ? sum : addUsage(sum, last);
  }

  /** `tgid` is a new process (its pid was reused): what an unseen end left is dropped. */
  forget(tgid: number): void {
    this.#sums.delete(tgid);
  }

  /** Events were lost, thread exits among them perhaps: no sum so far can be trusted. */
  lost(): void {
    for (const tgid of this.#sums.keys()) this.#sums.set(tgid, null);
  }
}

/** Two tasks' usage as one process's. */
export function addUsage(a: TaskUsage, b: TaskUsage): TaskUsage {
  return {
    cpuUserUs: a.cpuUserUs + b.cpuUserUs,
    cpuSysUs: a.cpuSysUs + b.cpuSysUs,
    maxRssKb: Math.max(a.maxRssKb, b.maxRssKb),
    readBytes: a.readBytes + b.readBytes,
    writeBytes: a.writeBytes + b.writeBytes,
    ctxVoluntary: a.ctxVoluntary + b.ctxVoluntary,
    ctxInvoluntary: a.ctxInvoluntary + b.ctxInvoluntary,
    last: a.last || b.last,
  };
}
