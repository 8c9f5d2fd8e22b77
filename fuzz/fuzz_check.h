/*
 * fuzz_check.h - FUZZ_CHECK(cond), the C fuzz targets' assertion: unlike assert() it stays
 * in every build, and it aborts so that libFuzzer saves the input as a crash. Also fbuf_t,
 * the growing byte buffer the targets write the transcripts they compare into.
 */
#ifndef LOOM_FUZZ_CHECK_H
#define LOOM_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    char *p;
    size_t len, cap;
} fbuf_t;

static inline void fbuf_put(fbuf_t *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        FUZZ_CHECK(b->p != NULL);
    }
    if (n > 0)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

#endif
