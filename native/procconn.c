/*
 * procconn.c - the kernel proc connector behind one opaque handle (see procconn.h).
 *
 * One reader thread owns the netlink socket. It turns every kernel message into a record,
 * snapshotting /proc for exec events the moment they arrive, and appends the record to a
 * byte ring. pc_take() copies whole records out; a one-byte doorbell on a Unix socket
 * wakes a consumer that found the ring empty, so its event loop can wait for records the
 * way it waits for any socket, with no thread of its own blocked in a call. All state hangs off the handle; the
 * only allocations happen in pc_open().
 *
 * Kernel behaviour relied on (drivers/connector/cn_proc.c, net/netlink/af_netlink.c):
 *  - send_msg() stamps every message, acks included, with a per-CPU sequence number and
 *    the sending CPU, so an ack's cn_msg.seq is NOT the seq we sent: only cn_msg.ack
 *    (our ack + 1) identifies our ack, and acks take part in the per-CPU numbering.
 *  - With a 6.6+ event filter in force, filtered messages still consume sequence numbers,
 *    so gaps only mean loss when no filter is installed.
 *  - A receive-queue overrun sets NETLINK_S_CONGESTED: from then on every message for
 *    this socket is dropped (and counted in sk_drops) until the queue has been read
 *    empty. ENOBUFS is reported by the first recv after the overrun, before the messages
 *    still queued. So the exact loss of one overrun is known once the queue is drained,
 *    from SO_MEMINFO's SK_MEMINFO_DROPS, whether or not a filter is in force.
 *
 * What callers may rely on, beyond procconn.h:
 *  - event_mask follows the kernel filter's rule on every kernel (EXIT = all exits,
 *    NONZERO_EXIT = exits with exit_code != 0); bits outside the kernel events, LOST
 *    included, are ignored, and no kernel bit left means all. LOST records always come.
 *  - LOST kernel: without a filter each sequence gap is reported in place, with its CPU;
 *    after an overrun, drops no gap has shown yet are reported when the socket has been
 *    read empty, with cpu 0xFFFFFFFF. The counts add up to stats.kernel_lost (exact
 *    unless SO_MEMINFO is missing: then one record of count 1 per overrun). LOST buffer:
 *    cpu 0xFFFFFFFF, counts add up to stats.ring_lost.
 *  - exec: ruid is always 0xFFFFFFFF (exec keeps it: the caller knows it from the fork);
 *    euid 0xFFFFFFFF and ppid -1 when unknown; comm is "" when unknown. PC_F_GONE: the
 *    process had exited before its cmdline could be read (no /proc entry, or an empty
 *    cmdline, which after exec only a zombie has; ppid and comm still come from a
 *    zombie's stat, ppid -1 once it is reaped), or its pid already belonged to a process started after the exec. exe_len is 0 exactly when PC_F_NO_EXE,
 *    which is also set for a target longer than PC_EXE_MAX rather than cutting it.
 *  - stats.events counts kernel events read from the socket, including those the mask
 *    then drops; acks are not counted.
 *  - exit: with usage on, a record is PC_RECORD_USAGE_SIZE with PC_F_USAGE exactly when its
 *    task's taskstats message was read (never waited for); otherwise the head alone, counted
 *    in stats.usage_missing. LOST usage: cpu 0xFFFFFFFF, counts add up to stats.usage_lost
 *    (taskstats messages dropped; one of count 1 per overrun without SO_MEMINFO).
 *  - pc_take never waits; concurrent callers are served one at a time. pc_error() returns
 *    a positive errno.
 *  - pc_close() must not race a pc_take() or pc_arm() still running.
 */
#include "procconn.h"
#include "exec_bpf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/time.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <linux/acct.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/taskstats.h>

/* With -DPC_FUZZING (native/fuzz/) the parsers that tests drive directly are not static, and
 * the test hooks at the end of this file exist: procconn_internal.h declares them. A normal
 * build has neither, so the library's exports stay those of procconn.h. */
#ifdef PC_FUZZING
#include "procconn_internal.h"
#define PC_INTERNAL
#else
#define PC_INTERNAL static
#endif

/* The 6.6+ subscription payload; Debian 12's 6.1 headers predate it. */
struct pc_proc_input {
  uint32_t mcast_op;
  uint32_t event_type;
};

/* PROC_EVENT_ALL of 6.6+: every bit the kernel filter understands. */
#define PC_KERNEL_EVENTS                                                                     \
  (PC_EVENT_FORK | PC_EVENT_EXEC | PC_EVENT_UID | PC_EVENT_GID | PC_EVENT_SID |             \
   PC_EVENT_PTRACE | PC_EVENT_COMM | PC_EVENT_NONZERO_EXIT | PC_EVENT_COREDUMP |            \
   PC_EVENT_EXIT)

#define PC_DEFAULT_RING (8u << 20)
#define PC_MIN_RING (64u << 10)
#define PC_DEFAULT_RCVBUF (32u << 20)
#define PC_DEFAULT_ACK_MS 1000
#define PC_PROBE_ACK_MS 300 /* an 8-byte LISTEN is acked at once or never (< 6.6) */
#define PC_FIFO_PRIO 10
/*
 * After a read, events gather this long before the next one, unless an exec comes (its
 * /proc must be read at once): a storm then costs a reader and a consumer wakeup per
 * millisecond, not per event. 1 ms rather than 0.5: a timer wakeup costs the reader ~15 us
 * on a VM, and each consumer wakeup costs a send and a client wakeup per client; in three
 * alternating bench runs the fork storm's CPU fell from 1.00-1.08x forkstat's to
 * 0.74-0.89x, for 0.2-0.7 ms more median storm latency (README, Benchmark).
 */
#define PC_HOLD_NS 1000000u
/*
 * A burst that starts after a calm spell (no doorbell for PC_CALM_GAP_NS) is announced as
 * soon as it is complete: every process forked in it has exited. Its reader watches the
 * main socket meanwhile, up to PC_CALM_HOLD_NS; a short-lived process then costs one
 * consumer wakeup, at its exit, however long it lived within that. A burst of more than
 * PC_CALM_EVENTS events or PC_OPEN_MAX open children is a storm: the plain hold-off again.
 */
#define PC_CALM_GAP_NS 2000000u
#define PC_CALM_HOLD_NS 1000000u
#define PC_CALM_EVENTS 12u
#define PC_OPEN_MAX 4u
/*
 * A sparse stream: PC_SLOW_RUN steps in a row that each began less than PC_CALM_GAP_NS after
 * the bell before them (a stream, not a process now and then) and gathered no more than
 * PC_SLOW_EVENTS events per PC_HOLD_NS of their length. On a slow VM a fork storm is such a
 * stream (fork + _exit at 450-900/s: a process every 1-2 ms), and a 1 ms step gathers one
 * process: two reader wakeups and a consumer wakeup for each, where forkstat wakes once or
 * twice. Its steps then last PC_SLOW_HOLD_NS, gather several processes, and follow each
 * other on the clock: the next begins at the bell, not at its first event, so a step costs
 * the reader one wakeup instead of two; the first step that gathers nothing ends the stream.
 * Measured (README, What each change bought): 3 ms steps begun by an event took a slow
 * VM's storm from 362 to 272 us per process; clocked 4 ms steps took the reader's and the
 * consumer's wakeups in a stream of a process every 1.5 ms from 1.29 to 0.80 per process
 * (3 ms clocked steps: 1.05, but more of them the consumer's, which cost more), for about
 * 0.6 ms more median latency in such a stream; 4 ms keeps a step within the 5 ms storm
 * target. A stream denser than that (a fast VM's storm) or a process now and then never
 * changes step.
 */
#define PC_SLOW_HOLD_NS 4000000u
#define PC_SLOW_EVENTS 4u
#define PC_SLOW_RUN 4u

/* loop_epfd before pc_wait() first looked for it, and when no epoll set watches the bell. */
#define PC_LOOP_UNKNOWN (-2)
#define PC_LOOP_NONE (-1)
/* How long the main socket may lag the exec socket by an exec before we stop waiting. */
#define PC_CATCH_UP_MS 2
#define PC_URGENT_BUF 512 /* exec-socket datagrams are only counted */
#define PC_URGENT_SLOTS 16 /* exit-socket datagrams per recvmmsg(): a calm burst has 12 at most */
/* A /proc read of an exec that takes longer than this (a process stuck in D state, a hung
 * FUSE or NFS mapping) is left behind: a new reader takes the socket over. */
#define PC_STUCK_MS 250
#define PC_JOIN_MS 2000 /* pc_close() waits this long for the reader, then leaves it */
/* Reader states in pc_handle.rstate, below the reader's generation (state | gen << 2). */
#define PC_R_RUNNING 0u
#define PC_R_IN_PROC 1u
#define PC_SPIN_NS 20000u /* how long to spin for the exec socket to get an exec already read */
#define PC_RECV_SLOTS 64    /* datagrams per recvmmsg(): one syscall per burst, not per event */
#define PC_RECV_SLOT 1024   /* one connector message is 76 bytes */
/* The reader's scratch: /proc/PID/stat (starttime is within the first ~250 bytes), the
 * whole of /proc/PID/cgroup (~300 bytes with every v1 controller), and environ a piece at
 * a time. */
#define PC_STATUS_READ 4096
#define PC_MIN_CPUS 256     /* cpu ids beyond get_nprocs_conf() are possible when sparse */
#define PC_NO_CPU UINT32_MAX
#define PC_NO_UID UINT32_MAX
#define PC_EVENT_DATA_SIZE 24u
/* taskstats (exit resource usage). A message is ~500 bytes (two structs for a thread group's
 * end); a slot twice that leaves room for the struct to grow in later kernels. */
#define PC_TS_SLOTS 32
#define PC_TS_SLOT 2048
/* Usage read but not yet joined to its exit. The taskstats socket gets each message just
 * before the connector gets the exit (KERNEL.md), so entries wait microseconds; older ones
 * belong to exits the connector lost, and go. */
#define PC_USAGE_SLOTS 512u
#define PC_USAGE_STALE_NS 2000000000u
/* Datagrams one drain of the taskstats socket reads at most (an exit's join, or one turn of
 * the reader's loop after an overrun): the connector socket waits meanwhile. */
#define PC_TS_DRAIN_MAX (PC_USAGE_SLOTS / 2)
/* After an overrun, how soon the reader's loop reads the taskstats socket again. */
#define PC_TS_RETRY_NS 1000000u
/* pc_close() with a reader left behind: taskstats datagrams it throws away, at most. */
#define PC_TS_DISCARD_MAX 65536u
#define PC_TS_CPUS_MAX 256 /* the possible-CPU list as registered, e.g. "0-127" */
/* struct taskstats' version 4 has every field read here (the struct only grows, and the
 * attribute's length is checked as well); AGROUP in ac_flag is set since version 12. */
#define PC_TS_MIN_VERSION 4
#define PC_TS_AGROUP_VERSION 12
#define PC_TS_NEED (offsetof(struct taskstats, nivcsw) + sizeof(uint64_t))

/* The record layout is shared with lib/record.ts: pin every offset it decodes. */
_Static_assert(offsetof(struct pc_record, size) == 0, "pc_record.size");
_Static_assert(offsetof(struct pc_record, what) == 4, "pc_record.what");
_Static_assert(offsetof(struct pc_record, cpu) == 8, "pc_record.cpu");
_Static_assert(offsetof(struct pc_record, flags) == 12, "pc_record.flags");
_Static_assert(offsetof(struct pc_record, timestamp_ns) == 16, "pc_record.timestamp_ns");
_Static_assert(offsetof(struct pc_record, data) == 24, "pc_record.data");
_Static_assert(offsetof(struct pc_record, ruid) == PC_RECORD_HEAD_SIZE, "pc_record head");
_Static_assert(offsetof(struct pc_record, euid) == 52, "pc_record.euid");
_Static_assert(offsetof(struct pc_record, ppid) == 56, "pc_record.ppid");
_Static_assert(offsetof(struct pc_record, cmdline_len) == 60, "pc_record.cmdline_len");
_Static_assert(offsetof(struct pc_record, exe_len) == 62, "pc_record.exe_len");
_Static_assert(offsetof(struct pc_record, comm) == 64, "pc_record.comm");
_Static_assert(offsetof(struct pc_record, cwd_len) == 80, "pc_record.cwd_len");
_Static_assert(offsetof(struct pc_record, env_len) == 82, "pc_record.env_len");
_Static_assert(offsetof(struct pc_record, cgroup_len) == 84, "pc_record.cgroup_len");
_Static_assert(sizeof(struct pc_record) == PC_RECORD_SNAPSHOT_SIZE, "pc_record snapshot");
_Static_assert(PC_RECORD_MAX % 8 == 0, "records are 8-aligned");
_Static_assert(PC_CMDLINE_MAX <= UINT16_MAX && PC_EXE_MAX <= UINT16_MAX &&
                   PC_CWD_MAX <= UINT16_MAX && PC_ENV_MAX <= UINT16_MAX &&
                   PC_CGROUP_MAX <= UINT16_MAX,
               "u16 lengths");
_Static_assert(PC_CGROUP_MAX < PC_STATUS_READ, "a kept cgroup path fits the scratch");
_Static_assert(PC_ENV_NAMES_COUNT <= 32, "found names are bits of a u32");
_Static_assert(offsetof(struct pc_options, snapshot_reads) == 24, "pc_options.snapshot_reads");
_Static_assert(offsetof(struct pc_options, env_names) == 28, "pc_options.env_names");
_Static_assert(sizeof(struct pc_options) == 28 + PC_ENV_NAMES_MAX,
               "pc_options is 7 u32 and the names for the FFI");
_Static_assert(sizeof(struct pc_stats) == 160, "pc_stats is 20 u64 for the FFI");
/* The usage block of an exit record, decoded by lib/kernel/record.ts at these offsets. */
_Static_assert(PC_RECORD_HEAD_SIZE + offsetof(struct pc_usage, cpu_user_us) == 48, "cpu_user_us");
_Static_assert(PC_RECORD_HEAD_SIZE + offsetof(struct pc_usage, cpu_sys_us) == 56, "cpu_sys_us");
_Static_assert(PC_RECORD_HEAD_SIZE + offsetof(struct pc_usage, max_rss_kb) == 64, "max_rss_kb");
_Static_assert(PC_RECORD_HEAD_SIZE + offsetof(struct pc_usage, read_bytes) == 72, "read_bytes");
_Static_assert(PC_RECORD_HEAD_SIZE + offsetof(struct pc_usage, write_bytes) == 80, "write_bytes");
_Static_assert(PC_RECORD_HEAD_SIZE + offsetof(struct pc_usage, ctx_voluntary) == 88, "nvcsw");
_Static_assert(PC_RECORD_HEAD_SIZE + offsetof(struct pc_usage, ctx_involuntary) == 96, "nivcsw");
_Static_assert(PC_RECORD_HEAD_SIZE + sizeof(struct pc_usage) == PC_RECORD_USAGE_SIZE, "usage");
_Static_assert(PC_RECORD_USAGE_SIZE % 8 == 0 && PC_RECORD_USAGE_SIZE <= PC_RECORD_MAX, "8-aligned");
/* struct taskstats (include/uapi/linux/taskstats.h) only ever grows at its end: the fields
 * read here sit at these offsets in every version that has them. */
_Static_assert(offsetof(struct taskstats, version) == 0, "taskstats.version");
_Static_assert(offsetof(struct taskstats, ac_exitcode) == 4, "taskstats.ac_exitcode");
_Static_assert(offsetof(struct taskstats, ac_flag) == 8, "taskstats.ac_flag");
_Static_assert(offsetof(struct taskstats, ac_utime) == 152, "taskstats.ac_utime");
_Static_assert(offsetof(struct taskstats, ac_stime) == 160, "taskstats.ac_stime");
_Static_assert(offsetof(struct taskstats, hiwater_rss) == 200, "taskstats.hiwater_rss");
_Static_assert(offsetof(struct taskstats, read_bytes) == 248, "taskstats.read_bytes");
_Static_assert(offsetof(struct taskstats, write_bytes) == 256, "taskstats.write_bytes");
_Static_assert(offsetof(struct taskstats, nvcsw) == 272, "taskstats.nvcsw");
_Static_assert(offsetof(struct taskstats, nivcsw) == 280, "taskstats.nivcsw");
_Static_assert(AGROUP == 0x20, "AGROUP");
/* The kernel's event: 16-byte head, then the union we copy verbatim into data[]. */
_Static_assert(sizeof(struct proc_event) == 40, "proc_event size");
_Static_assert(offsetof(struct proc_event, cpu) == 4, "proc_event.cpu");
_Static_assert(offsetof(struct proc_event, timestamp_ns) == 8, "proc_event.timestamp_ns");
_Static_assert(offsetof(struct proc_event, event_data) == 16, "proc_event.event_data");
_Static_assert(sizeof(((struct proc_event *)0)->event_data) == PC_EVENT_DATA_SIZE,
               "event_data fills data[6]");
_Static_assert(sizeof(((struct pc_record *)0)->data) == PC_EVENT_DATA_SIZE, "data[6]");
_Static_assert(offsetof(struct proc_event, event_data.exit.exit_code) == 24, "exit_code");
_Static_assert(sizeof(struct cn_msg) == 20, "cn_msg size");
_Static_assert(sizeof(struct pc_proc_input) == 8, "proc_input is the 8-byte form");
_Static_assert(PC_EVENT_FORK == PROC_EVENT_FORK && PC_EVENT_EXEC == PROC_EVENT_EXEC &&
                   PC_EVENT_UID == PROC_EVENT_UID && PC_EVENT_GID == PROC_EVENT_GID &&
                   PC_EVENT_SID == PROC_EVENT_SID && PC_EVENT_PTRACE == PROC_EVENT_PTRACE &&
                   PC_EVENT_COMM == PROC_EVENT_COMM &&
                   PC_EVENT_COREDUMP == PROC_EVENT_COREDUMP &&
                   PC_EVENT_EXIT == PROC_EVENT_EXIT,
               "PC_EVENT_* are the kernel's values");
_Static_assert((PC_EVENT_LOST & PC_KERNEL_EVENTS) == 0, "LOST is not a kernel event");

/* Usage of one exited task, read from taskstats and waiting for its connector exit. */
struct pc_usage_slot {
  uint64_t at_ns;     /* when it was read */
  uint32_t pid;       /* the task (thread) id; 0 for an empty slot */
  uint32_t exit_code; /* as the connector's exit has it: both are the task's exit_code */
  uint32_t flags;     /* PC_F_USAGE, | PC_F_USAGE_LAST */
  struct pc_usage u;
};

/* One connector message, copied out of the datagram: the event sits 4-aligned there. */
struct pc_msg {
  uint32_t seq;
  uint32_t ack;
  struct proc_event ev;
};

struct pc_cpu {
  uint32_t seq;
  uint32_t seen;
};

/* Every counter has one writer at a time (pc_open, then the reader thread; ring_high is
 * only written under the ring lock). Readers are other threads: hence the atomics. */
struct pc_counters {
  _Atomic uint64_t events, kernel_lost, enobufs, ring_lost, ring_high, exec_gone, filtered,
      realtime, exec_reused, exec_stuck, usage, usage_error, usage_lost, usage_missing,
      exec_bpf, exec_bpf_error, exec_bpf_missed, steps, slow_steps;
};

struct pc_handle {
  int fd;       /* the netlink socket */
  int efd;      /* eventfd: pc_stop() wakes the reader's poll() */
  int xfd;      /* a second connector socket filtered to exec events only (6.6+), or -1:
                 * it wakes the reader at once for an exec while other events gather */
  bool urgent_listening; /* xfd's LISTEN was sent: close sends its IGNORE */
  /* The exec BPF program (pc_exec_bpf()): offered by the caller, adopted by the reader at
   * its next round. From then on an exec's snapshot comes from the program, taken when the
   * reader gets to it, and xfd is closed: no exec needs the reader at once. */
  _Atomic(struct pc_bpf *) bpf_offer;
  struct pc_bpf *bpf; /* reader-only once adopted */
  int bell_listen; /* abstract Unix listener the consumer connects to, until pc_bell_accept */
  int bell;        /* the doorbell: one byte tells a waiting consumer records are there */
  int wait_efd;    /* an eventfd: records are there, for a consumer blocked in pc_wait() */
  int loop_epfd;   /* the consumer's event loop's epoll set (not ours); PC_LOOP_* if none */
  char bell_name[64]; /* its abstract name, without the leading NUL */
  int proc_dir; /* /proc, or AT_FDCWD with absolute paths if it could not be opened;
                 * pc_free() closes only fds >= 0, so AT_FDCWD is never closed */
  const char *proc_prefix;
  bool proc_elsewhere; /* PROCMONITOR_PROC_ROOT: a stand-in /proc, which BPF would bypass */
  uint32_t portid;
  uint32_t nonce; /* seq/ack of our next request */
  uint32_t mask;  /* what the caller asked for, applied here too (see pc_wanted) */
  bool filter_ok; /* the kernel took the 8-byte form */
  bool filtered;  /* a kernel filter is installed: sequence gaps are not loss */
  bool no_realtime;
  uint64_t ns_per_tick; /* of /proc/PID/stat's clock ticks */
  uint32_t reads;       /* PC_READ_*: the exec snapshot's extra reads */
  char env_names[PC_ENV_NAMES_MAX]; /* with PC_READ_ENV, checked by pc_env_names_ok() */

  /* Handshake state. */
  uint32_t hs_ack;
  bool hs_done;
  uint32_t hs_err;

  /* Reader-only state. */
  struct mmsghdr *msgs;
  struct iovec *iov;
  struct sockaddr_nl *addrs;
  uint8_t *rbuf;
  struct pc_record *rec; /* the record being built */
  char *status;
  struct pc_cpu *cpus;
  uint32_t ncpu;
  bool enobufs_pending;   /* ENOBUFS seen, the loss not yet settled */
  uint32_t urgent_what;   /* what xfd passes: PROC_EVENT_EXEC, or with BPF PROC_EVENT_EXIT */
  uint64_t execs_main;    /* urgent_what events read from fd */
  uint64_t execs_urgent;  /* datagrams read from xfd */
  uint64_t lost_emitted;  /* sum of every kernel LOST count emitted (stats.kernel_lost) */
  uint64_t lost_at_enobufs;
  uint64_t gap_total;     /* sum of sequence gaps seen (no filter only) */
  uint64_t drops_total;   /* sk_drops since pc_open */
  uint32_t drops_last;
  bool drops_ok;

  /* The burst being gathered for the next doorbell (see PC_CALM_GAP_NS); reader-only. */
  bool burst_calm;     /* it began after a calm spell and is still small */
  uint32_t burst_events;
  uint32_t burst_open; /* children forked in it that have not exited, in burst_pids */
  int32_t burst_pids[PC_OPEN_MAX];
  uint64_t last_bell_ns; /* when the last burst was announced */
  uint32_t step_events;  /* events read since the last bell: the step being gathered */
  uint32_t slow_run;     /* sparse steps in a row (PC_SLOW_RUN) */

  /* Exit resource usage (taskstats); reader-only once pc_open() has returned. */
  int tsfd;          /* NETLINK_GENERIC, registered for every possible CPU's exits, or -1 */
  bool usage_on;     /* exits are joined with usage (a test handle has no socket) */
  uint16_t ts_family;
  uint32_t ts_seq;
  char ts_cpus[PC_TS_CPUS_MAX]; /* the CPU list registered, to deregister at close */
  uint8_t *ts_buf;
  struct mmsghdr *ts_msgs;
  struct iovec *ts_iov;
  struct sockaddr_nl *ts_addrs;
  struct pc_usage_slot *ts_tab; /* a FIFO: oldest at ts_tail, ts_count slots (some empty) */
  uint32_t ts_tail, ts_count;
  uint32_t ts_want; /* the pid a drain reads for */
  bool ts_found;
  bool ts_enobufs_pending;
  bool ts_drops_ok;
  uint32_t ts_drops_last;
#ifdef PC_FUZZING
  pc_ts_source_fn ts_fake; /* pc_test_ts_source(): stands in for the socket */
  void *ts_fake_ctx;
  int ts_fake_err; /* an error the source gave after datagrams: the next read returns it */
#endif

  /* The ring; lock guards everything below and the pending-loss counters. */
  pthread_mutex_t lock;
  pthread_cond_t cond; /* records arrived, the reader started or ended */
  uint8_t *ring;
  size_t cap, head, tail, used;
  uint64_t pend_kernel, pend_buffer, pend_usage; /* losses not yet in the ring as LOST records */
  uint32_t pend_kernel_cpu;
  bool started, reader_done;
  bool stopping; /* pc_stop() was called: waiters return what is there, not wait */
  bool armed;    /* the consumer found the ring empty and waits for the doorbell */
  bool sync_armed; /* the consumer waits in pc_wait(): wait_efd, not the doorbell */
  int error;

  /* A stuck /proc read (KERNEL.md): a watchdog timer hands the socket to a new reader. */
  timer_t watchdog;
  bool watchdog_ok;
  _Atomic uint32_t rstate; /* PC_R_* | generation << 2 */
  int cur_i, cur_n;        /* the datagram being dispatched, of how many read */
  struct pc_msg cur_msg;   /* the exec whose /proc is being read */
  _Atomic uint64_t in_proc_since; /* when those reads began (CLOCK_MONOTONIC ns) */
  bool resume;             /* a new reader starts with cur_msg, then datagram cur_i + 1 */
  _Atomic int left_behind; /* readers replaced while stuck, not yet ended */

  pthread_mutex_t batch_lock; /* one pc_take() at a time: it copies outside lock */
  pthread_mutex_t stop_lock;
  bool joined;
  atomic_int stop;
  pthread_t thread;

  struct pc_counters st;
};

static void pc_add(_Atomic uint64_t *c, uint64_t v) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                        memory_order_relaxed);
}

static void pc_set(_Atomic uint64_t *c, uint64_t v) {
  atomic_store_explicit(c, v, memory_order_relaxed);
}

static uint64_t pc_get(_Atomic uint64_t *c) {
  return atomic_load_explicit(c, memory_order_relaxed);
}

PC_EXPORT uint64_t pc_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

PC_EXPORT int pc_ignore_signal(int32_t signo) {
  struct sigaction sa = {.sa_handler = SIG_IGN};

  sigemptyset(&sa.sa_mask);
  return sigaction(signo, &sa, NULL) == 0 ? 0 : -errno;
}

PC_EXPORT uint64_t pc_realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

PC_EXPORT int pc_release_pages(uint64_t start, uint64_t len) {
  uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);

  if (start == 0 || len == 0 || start % page != 0 || start + len < start) return -EINVAL;
  void *addr = (void *)(uintptr_t)start;
  /* EINVAL: a kernel without MADV_PAGEOUT; DONTNEED still unmaps the pages. */
  if (madvise(addr, (size_t)len, MADV_PAGEOUT) != 0 && errno != EINVAL) return -errno;
  return madvise(addr, (size_t)len, MADV_DONTNEED) == 0 ? 0 : -errno;
}

/*
 * Tells the consumer that records (or the end) are there; the caller holds h->lock. A
 * consumer that found the ring empty armed the doorbell and waits in its event loop for
 * one byte on it, so a storm costs one byte per consumer wakeup, not one per record.
 */
static void pc_wake(struct pc_handle *h) {
  static const uint8_t ding = 1;

  pthread_cond_broadcast(&h->cond);
  if (h->sync_armed) {
    static const uint64_t one = 1;

    h->sync_armed = false;
    while (write(h->wait_efd, &one, sizeof(one)) < 0 && errno == EINTR)
      ;
  }
  if (!h->armed || h->bell < 0)
    return;
  h->armed = false;
  /* Nonblocking: the byte of the previous wakeup is always read before the next arming, so
   * the socket cannot be full; a consumer that went away just misses it. */
  while (send(h->bell, &ding, 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno == EINTR)
    ;
}

/* ---- the ring ----------------------------------------------------------------------- */

/*
 * Appends one record; the caller holds h->lock. A record never straddles the end: the
 * tail room is covered by a pad (what == 0) that the consumer skips.
 */
static bool pc_ring_put(struct pc_handle *h, const void *rec, uint32_t size) {
  size_t head, room, need;

  if (h->used == 0)
    h->head = h->tail = 0; /* keep an idle ring contiguous from 0: fewer pads */
  head = h->head;
  room = h->cap - head;
  need = size <= room ? size : room + size;
  if (need > h->cap - h->used)
    return false;
  if (size > room) {
    struct pc_record *pad = (struct pc_record *)(void *)(h->ring + head);
    pad->size = (uint32_t)room;
    pad->what = 0;
    head = 0;
  }
  memcpy(h->ring + head, rec, size);
  head += size;
  h->head = head == h->cap ? 0 : head;
  h->used += need;
  if (h->used > pc_get(&h->st.ring_high))
    pc_set(&h->st.ring_high, h->used);
  return true;
}

static void pc_lost_record(struct pc_record *r, uint32_t where, uint64_t count, uint32_t cpu) {
  memset(r, 0, PC_RECORD_HEAD_SIZE);
  r->size = PC_RECORD_HEAD_SIZE;
  r->what = PC_EVENT_LOST;
  r->cpu = cpu;
  r->timestamp_ns = pc_now_ns();
  r->data[0] = where;
  r->data[1] = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
}

/* Puts earlier losses in the ring first so they stay in order; caller holds h->lock. */
static bool pc_flush_pending(struct pc_handle *h) {
  struct pc_record r;

  if (h->pend_kernel) {
    pc_lost_record(&r, PC_LOST_KERNEL, h->pend_kernel, h->pend_kernel_cpu);
    if (!pc_ring_put(h, &r, PC_RECORD_HEAD_SIZE))
      return false;
    h->pend_kernel = 0;
  }
  if (h->pend_buffer) {
    pc_lost_record(&r, PC_LOST_BUFFER, h->pend_buffer, PC_NO_CPU);
    if (!pc_ring_put(h, &r, PC_RECORD_HEAD_SIZE))
      return false;
    h->pend_buffer = 0;
  }
  if (h->pend_usage) {
    pc_lost_record(&r, PC_LOST_USAGE, h->pend_usage, PC_NO_CPU);
    if (!pc_ring_put(h, &r, PC_RECORD_HEAD_SIZE))
      return false;
    h->pend_usage = 0;
  }
  return true;
}

static void pc_deliver(struct pc_handle *h, const struct pc_record *rec) {
  pthread_mutex_lock(&h->lock);
  if (pc_flush_pending(h) && pc_ring_put(h, rec, rec->size)) {
    pthread_cond_broadcast(&h->cond);
  } else {
    h->pend_buffer++;
    pc_add(&h->st.ring_lost, 1);
  }
  pthread_mutex_unlock(&h->lock);
}

/* Kernel loss is counted at once; its record waits in pend_kernel if the ring is full. */
static void pc_emit_kernel_lost(struct pc_handle *h, uint64_t count, uint32_t cpu) {
  struct pc_record r;

  h->lost_emitted += count;
  pc_add(&h->st.kernel_lost, count);
  pc_lost_record(&r, PC_LOST_KERNEL, count, cpu);
  pthread_mutex_lock(&h->lock);
  if (pc_flush_pending(h) && pc_ring_put(h, &r, PC_RECORD_HEAD_SIZE)) {
    pthread_cond_broadcast(&h->cond);
  } else {
    h->pend_kernel_cpu = h->pend_kernel && h->pend_kernel_cpu != cpu ? PC_NO_CPU : cpu;
    h->pend_kernel += count;
  }
  pthread_mutex_unlock(&h->lock);
}

/* ---- netlink ------------------------------------------------------------------------ */

static int pc_send_on(int fd, uint32_t portid, const void *payload, uint16_t len,
                      uint32_t seq, uint32_t ack) {
  union {
    struct nlmsghdr nh;
    uint8_t bytes[NLMSG_SPACE(sizeof(struct cn_msg) + sizeof(struct pc_proc_input))];
  } u;
  struct cn_msg *cn;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  ssize_t n;

  if (len > sizeof(struct pc_proc_input))
    return -EINVAL;
  memset(&u, 0, sizeof(u));
  u.nh.nlmsg_len = (uint32_t)NLMSG_LENGTH(sizeof(struct cn_msg) + len);
  u.nh.nlmsg_type = NLMSG_DONE;
  u.nh.nlmsg_seq = seq;
  u.nh.nlmsg_pid = portid;
  cn = (struct cn_msg *)NLMSG_DATA(&u.nh);
  cn->id.idx = CN_IDX_PROC;
  cn->id.val = CN_VAL_PROC;
  cn->seq = seq;
  cn->ack = ack;
  cn->len = len;
  memcpy(cn->data, payload, len);
  do
    n = sendto(fd, &u, u.nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel));
  while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : 0;
}

static int pc_send(struct pc_handle *h, const void *payload, uint16_t len, uint32_t seq,
                   uint32_t ack) {
  return pc_send_on(h->fd, h->portid, payload, len, seq, ack);
}

/* Up to PC_RECV_SLOTS datagrams without blocking: count, or -errno. */
static int pc_recv(struct pc_handle *h) {
  int n;

  for (unsigned i = 0; i < PC_RECV_SLOTS; i++)
    h->msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_nl);
  n = recvmmsg(h->fd, h->msgs, PC_RECV_SLOTS, MSG_DONTWAIT, NULL);
  return n < 0 ? -errno : n;
}

static void pc_note_overrun(struct pc_handle *h) {
  if (!h->enobufs_pending)
    h->lost_at_enobufs = h->lost_emitted;
  h->enobufs_pending = true;
}

/* Handles one message; true stops the datagram walk. */
typedef bool (*pc_msg_fn)(struct pc_handle *h, const struct pc_msg *m);

static bool pc_parse(struct pc_handle *h, const uint8_t *buf, size_t len, pc_msg_fn fn) {
  size_t off = 0;

  while (len - off >= sizeof(struct nlmsghdr)) {
    const struct nlmsghdr *nh = (const struct nlmsghdr *)(const void *)(buf + off);
    const struct cn_msg *cn;
    size_t nlen = nh->nlmsg_len, plen;
    struct pc_msg m;

    if (nlen < sizeof(*nh) || nlen > len - off)
      break;
    plen = nlen - NLMSG_HDRLEN;
    if (nh->nlmsg_type == NLMSG_OVERRUN) {
      pc_note_overrun(h); /* never sent by netlink today; treat like ENOBUFS */
    } else if (nh->nlmsg_type != NLMSG_NOOP && nh->nlmsg_type != NLMSG_ERROR &&
               plen >= sizeof(struct cn_msg)) {
      cn = (const struct cn_msg *)NLMSG_DATA(nh);
      if (cn->id.idx == CN_IDX_PROC && cn->id.val == CN_VAL_PROC &&
          cn->len <= plen - sizeof(*cn) &&
          cn->len >= offsetof(struct proc_event, event_data)) {
        memset(&m, 0, sizeof(m));
        m.seq = cn->seq;
        m.ack = cn->ack;
        memcpy(&m.ev, cn->data, cn->len < sizeof(m.ev) ? cn->len : sizeof(m.ev));
        if (fn(h, &m))
          return true;
      }
    }
    if (NLMSG_ALIGN(nlen) >= len - off)
      break;
    off += NLMSG_ALIGN(nlen);
  }
  return false;
}

static void pc_dispatch_from(struct pc_handle *h, int first, int n, pc_msg_fn fn) {
  h->cur_n = n;
  for (int i = first; i < n; i++) {
    const struct msghdr *mh = &h->msgs[i].msg_hdr;

    h->cur_i = i;
    /* Only the kernel may speak: anyone can send to our port id. */
    if (mh->msg_namelen < sizeof(struct sockaddr_nl) || h->addrs[i].nl_pid != 0)
      continue;
    if (mh->msg_flags & MSG_TRUNC)
      continue;
    if (pc_parse(h, h->rbuf + (size_t)i * PC_RECV_SLOT, h->msgs[i].msg_len, fn))
      return;
  }
}

static void pc_dispatch(struct pc_handle *h, int n, pc_msg_fn fn) {
  pc_dispatch_from(h, 0, n, fn);
}

/* ---- subscription handshake --------------------------------------------------------- */

static bool pc_on_ack(struct pc_handle *h, const struct pc_msg *m) {
  if (m->ev.what != PROC_EVENT_NONE || m->ack != h->hs_ack)
    return false; /* an event, or the ack of someone else's subscription */
  h->hs_err = m->ev.event_data.ack.err;
  h->hs_done = true;
  return true;
}

/* 1: acked (h->hs_err says how), 0: nothing within timeout_ms, < 0: -errno. */
static int pc_await_ack(struct pc_handle *h, int timeout_ms) {
  const uint64_t deadline = pc_now_ns() + (uint64_t)timeout_ms * 1000000u;

  for (;;) {
    int n = pc_recv(h);
    uint64_t now;

    if (n > 0) {
      pc_dispatch(h, n, pc_on_ack);
      if (h->hs_done)
        return 1;
    } else if (n != -EAGAIN && n != -EINTR && n != -ENOBUFS) {
      return n;
    }
    now = pc_now_ns();
    if (now >= deadline)
      return 0; /* checked every round: a busy system may never let recv say EAGAIN */
    if (n == -EAGAIN) {
      struct pollfd p = {.fd = h->fd, .events = POLLIN};
      int ms = (int)((deadline - now + 999999u) / 1000000u);

      if (poll(&p, 1, ms) < 0 && errno != EINTR)
        return -errno;
    }
  }
}

static int pc_listen(struct pc_handle *h, const void *payload, uint16_t len, int timeout_ms) {
  uint32_t id = h->nonce;
  int rc;

  h->nonce += 2; /* a late ack of this request (id + 1) can never match the next one */
  h->hs_ack = id + 1;
  h->hs_done = false;
  rc = pc_send(h, payload, len, id, id);
  if (rc < 0)
    return rc;
  return pc_await_ack(h, timeout_ms);
}

static int pc_subscribe(struct pc_handle *h, int ack_ms) {
  struct pc_proc_input in = {.mcast_op = PROC_CN_MCAST_LISTEN, .event_type = PC_KERNEL_EVENTS};
  uint32_t op = PROC_CN_MCAST_LISTEN;
  int rc;

  /* Ask for everything first: a filter would swallow the ack we need to see. */
  rc = pc_listen(h, &in, sizeof(in), ack_ms < PC_PROBE_ACK_MS ? ack_ms : PC_PROBE_ACK_MS);
  if (rc < 0)
    return rc;
  if (rc == 1) {
    h->filter_ok = true;
  } else {
    /* Before 6.6 an 8-byte payload is dropped without a word: retry with the old form. */
    rc = pc_listen(h, &op, sizeof(op), ack_ms);
    if (rc < 0)
      return rc;
    if (rc == 0)
      return -ETIMEDOUT; /* ignored: not the initial user or pid namespace */
  }
  if (h->hs_err != 0)
    return -(int)h->hs_err;
  if (h->filter_ok && h->mask != PC_KERNEL_EVENTS) {
    /* No ack comes back for this one: the filter drops acks. */
    in.event_type = h->mask;
    rc = pc_send(h, &in, sizeof(in), h->nonce, h->nonce);
    h->nonce += 2;
    if (rc < 0)
      return rc;
    h->filtered = true;
    pc_set(&h->st.filtered, 1);
  }
  return 0;
}

/*
 * The exec socket: a second subscription whose kernel filter (6.6+) passes execs only.
 * It is bound before the main socket: the kernel hands a message to the most recently
 * bound member of the group first, so the main socket has each exec by the time this one
 * wakes the reader. Without it (older kernel, execs not wanted, any failure) the reader
 * wakes for every event as before; nothing else depends on it.
 */
static void pc_bind_urgent(struct pc_handle *h) {
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC};

  h->xfd = socket(PF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_CONNECTOR);
  if (h->xfd >= 0 && bind(h->xfd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    close(h->xfd);
    h->xfd = -1;
  }
}

static void pc_drain_urgent(struct pc_handle *h);

/* Installs the exec socket's filter once the main subscription stands, or drops it. */
static void pc_subscribe_urgent(struct pc_handle *h) {
  struct pc_proc_input in = {.mcast_op = PROC_CN_MCAST_LISTEN, .event_type = PC_EVENT_EXEC};

  if (h->xfd < 0)
    return;
  if (!h->filter_ok || !(h->mask & PC_EVENT_EXEC) ||
      pc_send_on(h->xfd, 0, &in, sizeof(in), h->nonce, h->nonce) < 0) {
    close(h->xfd);
    h->xfd = -1;
    return;
  }
  h->nonce += 2;
  h->urgent_listening = true;
  h->urgent_what = PROC_EVENT_EXEC;
  /* What it got before its filter was in force announces nothing. */
  pc_drain_urgent(h);
  h->execs_urgent = h->execs_main = 0;
}

/*
 * Which reader this thread is. A reader left behind in a stuck /proc read must find out,
 * when the read returns, that the socket is no longer its own: the handle's generation has
 * moved on. Per thread by nature, so thread-local; nothing else here is.
 */
static _Thread_local uint32_t pc_my_gen;
static _Thread_local struct pc_record *pc_my_rec;
static _Thread_local char *pc_my_status;

static bool pc_mine(struct pc_handle *h) {
  return atomic_load_explicit(&h->rstate, memory_order_acquire) >> 2 == pc_my_gen;
}

/* The reader's own record and stat buffers: a reader left behind keeps writing to its own. */
static struct pc_record *pc_rec(struct pc_handle *h) {
  return pc_my_rec ? pc_my_rec : h->rec;
}

static char *pc_stat_buf(struct pc_handle *h) {
  return pc_my_status ? pc_my_status : h->status;
}

/* ---- exec snapshot ------------------------------------------------------------------ */

static ssize_t pc_read_upto(int fd, char *buf, size_t max) {
  size_t got = 0;

  while (got < max) {
    ssize_t n = read(fd, buf + got, max - got);

    if (n < 0) {
      if (errno == EINTR)
        continue;
      return got ? (ssize_t)got : -1;
    }
    if (n == 0)
      break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

/*
 * Parses /proc/PID/stat: "pid (comm) state ppid ... starttime ...". comm is raw and may
 * hold spaces and ')', so the fields start after the last ')'. Returns true when ppid
 * and starttime (field 22, clock ticks since boot) were found.
 */
PC_INTERNAL bool pc_parse_stat(const char *s, size_t len, char comm[16], int32_t *ppid,
                               uint64_t *start_ticks) {
  const char *end = s + len, *open = memchr(s, '(', len), *close = NULL, *p;
  uint64_t v = 0;
  unsigned field = 3; /* the state, just after ") " */

  for (p = end; p > s; p--) {
    if (p[-1] == ')') {
      close = p - 1;
      break;
    }
  }
  if (!open || !close || close < open)
    return false;
  memset(comm, 0, 16);
  memcpy(comm, open + 1, (size_t)(close - open - 1) < 15 ? (size_t)(close - open - 1) : 15);
  for (p = close + 1; p < end && field <= 22; field++) {
    const char *digits;

    while (p < end && *p == ' ')
      p++;
    digits = p;
    v = 0;
    while (p < end && *p >= '0' && *p <= '9' && v < UINT64_MAX / 10)
      v = v * 10 + (uint64_t)(*p++ - '0');
    if (field == 4) {
      if (p == digits || v > INT32_MAX)
        return false;
      *ppid = (int32_t)v;
    } else if (field == 22) {
      *start_ticks = v;
      return p > digits;
    }
    while (p < end && *p != ' ')
      p++;
  }
  return false;
}

/*
 * Whether a process that started start_ticks after boot started after the event stamped
 * event_ns (CLOCK_MONOTONIC): then its pid was reused and it is not the one the event
 * named. The start time counts from boot (suspend included), the stamp does not: the
 * stamp is moved onto the boot clock first.
 */
static bool pc_started_after(const struct pc_handle *h, uint64_t start_ticks,
                             uint64_t event_ns) {
  struct timespec boot, mono;
  uint64_t offset;

  clock_gettime(CLOCK_BOOTTIME, &boot);
  clock_gettime(CLOCK_MONOTONIC, &mono);
  offset = ((uint64_t)boot.tv_sec - (uint64_t)mono.tv_sec) * 1000000000u +
           (uint64_t)boot.tv_nsec - (uint64_t)mono.tv_nsec;
  return start_ticks * h->ns_per_tick > event_ns + offset;
}

/*
 * Opens /proc/PID once: everything read through this fd is one process, even if the pid
 * is reused meanwhile (its files then fail with ESRCH rather than show the newcomer).
 */
static int pc_open_pid(const struct pc_handle *h, int32_t pid) {
  char path[32];

  snprintf(path, sizeof(path), "%s%d", h->proc_prefix, (int)pid);
  return openat(h->proc_dir, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/*
 * Confirms through dfd that the process is the one that exec'd at event_ns and fills in
 * its parent and name. False when it is gone or is a newer process with the same pid.
 */
static bool pc_confirm(struct pc_handle *h, int dfd, int32_t pid, uint64_t event_ns) {
  struct pc_record *r = pc_rec(h);
  char *buf = pc_stat_buf(h);
  uint64_t start = 0;
  int32_t ppid = -1;
  ssize_t n;
  int fd = openat(dfd, "stat", O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    return false;
  n = pc_read_upto(fd, buf, PC_STATUS_READ);
  close(fd);
  if (n <= 0 || !pc_parse_stat(buf, (size_t)n, r->comm, &ppid, &start))
    return false;
  if (pc_started_after(h, start, event_ns)) {
    if (pc_mine(h))
      pc_add(&h->st.exec_reused, 1);
    memset(r->comm, 0, sizeof(r->comm));
    return false;
  }
  /*
   * A process already reaped when its stat is read through an fd opened before shows ppid
   * 0 (the kernel fills it in only while the pid is alive). Only init and kthreadd have a
   * parent of 0: for anyone else it is unknown, and the caller keeps the fork's.
   */
  r->ppid = ppid == 0 && pid > 2 ? -1 : ppid;
  return true;
}

/* Reads the cmdline through dfd into the record's tail; sets the flags it learns. */
static size_t pc_read_cmdline(int dfd, char *tail, uint32_t *flags) {
  int fd = openat(dfd, "cmdline", O_RDONLY | O_CLOEXEC);
  ssize_t n;

  if (fd < 0) {
    *flags |= PC_F_GONE;
    return 0;
  }
  n = pc_read_upto(fd, tail, PC_CMDLINE_MAX + 1);
  close(fd);
  if (n <= 0) { /* after exec, only an exited task has no cmdline */
    *flags |= PC_F_GONE;
    return 0;
  }
  if (n > (ssize_t)PC_CMDLINE_MAX) {
    *flags |= PC_F_CMDLINE_TRUNCATED;
    n = PC_CMDLINE_MAX;
  }
  return (size_t)n;
}

/* ---- where it runs, where it belongs, what it was told (PC_READ_*) ------------------ */

/* Whether names is a list pc_env_pick can take: see pc_options.env_names. */
static bool pc_env_names_ok(const char *names) {
  size_t at = 0;
  unsigned count = 0;

  while (at < PC_ENV_NAMES_MAX && names[at] != 0) {
    const char *end = memchr(names + at, 0, PC_ENV_NAMES_MAX - at);

    if (!end || memchr(names + at, '=', (size_t)(end - (names + at))) || ++count > PC_ENV_NAMES_COUNT)
      return false;
    at = (size_t)(end - names) + 1;
  }
  return true;
}

/*
 * Picks NAME=value entries out of an environment (NUL-separated "NAME=value" strings) fed
 * in pieces as read() returns them, so environ is never held whole: only the asked-for
 * names, each at most once (the first, as getenv() finds), values cut at PC_ENV_VALUE_MAX
 * and everything within PC_ENV_MAX bytes.
 */
enum { PC_ENV_NAME, PC_ENV_VALUE, PC_ENV_SKIP };

struct pc_env_pick {
  const char *names;  /* pc_env_names_ok() */
  char *out;          /* PC_ENV_MAX bytes */
  size_t len;         /* of out */
  uint32_t want, found; /* bit i: the i-th name */
  bool truncated;
  int state;
  size_t name_len, value_len;
  char name[PC_ENV_NAMES_MAX]; /* the current entry's name so far */
};

static void pc_env_begin(struct pc_env_pick *p, const char *names, char *out) {
  size_t at = 0;
  unsigned i = 0;

  memset(p, 0, sizeof(*p));
  p->names = names;
  p->out = out;
  p->state = PC_ENV_NAME;
  while (at < PC_ENV_NAMES_MAX && names[at] != 0 && i < PC_ENV_NAMES_COUNT) {
    p->want |= 1u << i++;
    at += strnlen(names + at, PC_ENV_NAMES_MAX - at) + 1;
  }
}

/* The index of the current name among p->names, or -1. */
static int pc_env_lookup(const struct pc_env_pick *p) {
  size_t at = 0;

  for (int i = 0; i < (int)PC_ENV_NAMES_COUNT && (p->want >> i & 1u); i++) {
    size_t n = strnlen(p->names + at, PC_ENV_NAMES_MAX - at);

    if (n == p->name_len && memcmp(p->names + at, p->name, n) == 0)
      return i;
    at += n + 1;
  }
  return -1;
}

/* At the '=' of an entry: starts copying it when it is asked for and fits. */
static void pc_env_on_equals(struct pc_env_pick *p) {
  int i = pc_env_lookup(p);

  p->state = PC_ENV_SKIP;
  if (i < 0 || (p->found >> i & 1u))
    return;
  p->found |= 1u << i;
  /* Room for the name, '=' and the final NUL; a value may then be cut short. */
  if (p->name_len + 2 > PC_ENV_MAX - p->len) {
    p->truncated = true;
    return;
  }
  memcpy(p->out + p->len, p->name, p->name_len);
  p->len += p->name_len;
  p->out[p->len++] = '=';
  p->value_len = 0;
  p->state = PC_ENV_VALUE;
}

/* Feeds n more bytes; true once every name is in and nothing is left to copy. */
static bool pc_env_feed(struct pc_env_pick *p, const char *buf, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char c = buf[i];

    if (p->state == PC_ENV_NAME) {
      if (c == 0)
        p->name_len = 0; /* an entry without '=': nothing to pick */
      else if (c == '=')
        pc_env_on_equals(p);
      else if (p->name_len < sizeof(p->name))
        p->name[p->name_len++] = c;
      else
        p->state = PC_ENV_SKIP; /* longer than any name asked for */
    } else if (p->state == PC_ENV_VALUE) {
      if (c == 0) {
        p->out[p->len++] = 0;
        p->state = PC_ENV_NAME;
        p->name_len = 0;
        if (p->found == p->want)
          return true;
      } else if (p->value_len < PC_ENV_VALUE_MAX && p->len + 1 < PC_ENV_MAX) {
        p->out[p->len++] = c;
        p->value_len++;
      } else {
        p->truncated = true;
      }
    } else if (c == 0) {
      p->state = PC_ENV_NAME;
      p->name_len = 0;
    }
  }
  return p->found == p->want && p->state != PC_ENV_VALUE;
}

/* Ends the picking: a value the environment stopped in is closed (and cut when the
 * reading stopped early, `cut`). Returns the bytes picked. */
static size_t pc_env_end(struct pc_env_pick *p, bool cut) {
  if (p->state == PC_ENV_VALUE) {
    p->out[p->len++] = 0;
    p->truncated |= cut;
  }
  p->state = PC_ENV_SKIP;
  return p->len;
}

/*
 * Chooses the one path of /proc/PID/cgroup (s, n bytes) a record carries: the v2 line's
 * ("0::PATH"), unless it is missing, or is "/" while systemd's v1 hierarchy
 * ("N:name=systemd:PATH") names a deeper one (a hybrid system that leaves v2 alone).
 * Only whole lines count. Sets *off and *len to the path within s; false when neither.
 */
PC_INTERNAL bool pc_pick_cgroup(const char *s, size_t n, size_t *off, size_t *len) {
  size_t at = 0, v2_off = 0, v2_len = 0, sd_off = 0, sd_len = 0;
  bool v2 = false, sd = false;

  while (at < n) {
    const char *line = s + at, *nl = memchr(line, '\n', n - at), *c1, *c2;
    size_t line_len;

    if (!nl)
      break; /* the kernel ends every line: a cut one is not trusted */
    line_len = (size_t)(nl - line);
    at += line_len + 1;
    c1 = memchr(line, ':', line_len);
    c2 = c1 ? memchr(c1 + 1, ':', (size_t)(nl - c1 - 1)) : NULL;
    if (!c2)
      continue;
    if (!v2 && c1 - line == 1 && line[0] == '0' && c2 == c1 + 1) {
      v2 = true;
      v2_off = (size_t)(c2 + 1 - s);
      v2_len = (size_t)(nl - c2 - 1);
    } else if (!sd && c2 - c1 - 1 == 12 && memcmp(c1 + 1, "name=systemd", 12) == 0) {
      sd = true;
      sd_off = (size_t)(c2 + 1 - s);
      sd_len = (size_t)(nl - c2 - 1);
    }
  }
  if (v2 && !(sd && v2_len == 1 && s[v2_off] == '/' && sd_len > 1)) {
    *off = v2_off;
    *len = v2_len;
    return true;
  }
  if (sd) {
    *off = sd_off;
    *len = sd_len;
    return true;
  }
  return false;
}

/* The cgroup path through dfd into out (PC_CGROUP_MAX bytes); 0 when unknown or too long. */
static size_t pc_read_cgroup(struct pc_handle *h, int dfd, char *out) {
  char *buf = pc_stat_buf(h);
  int fd = openat(dfd, "cgroup", O_RDONLY | O_CLOEXEC);
  size_t off, len;
  ssize_t n;

  if (fd < 0)
    return 0;
  n = pc_read_upto(fd, buf, PC_STATUS_READ);
  close(fd);
  if (n <= 0 || !pc_pick_cgroup(buf, (size_t)n, &off, &len) || len == 0 || len > PC_CGROUP_MAX)
    return 0;
  memcpy(out, buf + off, len);
  return len;
}

/* The asked-for variables through dfd into out (PC_ENV_MAX bytes); sets the flag it learns. */
static size_t pc_read_env(struct pc_handle *h, int dfd, char *out, uint32_t *flags) {
  struct pc_env_pick pick;
  char *buf = pc_stat_buf(h);
  size_t total = 0, len;
  bool done = false;
  ssize_t n = 0;
  int fd;

  if (h->env_names[0] == 0)
    return 0;
  fd = openat(dfd, "environ", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  pc_env_begin(&pick, h->env_names, out);
  while (!done && total < PC_ENV_READ_MAX) {
    n = read(fd, buf, PC_STATUS_READ);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    total += (size_t)n;
    done = pc_env_feed(&pick, buf, (size_t)n);
  }
  close(fd);
  len = pc_env_end(&pick, !done && n > 0);
  if (pick.truncated)
    *flags |= PC_F_ENV_TRUNCATED;
  return len;
}

/*
 * The reads PC_READ_* asks for, into the tail after cmdline and exe (at `tail`): cwd, env,
 * cgroup, each length into r. The environment is the target's memory, like the cmdline,
 * so it goes before the cgroup, which even a zombie still has. Returns the bytes added.
 */
static size_t pc_read_extras(struct pc_handle *h, int dfd, char *tail, uint32_t *flags) {
  struct pc_record *r = pc_rec(h);
  size_t at = 0;
  ssize_t n;

  if (h->reads & PC_READ_CWD) {
    n = readlinkat(dfd, "cwd", tail, PC_CWD_MAX + 1);
    if (n > 0 && n <= (ssize_t)PC_CWD_MAX) /* never a cut path */
      at = r->cwd_len = (uint16_t)n;
  }
  if (h->reads & PC_READ_ENV) {
    r->env_len = (uint16_t)pc_read_env(h, dfd, tail + at, flags);
    at += r->env_len;
  }
  if (h->reads & PC_READ_CGROUP) {
    r->cgroup_len = (uint16_t)pc_read_cgroup(h, dfd, tail + at);
    at += r->cgroup_len;
  }
  return at;
}

/* ---- the exec snapshot from the BPF program (exec_bpf.h) --------------------------- */

/*
 * The path whose components `comps` holds leaf first, each NUL-terminated (n bytes), written
 * root first into out as "/usr/bin/true": the same n bytes, each NUL become a leading '/'.
 * 0 when the components are not well-formed (empty, unterminated, or holding a '/').
 */
PC_INTERNAL size_t pc_bpf_path(char *out, const char *comps, size_t n) {
  size_t at = 0, end = n;

  while (at < n) {
    const char *nul = memchr(comps + at, '\0', n - at);
    size_t len = nul ? (size_t)(nul - (comps + at)) : 0;

    if (len == 0 || memchr(comps + at, '/', len))
      return 0;
    end -= len;
    memcpy(out + end, comps + at, len);
    out[--end] = '/';
    at += len + 1;
  }
  return n;
}

/*
 * Fills r's snapshot from an exec's entry (len bytes, as the program wrote it) and returns
 * the record size, or 0 when the entry cannot stand in for /proc (malformed, or its argument
 * area was unreadable). The entry is what the process was at its exec: no pid reuse to rule
 * out, and the euid is the process's own, where /proc would show root for one not dumpable.
 */
PC_INTERNAL uint32_t pc_bpf_fill(struct pc_record *r, const uint8_t *buf, size_t len) {
  struct pc_bpf_exec e;
  char *tail = (char *)r + PC_RECORD_SNAPSHOT_SIZE;
  uint32_t flags = PC_F_SNAPSHOT, size;
  size_t elen = 0;

  if (len < PC_BPF_HEAD)
    return 0;
  memcpy(&e, buf, PC_BPF_HEAD);
  if ((e.flags & PC_BPF_F_NO_ARGS) || e.args_len > PC_CMDLINE_MAX || e.exe_len > PC_EXE_MAX ||
      PC_BPF_HEAD + (size_t)e.exe_len + e.args_len > len)
    return 0;
  memcpy(tail, buf + PC_BPF_HEAD + e.exe_len, e.args_len);
  if (e.flags & PC_BPF_F_TRUNCATED)
    flags |= PC_F_CMDLINE_TRUNCATED;
  if (!(e.flags & PC_BPF_F_NO_EXE))
    elen = pc_bpf_path(tail + e.args_len, (const char *)buf + PC_BPF_HEAD, e.exe_len);
  if (elen == 0)
    flags |= PC_F_NO_EXE;
  r->ruid = e.ruid;
  r->euid = e.euid;
  /* As with stat (pc_confirm): only init and kthreadd have a parent of 0. */
  r->ppid = e.ppid == 0 && e.pid > 2 ? -1 : e.ppid;
  memcpy(r->comm, e.comm, sizeof(r->comm));
  r->comm[sizeof(r->comm) - 1] = '\0';
  r->cwd_len = r->env_len = r->cgroup_len = r->reserved = 0;
  r->cmdline_len = e.args_len;
  r->exe_len = (uint16_t)elen;
  r->flags = flags;
  size = (uint32_t)(PC_RECORD_SNAPSHOT_SIZE + e.args_len + elen);
  memset(tail + e.args_len + elen, 0, ((size + 7u) & ~7u) - size);
  return (size + 7u) & ~7u;
}

/* The snapshot from the program's entry for this exec: its size, or 0 to read /proc. */
static uint32_t pc_snapshot_bpf(struct pc_handle *h, int32_t pid, uint64_t event_ns) {
  uint32_t len = 0, size = 0;
  const struct pc_bpf_exec *e = pc_bpf_take(h->bpf, (uint32_t)pid, event_ns, &len);

  if (e)
    size = pc_bpf_fill(pc_rec(h), (const uint8_t *)e, len);
  if (size == 0)
    pc_add(&h->st.exec_bpf_missed, 1);
  return size;
}

/*
 * Fills the snapshot part of h->rec for an exec of pid at event_ns from /proc, where the BPF
 * program took none, and returns the record size. The process is confirmed first (pid
 * reuse, KERNEL.md), then its cmdline is read before the exe link: a short-lived program is
 * gone within a millisecond, and its cmdline goes with its memory. ruid is left unknown (the process table knows it: exec keeps it);
 * euid is the owner of /proc/PID.
 */
static uint32_t pc_snapshot(struct pc_handle *h, int32_t pid, uint64_t event_ns) {
  struct pc_record *r = pc_rec(h);
  char *tail = (char *)r + PC_RECORD_SNAPSHOT_SIZE;
  uint32_t flags = PC_F_SNAPSHOT, size;
  size_t clen = 0, elen = 0, xlen = 0;
  struct stat st;
  ssize_t n;
  int dfd = -1;

  r->ruid = r->euid = PC_NO_UID;
  r->ppid = -1;
  memset(r->comm, 0, sizeof(r->comm));
  r->cwd_len = r->env_len = r->cgroup_len = r->reserved = 0;

  if (pid > 0)
    dfd = pc_open_pid(h, pid);
  if (dfd < 0 || !pc_confirm(h, dfd, pid, event_ns)) {
    flags |= PC_F_GONE | PC_F_NO_EXE;
    goto done;
  }
  clen = pc_read_cmdline(dfd, tail, &flags);
  if (fstat(dfd, &st) == 0)
    r->euid = (uint32_t)st.st_uid;
  n = readlinkat(dfd, "exe", tail + clen, PC_EXE_MAX + 1);
  if (n > 0 && n <= (ssize_t)PC_EXE_MAX)
    elen = (size_t)n;
  else
    flags |= PC_F_NO_EXE; /* unreadable, or longer than PC_EXE_MAX: never a cut path */
  if (h->reads)
    xlen = pc_read_extras(h, dfd, tail + clen + elen, &flags);

done:
  if (dfd >= 0)
    close(dfd);
  if ((flags & PC_F_GONE) && pc_mine(h))
    pc_add(&h->st.exec_gone, 1);
  size = (uint32_t)(PC_RECORD_SNAPSHOT_SIZE + clen + elen + xlen);
  r->cmdline_len = (uint16_t)clen;
  r->exe_len = (uint16_t)elen;
  r->flags = flags;
  memset(tail + clen + elen + xlen, 0, ((size + 7u) & ~7u) - size);
  return (size + 7u) & ~7u;
}

/* ---- exit resource usage (taskstats) ------------------------------------------------ */

/*
 * Kernel behaviour relied on (kernel/exit.c, kernel/taskstats.c): do_exit() calls
 * taskstats_exit() before exit_mm() (so the memory's high-water mark is still there) and
 * long before proc_exit_connector(), both in the exiting task, both queueing on the
 * listening sockets before returning. So by the time the reader holds a connector exit,
 * the taskstats message of that task is already on the taskstats socket, unless it was
 * dropped (ENOBUFS): the join never waits. Each exit sends TASKSTATS_TYPE_AGGR_PID with
 * the task's own counters; the AGGR_TGID that a thread group's last task adds holds only
 * delay accounting (fill_tgid_exit), so it is skipped and callers sum the threads.
 */

#ifndef PC_FUZZING /* procconn_internal.h has it */
/* Called for each task's usage found in a taskstats datagram. */
typedef void (*pc_usage_fn)(void *ctx, uint32_t pid, uint32_t exit_code, uint32_t flags,
                            const struct pc_usage *u);
#endif

struct pc_attr {
  uint16_t type;
  const uint8_t *data;
  size_t len;
};

/* The next netlink attribute of *p (left bytes), or false when none is whole. */
static bool pc_attr_next(const uint8_t **p, size_t *left, struct pc_attr *a) {
  struct nlattr na;
  size_t step;

  if (*left < NLA_HDRLEN)
    return false;
  memcpy(&na, *p, sizeof(na)); /* attributes in a taskstats message are 4-aligned at best */
  if (na.nla_len < NLA_HDRLEN || na.nla_len > *left)
    return false;
  a->type = na.nla_type & NLA_TYPE_MASK;
  a->data = *p + NLA_HDRLEN;
  a->len = na.nla_len - NLA_HDRLEN;
  step = NLA_ALIGN(na.nla_len);
  if (step >= *left) {
    *left = 0;
  } else {
    *p += step;
    *left -= step;
  }
  return true;
}

static uint64_t pc_u64_at(const uint8_t *s, size_t off) {
  uint64_t v;

  memcpy(&v, s + off, sizeof(v));
  return v;
}

/* The usage in a struct taskstats of len bytes; false when too old or too short for it. */
static bool pc_usage_from(const uint8_t *s, size_t len, uint32_t *exit_code, uint32_t *flags,
                          struct pc_usage *u) {
  uint16_t version;

  if (len < PC_TS_NEED)
    return false;
  memcpy(&version, s + offsetof(struct taskstats, version), sizeof(version));
  if (version < PC_TS_MIN_VERSION)
    return false;
  memcpy(exit_code, s + offsetof(struct taskstats, ac_exitcode), sizeof(*exit_code));
  u->cpu_user_us = pc_u64_at(s, offsetof(struct taskstats, ac_utime));
  u->cpu_sys_us = pc_u64_at(s, offsetof(struct taskstats, ac_stime));
  u->max_rss_kb = pc_u64_at(s, offsetof(struct taskstats, hiwater_rss));
  u->read_bytes = pc_u64_at(s, offsetof(struct taskstats, read_bytes));
  u->write_bytes = pc_u64_at(s, offsetof(struct taskstats, write_bytes));
  u->ctx_voluntary = pc_u64_at(s, offsetof(struct taskstats, nvcsw));
  u->ctx_involuntary = pc_u64_at(s, offsetof(struct taskstats, nivcsw));
  *flags = PC_F_USAGE;
  if (version >= PC_TS_AGROUP_VERSION && (s[offsetof(struct taskstats, ac_flag)] & AGROUP))
    *flags |= PC_F_USAGE_LAST;
  return true;
}

/* The AGGR_PID attributes of one TASKSTATS_CMD_NEW payload: how many gave usage. */
static unsigned pc_parse_aggr(const uint8_t *p, size_t left, pc_usage_fn fn, void *ctx) {
  struct pc_attr a, in;
  unsigned n = 0;

  while (pc_attr_next(&p, &left, &a)) {
    const uint8_t *q = a.data, *stats = NULL;
    size_t qlen = a.len, slen = 0;
    uint32_t pid = 0, code = 0, flags = 0;
    struct pc_usage u;

    if (a.type != TASKSTATS_TYPE_AGGR_PID)
      continue; /* AGGR_TGID at exit: delay accounting only; TYPE_NULL: padding */
    while (pc_attr_next(&q, &qlen, &in)) {
      if (in.type == TASKSTATS_TYPE_PID && in.len >= sizeof(pid)) {
        memcpy(&pid, in.data, sizeof(pid));
      } else if (in.type == TASKSTATS_TYPE_STATS) {
        stats = in.data;
        slen = in.len;
      }
    }
    if (pid != 0 && stats && pc_usage_from(stats, slen, &code, &flags, &u)) {
      fn(ctx, pid, code, flags, &u);
      n++;
    }
  }
  return n;
}

/*
 * Walks one datagram from the taskstats socket and calls fn for each exited task's usage
 * in it (messages of type `family`, command TASKSTATS_CMD_NEW). Pure: no socket, no state.
 * Returns how many there were.
 */
PC_INTERNAL unsigned pc_parse_taskstats(const uint8_t *buf, size_t len, uint16_t family,
                                        pc_usage_fn fn, void *ctx) {
  size_t off = 0;
  unsigned n = 0;

  while (len - off >= sizeof(struct nlmsghdr)) {
    struct nlmsghdr nh;
    struct genlmsghdr g;

    memcpy(&nh, buf + off, sizeof(nh));
    if (nh.nlmsg_len < sizeof(nh) || nh.nlmsg_len > len - off)
      break;
    if (nh.nlmsg_type == family && nh.nlmsg_len >= NLMSG_HDRLEN + GENL_HDRLEN) {
      memcpy(&g, buf + off + NLMSG_HDRLEN, sizeof(g));
      if (g.cmd == TASKSTATS_CMD_NEW)
        n += pc_parse_aggr(buf + off + NLMSG_HDRLEN + GENL_HDRLEN,
                           nh.nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN, fn, ctx);
    }
    if (NLMSG_ALIGN(nh.nlmsg_len) >= len - off)
      break;
    off += NLMSG_ALIGN(nh.nlmsg_len);
  }
  return n;
}

/*
 * Looks in one datagram for the answer to request `seq`: the generic netlink controller's
 * reply (CTRL_ATTR_FAMILY_ID into *family, when family is not NULL) or an NLMSG_ERROR
 * (*err = its positive errno, 0 for an ack). 1 when found, 0 when not. Pure.
 */
PC_INTERNAL int pc_parse_reply(const uint8_t *buf, size_t len, uint32_t seq, uint16_t *family,
                               int *err) {
  size_t off = 0;

  while (len - off >= sizeof(struct nlmsghdr)) {
    struct nlmsghdr nh;
    size_t plen;

    memcpy(&nh, buf + off, sizeof(nh));
    if (nh.nlmsg_len < sizeof(nh) || nh.nlmsg_len > len - off)
      break;
    plen = nh.nlmsg_len - NLMSG_HDRLEN;
    if (nh.nlmsg_seq == seq && nh.nlmsg_type == NLMSG_ERROR &&
        plen >= sizeof(struct nlmsgerr)) {
      struct nlmsgerr e;

      memcpy(&e, buf + off + NLMSG_HDRLEN, sizeof(e));
      *err = e.error < 0 && e.error > -4096 ? -e.error : e.error == 0 ? 0 : EPROTO;
      return 1;
    }
    if (family && nh.nlmsg_seq == seq && nh.nlmsg_type == GENL_ID_CTRL &&
        plen >= GENL_HDRLEN) {
      const uint8_t *p = buf + off + NLMSG_HDRLEN + GENL_HDRLEN;
      size_t left = plen - GENL_HDRLEN;
      struct pc_attr a;

      while (pc_attr_next(&p, &left, &a)) {
        if (a.type == CTRL_ATTR_FAMILY_ID && a.len >= sizeof(*family)) {
          memcpy(family, a.data, sizeof(*family));
          *err = 0;
          return 1;
        }
      }
    }
    if (NLMSG_ALIGN(nh.nlmsg_len) >= len - off)
      break;
    off += NLMSG_ALIGN(nh.nlmsg_len);
  }
  return 0;
}

static struct pc_usage_slot *pc_slot(struct pc_handle *h, uint32_t i) {
  return &h->ts_tab[(h->ts_tail + i) % PC_USAGE_SLOTS];
}

/* Drops empty slots, and usage older than PC_USAGE_STALE_NS, from the FIFO's old end. */
static void pc_usage_trim(struct pc_handle *h, uint64_t now) {
  while (h->ts_count > 0) {
    struct pc_usage_slot *s = pc_slot(h, 0);

    if (s->pid != 0 && now - s->at_ns < PC_USAGE_STALE_NS)
      return;
    h->ts_tail = (h->ts_tail + 1) % PC_USAGE_SLOTS;
    h->ts_count--;
  }
}

/* pc_usage_fn: keeps one task's usage until its exit comes; a full FIFO drops its oldest. */
static void pc_usage_put(void *ctx, uint32_t pid, uint32_t exit_code, uint32_t flags,
                         const struct pc_usage *u) {
  struct pc_handle *h = ctx;
  uint64_t now = pc_now_ns();
  struct pc_usage_slot *s;

  pc_usage_trim(h, now);
  if (h->ts_count == PC_USAGE_SLOTS) {
    h->ts_tail = (h->ts_tail + 1) % PC_USAGE_SLOTS;
    h->ts_count--;
  }
  s = pc_slot(h, h->ts_count++);
  s->at_ns = now;
  s->pid = pid;
  s->exit_code = exit_code;
  s->flags = flags;
  s->u = *u;
  if (pid == h->ts_want)
    h->ts_found = true;
}

/*
 * Takes the usage of task pid, oldest first (a pid reused quickly has two). A slot for pid
 * with another exit code belongs to an earlier task whose exit was lost: it goes.
 */
static uint32_t pc_usage_find(struct pc_handle *h, uint32_t pid, uint32_t exit_code,
                              struct pc_usage *out) {
  uint32_t flags = 0;

  for (uint32_t i = 0; i < h->ts_count; i++) {
    struct pc_usage_slot *s = pc_slot(h, i);

    if (s->pid != pid)
      continue;
    s->pid = 0;
    if (s->exit_code == exit_code) {
      *out = s->u;
      flags = s->flags;
      break;
    }
  }
  pc_usage_trim(h, pc_now_ns());
  return flags;
}

/* After ENOBUFS, once the socket was read empty: the drops are known; report them. */
static void pc_ts_settle(struct pc_handle *h) {
  uint32_t mem[SK_MEMINFO_VARS];
  socklen_t len = sizeof(mem);
  uint64_t lost = 1; /* without SO_MEMINFO: "some" */

  h->ts_enobufs_pending = false;
  if (h->ts_drops_ok && getsockopt(h->tsfd, SOL_SOCKET, SO_MEMINFO, mem, &len) == 0 &&
      len > SK_MEMINFO_DROPS * sizeof(uint32_t)) {
    uint32_t d = mem[SK_MEMINFO_DROPS] - h->ts_drops_last;

    h->ts_drops_last = mem[SK_MEMINFO_DROPS];
    if (d > 0)
      lost = d;
  }
  pc_add(&h->st.usage_lost, lost);
  pthread_mutex_lock(&h->lock);
  h->pend_usage += lost;
  if (pc_flush_pending(h))
    pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->lock);
}

#ifdef PC_FUZZING
/* pc_ts_recv() from a test's source: datagrams from the kernel, as recvmmsg() gives them. */
static int pc_fake_recv(struct pc_handle *h) {
  int n = 0;

  if (h->ts_fake_err) {
    n = h->ts_fake_err;
    h->ts_fake_err = 0;
    return n;
  }
  for (; n < PC_TS_SLOTS; n++) {
    int len = h->ts_fake(h->ts_fake_ctx, h->ts_buf + (size_t)n * PC_TS_SLOT, PC_TS_SLOT);

    if (len <= 0) {
      if (n == 0)
        return len == 0 ? -EAGAIN : len;
      h->ts_fake_err = len; /* an error after datagrams: the next read reports it */
      break;
    }
    h->ts_msgs[n].msg_len = (unsigned)len;
    h->ts_msgs[n].msg_hdr.msg_namelen = sizeof(struct sockaddr_nl);
    h->ts_msgs[n].msg_hdr.msg_flags = 0;
    memset(&h->ts_addrs[n], 0, sizeof(h->ts_addrs[n]));
  }
  return n;
}
#endif

/* Up to PC_TS_SLOTS datagrams from the taskstats socket without blocking: count, or -errno. */
static int pc_ts_recv(struct pc_handle *h) {
  int n;

#ifdef PC_FUZZING
  if (h->ts_fake)
    return pc_fake_recv(h);
#endif
  for (unsigned i = 0; i < PC_TS_SLOTS; i++)
    h->ts_msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_nl);
  n = recvmmsg(h->tsfd, h->ts_msgs, PC_TS_SLOTS, MSG_DONTWAIT, NULL);
  return n < 0 ? -errno : n;
}

/*
 * Reads the taskstats socket, at most PC_TS_DRAIN_MAX datagrams, for the usage of task
 * `want` (0: none in particular): until it has come, or the socket is empty. After an
 * overrun (ts_enobufs_pending) it reads on past `want`, since the kernel drops every message
 * until the socket has been read empty and only then is the loss known (pc_ts_settle), but
 * only while the FIFO has room for a full read: usage still waiting for its exit is never
 * pushed out for it. The cap holds then too: the connector socket is not read meanwhile, and
 * what is left is read by the next drain or by the reader's loop (pc_ts_idle).
 */
static void pc_ts_drain(struct pc_handle *h, uint32_t want) {
  unsigned read = 0;

  h->ts_want = want;
  h->ts_found = false;
  while (read < PC_TS_DRAIN_MAX) {
    int n;

    if (h->ts_found || want == 0) {
      if (!h->ts_enobufs_pending)
        break;
      pc_usage_trim(h, pc_now_ns());
      if (PC_USAGE_SLOTS - h->ts_count < PC_TS_SLOTS)
        break; /* full of usage waiting for exits: read on once some has gone */
    }
    n = pc_ts_recv(h);
    if (n < 0) {
      if (n == -EINTR)
        continue;
      if (n == -ENOBUFS) {
        h->ts_enobufs_pending = true;
        read++; /* reported once per overrun; counted all the same, so the loop ends */
        continue;
      }
      if (n == -EAGAIN && h->ts_enobufs_pending)
        pc_ts_settle(h);
      break; /* EAGAIN: empty; anything else: this exit goes without usage */
    }
    for (int i = 0; i < n; i++) {
      const struct msghdr *mh = &h->ts_msgs[i].msg_hdr;

      /* Only the kernel may speak; a cut message (a far larger struct) has no usable tail. */
      if (mh->msg_namelen >= sizeof(struct sockaddr_nl) && h->ts_addrs[i].nl_pid == 0 &&
          !(mh->msg_flags & MSG_TRUNC))
        pc_parse_taskstats(h->ts_buf + (size_t)i * PC_TS_SLOT, h->ts_msgs[i].msg_len,
                           h->ts_family, pc_usage_put, h);
    }
    read += (unsigned)n;
    if ((h->ts_found || n < PC_TS_SLOTS) && !h->ts_enobufs_pending)
      break;
  }
  h->ts_want = 0;
}

/*
 * The reader's loop, after each round on the connector socket: while an overrun's loss is
 * not settled, reads on (capped as every drain) even when no exit comes to do it. True while
 * it is still not settled: the loop comes back within PC_TS_RETRY_NS.
 */
static bool pc_ts_idle(struct pc_handle *h) {
  if (h->ts_enobufs_pending)
    pc_ts_drain(h, 0);
  return h->ts_enobufs_pending;
}

/*
 * Joins an exit to its task's usage: copies it after the record's head and returns its
 * PC_F_USAGE* flags, or 0 when there is none.
 */
static uint32_t pc_usage_join(struct pc_handle *h, struct pc_record *r, uint32_t pid,
                              uint32_t exit_code) {
  struct pc_usage *u = (struct pc_usage *)(void *)((uint8_t *)r + PC_RECORD_HEAD_SIZE);
  uint32_t flags;

  if (!h->usage_on || pid == 0)
    return 0;
  flags = pc_usage_find(h, pid, exit_code, u);
  if (flags == 0 && h->tsfd >= 0) {
    pc_ts_drain(h, pid);
    flags = pc_usage_find(h, pid, exit_code, u);
  }
  return flags;
}

/* Sends one generic netlink request with one attribute; its seq is h->ts_seq after. */
static int pc_ts_send(struct pc_handle *h, uint16_t type, uint16_t flags, uint8_t cmd,
                      uint16_t attr, const void *data, size_t dlen) {
  union {
    struct nlmsghdr nh;
    uint8_t bytes[NLMSG_HDRLEN + GENL_HDRLEN + NLA_HDRLEN + PC_TS_CPUS_MAX + 4];
  } m;
  struct genlmsghdr g = {.cmd = cmd, .version = TASKSTATS_GENL_VERSION};
  struct nlattr na = {.nla_len = (uint16_t)(NLA_HDRLEN + dlen), .nla_type = attr};
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  ssize_t n;

  if (dlen > PC_TS_CPUS_MAX)
    return -E2BIG;
  memset(&m, 0, sizeof(m));
  m.nh.nlmsg_len = (uint32_t)NLMSG_LENGTH(GENL_HDRLEN + NLA_ALIGN(NLA_HDRLEN + dlen));
  m.nh.nlmsg_type = type;
  m.nh.nlmsg_flags = (uint16_t)(NLM_F_REQUEST | flags);
  m.nh.nlmsg_seq = ++h->ts_seq;
  memcpy(m.bytes + NLMSG_HDRLEN, &g, sizeof(g));
  memcpy(m.bytes + NLMSG_HDRLEN + GENL_HDRLEN, &na, sizeof(na));
  memcpy(m.bytes + NLMSG_HDRLEN + GENL_HDRLEN + NLA_HDRLEN, data, dlen);
  do
    n = sendto(h->tsfd, &m, m.nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel));
  while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : 0;
}

/*
 * Waits for the answer to the last request (see pc_parse_reply), keeping any task usage
 * that arrives meanwhile. 0, or -errno: the kernel's refusal, -ETIMEDOUT after timeout_ms.
 */
static int pc_ts_await(struct pc_handle *h, int timeout_ms, uint16_t *family) {
  const uint64_t deadline = pc_now_ns() + (uint64_t)timeout_ms * 1000000u;

  for (;;) {
    struct sockaddr_nl from;
    socklen_t flen = sizeof(from);
    ssize_t n = recvfrom(h->tsfd, h->ts_buf, PC_TS_SLOT, MSG_DONTWAIT,
                         (struct sockaddr *)&from, &flen);
    int err = 0;
    uint64_t now;

    if (n > 0 && flen >= sizeof(from) && from.nl_pid == 0) {
      if (!family)
        pc_parse_taskstats(h->ts_buf, (size_t)n, h->ts_family, pc_usage_put, h);
      if (pc_parse_reply(h->ts_buf, (size_t)n, h->ts_seq, family, &err))
        return -err;
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR && errno != ENOBUFS)
      return -errno;
    now = pc_now_ns();
    if (now >= deadline)
      return -ETIMEDOUT;
    if (n < 0 && errno == EAGAIN) {
      struct pollfd p = {.fd = h->tsfd, .events = POLLIN};

      if (poll(&p, 1, (int)((deadline - now + 999999u) / 1000000u)) < 0 && errno != EINTR)
        return -errno;
    }
  }
}

/* The possible CPUs as the kernel lists them ("0-1"), for the registration. */
static int pc_possible_cpus(char *buf, size_t cap) {
  int fd = open("/sys/devices/system/cpu/possible", O_RDONLY | O_CLOEXEC);
  ssize_t n;

  if (fd < 0)
    return -errno;
  n = pc_read_upto(fd, buf, cap - 1);
  close(fd);
  if (n <= 0)
    return -EIO;
  if ((size_t)n == cap - 1)
    return -E2BIG;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
    n--;
  buf[n] = 0;
  return n > 0 ? 0 : -EIO;
}

/*
 * The taskstats socket: resolves the TASKSTATS family and registers for the exits of every
 * possible CPU. -ENOENT: no CONFIG_TASKSTATS; -EPERM: no CAP_NET_ADMIN; -EINVAL: not the
 * initial user or pid namespace.
 */
static int pc_usage_open(struct pc_handle *h, uint32_t rcvbuf_bytes, int timeout_ms) {
  static const char name[] = TASKSTATS_GENL_NAME;
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
  int rcvbuf = rcvbuf_bytes > INT32_MAX / 2 ? INT32_MAX / 2 : (int)rcvbuf_bytes;
  int rc = pc_possible_cpus(h->ts_cpus, sizeof(h->ts_cpus));

  if (rc < 0)
    return rc;
  h->tsfd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_GENERIC);
  if (h->tsfd < 0)
    return -errno;
  /* Exits come in storms like the connector's events: the same buffer absorbs them. */
  if (setsockopt(h->tsfd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
    (void)setsockopt(h->tsfd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  if (bind(h->tsfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
    return -errno;
  rc = pc_ts_send(h, GENL_ID_CTRL, 0, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_NAME, name,
                  sizeof(name));
  if (rc == 0)
    rc = pc_ts_await(h, timeout_ms, &h->ts_family);
  if (rc < 0)
    return rc;
  rc = pc_ts_send(h, h->ts_family, NLM_F_ACK, TASKSTATS_CMD_GET,
                  TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, h->ts_cpus, strlen(h->ts_cpus) + 1);
  if (rc == 0)
    rc = pc_ts_await(h, timeout_ms, NULL);
  return rc;
}

/* Turns usage on, or records why it stays off; never fails pc_open(). */
static void pc_usage_start(struct pc_handle *h, uint32_t rcvbuf_bytes, int timeout_ms) {
  uint32_t mem[SK_MEMINFO_VARS];
  socklen_t mlen = sizeof(mem);
  int rc = pc_usage_open(h, rcvbuf_bytes, timeout_ms);

  if (rc < 0) {
    if (h->tsfd >= 0)
      close(h->tsfd);
    h->tsfd = -1;
    h->ts_count = 0;
    pc_set(&h->st.usage_error, (uint64_t)-rc);
    return;
  }
  h->usage_on = true;
  pc_set(&h->st.usage, 1);
  if (getsockopt(h->tsfd, SOL_SOCKET, SO_MEMINFO, mem, &mlen) == 0 &&
      mlen > SK_MEMINFO_DROPS * sizeof(uint32_t)) {
    h->ts_drops_ok = true;
    h->ts_drops_last = mem[SK_MEMINFO_DROPS];
  }
}

/* ---- reader thread ------------------------------------------------------------------ */

/* The kernel filter's rule (cn_filter), applied here too: the filter is installed after
 * the ack, so unfiltered events may already be queued, and older kernels have none. */
static bool pc_wanted(uint32_t mask, uint32_t what, uint32_t exit_code) {
  /* A kind a newer kernel added has no record layout here: leave it out, do not pass it on. */
  if ((what & (PC_KERNEL_EVENTS & ~PC_EVENT_NONZERO_EXIT)) == 0 || (what & (what - 1)) != 0)
    return false;
  if (mask == PC_KERNEL_EVENTS)
    return true;
  if (what == PROC_EVENT_EXIT && (mask & PC_EVENT_NONZERO_EXIT) && exit_code != 0)
    return true;
  return (mask & what) != 0;
}

/* Without a filter every message on a CPU reaches us, so a sequence gap is loss. */
static void pc_track_seq(struct pc_handle *h, uint32_t cpu, uint32_t seq) {
  struct pc_cpu *c;

  if (h->filtered || cpu >= h->ncpu)
    return;
  c = &h->cpus[cpu];
  if (c->seen) {
    uint32_t gap = seq - c->seq - 1;

    /* A huge gap is the counter going backwards (never seen): resync, count nothing. */
    if (gap != 0 && gap < 0x80000000u) {
      h->gap_total += gap;
      /* Part of it may already be reported from SK_MEMINFO_DROPS at a drain. */
      if (h->gap_total > h->lost_emitted)
        pc_emit_kernel_lost(h, h->gap_total - h->lost_emitted, cpu);
    }
  }
  c->seq = seq;
  c->seen = 1;
}

/*
 * After an ENOBUFS, once the queue has been read empty (the congestion is over), reports
 * the drops the socket counted that no gap has reported yet. Loss is never silent even
 * when SO_MEMINFO is unavailable: then one LOST of count 1 says "some".
 */
static void pc_settle_loss(struct pc_handle *h) {
  uint32_t mem[SK_MEMINFO_VARS];
  socklen_t len = sizeof(mem);

  h->enobufs_pending = false;
  if (h->drops_ok && getsockopt(h->fd, SOL_SOCKET, SO_MEMINFO, mem, &len) == 0 &&
      len > SK_MEMINFO_DROPS * sizeof(uint32_t)) {
    h->drops_total += (uint32_t)(mem[SK_MEMINFO_DROPS] - h->drops_last);
    h->drops_last = mem[SK_MEMINFO_DROPS];
    if (h->drops_total > h->lost_emitted)
      pc_emit_kernel_lost(h, h->drops_total - h->lost_emitted, PC_NO_CPU);
  }
  if (h->lost_emitted == h->lost_at_enobufs)
    pc_emit_kernel_lost(h, 1, PC_NO_CPU);
}

/* Before an exec's /proc reads: what a successor needs, and the watchdog armed. */
static void pc_guard_begin(struct pc_handle *h, const struct pc_msg *m) {
  struct itimerspec arm = {.it_value = {.tv_sec = 0, .tv_nsec = PC_STUCK_MS * 1000000L}};

  if (!h->watchdog_ok)
    return;
  h->cur_msg = *m;
  atomic_store_explicit(&h->in_proc_since, pc_now_ns(), memory_order_relaxed);
  atomic_store_explicit(&h->rstate, pc_my_gen << 2 | PC_R_IN_PROC, memory_order_release);
  timer_settime(h->watchdog, 0, &arm, NULL);
}

/* After them: false when a successor took over meanwhile (this thread must stop). */
static bool pc_guard_end(struct pc_handle *h) {
  static const struct itimerspec disarm;
  uint32_t in_proc = pc_my_gen << 2 | PC_R_IN_PROC;

  if (!h->watchdog_ok)
    return true;
  if (!atomic_compare_exchange_strong(&h->rstate, &in_proc, pc_my_gen << 2 | PC_R_RUNNING))
    return false; /* the timer is the successor's now: leave it alone */
  /* Should it fire before this, it finds the reader running and does nothing. */
  timer_settime(h->watchdog, 0, &disarm, NULL);
  return true;
}

/*
 * An exit takes its task's usage out of the FIFO (wanted or not, so none lingers there) and,
 * when wanted, carries it: a record of PC_RECORD_USAGE_SIZE, or counted as missing.
 */
static void pc_exit_usage(struct pc_handle *h, struct pc_record *r, const struct proc_event *ev,
                          bool wanted) {
  uint32_t flags;

  if (!h->usage_on)
    return;
  flags = pc_usage_join(h, r, ev->event_data.exit.process_pid, ev->event_data.exit.exit_code);
  if (!wanted)
    return;
  if (flags == 0) {
    pc_add(&h->st.usage_missing, 1);
    return;
  }
  r->flags = flags;
  r->size = PC_RECORD_USAGE_SIZE;
}

/*
 * Follows the calm burst's children: a fork opens one, its exit closes it. Too many events
 * or children make it a storm, announced by the hold-off's clock instead.
 */
static void pc_burst_note(struct pc_handle *h, const struct proc_event *ev) {
  uint32_t i;

  if (!h->burst_calm)
    return;
  if (++h->burst_events > PC_CALM_EVENTS) {
    h->burst_calm = false;
  } else if (ev->what == PROC_EVENT_FORK) {
    if (h->burst_open == PC_OPEN_MAX)
      h->burst_calm = false;
    else
      h->burst_pids[h->burst_open++] = ev->event_data.fork.child_pid;
  } else if (ev->what == PROC_EVENT_EXIT) {
    for (i = 0; i < h->burst_open; i++) {
      if (h->burst_pids[i] == ev->event_data.exit.process_pid) {
        h->burst_pids[i] = h->burst_pids[--h->burst_open];
        break;
      }
    }
  }
}

static bool pc_on_event(struct pc_handle *h, const struct pc_msg *m) {
  const struct proc_event *ev = &m->ev;
  struct pc_record *r = pc_rec(h);
  uint32_t what = ev->what;
  bool wanted = false;

  if (what != PROC_EVENT_NONE) {
    pc_add(&h->st.events, 1);
    h->step_events++;
    pc_burst_note(h, ev);
    if (what == h->urgent_what)
      h->execs_main++;
    wanted = pc_wanted(h->mask, what, ev->event_data.exit.exit_code);
    if (wanted && what == PROC_EVENT_EXEC) {
      int32_t pid = ev->event_data.exec.process_tgid;

      /* The program's snapshot reads no /proc: the watchdog (two syscalls) guards only
       * the reads, which an exec storm on a VM showed as a sixth of the reader's calls. */
      r->size = h->bpf && pid > 0 ? pc_snapshot_bpf(h, pid, ev->timestamp_ns) : 0;
      if (r->size == 0) {
        pc_guard_begin(h, m);
        r->size = pc_snapshot(h, pid, ev->timestamp_ns);
        if (!pc_guard_end(h))
          return true; /* left behind: the successor has delivered this exec */
      }
    } else {
      r->size = PC_RECORD_HEAD_SIZE;
      r->flags = 0;
      if (what == PROC_EVENT_EXIT)
        pc_exit_usage(h, r, ev, wanted);
    }
  }
  /* Acks (ours or anyone's) consume sequence numbers too. */
  pc_track_seq(h, ev->cpu, m->seq);
  if (!wanted)
    return false;
  r->what = what;
  r->cpu = ev->cpu;
  r->timestamp_ns = ev->timestamp_ns;
  memcpy(r->data, &ev->event_data, PC_EVENT_DATA_SIZE);
  pc_deliver(h, r);
  return false;
}

static int pc_raise_priority(void) {
  struct sched_param sp = {.sched_priority = PC_FIFO_PRIO};

  if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0)
    return 2;
  /* Linux nice is per thread: this leaves the caller's threads alone. */
  if (setpriority(PRIO_PROCESS, (id_t)gettid(), -20) == 0)
    return 1;
  return 0;
}

/* Reads the main socket until it is empty: 0, or -errno when it failed for good. */
static int pc_drain(struct pc_handle *h, bool *got) {
  for (;;) {
    int n = pc_recv(h);

    if (n > 0) {
      *got = true;
      pc_dispatch(h, n, pc_on_event);
      if (!pc_mine(h))
        return -ECANCELED;
      /* A short read means the queue is most likely empty: the next poll() says if not,
       * instead of a recvmmsg() spent on EAGAIN every time. */
      if (n < PC_RECV_SLOTS && !h->enobufs_pending)
        return 0;
    } else if (n == -ENOBUFS) {
      pc_add(&h->st.enobufs, 1);
      pc_note_overrun(h);
    } else if (n == -EAGAIN) {
      if (h->enobufs_pending)
        pc_settle_loss(h);
      return 0;
    } else if (n != -EINTR) {
      return n;
    }
  }
}

/* Empties the exec socket, counting its datagrams: each announces one exec. */
static void pc_drain_urgent(struct pc_handle *h) {
  uint8_t buf[PC_URGENT_BUF];

  for (;;) {
    ssize_t n = recv(h->xfd, buf, sizeof(buf), MSG_DONTWAIT);

    if (n > 0) {
      h->execs_urgent++;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      /* Overrun (ENOBUFS): some announcements are gone; count from the main socket. */
      if (n < 0 && errno == ENOBUFS)
        h->execs_urgent = h->execs_main;
      return;
    }
  }
}

/*
 * Empties the exit socket of a calm burst (BPF), whose datagrams are only wake-ups: one
 * recvmmsg() for the few a burst has, where a recv() each and one more for EAGAIN cost two
 * syscalls an exit. A datagram that comes after a short read wakes the next poll.
 */
static void pc_empty_urgent(struct pc_handle *h) {
  uint8_t buf[PC_URGENT_SLOTS][16]; /* cut short (MSG_TRUNC): only their number matters */
  struct iovec iov[PC_URGENT_SLOTS];
  struct mmsghdr msgs[PC_URGENT_SLOTS];
  int n;

  memset(msgs, 0, sizeof(msgs));
  for (unsigned i = 0; i < PC_URGENT_SLOTS; i++) {
    iov[i] = (struct iovec){.iov_base = buf[i], .iov_len = sizeof(buf[i])};
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  do
    n = recvmmsg(h->xfd, msgs, PC_URGENT_SLOTS, MSG_DONTWAIT, NULL);
  while (n == PC_URGENT_SLOTS || (n < 0 && errno == EINTR));
}

/*
 * Keeps the two sockets' exec counts in step. The exec socket is normally a moment behind
 * (it gets each message after the main one): spin briefly for it rather than be woken
 * again by an exec already read. Should it be ahead (the main socket lost messages, or
 * the order ever changes), wait briefly for the main socket, so execs are read now.
 */
static int pc_catch_up(struct pc_handle *h, bool *got) {
  uint64_t deadline = pc_now_ns() + PC_CATCH_UP_MS * 1000000u;
  uint64_t spin_until = pc_now_ns() + PC_SPIN_NS;

  while (h->execs_urgent < h->execs_main && pc_now_ns() < spin_until)
    pc_drain_urgent(h);
  if (h->execs_urgent < h->execs_main)
    h->execs_urgent = h->execs_main; /* its late byte will cost one spare round */
  while (h->execs_main < h->execs_urgent) {
    struct pollfd p = {.fd = h->fd, .events = POLLIN};
    int rc;

    if (pc_now_ns() >= deadline) {
      h->execs_urgent = h->execs_main; /* lost on the main socket: it has said so */
      break;
    }
    if (poll(&p, 1, 1) < 0 && errno != EINTR)
      return -errno;
    rc = pc_drain(h, got);
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* Rings an armed doorbell when records wait; used at the end of a hold-off. */
static void pc_announce(struct pc_handle *h, uint64_t now) {
  pthread_mutex_lock(&h->lock);
  if (h->used > 0)
    pc_wake(h);
  pthread_mutex_unlock(&h->lock);
  h->last_bell_ns = now;
}

/*
 * Before a read that may begin a burst: it is calm when the doorbell has been quiet a while
 * and both forks and exits reach us (were a kernel filter to drop either, the burst's
 * completeness could not be seen).
 */
static void pc_burst_begin(struct pc_handle *h) {
  uint32_t both = PROC_EVENT_FORK | PROC_EVENT_EXIT;

  h->burst_calm = (!h->filtered || (h->mask & both) == both) &&
                  pc_now_ns() - h->last_bell_ns >= PC_CALM_GAP_NS;
}

/* When the hold that began at `start` ends: a calm burst may take longer to complete, and
 * a sparse stream's steps are longer (PC_SLOW_HOLD_NS). */
static uint64_t pc_hold_end(const struct pc_handle *h, uint64_t start) {
  if (h->burst_calm)
    return start + PC_CALM_HOLD_NS;
  return start + (h->slow_run >= PC_SLOW_RUN ? PC_SLOW_HOLD_NS : PC_HOLD_NS);
}

/*
 * Ends the step that began at `start`: counts it, notes whether the stream is sparse (see
 * PC_SLOW_HOLD_NS), and rings the bell. Returns when the next step begins: now, on the
 * clock, in a sparse stream (so a step costs the reader one wakeup, at its end, instead of
 * two: its first event's and its end's), or 0 to begin it at the next event. A clocked step
 * that gathered nothing ends the stream: the next event begins a short step.
 */
static uint64_t pc_step_end(struct pc_handle *h, uint64_t start, uint64_t now) {
  uint64_t per_hold = (uint64_t)h->step_events * PC_HOLD_NS / (now - start + 1);
  bool sparse = start - h->last_bell_ns < PC_CALM_GAP_NS && per_hold <= PC_SLOW_EVENTS;

  if (h->step_events == 0) {
    h->slow_run = 0;
    pc_announce(h, now); /* records without an event (a loss) still go out */
    return 0;
  }
  pc_add(&h->st.steps, 1);
  if (h->slow_run >= PC_SLOW_RUN)
    pc_add(&h->st.slow_steps, 1);
  h->slow_run = sparse ? h->slow_run + 1 : 0;
  h->step_events = 0;
  pc_announce(h, now);
  return h->slow_run >= PC_SLOW_RUN ? now : 0;
}

/* The next doorbell's burst starts empty; a new hold decides whether it is calm. */
static void pc_burst_reset(struct pc_handle *h) {
  h->burst_calm = false;
  h->burst_events = 0;
  h->burst_open = 0;
}

/* A calm burst whose children have all exited is complete: announce it now. */
static bool pc_burst_done(const struct pc_handle *h) {
  return h->burst_calm && h->burst_open == 0;
}

/*
 * One read round: the main socket, then the exec socket. Returns 1 when anything was read,
 * 0 when not, -errno when the main socket failed.
 */
static int pc_round(struct pc_handle *h) {
  bool got = false;
  int rc = pc_drain(h, &got);

  if (rc < 0)
    return rc;
  if (h->xfd >= 0 && h->bpf) {
    /* The exit socket is waited on only in a calm burst, and so emptied only then: in a
     * storm it may fill and overrun, unread. Each exit reaches the main socket first, which
     * was just read: what is here is read already (or about to be, at the hold's end). */
    if (h->burst_calm) {
      pc_empty_urgent(h);
      h->execs_urgent = h->execs_main;
    }
  } else if (h->xfd >= 0) {
    pc_drain_urgent(h);
    rc = pc_catch_up(h, &got);
    if (rc < 0)
      return rc;
  }
  return got ? 1 : 0;
}

/*
 * Hold-off: the first event after a quiet spell is read at once and starts a hold of
 * PC_HOLD_NS, during which the reader sleeps unless an exec comes on the exec socket (its
 * /proc is read then). At the end what gathered is read and announced in one doorbell
 * byte. A process's fork, exec and exit usually fall into one hold: one consumer wakeup
 * for the three, and at most one per PC_HOLD_NS in a storm.
 */
/*
 * A successor's first step: the exec its predecessor was stuck on goes out as gone (no
 * cmdline, in its place in kernel order), then the rest of that read.
 */
static void pc_resume(struct pc_handle *h) {
  const struct pc_msg *m = &h->cur_msg;
  struct pc_record *r = pc_rec(h);

  memset(r, 0, PC_RECORD_SNAPSHOT_SIZE);
  r->size = PC_RECORD_SNAPSHOT_SIZE; /* a multiple of 8: no padding */
  r->flags = PC_F_SNAPSHOT | PC_F_GONE | PC_F_NO_EXE;
  r->ruid = r->euid = PC_NO_UID;
  r->ppid = -1;
  pc_add(&h->st.exec_gone, 1);
  pc_add(&h->st.exec_stuck, 1);
  pc_track_seq(h, m->ev.cpu, m->seq);
  r->what = m->ev.what;
  r->cpu = m->ev.cpu;
  r->timestamp_ns = m->ev.timestamp_ns;
  memcpy(r->data, &m->ev.event_data, PC_EVENT_DATA_SIZE);
  pc_deliver(h, r);
  pc_dispatch_from(h, h->cur_i + 1, h->cur_n, pc_on_event);
}

/*
 * Takes the BPF program the caller offered (pc_exec_bpf()). An exec now waits for the hold
 * like any event, its snapshot already taken in the kernel, and the exec socket's filter
 * becomes exits: a calm burst is complete at an exit, and watching for exits alone spares
 * the reader a wakeup for each exec (and fork) within it. The kernel takes a second LISTEN
 * on the same socket as a new filter (cn_proc_mcast_ctl), counting it once; the socket
 * keeps its place ahead of the main one. Should that fail, the socket goes.
 */
static void pc_adopt_bpf(struct pc_handle *h) {
  struct pc_bpf *b = atomic_load_explicit(&h->bpf_offer, memory_order_acquire);
  struct pc_proc_input in = {.mcast_op = PROC_CN_MCAST_LISTEN, .event_type = PC_EVENT_EXIT};

  if (!b || h->bpf)
    return;
  h->bpf = b;
  pc_set(&h->st.exec_bpf, 1);
  if (h->xfd < 0)
    return;
  if (!(h->mask & PC_EVENT_EXIT) ||
      pc_send_on(h->xfd, 0, &in, sizeof(in), h->nonce, h->nonce) < 0) {
    uint32_t op = PROC_CN_MCAST_IGNORE;

    (void)pc_send_on(h->xfd, 0, &op, sizeof(op), h->nonce, h->nonce);
    close(h->xfd);
    h->xfd = -1;
    return;
  }
  h->nonce += 2;
  h->urgent_what = PROC_EVENT_EXIT;
  /* Execs it had queued, and exits the main socket has not given yet: counted afresh. */
  pc_drain_urgent(h);
  h->execs_urgent = h->execs_main = 0;
}

/*
 * Which sockets the reader waits on (p: the stop eventfd, xfd, the main socket): the main
 * socket unless it is holding; while holding, xfd when it says something the hold cannot
 * wait for (an exec whose /proc must be read now; with BPF, an exit that may complete a
 * calm burst, and only then: pc_round() empties it only then); a calm burst without BPF,
 * each event as it comes, to see the burst complete. Returns how many of p to wait on.
 */
static nfds_t pc_wait_fds(const struct pc_handle *h, struct pollfd p[3], bool holding) {
  p[1].fd = h->bpf && !(holding && h->burst_calm) ? -1 : h->xfd; /* a negative fd: unwatched */
  if (!holding)
    return 3;
  if (h->bpf)
    return h->burst_calm ? 2 : 1;
  return h->burst_calm ? 3 : 2;
}

/* A reader left behind, its read returned at last: it owns nothing but its buffers. */
static void *pc_left(struct pc_handle *h) {
  free(pc_my_rec);
  free(pc_my_status);
  atomic_fetch_sub(&h->left_behind, 1);
  return NULL;
}

static void *pc_reader(void *arg) {
  struct pc_handle *h = arg;
  uint64_t hold_start = 0; /* when the hold began; 0 = not holding */
  int err = 0;

  pc_my_gen = atomic_load_explicit(&h->rstate, memory_order_acquire) >> 2;
  pc_my_rec = h->rec;
  pc_my_status = h->status;
  /* Set by the first thread itself, before pc_open() returns, so stats.realtime is final. */
  if (pc_my_gen == 0)
    pc_set(&h->st.realtime, h->no_realtime ? 0 : (uint64_t)pc_raise_priority());
  else if (!h->no_realtime)
    pc_raise_priority();
  pthread_mutex_lock(&h->lock);
  h->started = true;
  pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->lock);
  if (h->resume) {
    h->resume = false;
    pc_resume(h);
    if (!pc_mine(h))
      return pc_left(h); /* stuck again, on an exec of that same read */
  }

  while (!atomic_load_explicit(&h->stop, memory_order_acquire)) {
    struct pollfd p[3] = {{.fd = h->efd, .events = POLLIN},
                          {.fd = h->xfd, .events = POLLIN},
                          {.fd = h->fd, .events = POLLIN}};
    bool holding = hold_start != 0;
    struct timespec wait, *timeout = NULL;
    uint64_t now, wait_ns, hold_until = 0;
    bool ts_pending;
    int rc;

    if (!h->bpf)
      pc_adopt_bpf(h);
    if (!holding)
      pc_burst_begin(h);
    rc = pc_round(h);
    if (rc == -ECANCELED)
      return pc_left(h);
    if (rc < 0) {
      err = -rc;
      break;
    }
    /* The connector socket was just read: now the taskstats socket's turn, if it overran. */
    ts_pending = pc_ts_idle(h);
    now = pc_now_ns();
    if (h->xfd < 0 && !h->bpf) {
      /* Without the exec socket or BPF every event may be an exec: no hold-off. */
      if (rc == 1)
        pc_announce(h, now);
      pc_burst_reset(h);
    } else {
      if (!holding && rc == 1)
        hold_start = now;
      if (hold_start != 0) {
        hold_until = pc_hold_end(h, hold_start);
        if (now >= hold_until || pc_burst_done(h)) {
          pc_burst_reset(h);
          hold_start = pc_step_end(h, hold_start, now);
          hold_until = hold_start != 0 ? pc_hold_end(h, hold_start) : 0;
        }
      } else {
        pc_burst_reset(h);
      }
    }
    wait_ns = hold_until != 0 ? hold_until - now : UINT64_MAX;
    if (ts_pending && wait_ns > PC_TS_RETRY_NS)
      wait_ns = PC_TS_RETRY_NS;
    if (wait_ns != UINT64_MAX) {
      wait.tv_sec = 0;
      wait.tv_nsec = (long)wait_ns;
      timeout = &wait;
    }
    rc = ppoll(p, pc_wait_fds(h, p, hold_until != 0), timeout, NULL);
    if (rc < 0) {
      if (errno == EINTR)
        continue;
      err = errno;
      break;
    }
    if ((p[0].revents | p[1].revents | p[2].revents) & POLLNVAL) {
      err = EBADF;
      break;
    }
    if (p[0].revents)
      break;
  }
  if (h->enobufs_pending)
    pc_settle_loss(h);
  if (h->ts_enobufs_pending)
    pc_ts_settle(h);

  pthread_mutex_lock(&h->lock);
  h->error = err;
  h->reader_done = true;
  pc_wake(h);
  pthread_mutex_unlock(&h->lock);
  return NULL;
}

/* ---- handle lifetime ---------------------------------------------------------------- */

static uint32_t pc_mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15u;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
  return (uint32_t)(x ^ (x >> 31));
}

static void pc_free(struct pc_handle *h) {
  if (h->watchdog_ok)
    timer_delete(h->watchdog);
  if (h->fd >= 0)
    close(h->fd);
  if (h->efd >= 0)
    close(h->efd);
  if (h->xfd >= 0)
    close(h->xfd);
  if (h->bell_listen >= 0)
    close(h->bell_listen);
  if (h->bell >= 0)
    close(h->bell);
  if (h->wait_efd >= 0)
    close(h->wait_efd);
  if (h->proc_dir >= 0)
    close(h->proc_dir);
  if (h->tsfd >= 0)
    close(h->tsfd);
  pthread_cond_destroy(&h->cond);
  pthread_mutex_destroy(&h->lock);
  pthread_mutex_destroy(&h->batch_lock);
  pthread_mutex_destroy(&h->stop_lock);
  free(h->ring);
  free(h->rec);
  free(h->status);
  free(h->rbuf);
  free(h->msgs);
  free(h->iov);
  free(h->addrs);
  free(h->cpus);
  free(h->ts_buf);
  free(h->ts_msgs);
  free(h->ts_iov);
  free(h->ts_addrs);
  free(h->ts_tab);
  free(h);
}

/* Starts a reader thread that takes no process signals: Deno's handlers run elsewhere. */
static int pc_start_reader(struct pc_handle *h) {
  sigset_t all, old;
  int rc;

  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = pthread_create(&h->thread, NULL, pc_reader, h);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  /* Not "tokio-runtime-w", inherited from the pool thread that ran pc_open(): for top -H. */
  if (rc == 0) (void)pthread_setname_np(h->thread, "pm-reader");
  return -rc;
}

/*
 * The watchdog fired: the reader has been in one exec's /proc reads for PC_STUCK_MS. It is
 * left there (nothing can interrupt a read blocked on a hung mapping) and a successor with
 * buffers of its own takes the socket over. Runs on a thread of the timer's.
 */
static void pc_on_stuck(union sigval v) {
  struct pc_handle *h = v.sival_ptr;
  struct pc_record *rec = malloc(PC_RECORD_MAX + 64);
  char *status = malloc(PC_STATUS_READ);
  uint32_t state;
  pthread_t stuck;

  pthread_mutex_lock(&h->stop_lock);
  state = atomic_load_explicit(&h->rstate, memory_order_acquire);
  /* An expiry that ran late may find the reader in the reads of a later exec, just begun:
   * only reads that have really lasted PC_STUCK_MS are taken for stuck. */
  if (rec && status && !atomic_load(&h->stop) && (state & 3u) == PC_R_IN_PROC &&
      pc_now_ns() - atomic_load(&h->in_proc_since) >= PC_STUCK_MS * 1000000u &&
      atomic_compare_exchange_strong(&h->rstate, &state,
                                     ((state >> 2) + 1) << 2 | PC_R_RUNNING)) {
    stuck = h->thread;
    atomic_fetch_add(&h->left_behind, 1);
    h->rec = rec;
    h->status = status;
    rec = NULL;
    status = NULL;
    h->resume = true;
    if (pc_start_reader(h) == 0) {
      pthread_detach(stuck);
    } else {
      /* No successor: collection stops here, and says so. */
      h->thread = stuck;
      pthread_mutex_lock(&h->lock);
      h->error = EAGAIN;
      h->reader_done = true;
      pc_wake(h);
      pthread_mutex_unlock(&h->lock);
    }
  }
  pthread_mutex_unlock(&h->stop_lock);
  free(rec);
  free(status);
}

static void pc_watchdog_open(struct pc_handle *h) {
  struct sigevent ev;

  memset(&ev, 0, sizeof(ev));
  ev.sigev_notify = SIGEV_THREAD;
  ev.sigev_notify_function = pc_on_stuck;
  ev.sigev_value.sival_ptr = h;
  h->watchdog_ok = timer_create(CLOCK_MONOTONIC, &ev, &h->watchdog) == 0;
}

/*
 * A doorbell's listening end, in the abstract namespace (no file to create or remove):
 * "PREFIX-PID-HEX" into name, the socket into *listen_fd. The name only has to be hard to
 * hit by chance: pc_doorbell_take() takes nobody but a connection from this very process.
 */
static int pc_doorbell_listen(const char *prefix, const void *salt, char *name, size_t cap,
                              int *listen_fd) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  int n = snprintf(name, cap, "%s-%d-%08x", prefix, (int)getpid(),
                   pc_mix(pc_now_ns() ^ (uint64_t)(uintptr_t)salt));

  if (n < 0 || (size_t)n >= cap || (size_t)n + 1 > sizeof(a.sun_path))
    return -ENAMETOOLONG;
  *listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (*listen_fd < 0)
    return -errno;
  memcpy(a.sun_path + 1, name, (size_t)n); /* sun_path[0] == 0: abstract */
  if (bind(*listen_fd, (struct sockaddr *)&a,
           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n)) < 0 ||
      listen(*listen_fd, 4) < 0)
    return -errno;
  return 0;
}

/* Copies a doorbell's name for the consumer to connect to; its length, or -ENOSPC. */
static int pc_doorbell_name(const char *name, char *buf, uint32_t cap) {
  size_t n = strlen(name);

  if (cap < n + 1)
    return -ENOSPC;
  memcpy(buf, name, n + 1);
  return (int)n;
}

/*
 * The doorbell's consumer: the first connection from this very process (another process
 * that found the name is turned away), after which the listener is closed. Its fd, or
 * -errno (-EAGAIN: nobody has connected yet; -EBADF: already taken).
 */
static int pc_doorbell_take(int *listen_fd) {
  if (*listen_fd < 0)
    return -EBADF;
  for (;;) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    int fd = accept4(*listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

    if (fd < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid == getpid()) {
      close(*listen_fd);
      *listen_fd = -1;
      return fd;
    }
    close(fd);
  }
}

static int pc_bell_open(struct pc_handle *h) {
  return pc_doorbell_listen("procmonitor", h, h->bell_name, sizeof(h->bell_name),
                            &h->bell_listen);
}

PC_EXPORT const char *pc_version(void) {
  return PC_VERSION;
}

/* The taskstats receive slots and the usage FIFO (about 150 KiB): 0 or -ENOMEM. */
static int pc_alloc_usage(struct pc_handle *h) {
  h->ts_buf = malloc((size_t)PC_TS_SLOTS * PC_TS_SLOT);
  h->ts_msgs = calloc(PC_TS_SLOTS, sizeof(*h->ts_msgs));
  h->ts_iov = calloc(PC_TS_SLOTS, sizeof(*h->ts_iov));
  h->ts_addrs = calloc(PC_TS_SLOTS, sizeof(*h->ts_addrs));
  h->ts_tab = calloc(PC_USAGE_SLOTS, sizeof(*h->ts_tab));
  if (!h->ts_buf || !h->ts_msgs || !h->ts_iov || !h->ts_addrs || !h->ts_tab)
    return -ENOMEM;
  for (unsigned i = 0; i < PC_TS_SLOTS; i++) {
    h->ts_iov[i].iov_base = h->ts_buf + (size_t)i * PC_TS_SLOT;
    h->ts_iov[i].iov_len = PC_TS_SLOT;
    h->ts_msgs[i].msg_hdr.msg_iov = &h->ts_iov[i];
    h->ts_msgs[i].msg_hdr.msg_iovlen = 1;
    h->ts_msgs[i].msg_hdr.msg_name = &h->ts_addrs[i];
  }
  return 0;
}

/*
 * The handle and every buffer the reader will use (the only allocations of its life),
 * with no socket, thread or /proc yet: every fd is -1. mask is the caller's, already
 * reduced to kernel bits (never 0); ring is the ring's capacity in bytes.
 */
static int pc_alloc(uint32_t mask, uint32_t ring, bool no_realtime, struct pc_handle **out) {
  struct pc_handle *h;
  pthread_condattr_t ca;
  int ncpu;

  h = calloc(1, sizeof(*h));
  if (!h)
    return -ENOMEM;
  h->fd = h->efd = h->xfd = h->bell_listen = h->bell = h->proc_dir = h->tsfd = -1;
  h->wait_efd = -1;
  h->loop_epfd = PC_LOOP_UNKNOWN;
  atomic_init(&h->stop, 0);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* timeouts immune to clock changes */
  pthread_cond_init(&h->cond, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&h->lock, NULL);
  pthread_mutex_init(&h->batch_lock, NULL);
  pthread_mutex_init(&h->stop_lock, NULL);

  h->no_realtime = no_realtime;
  h->ns_per_tick = sysconf(_SC_CLK_TCK) > 0 ? 1000000000u / (uint64_t)sysconf(_SC_CLK_TCK) : 10000000u;
  h->mask = mask;
  h->cap = ring & ~7u;
  ncpu = get_nprocs_conf();
  h->ncpu = ncpu > PC_MIN_CPUS ? (uint32_t)ncpu : PC_MIN_CPUS;
  h->ring = malloc(h->cap);
  h->rec = malloc(PC_RECORD_MAX + 64); /* readlink may write PC_EXE_MAX + 1 after cmdline */
  h->status = malloc(PC_STATUS_READ);
  h->rbuf = malloc((size_t)PC_RECV_SLOTS * PC_RECV_SLOT);
  h->msgs = calloc(PC_RECV_SLOTS, sizeof(*h->msgs));
  h->iov = calloc(PC_RECV_SLOTS, sizeof(*h->iov));
  h->addrs = calloc(PC_RECV_SLOTS, sizeof(*h->addrs));
  h->cpus = calloc(h->ncpu, sizeof(*h->cpus));
  if (!h->ring || !h->rec || !h->status || !h->rbuf || !h->msgs || !h->iov || !h->addrs ||
      !h->cpus || pc_alloc_usage(h) < 0) {
    pc_free(h);
    return -ENOMEM;
  }
  for (unsigned i = 0; i < PC_RECV_SLOTS; i++) {
    h->iov[i].iov_base = h->rbuf + (size_t)i * PC_RECV_SLOT;
    h->iov[i].iov_len = PC_RECV_SLOT;
    h->msgs[i].msg_hdr.msg_iov = &h->iov[i];
    h->msgs[i].msg_hdr.msg_iovlen = 1;
    h->msgs[i].msg_hdr.msg_name = &h->addrs[i];
  }
  *out = h;
  return 0;
}

/* The snapshot's extra reads; names already checked by pc_env_names_ok(). */
static void pc_set_reads(struct pc_handle *h, uint32_t reads, const char *names) {
  h->reads = reads & (PC_READ_CWD | PC_READ_CGROUP | PC_READ_ENV);
  if (h->reads & PC_READ_ENV)
    memcpy(h->env_names, names, PC_ENV_NAMES_MAX);
}

/* The caller's options with every zero replaced by its default, and limits applied. */
static struct pc_options pc_defaults(const struct pc_options *opts) {
  struct pc_options o = {0};

  if (opts)
    o = *opts;
  if (o.ring_bytes == 0)
    o.ring_bytes = PC_DEFAULT_RING;
  if (o.ring_bytes < PC_MIN_RING)
    o.ring_bytes = PC_MIN_RING;
  if (o.rcvbuf_bytes == 0)
    o.rcvbuf_bytes = PC_DEFAULT_RCVBUF;
  if (o.ack_timeout_ms == 0)
    o.ack_timeout_ms = PC_DEFAULT_ACK_MS;
  if (o.ack_timeout_ms > INT32_MAX / 2)
    o.ack_timeout_ms = INT32_MAX / 2;
  return o;
}

/* The connector socket, bound (not yet subscribed); the exec socket is bound first. */
static int pc_open_socket(struct pc_handle *h, uint32_t rcvbuf_bytes) {
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC};
  socklen_t salen = sizeof(sa);
  int rcvbuf = rcvbuf_bytes > INT32_MAX / 2 ? INT32_MAX / 2 : (int)rcvbuf_bytes;

  pc_bind_urgent(h);
  h->fd = socket(PF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_CONNECTOR);
  if (h->fd < 0)
    return -errno; /* EPROTONOSUPPORT: no connector in this kernel */
  /* A storm outruns any reader for a moment: the socket buffer absorbs it. FORCE
   * passes net.core.rmem_max but needs CAP_NET_ADMIN; the plain one is capped. */
  if (setsockopt(h->fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
    (void)setsockopt(h->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  if (bind(h->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
    return -errno;
  if (getsockname(h->fd, (struct sockaddr *)&sa, &salen) == 0)
    h->portid = sa.nl_pid;
  return 0;
}

/* The stop eventfd, the doorbell and the proc directory. */
static int pc_open_local(struct pc_handle *h) {
  const char *proc_root;
  int rc;

  h->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (h->efd < 0)
    return -errno;
  h->wait_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (h->wait_efd < 0)
    return -errno;
  rc = pc_bell_open(h);
  if (rc < 0)
    return rc;
  /* PROCMONITOR_PROC_ROOT: a proc tree mounted elsewhere, or a test's stand-in for one. */
  proc_root = getenv("PROCMONITOR_PROC_ROOT");
  h->proc_elsewhere = proc_root && *proc_root;
  h->proc_dir = open(h->proc_elsewhere ? proc_root : "/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  h->proc_prefix = h->proc_dir >= 0 ? "" : "/proc/";
  if (h->proc_dir < 0)
    h->proc_dir = AT_FDCWD;
  return 0;
}

/* Starts counting the socket's own drops (SO_MEMINFO), the exact measure of an overrun. */
static void pc_count_drops(struct pc_handle *h) {
  uint32_t mem[SK_MEMINFO_VARS];
  socklen_t mlen = sizeof(mem);

  if (getsockopt(h->fd, SOL_SOCKET, SO_MEMINFO, mem, &mlen) == 0 &&
      mlen > SK_MEMINFO_DROPS * sizeof(uint32_t)) {
    h->drops_ok = true;
    h->drops_last = mem[SK_MEMINFO_DROPS];
  }
}

PC_EXPORT int pc_open(const struct pc_options *opts, pc_handle **out) {
  struct pc_options o = pc_defaults(opts);
  struct pc_handle *h;
  uint32_t mask = o.event_mask & PC_KERNEL_EVENTS;
  int rc;

  if (!out)
    return -EINVAL;
  if ((o.snapshot_reads & PC_READ_ENV) && !pc_env_names_ok(o.env_names))
    return -EINVAL;
  rc = pc_alloc(mask != 0 ? mask : PC_KERNEL_EVENTS, o.ring_bytes, o.no_realtime != 0, &h);
  if (rc < 0)
    return rc;
  pc_set_reads(h, o.snapshot_reads, o.env_names);
  rc = pc_open_socket(h, o.rcvbuf_bytes);
  if (rc == 0)
    rc = pc_open_local(h);
  if (rc < 0)
    goto fail;
  h->nonce = pc_mix(((uint64_t)getpid() << 32) ^ (uint64_t)gettid() ^ pc_now_ns() ^
                    (uint64_t)(uintptr_t)h);
  rc = pc_subscribe(h, (int)o.ack_timeout_ms);
  if (rc < 0)
    goto fail_subscribed;
  pc_subscribe_urgent(h);
  /* After the connector's subscription: every exit taskstats reports then has its record. */
  if (!o.no_usage && (h->mask & PC_EVENT_EXIT))
    pc_usage_start(h, o.rcvbuf_bytes, (int)o.ack_timeout_ms);
  pc_count_drops(h);
  pc_watchdog_open(h);
  rc = pc_start_reader(h);
  if (rc < 0)
    goto fail_subscribed;
  pthread_mutex_lock(&h->lock);
  while (!h->started)
    pthread_cond_wait(&h->cond, &h->lock);
  pthread_mutex_unlock(&h->lock);
  *out = h;
  return 0;

fail_subscribed: {
  uint32_t op = PROC_CN_MCAST_IGNORE;

  (void)pc_send(h, &op, sizeof(op), h->nonce, h->nonce);
  if (h->xfd >= 0 && h->urgent_listening)
    (void)pc_send_on(h->xfd, 0, &op, sizeof(op), h->nonce, h->nonce);
}
fail:
  pc_free(h);
  return rc;
}

PC_EXPORT int pc_bell_name(pc_handle *h, char *buf, uint32_t cap) {
  if (!h || !buf)
    return -EINVAL;
  return pc_doorbell_name(h->bell_name, buf, cap);
}

PC_EXPORT int pc_bell_accept(pc_handle *h) {
  int fd;

  if (!h)
    return -EINVAL;
  if (h->bell >= 0)
    return 0;
  fd = pc_doorbell_take(&h->bell_listen);
  if (fd < 0)
    return fd;
  pthread_mutex_lock(&h->lock);
  h->bell = fd;
  pthread_mutex_unlock(&h->lock);
  return 0;
}

PC_EXPORT int pc_running(pc_handle *h) {
  bool running;

  if (!h)
    return -EINVAL;
  pthread_mutex_lock(&h->lock);
  running = !h->reader_done;
  pthread_mutex_unlock(&h->lock);
  return running ? 1 : 0;
}

PC_EXPORT int pc_arm(pc_handle *h) {
  bool ready;

  if (!h)
    return -EINVAL;
  pthread_mutex_lock(&h->lock);
  /* Not `stopping`: after a stop the consumer waits for the reader's end (rung then). */
  ready = h->used > 0 || h->reader_done;
  h->armed = true;
  if (ready)
    pc_wake(h); /* rung at once: the consumer still goes round its event loop first */
  pthread_mutex_unlock(&h->lock);
  return ready ? 1 : 0;
}

/* Whether fd is a socket connected to the doorbell's name: the consumer's end of it. */
static bool pc_is_bell_peer(const struct pc_handle *h, int fd) {
  struct sockaddr_un a;
  socklen_t len = sizeof(a);
  size_t n = strlen(h->bell_name);

  if (getpeername(fd, (struct sockaddr *)&a, &len) < 0 || a.sun_family != AF_UNIX)
    return false;
  return len == offsetof(struct sockaddr_un, sun_path) + 1 + n && a.sun_path[0] == '\0' &&
         memcmp(a.sun_path + 1, h->bell_name, n) == 0;
}

/* Whether the epoll set epfd watches the consumer's end of the doorbell ("tfd:" lines). */
static bool pc_epoll_watches_bell(const struct pc_handle *h, int epfd) {
  char path[64], line[256];
  bool found = false;
  FILE *f;

  snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", epfd);
  f = fopen(path, "re");
  if (!f)
    return false;
  while (!found && fgets(line, sizeof(line), f))
    if (strncmp(line, "tfd:", 4) == 0)
      found = pc_is_bell_peer(h, (int)strtol(line + 4, NULL, 10));
  fclose(f);
  return found;
}

/*
 * The epoll set of the consumer's event loop: the one that watches the consumer's end of
 * the doorbell (Deno's runtime registers every socket it owns). Its fd, which stays the
 * runtime's, or PC_LOOP_NONE.
 */
static int pc_find_loop_epoll(const struct pc_handle *h) {
  char link[64];
  int found = PC_LOOP_NONE;
  struct dirent *e;
  DIR *d = opendir("/proc/self/fd");

  if (!d)
    return PC_LOOP_NONE;
  while (found < 0 && (e = readdir(d)) != NULL) {
    ssize_t n = readlinkat(dirfd(d), e->d_name, link, sizeof(link) - 1);

    if (n <= 0)
      continue;
    link[n] = '\0';
    if (strcmp(link, "anon_inode:[eventpoll]") != 0)
      continue;
    if (pc_epoll_watches_bell(h, atoi(e->d_name)))
      found = atoi(e->d_name);
  }
  closedir(d);
  return found;
}

/* Whether records (or the reader's end) are there; if not, arms wait_efd. */
static bool pc_ready_or_arm(struct pc_handle *h) {
  bool ready;

  pthread_mutex_lock(&h->lock);
  ready = h->used > 0 || h->reader_done;
  h->sync_armed = !ready;
  pthread_mutex_unlock(&h->lock);
  return ready;
}

/* After the poll: disarms wait_efd, empties it, and says whether records are there. */
static bool pc_disarm(struct pc_handle *h) {
  uint64_t count;
  bool ready;

  pthread_mutex_lock(&h->lock);
  h->sync_armed = false;
  ready = h->used > 0 || h->reader_done;
  pthread_mutex_unlock(&h->lock);
  while (read(h->wait_efd, &count, sizeof(count)) < 0 && errno == EINTR)
    ;
  return ready;
}

PC_EXPORT int pc_wait(pc_handle *h, int32_t timeout_ms) {
  struct pollfd p[2];
  int n, rc = 0;

  if (!h || timeout_ms < 0)
    return -EINVAL;
  if (h->bell < 0)
    return -ENOTCONN;
  if (h->loop_epfd == PC_LOOP_UNKNOWN)
    h->loop_epfd = pc_find_loop_epoll(h);
  if (h->loop_epfd == PC_LOOP_NONE)
    return -ENOENT;
  if (pc_ready_or_arm(h))
    return PC_WAIT_RECORDS;
  p[0] = (struct pollfd){.fd = h->wait_efd, .events = POLLIN};
  p[1] = (struct pollfd){.fd = h->loop_epfd, .events = POLLIN};
  n = poll(p, 2, timeout_ms);
  /* A signal: the runtime's handler queues it on a socket of the loop's, seen next time. */
  if ((n < 0 && errno == EINTR) || (n > 0 && p[1].revents != 0))
    rc |= PC_WAIT_LOOP;
  else if (n < 0)
    rc = -errno;
  if (pc_disarm(h) && rc >= 0)
    rc |= PC_WAIT_RECORDS;
  return rc;
}

PC_EXPORT int pc_take(pc_handle *h, uint8_t *buf, uint32_t cap) {
  size_t budget, pos, left, done = 0, consumed = 0;
  int rc = 0;

  if (!h || !buf || cap < PC_RECORD_MAX)
    return -EINVAL;
  budget = (cap > INT32_MAX ? (size_t)INT32_MAX : cap) & ~(size_t)7;

  pthread_mutex_lock(&h->batch_lock);
  pthread_mutex_lock(&h->lock);
  pos = h->tail;
  left = h->used;
  if (left == 0 && h->reader_done && h->error != 0)
    rc = -EPIPE;
  pthread_mutex_unlock(&h->lock);

  /* The reader only writes free space, and batch_lock keeps other consumers out, so the
   * used span can be copied without holding up the reader. */
  while (left > 0) {
    const struct pc_record *r = (const struct pc_record *)(const void *)(h->ring + pos);
    uint32_t size = r->size;

    if (r->what != 0) {
      if (done + size > budget)
        break;
      memcpy(buf + done, r, size);
      done += size;
    }
    pos += size;
    if (pos == h->cap)
      pos = 0;
    left -= size;
    consumed += size;
  }

  if (consumed) {
    pthread_mutex_lock(&h->lock);
    h->tail = pos;
    h->used -= consumed;
    /* Losses wait for the next record that fits; on a quiet system that may never come.
     * The ring is empty, so they go in now and the next call returns them at once. */
    if (h->used == 0)
      pc_flush_pending(h);
    pthread_mutex_unlock(&h->lock);
  }
  pthread_mutex_unlock(&h->batch_lock);
  return done ? (int)done : rc;
}

PC_EXPORT int pc_stats(pc_handle *h, struct pc_stats *out) {
  if (!h || !out)
    return -EINVAL;
  out->events = pc_get(&h->st.events);
  out->kernel_lost = pc_get(&h->st.kernel_lost);
  out->enobufs = pc_get(&h->st.enobufs);
  out->ring_lost = pc_get(&h->st.ring_lost);
  out->ring_high = pc_get(&h->st.ring_high);
  out->exec_gone = pc_get(&h->st.exec_gone);
  out->filtered = pc_get(&h->st.filtered);
  out->realtime = pc_get(&h->st.realtime);
  out->exec_reused = pc_get(&h->st.exec_reused);
  out->exec_stuck = pc_get(&h->st.exec_stuck);
  out->usage = pc_get(&h->st.usage);
  out->usage_error = pc_get(&h->st.usage_error);
  out->usage_lost = pc_get(&h->st.usage_lost);
  out->usage_missing = pc_get(&h->st.usage_missing);
  out->exec_bpf = pc_get(&h->st.exec_bpf);
  out->exec_bpf_error = pc_get(&h->st.exec_bpf_error);
  out->exec_bpf_missed = pc_get(&h->st.exec_bpf_missed);
  out->exec_bpf_dropped = pc_bpf_dropped(atomic_load(&h->bpf_offer));
  out->steps = pc_get(&h->st.steps);
  out->slow_steps = pc_get(&h->st.slow_steps);
  return 0;
}

PC_EXPORT int pc_error(pc_handle *h) {
  int err;

  if (!h)
    return -EINVAL;
  pthread_mutex_lock(&h->lock);
  err = h->error;
  pthread_mutex_unlock(&h->lock);
  return err;
}

/* Tells the reader to stop and rings an armed doorbell; does not wait. */
static void pc_signal_stop(struct pc_handle *h) {
  uint64_t one = 1;
  ssize_t n;

  atomic_store_explicit(&h->stop, 1, memory_order_release);
  do
    n = write(h->efd, &one, sizeof(one));
  while (n < 0 && errno == EINTR);
  pthread_mutex_lock(&h->lock);
  h->stopping = true;
  pc_wake(h);
  pthread_mutex_unlock(&h->lock);
}

PC_EXPORT int pc_stop(pc_handle *h) {
  if (!h)
    return -EINVAL;
  /* No join here: the reader may be inside a /proc read that blocks on a stuck process
   * (a hung NFS mount), and the caller's thread must stay free to handle a second signal.
   * pc_close() joins. */
  pc_signal_stop(h);
  return 0;
}

/* Stops and joins the reader once. */
/*
 * Stops the reader and joins it, waiting at most PC_JOIN_MS: a reader stuck in a /proc read
 * is left where it is (false). No successor can start once the stop is set.
 */
static bool pc_join(struct pc_handle *h) {
  struct timespec deadline;
  pthread_t reader;

  pthread_mutex_lock(&h->stop_lock);
  if (h->joined) {
    pthread_mutex_unlock(&h->stop_lock);
    return true;
  }
  pc_signal_stop(h);
  reader = h->thread;
  pthread_mutex_unlock(&h->stop_lock);
  clock_gettime(CLOCK_REALTIME, &deadline); /* pthread_timedjoin_np's clock */
  deadline.tv_sec += PC_JOIN_MS / 1000;
  if (pthread_timedjoin_np(reader, NULL, &deadline) != 0)
    return false;
  h->joined = true;
  /* The reader broadcast when it ended; this covers a waiter that raced with the join. */
  pthread_mutex_lock(&h->lock);
  h->reader_done = true;
  pc_wake(h);
  pthread_mutex_unlock(&h->lock);
  return true;
}

/*
 * pc_close() leaving the handle behind: the taskstats socket stays open (a reader that was
 * not joined may read it yet, and its fd number must not be reused under it), but what is
 * queued there (up to rcvbuf_bytes) is thrown away and the buffer shrunk to the kernel's
 * minimum, so that the socket holds next to nothing even should the deregistration have
 * failed. netlink has no shutdown() (EOPNOTSUPP). Reading alongside a reader is safe: each
 * datagram goes to one of them, into this stack byte or its own buffer.
 */
static void pc_ts_discard(struct pc_handle *h) {
  int least = 0; /* the kernel makes it its minimum */
  uint8_t byte;

  if (h->tsfd < 0)
    return;
  (void)setsockopt(h->tsfd, SOL_SOCKET, SO_RCVBUF, &least, sizeof(least));
  for (unsigned i = 0; i < PC_TS_DISCARD_MAX; i++) {
    if (recv(h->tsfd, &byte, sizeof(byte), MSG_DONTWAIT | MSG_TRUNC) < 0 && errno != EINTR &&
        errno != ENOBUFS)
      break; /* EAGAIN: empty */
  }
}

PC_EXPORT int pc_exec_bpf(pc_handle *h) {
  struct pc_bpf *b;
  int rc;

  if (!h)
    return -EINVAL;
  /* Without execs wanted, no entry would ever be taken: the ring would only fill. */
  if (h->reads || h->proc_elsewhere || !(h->mask & PC_EVENT_EXEC))
    return -EOPNOTSUPP;
  if (atomic_load(&h->bpf_offer))
    return -EALREADY;
  rc = pc_bpf_open(&b);
  if (rc < 0) {
    pc_set(&h->st.exec_bpf_error, (uint64_t)-rc);
    return rc;
  }
  pc_set(&h->st.exec_bpf_error, 0);
  atomic_store_explicit(&h->bpf_offer, b, memory_order_release);
  return 0;
}

PC_EXPORT int pc_close(pc_handle *h) {
  uint32_t op = PROC_CN_MCAST_IGNORE;
  bool joined;

  if (!h)
    return -EINVAL;
  joined = pc_join(h);
  (void)pc_send(h, &op, sizeof(op), h->nonce, h->nonce); /* best effort: close unsubscribes */
  if (h->xfd >= 0)
    (void)pc_send_on(h->xfd, 0, &op, sizeof(op), h->nonce, h->nonce);
  /* The kernel would drop a closed listener only when an exit finds it gone. Always, also
   * with a reader left behind: while the registration stands the kernel builds a message for
   * every exit on the host into a buffer nobody reads. The send shares nothing with a
   * reader: no buffer (the request is on this stack), only ts_seq, which no reader uses
   * after pc_open(), and a socket may be written while another thread reads it. */
  if (h->tsfd >= 0)
    (void)pc_ts_send(h, h->ts_family, 0, TASKSTATS_CMD_GET,
                     TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK, h->ts_cpus, strlen(h->ts_cpus) + 1);
  /* Detached in any case: a reader left behind is past its take (stuck in a /proc read). */
  pc_bpf_close(atomic_exchange(&h->bpf_offer, NULL));
  h->bpf = NULL;
  if (!joined || atomic_load(&h->left_behind) > 0) {
    pc_ts_discard(h);
    return 1; /* a stuck reader may still touch the handle: it stays, and so must the code */
  }
  pc_free(h);
  return 0;
}

/* ---- native clients (pc_cl_*): Unix-socket clients whose sockets the library owns ---- */
/*
 * Why: a socket in Deno's runtime is registered EPOLLIN|EPOLLOUT|EPOLLET, so every time a
 * client reads, the kernel's write-space callback wakes the JS thread for an EPOLLOUT nobody
 * asked for, and every write is an async op. Here the JS thread sends with a plain send()
 * through the FFI, and one small thread per listener waits in its own epoll for what JS must
 * hear of: a connection waiting (accepted here), a client that hung up (its input is read
 * and thrown away here), and EPOLLOUT only for a client whose last send found its socket
 * full. Each such notice is queued per slot and announced by one doorbell byte; JS fetches
 * them all with pc_cl_ready(). The slot table is allocated once, in pc_cl_open().
 */
#define PC_CL_MAX 65535u            /* slots: an id's index is its low 16 bits */
#define PC_CL_EV_LISTEN UINT64_MAX  /* epoll data of the listening socket */
#define PC_CL_EV_STOP (UINT64_MAX - 1)
#define PC_CL_READS 16              /* discard reads per wakeup before other clients' turn */
#define PC_CL_RETRY_MS 100          /* accept paused this long after EMFILE and the like */
/* Not EPOLLIN: clients have nothing to say, and one that floods its input would keep this
 * thread (at nice -20) busy. Unread input fills its socket and blocks the sender; a hang-up
 * still wakes (EPOLLRDHUP; EPOLLHUP and EPOLLERR always do), and what it sent is then read
 * and thrown away on the way to the end. */
#define PC_CL_IN EPOLLRDHUP

_Static_assert(PC_CL_MAX <= 0xFFFFu, "a slot index fits the low 16 bits of an id");

struct pc_cl_slot {
  int fd;          /* -1 when free */
  uint16_t gen;    /* the id's high 16 bits; bumped when the slot is freed, never 0 */
  uint8_t pending; /* PC_CL_* notices not fetched yet */
  bool queued;     /* in the ready FIFO */
  bool watching;   /* registered with the epoll (until it hangs up) */
  bool want_out;   /* EPOLLOUT asked for: the last send found the socket full */
};

struct pc_clients {
  pthread_mutex_t lock; /* everything below but the thread's own locals */
  pthread_t thread;
  bool started;
  int lfd;          /* the listening socket, -1 once pc_cl_stop_listen() */
  int ep;           /* the thread's epoll */
  int stop_fd;      /* eventfd: pc_cl_free() ends the thread */
  int bell_listen;  /* the doorbell's abstract listener, until pc_cl_bell_accept() */
  int bell;         /* one byte: notices wait for pc_cl_ready() */
  char bell_name[64];
  bool rung;        /* a byte was sent that no full pc_cl_ready() has answered yet */
  bool accepting;   /* the listener is in the epoll with EPOLLIN */
  bool paused;      /* accept failed (EMFILE...): retry after PC_CL_RETRY_MS */
  uint64_t retry_ns; /* while paused: when accepting resumes (CLOCK_MONOTONIC) */
  int accept_errno; /* a failed accept not reported yet (PC_CL_FAILED) */
  uint32_t cap, used;
  uint32_t *fifo;   /* cap entries: slots with notices, each at most once */
  uint32_t head, count;
  uint32_t *spare;  /* free slot indices, a stack */
  uint32_t nspare;
  struct pc_cl_slot *slots;
};

static uint32_t pc_cl_id(const struct pc_clients *c, uint32_t i) {
  return (uint32_t)c->slots[i].gen << 16 | i;
}

/* The open slot `id` names, or NULL (freed since, or never one). */
static struct pc_cl_slot *pc_cl_find(struct pc_clients *c, uint32_t id) {
  uint32_t i = id & 0xFFFFu;

  if (i >= c->cap || c->slots[i].fd < 0 || c->slots[i].gen != id >> 16)
    return NULL;
  return &c->slots[i];
}

static int pc_cl_watch(struct pc_clients *c, int op, uint32_t i, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.u64 = pc_cl_id(c, i)};

  return epoll_ctl(c->ep, op, c->slots[i].fd, &ev) < 0 ? -errno : 0;
}

/* Sends the doorbell byte unless one is outstanding; under the lock. */
static void pc_cl_ring(struct pc_clients *c) {
  const uint8_t ding = 1;

  if (c->rung || c->bell < 0)
    return;
  while (send(c->bell, &ding, 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno == EINTR)
    ;
  c->rung = true; /* a full socket already holds unanswered bytes: same thing */
}

static void pc_cl_note(struct pc_clients *c, uint32_t i, uint8_t what) {
  struct pc_cl_slot *s = &c->slots[i];

  s->pending |= what;
  if (!s->queued) {
    s->queued = true;
    c->fifo[(c->head + c->count++) % c->cap] = i;
  }
  pc_cl_ring(c);
}

static void pc_cl_listen_events(struct pc_clients *c, bool on) {
  struct epoll_event ev = {.events = on ? EPOLLIN : 0, .data.u64 = PC_CL_EV_LISTEN};

  if (c->lfd < 0 || c->accepting == on)
    return;
  if (epoll_ctl(c->ep, EPOLL_CTL_MOD, c->lfd, &ev) == 0)
    c->accepting = on;
}

/* Accepts what waits while slots are free; a full table stops listening until one frees. */
static void pc_cl_accept(struct pc_clients *c) {
  while (c->lfd >= 0) {
    uint32_t i;
    int fd;

    if (c->nspare == 0) {
      pc_cl_listen_events(c, false); /* they wait in the backlog */
      return;
    }
    fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno == EAGAIN)
        return;
      c->accept_errno = errno; /* EMFILE, ENFILE, ENOBUFS, ENOMEM: keep the clients there are */
      c->paused = true;
      c->retry_ns = pc_now_ns() + (uint64_t)PC_CL_RETRY_MS * 1000000u;
      pc_cl_listen_events(c, false);
      pc_cl_ring(c);
      return;
    }
    i = c->spare[--c->nspare];
    c->slots[i].fd = fd;
    c->slots[i].want_out = false;
    if (pc_cl_watch(c, EPOLL_CTL_ADD, i, PC_CL_IN) < 0) {
      close(fd);
      c->slots[i].fd = -1;
      c->spare[c->nspare++] = i;
      continue;
    }
    c->slots[i].watching = true;
    c->used++;
    pc_cl_note(c, i, PC_CL_NEW);
  }
}

/* Reads and throws away what a client sent; notices its hang-up (EOF, reset). */
static void pc_cl_on_client(struct pc_clients *c, uint64_t data, uint32_t events) {
  struct pc_cl_slot *s = pc_cl_find(c, (uint32_t)data);
  uint32_t i = (uint32_t)data & 0xFFFFu;
  bool gone = false;
  char buf[4096];

  if (s == NULL || !s->watching)
    return; /* closed or hung up since epoll_wait() returned */
  if ((events & EPOLLOUT) && s->want_out) {
    s->want_out = false;
    (void)pc_cl_watch(c, EPOLL_CTL_MOD, i, PC_CL_IN);
    pc_cl_note(c, i, PC_CL_WRITABLE);
  }
  if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
    return;
  for (unsigned n = 0; n < PC_CL_READS; n++) {
    ssize_t r = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);

    if (r > 0)
      continue;
    if (r < 0 && errno == EINTR)
      continue;
    gone = r == 0 || errno != EAGAIN;
    break;
  }
  if (!gone)
    return; /* level-triggered: more input comes back on the next wait */
  (void)epoll_ctl(c->ep, EPOLL_CTL_DEL, s->fd, NULL);
  s->watching = false;
  s->want_out = false;
  pc_cl_note(c, i, PC_CL_HUP);
}

static void *pc_cl_run(void *arg) {
  struct pc_clients *c = arg;
  struct epoll_event evs[64];
  bool stop = false;
  int timeout = -1; /* until c->retry_ns while accepting is paused; read under the lock */

  /* A full client socket waits for this thread's WRITABLE notice: under a storm that must
   * not queue behind the storm's processes. Not SCHED_FIFO: a client that floods its input
   * would then have this thread spin a CPU away. Fails quietly without privilege. */
  (void)setpriority(PRIO_PROCESS, (id_t)gettid(), -20);
  while (!stop) {
    int n = epoll_wait(c->ep, evs, 64, timeout);

    if (n < 0 && errno != EINTR)
      break; /* cannot happen with a valid epoll; pc_cl_free() still joins */
    pthread_mutex_lock(&c->lock);
    /* By the clock, not by a quiet epoll_wait: a client that sends something every few ms
     * (or hangs up, or drains) must not keep the listener paused for good. */
    if (c->paused && pc_now_ns() >= c->retry_ns) {
      c->paused = false;
      pc_cl_listen_events(c, true);
    }
    for (int k = 0; k < n; k++) {
      if (evs[k].data.u64 == PC_CL_EV_STOP)
        stop = true;
      else if (evs[k].data.u64 == PC_CL_EV_LISTEN)
        pc_cl_accept(c);
      else
        pc_cl_on_client(c, evs[k].data.u64, evs[k].events);
    }
    timeout = -1;
    if (c->paused) {
      uint64_t now = pc_now_ns();
      timeout = now >= c->retry_ns ? 0 : (int)((c->retry_ns - now + 999999u) / 1000000u);
    }
    pthread_mutex_unlock(&c->lock);
  }
  return NULL;
}

static void pc_cl_destroy(struct pc_clients *c) {
  if (c->slots) {
    for (uint32_t i = 0; i < c->cap; i++)
      if (c->slots[i].fd >= 0)
        close(c->slots[i].fd);
  }
  int fds[] = {c->lfd, c->ep, c->stop_fd, c->bell_listen, c->bell};
  for (size_t k = 0; k < sizeof(fds) / sizeof(fds[0]); k++)
    if (fds[k] >= 0)
      close(fds[k]);
  pthread_mutex_destroy(&c->lock);
  free(c->slots);
  free(c->fifo);
  free(c->spare);
  free(c);
}

static int pc_cl_bell_open(struct pc_clients *c) {
  return pc_doorbell_listen("procmonitor-cl", c, c->bell_name, sizeof(c->bell_name),
                            &c->bell_listen);
}

/* socket(), bind(), listen() at path; the epoll with the listener and the stop eventfd. */
static int pc_cl_sockets(struct pc_clients *c, const char *path, int backlog) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  struct epoll_event lev = {.events = EPOLLIN, .data.u64 = PC_CL_EV_LISTEN};
  struct epoll_event sev = {.events = EPOLLIN, .data.u64 = PC_CL_EV_STOP};
  size_t n = strlen(path);

  if (n == 0 || n >= sizeof(a.sun_path))
    return -ENAMETOOLONG;
  memcpy(a.sun_path, path, n + 1);
  c->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (c->lfd < 0)
    return -errno;
  if (bind(c->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(c->lfd, backlog) < 0)
    return -errno;
  c->ep = epoll_create1(EPOLL_CLOEXEC);
  c->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (c->ep < 0 || c->stop_fd < 0)
    return -errno;
  if (epoll_ctl(c->ep, EPOLL_CTL_ADD, c->lfd, &lev) < 0 ||
      epoll_ctl(c->ep, EPOLL_CTL_ADD, c->stop_fd, &sev) < 0)
    return -errno;
  c->accepting = true;
  return pc_cl_bell_open(c);
}

PC_EXPORT int pc_cl_open(const char *path, int32_t backlog, uint32_t cap, pc_clients **out) {
  struct pc_clients *c;
  sigset_t all, old;
  int rc;

  if (!path || !out || cap == 0 || cap > PC_CL_MAX || backlog <= 0)
    return -EINVAL;
  c = calloc(1, sizeof(*c));
  if (!c)
    return -ENOMEM;
  c->lfd = c->ep = c->stop_fd = c->bell_listen = c->bell = -1;
  pthread_mutex_init(&c->lock, NULL);
  c->cap = cap;
  c->slots = calloc(cap, sizeof(*c->slots));
  c->fifo = calloc(cap, sizeof(*c->fifo));
  c->spare = calloc(cap, sizeof(*c->spare));
  if (!c->slots || !c->fifo || !c->spare) {
    pc_cl_destroy(c);
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < cap; i++) {
    c->slots[i].fd = -1;
    c->slots[i].gen = 1;
    c->spare[i] = cap - 1 - i; /* slot 0 first */
  }
  c->nspare = cap;
  rc = pc_cl_sockets(c, path, backlog);
  if (rc < 0) {
    pc_cl_destroy(c); /* a name bound is left for the caller, who chose where */
    return rc;
  }
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = pthread_create(&c->thread, NULL, pc_cl_run, c);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    pc_cl_destroy(c);
    return -rc;
  }
  (void)pthread_setname_np(c->thread, "pm-clients"); /* for top -H and per-thread counts */
  c->started = true;
  *out = c;
  return 0;
}

PC_EXPORT int pc_cl_bell_name(pc_clients *c, char *buf, uint32_t cap) {
  if (!c || !buf)
    return -EINVAL;
  return pc_doorbell_name(c->bell_name, buf, cap);
}

PC_EXPORT int pc_cl_bell_accept(pc_clients *c) {
  int fd;

  if (!c)
    return -EINVAL;
  if (c->bell >= 0)
    return 0;
  fd = pc_doorbell_take(&c->bell_listen);
  if (fd < 0)
    return fd;
  pthread_mutex_lock(&c->lock);
  c->bell = fd;
  if (c->count > 0 || c->accept_errno != 0)
    pc_cl_ring(c);
  pthread_mutex_unlock(&c->lock);
  return 0;
}

PC_EXPORT int pc_cl_ready(pc_clients *c, uint32_t *out, uint32_t cap) {
  uint32_t k = 0;

  if (!c || !out || cap < 2)
    return -EINVAL;
  pthread_mutex_lock(&c->lock);
  if (c->accept_errno != 0) {
    out[k++] = (uint32_t)c->accept_errno;
    out[k++] = PC_CL_FAILED;
    c->accept_errno = 0;
  }
  while (c->count > 0 && k + 2 <= cap) {
    uint32_t i = c->fifo[c->head];
    struct pc_cl_slot *s = &c->slots[i];

    c->head = (c->head + 1) % c->cap;
    c->count--;
    s->queued = false;
    if (s->pending == 0 || s->fd < 0)
      continue; /* closed by JS since */
    out[k++] = pc_cl_id(c, i);
    out[k++] = s->pending;
    s->pending = 0;
  }
  if (c->count == 0)
    c->rung = false; /* all answered: the next notice rings again */
  pthread_mutex_unlock(&c->lock);
  return (int)(k / 2);
}

PC_EXPORT int pc_cl_send(pc_clients *c, uint32_t id, const uint8_t *buf, uint32_t len) {
  struct pc_cl_slot *s;
  ssize_t n;
  int rc;

  if (!c || (!buf && len > 0))
    return -EINVAL;
  if (len > INT32_MAX)
    len = INT32_MAX;
  pthread_mutex_lock(&c->lock);
  s = pc_cl_find(c, id);
  if (s == NULL) {
    rc = -EBADF;
  } else {
    do
      n = send(s->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    rc = n >= 0 ? (int)n : -errno;
    if (rc == -EWOULDBLOCK && s->watching && !s->want_out) {
      /* Level-triggered: a socket that drained meanwhile reports EPOLLOUT at once. */
      if (pc_cl_watch(c, EPOLL_CTL_MOD, id & 0xFFFFu, PC_CL_IN | EPOLLOUT) == 0)
        s->want_out = true;
    } else if (rc == -EWOULDBLOCK && !s->watching) {
      rc = -EPIPE; /* hung up: EPOLLOUT would never come */
    }
  }
  pthread_mutex_unlock(&c->lock);
  return rc;
}

PC_EXPORT int pc_cl_shutdown_write(pc_clients *c, uint32_t id) {
  struct pc_cl_slot *s;
  int rc = 0;

  if (!c)
    return -EINVAL;
  pthread_mutex_lock(&c->lock);
  s = pc_cl_find(c, id);
  if (s == NULL)
    rc = -EBADF;
  else if (shutdown(s->fd, SHUT_WR) < 0)
    rc = -errno;
  pthread_mutex_unlock(&c->lock);
  return rc;
}

PC_EXPORT int pc_cl_close(pc_clients *c, uint32_t id) {
  struct pc_cl_slot *s;
  uint32_t i = id & 0xFFFFu;

  if (!c)
    return -EINVAL;
  pthread_mutex_lock(&c->lock);
  s = pc_cl_find(c, id);
  if (s == NULL) {
    pthread_mutex_unlock(&c->lock);
    return -EBADF;
  }
  if (s->watching)
    (void)epoll_ctl(c->ep, EPOLL_CTL_DEL, s->fd, NULL);
  close(s->fd);
  s->fd = -1;
  s->watching = s->want_out = false;
  s->pending = 0; /* a FIFO entry left behind is skipped */
  s->gen = s->gen == 0xFFFFu ? 1 : s->gen + 1;
  c->spare[c->nspare++] = i;
  c->used--;
  if (!c->paused)
    pc_cl_listen_events(c, true); /* a full table stopped listening: a slot is free */
  pthread_mutex_unlock(&c->lock);
  return 0;
}

PC_EXPORT int pc_cl_clients(pc_clients *c) {
  int n;

  if (!c)
    return -EINVAL;
  pthread_mutex_lock(&c->lock);
  n = (int)c->used;
  pthread_mutex_unlock(&c->lock);
  return n;
}

PC_EXPORT int pc_cl_stop_listen(pc_clients *c) {
  if (!c)
    return -EINVAL;
  pthread_mutex_lock(&c->lock);
  if (c->lfd >= 0) {
    (void)epoll_ctl(c->ep, EPOLL_CTL_DEL, c->lfd, NULL);
    close(c->lfd);
    c->lfd = -1;
    c->accepting = c->paused = false;
  }
  pthread_mutex_unlock(&c->lock);
  return 0;
}

PC_EXPORT int pc_cl_free(pc_clients *c) {
  uint64_t one = 1;

  if (!c)
    return -EINVAL;
  if (c->started) {
    while (write(c->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
      ;
    pthread_join(c->thread, NULL);
  }
  pc_cl_destroy(c);
  return 0;
}

#ifdef PC_FUZZING
/* ---- test hooks (procconn_internal.h): the reader's parsing, fed without a socket ---- */

_Static_assert(PC_TEST_SLOT == PC_RECV_SLOT, "a test datagram is one receive slot at most");

int pc_test_open(const struct pc_test_options *o, pc_handle **out) {
  struct pc_handle *h;
  uint32_t mask;
  int rc;

  if (!o || !out || !o->proc_root || o->ring_bytes < PC_RECORD_HEAD_SIZE)
    return -EINVAL;
  mask = o->event_mask & PC_KERNEL_EVENTS;
  rc = pc_alloc(mask != 0 ? mask : PC_KERNEL_EVENTS, o->ring_bytes, true, &h);
  if (rc < 0)
    return rc;
  h->proc_dir = open(o->proc_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (h->proc_dir < 0) {
    rc = -errno;
    pc_free(h);
    return rc;
  }
  h->proc_prefix = "";
  if ((o->snapshot_reads & PC_READ_ENV) && !pc_env_names_ok(o->env_names)) {
    pc_free(h);
    return -EINVAL;
  }
  pc_set_reads(h, o->snapshot_reads, o->env_names);
  /* As pc_subscribe() leaves it: a filter is only installed for less than everything. */
  h->filter_ok = o->filtered;
  h->filtered = o->filtered && h->mask != PC_KERNEL_EVENTS;
  pc_set(&h->st.filtered, h->filtered ? 1 : 0);
  h->started = true;
  *out = h;
  return 0;
}

int pc_test_feed(pc_handle *h, const uint8_t *buf, size_t len) {
  if (!h || (!buf && len))
    return -EINVAL;
  if (len > PC_RECV_SLOT)
    return -EMSGSIZE; /* recvmmsg() cuts it (MSG_TRUNC) and pc_dispatch() skips it */
  if ((uintptr_t)buf % NLMSG_ALIGNTO)
    return -EINVAL; /* the receive slots are aligned */
  pc_parse(h, buf, len, pc_on_event);
  return 0;
}

int pc_test_overrun(pc_handle *h) {
  if (!h)
    return -EINVAL;
  pc_add(&h->st.enobufs, 1);
  pc_note_overrun(h);
  return 0;
}

int pc_test_drained(pc_handle *h) {
  if (!h)
    return -EINVAL;
  if (h->enobufs_pending)
    pc_settle_loss(h);
  return 0;
}

int pc_test_ack(pc_handle *h, const uint8_t *buf, size_t len, uint32_t ack, uint32_t *err) {
  if (!h || !err || (!buf && len) || (uintptr_t)buf % NLMSG_ALIGNTO)
    return -EINVAL;
  if (len > PC_RECV_SLOT)
    return -EMSGSIZE;
  h->hs_ack = ack;
  h->hs_done = false;
  h->hs_err = 0;
  pc_parse(h, buf, len, pc_on_ack);
  *err = h->hs_err;
  return h->hs_done ? 1 : 0;
}

_Static_assert(PC_TEST_TS_SLOT == PC_TS_SLOT, "a test taskstats datagram is one slot at most");

int pc_test_usage(pc_handle *h, const uint8_t *buf, size_t len, uint16_t family) {
  if (!h || (!buf && len))
    return -EINVAL;
  if (len > PC_TS_SLOT)
    return -EMSGSIZE; /* recvmmsg() cuts it (MSG_TRUNC) and pc_ts_drain() skips it */
  h->usage_on = true;
  h->ts_family = family;
  pc_parse_taskstats(buf, len, family, pc_usage_put, h);
  return 0;
}

int pc_test_ts_source(pc_handle *h, uint16_t family, pc_ts_source_fn fn, void *ctx) {
  if (!h || !fn || h->tsfd >= 0)
    return -EINVAL;
  /* Any fd will do: every read goes to fn. pc_free() closes it. */
  h->tsfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (h->tsfd < 0)
    return -errno;
  h->usage_on = true;
  h->ts_family = family;
  h->ts_fake = fn;
  h->ts_fake_ctx = ctx;
  return 0;
}

int pc_test_ts_idle(pc_handle *h) {
  if (!h || !h->ts_fake)
    return -EINVAL;
  return pc_ts_idle(h) ? 1 : 0;
}

size_t pc_test_env(const char names[PC_ENV_NAMES_MAX], const char *env, size_t len,
                   size_t split, char out[PC_ENV_MAX], bool *truncated) {
  struct pc_env_pick pick;
  bool done;

  pc_env_begin(&pick, names, out);
  split = split < len ? split : len;
  done = pc_env_feed(&pick, env, split);
  if (!done)
    done = pc_env_feed(&pick, env + split, len - split);
  len = pc_env_end(&pick, false);
  *truncated = pick.truncated;
  return len;
}

int pc_test_close(pc_handle *h) {
  if (!h)
    return -EINVAL;
  pc_free(h); /* no thread, no subscription */
  return 0;
}
#endif /* PC_FUZZING */
