/**
 * Start-up pages given back. Deno's start-up (deserialising its snapshot, loading and
 * transpiling modules, resolving npm packages) touches 35–40 MiB of its executable that a
 * running monitor never uses again, and they would stay in its resident set for good. Once
 * started, procMonitor hands the pages of its read-only file mappings back to the kernel:
 * those no other process maps are freed, the rest are unmapped from procMonitor. Code that
 * runs again is read back from the page cache (or the file) on first use.
 *
 * Only private read-only file mappings without a private page are released: such pages are
 * always the file's contents, so dropping them loses nothing. Writable and shared mappings,
 * anonymous memory (the heaps, V8's code), locked mappings and libprocconn itself (the
 * reader thread's hot code) are left alone.
 *
 * @module
 */

import { nativeLibraryName, type PageRange, releasePages } from "./ffi.ts";

/** One mapping of /proc/PID/smaps, with the fields this module needs. */
export interface Mapping {
  /** First address. */
  readonly start: bigint;
  /** One past the last address. */
  readonly end: bigint;
  /** "r-xp", "r--s", …: read, write, execute, private or shared. */
  readonly perms: string;
  /** The mapped file's inode; 0 for anonymous memory and "[heap]"-like mappings. */
  readonly inode: number;
  /** The file's path (with " (deleted)" for a removed file), "[stack]", or "". */
  readonly path: string;
  /** Resident KiB. */
  readonly rssKiB: number;
  /** KiB of private anonymous pages (copies made by a write, or anonymous memory). */
  readonly anonymousKiB: number;
  /** KiB of such pages swapped out. */
  readonly swapKiB: number;
  /** The VmFlags line's two-letter flags ("lo": locked, "ht": hugetlb). */
  readonly flags: readonly string[];
}

// Header: "562eb5f0c000-562eb7a9a000 r--p 00000000 fe:00 5308540     /usr/bin/deno" (proc(5)).
const HEADER = /^([0-9a-f]+)-([0-9a-f]+) ([-rwxps]{4}) [0-9a-f]+ [0-9a-f]+:[0-9a-f]+ (\d+) ?(.*)$/;
const FIELD = /^(\w+):\s+(\d+) kB$/;

/** Parses the text of /proc/PID/smaps; lines it does not know are skipped. */
export function parseSmaps(text: string): Mapping[] {
  const mappings: Mapping[] = [];
  let current: { -readonly [K in keyof Mapping]: Mapping[K] } | null = null;
  for (const line of text.split("\n")) {
    const header = HEADER.exec(line);
    if (header !== null) {
      current = {
        start: BigInt(`0x${header[1]}`),
        end: BigInt(`0x${header[2]}`),
        perms: header[3],
        inode: Number(header[4]),
        path: header[5].trim(),
        rssKiB: 0,
        anonymousKiB: 0,
        swapKiB: 0,
        flags: [],
      };
      mappings.push(current);
      continue;
    }
    if (current === null) continue;
    if (line.startsWith("VmFlags:")) {
      current.flags = line.slice("VmFlags:".length).trim().split(/\s+/);
      continue;
    }
    const field = FIELD.exec(line);
    if (field?.[1] === "Rss") current.rssKiB = Number(field[2]);
    else if (field?.[1] === "Anonymous") current.anonymousKiB = Number(field[2]);
    else if (field?.[1] === "Swap") current.swapKiB = Number(field[2]);
  }
  return mappings;
}

/** The file a mapping shows, without the " (deleted)" of a removed one. */
function fileName(path: string): string {
  const file = path.endsWith(" (deleted)") ? path.slice(0, -" (deleted)".length) : path;
  return file.split("/").pop() ?? "";
}

/**
 * The mappings whose resident pages can be given back: private read-only mappings of a file,
 * not locked or hugetlb, with no private page (resident or swapped), resident, and not of the
 * file named `keep`. Shared mappings (Deno's SQLite caches) are left out: their files may be
 * closed and the address reused while this runs.
 */
export function releasableMappings(mappings: readonly Mapping[], keep: string): Mapping[] {
  return mappings.filter((m) => releasable(m, keep));
}

function releasable(m: Mapping, keep: string): boolean {
  const privateReadOnlyFile = m.inode !== 0 && !m.path.startsWith("[") && m.perms[1] !== "w" &&
    m.perms[3] === "p";
  const onlyFilePages = m.anonymousKiB === 0 && m.swapKiB === 0;
  const reclaimable = !m.flags.includes("lo") && !m.flags.includes("ht");
  return privateReadOnlyFile && onlyFilePages && reclaimable && m.rssKiB > 0 &&
    fileName(m.path) !== keep;
}

/** What {@link releaseStartupPages} did. */
export interface ReleasedPages {
  /** Mappings whose pages were given back. */
  readonly mappings: number;
  /** Their resident KiB before. */
  readonly kib: number;
  /** Mappings the kernel refused (gone or changed since they were listed). */
  readonly refused: number;
  /** This process's resident file-backed KiB (RssFile) before and after. */
  readonly rssFileKiB: { readonly before: number; readonly after: number };
}

/** RssFile of /proc/self/status, in KiB (0 where the kernel has no such line). */
function rssFileKiB(): number {
  const match = /^RssFile:\s+(\d+) kB$/m.exec(Deno.readTextFileSync("/proc/self/status"));
  return match === null ? 0 : Number(match[1]);
}

/** Gives back the start-up pages of this process's read-only file mappings (module doc). */
export function releaseStartupPages(): ReleasedPages {
  const before = rssFileKiB();
  const chosen = releasableMappings(
    parseSmaps(Deno.readTextFileSync("/proc/self/smaps")),
    nativeLibraryName(),
  );
  const ranges: PageRange[] = chosen.map((m) => ({ start: m.start, length: m.end - m.start }));
  const refused = releasePages(ranges);
  return {
    mappings: chosen.length - refused,
    kib: chosen.reduce((sum, m) => sum + m.rssKiB, 0),
    refused,
    rssFileKiB: { before, after: rssFileKiB() },
  };
}
