#ifndef LOOM_LUA_ALLOC_H
#define LOOM_LUA_ALLOC_H

#include <stddef.h>

typedef struct loom_alloc loom_alloc_t;

loom_alloc_t *loom_alloc_new(void);
/* Frees the cached blocks; after lua_close of every state that used it. */
void loom_alloc_free(loom_alloc_t *a);
/* A lua_Alloc; ud is the loom_alloc_t. */
void *loom_alloc_lua(void *ud, void *ptr, size_t osize, size_t nsize);

#endif
