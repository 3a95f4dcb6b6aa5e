/**
 * `procMonitor --version`: procMonitor's version, Deno's, libprocconn's, and whether the
 * kernel can filter events itself (Linux 6.6+), one line each. Needs no privilege: the
 * library is loaded but no connector is opened, and the kernel's answer comes from its
 * release number.
 *
 * @module
 */

import { VERSION } from "./config.ts";
import { nativeLibraryVersion } from "../kernel/ffi.ts";

/** The first Linux release whose proc connector applies a listener's event filter. */
export const FILTER_KERNEL: readonly [number, number] = [6, 6];

/**
 * Whether a kernel release (`uname -r`, e.g. `6.18.44-fc-v657`) has the proc connector's
 * event filter; null when the release cannot be read.
 */
export function kernelHasFilter(release: string): boolean | null {
  const match = /^(\d+)\.(\d+)/.exec(release);
  if (!match) return null;
  const [major, minor] = [Number(match[1]), Number(match[2])];
  return major > FILTER_KERNEL[0] || (major === FILTER_KERNEL[0] && minor >= FILTER_KERNEL[1]);
}

/** The kernel line of `--version`. */
export function kernelLine(release: string): string {
  const has = kernelHasFilter(release);
  const needs = `Linux ${FILTER_KERNEL.join(".")}+`;
  if (has === null) return `kernel ${release || "unknown"}: event filter unknown (needs ${needs})`;
  return has
    ? `kernel ${release}: event filter available`
    : `kernel ${release}: event filter not available (needs ${needs}; ` +
      `procMonitor filters events itself)`;
}

/** The libprocconn line of `--version`: its version, or why it could not be loaded. */
export function libraryLine(load: () => { version: string } = nativeLibraryVersion): string {
  try {
    return `libprocconn ${load().version}`;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return `libprocconn not loaded: ${message}`;
  }
}

/** The whole `--version` text, four lines. */
export function versionText(): string {
  return [
    `procMonitor ${VERSION}`,
    `Deno ${Deno.version.deno}`,
    libraryLine(),
    kernelLine(Deno.osRelease()),
  ].join("\n");
}
