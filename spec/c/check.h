/*
 * check.h - CHECK(cond) for the C tests: counts passes and failures and goes on, so one run
 * reports every failing check; a test ends with CHECK_SUMMARY() as its exit status.
 */
#ifndef LOOM_SPEC_CHECK_H
#define LOOM_SPEC_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            passed++;                                                                              \
        } else {                                                                                   \
            failed++;                                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

/* Prints the counts; 0 when nothing failed, for main's return. */
#define CHECK_SUMMARY() (printf("%d passed, %d failed\n", passed, failed), failed ? 1 : 0)

#endif
