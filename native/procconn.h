/*
 * procconn.h - the kernel proc connector behind one opaque handle.
 *
 * A reader thread drains the NETLINK_CONNECTOR socket into a ring of records; the caller
 * takes whole records out with pc_take(), woken by a doorbell socket (pc_arm()). Every function returns >= 0 on success
 * and -errno on failure. This header is the record layout's single source of truth:
 * lib/record.ts decodes the same offsets.
 */
#ifndef PROCCONN_H
#define PROCCONN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PC_EXPORT __attribute__((visibility("default")))

/* Library version, bumped whenever the record layout or an export changes. */
#define PC_VERSION "1.14.0"

/* `what` values: the kernel's PROC_EVENT_* (linux/cn_proc.h) plus our own. */
#define PC_EVENT_FORK 0x00000001u
#define PC_EVENT_EXEC 0x00000002u
#define PC_EVENT_UID 0x00000004u
#define PC_EVENT_GID 0x00000040u
#define PC_EVENT_SID 0x00000080u
#define PC_EVENT_PTRACE 0x00000100u
#define PC_EVENT_COMM 0x00000200u
#define PC_EVENT_NONZERO_EXIT 0x20000000u /* filter bit only, never a record's `what` */
#define PC_EVENT_COREDUMP 0x40000000u
#define PC_EVENT_EXIT 0x80000000u
/* Not a kernel event: events were lost. data[0] = PC_LOST_*, data[1] = count. */
#define PC_EVENT_LOST 0x00010000u

#define PC_LOST_KERNEL 1u /* netlink receive buffer overrun (ENOBUFS) or a sequence gap */
#define PC_LOST_BUFFER 2u /* the ring was full */
/* taskstats messages lost (their socket overran, ENOBUFS): as many exits go out without usage */
#define PC_LOST_USAGE 3u

/* Record flags. */
#define PC_F_SNAPSHOT 0x1u          /* exec: the snapshot fields below are present */
#define PC_F_CMDLINE_TRUNCATED 0x2u /* exec: cmdline was cut at PC_CMDLINE_MAX bytes */
#define PC_F_GONE 0x4u /* exec: the process was gone (or its pid reused) before /proc was read */
#define PC_F_NO_EXE 0x8u            /* exec: /proc/PID/exe could not be read */
#define PC_F_USAGE 0x10u /* exit: struct pc_usage follows the head (taskstats, pc_options.no_usage) */
#define PC_F_USAGE_LAST 0x20u /* exit with usage: the task was the last of its process (AGROUP) */
#define PC_F_ENV_TRUNCATED 0x40u /* exec: an env value was cut at PC_ENV_VALUE_MAX bytes, or
                                  * an asked-for variable left out for lack of room */

#define PC_CMDLINE_MAX 4096u /* bytes of /proc/PID/cmdline kept per exec */
#define PC_EXE_MAX 1024u     /* bytes of the /proc/PID/exe target kept per exec */
#define PC_CWD_MAX 1024u     /* bytes of the /proc/PID/cwd target; longer: none, never cut */
#define PC_CGROUP_MAX 1024u  /* bytes of the chosen cgroup path; longer: none, never cut */
#define PC_ENV_MAX 2048u     /* bytes of picked "NAME=value\0" entries per exec */
#define PC_ENV_VALUE_MAX 1024u /* bytes of one picked value; longer ones are cut */
#define PC_ENV_NAMES_MAX 256u  /* pc_options.env_names: NUL-separated, "" ends the list */
#define PC_ENV_NAMES_COUNT 32u /* names in env_names, at most */
#define PC_ENV_READ_MAX (256u << 10) /* bytes of /proc/PID/environ looked at, at most */

/* Extra exec reads, pc_options.snapshot_reads; each one can be left off (its cost). */
#define PC_READ_CWD 0x1u    /* the /proc/PID/cwd link */
#define PC_READ_CGROUP 0x2u /* /proc/PID/cgroup: the v2 ("0::") path, else name=systemd's */
#define PC_READ_ENV 0x4u    /* the variables named in env_names from /proc/PID/environ */

/*
 * One record. Records are packed back to back in a batch, each `size` bytes long
 * (a multiple of 8). Every record has the 48-byte head; an exec record with
 * PC_F_SNAPSHOT also has the 40-byte snapshot and then, back to back, cmdline_len bytes of
 * cmdline, exe_len of exe, cwd_len of cwd, env_len of env and cgroup_len of cgroup.
 * A length of 0 means "not read, or not known" for each.
 *
 * data[] holds the kernel's event_data union as sent, in 32-bit words:
 *   FORK     parent_pid, parent_tgid, child_pid, child_tgid
 *   EXEC     process_pid, process_tgid
 *   UID/GID  process_pid, process_tgid, ruid|rgid, euid|egid
 *   SID      process_pid, process_tgid
 *   PTRACE   process_pid, process_tgid, tracer_pid, tracer_tgid
 *   COMM     process_pid, process_tgid, comm[16] (data[2..5])
 *   COREDUMP process_pid, process_tgid, parent_pid, parent_tgid
 *   EXIT     process_pid, process_tgid, exit_code, exit_signal, parent_pid, parent_tgid
 *            (with PC_F_USAGE the record is PC_RECORD_USAGE_SIZE: struct pc_usage at 48)
 *   LOST     where (PC_LOST_*), count
 */
struct pc_record {
  uint32_t size;         /*  0 */
  uint32_t what;         /*  4 */
  uint32_t cpu;          /*  8 */
  uint32_t flags;        /* 12 */
  uint64_t timestamp_ns; /* 16: CLOCK_MONOTONIC, the kernel's own for kernel events */
  uint32_t data[6];      /* 24 */
  /* 48: exec snapshot, present with PC_F_SNAPSHOT */
  uint32_t ruid;         /* 48: 0xFFFFFFFF since 1.3: exec keeps the real uid of the fork;
                          * with BPF (1.12) the real uid at the exec */
  uint32_t euid;         /* 52: owner of /proc/PID (root when not dumpable); with BPF the
                          * effective uid itself */
  int32_t ppid;          /* 56: -1 when unknown */
  uint16_t cmdline_len;  /* 60: bytes of cmdline that follow (NUL-separated, as /proc gives) */
  uint16_t exe_len;      /* 62: bytes of the exe path that follow the cmdline */
  char comm[16];         /* 64: NUL-padded */
  /* since 1.7 (PC_READ_*): */
  uint16_t cwd_len;      /* 80: bytes of the cwd path (after the exe) */
  uint16_t env_len;      /* 82: bytes of "NAME=value\0" entries (after the cwd), in the
                          * order of the environment, each asked-for name at most once */
  uint16_t cgroup_len;   /* 84: bytes of the cgroup path (after the env) */
  uint16_t reserved;     /* 86: 0 */
  /* 88: cmdline, exe, cwd, env, cgroup bytes, then zero padding up to `size` */
};

/*
 * An exit record with PC_F_USAGE: the exiting task's own resource usage from the kernel's
 * taskstats message for it (include/uapi/linux/taskstats.h), right after the head. Per task:
 * a thread's exit has the thread's, and summing a process's threads is the caller's.
 */
struct pc_usage {
  uint64_t cpu_user_us;     /* 48: ac_utime, microseconds */
  uint64_t cpu_sys_us;      /* 56: ac_stime, microseconds */
  uint64_t max_rss_kb;      /* 64: hiwater_rss, KiB: the peak of the memory the threads share */
  uint64_t read_bytes;      /* 72: storage reads (not page-cache hits), a multiple of 1024 */
  uint64_t write_bytes;     /* 80: storage writes, a multiple of 1024 */
  uint64_t ctx_voluntary;   /* 88: nvcsw */
  uint64_t ctx_involuntary; /* 96: nivcsw */
};

#define PC_RECORD_HEAD_SIZE 48u
#define PC_RECORD_USAGE_SIZE 104u /* an exit record with PC_F_USAGE */
#define PC_RECORD_SNAPSHOT_SIZE 88u
#define PC_RECORD_MAX                                                                        \
  (PC_RECORD_SNAPSHOT_SIZE + PC_CMDLINE_MAX + PC_EXE_MAX + PC_CWD_MAX + PC_ENV_MAX +         \
   PC_CGROUP_MAX)

/* Options for pc_open(). Zero means the default for every field. */
struct pc_options {
  uint32_t event_mask;  /* PC_EVENT_* bits the kernel should send; 0 = all */
  uint32_t ring_bytes;  /* ring capacity; default 8 MiB, at least 64 KiB */
  uint32_t rcvbuf_bytes;/* netlink receive buffer; default 32 MiB */
  uint32_t no_realtime; /* 1: leave the reader thread at normal priority */
  uint32_t ack_timeout_ms; /* how long to wait for the kernel's ack; default 1000 */
  uint32_t no_usage;    /* 1: no exit resource usage (no taskstats socket) */
  uint32_t snapshot_reads; /* PC_READ_* bits: the exec snapshot's extra reads; 0 = none */
  char env_names[PC_ENV_NAMES_MAX]; /* with PC_READ_ENV: names, each NUL-terminated, an
                                     * empty one (or the end) ends the list; none has '=' */
};

/* Counters, all monotonically increasing since pc_open(). */
struct pc_stats {
  uint64_t events;        /* kernel events received (acks not counted) */
  uint64_t kernel_lost;   /* events lost to ENOBUFS or sequence gaps (see pc_stats doc) */
  uint64_t enobufs;       /* times recv() reported ENOBUFS */
  uint64_t ring_lost;     /* events dropped because the ring was full */
  uint64_t ring_high;     /* most bytes ever waiting in the ring */
  uint64_t exec_gone;     /* exec events whose process was gone before /proc was read */
  uint64_t filtered;      /* 1 when the kernel event filter (6.6+) is in force */
  uint64_t realtime;      /* 2 = SCHED_FIFO, 1 = nice -20, 0 = normal priority */
  uint64_t exec_reused;   /* exec events whose pid belonged to a newer process by the time
                           * /proc was read (counted in exec_gone too) */
  uint64_t exec_stuck;    /* exec events whose /proc read hung (a process in D state, a hung
                           * FUSE or NFS mapping): delivered as gone, by a new reader thread */
  uint64_t usage;         /* 1 when exits are joined with their taskstats usage */
  uint64_t usage_error;   /* why not (a positive errno: EPERM, ENOENT = no CONFIG_TASKSTATS) */
  uint64_t usage_lost;    /* taskstats messages lost to ENOBUFS (reported as LOST usage) */
  uint64_t usage_missing; /* exits delivered without usage while usage was on */
  /* since 1.12 (pc_exec_bpf()): */
  uint64_t exec_bpf;         /* 1 once the reader takes exec snapshots from the BPF program */
  uint64_t exec_bpf_error;   /* why pc_exec_bpf() failed last (a positive errno), or 0 */
  uint64_t exec_bpf_missed;  /* execs with BPF on that had no entry: /proc was read instead */
  uint64_t exec_bpf_dropped; /* entries the program had no room for in its ring */
  /* since 1.14: */
  uint64_t steps;      /* gathering steps ended with a bell (BPF or the exec socket on) */
  uint64_t slow_steps; /* of those, the long steps of a sparse stream (PC_SLOW_HOLD_NS) */
};

typedef struct pc_handle pc_handle;

/* The library version string, PC_VERSION. */
PC_EXPORT const char *pc_version(void);

/* CLOCK_MONOTONIC now, in ns: the clock of record timestamps, for converting them to wall time. */
PC_EXPORT uint64_t pc_now_ns(void);

/*
 * Sets signo's disposition to SIG_IGN for the whole process: 0, or -errno (-EINVAL for a
 * signal that cannot be ignored). procMonitor uses it for SIGUSR1, on which Deno >= 2.9.2
 * would start an unauthenticated V8 inspector on 127.0.0.1:9229 (code execution as root
 * for any local user). Deno's own handler must already be installed (a listener added),
 * or installing it later would replace this.
 */
PC_EXPORT int pc_ignore_signal(int32_t signo);

/* CLOCK_REALTIME now, in ns: with pc_now_ns(), the offset from record time to wall time. */
PC_EXPORT uint64_t pc_realtime_ns(void);

/*
 * Gives back the resident pages of [start, start + len), which must be page-aligned and lie in
 * read-only file mappings holding no private (copied-on-write) pages: MADV_PAGEOUT has the
 * kernel free those only this process maps (a no-op before Linux 5.4), then MADV_DONTNEED
 * unmaps the rest from this process. Their contents stay the file's: a page used again is
 * read back from the page cache or the file. 0, or -errno (-EINVAL, -ENOMEM: not mapped).
 */
PC_EXPORT int pc_release_pages(uint64_t start, uint64_t len);

/*
 * Opens, binds and subscribes the connector, waits for the kernel's ack, then starts the
 * reader thread. Errors: -EPROTONOSUPPORT (no connector in this kernel), -EPERM/-EACCES
 * (no privilege), -ETIMEDOUT (the kernel ignored the subscription: not the initial user or
 * pid namespace), -EINVAL (env_names with PC_READ_ENV: a name with '=', more than
 * PC_ENV_NAMES_COUNT names, or one that runs past the end), others from socket calls.
 * *out is set only on success.
 * Unless opts->no_usage, it also registers a taskstats socket for every possible CPU's task
 * exits, so that exit records carry usage (PC_F_USAGE); when that fails (no privilege, no
 * CONFIG_TASKSTATS) pc_open() still succeeds, without usage: pc_stats() says why.
 */
PC_EXPORT int pc_open(const struct pc_options *opts, pc_handle **out);

/*
 * The doorbell. pc_open() listens on an abstract Unix socket whose name (no leading NUL)
 * pc_bell_name() copies into buf (returns its length, -ENOSPC if cap is too small). The
 * consumer connects a stream socket to it from this process and then calls
 * pc_bell_accept(), which takes that connection (-EAGAIN when none is there yet; a
 * connection from another process is closed) and closes the listener. From then on each
 * pc_arm() that returned 0 is followed by exactly one byte on that connection, once
 * records, a stop or the reader's end are there.
 */
PC_EXPORT int pc_bell_name(pc_handle *h, char *buf, uint32_t cap);
PC_EXPORT int pc_bell_accept(pc_handle *h);

/*
 * 1 while the reader thread runs, 0 once it has ended (after pc_stop() it still finishes
 * the read in hand, and rings an armed doorbell when it ends).
 */
PC_EXPORT int pc_running(pc_handle *h);

/*
 * Arms the doorbell. Returns 1 when records are already waiting or the reader has ended
 * (the byte is sent at once all the same), 0 when the consumer should wait for it.
 */
PC_EXPORT int pc_arm(pc_handle *h);

/* What pc_wait() found: records (or the reader's end), the event loop's turn, or both. */
#define PC_WAIT_RECORDS 0x1
#define PC_WAIT_LOOP 0x2

/*
 * Waits on the calling thread, at most timeout_ms, until records are there (or the reader
 * has ended: PC_WAIT_RECORDS) or the consumer's own event loop has something to do
 * (PC_WAIT_LOOP: its epoll set, the one that watches the consumer's end of the doorbell,
 * is readable, or a signal came). 0 on timeout. A consumer that blocks its event loop's
 * thread here spares a turn of that loop per batch; it must go back to the loop when told,
 * and now and then for its timers. -ENOTCONN before pc_bell_accept(); -ENOENT when no
 * epoll set of this process watches the doorbell (use pc_arm() and the loop instead).
 */
PC_EXPORT int pc_wait(pc_handle *h, int32_t timeout_ms);

/*
 * Copies as many whole records as fit into buf, without waiting. Returns the bytes copied
 * (0 when the ring is empty), or -errno: -EINVAL if cap < PC_RECORD_MAX, -EPIPE once the
 * ring is empty and the reader thread failed (pc_error() says why).
 */
PC_EXPORT int pc_take(pc_handle *h, uint8_t *buf, uint32_t cap);

/* Copies the counters into *out. */
PC_EXPORT int pc_stats(pc_handle *h, struct pc_stats *out);

/* The errno that stopped the reader thread, or 0. */
PC_EXPORT int pc_error(pc_handle *h);

/*
 * Tells the reader thread to stop and rings an armed doorbell, without waiting for the
 * thread (it may be in a /proc read that blocks). Records already in the ring stay
 * readable with pc_take(). Idempotent.
 */
PC_EXPORT int pc_stop(pc_handle *h);

/*
 * Has each exec's snapshot taken in the kernel, at the exec, by a BPF program on the
 * sched_process_exec tracepoint (native/exec_args.bpf.c, loaded with libbpf.so.1 through
 * dlopen): cmdline, exe, parent, euid and name, exact whenever the reader gets to them.
 * The reader then no longer wakes at once for each exec (the exec socket passes exits
 * instead, which complete a calm burst) and reads no /proc for it; an exec without an entry (the program's ring full, or the exec
 * before the program was attached) is read from /proc as before. Slow (libbpf parses the
 * kernel's BTF, about 11 MiB for a moment): call it once the caller has started. The
 * reader takes the program at its next read. Errors: -EOPNOTSUPP (snapshot_reads asked
 * for, or PROCMONITOR_PROC_ROOT), -EALREADY, and pc_bpf_open()'s: -ELIBACC (no
 * libbpf.so.1), -EPERM (no CAP_BPF with CAP_PERFMON), -ENOENT/-ESRCH (no kernel BTF or no
 * such tracepoint), -ENOSYS (built without BPF), others from bpf(). pc_stats() tells.
 */
PC_EXPORT int pc_exec_bpf(pc_handle *h);

/*
 * Stops and joins the reader thread (waiting at most 2 s), unsubscribes, closes the sockets
 * and frees the handle. Returns 0, or 1 when a reader thread stuck in a /proc read was left
 * behind: then the handle is not freed, and the library must stay loaded (the thread returns
 * into its code once the read does); the subscriptions end all the same (taskstats
 * deregistered, what it had queued thrown away), though the sockets stay open.
 * Must not run while another call on the handle runs.
 */
PC_EXPORT int pc_close(pc_handle *h);

/*
 * Native clients: Unix-socket clients whose sockets the library owns, so that sending to
 * them is a plain send() on the caller's thread and nothing wakes it when a client reads.
 * One small thread per pc_clients waits for what the caller must hear of and queues it per
 * client as notices, announced on a doorbell like the connector's (PC_CL_*).
 *
 * pc_cl_open() creates a stream socket, binds it to path (the caller chooses a safe place
 * and moves the file; the library never unlinks it, even on failure), listens with backlog,
 * and starts the thread. Up to cap clients (at most 65535) are held at once; past that the
 * rest wait in the backlog until one is closed. A client is named by an id (its slot and a
 * generation), never by its fd, so an id closed once never names another client.
 * Errors: -EINVAL, -ENAMETOOLONG (path longer than sun_path), -ENOMEM, others from the
 * socket calls (-EADDRINUSE, -EACCES...).
 */
#define PC_CL_NEW 0x1u      /* a client connected: its id is new */
#define PC_CL_HUP 0x2u      /* it closed its end (or its sending side), or was reset */
#define PC_CL_WRITABLE 0x4u /* a send that returned -EAGAIN may be retried */
#define PC_CL_FAILED 0x8u   /* accept() failed; the id field is the errno; retried in 100 ms */

typedef struct pc_clients pc_clients;

PC_EXPORT int pc_cl_open(const char *path, int32_t backlog, uint32_t cap, pc_clients **out);

/* The doorbell, as pc_bell_name()/pc_bell_accept(). After pc_cl_bell_accept() a byte comes
 * whenever notices wait and none was sent since the last pc_cl_ready() that took them all. */
PC_EXPORT int pc_cl_bell_name(pc_clients *c, char *buf, uint32_t cap);
PC_EXPORT int pc_cl_bell_accept(pc_clients *c);

/* Takes waiting notices as (id, PC_CL_* flags) pairs of u32 into out (cap u32s, >= 2);
 * returns the number of pairs. Call again while it fills out. */
PC_EXPORT int pc_cl_ready(pc_clients *c, uint32_t *out, uint32_t cap);

/* A nonblocking send: bytes sent, or -EAGAIN (the socket is full: a PC_CL_WRITABLE notice
 * follows), -EPIPE/-ECONNRESET (the client is gone), -EBADF (no such id). */
PC_EXPORT int pc_cl_send(pc_clients *c, uint32_t id, const uint8_t *buf, uint32_t len);

/* shutdown(SHUT_WR): the client reads the end of the stream after what was sent. */
PC_EXPORT int pc_cl_shutdown_write(pc_clients *c, uint32_t id);

/* Closes the client's socket; the id is dead from then on (-EBADF). */
PC_EXPORT int pc_cl_close(pc_clients *c, uint32_t id);

/* Clients open (accepted and not closed with pc_cl_close()). */
PC_EXPORT int pc_cl_clients(pc_clients *c);

/* Closes the listening socket; the clients stay. Idempotent. */
PC_EXPORT int pc_cl_stop_listen(pc_clients *c);

/* Ends and joins the thread, closes every socket and frees c. Must not run while another
 * call on c runs. */
PC_EXPORT int pc_cl_free(pc_clients *c);

#ifdef __cplusplus
}
#endif

#endif /* PROCCONN_H */
