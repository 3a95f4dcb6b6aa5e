/**
 * The server: wires the monitor to its outputs and owns the lifecycle and signals.
 *
 * Start-up order: subscribe to the kernel (so a missing privilege fails before any file is
 * created), then the listeners, then the event loop. SIGINT/SIGTERM stop reading, let every
 * client have what was already queued for it, close the listeners (removing the socket
 * file) and exit 0; a second signal exits at once.
 *
 * @module
 */

import type { ServerConfig } from "./config_types.ts";
import { UsageError } from "./config.ts";
import { ConsoleOutput } from "../outputs/console_output.ts";
import { StartupError } from "../errors.ts";
import { ignoreSignal, NativeError } from "../kernel/ffi.ts";
import { releaseStartupPages } from "../kernel/startup_pages.ts";
import { ownPrivilegeNotes } from "./privileges.ts";
import { Hub } from "../outputs/hub.ts";
import { formatJson } from "../events/json_format.ts";
import { closeLogging, configureLogging, getLogger } from "../log.ts";
import { Monitor, type MonitorOptions } from "../events/monitor.ts";
import type { TcpListener } from "../outputs/tcp_listener.ts";
import { useColor } from "../events/text_format.ts";
import { UnixListener } from "../outputs/unix_listener.ts";
import { settlesWithin } from "../timers.ts";
import { UserNames } from "../events/user_names.ts";
import type { NatsOutput } from "../outputs/nats_output.ts";
import type { LostEvent } from "../events/event.ts";
import { type ServedMetrics, serveMetrics } from "./serve_metrics.ts";
import { EventCounts, type NatsStats } from "../outputs/metrics.ts";

const log = getLogger("server");

/** How long shutdown waits for stdout to take what is queued for it. */
const CONSOLE_FLUSH_MS = 2000;
/** How long shutdown waits for NATS to take (and JetStream to acknowledge) what is buffered. */
const NATS_CLOSE_MS = 3000;

/** Logs the counters an admin (or `make soak`) watches; answers SIGUSR2. */
function logStats(monitor: Monitor, hub: Hub | null): void {
  const stats = monitor.stats();
  let fds = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) fds++;
  log.info(
    "Stats: {events} kernel events, {kernelLost} lost in the kernel, {ringLost} in the ring; " +
      "table {tableSize} processes, {tableBytes} bytes; {clients} clients, largest queue " +
      "{queueBytes} bytes; RSS {rssBytes} bytes; {fds} open files",
    {
      events: stats.events,
      kernelLost: stats.kernelLost,
      ringLost: stats.ringLost,
      tableSize: monitor.table.size,
      tableBytes: monitor.table.bytes,
      clients: hub?.clientCount ?? 0,
      queueBytes: hub?.largestQueueBytes ?? 0,
      rssBytes: Deno.memoryUsage().rss,
      fds,
    },
  );
}

/** One sentence for each way the connector can be out of reach. */
export function connectorProblem(error: NativeError): string {
  switch (error.code) {
    case "EPROTONOSUPPORT":
      return "This kernel has no proc connector (CONFIG_CONNECTOR and CONFIG_PROC_EVENTS), so procMonitor cannot see process events";
    case "EPERM":
    case "EACCES":
      return "procMonitor needs root or CAP_NET_ADMIN to listen to the kernel's proc connector on this kernel";
    case "ETIMEDOUT":
      return "The kernel ignored procMonitor's subscription to the proc connector: run it in the initial user and pid namespace (on the host, not inside a container)";
    default:
      return `Cannot open the kernel's proc connector (${error.code})`;
  }
}

/** `--user` names and uids as uids; an unknown name is a usage error. */
function resolveUsers(users: readonly string[], names: UserNames): Set<number> | null {
  if (users.length === 0) return null;
  const uids = new Set<number>();
  for (const user of users) {
    if (/^\d+$/.test(user)) {
      uids.add(Number(user));
      continue;
    }
    const uid = names.uid(user);
    if (uid === undefined) {
      throw new UsageError(`--user names "${user}", who is not in /etc/passwd`);
    }
    uids.add(uid);
  }
  return uids;
}

/** The monitor's options for where processes belong and come from (`config.belong`). */
function belongOptions(config: ServerConfig): Partial<MonitorOptions> {
  const b = config.belong;
  return {
    belong: b,
    ancestry: b.ancestry,
    snapshot: { cwd: b.readCwd, cgroup: b.readCgroup, env: b.env },
  };
}

/** Runs the server until a signal; resolves to the exit code. Usage errors throw UsageError. */
export async function runServer(config: ServerConfig): Promise<number> {
  try {
    await configureLogging(config.logLevel, config.syslog);
  } catch (error) {
    if (!(error instanceof StartupError)) throw error;
    console.error(`procMonitor: ${error.message}`);
    return 1;
  }
  try {
    return await serve(config);
  } catch (error) {
    if (error instanceof UsageError) throw error;
    if (error instanceof StartupError) {
      log.error(error.message);
    } else {
      log.error("procMonitor stopped on an unexpected error: {error}", { error });
    }
    return 1;
  } finally {
    await closeLogging();
  }
}

async function serve(config: ServerConfig): Promise<number> {
  // Signals are ours from the first moment: a SIGTERM during start-up still exits cleanly.
  let monitor: Monitor | null = null;
  let stopRequested = false;
  let signals = 0;
  const listeners: (UnixListener | TcpListener)[] = [];
  const onSignal = () => {
    signals++;
    if (signals === 1) {
      log.info("Stopping on signal; flushing clients");
      stopRequested = true;
      monitor?.stop();
    } else {
      for (const listener of listeners) listener.removeSocketFileNow();
      Deno.exit(1);
    }
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    // Before Deno's own SIGUSR1 listener (500 ms after start) can open a debugger.
    ignoreSignal("SIGUSR1");
    const users = new UserNames();
    const uids = resolveUsers(config.users, users);
    try {
      monitor = await Monitor.start({
        events: config.events,
        threads: config.threads,
        uids,
        match: config.match,
        pids: config.pids.length > 0 ? config.pids : null,
        realtime: config.realtime,
        usage: config.usage,
        users,
        ...belongOptions(config),
      });
    } catch (error) {
      if (error instanceof NativeError) {
        throw new StartupError(connectorProblem(error), { cause: error });
      }
      throw error;
    }
    await using running = monitor;
    if (stopRequested) running.stop();
    return await serveWith(running, config, listeners);
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}

/** Opens the outputs and runs the event loop; `listeners` is shared with the signal handler. */
async function serveWith(
  monitor: Monitor,
  config: ServerConfig,
  listeners: (UnixListener | TcpListener)[],
): Promise<number> {
  const hub = config.socketPath !== null || config.tcpPort !== null
    ? new Hub({ now: () => monitor.now(), host: config.hostId })
    : null;
  let nats: NatsOutput | null = null;
  // Whatever happens from here on, the socket file we create is removed again.
  try {
    if (hub !== null) await openListeners(hub, config, listeners);
    const counts = config.metrics === null ? null : new EventCounts([...config.events, "lost"]);
    await using _metrics = openMetrics(config, {
      monitor,
      hub,
      listeners,
      counts,
      nats: () => nats?.stats() ?? null,
    });

    let failure: unknown = null;
    const console = config.direct
      ? new ConsoleOutput(config.format, {
        color: useColor(Deno.stdout.isTerminal(), Deno.env.toObject()),
        now: () => monitor.now(),
        host: config.hostId,
        onError: (error) => {
          // stdout closed (`procMonitor -d | head`): like any filter, stop quietly.
          if (!(error instanceof Deno.errors.BrokenPipe)) failure = error;
          if (hub === null) monitor.stop();
        },
      })
      : null;

    // SIGUSR2: one line of counters, for an admin or a soak test. Set before "Monitoring
    // process events", which tells the world the daemon is ready. Not SIGUSR1, which the
    // kernel is told to drop (see ignoreSignal): under Deno it would open a debugger.
    const onStats = () => logStats(monitor, hub);
    Deno.addSignalListener("SIGUSR2", onStats);
    logStarted(monitor, config);

    const encoder = new TextEncoder();
    // A lost-to-NATS event reaches the other outputs at once, NATS once it is back.
    nats = await openNats(config, monitor, (lost) => {
      const json = encoder.encode(formatJson(lost));
      hub?.publish(json);
      console?.write([lost], json);
      counts?.add([lost]);
    });
    giveBackStartupPages();
    // After the pages went back: libbpf's moment of 11 MiB then stays under start-up's peak.
    // libbpf's own pages (and libelf's) are needed again only at exit: given back too.
    const bpf = config.bpf ? useExecBpf(monitor).then(giveBackStartupPages) : null;
    const host = config.hostId;
    await monitor.run((events) => {
      let text = "";
      for (const event of events) {
        if (host !== null) event.host = host;
        const line = formatJson(event);
        text += line;
        nats?.push(event.event, line);
      }
      const json = encoder.encode(text);
      hub?.publish(json);
      console?.write(events, json);
      counts?.add(events);
    }, () => nats === null && console === null && hub !== null && hub.allSent);
    await bpf;
    // Before the console's flush: a last lost-to-NATS event still reaches stdout.
    await nats?.close(NATS_CLOSE_MS);
    // A stuck stdout (a paused pager) must not keep SIGTERM from finishing.
    if (console !== null && !await settlesWithin(console.flush(), CONSOLE_FLUSH_MS)) {
      log.warning("stdout did not take the last events within {ms} ms", { ms: CONSOLE_FLUSH_MS });
    }
    Deno.removeSignalListener("SIGUSR2", onStats);
    if (failure !== null) throw failure;
    logStopped(monitor);
    return 0;
  } finally {
    await nats?.close(0); // after a failure; at once if closed already
    for (const listener of listeners.splice(0)) await listener.close();
    await hub?.close();
  }
}

/**
 * Once started, gives back the pages of Deno's executable that only start-up used (see
 * lib/kernel/startup_pages.ts). Without /proc/self/smaps it is left out, never fatal.
 */
function giveBackStartupPages(): void {
  try {
    const released = releaseStartupPages();
    log.debug(
      "Gave back {kib} KiB of start-up pages in {mappings} file mappings ({refused} refused); resident file pages {before} -> {after} KiB",
      {
        kib: released.kib,
        mappings: released.mappings,
        refused: released.refused,
        before: released.rssFileKiB.before,
        after: released.rssFileKiB.after,
      },
    );
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound || error instanceof Deno.errors.PermissionDenied)) {
      throw error;
    }
    log.debug("Kept the start-up pages: {error}", { error: error.message });
  }
}

/**
 * Has exec snapshots taken in the kernel by the library's BPF program; where that cannot
 * be, each exec's /proc is read the moment it comes, as always, and one line says why.
 */
async function useExecBpf(monitor: Monitor): Promise<void> {
  try {
    await monitor.execBpf();
    log.info("Exec cmdlines are taken in the kernel at each exec (BPF)");
  } catch (error) {
    if (!(error instanceof NativeError)) throw error;
    log.info("Exec cmdlines are read from /proc at each exec: {why}", { why: bpfProblem(error) });
  }
}

/** Why the BPF program could not be used, for an admin. */
export function bpfProblem(error: NativeError): string {
  switch (error.code) {
    case "EPERM":
    case "EACCES":
      return "BPF needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)";
    case "ELIBACC":
      return "libbpf.so.1 is not installed (Debian: libbpf1)";
    case "ENOENT":
    case "ESRCH":
      return "this kernel has no BTF type information (CONFIG_DEBUG_INFO_BTF) or no sched_process_exec tracepoint";
    case "ENOSYS":
      return "libprocconn was built without BPF (no clang or libbpf-dev)";
    case "EOPNOTSUPP":
      return "--cwd, --env and the cgroup fields need /proc at the exec";
    case "EINVAL":
      return "this kernel refused the BPF program (it needs Linux 5.17 or later)";
    default:
      return `BPF failed: ${error.code}`;
  }
}

/** The NATS publisher `--nats` asks for, connecting in the background; null without it. */
async function openNats(
  config: ServerConfig,
  monitor: Monitor,
  onLost: (event: LostEvent) => void,
): Promise<NatsOutput | null> {
  const nats = config.nats;
  if (nats === null) return null;
  // Loaded only with --nats: the client costs some 13 MiB resident that other runs keep.
  const { NatsOutput } = await import("../outputs/nats_output.ts");
  const host = config.hostId ?? "unknown";
  return new NatsOutput({
    connect: {
      servers: nats.servers,
      auth: nats.auth,
      ca: nats.ca,
      name: `procMonitor ${host}`,
    },
    prefix: nats.subjectPrefix,
    host,
    bufferBytes: nats.bufferBytes,
    stream: nats.stream,
    now: () => monitor.now(),
    onLost,
  });
}

/** `--metrics`: serves `/metrics` and `/healthz` until disposed; null when off. */
function openMetrics(
  config: ServerConfig,
  parts: {
    monitor: Monitor;
    hub: Hub | null;
    listeners: (UnixListener | TcpListener)[];
    counts: EventCounts | null;
    nats: () => NatsStats | null;
  },
): ServedMetrics | null {
  if (config.metrics === null || parts.counts === null) return null;
  return serveMetrics(config.metrics, {
    monitor: parts.monitor,
    events: parts.counts,
    hub: parts.hub,
    listeners: parts.listeners,
    nats: parts.nats,
  });
}

/** Opens the Unix and TCP listeners `config` asks for, each into `listeners` once open. */
async function openListeners(
  hub: Hub,
  config: ServerConfig,
  listeners: (UnixListener | TcpListener)[],
): Promise<void> {
  if (config.socketPath !== null) {
    listeners.push(
      await UnixListener.open(hub, {
        path: config.socketPath,
        mode: config.socketMode,
        group: config.socketGroup,
        maxClients: config.maxClients,
      }),
    );
  }
  if (config.tcpPort !== null) {
    // Loaded only here: its node:tls and node:crypto cost 4 MiB of resident memory.
    const { TcpListener } = await import("../outputs/tcp_listener.ts");
    listeners.push(
      await TcpListener.open(hub, {
        port: config.tcpPort,
        bind: config.bindAddress,
        password: config.auth ?? "",
        tlsCert: config.tlsCert,
        tlsKey: config.tlsKey,
        maxClients: config.maxClients,
      }),
    );
  }
}

/** The start-up warnings, then the line that says the daemon is ready. */
function logStarted(monitor: Monitor, config: ServerConfig): void {
  const stats = monitor.stats();
  for (const note of ownPrivilegeNotes()) {
    log.warning(`Running as uid ${Deno.uid()}: ${note}`);
  }
  if (config.realtime && stats.priority !== "fifo") {
    log.warning(
      "The reader thread could not get SCHED_FIFO (priority {priority}): under heavy load some exec events may miss their cmdline",
      { priority: stats.priority },
    );
  }
  logUsageOff(config, stats);
  log.info(
    "Monitoring process events ({scanned} processes already running, kernel filter {filter}, reader priority {priority})",
    {
      scanned: monitor.scanned,
      filter: stats.filtered ? "on" : "off",
      priority: stats.priority,
    },
  );
}

/** One warning when exit resource usage was asked for (the default) but is not there. */
function logUsageOff(config: ServerConfig, stats: ReturnType<Monitor["stats"]>): void {
  // Without exit events there is nothing to carry usage: not registered, nothing to say.
  if (!config.usage || stats.usage || !config.events.includes("exit")) return;
  const why = stats.usageError === "EPERM" || stats.usageError === "EACCES"
    ? "registering for taskstats needs CAP_NET_ADMIN"
    : stats.usageError === "ENOENT"
    ? "this kernel has no taskstats (CONFIG_TASKSTATS)"
    : `taskstats failed: ${stats.usageError ?? "unknown"}`;
  log.warning(
    "Exit events carry no resource usage (cpu, memory, I/O): {why}; --no-usage silences this",
    { why },
  );
}

/** The last line: what the monitor saw and lost. */
function logStopped(monitor: Monitor): void {
  const end = monitor.stats();
  if (!monitor.readerEnded) {
    // Stuck in a /proc read: what it reads from now on is neither delivered nor counted.
    log.warning("The reader thread did not stop within 1 s; the counts below may be short");
  }
  log.info(
    "Stopped after {events} kernel events ({lost} lost in the kernel, {ringLost} in the ring)",
    { events: end.events, lost: end.kernelLost, ringLost: end.ringLost },
  );
  if (end.usageLost > 0 || end.usageMissing > 0) {
    log.info("Exit usage: {lost} taskstats messages lost, {missing} exits went out without", {
      lost: end.usageLost,
      missing: end.usageMissing,
    });
  }
}
