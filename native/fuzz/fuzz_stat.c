/*
 * fuzz_stat.c - libFuzzer target for pc_parse_stat(), the /proc/PID/stat parser behind
 * every exec snapshot's ppid, comm and pid-reuse check.
 *
 * Each input is used twice:
 *  1. as the bytes of a stat file, in a buffer of exactly that size (reading past it is an
 *     ASan error). Whatever it holds, a line that parses has a ppid >= 0 and a NUL-padded
 *     comm that is the start of what stands between the first '(' and the last ')';
 *  2. as the choices for a well-formed line as the kernel writes it ("pid (comm) state
 *     ppid ... starttime ..."), with a comm of up to 15 arbitrary bytes but NUL, spaces,
 *     parentheses and newlines included. That line must give back exactly its comm, ppid
 *     and starttime. Starttimes are kept below 10^18 ticks (the parser stops at 19 digits;
 *     at 100 Hz that is 300 million years of uptime).
 * The seed corpus (native/fuzz/corpus/stat/) holds real stat lines.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../procconn.h"
#include "../procconn_internal.h"

#define FUZZ_NAME "fuzz_stat"
#include "fuzz_check.h"
#include "fuzz_source.h"

static void raw(const uint8_t *data, size_t size) {
  char *copy = malloc(size ? size : 1);
  char comm[16];
  int32_t ppid = -2;
  uint64_t start = 0;
  const char *open, *close = NULL;
  size_t n, want;

  CHECK(copy != NULL);
  if (size)
    memcpy(copy, data, size);
  if (pc_parse_stat(copy, size, comm, &ppid, &start)) {
    CHECK(ppid >= 0);
    open = memchr(copy, '(', size);
    for (size_t i = size; i > 0; i--) {
      if (copy[i - 1] == ')') {
        close = copy + i - 1;
        break;
      }
    }
    CHECK(open && close && open < close);
    n = (size_t)(close - open - 1);
    want = n < 15 ? n : 15;
    CHECK(memcmp(comm, open + 1, want) == 0);
    for (size_t i = want; i < sizeof(comm); i++)
      CHECK(comm[i] == 0);
  }
  free(copy);
}

static void well_formed(const uint8_t *data, size_t size) {
  static const char states[] = "RSDZTtXxKWPI";
  static const char awkward[] = ") (\n\t)";
  struct source s = {data, size};
  char line[2048], comm_in[16], comm[16]; /* at most ~1.1 KiB */
  int len = 0;
  int32_t pid, ppid_in, ppid = -2;
  uint64_t start_in, start = 0;
  size_t comm_len, extra;

  pid = (int32_t)(take(&s, 3) % 4194304u) + 1;
  comm_len = (size_t)take(&s, 1) % 16;
  memset(comm_in, 0, sizeof(comm_in));
  for (size_t i = 0; i < comm_len; i++) {
    uint8_t b = (uint8_t)take(&s, 1);

    /* Half of the bytes are the awkward ones; the kernel never puts a NUL in a comm. */
    comm_in[i] = (char)(b & 0x80 ? awkward[b % (sizeof(awkward) - 1)] : (b ? b : 'x'));
  }
  ppid_in = (int32_t)(take(&s, 4) & 0x7FFFFFFFu);
  start_in = take(&s, 8) % 1000000000000000000u;

  len += snprintf(line + len, sizeof(line) - (size_t)len, "%d (", (int)pid);
  memcpy(line + len, comm_in, comm_len);
  len += (int)comm_len;
  len += snprintf(line + len, sizeof(line) - (size_t)len, ") %c %d",
                  states[take(&s, 1) % (sizeof(states) - 1)], (int)ppid_in);
  for (int field = 5; field <= 21; field++) /* signed, as some are (-1 for no tty group) */
    len += snprintf(line + len, sizeof(line) - (size_t)len, " %lld",
                    (long long)(int64_t)take(&s, 8));
  len += snprintf(line + len, sizeof(line) - (size_t)len, " %llu",
                  (unsigned long long)start_in);
  extra = (size_t)take(&s, 1) % 31; /* fields 23 to 52 */
  for (size_t i = 0; i < extra; i++)
    len += snprintf(line + len, sizeof(line) - (size_t)len, " %llu",
                    (unsigned long long)take(&s, 8));
  len += snprintf(line + len, sizeof(line) - (size_t)len, "\n");
  CHECK(len > 0 && (size_t)len < sizeof(line));

  {
    char *copy = malloc((size_t)len);

    CHECK(copy != NULL);
    memcpy(copy, line, (size_t)len);
    CHECK(pc_parse_stat(copy, (size_t)len, comm, &ppid, &start));
    free(copy);
  }
  CHECK(memcmp(comm, comm_in, sizeof(comm)) == 0);
  CHECK(ppid == ppid_in);
  CHECK(start == start_in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  raw(data, size);
  well_formed(data, size);
  return 0;
}
