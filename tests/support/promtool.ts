/**
 * `promtool check metrics` (Debian's `prometheus` package): the reference linter of the
 * exposition format. Where promtool is missing the check is skipped with a warning, except
 * under CI, where it fails: .ci/run installs it.
 */

const inCi = (Deno.env.get("CI") ?? "") !== "" && Deno.env.get("CI") !== "false";

/** What promtool said about a scrape: its exit code and everything it printed. */
export interface PromtoolVerdict {
  code: number;
  output: string;
}

/** Feeds `scrape` to `promtool check metrics`; null (skipped) where promtool is missing. */
export async function promtoolCheck(scrape: string): Promise<PromtoolVerdict | null> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("promtool", {
      args: ["check", "metrics"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    if (inCi) {
      throw new Error("CI is set but promtool is not installed (apt-get install prometheus)");
    }
    console.warn("\n!!! SKIPPING the promtool check: promtool is not installed\n");
    return null;
  }
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(scrape));
  await writer.close();
  const out = await child.output();
  const text = new TextDecoder();
  return { code: out.code, output: text.decode(out.stdout) + text.decode(out.stderr) };
}
