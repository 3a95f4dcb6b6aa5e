/**
 * Which events reach the outputs: `-e`, `--threads`, `--user`, `--match` and `--pid`.
 * `lost` events always pass: loss is never silent.
 *
 * @module
 */

import type { Enriched } from "./enricher.ts";
import type { EventName } from "./event.ts";

/** The filters, resolved (user names already turned into uids). */
export interface FilterOptions {
  events: readonly EventName[];
  threads: boolean;
  /** Real uids to keep, or null for every user. */
  uids: ReadonlySet<number> | null;
  match: RegExp | null;
  /** Roots of the process subtrees to keep, or null for every process. */
  pids: readonly number[] | null;
}

/**
 * Decides per event. Stateful for `--pid`: it follows forks to take in descendants, so it
 * must see every enriched event, whatever `-e` selects.
 */
export class EventFilter {
  readonly #events: ReadonlySet<string>;
  readonly #threads: boolean;
  readonly #uids: ReadonlySet<number> | null;
  readonly #match: RegExp | null;
  readonly #subtree: Set<number> | null;

  /**
   * `parents` (tgid → parent tgid, from the start-up scan) seeds `--pid` with the
   * descendants the given processes already have.
   */
  constructor(options: FilterOptions, parents: Iterable<[number, number]> = []) {
    this.#events = new Set(options.events);
    this.#threads = options.threads;
    this.#uids = options.uids;
    this.#match = options.match === null
      ? null
      : new RegExp(options.match.source, options.match.flags.replace(/[gy]/g, ""));
    this.#subtree = options.pids === null ? null : descendants(options.pids, parents);
  }

  /** Whether `e` is reported. */
  accept(e: Enriched): boolean {
    const kind = e.event.event;
    if (kind === "lost") return true;
    const subtree = this.#subtree;
    let inSubtree = true;
    if (subtree !== null) {
      if (kind === "fork" && e.parentTgid !== null && subtree.has(e.parentTgid)) {
        subtree.add(e.tgid);
      }
      inSubtree = subtree.has(e.tgid);
      if (kind === "exit" && !e.thread) subtree.delete(e.tgid);
    }
    if (!this.#events.has(kind)) return false;
    if (e.thread && !this.#threads) return false;
    if (!inSubtree) return false;
    if (this.#uids !== null && (e.uid === null || !this.#uids.has(e.uid))) return false;
    if (this.#match !== null && !this.#match.test(e.cmdline)) return false;
    return true;
  }
}

/** `roots` and every process below them in the `parents` relation. */
function descendants(roots: readonly number[], parents: Iterable<[number, number]>): Set<number> {
  const children = new Map<number, number[]>();
  for (const [child, parent] of parents) {
    const list = children.get(parent);
    if (list) list.push(child);
    else children.set(parent, [child]);
  }
  const found = new Set<number>();
  const todo = [...roots];
  while (todo.length > 0) {
    const pid = todo.pop()!;
    if (found.has(pid)) continue;
    found.add(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return found;
}
