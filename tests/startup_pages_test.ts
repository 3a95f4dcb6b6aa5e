/**
 * Tests of giving start-up pages back: the smaps parser and the choice of mappings on
 * fixtures, then the real madvise() calls on this test process's own mappings.
 */
import assert from "node:assert/strict";
import {
  type Mapping,
  parseSmaps,
  releasableMappings,
  releaseStartupPages,
} from "../lib/kernel/startup_pages.ts";
import { releasePages } from "../lib/kernel/ffi.ts";

/** One smaps entry as the kernel writes it (fields this module ignores included). */
function entry(header: string, fields: Record<string, number>, flags = "rd mr mw me"): string {
  const lines = [header, "Size:                 64 kB", "KernelPageSize:        4 kB"];
  for (const [name, kib] of Object.entries(fields)) lines.push(`${name}:`.padEnd(16) + `${kib} kB`);
  lines.push("THPeligible:           0", `VmFlags: ${flags} `);
  return lines.join("\n") + "\n";
}

const DENO = "/usr/lib/procmonitor/deno";
const SMAPS = [
  entry(`55c620ec0000-55c621ec0000 r--p 00000000 fe:00 5308540       ${DENO}`, {
    Rss: 12652,
    Anonymous: 0,
    Swap: 0,
  }),
  entry(`55c621ec0000-55c625ec0000 r-xp 01b8e000 fe:00 5308540       ${DENO}`, {
    Rss: 20344,
    Anonymous: 0,
  }, "rd ex mr mw me"),
  // RELRO: read-only now, but written by the dynamic loader first.
  entry(`55c625ec0000-55c625ec1000 r--p 05b02000 fe:00 5308540       ${DENO}`, {
    Rss: 4,
    Anonymous: 4,
  }),
  entry(`55c625ec1000-55c625ef0000 rw-p 05b03000 fe:00 5308540       ${DENO}`, {
    Rss: 136,
    Anonymous: 136,
  }),
  entry("55c626000000-55c626400000 rw-p 00000000 00:00 0                          [heap]", {
    Rss: 4096,
    Anonymous: 4096,
  }),
  entry("7f1a00000000-7f1a00100000 rw-p 00000000 00:00 0 ", { Rss: 1024, Anonymous: 1024 }),
  entry(
    "7f1a10000000-7f1a10080000 r--s 00000000 fe:00 77 /root/.cache/deno/v8_code_cache_v2",
    { Rss: 640, Anonymous: 0 },
  ),
  entry(
    "7f1a20000000-7f1a20010000 r-xp 00028000 fe:00 88 /tmp/procmonitor-x/libprocconn.so (deleted)",
    {
      Rss: 28,
      Anonymous: 0,
    },
  ),
  entry("7f1a30000000-7f1a30100000 r-xp 00028000 fe:00 99 /usr/lib/x86_64-linux-gnu/libc.so.6", {
    Rss: 1252,
    Anonymous: 0,
  }),
  entry("7f1a40000000-7f1a40100000 r--p 00000000 fe:00 100 /usr/lib/locale/C.utf8/LC_CTYPE", {
    Rss: 0,
    Anonymous: 0,
  }),
  entry("7f1a50000000-7f1a50100000 r--p 00000000 fe:00 101 /opt/locked.bin", {
    Rss: 1024,
    Anonymous: 0,
  }, "rd mr mw me lo"),
  entry("7f1a60000000-7f1a60100000 r--p 00000000 fe:00 102 /opt/swapped.bin", {
    Rss: 512,
    Anonymous: 0,
    Swap: 8,
  }),
  entry("7ffd0e5f0000-7ffd0e5f2000 r-xp 00000000 00:00 0                          [vdso]", {
    Rss: 8,
    Anonymous: 0,
  }),
].join("");

Deno.test("parseSmaps() reads each mapping's range, permissions, file, Rss, Anonymous, Swap and flags", () => {
  const mappings = parseSmaps(SMAPS);
  assert.equal(mappings.length, 13);
  assert.deepEqual(mappings[1], {
    start: 0x55c621ec0000n,
    end: 0x55c625ec0000n,
    perms: "r-xp",
    inode: 5308540,
    path: DENO,
    rssKiB: 20344,
    anonymousKiB: 0,
    swapKiB: 0,
    flags: ["rd", "ex", "mr", "mw", "me"],
  });
  assert.equal(mappings[5].path, "", "an anonymous mapping has no path");
  assert.equal(mappings[7].path, "/tmp/procmonitor-x/libprocconn.so (deleted)");
  assert.equal(mappings[11].swapKiB, 8);
  assert.deepEqual(mappings[10].flags, ["rd", "mr", "mw", "me", "lo"]);
});

Deno.test("parseSmaps() keeps a path with spaces whole and skips lines it does not know", () => {
  const text = "garbage before any header\n" +
    entry("7f1a40000000-7f1a40001000 r--p 00000000 fe:00 7 /opt/my app/lib x.so", { Rss: 4 }) +
    "Unknown: 12 kB\n";
  const [mapping, ...rest] = parseSmaps(text);
  assert.equal(rest.length, 0);
  assert.equal(mapping.path, "/opt/my app/lib x.so");
  assert.equal(mapping.rssKiB, 4);
});

Deno.test("releasableMappings() picks resident private read-only file mappings without private pages", () => {
  const picked = releasableMappings(parseSmaps(SMAPS), "libprocconn.so").map((m: Mapping) =>
    `${m.perms} ${m.path}`
  );
  assert.deepEqual(picked, [
    `r--p ${DENO}`,
    `r-xp ${DENO}`,
    "r-xp /usr/lib/x86_64-linux-gnu/libc.so.6",
  ]);
});

Deno.test("releasableMappings() leaves out the library named as kept, under any directory", () => {
  const text = entry("7f1a20000000-7f1a20010000 r-xp 00000000 fe:00 88 /opt/pm/libprocconn.so", {
    Rss: 28,
  });
  assert.equal(releasableMappings(parseSmaps(text), "libprocconn.so").length, 0);
  assert.equal(releasableMappings(parseSmaps(text), "other.so").length, 1);
});

/** This process's resident file-backed KiB. */
function rssFileKiB(): number {
  const match = /^RssFile:\s+(\d+) kB$/m.exec(Deno.readTextFileSync("/proc/self/status"));
  assert.ok(match, "/proc/self/status has RssFile");
  return Number(match[1]);
}

Deno.test("releaseStartupPages() gives back this process's file pages, and the code in them still runs", () => {
  const before = rssFileKiB();
  const released = releaseStartupPages();
  assert.equal(released.refused, 0);
  assert.ok(released.mappings > 0, "the Deno executable's mappings are given back");
  assert.ok(released.kib > 0);
  // Pages used at once (this thread's code) come back; most of the executable does not.
  assert.ok(
    released.rssFileKiB.after < released.rssFileKiB.before / 2,
    `resident file pages ${released.rssFileKiB.before} -> ${released.rssFileKiB.after} KiB`,
  );
  assert.ok(released.rssFileKiB.before <= before + 1024);
  // Code and read-only data come back from the file when used: V8, the JSON parser, RegExp.
  assert.deepEqual(JSON.parse('{"a":[1,2]}'), { a: [1, 2] });
  assert.equal(/b+/.exec("abbbc")?.[0], "bbb");
});

Deno.test("releasePages() counts a range the kernel refuses instead of throwing", () => {
  assert.equal(releasePages([{ start: 4097n, length: 4096n }]), 1, "not page-aligned");
  assert.equal(releasePages([{ start: 4096n, length: 0n }]), 1, "empty");
  assert.equal(releasePages([]), 0);
});
