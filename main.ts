/**
 * procMonitor: Linux process events (fork, exec, exit, …) from the kernel's proc connector,
 * served as JSON lines over a Unix socket, TCP (password, optional TLS) or the console.
 *
 * `procMonitor [flags]` runs the server; `procMonitor client [flags]` connects to one.
 * Exit codes: 0 clean shutdown, 1 runtime failure, 2 usage error.
 *
 * @module
 */

import { runClient } from "./lib/cli/client.ts";
import { parseConfig, UsageError } from "./lib/cli/config.ts";
import { runtimeProblem } from "./lib/cli/runtime_check.ts";
import { runServer } from "./lib/cli/server.ts";
import { versionText } from "./lib/cli/version.ts";
import { exitOnUncaught } from "./lib/uncaught.ts";

/** Runs procMonitor with `args`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const problem = runtimeProblem(Deno.version.deno);
  if (problem !== null) {
    console.error(`procMonitor: ${problem}`);
    return 1;
  }
  try {
    const config = parseConfig(args);
    switch (config.mode) {
      case "info":
        console.log(config.version ? versionText() : config.text);
        return 0;
      case "client":
        return await runClient(config);
      case "server":
        return await runServer(config);
    }
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    const help = args[0] === "client" ? "procMonitor client --help" : "procMonitor --help";
    console.error(`procMonitor: ${error.message}\nTry '${help}' for more information.`);
    return 2;
  }
}

if (import.meta.main) {
  exitOnUncaught();
  Deno.exit(await main(Deno.args));
}
