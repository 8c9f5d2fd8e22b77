/*
 * host.h - the host object shared by every part of the core.
 * Owns the lua_State, the uv_loop_t, the scheduler and the list of open resources,
 * and the order they are torn down in. Knows nothing of HTTP.
 */
#ifndef LOOM_HOST_H
#define LOOM_HOST_H

#include "loom.h"
#include "task.h"

/* Anything holding libuv handles links itself here so loom_free can close it. */
typedef struct loom_res loom_res_t;
struct loom_res {
    loom_res_t *prev, *next;
    void (*close)(loom_res_t *r); /* idempotent; starts uv_close of every handle */
};

struct loom {
    uv_loop_t *loop;
    uv_loop_t own_loop;
    int owns_loop;
    lua_State *L; /* the main thread */
    int owns_L;
    struct loom_alloc *alloc; /* the allocator of a state loom_new made, else NULL */
    int warn_on, warn_cont;   /* warnings: "@on" was given; a message is coming in pieces */
    int closing;              /* loom_free or the state's finalizer has begun */
    int exit_code;            /* set by loom.exit or by a failing main task */
    int exit_request;         /* loom.exit was called */
    int nhandles;             /* libuv handles opened and not yet through their close callback */
    uv_async_t stop_async;
    loom_sched_t sched;
    loom_res_t res; /* sentinel of the resource list */
};

/* The host bound to L's state, or NULL. Inline, so the scheduler below reads it without
 * calling up into this file. */
extern const char loom_host_key;
static inline loom_t *loom_host(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &loom_host_key);
    loom_t *h = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return h;
}

/* Creates a host for L on loop (NULL: a loop of its own); embed.c's loom_new stands on it. */
loom_t *loom_host_create(lua_State *L, uv_loop_t *loop);

/* Creates and binds a host for a state loom does not own (the `require "loom"` case). */
loom_t *loom_host_attach(lua_State *L);

int loom_open_host(lua_State *L);

void loom_res_add(loom_t *h, loom_res_t *r, void (*close)(loom_res_t *));
void loom_res_remove(loom_res_t *r);

/* Every libuv handle loom opens is counted, so teardown knows when all are closed. */
void loom_handle_opened(loom_t *h);
void loom_handle_closed(loom_t *h);

#endif
