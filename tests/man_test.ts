/**
 * procMonitor(8), doc/procMonitor.8: generated from the `--help` text by scripts/man.ts
 * (`make man`), committed, and rendered cleanly by man(1).
 */
import assert from "node:assert/strict";
import { clientHelpText, helpText } from "../lib/cli/config.ts";
import { longFlags, manPage } from "../scripts/man.ts";

const root = new URL("../", import.meta.url).pathname;
const committed = () => Deno.readTextFileSync(`${root}doc/procMonitor.8`);

/** The long flags the page names in bold, e.g. `--events` from `\fB\-\-events\fR`. */
function pageFlags(page: string): Set<string> {
  const flags = new Set<string>();
  for (const match of page.matchAll(/\\fB((?:\\-){2}[\w\\-]+)\\fR/g)) {
    flags.add(match[1].replaceAll("\\-", "-"));
  }
  return flags;
}

Deno.test("the committed doc/procMonitor.8 is what make man generates", () => {
  assert.equal(committed(), manPage(), "doc/procMonitor.8 is stale: run make man");
});

Deno.test("every flag of --help is in the man page and the other way round", () => {
  const help = new Set([...longFlags(helpText()), ...longFlags(clientHelpText())]);
  const page = pageFlags(committed());
  assert.ok(help.size >= 20, `only ${help.size} flags found in --help`);
  assert.deepEqual([...help].filter((flag) => !page.has(flag)), [], "in --help, not in the page");
  assert.deepEqual([...page].filter((flag) => !help.has(flag)), [], "in the page, not in --help");
});

Deno.test("man -l renders doc/procMonitor.8 without warnings, flags included", async () => {
  const out = await new Deno.Command("man", {
    args: ["-l", "-P", "cat", `${root}doc/procMonitor.8`],
    env: { MANWIDTH: "80", LC_ALL: "C.UTF-8" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  assert.equal(stderr, "");
  const text = new TextDecoder().decode(out.stdout);
  for (const flag of longFlags(helpText())) assert.ok(text.includes(flag), flag);
  for (const heading of ["NAME", "SYNOPSIS", "OPTIONS", "ENVIRONMENT", "FILES", "EXIT STATUS"]) {
    assert.match(text, new RegExp(`^${heading}$`, "m"));
  }
  // groff's own warnings (-ww), which man(1) may not show.
  const groff = await new Deno.Command("groff", {
    args: ["-man", "-Tutf8", "-ww", "-z", `${root}doc/procMonitor.8`],
    stderr: "piped",
  }).output();
  assert.equal(new TextDecoder().decode(groff.stderr), "");
  assert.equal(groff.code, 0);
});
