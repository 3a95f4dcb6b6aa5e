/**
 * What TCP ports a process listens on, read from /proc: for the tests that check a signal
 * opened no debugger (Deno's inspector listens on 127.0.0.1:9229).
 *
 * @module
 */

/** The TCP ports process `pid` listens on (its socket inodes in /proc/net/tcp and tcp6). */
export function listeningPorts(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(Deno.readLinkSync(`/proc/${pid}/fd/${fd.name}`));
      if (m) inodes.add(m[1]);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error; // closed meanwhile
    }
  }
  const ports: number[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const row of Deno.readTextFileSync(table).split("\n").slice(1)) {
      const f = row.trim().split(/\s+/);
      if (f.length > 9 && f[3] === "0A" && inodes.has(f[9])) {
        ports.push(parseInt(f[1].split(":")[1], 16));
      }
    }
  }
  return ports;
}
