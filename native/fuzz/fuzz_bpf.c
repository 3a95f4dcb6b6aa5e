/*
 * fuzz_bpf.c - libFuzzer target for the reader's use of an exec BPF entry (exec_bpf.h):
 * pc_bpf_fill(), which turns the entry the program wrote into the record's snapshot, and
 * pc_bpf_path(), which turns the exe's components (leaf first) into a path.
 *
 * The input is the entry, in a buffer of exactly its size (reading past it is an ASan
 * error). When it is taken, the record must be what the entry says: its size a multiple of
 * 8 within PC_RECORD_MAX, the cmdline the entry's argument bytes, and the exe (when there is
 * one) an absolute path of exe_len bytes whose components, read from the end, are the
 * entry's, none empty and none holding a '/'.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../procconn.h"
#include "../exec_bpf.h"
#include "../procconn_internal.h"

#define FUZZ_NAME "fuzz_bpf"
#include "fuzz_check.h"

static void check_path(const char *path, size_t n, const char *comps) {
  size_t at = 0, end = n;

  CHECK(n > 0 && path[0] == '/');
  while (at < n) {
    size_t len = strlen(comps + at);

    CHECK(len > 0 && end >= len + 1);
    end -= len;
    CHECK(memcmp(path + end, comps + at, len) == 0);
    CHECK(path[--end] == '/');
    CHECK(memchr(comps + at, '/', len) == NULL);
    at += len + 1;
  }
  CHECK(end == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static struct pc_record *r;
  uint8_t *copy = malloc(size ? size : 1);
  struct pc_bpf_exec e;
  uint32_t got;

  if (!r)
    r = malloc(PC_RECORD_MAX + 64);
  CHECK(copy != NULL && r != NULL);
  if (size)
    memcpy(copy, data, size);
  got = pc_bpf_fill(r, copy, size);
  if (got != 0) {
    const char *tail = (const char *)r + PC_RECORD_SNAPSHOT_SIZE;

    memcpy(&e, copy, PC_BPF_HEAD);
    CHECK(size >= PC_BPF_HEAD && !(e.flags & PC_BPF_F_NO_ARGS));
    CHECK(got % 8 == 0 && got <= PC_RECORD_MAX);
    CHECK(got >= PC_RECORD_SNAPSHOT_SIZE + (uint32_t)r->cmdline_len + r->exe_len);
    CHECK(r->cmdline_len == e.args_len && r->cmdline_len <= PC_CMDLINE_MAX);
    CHECK(memcmp(tail, copy + PC_BPF_HEAD + e.exe_len, e.args_len) == 0);
    CHECK(((r->flags & PC_F_CMDLINE_TRUNCATED) != 0) == ((e.flags & PC_BPF_F_TRUNCATED) != 0));
    CHECK(r->comm[15] == '\0');
    CHECK(r->ruid == e.ruid && r->euid == e.euid);
    if (r->flags & PC_F_NO_EXE) {
      CHECK(r->exe_len == 0);
    } else {
      CHECK(r->exe_len == e.exe_len && r->exe_len <= PC_EXE_MAX);
      check_path(tail + r->cmdline_len, r->exe_len, (const char *)copy + PC_BPF_HEAD);
    }
    CHECK(r->cwd_len == 0 && r->env_len == 0 && r->cgroup_len == 0);
  }
  free(copy);
  return 0;
}
