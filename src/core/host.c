/*
 * host.c - the host object: owns the lua_State and the uv_loop_t, the list of open
 * resources, the main task, and the order everything is torn down in.
 * Also the Lua entry points that drive the loop: loom.run and loom.exit.
 * Knows nothing of streams or HTTP beyond the resource list.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include <lualib.h>
#include "host.h"
#include "lua_alloc.h"

const char loom_host_key = 'h';       /* registry[&loom_host_key] = lightuserdata(host) */
static const char HOST_BOX_KEY = 'b'; /* registry[&HOST_BOX_KEY] = the box that frees it */
static const char MAIN_KEY = 'm';     /* registry[&MAIN_KEY] = the main task */

/* ---------------------------------------------------------------- resources */

void loom_res_add(loom_t *h, loom_res_t *r, void (*close)(loom_res_t *)) {
    r->close = close;
    r->next = h->res.next;
    r->prev = &h->res;
    h->res.next->prev = r;
    h->res.next = r;
}

void loom_res_remove(loom_res_t *r) {
    if (!r->next)
        return;
    r->prev->next = r->next;
    r->next->prev = r->prev;
    r->next = r->prev = NULL;
}

void loom_handle_opened(loom_t *h) {
    h->nhandles++;
}

void loom_handle_closed(loom_t *h) {
    h->nhandles--;
}

/* ---------------------------------------------------------------- creation */

static void on_stop_async(uv_async_t *a) {
    uv_stop(a->loop);
}

static void main_done(loom_t *h, loom_task_t *t);

loom_t *loom_host_create(lua_State *L, uv_loop_t *loop) {
    loom_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    if (loop) {
        h->loop = loop;
    } else {
        if (uv_loop_init(&h->own_loop) != 0) {
            free(h);
            return NULL;
        }
        h->loop = &h->own_loop;
        h->owns_loop = 1;
    }
    h->L = L;
    /* Lua 5.4's incremental collector finishes a small heap's whole cycle in one step: with
     * a few hundred bytes per request that is a ~200 us stop every thousand requests, in
     * the tail of every request in flight. Generational collection (young objects, mostly
     * dead request tables) measured 13 us steps at a quarter of the total cost. */
    lua_gc(L, LUA_GCGEN, 0, 0);
    h->res.next = h->res.prev = &h->res;
    uv_async_init(h->loop, &h->stop_async, on_stop_async);
    uv_unref((uv_handle_t *)&h->stop_async);
    h->stop_async.data = h;
    h->nhandles++;
    loom_sched_init(h);
    h->sched.main_done = main_done;
    lua_pushlightuserdata(L, h);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &loom_host_key);
    return h;
}

static void on_host_handle_closed(uv_handle_t *handle) {
    loom_handle_closed((loom_t *)handle->data);
}

/* Closes every resource and handle, and runs the loop until their close callbacks ran.
 * Tasks still parked are abandoned: nothing resumes them from here on. */
static void host_teardown(loom_t *h) {
    if (h->closing)
        return;
    h->closing = 1;
    while (h->res.next != &h->res) {
        loom_res_t *r = h->res.next;
        loom_res_remove(r);
        r->close(r);
    }
    loom_sched_close(h);
    uv_close((uv_handle_t *)&h->stop_async, on_host_handle_closed);
    /* UV_RUN_ONCE does not block while handles are closing; it may block on requests
     * (a DNS lookup in the thread pool), which are counted too and finish by themselves. */
    while (h->nhandles > 0)
        uv_run(h->loop, UV_RUN_ONCE);
}

static void host_destroy(loom_t *h) {
    if (h->owns_loop && uv_loop_close(h->loop) != 0)
        fprintf(stderr, "loom: internal error: the loop still has open handles\n");
    loom_alloc_free(h->alloc);
    free(h);
}

/* Module mode: the state belongs to someone else (stock lua); a box in the registry frees
 * the host when the state closes. It is created first, so it is finalized last. */
static int host_box_gc(lua_State *L) {
    loom_t **box = lua_touserdata(L, 1);
    loom_t *h = *box;
    if (!h)
        return 0;
    *box = NULL;
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &loom_host_key);
    host_teardown(h);
    host_destroy(h);
    return 0;
}

loom_t *loom_host_attach(lua_State *L) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    lua_State *main = lua_tothread(L, -1);
    lua_pop(L, 1);
    loom_t **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, host_box_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "loom.host");
    lua_setfield(L, -2, "__name");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &HOST_BOX_KEY);
    loom_t *h = loom_host_create(main, NULL);
    if (!h)
        luaL_error(L, "loom: cannot create the event loop");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &HOST_BOX_KEY);
    *(loom_t **)lua_touserdata(L, -1) = h;
    lua_pop(L, 1);
    return h;
}

lua_State *loom_lua(loom_t *h) {
    return h->L;
}

uv_loop_t *loom_loop(loom_t *h) {
    return h->loop;
}

/* ---------------------------------------------------------------- main task */

/* Called by the scheduler when the main task ends. A failing main task ends the run with
 * status 1 (as in lua and node); in the host its traceback is printed. */
static void main_done(loom_t *h, loom_task_t *t) {
    if (!t->failed)
        return;
    if (!t->observed) {
        fprintf(stderr, "loom: %s\n", lua_tostring(t->co, 2));
        fflush(stderr);
    }
    h->exit_code = 1;
    h->exit_request = 1;
    uv_stop(h->loop);
}

/* Starts the function below `nargs` values on the host's stack as the main task. */
static int start_main(loom_t *h, int nargs) {
    lua_State *L = h->L;
    h->exit_request = 0; /* a host may run one script after another */
    h->exit_code = 0;
    loom_task_t *t = loom_spawn(L, nargs);
    t->observed = 0;
    lua_rawsetp(L, LUA_REGISTRYINDEX, &MAIN_KEY);
    h->sched.main = t;
    loom_task_run_now(h, t);
    return 0;
}

static void set_arg(lua_State *L, const char *path, int argc, char **argv) {
    lua_createtable(L, argc, 1);
    lua_pushstring(L, path);
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
}

int loom_dofile(loom_t *h, const char *path, int argc, char **argv) {
    lua_State *L = h->L;
    set_arg(L, path, argc, argv);
    if (luaL_loadfile(L, path) != LUA_OK)
        return 1;
    for (int i = 0; i < argc; i++)
        lua_pushstring(L, argv[i]);
    return start_main(h, argc);
}

int loom_dostring(loom_t *h, const char *code, const char *name) {
    if (luaL_loadbuffer(h->L, code, strlen(code), name) != LUA_OK)
        return 1;
    return start_main(h, 0);
}

int loom_run(loom_t *h) {
    if (!h->exit_request)
        uv_run(h->loop, UV_RUN_DEFAULT);
    return h->exit_code;
}

void loom_stop(loom_t *h) {
    uv_async_send(&h->stop_async);
}

void loom_free(loom_t *h) {
    if (!h)
        return;
    host_teardown(h);
    if (h->owns_L) {
        lua_close(h->L);
    } else {
        lua_pushnil(h->L);
        lua_rawsetp(h->L, LUA_REGISTRYINDEX, &loom_host_key);
    }
    host_destroy(h);
}

/* ---------------------------------------------------------------- Lua API */

/* core.run(fn, ...) -> fn's results; raises fn's error. Drives the loop until no work is
 * left. For stock lua, where nothing else runs the loop. */
static int l_run(lua_State *L) {
    loom_t *h = loom_host(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (h->sched.current || h->sched.draining)
        return luaL_error(L, "loom.run: cannot be called inside a task");
    lua_State *saved = h->sched.L;
    loom_task_t *saved_main = h->sched.main;
    h->sched.L = L;
    h->exit_request = 0;
    h->exit_code = 0;
    loom_task_t *t = loom_spawn(L, lua_gettop(L) - 1); /* task */
    t->observed = 1;
    h->sched.main = t;
    loom_task_run_now(h, t);
    if (!h->exit_request)
        uv_run(h->loop, UV_RUN_DEFAULT);
    h->sched.L = saved;
    h->sched.main = saved_main;
    if (h->exit_request && t->state != TASK_DONE)
        return 0; /* loom.exit: the Lua side exits the process */
    if (t->state != TASK_DONE)
        return luaL_error(L, "loom.run: the main task is still waiting, but nothing is left "
                             "that could wake it");
    /* results: true, ... or false, err, traceback */
    luaL_checkstack(L, t->nres + 1, "too many results");
    for (int i = 1; i <= t->nres; i++)
        lua_pushvalue(t->co, i);
    lua_xmove(t->co, L, t->nres);
    if (t->failed) {
        lua_pop(L, 1); /* traceback */
        return lua_error(L);
    }
    return t->nres;
}

static int exit_build(lua_State *L, void *ud, int reason) {
    (void)L, (void)ud, (void)reason;
    return 0;
}

/* core.exit([code]): ends the run with `code`; the calling task never resumes. */
static int l_exit(lua_State *L) {
    loom_t *h = loom_host(L);
    int code = lua_isboolean(L, 1) ? !lua_toboolean(L, 1) : (int)luaL_optinteger(L, 1, 0);
    h->exit_code = code;
    h->exit_request = 1;
    uv_stop(h->loop);
    loom_task_t *t = h->sched.current;
    if (t && t->co == L)
        return loom_park(L, t, -1, exit_build, NULL, NULL);
    return 0;
}

static int l_exit_status(lua_State *L) {
    loom_t *h = loom_host(L);
    lua_pushboolean(L, h->exit_request);
    lua_pushinteger(L, h->exit_code);
    return 2;
}

static const luaL_Reg host_funcs[] = {
    {"run", l_run},
    {"exit", l_exit},
    {"exit_status", l_exit_status},
    {NULL, NULL},
};

int loom_open_host(lua_State *L) {
    luaL_setfuncs(L, host_funcs, 0);
    lua_pushliteral(L, LOOM_VERSION);
    lua_setfield(L, -2, "version");
    return 0;
}
