/*
 * signal.c - waiting for signals in a task: core.wait_signal{"SIGINT", "SIGTERM"} parks
 * until one arrives. The handles are unreferenced (a wait alone does not keep the process
 * alive) and closed when the wait ends.
 *
 * loom.signal("SIGHUP") (core.signal_open) is a lasting listener: its handle catches the
 * signal from creation to close, counting arrivals nobody waits for; s:wait() takes one.
 * Its handle is referenced only while a task waits, so a waiting task keeps the process
 * alive (as a Node listener does) and an idle listener does not.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "host.h"
#include "fail.h"

#define MAX_SIGNALS 8

typedef struct {
    loom_res_t res;
    loom_t *host;
    loom_task_t *task;
    int n, open, got, closed;
    int boxed;
    uv_signal_t sig[MAX_SIGNALS];
} sigwait_t;

static const struct {
    const char *name;
    int num;
} names[] = {{"SIGINT", SIGINT},   {"SIGTERM", SIGTERM}, {"SIGHUP", SIGHUP}, {"SIGUSR1", SIGUSR1},
             {"SIGUSR2", SIGUSR2}, {"SIGQUIT", SIGQUIT}, {NULL, 0}};

static const char *name_of(int num) {
    for (int i = 0; names[i].name; i++)
        if (names[i].num == num)
            return names[i].name;
    return "?";
}

/* The number of a signal by its name; 0 for a name not in the table. */
static int num_of(const char *name) {
    for (int i = 0; names[i].name; i++)
        if (strcmp(names[i].name, name) == 0)
            return names[i].num;
    return 0;
}

static void on_closed(uv_handle_t *h) {
    sigwait_t *w = h->data;
    loom_handle_closed(w->host);
    if (--w->open == 0)
        free(w);
}

static void close_all(sigwait_t *w) {
    if (w->closed)
        return;
    w->closed = 1;
    loom_res_remove(&w->res);
    for (int i = 0; i < w->n; i++)
        if (!uv_is_closing((uv_handle_t *)&w->sig[i]))
            uv_close((uv_handle_t *)&w->sig[i], on_closed);
}

static void res_close(loom_res_t *r) {
    close_all((sigwait_t *)r);
}

static void on_signal(uv_signal_t *s, int signum) {
    sigwait_t *w = s->data;
    if (!w->got)
        w->got = signum;
    if (w->task)
        loom_wake(w->task);
}

static int wait_build(lua_State *L, void *ud, int reason) {
    sigwait_t *w = ud;
    (void)reason;
    w->task = NULL;
    int got = w->got;
    close_all(w);
    lua_pushstring(L, name_of(got));
    return 1;
}

static void wait_abort(void *ud) {
    sigwait_t *w = ud;
    w->task = NULL;
    close_all(w);
}

/* core.wait_signal({names}) -> the name of the signal that came */
static int l_wait_signal(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    loom_task_t *t = loom_task_self(L, "wait_signal");
    loom_t *h = loom_host(L);
    int n = (int)luaL_len(L, 1);
    luaL_argcheck(L, n >= 1 && n <= MAX_SIGNALS, 1, "1 to 8 signal names expected");
    int nums[MAX_SIGNALS];
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        const char *s = luaL_checkstring(L, -1);
        nums[i] = num_of(s);
        if (!nums[i])
            return luaL_argerror(L, 1, lua_pushfstring(L, "unknown signal '%s'", s));
        lua_pop(L, 1);
    }
    sigwait_t *w = calloc(1, sizeof *w);
    if (!w)
        return luaL_error(L, "out of memory");
    w->host = h;
    w->task = t;
    w->n = n;
    for (int i = 0; i < n; i++) {
        uv_signal_init(h->loop, &w->sig[i]);
        w->sig[i].data = w;
        w->open++;
        loom_handle_opened(h);
        uv_signal_start(&w->sig[i], on_signal, nums[i]);
        uv_unref((uv_handle_t *)&w->sig[i]);
    }
    loom_res_add(h, &w->res, res_close);
    return loom_park(L, t, -1, wait_build, wait_abort, w);
}

/* ---------------------------------------------------------------- listeners */

#define SIGNAL_MT "loom.signal"

typedef struct {
    loom_res_t res;
    loom_t *host;
    loom_task_t *waiter;
    uv_signal_t sig;
    int num;
    unsigned pending; /* arrivals nobody took yet */
    int closed, boxed, handle_closed;
} listener_t;

static void listener_free_if_done(listener_t *l) {
    if (l->handle_closed && !l->boxed)
        free(l);
}

static void on_listener_closed(uv_handle_t *h) {
    listener_t *l = h->data;
    l->handle_closed = 1;
    loom_handle_closed(l->host);
    listener_free_if_done(l);
}

/* Idempotent: a parked waiter wakes with "closed". */
static void listener_close(listener_t *l) {
    if (l->closed)
        return;
    l->closed = 1;
    loom_res_remove(&l->res);
    uv_close((uv_handle_t *)&l->sig, on_listener_closed);
    if (l->waiter)
        loom_wake(l->waiter);
}

static void listener_res_close(loom_res_t *r) {
    listener_close((listener_t *)r);
}

static void on_listener_signal(uv_signal_t *s, int signum) {
    listener_t *l = s->data;
    (void)signum;
    l->pending++;
    if (l->waiter)
        loom_wake(l->waiter);
}

static void listener_unwait(listener_t *l) {
    l->waiter = NULL;
    if (!l->closed)
        uv_unref((uv_handle_t *)&l->sig);
}

static int listener_build(lua_State *L, void *ud, int reason) {
    listener_t *l = ud;
    (void)reason;
    listener_unwait(l);
    if (!l->pending)
        return loom_fail(L, "closed", "signal listener closed (%s)", name_of(l->num));
    l->pending--;
    lua_pushstring(L, name_of(l->num));
    return 1;
}

static void listener_abort(void *ud) {
    listener_unwait(ud);
}

static int listener_wait_build(lua_State *L, void *ud, int reason) {
    listener_t *l = ud;
    if (reason == LOOM_WAKE_TIMEOUT && !l->pending && !l->closed)
        return loom_fail(L, "timeout", "no %s came", name_of(l->num));
    return listener_build(L, ud, reason);
}

static listener_t *check_listener(lua_State *L) {
    return *(listener_t **)luaL_checkudata(L, 1, SIGNAL_MT);
}

/* core.signal_open(name) -> listener. Unknown names raise. */
static int l_signal_open(lua_State *L) {
    const char *s = luaL_checkstring(L, 1);
    int num = num_of(s);
    if (!num)
        return luaL_argerror(L, 1, lua_pushfstring(L, "unknown signal '%s'", s));
    loom_t *h = loom_host(L);
    listener_t **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    listener_t *l = calloc(1, sizeof *l);
    if (!l)
        return luaL_error(L, "out of memory");
    l->host = h;
    l->num = num;
    uv_signal_init(h->loop, &l->sig);
    l->sig.data = l;
    loom_handle_opened(h);
    int rc = uv_signal_start(&l->sig, on_listener_signal, num);
    uv_unref((uv_handle_t *)&l->sig);
    loom_res_add(h, &l->res, listener_res_close);
    *box = l;
    l->boxed = 1;
    luaL_setmetatable(L, SIGNAL_MT);
    if (rc < 0) {
        listener_close(l);
        return loom_fail_uv(L, "closed", rc, s);
    }
    return 1;
}

/* s:wait([timeout]) -> signal name | nil, "closed: ..." | nil, "timeout: ..." */
static int l_listener_wait(lua_State *L) {
    listener_t *l = check_listener(L);
    double timeout = luaL_optnumber(L, 2, -1);
    if (l->pending || l->closed)
        return listener_build(L, l, LOOM_WAKE_OK);
    loom_task_t *t = loom_task_self(L, "wait");
    if (l->waiter)
        return luaL_error(L, "wait: another task is already waiting for %s", name_of(l->num));
    l->waiter = t;
    uv_ref((uv_handle_t *)&l->sig);
    return loom_park(L, t, timeout, listener_wait_build, listener_abort, l);
}

/* s:close() */
static int l_listener_close(lua_State *L) {
    listener_t *l = check_listener(L);
    if (l)
        listener_close(l);
    return 0;
}

static int l_listener_gc(lua_State *L) {
    listener_t *l = check_listener(L);
    if (!l)
        return 0;
    listener_close(l);
    l->boxed = 0;
    listener_free_if_done(l);
    return 0;
}

static const luaL_Reg listener_methods[] = {
    {"wait", l_listener_wait},
    {"close", l_listener_close},
    {NULL, NULL},
};

static const luaL_Reg signal_funcs[] = {
    {"wait_signal", l_wait_signal},
    {"signal_open", l_signal_open},
    {NULL, NULL},
};

int loom_open_signal(lua_State *L) {
    luaL_newmetatable(L, SIGNAL_MT);
    luaL_newlib(L, listener_methods);
    lua_setfield(L, -2, "__index"); /* mt.__index = methods */
    lua_pushcfunction(L, l_listener_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_listener_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    luaL_setfuncs(L, signal_funcs, 0);
    return 0;
}
