/**
 * The threads of multi-threaded processes, so that the exit of a process's main thread is
 * not taken for the process's end while other threads run. Two cases need it:
 *
 * - a thread that is not the main one calls exec (de_thread, KERNEL.md): the kernel reports
 *   the main thread's exit (pid == tgid), then the exec; the process lives on;
 * - the main thread calls pthread_exit: the process lives until its last thread exits.
 *
 * Threads are counted from the thread forks and thread exits seen; a process whose threads
 * predate the monitor counts none, and its main thread's exit is its end, as before.
 *
 * @module
 */

import type { RawRecord } from "../kernel/record.ts";

/** An exit record as decoded. */
export type ExitRecord = Extract<RawRecord, { kind: "exit" }>;

/** Processes with counted threads at most: beyond, the oldest are forgotten. */
const MAX_GROUPS = 65_536;

/** Thread counts and held main-thread exits, per process (tgid). */
export class ThreadGroups {
  /** tgid → threads other than the main one known to run. */
  readonly #threads = new Map<number, number>();
  /** tgid → its main thread's exit, held while other threads run. */
  readonly #held = new Map<number, ExitRecord>();

  /** How many main-thread exits are held. */
  get holding(): number {
    return this.#held.size;
  }

  /** A thread was created in `tgid`. */
  threadStarted(tgid: number): void {
    const n = this.#threads.get(tgid) ?? 0;
    this.#threads.delete(tgid);
    this.#threads.set(tgid, n + 1);
    if (this.#threads.size > MAX_GROUPS) {
      this.#threads.delete(this.#threads.keys().next().value as number);
    }
  }

  /**
   * A thread other than the main one exited. Returns the held exit of the main thread when
   * this was the last thread: the process has ended now.
   */
  threadExited(tgid: number): ExitRecord | undefined {
    const n = (this.#threads.get(tgid) ?? 0) - 1;
    if (n > 0) {
      this.#threads.set(tgid, n);
      return undefined;
    }
    this.#threads.delete(tgid);
    return this.#take(tgid);
  }

  /** The main thread exited: true (and held) when other threads still run. */
  mainExited(record: ExitRecord): boolean {
    if ((this.#threads.get(record.tgid) ?? 0) > 0) {
      this.#held.set(record.tgid, record);
      return true;
    }
    this.#threads.delete(record.tgid);
    return false;
  }

  /**
   * `tgid` called exec: its other threads are gone and the exec'ing thread is now the main
   * one. Returns the main thread's held exit, if any: that thread was replaced, the
   * process did not end.
   */
  exec(tgid: number): ExitRecord | undefined {
    this.#threads.delete(tgid);
    return this.#take(tgid);
  }

  /** A new process got pid `tgid`: what was held for an older one has ended. */
  newProcess(tgid: number): ExitRecord | undefined {
    this.#threads.delete(tgid);
    return this.#take(tgid);
  }

  /**
   * Held exits whose main thread exited before `beforeNs`, removed: their threads' exits
   * were lost, or the counts are off. Also every held exit when `beforeNs` is null
   * (events were lost: counts cannot be trusted).
   */
  expire(beforeNs: bigint | null): ExitRecord[] {
    const out: ExitRecord[] = [];
    for (const [tgid, record] of this.#held) {
      if (beforeNs === null || record.timestampNs < beforeNs) {
        this.#held.delete(tgid);
        this.#threads.delete(tgid);
        out.push(record);
      }
    }
    if (beforeNs === null) this.#threads.clear();
    return out;
  }

  #take(tgid: number): ExitRecord | undefined {
    const held = this.#held.get(tgid);
    this.#held.delete(tgid);
    return held;
  }
}
