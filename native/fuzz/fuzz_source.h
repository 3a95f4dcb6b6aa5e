/*
 * fuzz_source.h - the input of a libFuzzer target as a source of choices (fuzz_stat.c,
 * fuzz_taskstats.c): bytes taken a few at a time, zeros once they run out.
 */
#ifndef PC_FUZZ_SOURCE_H
#define PC_FUZZ_SOURCE_H

#include <stddef.h>
#include <stdint.h>

/* Input bytes consumed one choice at a time; zeros once they run out. */
struct source {
  const uint8_t *p;
  size_t n;
};

/* The next `bytes` bytes of the input, big-endian; zeros past its end. */
static inline uint64_t take(struct source *s, unsigned bytes) {
  uint64_t v = 0;

  for (unsigned i = 0; i < bytes; i++) {
    v = v << 8 | (s->n ? *s->p : 0);
    if (s->n) {
      s->p++;
      s->n--;
    }
  }
  return v;
}

#endif
