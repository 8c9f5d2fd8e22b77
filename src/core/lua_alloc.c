/*
 * lua_alloc.c - the allocator of the Lua states loom creates (loom_new; not one an
 * embedder or an interpreter loading loom.core brings). Blocks of up to 256 bytes are
 * kept, once freed, on free lists by size class, and handed out again from there: every
 * request makes a table, its slots and a box, and the collector frees them a few hundred
 * requests later, so most allocations are a list pop instead of a trip through realloc.
 *
 * Each class keeps at most CLASS_BYTES cached; the rest goes back to free(). Under the
 * sanitizers nothing is cached, so ASan sees every Lua block come and go.
 */
#include <stdlib.h>
#include <string.h>
#include "lua_alloc.h"

#define GRAIN 16
#define SMALL_MAX 256 /* largest cached size */
#define NCLASSES (SMALL_MAX / GRAIN)
#define CLASS_BYTES (64 * 1024)

typedef struct block {
    struct block *next;
} block_t;

struct loom_alloc {
    block_t *free[NCLASSES];
    unsigned n[NCLASSES];
    unsigned max[NCLASSES]; /* CLASS_BYTES worth of blocks */
};

#if defined(LOOM_SANITIZE_BUILD)
#define CACHING 0
#else
#define CACHING 1
#endif

/* 1..16 bytes is class 0, 17..32 class 1, ..., 241..256 class 15 */
static unsigned class_of(size_t size) {
    return (unsigned)((size - 1) / GRAIN);
}

static int is_small(size_t size) {
    return CACHING && size > 0 && size <= SMALL_MAX;
}

static void *take(loom_alloc_t *a, size_t size) {
    if (!is_small(size))
        return malloc(size);
    unsigned k = class_of(size);
    block_t *b = a->free[k];
    if (!b)
        return malloc((k + 1) * GRAIN);
    a->free[k] = b->next;
    a->n[k]--;
    return b;
}

static void give_back(loom_alloc_t *a, void *p, size_t size) {
    if (is_small(size)) {
        unsigned k = class_of(size);
        if (a->n[k] < a->max[k]) {
            block_t *b = p;
            b->next = a->free[k];
            a->free[k] = b;
            a->n[k]++;
            return;
        }
    }
    free(p);
}

loom_alloc_t *loom_alloc_new(void) {
    loom_alloc_t *a = calloc(1, sizeof *a);
    for (unsigned k = 0; a && k < NCLASSES; k++)
        a->max[k] = CLASS_BYTES / ((k + 1) * GRAIN);
    return a;
}

void loom_alloc_free(loom_alloc_t *a) {
    if (!a)
        return;
    for (int k = 0; k < NCLASSES; k++) {
        block_t *b = a->free[k], *next;
        for (; b; b = next) {
            next = b->next;
            free(b);
        }
    }
    free(a);
}

/* lua_Alloc: for a new block ptr is NULL and osize says what it is for, not a size. */
void *loom_alloc_lua(void *ud, void *ptr, size_t osize, size_t nsize) {
    loom_alloc_t *a = ud;
    if (!ptr)
        osize = 0;
    if (nsize == 0) {
        if (ptr)
            give_back(a, ptr, osize);
        return NULL;
    }
    if (ptr) {
        if (is_small(osize) && is_small(nsize) && class_of(osize) == class_of(nsize))
            return ptr; /* the block was allocated at its class's size */
        if (!is_small(osize) && !is_small(nsize))
            return realloc(ptr, nsize);
    }
    void *n = take(a, nsize);
    if (n && ptr) {
        memcpy(n, ptr, osize < nsize ? osize : nsize);
        give_back(a, ptr, osize);
    }
    return n; /* on failure Lua keeps the old block, untouched */
}
