/**
 * Which events reach the outputs: `-e`, `--threads`, `--user`, `--match`, `--pid`, and where
 * a process belongs and comes from: `--unit`, `--cgroup`, `--container`, `--ancestor`,
 * `--not-ancestor`. `lost` events always pass: loss is never silent.
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
  /** Where processes belong and come from; absent = every process. */
  belong?: BelongFilter;
}

/** The filters on where a process belongs and what its ancestors run. */
export interface BelongFilter {
  /** Unit globs (`nginx*.service`); empty = every unit, and none. */
  units: readonly string[];
  /** Cgroup paths whose subtrees to keep; empty = every cgroup. */
  cgroups: readonly string[];
  /** Only processes in a container. */
  container: boolean;
  /** Only processes with an ancestor whose cmdline matches. */
  ancestor: RegExp | null;
  /** No processes with an ancestor whose cmdline matches. */
  notAncestor: RegExp | null;
}

/** A glob (`*`, `?`, `[...]`) as an anchored regular expression. */
export function globRegExp(glob: string): RegExp {
  let source = "";
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i];
    const close = ch === "[" ? glob.indexOf("]", i + 2) : -1;
    if (ch === "*") source += ".*";
    else if (ch === "?") source += ".";
    else if (close > 0) {
      const set = glob.slice(i + 1, close).replace(/\\/g, "\\\\");
      source += set.startsWith("!") ? `[^${set.slice(1)}]` : `[${set}]`;
      i = close;
    } else source += ch.replace(/[.*+?^${}()|[\]\\\/]/g, "\\$&");
  }
  return new RegExp(`^${source}$`);
}

/** Compiled {@link BelongFilter}: a test per event. */
class BelongTest {
  readonly #units: RegExp[];
  readonly #cgroups: string[];
  readonly #container: boolean;
  readonly #ancestor: RegExp | null;
  readonly #notAncestor: RegExp | null;

  constructor(f: BelongFilter) {
    this.#units = f.units.map(globRegExp);
    // "/system.slice/" and "/system.slice" are one subtree; "/" is all of them.
    this.#cgroups = f.cgroups.map((p) => p.replace(/\/+$/, ""));
    this.#container = f.container;
    this.#ancestor = stateless(f.ancestor);
    this.#notAncestor = stateless(f.notAncestor);
  }

  accept(e: Enriched): boolean {
    const b = e.belong ?? null;
    if (this.#units.length > 0) {
      const unit = b?.unit;
      if (unit === undefined || !this.#units.some((re) => re.test(unit))) return false;
    }
    if (this.#cgroups.length > 0) {
      const path = b?.cgroup;
      if (path === undefined || !this.#cgroups.some((p) => within(path, p))) return false;
    }
    if (this.#container && b?.container_id === undefined) return false;
    const ancestors = e.ancestors ?? [];
    const re = this.#ancestor;
    if (re !== null && !ancestors.some((a) => re.test(a.cmdline))) return false;
    const not = this.#notAncestor;
    if (not !== null && ancestors.some((a) => not.test(a.cmdline))) return false;
    return true;
  }
}

/** Whether cgroup `path` is `prefix` or below it. */
function within(path: string, prefix: string): boolean {
  return prefix === "" || path === prefix || path.startsWith(prefix + "/");
}

/** `re` without the flags that make test() remember where it stopped. */
function stateless(re: RegExp | null): RegExp | null {
  return re === null ? null : new RegExp(re.source, re.flags.replace(/[gy]/g, ""));
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
  readonly #belong: BelongTest | null;

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
    this.#belong = options.belong === undefined ? null : new BelongTest(options.belong);
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
    if (this.#belong !== null && !this.#belong.accept(e)) return false;
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
