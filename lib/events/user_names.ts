/**
 * uid → user name, from /etc/passwd, cached and re-read when the file changes.
 *
 * @module
 */

/** Parses passwd(5) text into uid → name; the first entry for a uid wins, as getpwuid does. */
export function parsePasswd(text: string): Map<number, string> {
  const names = new Map<number, string>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const fields = line.split(":");
    if (fields.length < 3 || fields[0] === "") continue;
    const uid = Number(fields[2]);
    if (!Number.isInteger(uid) || uid < 0 || fields[2].trim() === "") continue;
    if (!names.has(uid)) names.set(uid, fields[0]);
  }
  return names;
}

/**
 * Names for uids. The file's mtime is checked at most once per `recheckMs`, so a user added
 * while the monitor runs gets a name within that time, and the hot path costs a map lookup.
 */
export class UserNames {
  readonly #path: string;
  readonly #recheckMs: number;
  #names = new Map<number, string>();
  #byName = new Map<string, number>();
  #mtime: number | null = -1;
  #checkedAt = -Infinity;

  /** Reads `path` (default /etc/passwd) on first use. */
  constructor(path = "/etc/passwd", recheckMs = 1000) {
    this.#path = path;
    this.#recheckMs = recheckMs;
  }

  #refresh(): void {
    const now = performance.now();
    if (now - this.#checkedAt < this.#recheckMs) return;
    this.#checkedAt = now;
    let mtime: number | null;
    try {
      mtime = Deno.statSync(this.#path).mtime?.getTime() ?? null;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      mtime = null;
    }
    if (mtime === this.#mtime) return;
    this.#mtime = mtime;
    this.#names = mtime === null ? new Map() : parsePasswd(Deno.readTextFileSync(this.#path));
    this.#byName = new Map([...this.#names].map(([uid, name]) => [name, uid]));
  }

  /** The name for `uid`: its passwd name, else the number as a string; "unknown" for null. */
  name(uid: number | null): string {
    if (uid === null) return "unknown";
    this.#refresh();
    return this.#names.get(uid) ?? String(uid);
  }

  /** The uid for a user name, or undefined when passwd has no such user. */
  uid(name: string): number | undefined {
    this.#refresh();
    return this.#byName.get(name);
  }
}
