/**
 * A process's ancestors from the process table: its parent, the parent's parent, and so
 * on, nearest first, for `--ancestry N` and the `--ancestor`/`--not-ancestor` filters.
 *
 * @module
 */

import type { ProcTable } from "./proc_table.ts";

/** One ancestor as events show it. */
export interface Ancestor {
  pid: number;
  /** The name the kernel knows it by ("" when unknown). */
  comm: string;
  cmdline: string;
}

/** The most ancestors looked at for the filters: deeper trees are not real ones. */
export const MAX_ANCESTRY = 64;

/**
 * The ancestors starting at `ppid`, nearest first, at most `max`. The walk stops at pid 0,
 * at a process the table does not know, and at a pid seen before (the table's parent links
 * can form a loop after pid reuse).
 */
export function ancestorsOf(table: ProcTable, ppid: number | null, max: number): Ancestor[] {
  const found: Ancestor[] = [];
  const seen = new Set<number>();
  let pid = ppid;
  while (pid !== null && pid > 0 && found.length < max && !seen.has(pid)) {
    const info = table.get(pid);
    if (info === undefined) break;
    seen.add(pid);
    found.push({ pid, comm: info.comm ?? "", cmdline: info.cmdline });
    pid = info.ppid;
  }
  return found;
}
