/*
 * fuzz_datagram.c - libFuzzer target: kernel datagrams -> records in the ring -> records
 * decoded back and checked.
 *
 * The input is one or more datagrams as the reader receives them from the proc connector
 * (netlink header, cn_msg, proc_event; several messages may share a datagram), separated
 * by the 4 bytes "PCDG" when there are several. A real captured datagram is thus an input
 * as it is (native/fuzz/corpus/datagram/).
 *
 * Each input runs through two test handles (procconn_internal.h):
 *  A. every event, no kernel filter, a 64 KiB ring emptied after each datagram;
 *  B. an event mask, a filter flag, overruns and a ring of two or three records, all chosen
 *     from a hash of the input, the ring emptied one pc_take() of the smallest buffer at a
 *     time, so that it fills, wraps and loses.
 * The exec snapshot reads a stand-in /proc made once at start-up, with processes whose
 * stat, cmdline and exe are known: the records for them must say exactly that.
 *
 * Every record that pc_take() hands out is checked against procconn.h's promises (what
 * lib/record.ts relies on), and the LOST counts against pc_stats(). A broken promise
 * aborts, which libFuzzer reports as a crash.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* memmem, mkdtemp, nftw */
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../procconn.h"
#include "../procconn_internal.h"

#define FUZZ_NAME "fuzz_datagram"
#include "fuzz_check.h"

#define SEP "PCDG"
#define SEP_LEN 4u
#define NO_CPU 0xFFFFFFFFu
#define KERNEL_KINDS                                                                         \
  (PC_EVENT_FORK | PC_EVENT_EXEC | PC_EVENT_UID | PC_EVENT_GID | PC_EVENT_SID |             \
   PC_EVENT_PTRACE | PC_EVENT_COMM | PC_EVENT_COREDUMP | PC_EVENT_EXIT)
#define KNOWN_FLAGS \
  (PC_F_SNAPSHOT | PC_F_CMDLINE_TRUNCATED | PC_F_GONE | PC_F_NO_EXE | PC_F_ENV_TRUNCATED)

/* ---- the stand-in /proc ----------------------------------------------------------------- */

/* What the snapshot of each stand-in process must come out as. */
struct fake {
  int32_t pid;
  const char *stat;    /* NULL: no stat file */
  size_t cmdline_len;  /* bytes of cmdline written; SIZE_MAX: no cmdline file */
  const char *cmdline; /* NULL: cmdline_len bytes of a pattern */
  size_t exe_len;      /* length of the exe link's target; 0: no link */
  /* expected */
  uint32_t flags;
  int32_t ppid;
  const char *comm;
  bool maybe_reused; /* its start time is late: the event's time decides */
};

static const char OK_CMDLINE[] = "/bin/sh\0-c\0exit 0\0pcfuzz-marker\0";

/* Field 22 (starttime) 0: started at boot, before any event. */
#define STAT_TAIL "S 1 4001 4001 0 -1 4194560 120 0 0 0 0 0 0 0 20 0 1 0 0 2342912 171 " \
                  "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"

static const struct fake FAKES[] = {
    {4001, "4001 (sh) " STAT_TAIL, sizeof(OK_CMDLINE) - 1, OK_CMDLINE, 13, PC_F_SNAPSHOT, 1,
     "sh", false},
    /* comm with ')' and spaces; 5000-byte cmdline (cut at 4096); exe target too long */
    {4002, "4002 (we) ird (n) me) R 4001 4002 4001 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 0 1 1\n",
     5000, NULL, PC_EXE_MAX + 1, PC_F_SNAPSHOT | PC_F_CMDLINE_TRUNCATED | PC_F_NO_EXE, 4001,
     "we) ird (n) me", false},
    /* a zombie: empty cmdline, but stat and exe still there */
    {4003, "4003 (zomb) Z 4001 4003 4001 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 0 0 0\n", 0, NULL,
     9, PC_F_SNAPSHOT | PC_F_GONE, 4001, "zomb", false},
    /* started 10^9 ticks (115 days at 100 Hz) after boot: a newer process than the exec,
     * unless the event is later still */
    {4004, "4004 (new) S 1 4004 4004 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1000000000 0 0\n", 6,
     "late\0\0", 9, PC_F_SNAPSHOT, 1, "new", true},
    /* no stat: cannot be confirmed */
    {4005, NULL, 4, "abc\0", 9, PC_F_SNAPSHOT | PC_F_GONE | PC_F_NO_EXE, -1, "", false},
    /* a stat cut before its ppid */
    {4006, "4006 (cut", 4, "abc\0", 9, PC_F_SNAPSHOT | PC_F_GONE | PC_F_NO_EXE, -1, "",
     false},
    /* a 15-byte comm, the most the kernel keeps; no cmdline file */
    {4007, "4007 (123456789012345) S 77 4007 4007 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 0 0 0\n",
     SIZE_MAX, NULL, 1, PC_F_SNAPSHOT | PC_F_GONE, 77, "123456789012345", false},
};
#define NFAKES (sizeof(FAKES) / sizeof(FAKES[0]))

static char proc_root[64];
static uid_t my_euid;

/* What 4001 also has for the snapshot's extra reads (PC_READ_*), and what they must give. */
#define FAKE_CWD "/pcfuzz/cwd"
static const char FAKE_CGROUP[] = "12:pids:/\n9:name=systemd:/system.slice/pcfuzz.service\n0::/\n";
#define FAKE_CGROUP_PATH "/system.slice/pcfuzz.service"
static const char FAKE_ENVIRON[] = "A=1\0PCFUZZ=yes\0B=2\0PCFUZZ=second\0";
static const char ENV_NAMES[PC_ENV_NAMES_MAX] = "PCFUZZ\0LANG\0";
#define FAKE_ENV_PICKED "PCFUZZ=yes"
static uint32_t cur_reads; /* the reads of the handle whose records are being checked */

static void pattern(char *buf, size_t len, uint32_t seed) {
  for (size_t i = 0; i < len; i++)
    buf[i] = (char)((i * 7 + seed) % 251 == 0 ? 0 : 'a' + (i * 13 + seed) % 26);
}

static void write_file(const char *path, const char *bytes, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

  CHECK(fd >= 0);
  CHECK(write(fd, bytes, len) == (ssize_t)len);
  close(fd);
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void remove_proc_root(void) {
  nftw(proc_root, remove_one, 8, FTW_DEPTH | FTW_PHYS);
}

/* The path of `name` in 4001's stand-in directory, in buf. */
static char *path_4001(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "%s/4001/%s", proc_root, name);
  return buf;
}

static void make_proc_root(void) {
  static char big[8192];

  strcpy(proc_root, "/tmp/pcfuzz-proc-XXXXXX");
  CHECK(mkdtemp(proc_root) != NULL);
  atexit(remove_proc_root);
  my_euid = geteuid();
  for (size_t i = 0; i < NFAKES; i++) {
    const struct fake *f = &FAKES[i];
    char dir[128], path[160];

    snprintf(dir, sizeof(dir), "%s/%d", proc_root, (int)f->pid);
    CHECK(mkdir(dir, 0755) == 0);
    if (f->stat) {
      snprintf(path, sizeof(path), "%s/stat", dir);
      write_file(path, f->stat, strlen(f->stat));
    }
    if (f->cmdline_len != SIZE_MAX) {
      snprintf(path, sizeof(path), "%s/cmdline", dir);
      if (f->cmdline) {
        write_file(path, f->cmdline, f->cmdline_len);
      } else {
        pattern(big, f->cmdline_len, (uint32_t)f->pid);
        write_file(path, big, f->cmdline_len);
      }
    }
    if (f->exe_len) {
      snprintf(path, sizeof(path), "%s/exe", dir);
      memset(big, 0, sizeof(big));
      big[0] = '/';
      pattern(big + 1, f->exe_len - 1, (uint32_t)f->pid + 1);
      for (size_t j = 1; j < f->exe_len; j++)
        if (big[j] == 0)
          big[j] = '/';
      CHECK(symlink(big, path) == 0);
    }
  }
  CHECK(symlink(FAKE_CWD, path_4001(big, sizeof(big), "cwd")) == 0);
  write_file(path_4001(big, sizeof(big), "cgroup"), FAKE_CGROUP, sizeof(FAKE_CGROUP) - 1);
  write_file(path_4001(big, sizeof(big), "environ"), FAKE_ENVIRON, sizeof(FAKE_ENVIRON) - 1);
}

static const struct fake *find_fake(int32_t pid) {
  for (size_t i = 0; i < NFAKES; i++)
    if (FAKES[i].pid == pid)
      return &FAKES[i];
  return NULL;
}

/* ---- checking what comes out ------------------------------------------------------------ */

struct tally {
  uint32_t mask;
  uint64_t records;     /* event records (not LOST) */
  uint64_t lost_kernel; /* sum of LOST kernel counts */
  uint64_t lost_buffer;
  bool kernel_saturated; /* a LOST count was UINT32_MAX: the sum is a lower bound */
  uint64_t gone;
};

static bool wanted(uint32_t mask, uint32_t what, uint32_t exit_code) {
  if ((what & KERNEL_KINDS) == 0 || (what & (what - 1)) != 0)
    return false;
  if (mask == (KERNEL_KINDS | PC_EVENT_NONZERO_EXIT))
    return true;
  if (what == PC_EVENT_EXIT && (mask & PC_EVENT_NONZERO_EXIT) && exit_code != 0)
    return true;
  return (mask & what) != 0;
}

/* The extra reads' bytes at x: exactly 4001's when `has` and asked for, else nothing. */
static void check_extras(const struct pc_record *r, const uint8_t *x, bool has) {
  bool cwd = has && (cur_reads & PC_READ_CWD), env = has && (cur_reads & PC_READ_ENV),
       cgroup = has && (cur_reads & PC_READ_CGROUP);

  CHECK(r->reserved == 0);
  CHECK(r->cwd_len == (cwd ? strlen(FAKE_CWD) : 0));
  CHECK(memcmp(x, FAKE_CWD, r->cwd_len) == 0);
  x += r->cwd_len;
  CHECK(r->env_len == (env ? sizeof(FAKE_ENV_PICKED) : 0));
  CHECK(memcmp(x, FAKE_ENV_PICKED, r->env_len) == 0); /* its NUL included */
  x += r->env_len;
  CHECK(r->cgroup_len == (cgroup ? strlen(FAKE_CGROUP_PATH) : 0));
  CHECK(memcmp(x, FAKE_CGROUP_PATH, r->cgroup_len) == 0);
  CHECK(!(r->flags & PC_F_ENV_TRUNCATED));
}

static void check_snapshot(const struct pc_record *r, const uint8_t *rec) {
  const uint8_t *cmdline = rec + PC_RECORD_SNAPSHOT_SIZE;
  const uint8_t *exe = cmdline + r->cmdline_len;
  uint32_t end = PC_RECORD_SNAPSHOT_SIZE + r->cmdline_len + r->exe_len + r->cwd_len +
                 r->env_len + r->cgroup_len;
  const struct fake *f = find_fake((int32_t)r->data[1]);
  size_t comm_len = strnlen(r->comm, sizeof(r->comm));

  CHECK(r->flags & PC_F_SNAPSHOT);
  CHECK(r->cmdline_len <= PC_CMDLINE_MAX && r->exe_len <= PC_EXE_MAX);
  CHECK(r->size == ((end + 7u) & ~7u));
  for (uint32_t i = end; i < r->size; i++)
    CHECK(rec[i] == 0); /* padding */
  CHECK((r->exe_len == 0) == ((r->flags & PC_F_NO_EXE) != 0));
  CHECK(!(r->flags & PC_F_CMDLINE_TRUNCATED) || r->cmdline_len == PC_CMDLINE_MAX);
  CHECK(!(r->flags & PC_F_GONE) || r->cmdline_len == 0);
  CHECK(r->ruid == 0xFFFFFFFFu); /* exec keeps the real uid: never read */
  CHECK(comm_len < sizeof(r->comm));
  for (size_t i = comm_len; i < sizeof(r->comm); i++)
    CHECK(r->comm[i] == 0);
  CHECK(r->ppid >= -1);
  for (uint32_t i = 0; i < r->exe_len; i++)
    CHECK(exe[i] != 0); /* a path, no NUL */

  if (f && f->maybe_reused && (r->flags & PC_F_GONE)) {
    /* Seen as a newer process than the event: nothing of it may show. */
    CHECK(r->flags == (PC_F_SNAPSHOT | PC_F_GONE | PC_F_NO_EXE));
    CHECK(r->ppid == -1 && comm_len == 0 && r->euid == 0xFFFFFFFFu);
    return;
  }
  if (!f) {
    /* No such process in the stand-in /proc: gone, nothing known. */
    CHECK(r->flags == (PC_F_SNAPSHOT | PC_F_GONE | PC_F_NO_EXE));
    CHECK(r->ppid == -1 && comm_len == 0 && r->euid == 0xFFFFFFFFu);
    CHECK(r->cmdline_len == 0 && r->exe_len == 0);
    check_extras(r, exe, false);
    return;
  }
  CHECK(r->flags == f->flags);
  CHECK(r->ppid == f->ppid);
  CHECK(strcmp(r->comm, f->comm) == 0);
  if (f->ppid >= 0)
    CHECK(r->euid == (uint32_t)my_euid); /* the owner of the stand-in's directory */
  else
    CHECK(r->euid == 0xFFFFFFFFu);
  if (!(r->flags & PC_F_GONE)) {
    char want[PC_CMDLINE_MAX];
    size_t n = f->cmdline_len < PC_CMDLINE_MAX ? f->cmdline_len : PC_CMDLINE_MAX;

    if (f->cmdline)
      memcpy(want, f->cmdline, n);
    else
      pattern(want, n, (uint32_t)f->pid);
    CHECK(r->cmdline_len == n && memcmp(cmdline, want, n) == 0);
  }
  if (r->exe_len)
    CHECK(r->exe_len == f->exe_len && exe[0] == '/');
  check_extras(r, exe + r->exe_len, f->pid == 4001 && !(r->flags & PC_F_GONE));
}

/* Checks one batch from pc_take() record by record. */
static void check_batch(const uint8_t *buf, size_t len, struct tally *t) {
  size_t off = 0;

  CHECK(len % 8 == 0);
  while (off < len) {
    struct pc_record r;

    CHECK(len - off >= PC_RECORD_HEAD_SIZE);
    memset(&r, 0, sizeof(r));
    memcpy(&r, buf + off, PC_RECORD_HEAD_SIZE);
    CHECK(r.size >= PC_RECORD_HEAD_SIZE && r.size % 8 == 0 && r.size <= PC_RECORD_MAX);
    CHECK(r.size <= len - off);
    CHECK((r.flags & ~KNOWN_FLAGS) == 0);
    if (r.what == PC_EVENT_LOST) {
      CHECK(r.size == PC_RECORD_HEAD_SIZE && r.flags == 0);
      CHECK(r.data[1] >= 1);
      if (r.data[0] == PC_LOST_KERNEL) {
        t->lost_kernel += r.data[1];
        t->kernel_saturated |= r.data[1] == UINT32_MAX;
      } else {
        CHECK(r.data[0] == PC_LOST_BUFFER);
        CHECK(r.cpu == NO_CPU);
        t->lost_buffer += r.data[1];
      }
    } else {
      CHECK(wanted(t->mask, r.what, r.data[2]));
      t->records++;
      if (r.what == PC_EVENT_EXEC) {
        CHECK(r.size >= PC_RECORD_SNAPSHOT_SIZE);
        memcpy(&r, buf + off, PC_RECORD_SNAPSHOT_SIZE);
        check_snapshot(&r, buf + off);
        t->gone += (r.flags & PC_F_GONE) != 0;
      } else {
        CHECK(r.size == PC_RECORD_HEAD_SIZE && r.flags == 0);
      }
    }
    off += r.size;
  }
}

static uint8_t batch[PC_RECORD_MAX * 8];

/* One pc_take(); returns the bytes it gave. */
static int take(pc_handle *h, uint32_t cap, struct tally *t) {
  int n = pc_take(h, batch, cap);

  CHECK(n >= 0 && (uint32_t)n <= cap);
  check_batch(batch, (size_t)n, t);
  return n;
}

static void take_all(pc_handle *h, struct tally *t) {
  /* Losses that waited for room are put in when the ring runs empty: the next call has them. */
  for (int i = 0; i < 1000; i++)
    if (take(h, sizeof(batch), t) == 0)
      return;
  CHECK(!"the ring never ran empty");
}

/* ---- running an input ------------------------------------------------------------------- */

struct config {
  uint32_t mask;
  uint32_t ring;
  bool filtered;
  uint32_t overruns; /* bit i % 32: an ENOBUFS before datagram i */
  bool trickle;      /* take one smallest batch after each datagram, not all */
  uint32_t reads;    /* PC_READ_*: the snapshot's extra reads */
};

static uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t x = 0xcbf29ce484222325u;

  for (size_t i = 0; i < n; i++)
    x = (x ^ p[i]) * 0x100000001b3u;
  return x;
}

static void feed(pc_handle *h, const uint8_t *p, size_t n) {
  /* An exact-size copy: reading past the datagram is an ASan error, not stale bytes. */
  uint8_t *copy = malloc(n ? n : 1);
  int rc;

  CHECK(copy != NULL);
  memcpy(copy, p, n);
  rc = pc_test_feed(h, copy, n);
  CHECK(n > PC_TEST_SLOT ? rc == -EMSGSIZE : rc == 0);
  free(copy);
}

static void ack_walk(pc_handle *h, const uint8_t *p, size_t n) {
  uint8_t *copy;
  uint32_t ack = 0, err = 0;
  int rc;

  if (n > PC_TEST_SLOT)
    return;
  if (n >= 32)
    memcpy(&ack, p + 28, sizeof(ack)); /* the first cn_msg's ack: the one we would await */
  copy = malloc(n ? n : 1);
  CHECK(copy != NULL);
  memcpy(copy, p, n);
  rc = pc_test_ack(h, copy, n, ack, &err);
  CHECK(rc == 0 || rc == 1);
  free(copy);
}

static void run(const uint8_t *data, size_t size, const struct config *c) {
  struct pc_test_options o = {.proc_root = proc_root,
                              .event_mask = c->mask,
                              .ring_bytes = c->ring,
                              .filtered = c->filtered,
                              .snapshot_reads = c->reads,
                              .env_names = ENV_NAMES};
  struct tally t = {0};
  struct pc_stats st;
  pc_handle *h;
  size_t off = 0;
  unsigned i = 0;

  CHECK(pc_test_open(&o, &h) == 0);
  cur_reads = c->reads;
  t.mask = c->mask & (KERNEL_KINDS | PC_EVENT_NONZERO_EXIT);
  if (t.mask == 0)
    t.mask = KERNEL_KINDS | PC_EVENT_NONZERO_EXIT;
  for (;;) {
    const uint8_t *sep = memmem(data + off, size - off, SEP, SEP_LEN);
    size_t n = sep ? (size_t)(sep - (data + off)) : size - off;

    if (c->overruns >> (i % 32) & 1)
      CHECK(pc_test_overrun(h) == 0);
    if (!c->trickle)
      ack_walk(h, data + off, n);
    feed(h, data + off, n);
    if (c->trickle)
      take(h, PC_RECORD_MAX, &t);
    else
      take_all(h, &t);
    i++;
    if (!sep)
      break;
    off += n + SEP_LEN;
  }
  CHECK(pc_test_drained(h) == 0);
  take_all(h, &t);

  CHECK(pc_stats(h, &st) == 0);
  CHECK(st.filtered == (c->filtered && t.mask != (KERNEL_KINDS | PC_EVENT_NONZERO_EXIT)));
  CHECK(t.lost_buffer == st.ring_lost);
  if (t.kernel_saturated)
    CHECK(t.lost_kernel <= st.kernel_lost);
  else
    CHECK(t.lost_kernel == st.kernel_lost);
  CHECK(t.records + st.ring_lost <= st.events);
  CHECK(t.gone <= st.exec_gone);
  CHECK(st.exec_reused <= st.exec_gone);
  CHECK(st.ring_high <= c->ring);
  CHECK(pc_test_close(h) == 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  make_proc_root();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint64_t x = fnv1a(data, size);
  struct config a = {.mask = 0, .ring = 64u << 10, .filtered = false, .overruns = 0,
                     .trickle = false, .reads = PC_READ_CWD | PC_READ_CGROUP | PC_READ_ENV};
  struct config b = {
      .mask = (x & 3) == 0 ? 0 : (uint32_t)(x >> 8) & (KERNEL_KINDS | PC_EVENT_NONZERO_EXIT),
      /* two or three of the largest records; a whole number of 8-byte words */
      .ring = (2u * PC_RECORD_MAX + (uint32_t)(x >> 40) % PC_RECORD_MAX) & ~7u,
      .filtered = (x >> 2) & 1,
      .overruns = (uint32_t)(x >> 16) & (uint32_t)(x >> 48) & (uint32_t)(x >> 32),
      .trickle = true,
      .reads = (uint32_t)(x >> 5) & (PC_READ_CWD | PC_READ_CGROUP | PC_READ_ENV)};

  run(data, size, &a);
  run(data, size, &b);
  return 0;
}
