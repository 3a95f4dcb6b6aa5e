/**
 * The events procMonitor emits: one JSON object per line, discriminated on `event`.
 *
 * Field names of v1 (`child_pid`, `parent_pid`, `pid`, `user`, `cmdline`, `exit_code`) are
 * kept so existing consumers keep working; the rest are additions (SPEC §4).
 *
 * @module
 */

/** The event names a user can select with `-e`, in the order `--help` lists them. */
export const EventName = {
  fork: "fork",
  exec: "exec",
  exit: "exit",
  uid: "uid",
  gid: "gid",
  sid: "sid",
  ptrace: "ptrace",
  comm: "comm",
  coredump: "coredump",
} as const;

/** A selectable event name. */
export type EventName = typeof EventName[keyof typeof EventName];

/** Every selectable event name. */
export const ALL_EVENT_NAMES: readonly EventName[] = Object.values(EventName);

/** The events reported when `-e` is not given (v1's default). */
export const DEFAULT_EVENT_NAMES: readonly EventName[] = ["exec", "fork", "exit"];

/**
 * Where events were lost: the kernel's netlink buffer, procMonitor's own ring/queues, or the
 * NATS publisher's outgoing buffer (a broker out of reach for longer than it holds).
 */
export const LostWhere = {
  kernel: "kernel",
  buffer: "buffer",
  nats: "nats",
  /** Exits' resource usage (taskstats) was lost: as many exits go out without it. */
  usage: "usage",
} as const;

/** Where events were lost. */
export type LostWhere = typeof LostWhere[keyof typeof LostWhere];

/** Fields every process event carries. */
interface Base {
  /** RFC 3339 UTC with microseconds, from the kernel's event timestamp. */
  time: string;
  /**
   * The host id (`--host-id`, default the hostname made subject-safe), with `--nats` or
   * `--host-id` only. Added last, after the event's own fields, so that the rest of the
   * line reads as without it.
   */
  host?: string;
}

/** Where a process belongs and where it comes from: fork, exec and exit carry these. */
interface Belongs {
  /** The cgroup path (v2, else systemd's v1 hierarchy), when known. */
  cgroup?: string;
  /** The systemd service or scope in the cgroup path, e.g. `nginx.service`. */
  unit?: string;
  /** The 64-hex id of the container (docker, containerd, cri-o, podman). */
  container_id?: string;
  /** With `--ancestry N`: parent first, up to N, from the process table. */
  ancestors?: { pid: number; comm: string; cmdline: string }[];
}

/** A new task: a process, or with `--threads` a thread (`thread: true`). */
export interface ForkEvent extends Base, Belongs {
  event: "fork";
  child_pid: number;
  parent_pid: number;
  child_tgid: number;
  parent_tgid: number;
  user: string;
  uid: number | null;
  /** The parent's cmdline, which the child inherits until it execs. */
  cmdline: string;
  cmdline_truncated?: true;
  thread?: true;
}

/** A process replaced its program. */
export interface ExecEvent extends Base, Belongs {
  event: "exec";
  pid: number;
  user: string;
  uid: number | null;
  ppid: number | null;
  cmdline: string;
  cmdline_truncated?: true;
  comm?: string;
  exe?: string;
  /** The working directory at exec. */
  cwd?: string;
  /** With `--env`: the variables asked for that the process has, values cut like cmdlines. */
  env?: Record<string, string>;
  /** A value in `env` was cut, or a variable left out for lack of room. */
  env_truncated?: true;
}

/** A process (or with `--threads` a thread) ended. */
export interface ExitEvent extends Base, Belongs {
  event: "exit";
  pid: number;
  /** The raw wait(2) status as the kernel reports it: 256 means exit status 1. */
  exit_code: number;
  /** The decoded exit status, when the process exited normally. */
  exit_status?: number;
  /** The name of the fatal signal, when a signal ended the process. */
  signal?: string;
  core_dumped: boolean;
  user: string;
  uid: number | null;
  ppid: number;
  cmdline: string;
  cmdline_truncated?: true;
  /** Seconds from the process's start, when the start is known. */
  duration_s?: number;
  // Resource usage from the kernel's taskstats: all seven or none (`--no-usage`, no
  // privilege, or lost). A process's is summed over its threads; a thread's is its own.
  /** User CPU seconds (microsecond precision). */
  cpu_user_s?: number;
  /** System CPU seconds (microsecond precision). */
  cpu_sys_s?: number;
  /** Peak resident memory, KiB. */
  max_rss_kb?: number;
  /** Bytes read from storage (page-cache hits not counted), in whole KiB. */
  read_bytes?: number;
  /** Bytes written to storage, in whole KiB. */
  write_bytes?: number;
  /** Voluntary context switches (waits). */
  ctx_voluntary?: number;
  /** Involuntary context switches (preemptions). */
  ctx_involuntary?: number;
  thread?: true;
}

/** A process changed its user ids. */
export interface UidEvent extends Base {
  event: "uid";
  pid: number;
  ruid: number;
  euid: number;
  user: string;
}

/** A process changed its group ids. */
export interface GidEvent extends Base {
  event: "gid";
  pid: number;
  rgid: number;
  egid: number;
  user: string;
}

/** A process started a new session (setsid). */
export interface SidEvent extends Base {
  event: "sid";
  pid: number;
  user: string;
}

/** A tracer attached to (tracer_pid > 0) or detached from (0) a process. */
export interface PtraceEvent extends Base {
  event: "ptrace";
  pid: number;
  tracer_pid: number;
}

/** A task changed its name (prctl PR_SET_NAME, or a write to /proc/PID/comm). */
export interface CommEvent extends Base {
  event: "comm";
  pid: number;
  comm: string;
}

/** A process dumped core. */
export interface CoredumpEvent extends Base {
  event: "coredump";
  pid: number;
  parent_pid: number;
}

/** Events were lost; never silent. */
export interface LostEvent extends Base {
  event: "lost";
  count: number;
  where: LostWhere;
}

/** Any event procMonitor emits. */
export type ProcEvent =
  | ForkEvent
  | ExecEvent
  | ExitEvent
  | UidEvent
  | GidEvent
  | SidEvent
  | PtraceEvent
  | CommEvent
  | CoredumpEvent
  | LostEvent;
