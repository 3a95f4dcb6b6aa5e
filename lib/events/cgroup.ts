/**
 * Where a process belongs: its cgroup path, and what that path says about it — the systemd
 * unit (service or scope) and the container id of docker, containerd, cri-o and podman.
 * Pure: the path comes from libprocconn's exec snapshot, or from /proc/PID/cgroup read by
 * the start-up scan ({@link pickCgroupPath} chooses the same line libprocconn does).
 *
 * @module
 */

/** A process's cgroup, and the unit and container found in it. */
export interface Belonging {
  /** The cgroup path: the v2 one, else systemd's v1 hierarchy's. */
  cgroup: string;
  /** The last `*.service` or `*.scope` in the path, e.g. `nginx.service`. */
  unit?: string;
  /** The 64-hex id of the container whose cgroup this is. */
  container_id?: string;
}

/** A systemd unit a process can be in: services and scopes (slices only hold them). */
const UNIT = /^[^/]+\.(?:service|scope)$/;

/**
 * A container's cgroup component: docker-ID.scope (docker, systemd driver), ID alone
 * (docker's and kubelet's cgroupfs driver: /docker/ID, /kubepods/.../ID),
 * cri-containerd-ID.scope, crio-ID.scope, libpod-ID.scope (podman). The runtimes' monitor
 * processes (crio-conmon-ID, libpod-conmon-ID) are not the container, and do not match.
 */
const CONTAINER = /^(?:docker-|cri-containerd-|crio-|libpod-)?([0-9a-f]{64})(?:\.scope)?$/;

/** Paths seen, each with its one Belonging: a storm runs a few cgroups, not thousands. */
const cache = new Map<string, Belonging>();
const CACHE_LIMIT = 4096;

/**
 * The unit and container of the cgroup `path` (innermost first: a service inside a
 * container's cgroup is that service). The result is shared between callers: not to be
 * changed.
 */
export function belongingOf(path: string): Belonging {
  let found = cache.get(path);
  if (found === undefined) {
    if (cache.size >= CACHE_LIMIT) cache.clear();
    found = parse(path);
    cache.set(path, found);
  }
  return found;
}

function parse(path: string): Belonging {
  const parts = path.split("/");
  const unit = parts.findLast((part) => UNIT.test(part));
  let container: string | undefined;
  for (let i = parts.length - 1; i >= 0 && container === undefined; i--) {
    container = CONTAINER.exec(parts[i])?.[1];
  }
  return {
    cgroup: path,
    ...(unit !== undefined ? { unit } : {}),
    ...(container !== undefined ? { container_id: container } : {}),
  };
}

/**
 * The path a record carries, from the text of /proc/PID/cgroup: the v2 line's ("0::PATH"),
 * unless it is missing or "/" while systemd's v1 hierarchy ("N:name=systemd:PATH") names a
 * deeper one (a hybrid system that leaves v2 alone); null when neither is there. The same
 * rule as pc_pick_cgroup() in native/procconn.c; only whole lines count.
 */
export function pickCgroupPath(text: string): string | null {
  let v2: string | null = null;
  let systemd: string | null = null;
  const lines = text.split("\n");
  lines.pop(); // what follows the last newline: empty, or a cut line
  for (const line of lines) {
    const first = line.indexOf(":");
    const second = first < 0 ? -1 : line.indexOf(":", first + 1);
    if (second < 0) continue;
    const path = line.slice(second + 1);
    if (v2 === null && line.startsWith("0::")) v2 = path;
    else if (systemd === null && line.slice(first + 1, second) === "name=systemd") systemd = path;
  }
  if (v2 !== null && !(v2 === "/" && systemd !== null && systemd.length > 1)) return v2;
  return systemd ?? v2;
}
