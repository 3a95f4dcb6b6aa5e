/*
 * procconn_internal.h - test-only entry points of procconn.c, for the fuzzers in
 * native/fuzz/. They exist only in a build with -DPC_FUZZING: the library that procMonitor
 * loads has none of them, and its exports stay those of procconn.h.
 *
 * A test handle has the ring, the record buffer and the counters of a real one but no
 * socket and no reader thread: the caller plays the reader, handing it datagrams as
 * recvmmsg() would (pc_test_feed) and taking records out with the public pc_take() and
 * pc_stats(). /proc is a directory of the caller's choosing, so the exec snapshot reads
 * files the test made.
 */
#ifndef PROCCONN_INTERNAL_H
#define PROCCONN_INTERNAL_H

#ifndef PC_FUZZING
#error "procconn_internal.h is for test builds only (-DPC_FUZZING)"
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "procconn.h"

/* The largest datagram the reader takes: a longer one arrives cut (MSG_TRUNC) and is skipped. */
#define PC_TEST_SLOT 1024u

struct pc_test_options {
  const char *proc_root; /* stands in for /proc: PID directories with stat, cmdline, exe */
  uint32_t event_mask;   /* as pc_options.event_mask: 0 = all */
  uint32_t ring_bytes;   /* ring capacity; no 64 KiB floor here, but >= PC_RECORD_HEAD_SIZE */
  bool filtered;         /* as after a 6.6+ kernel took event_mask as its filter */
  uint32_t snapshot_reads; /* as pc_options.snapshot_reads */
  const char *env_names;   /* as pc_options.env_names (PC_ENV_NAMES_MAX bytes), with
                            * PC_READ_ENV */
};

/* A handle without socket or thread. Close it with pc_test_close(), never pc_close(). */
int pc_test_open(const struct pc_test_options *o, pc_handle **out);

/*
 * Hands one datagram from the kernel to the reader's message walk, as pc_dispatch() does:
 * records land in the ring. buf must be 4-aligned (the receive slots are). -EMSGSIZE for
 * more than PC_TEST_SLOT bytes, which the reader never sees whole.
 */
int pc_test_feed(pc_handle *h, const uint8_t *buf, size_t len);

/* recv() said ENOBUFS: the loss is settled by the next pc_test_drained(). */
int pc_test_overrun(pc_handle *h);

/* The socket was read empty (recv() said EAGAIN): settles an overrun's loss. */
int pc_test_drained(pc_handle *h);

/*
 * Walks buf as the subscription handshake does, waiting for the ack `ack`: 1 when it is
 * there (*err = the kernel's error for it), 0 when not.
 */
int pc_test_ack(pc_handle *h, const uint8_t *buf, size_t len, uint32_t ack, uint32_t *err);

int pc_test_close(pc_handle *h);

/*
 * Exit resource usage. pc_test_usage() hands the handle one datagram from the taskstats
 * socket (generic netlink family `family`): the usage in it waits for its exits, which
 * pc_test_feed() then delivers with PC_F_USAGE; from the first call on, an exit without
 * usage counts in stats.usage_missing. -EMSGSIZE for more than PC_TEST_TS_SLOT bytes.
 */
#define PC_TEST_TS_SLOT 2048u
int pc_test_usage(pc_handle *h, const uint8_t *buf, size_t len, uint16_t family);

/*
 * A stand-in for the taskstats socket (no kernel needed to overrun it): each call puts the
 * next datagram from the kernel into buf (cap bytes) and returns its length, 0 when the
 * socket is empty (EAGAIN), -ENOBUFS for an overrun. pc_test_ts_source() gives it to a test
 * handle (not one that pc_test_usage() was used on), whose exits then read it as the reader
 * reads the socket (pc_test_feed); stats and LOST records as on a socket without SO_MEMINFO
 * (one LOST usage of count 1 per overrun). pc_test_ts_idle() is one turn of the reader's
 * loop after its round on the connector: 1 while an overrun's loss is not yet settled.
 */
typedef int (*pc_ts_source_fn)(void *ctx, uint8_t *buf, size_t cap);
int pc_test_ts_source(pc_handle *h, uint16_t family, pc_ts_source_fn fn, void *ctx);
int pc_test_ts_idle(pc_handle *h);

/* Called for each task's usage found in a taskstats datagram. */
typedef void (*pc_usage_fn)(void *ctx, uint32_t pid, uint32_t exit_code, uint32_t flags,
                            const struct pc_usage *u);

/*
 * Walks one taskstats datagram: fn for each TASKSTATS_TYPE_AGGR_PID with a pid and a
 * struct taskstats of version 4 or later; returns how many. Pure.
 */
unsigned pc_parse_taskstats(const uint8_t *buf, size_t len, uint16_t family, pc_usage_fn fn,
                            void *ctx);

/*
 * The answer to request seq in one datagram: an NLMSG_ERROR (*err its positive errno, 0 an
 * ack) or, with family, the controller's CTRL_ATTR_FAMILY_ID. 1 when found. Pure.
 */
int pc_parse_reply(const uint8_t *buf, size_t len, uint32_t seq, uint16_t *family, int *err);

/*
 * Parses /proc/PID/stat (len bytes, not NUL-terminated): comm (NUL-padded, at most 15
 * bytes), ppid and starttime (field 22). False when ppid or starttime is missing.
 */
bool pc_parse_stat(const char *s, size_t len, char comm[16], int32_t *ppid,
                   uint64_t *start_ticks);

/*
 * Chooses the path of /proc/PID/cgroup's text (n bytes, not NUL-terminated) a record
 * carries: the v2 line's, else name=systemd's (see procconn.c). *off and *len locate it in
 * s; false when there is neither.
 */
bool pc_pick_cgroup(const char *s, size_t n, size_t *off, size_t *len);

/*
 * Picks the variables `names` asks for (as pc_options.env_names, already valid) out of an
 * environment of len bytes, fed to the picker in two pieces split at `split`, as the
 * snapshot feeds it read by read. Returns the bytes written to out; *truncated as
 * PC_F_ENV_TRUNCATED.
 */
size_t pc_test_env(const char names[PC_ENV_NAMES_MAX], const char *env, size_t len,
                   size_t split, char out[PC_ENV_MAX], bool *truncated);

/*
 * The exe path an exec BPF entry names (exec_bpf.h): its n bytes of components, leaf first,
 * each NUL-terminated, written root first into out (n bytes: "/usr/bin/true"). 0 when not
 * well-formed (an empty component, one unterminated, or one holding '/'). Pure.
 */
size_t pc_bpf_path(char *out, const char *comps, size_t n);

/*
 * Fills r's exec snapshot from a BPF entry of len bytes as the reader finds it in the ring;
 * returns the record size (a multiple of 8, at most PC_RECORD_MAX), or 0 when the entry
 * cannot stand in for /proc. r must have room for PC_RECORD_MAX bytes. Pure.
 */
uint32_t pc_bpf_fill(struct pc_record *r, const uint8_t *buf, size_t len);

#endif /* PROCCONN_INTERNAL_H */
