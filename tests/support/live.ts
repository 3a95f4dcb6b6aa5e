/**
 * Helpers for live tests: the real connector, the real program as a subprocess.
 *
 * A live test runs where the proc connector answers (root on the host). Elsewhere it is
 * skipped with a warning, except under CI (the CI variable set), where it fails: CI runs as
 * root on a machine whose connector works, so an unreachable connector there is a bug.
 */

import { ProcConnector } from "../../lib/kernel/ffi.ts";
import type { ProcEvent } from "../../lib/events/event.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const MAIN = `${ROOT}main.ts`;

async function probe(): Promise<string | null> {
  try {
    const connector = await ProcConnector.open({ ackTimeoutMs: 2000, realtime: false });
    await connector.close();
    return null;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

const unreachable = await probe();
const inCi = (Deno.env.get("CI") ?? "") !== "" && Deno.env.get("CI") !== "false";
if (unreachable !== null && !inCi) {
  console.warn(
    `\n!!! SKIPPING LIVE TESTS: the proc connector is out of reach here (${unreachable}). ` +
      `Run as root on the host to include them.\n`,
  );
}

/**
 * Whether this run is `make asan`'s: the library under ASan and UBSan, and the ASan
 * runtime's allocator under the whole Deno process, which makes it several times slower.
 */
const sanitized = Deno.env.has("ASAN_OPTIONS");

/** What a live test needs beyond the connector. */
export interface LiveTestOptions {
  /**
   * Why the test asserts a timing that a sanitized run cannot keep; it is then left out
   * of that run (`make asan`), and runs everywhere else.
   */
  timing?: string;
}

/** Declares a live test: skipped loudly outside CI when the connector is out of reach. */
export function liveTest(
  name: string,
  fn: () => Promise<void>,
  options: LiveTestOptions = {},
): void {
  Deno.test({
    name,
    ignore: (unreachable !== null && !inCi) || (sanitized && options.timing !== undefined),
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      if (unreachable !== null) {
        throw new Error(`CI is set but the proc connector is out of reach: ${unreachable}`);
      }
      await fn();
    },
  });
}

/** A unique word to find one test's processes among everything else the machine runs. */
export function marker(label: string): string {
  return `pm-${label}-${crypto.randomUUID().slice(0, 8)}`;
}

/** The program's exit code and what it wrote to stderr. */
export interface Finished {
  code: number;
  signal: Deno.Signal | null;
  stderr: string;
  stdout: string;
}

/** procMonitor run from source as a subprocess, its JSON events collected from stdout. */
export class MonitorProcess implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly events: ProcEvent[] = [];
  #stdout = "";
  #allStdout = "";
  #stderr = "";
  #waiters = new Set<() => void>();
  #reading: Promise<void>;
  #done: Promise<Deno.CommandStatus>;
  #finished: Finished | null = null;

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#done = child.status;
    this.#reading = Promise.all([
      this.#pump(child.stdout, (text) => {
        this.#stdout += text;
        this.#allStdout += text;
        let nl;
        while ((nl = this.#stdout.indexOf("\n")) >= 0) {
          const line = this.#stdout.slice(0, nl);
          this.#stdout = this.#stdout.slice(nl + 1);
          if (line.startsWith("{")) this.events.push(JSON.parse(line));
        }
      }),
      this.#pump(child.stderr, (text) => {
        this.#stderr += text;
      }),
    ]).then(() => {});
  }

  async #pump(stream: ReadableStream<Uint8Array>, on: (text: string) => void): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      on(decoder.decode(chunk, { stream: true }));
      for (const wake of this.#waiters) wake();
    }
  }

  /** procMonitor's process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Everything written to stdout so far. */
  get stdoutText(): string {
    return this.#allStdout;
  }

  /** Everything written to stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /**
   * Starts `procMonitor ARGS` and waits until it reports that it is monitoring. `launch`
   * replaces how it is run (`deno run -q -A main.ts` from this checkout), e.g. to run it as
   * another user.
   */
  static async start(
    args: string[],
    env: Record<string, string> = {},
    launch: { argv: string[]; cwd: string } = {
      argv: [Deno.execPath(), "run", "-q", "-A", MAIN],
      cwd: ROOT,
    },
  ): Promise<MonitorProcess> {
    const child = new Deno.Command(launch.argv[0], {
      args: [...launch.argv.slice(1), ...args],
      cwd: launch.cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", ...env },
    }).spawn();
    const monitor = new MonitorProcess(child);
    try {
      await monitor.until(() => /Monitoring process events/.test(monitor.#stderr), 30_000, "start");
    } catch (error) {
      await monitor.stop("SIGKILL");
      throw new Error(`procMonitor did not start:\n${monitor.#stderr}`, { cause: error });
    }
    return monitor;
  }

  /** Resolves once `condition` holds, re-checking whenever output arrives. */
  async until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (condition()) return;
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const check = () => {
      if (condition()) resolve();
      else if (this.#finished !== null) {
        reject(new Error(`procMonitor exited while waiting for ${what}`));
      }
    };
    const timer = setTimeout(
      () =>
        reject(
          new Error(
            `Timed out after ${timeoutMs} ms waiting for ${what}; stderr:\n${this.#stderr}\n` +
              `last events:\n${this.events.slice(-20).map((e) => JSON.stringify(e)).join("\n")}`,
          ),
        ),
      timeoutMs,
    );
    this.#waiters.add(check);
    this.#done.then(check);
    try {
      await promise;
    } finally {
      clearTimeout(timer);
      this.#waiters.delete(check);
    }
  }

  /** The first event matching `match`, waiting for it up to `timeoutMs`. */
  async waitFor<T extends ProcEvent>(
    what: string,
    match: (e: ProcEvent) => e is T,
    timeoutMs = 15_000,
  ): Promise<T> {
    let found: T | undefined;
    await this.until(() => (found = this.events.find(match)) !== undefined, timeoutMs, what);
    return found!;
  }

  /** Sends `signal` without waiting for anything. */
  signal(signal: Deno.Signal): void {
    this.#child.kill(signal);
  }

  /** Sends `signal` and waits for the exit. Idempotent. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Finished> {
    if (this.#finished === null) {
      try {
        this.#child.kill(signal);
      } catch (error) {
        if (!(error instanceof TypeError)) throw error; // already exited
      }
      const status = await this.#done;
      await this.#reading;
      this.#finished = {
        code: status.code,
        signal: status.signal,
        stderr: this.#stderr,
        stdout: this.#stdout,
      };
    }
    return this.#finished;
  }

  /** Kills the monitor if still running. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop("SIGKILL");
  }
}

/** Runs a command to completion; returns its pid and status. */
export async function run(
  cmd: string,
  args: string[],
): Promise<{ pid: number; status: Deno.CommandStatus }> {
  const child = new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "null" })
    .spawn();
  return { pid: child.pid, status: await child.status };
}

/** Runs `procMonitor ARGS` to completion (for start-up failures). */
export async function runMain(
  args: string[],
  options: { prefix?: string[]; env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const argv = [...(options.prefix ?? []), Deno.execPath(), "run", "-q", "-A", MAIN, ...args];
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    cwd: ROOT,
    stdin: "null",
    env: { NO_COLOR: "1", ...options.env },
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}
