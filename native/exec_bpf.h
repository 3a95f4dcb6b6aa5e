/*
 * exec_bpf.h - what the exec BPF program (exec_args.bpf.c) hands the reader for each exec,
 * shared by the program (built with clang -target bpf) and the library. Fixed-width types
 * only: both sides see the same layout.
 */
#ifndef PC_EXEC_BPF_H
#define PC_EXEC_BPF_H

#ifndef __bpf__
#include <stdint.h>
#endif

#define PC_BPF_ARGS_MAX 4096u /* = PC_CMDLINE_MAX: bytes of the argument area kept */
#define PC_BPF_EXE_MAX 1024u  /* = PC_EXE_MAX: a longer path is left out, never cut */
#define PC_BPF_NAME_MAX 256u  /* one path component, its NUL included */
#define PC_BPF_EXE_ROOM 2048u /* the exe region: PC_BPF_EXE_MAX plus a whole last component */
/* The ring the program writes to (a power of 2). Its pages are all resident in the reader's
 * process, twice (the data is mapped twice): 256 KiB holds 1,500-2,500 execs of slack. */
#define PC_BPF_RING_BYTES (256u << 10)
#define PC_BPF_DEPTH 48       /* path components and mount crossings walked, at most */

#define PC_BPF_F_TRUNCATED 0x1u /* the argument area was longer than PC_BPF_ARGS_MAX */
#define PC_BPF_F_NO_EXE 0x2u    /* no exe path: none, too deep, or longer than PC_BPF_EXE_MAX */
#define PC_BPF_F_NO_ARGS 0x4u   /* the argument area could not be read */

/*
 * One exec, written by the sched_process_exec tracepoint in the exec'ing task, before the
 * kernel queues the connector's exec message (fs/exec.c, exec_binprm()). data[] holds the
 * exe path's components leaf first, each NUL-terminated (exe_len bytes), then args_len
 * bytes of the argument area, NUL-separated as /proc/PID/cmdline gives it. Only
 * PC_BPF_HEAD + exe_len + args_len bytes are sent.
 */
struct pc_bpf_exec {
  uint64_t ktime_ns; /*  0: CLOCK_MONOTONIC at the tracepoint */
  uint32_t pid;      /*  8: the process (thread group) id, as the connector names it */
  int32_t ppid;      /* 12: the real parent's process id */
  uint32_t euid;     /* 16 */
  uint32_t flags;    /* 20: PC_BPF_F_* */
  uint16_t exe_len;  /* 24 */
  uint16_t args_len; /* 26 */
  uint32_t ruid;     /* 28: the real uid (exec keeps it) */
  char comm[16];     /* 32 */
  char data[PC_BPF_EXE_ROOM + PC_BPF_ARGS_MAX]; /* 48 */
};

#define PC_BPF_HEAD 48u

#ifndef __bpf__
/* The library's side (exec_bpf.c); the reader thread alone calls these. */
struct pc_bpf;

/*
 * Loads and attaches the program: 0, or -errno: -ELIBACC (no libbpf.so.1), -EPERM (no
 * CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN), -ENOENT or -ESRCH (no kernel BTF, or no such
 * tracepoint), -ENOSYS (built without BPF), others from the bpf() calls. *out only on 0.
 */
int pc_bpf_open(struct pc_bpf **out);
void pc_bpf_close(struct pc_bpf *b);

/*
 * The entry of pid's exec that the connector stamped event_ns: the latest one of pid
 * written before it. NULL when there is none (the ring was full, or the program did not
 * see it). The entry (*len bytes, at least PC_BPF_HEAD) stays valid until the next call.
 */
const struct pc_bpf_exec *pc_bpf_take(struct pc_bpf *b, uint32_t pid, uint64_t event_ns,
                                      uint32_t *len);

/* Execs the program had no ring room for, since it was loaded. */
uint64_t pc_bpf_dropped(const struct pc_bpf *b);
#endif

#endif
