/*
 * fuzz_check.h - CHECK() for every libFuzzer target here: it aborts (so the fuzzer keeps the
 * input) naming the target and the failed condition. Define FUZZ_NAME ("fuzz_stat", ...)
 * before including.
 */
#ifndef PC_FUZZ_CHECK_H
#define PC_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                          \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      fprintf(stderr, FUZZ_NAME ": check failed at line %d: %s\n", __LINE__, #cond);        \
      abort();                                                                               \
    }                                                                                        \
  } while (0)

#endif
