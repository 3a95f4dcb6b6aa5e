/**
 * A child process whose stdout and stderr are collected as they arrive, for tests that run
 * a client (procMonitor's own or the Node one) against a socket the test serves.
 */
import assert from "node:assert/strict";

/** Closes a connection, ignoring that it may be closed already (the library's helper). */
export { closeQuietly } from "../../lib/outputs/connections.ts";

/** Generous upper bound; a passing test never waits for it. */
export const WAIT_MS = 15_000;

/** How a spawned child ended. */
export interface Result {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

/** An exec event line as procMonitor sends it (SPEC §4). */
export function execLine(pid: number, cmdline: string): string {
  return JSON.stringify({
    event: "exec",
    time: "2025-01-02T03:04:05.000006Z",
    pid,
    user: "root",
    uid: 0,
    ppid: 1,
    cmdline,
  });
}

/** Resolves after `ms`. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Options for {@link Spawned}. */
export interface SpawnOptions {
  cwd?: string;
  /** Added to a clean environment (PATH, HOME, DENO_DIR only): a caller's PROCMONITOR_AUTH or NO_COLOR must not leak in. */
  env?: Record<string, string>;
  /** false: discard stdout unread (to test a closed pipe). */
  stdout?: boolean;
}

/** A running child process. */
export class Spawned implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  stdout = "";
  stderr = "";
  #waiters = new Set<() => void>();
  #pumped: Promise<void>;
  #done = false;

  /** Starts `cmd args`. */
  constructor(cmd: string, args: string[], options: SpawnOptions = {}) {
    const keep = (name: string) => Deno.env.get(name) ? { [name]: Deno.env.get(name)! } : {};
    this.child = new Deno.Command(cmd, {
      args,
      cwd: options.cwd,
      clearEnv: true,
      env: {
        PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
        HOME: Deno.env.get("HOME") ?? "/tmp",
        ...keep("DENO_DIR"),
        // make asan: a Deno under ASan must keep its options (detect_leaks=0, the log path).
        ...keep("ASAN_OPTIONS"),
        ...keep("UBSAN_OPTIONS"),
        ...options.env,
      },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#pumped = Promise.all([
      options.stdout === false
        ? this.child.stdout.cancel()
        : this.#pump(this.child.stdout, (s) => this.stdout += s),
      this.#pump(this.child.stderr, (s) => this.stderr += s),
    ]).then(() => {
      this.#done = true;
      this.#notify();
    });
  }

  async #pump(stream: ReadableStream<Uint8Array>, add: (s: string) => void): Promise<void> {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      add(text);
      this.#notify();
    }
  }

  #notify(): void {
    for (const w of this.#waiters) w();
  }

  /** Resolves once stdout (or stderr) contains `text`; fails when the child ends or time runs out. */
  waitFor(text: string, where: "stdout" | "stderr" = "stdout", ms = WAIT_MS): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this[where].includes(text)) {
          done();
          resolve();
        } else if (this.#done) {
          done();
          reject(new Error(`child ended without printing ${JSON.stringify(text)}: ${this.dump()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(`child did not print ${JSON.stringify(text)} in ${ms} ms: ${this.dump()}`),
        );
      }, ms);
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }

  /** Waits for the child to exit (killing it after `ms`) and returns what it printed. */
  async result(ms = WAIT_MS): Promise<Result> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.#kill();
    }, ms);
    try {
      const status = await this.child.status;
      await this.#pumped;
      assert.ok(!timedOut, `child did not exit within ${ms} ms: ${this.dump()}`);
      return { code: status.code, signal: status.signal, stdout: this.stdout, stderr: this.stderr };
    } finally {
      clearTimeout(timer);
    }
  }

  /** stdout and stderr so far, for failure messages. */
  dump(): string {
    return `stdout=${JSON.stringify(this.stdout)} stderr=${JSON.stringify(this.stderr)}`;
  }

  #kill(): void {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }

  /** Kills the child if still running and waits for it. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#kill();
    await this.child.status;
    await this.#pumped;
  }
}

/** Accepts the child's connection, or fails when the child exits first or time runs out. */
export async function accept<C extends Deno.Conn>(
  listener: Deno.Listener<C>,
  child: Spawned,
  ms = WAIT_MS,
): Promise<C> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const failed = new Promise<never>((_, reject) => {
    child.child.status.then((s) =>
      reject(new Error(`child exited (${s.code}) before connecting: ${child.dump()}`))
    );
    timer = setTimeout(
      () => reject(new Error(`child did not connect in ${ms} ms: ${child.dump()}`)),
      ms,
    );
  });
  try {
    return await Promise.race([listener.accept(), failed]);
  } finally {
    clearTimeout(timer);
  }
}
