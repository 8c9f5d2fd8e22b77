/*
 * signal.c - waiting for signals in a task: core.wait_signal{"SIGINT", "SIGTERM"} parks
 * until one arrives. The handles are unreferenced (a wait alone does not keep the process
 * alive) and closed when the wait ends.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "host.h"

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
        nums[i] = 0;
        for (int k = 0; names[k].name; k++)
            if (strcmp(names[k].name, s) == 0)
                nums[i] = names[k].num;
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

static const luaL_Reg signal_funcs[] = {
    {"wait_signal", l_wait_signal},
    {NULL, NULL},
};

int loom_open_signal(lua_State *L) {
    luaL_setfuncs(L, signal_funcs, 0);
    return 0;
}
