// SPDX-License-Identifier: GPL-2.0
/*
 * exec_args.bpf.c - copies each exec's argument area, exe path, parent, euid and name at
 * the moment of the exec (the sched_process_exec tracepoint, in the exec'ing task), so the
 * reader need not race the process to /proc/PID: it reads these when it reads the
 * connector's exec, whenever that is. Built by clang -target bpf, relocated by libbpf
 * (CO-RE) against the running kernel's BTF: the structs below name only the fields used.
 * GPL: bpf_probe_read_* are GPL-only helpers.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

typedef __u16 uint16_t;
typedef __u32 uint32_t;
typedef __s32 int32_t;
typedef __u64 uint64_t;
#include "exec_bpf.h"

#define PAI __attribute__((preserve_access_index))

struct qstr {
  const unsigned char *name;
} PAI;
struct dentry {
  struct dentry *d_parent;
  struct qstr d_name;
} PAI;
struct vfsmount {
  struct dentry *mnt_root;
} PAI;
struct mount {
  struct mount *mnt_parent;
  struct dentry *mnt_mountpoint;
  struct vfsmount mnt;
} PAI;
struct path {
  struct vfsmount *mnt;
  struct dentry *dentry;
} PAI;
struct file {
  struct path f_path;
} PAI;
struct mm_struct {
  unsigned long arg_start;
  unsigned long arg_end;
  struct file *exe_file;
} PAI;
typedef struct {
  unsigned int val;
} kuid_t;
struct cred {
  kuid_t uid;
  kuid_t euid;
} PAI;
struct task_struct {
  int tgid;
  struct task_struct *real_parent;
  struct mm_struct *mm;
  const struct cred *cred;
} PAI;

char LICENSE[] SEC("license") = "GPL";

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, PC_BPF_RING_BYTES);
} pc_execs SEC(".maps");

/* One exec's entry is built here: too big for the 512-byte BPF stack. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct pc_bpf_exec);
} pc_scratch SEC(".maps");

/* Execs the ring had no room for (the reader reads /proc for those); in .bss, which the
 * loader maps. */
__u64 pc_bpf_dropped = 0;

/* The state of one exe path walk, passed to each bpf_loop() step. */
struct walk {
  struct pc_bpf_exec *e;
  struct dentry *d;
  struct vfsmount *vm;
  struct mount *m;
  __u32 off;
  int result; /* 0 while walking, 1 at the top, -1 when the path is left out */
};

/*
 * One step of the walk d_path() makes: from the dentry up to its mount's root, then on from
 * where that mount is mounted, up to the root of the task's mount tree. Each component is
 * written leaf first, NUL-terminated. Returns 1 (bpf_loop: stop) when the walk is over.
 */
static long walk_step(__u32 i, struct walk *w) {
  struct dentry *d = w->d, *parent;
  struct mount *m = w->m;
  struct vfsmount *vm = w->vm;
  long n;

  (void)i;
  if (d == BPF_CORE_READ(vm, mnt_root)) {
    struct mount *up = BPF_CORE_READ(m, mnt_parent);

    if (up == m) {
      w->result = w->off > 0 ? 1 : -1; /* the top of the tree: done */
      return 1;
    }
    w->d = BPF_CORE_READ(m, mnt_mountpoint);
    w->m = up;
    w->vm = (void *)up + bpf_core_field_offset(struct mount, mnt);
    return 0;
  }
  parent = BPF_CORE_READ(d, d_parent);
  if (parent == d) {
    w->result = -1; /* a filesystem's root that is no mount's: not reachable */
    return 1;
  }
  n = bpf_probe_read_kernel_str(w->e->data + (w->off & (PC_BPF_EXE_ROOM - 1)), PC_BPF_NAME_MAX,
                                BPF_CORE_READ(d, d_name.name));
  w->off += n > 1 ? (__u32)n : PC_BPF_EXE_ROOM;
  if (w->off > PC_BPF_EXE_MAX) {
    w->result = -1; /* unreadable, or longer than PC_BPF_EXE_MAX: left out, never cut */
    return 1;
  }
  w->d = parent;
  return 0;
}

/* The exe path's components into e->data: their bytes, or -1 when it is left out. */
static __always_inline int exe_path(struct pc_bpf_exec *e, struct file *f) {
  struct walk w = {.e = e, .d = BPF_CORE_READ(f, f_path.dentry), .vm = BPF_CORE_READ(f, f_path.mnt)};

  if (!f)
    return -1;
  w.m = (void *)w.vm - bpf_core_field_offset(struct mount, mnt);
  bpf_loop(PC_BPF_DEPTH, walk_step, &w, 0);
  return w.result == 1 ? (int)(w.off & (PC_BPF_EXE_ROOM - 1)) : -1;
}

SEC("raw_tracepoint/sched_process_exec")
int pc_on_exec(struct bpf_raw_tracepoint_args *ctx) {
  struct task_struct *t = (void *)ctx->args[0];
  __u32 zero = 0, tgid = (__u32)BPF_CORE_READ(t, tgid);
  struct pc_bpf_exec *e;
  struct mm_struct *mm;
  unsigned long start, end, len;
  int exe;

  e = bpf_map_lookup_elem(&pc_scratch, &zero);
  if (!e)
    return 0;
  e->ktime_ns = bpf_ktime_get_ns();
  e->pid = tgid;
  e->ppid = BPF_CORE_READ(t, real_parent, tgid);
  e->euid = BPF_CORE_READ(t, cred, euid.val);
  e->ruid = BPF_CORE_READ(t, cred, uid.val);
  e->flags = 0;
  bpf_get_current_comm(e->comm, sizeof(e->comm));
  mm = BPF_CORE_READ(t, mm);
  exe = exe_path(e, BPF_CORE_READ(mm, exe_file));
  if (exe < 0) {
    e->flags |= PC_BPF_F_NO_EXE;
    exe = 0;
  }
  e->exe_len = (__u16)exe;
  start = BPF_CORE_READ(mm, arg_start);
  end = BPF_CORE_READ(mm, arg_end);
  len = end > start ? end - start : 0;
  if (len > PC_BPF_ARGS_MAX) {
    e->flags |= PC_BPF_F_TRUNCATED;
    len = PC_BPF_ARGS_MAX;
  }
  exe &= PC_BPF_EXE_ROOM - 1;
  if (bpf_probe_read_user(e->data + exe, (__u32)len, (void *)start) < 0) {
    e->flags |= PC_BPF_F_NO_ARGS;
    len = 0;
  }
  e->args_len = (__u16)len;
  if (bpf_ringbuf_output(&pc_execs, e, PC_BPF_HEAD + exe + len, 0) < 0)
    __sync_fetch_and_add(&pc_bpf_dropped, 1);
  return 0;
}
