/*
 * fuzz_check.h - FUZZ_CHECK(cond), the C fuzz targets' assertion: unlike assert() it stays
 * in every build, and it aborts so that libFuzzer saves the input as a crash.
 */
#ifndef LOOM_FUZZ_CHECK_H
#define LOOM_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
