/*
 * fuzz_belong.c - libFuzzer target for the exec snapshot's two parsers of where a process
 * belongs and what it was told: pc_pick_cgroup() (/proc/PID/cgroup) and the environment
 * picker behind PC_READ_ENV (/proc/PID/environ, fed read by read).
 *
 * Each input is used twice:
 *  1. as the bytes of a cgroup file, in a buffer of exactly that size (reading past it is an
 *     ASan error). A path that is chosen lies inside the buffer, on a whole line that is the
 *     v2 line ("0::") or systemd's ("N:name=systemd:"), and holds no newline;
 *  2. as names and an environment: the first byte says how many of the following bytes
 *     make the names (cut into NUL-separated names without '=' and at most
 *     PC_ENV_NAMES_COUNT of them), the rest is the environment. The picker is fed the
 *     environment whole and in two pieces at every split point the input suggests: the
 *     result must not depend on where read() happened to cut, and must equal a plain
 *     reference picker's that sees the environment at once.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../procconn.h"
#include "../procconn_internal.h"

#define FUZZ_NAME "fuzz_belong"
#include "fuzz_check.h"

static void cgroup(const uint8_t *data, size_t size) {
  char *copy = malloc(size ? size : 1);
  const char *line, *path;
  size_t off = 0, len = 0;

  CHECK(copy != NULL);
  if (size)
    memcpy(copy, data, size);
  if (pc_pick_cgroup(copy, size, &off, &len)) {
    CHECK(off <= size && len <= size - off);
    path = copy + off;
    CHECK(off + len < size && path[len] == '\n'); /* a whole line */
    CHECK(memchr(path, '\n', len) == NULL);
    line = path;
    while (line > copy && line[-1] != '\n')
      line--;
    CHECK((strncmp(line, "0::", 3) == 0 && line + 3 == path) ||
          (memchr(line, ':', (size_t)(path - line)) != NULL && path - line >= 14 &&
           memcmp(path - 14, ":name=systemd:", 14) == 0));
  }
  free(copy);
}

/* The names as the library takes them: NUL-separated, no '=', an empty name ends them. */
static void make_names(const uint8_t *p, size_t n, char names[PC_ENV_NAMES_MAX]) {
  size_t at = 0, count = 0;
  bool in_name = false;

  memset(names, 0, PC_ENV_NAMES_MAX);
  for (size_t i = 0; i < n && at + 2 < PC_ENV_NAMES_MAX; i++) {
    char c = (char)p[i];

    if (c == 0 || c == '=') {
      if (in_name) {
        names[at++] = 0;
        in_name = false;
      }
    } else {
      if (!in_name && ++count > PC_ENV_NAMES_COUNT)
        break;
      names[at++] = c;
      in_name = true;
    }
  }
}

/* Whether `name` (n bytes) is among names, and its index. */
static int index_of(const char *names, const char *name, size_t n) {
  size_t at = 0;

  for (int i = 0; at < PC_ENV_NAMES_MAX && names[at]; i++) {
    size_t len = strlen(names + at);

    if (len == n && memcmp(names + at, name, n) == 0)
      return i;
    at += len + 1;
  }
  return -1;
}

/* The picker's promise, written plainly over the whole environment. */
static size_t reference(const char *names, const char *env, size_t len, char *out,
                        bool *truncated) {
  uint32_t found = 0, want = 0;
  size_t at = 0, o = 0, count = 0;

  for (size_t i = 0; i < PC_ENV_NAMES_MAX && names[i]; i += strlen(names + i) + 1)
    count++;
  want = count == 32 ? UINT32_MAX : (1u << count) - 1;
  *truncated = false;
  while (at < len && !(found == want && want != 0)) {
    const char *entry = env + at, *nul = memchr(entry, 0, len - at), *eq;
    size_t elen = nul ? (size_t)(nul - entry) : len - at;
    int i;

    at += elen + 1;
    eq = memchr(entry, '=', elen);
    if (!eq)
      continue;
    i = index_of(names, entry, (size_t)(eq - entry));
    if (i < 0 || (found >> i & 1u))
      continue;
    found |= 1u << i;
    if ((size_t)(eq - entry) + 2 > PC_ENV_MAX - o) {
      *truncated = true;
      continue;
    }
    {
      size_t name_len = (size_t)(eq - entry) + 1, vlen = elen - name_len;
      size_t room = PC_ENV_MAX - o - name_len - 1, keep = vlen;

      if (keep > PC_ENV_VALUE_MAX)
        keep = PC_ENV_VALUE_MAX;
      if (keep > room)
        keep = room;
      *truncated |= keep < vlen;
      memcpy(out + o, entry, name_len + keep);
      o += name_len + keep;
      out[o++] = 0;
    }
  }
  return o;
}

static void environment(const uint8_t *data, size_t size) {
  char names[PC_ENV_NAMES_MAX], want[PC_ENV_MAX], got[PC_ENV_MAX];
  size_t names_len, env_len, want_len;
  const char *env;
  bool want_cut, got_cut;

  if (size == 0)
    return;
  names_len = data[0] < size - 1 ? data[0] : size - 1;
  make_names(data + 1, names_len, names);
  env = (const char *)data + 1 + names_len;
  env_len = size - 1 - names_len;
  want_len = reference(names, env, env_len, want, &want_cut);
  for (size_t split = 0; split <= env_len; split += 1 + split / 4) {
    size_t got_len = pc_test_env(names, env, env_len, split, got, &got_cut);

    CHECK(got_len == want_len && memcmp(got, want, want_len) == 0);
    CHECK(got_cut == want_cut);
    CHECK(got_len <= PC_ENV_MAX);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cgroup(data, size);
  environment(data, size);
  return 0;
}
