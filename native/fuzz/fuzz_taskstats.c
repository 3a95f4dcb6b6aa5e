/*
 * fuzz_taskstats.c - libFuzzer target for exit resource usage: pc_parse_taskstats() and
 * pc_parse_reply(), the taskstats socket's parsers, and the join of usage to exits.
 *
 * Each input is used twice:
 *  1. as one datagram from the taskstats socket, in a buffer of exactly its size (reading
 *     past it is an ASan error). Both parsers walk it; every usage found has a pid and
 *     PC_F_USAGE. Then a test handle gets it (pc_test_usage) and an exit for each pid found:
 *     an exit record that comes out with PC_F_USAGE is exactly PC_RECORD_USAGE_SIZE long;
 *  2. as the choices for a message as the kernel sends it at a task's exit (an optional
 *     padding attribute, AGGR_PID with the pid and a struct taskstats of some version and
 *     length, an optional AGGR_TGID). Parsed, it must give back exactly the values put in
 *     when the version is 4 or later and the struct long enough, nothing otherwise; joined,
 *     the exit of that pid and exit code must carry them, an exit of another pid nothing
 *     (counted in usage_missing);
 *  3. as the shape of an overrun's backlog on a stand-in taskstats socket (see backlog()).
 * The seed corpus (native/fuzz/corpus/taskstats/) holds messages captured from this kernel.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <linux/acct.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/taskstats.h>

#include "../procconn.h"
#include "../procconn_internal.h"

#define FUZZ_NAME "fuzz_taskstats"
#include "fuzz_check.h"
#include "fuzz_source.h"

#define FAMILY 0x1c /* any id will do: the socket learns it from the controller */
#define MAX_FOUND 64

struct found {
  unsigned n;
  uint32_t pid[MAX_FOUND], code[MAX_FOUND], flags[MAX_FOUND];
  struct pc_usage u[MAX_FOUND];
};

static void collect(void *ctx, uint32_t pid, uint32_t exit_code, uint32_t flags,
                    const struct pc_usage *u) {
  struct found *f = ctx;

  CHECK(pid != 0);
  CHECK(flags & PC_F_USAGE);
  CHECK((flags & ~(uint32_t)(PC_F_USAGE | PC_F_USAGE_LAST)) == 0);
  if (f->n < MAX_FOUND) {
    f->pid[f->n] = pid;
    f->code[f->n] = exit_code;
    f->flags[f->n] = flags;
    f->u[f->n] = *u;
    f->n++;
  }
}

/* A connector exit of pid, as the reader receives it; seq follows the handle's last. */
static size_t exit_datagram(uint8_t *buf, uint32_t pid, uint32_t code, uint32_t seq) {
  struct nlmsghdr nh = {0};
  struct cn_msg cn = {0};
  struct proc_event ev;
  size_t len = NLMSG_LENGTH(sizeof(cn) + sizeof(ev));

  memset(&ev, 0, sizeof(ev));
  nh.nlmsg_len = (uint32_t)len;
  nh.nlmsg_type = NLMSG_DONE;
  cn.id.idx = CN_IDX_PROC;
  cn.id.val = CN_VAL_PROC;
  cn.seq = seq;
  cn.len = sizeof(ev);
  ev.what = PROC_EVENT_EXIT;
  ev.timestamp_ns = 1000u + seq;
  ev.event_data.exit.process_pid = (int)pid;
  ev.event_data.exit.process_tgid = (int)pid;
  ev.event_data.exit.exit_code = code;
  ev.event_data.exit.exit_signal = 17;
  memcpy(buf, &nh, sizeof(nh));
  memcpy(buf + NLMSG_HDRLEN, &cn, sizeof(cn));
  memcpy(buf + NLMSG_HDRLEN + sizeof(cn), &ev, sizeof(ev));
  return len;
}

/*
 * Feeds an exit of each pid to h and checks the exit records that come out: with usage,
 * 104 bytes and, when `want` is given, exactly want's values for its pid.
 */
static void exits(pc_handle *h, const uint32_t *pid, const uint32_t *code, unsigned n,
                  const struct found *want, unsigned *with_usage) {
  static uint64_t dgram[64], out[(PC_RECORD_MAX + 7) / 8 * 4];
  uint8_t *o = (uint8_t *)out;

  *with_usage = 0;
  for (unsigned i = 0; i < n; i++) {
    size_t len = exit_datagram((uint8_t *)dgram, pid[i], code[i], i + 1);

    CHECK(pc_test_feed(h, (const uint8_t *)dgram, len) == 0);
  }
  for (;;) {
    int got = pc_take(h, o, sizeof(out));

    CHECK(got >= 0);
    if (got == 0)
      break;
    for (int off = 0; off < got;) {
      const struct pc_record *r = (const struct pc_record *)(const void *)(o + off);

      CHECK(r->size >= PC_RECORD_HEAD_SIZE && r->size % 8 == 0);
      if (r->what == PC_EVENT_EXIT && (r->flags & PC_F_USAGE)) {
        struct pc_usage u;

        CHECK(r->size == PC_RECORD_USAGE_SIZE);
        memcpy(&u, o + off + PC_RECORD_HEAD_SIZE, sizeof(u));
        for (unsigned k = 0; want && k < want->n; k++) {
          if (want->pid[k] == r->data[0] && want->code[k] == r->data[2]) {
            CHECK(memcmp(&u, &want->u[k], sizeof(u)) == 0);
            CHECK(r->flags == want->flags[k]);
          }
        }
        (*with_usage)++;
      } else if (r->what == PC_EVENT_EXIT) {
        CHECK(r->size == PC_RECORD_HEAD_SIZE && r->flags == 0);
      }
      off += (int)r->size;
    }
  }
}

static pc_handle *handle(void) {
  struct pc_test_options o = {.proc_root = "/", .ring_bytes = 1u << 16};
  pc_handle *h = NULL;

  CHECK(pc_test_open(&o, &h) == 0);
  return h;
}

static void raw(const uint8_t *data, size_t size) {
  uint8_t *copy = malloc(size ? size : 1);
  struct found f = {0};
  uint16_t family = 0;
  int err = -1;
  unsigned n, with;
  pc_handle *h;

  CHECK(copy != NULL);
  if (size)
    memcpy(copy, data, size);
  n = pc_parse_taskstats(copy, size, FAMILY, collect, &f);
  CHECK(n >= f.n);
  if (pc_parse_reply(copy, size, 7, &family, &err) == 1)
    CHECK(err >= 0);
  if (size <= PC_TEST_TS_SLOT && ((uintptr_t)copy % 4) == 0) {
    h = handle();
    CHECK(pc_test_usage(h, copy, size, FAMILY) == 0);
    exits(h, f.pid, f.code, f.n, NULL, &with);
    pc_test_close(h);
  }
  free(copy);
}

/* Appends one attribute header (and payload) at *off; returns where the payload starts. */
static size_t put_attr(uint8_t *buf, size_t *off, uint16_t type, const void *data,
                       size_t len) {
  struct nlattr na = {.nla_len = (uint16_t)(NLA_HDRLEN + len), .nla_type = type};
  size_t at = *off + NLA_HDRLEN;

  memcpy(buf + *off, &na, sizeof(na));
  if (data)
    memcpy(buf + at, data, len);
  *off = at + NLA_ALIGN(len);
  return at;
}

static void well_formed(const uint8_t *data, size_t size) {
  static uint64_t words[PC_TEST_TS_SLOT / 8];
  uint8_t *buf = (uint8_t *)words;
  struct source s = {data, size};
  struct taskstats ts;
  struct nlmsghdr nh = {0};
  struct genlmsghdr g = {.cmd = TASKSTATS_CMD_NEW, .version = 1};
  struct found f = {0};
  uint32_t pid = (uint32_t)(take(&s, 3) % 4194303u) + 1, code = (uint32_t)take(&s, 2);
  uint32_t other = pid == 1 ? 2 : pid - 1, pids[2], codes[2];
  size_t stats_len, off = NLMSG_HDRLEN + GENL_HDRLEN, nest;
  bool pad = take(&s, 1) & 1, tgid = take(&s, 1) & 1, valid;
  unsigned with;
  pc_handle *h;

  memset(&ts, 0, sizeof(ts));
  memset(words, 0, sizeof(words));
  ts.version = (uint16_t)(take(&s, 1) % 20);
  ts.ac_exitcode = code;
  ts.ac_flag = (uint8_t)take(&s, 1);
  ts.ac_utime = take(&s, 8);
  ts.ac_stime = take(&s, 8);
  ts.hiwater_rss = take(&s, 8);
  ts.read_bytes = take(&s, 8);
  ts.write_bytes = take(&s, 8);
  ts.nvcsw = take(&s, 8);
  ts.nivcsw = take(&s, 8);
  /* Mostly whole; sometimes cut, to before or after the last field read. */
  stats_len = take(&s, 1) < 200 ? sizeof(ts) : (size_t)take(&s, 2) % (sizeof(ts) + 1);
  valid = ts.version >= 4 && stats_len >= offsetof(struct taskstats, nivcsw) + 8;

  if (pad)
    put_attr(buf, &off, TASKSTATS_TYPE_NULL, NULL, 0);
  nest = off;
  put_attr(buf, &off, TASKSTATS_TYPE_AGGR_PID | NLA_F_NESTED, NULL, 0);
  put_attr(buf, &off, TASKSTATS_TYPE_PID, &pid, sizeof(pid));
  put_attr(buf, &off, TASKSTATS_TYPE_STATS, &ts, stats_len);
  ((struct nlattr *)(void *)(buf + nest))->nla_len = (uint16_t)(off - nest);
  if (tgid) {
    nest = off;
    put_attr(buf, &off, TASKSTATS_TYPE_AGGR_TGID | NLA_F_NESTED, NULL, 0);
    put_attr(buf, &off, TASKSTATS_TYPE_TGID, &pid, sizeof(pid));
    put_attr(buf, &off, TASKSTATS_TYPE_STATS, &ts, sizeof(ts));
    ((struct nlattr *)(void *)(buf + nest))->nla_len = (uint16_t)(off - nest);
  }
  CHECK(off <= sizeof(words));
  nh.nlmsg_len = (uint32_t)off;
  nh.nlmsg_type = FAMILY;
  memcpy(buf, &nh, sizeof(nh));
  memcpy(buf + NLMSG_HDRLEN, &g, sizeof(g));

  CHECK(pc_parse_taskstats(buf, off, FAMILY, collect, &f) == (valid ? 1u : 0u));
  CHECK(pc_parse_taskstats(buf, off, FAMILY + 1, collect, &f) == 0); /* another family */
  if (valid) {
    bool last = ts.version >= 12 && (ts.ac_flag & AGROUP);

    CHECK(f.pid[0] == pid && f.code[0] == code);
    CHECK(f.flags[0] == (PC_F_USAGE | (last ? PC_F_USAGE_LAST : 0)));
    CHECK(f.u[0].cpu_user_us == ts.ac_utime && f.u[0].cpu_sys_us == ts.ac_stime);
    CHECK(f.u[0].max_rss_kb == ts.hiwater_rss);
    CHECK(f.u[0].read_bytes == ts.read_bytes && f.u[0].write_bytes == ts.write_bytes);
    CHECK(f.u[0].ctx_voluntary == ts.nvcsw && f.u[0].ctx_involuntary == ts.nivcsw);
  }

  h = handle();
  CHECK(pc_test_usage(h, buf, off, FAMILY) == 0);
  pids[0] = other;
  codes[0] = code;
  pids[1] = pid;
  codes[1] = code;
  exits(h, pids, codes, 2, &f, &with);
  CHECK(with == (valid ? 1u : 0u));
  {
    struct pc_stats st;

    CHECK(pc_stats(h, &st) == 0);
    CHECK(st.usage_missing == (valid ? 1u : 2u));
  }
  pc_test_close(h);
}

/*
 * 3. A taskstats socket that overran with a backlog queued (pc_test_ts_source): `queued`
 *    messages the kernel had queued (reported after the ENOBUFS, as the kernel does), then
 *    `dropped` tasks whose messages the overrun dropped, then `later` ones queued once the
 *    socket had been read empty. Their exits come in order, with turns of the reader's loop
 *    (pc_test_ts_idle) in between as the input says. No exit or turn may read more than the
 *    cap; every task whose message was queued must get its usage (a drain never pushes out
 *    usage still waiting for its exit); the loss must be reported once the socket has been
 *    read empty, as much as stats.usage_lost says.
 */
#define DRAIN_CAP (512u / 2 + 32u) /* PC_TS_DRAIN_MAX, and one recvmmsg() that ends past it */

struct backlog {
  uint32_t queued, dropped, later;
  uint32_t next;       /* the next pid the socket hands out */
  bool told, emptied;  /* ENOBUFS reported; read empty once (the later ones come then) */
  unsigned handed;     /* datagrams handed out since the check reset it */
};

static size_t usage_datagram(uint8_t *buf, uint32_t pid, uint32_t code) {
  struct nlmsghdr nh = {0};
  struct genlmsghdr g = {.cmd = TASKSTATS_CMD_NEW, .version = 1};
  struct taskstats ts;
  size_t off = NLMSG_HDRLEN + GENL_HDRLEN, nest;

  memset(&ts, 0, sizeof(ts));
  ts.version = 10;
  ts.ac_exitcode = code;
  ts.ac_utime = pid;
  nest = off;
  put_attr(buf, &off, TASKSTATS_TYPE_AGGR_PID | NLA_F_NESTED, NULL, 0);
  put_attr(buf, &off, TASKSTATS_TYPE_PID, &pid, sizeof(pid));
  put_attr(buf, &off, TASKSTATS_TYPE_STATS, &ts, sizeof(ts));
  ((struct nlattr *)(void *)(buf + nest))->nla_len = (uint16_t)(off - nest);
  nh.nlmsg_len = (uint32_t)off;
  nh.nlmsg_type = FAMILY;
  memcpy(buf, &nh, sizeof(nh));
  memcpy(buf + NLMSG_HDRLEN, &g, sizeof(g));
  return off;
}

static int backlog_next(void *ctx, uint8_t *buf, size_t cap) {
  struct backlog *b = ctx;
  uint32_t end = b->emptied ? b->queued + b->dropped + b->later : b->queued, pid;

  CHECK(cap >= PC_TEST_TS_SLOT);
  if (!b->told) {
    b->told = true;
    return -ENOBUFS;
  }
  if (b->next > end)
    return 0;
  pid = b->next++;
  if (pid == b->queued && !b->emptied) {
    /* Read empty: the congestion ends, and what the kernel sends from now on is queued. */
    b->emptied = true;
    b->next = b->queued + b->dropped + 1;
  }
  b->handed++;
  return (int)usage_datagram(buf, pid, pid & 0xff);
}

/* Takes every record out of h: exits with usage counted per pid, LOST usage summed. */
static void drain_records(pc_handle *h, uint8_t *with, uint32_t npid, uint64_t *lost,
                          unsigned *without) {
  static uint64_t out[(PC_RECORD_MAX + 7) / 8 * 4];
  uint8_t *o = (uint8_t *)out;
  int got;

  while ((got = pc_take(h, o, sizeof(out))) > 0) {
    for (int off = 0; off < got;) {
      const struct pc_record *r = (const struct pc_record *)(const void *)(o + off);

      if (r->what == PC_EVENT_EXIT && (r->flags & PC_F_USAGE)) {
        struct pc_usage u;

        memcpy(&u, o + off + PC_RECORD_HEAD_SIZE, sizeof(u));
        CHECK(r->data[0] >= 1 && r->data[0] <= npid && u.cpu_user_us == r->data[0]);
        with[r->data[0]] = 1;
      } else if (r->what == PC_EVENT_EXIT) {
        (*without)++;
      } else if (r->what == PC_EVENT_LOST) {
        CHECK(r->data[0] == PC_LOST_USAGE);
        *lost += r->data[1];
      }
      off += (int)r->size;
    }
  }
  CHECK(got == 0);
}

static void backlog(const uint8_t *data, size_t size) {
  static uint64_t dgram[64];
  static uint8_t with[2048];
  struct source s = {data, size};
  struct backlog b = {0};
  struct pc_test_options o = {.proc_root = "/", .ring_bytes = 1u << 16};
  struct pc_stats st;
  uint64_t lost = 0;
  unsigned without = 0, turns = 0;
  uint32_t n;
  pc_handle *h = NULL;

  /* More than the FIFO's 512 slots queued: a drain to the end would push usage out. */
  b.queued = 600 + (uint32_t)(take(&s, 2) % 900);
  b.dropped = (uint32_t)(take(&s, 1) % 64);
  b.later = (uint32_t)(take(&s, 1) % 64);
  b.next = 1;
  n = b.queued + b.dropped + b.later;
  CHECK(n < sizeof(with));
  memset(with, 0, sizeof(with));
  CHECK(pc_test_open(&o, &h) == 0);
  CHECK(pc_test_ts_source(h, FAMILY, backlog_next, &b) == 0);
  for (uint32_t pid = 1; pid <= n; pid++) {
    size_t len = exit_datagram((uint8_t *)dgram, pid, pid & 0xff, pid);
    uint64_t idle = take(&s, 1);

    b.handed = 0;
    CHECK(pc_test_feed(h, (const uint8_t *)dgram, len) == 0);
    CHECK(b.handed <= DRAIN_CAP);
    for (uint64_t t = 0; t < (idle >> 6); t++) {
      b.handed = 0;
      (void)pc_test_ts_idle(h);
      CHECK(b.handed <= DRAIN_CAP);
    }
    drain_records(h, with, n, &lost, &without);
  }
  /* No exit comes any more: the reader's loop still reads the socket empty and settles. */
  while (pc_test_ts_idle(h) == 1)
    CHECK(++turns < 64);
  drain_records(h, with, n, &lost, &without);
  CHECK(pc_stats(h, &st) == 0);
  for (uint32_t pid = 1; pid <= n; pid++)
    CHECK(with[pid] == (pid <= b.queued || pid > b.queued + b.dropped));
  CHECK(without == b.dropped && st.usage_missing == b.dropped);
  CHECK(b.emptied && st.usage_lost == 1 && lost == 1); /* no SO_MEMINFO here: "some" */
  CHECK(st.kernel_lost == 0 && st.ring_lost == 0);
  pc_test_close(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  raw(data, size);
  well_formed(data, size);
  backlog(data, size);
  return 0;
}
