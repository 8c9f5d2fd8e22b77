/*
 * task.c - tasks on Lua coroutines: the ready queue, parking and waking, the timer heap,
 * cancellation, and the watchers that join uses.
 *
 * The only place that calls lua_resume. libuv callbacks reach it through loom_wake and
 * loom_sched_defer, which only link jobs into the ready queue; the queue is drained from the
 * idle and check handles, inside one protected call per drain.
 * Knows nothing of streams or HTTP.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "host.h"
#include "task.h"
#include "fail.h"

#define TASK_MT "loom.task"

#if LUA_VERSION_RELEASE_NUM >= 50406
#define reset_thread(co, from) lua_closethread(co, from)
#else
#define reset_thread(co, from) ((void)(from), lua_resetthread(co))
#endif

static void task_job(loom_t *h, loom_job_t *job);

/* ---------------------------------------------------------------- ready queue */

static void on_idle(uv_idle_t *idle) {
    loom_sched_drain((loom_t *)idle->data);
}

void loom_sched_defer(loom_t *h, loom_job_t *job) {
    loom_sched_t *s = &h->sched;
    if (job->queued)
        return;
    job->queued = 1;
    job->next = NULL;
    if (s->tail)
        s->tail->next = job;
    else
        s->head = job;
    s->tail = job;
    s->nready++;
    /* An active idle handle makes the loop poll without blocking, and its callback drains
     * jobs queued by timers in the same loop turn. */
    if (!s->idle_on && !h->closing) {
        if (s->hold_idle) {
            s->idle_owed = 1;
            return;
        }
        uv_idle_start(&s->idle, on_idle);
        s->idle_on = 1;
    }
}

static loom_job_t *pop_job(loom_sched_t *s) {
    loom_job_t *job = s->head;
    if (!job)
        return NULL;
    s->head = job->next;
    if (!s->head)
        s->tail = NULL;
    s->nready--;
    job->queued = 0;
    job->next = NULL;
    return job;
}

/* Runs the jobs queued before the drain began; jobs they queue wait for the next turn, so
 * loom.sleep(0) lets I/O callbacks in. */
static int drain_p(lua_State *L) {
    loom_t *h = lua_touserdata(L, 1);
    loom_sched_t *s = &h->sched;
    int n = s->nready;
    loom_job_t *job;
    while (n-- > 0 && !h->exit_request && !h->closing && (job = pop_job(s)) != NULL)
        job->run(h, job);
    return 0;
}

void loom_sched_drain(loom_t *h) {
    loom_sched_t *s = &h->sched;
    lua_State *L = s->L;
    if (s->head && !s->draining && !h->closing && !h->exit_request) {
        s->draining = 1;
        lua_pushcfunction(L, drain_p);
        lua_pushlightuserdata(L, h);
        if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
            fprintf(stderr, "loom: scheduler: %s\n", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        s->draining = 0;
    }
    if (s->idle_owed) { /* what loom_sched_defer left to this drain (hold_idle) */
        s->idle_owed = 0;
        if (s->head && !s->idle_on && !h->closing && !h->exit_request) {
            uv_idle_start(&s->idle, on_idle);
            s->idle_on = 1;
        }
    }
    if ((!s->head || h->closing || h->exit_request) && s->idle_on) {
        uv_idle_stop(&s->idle);
        s->idle_on = 0;
    }
}

static void on_check(uv_check_t *check) {
    loom_sched_drain((loom_t *)check->data);
}

/* ---------------------------------------------------------------- timer heap */

/* Ties go to the earlier entry, so tasks that sleep alike wake in the order they slept. */
static int earlier(loom_task_t *a, loom_task_t *b) {
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->heap_seq < b->heap_seq);
}

static void heap_set(loom_sched_t *s, int i, loom_task_t *t) {
    s->heap[i] = t;
    t->heap_idx = i;
}

static void sift_up(loom_sched_t *s, int i) {
    loom_task_t *t = s->heap[i];
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!earlier(t, s->heap[parent]))
            break;
        heap_set(s, i, s->heap[parent]);
        i = parent;
    }
    heap_set(s, i, t);
}

static void sift_down(loom_sched_t *s, int i) {
    loom_task_t *t = s->heap[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= s->nheap)
            break;
        if (c + 1 < s->nheap && earlier(s->heap[c + 1], s->heap[c]))
            c++;
        if (!earlier(s->heap[c], t))
            break;
        heap_set(s, i, s->heap[c]);
        i = c;
    }
    heap_set(s, i, t);
}

static void on_timer(uv_timer_t *timer);

/* Points the one libuv timer at the earliest deadline, or stops it. */
static void rearm(loom_sched_t *s, loom_t *h) {
    if (s->nheap == 0 || h->closing) {
        uv_timer_stop(&s->timer);
        return;
    }
    uint64_t now = uv_now(h->loop), d = s->heap[0]->deadline;
    uv_timer_start(&s->timer, on_timer, d > now ? d - now : 0, 0);
}

static int heap_add(loom_t *h, loom_task_t *t, double timeout_s) {
    loom_sched_t *s = &h->sched;
    if (s->nheap == s->capheap) {
        int cap = s->capheap ? s->capheap * 2 : 64;
        loom_task_t **heap = realloc(s->heap, (size_t)cap * sizeof *heap);
        if (!heap)
            return -1;
        s->heap = heap;
        s->capheap = cap;
    }
    if (timeout_s > 0) {
        /* Never before its time as loom.now() (uv_hrtime) counts it: the deadline is the
         * first whole ms of loop time at or after now + timeout in ns. The loop's time is
         * the same clock cut down to whole ms (or its coarse version, which lags it), so
         * the timer firing at that ms means loom.now() has passed the end. Rounding to the
         * nearest ms from the loop's cached time woke up to 1.5 ms early. */
        double ns = ceil(timeout_s * 1e9);
        if (ns > 1e18)
            ns = 1e18; /* about 30 years: effectively never, and no overflow */
        t->deadline = (uv_hrtime() + (uint64_t)ns + 999999) / 1000000;
    } else {
        /* Due at once (loom.sleep(0)): the next turn of the loop, after I/O callbacks. The
         * loop's cached time may be stale after a long stretch of Lua; refresh it. */
        uv_update_time(h->loop);
        t->deadline = uv_now(h->loop);
    }
    t->heap_seq = s->heap_seq++;
    heap_set(s, s->nheap++, t);
    sift_up(s, s->nheap - 1);
    if (t->heap_idx == 0)
        rearm(s, h);
    return 0;
}

static void heap_remove(loom_t *h, loom_task_t *t) {
    loom_sched_t *s = &h->sched;
    int i = t->heap_idx;
    if (i < 0)
        return;
    t->heap_idx = -1;
    s->nheap--;
    if (i != s->nheap) {
        heap_set(s, i, s->heap[s->nheap]);
        sift_down(s, i);
        sift_up(s, s->heap[i]->heap_idx);
    }
    if (i == 0)
        rearm(s, h);
}

static void make_ready(loom_task_t *t, int reason) {
    heap_remove(t->host, t);
    t->state = TASK_READY;
    t->wake = reason;
    loom_sched_defer(t->host, &t->job);
}

static void on_timer(uv_timer_t *timer) {
    loom_t *h = timer->data;
    loom_sched_t *s = &h->sched;
    uint64_t now = uv_now(h->loop);
    while (s->nheap > 0 && s->heap[0]->deadline <= now) {
        loom_task_t *t = s->heap[0];
        heap_remove(h, t);
        if (t->abort)
            t->abort(t->ud);
        make_ready(t, LOOM_WAKE_TIMEOUT);
    }
    rearm(s, h);
}

/* ---------------------------------------------------------------- parking */

static int raise_cancelled(lua_State *L) {
    lua_pushliteral(L, "cancelled");
    return lua_error(L);
}

static int park_k(lua_State *L, int status, lua_KContext ctx) {
    loom_task_t *t = (loom_task_t *)ctx;
    (void)status;
    if (t->wake == LOOM_WAKE_CANCEL) {
        t->cancel = 0;
        return raise_cancelled(L);
    }
    return t->build(L, t->ud, t->wake);
}

int loom_park(lua_State *L, loom_task_t *t, double timeout_s, loom_build_fn build,
              loom_abort_fn abort, void *ud) {
    if (t->cancel) {
        t->cancel = 0;
        if (abort)
            abort(ud);
        return raise_cancelled(L);
    }
    t->build = build;
    t->abort = abort;
    t->ud = ud;
    t->state = TASK_PARKED;
    t->serial++;
    t->wake = LOOM_WAKE_OK;
    if (timeout_s >= 0 && heap_add(t->host, t, timeout_s) != 0)
        return luaL_error(L, "out of memory");
    return lua_yieldk(L, 0, (lua_KContext)t, park_k);
}

void loom_task_extend(loom_task_t *t, double timeout_s) {
    if (t->state != TASK_PARKED || t->heap_idx < 0)
        return;
    heap_remove(t->host, t);
    heap_add(t->host, t, timeout_s);
}

void loom_wake(loom_task_t *t) {
    if (t->state == TASK_PARKED)
        make_ready(t, LOOM_WAKE_OK);
}

static void task_cancel(loom_task_t *t) {
    if (t->state == TASK_PARKED) {
        heap_remove(t->host, t);
        if (t->abort)
            t->abort(t->ud);
        make_ready(t, LOOM_WAKE_CANCEL);
    } else if (t->state != TASK_DONE) {
        t->cancel = 1; /* delivered when it starts or next parks */
    }
}

void loom_task_cancel(loom_task_t *t) {
    task_cancel(t);
}

loom_task_t *loom_task_self(lua_State *L, const char *fname) {
    loom_t *h = loom_host(L);
    loom_task_t *t = h ? h->sched.current : NULL;
    if (t && t->co == L)
        return t;
    if (t)
        luaL_error(L,
                   "%s: called inside a coroutine that is not a loom task "
                   "(use loom.spawn instead of coroutine.wrap/create)",
                   fname);
    else
        luaL_error(L, "%s: called outside any task (use loom.run or loom.spawn)", fname);
    return NULL;
}

/* ---------------------------------------------------------------- task lifecycle */

static void push_task(lua_State *L, loom_task_t *t) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
}

/* Wakes every task that watches t (join, gather) and is still parked for it. Returns the
 * number woken. The watcher list is uservalue 2: {task1, serial1, task2, serial2, ...}. */
static int notify_watchers(lua_State *L, loom_task_t *t);

static int lua_park_build(lua_State *L, void *ud, int reason);

static int is_cancel_value(lua_State *L, int idx) {
    size_t len;
    const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
    return s && len == 9 && memcmp(s, "cancelled", 9) == 0;
}

static int tostring_p(lua_State *L) {
    luaL_tolstring(L, 1, NULL);
    return 1;
}

/* Pushes a message for an error value, as lua.c's msghandler does. The value's __tostring
 * runs protected: one that raises or yields (which it cannot here, outside the task) must
 * not escape, or the task would never finish and its joiners, or the client of a handler,
 * would wait for ever. */
static const char *error_text(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER)
        return lua_pushstring(L, lua_tostring(L, idx));
    if (luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushcfunction(L, tostring_p);
        lua_pushvalue(L, idx);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK)
            return lua_tostring(L, -1);
        lua_pop(L, 1); /* the conversion's own error */
    }
    return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
}

/* Leaves co holding exactly: error value, traceback string. Pending <close> variables run
 * here, as coroutine.close would run them. */
static void keep_error(lua_State *L, lua_State *co) {
    lua_pushvalue(co, -1);
    lua_xmove(co, L, 1); /* L: err */
    luaL_traceback(L, co, error_text(L, -1), 0);
    lua_remove(L, -2);   /* L: err tb */
    lua_remove(L, -2);   /* L: tb */
    reset_thread(co, L); /* co: err (a <close> error replaces the first) */
    lua_settop(co, 1);
    lua_xmove(L, co, 1); /* co: err tb */
}

#define POOL_MAX 1024

/* Keeps a finished internal task for reuse: its coroutine ended well, so after clearing its
 * stack Lua can start a new function on it. The registry ref stays as the anchor. */
static int recycle(loom_t *h, loom_task_t *t) {
    loom_sched_t *s = &h->sched;
    if (!t->pooled || t->exposed || t->failed || s->npool >= POOL_MAX || h->closing)
        return 0;
    lua_settop(t->co, 0);
    t->state = TASK_DONE;
    t->on_done = NULL;
    t->done_ud = NULL;
    t->pool_next = s->pool;
    s->pool = t;
    s->npool++;
    return 1;
}

static void live_add(loom_sched_t *s, loom_task_t *t) {
    t->live_prev = NULL;
    t->live_next = s->live;
    if (s->live)
        s->live->live_prev = t;
    s->live = t;
}

static void live_remove(loom_sched_t *s, loom_task_t *t) {
    if (t->live_prev)
        t->live_prev->live_next = t->live_next;
    else if (s->live == t)
        s->live = t->live_next;
    if (t->live_next)
        t->live_next->live_prev = t->live_prev;
    t->live_prev = t->live_next = NULL;
}

static void complete(loom_t *h, loom_task_t *t) {
    lua_State *L = h->sched.L;
    t->state = TASK_DONE;
    live_remove(&h->sched, t);
    if (t->on_done) {
        t->on_done(h, t);
        if (recycle(h, t))
            return;
    }
    int woken = notify_watchers(L, t);
    luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
    t->ref = LUA_NOREF;
    if (t == h->sched.main) {
        if (h->sched.main_done)
            h->sched.main_done(h, t);
    } else if (t->failed && !t->is_cancelled && !woken && !t->observed) {
        fprintf(stderr, "loom: error in task: %s\n", lua_tostring(t->co, 2));
        fflush(stderr);
    }
}

static void finish(loom_t *h, loom_task_t *t, int status) {
    if (status == LUA_OK) {
        t->nres = lua_gettop(t->co);
    } else {
        keep_error(h->sched.L, t->co);
        t->failed = 1;
        t->is_cancelled = is_cancel_value(t->co, 1);
        t->nres = 2;
    }
    complete(h, t);
}

/* A task cancelled before it ever ran ends as if it raised "cancelled" at once. */
static void finish_unstarted(loom_t *h, loom_task_t *t) {
    lua_settop(t->co, 0);
    lua_pushliteral(t->co, "cancelled");
    lua_pushliteral(t->co, "cancelled");
    t->cancel = 0;
    t->failed = t->is_cancelled = 1;
    t->nres = 2;
    complete(h, t);
}

/* A task cancelled while it only calls coroutine.yield() (a busy loop that never waits)
 * ends at such a yield: nothing can raise there, so its pending <close> variables run as
 * the thread is closed, and it ends as cancelled. */
static void finish_yielded(loom_t *h, loom_task_t *t) {
    reset_thread(t->co, h->sched.L);
    finish_unstarted(h, t);
}

static void resume(loom_t *h, loom_task_t *t) {
    loom_sched_t *s = &h->sched;
    if (t->state == TASK_NEW && t->cancel) {
        finish_unstarted(h, t);
        return;
    }
    int nargs = t->nargs, nres = 0;
    t->nargs = 0;
    t->state = TASK_RUNNING;
    loom_task_t *prev = s->current;
    s->current = t;
    int status = lua_resume(t->co, s->L, nargs, &nres);
    s->current = prev;
    if (status == LUA_YIELD) {
        lua_pop(t->co, nres);
        if (t->state != TASK_RUNNING)
            return;    /* parked */
        if (t->cancel) /* bare yields only: no wait would ever deliver it */
            finish_yielded(h, t);
        else /* a bare coroutine.yield(): let others run first */
            make_ready(t, LOOM_WAKE_OK);
        return;
    }
    finish(h, t, status);
}

static void task_job(loom_t *h, loom_job_t *job) {
    resume(h, (loom_task_t *)job);
}

void loom_task_run_now(loom_t *h, loom_task_t *t) {
    loom_sched_t *s = &h->sched;
    if (t->job.queued) { /* take it out of the queue: it runs here instead */
        loom_job_t **p = &s->head, *prev = NULL;
        while (*p && *p != &t->job) {
            prev = *p;
            p = &(*p)->next;
        }
        if (*p) {
            *p = t->job.next;
            if (s->tail == &t->job)
                s->tail = prev;
            s->nready--;
            t->job.queued = 0;
        }
    }
    resume(h, t);
}

/* Creates a task object for the function below `nargs` values; pushes it. Not queued. */
static loom_task_t *new_task(lua_State *L, int nargs) {
    loom_t *h = loom_host(L);
    lua_State *co = lua_newthread(L);                    /* fn args.. co */
    loom_task_t *t = lua_newuserdatauv(L, sizeof *t, 2); /* fn args.. co t */
    memset(t, 0, sizeof *t);
    t->host = h;
    t->co = co;
    t->heap_idx = -1;
    t->state = TASK_NEW;
    t->nargs = nargs;
    t->job.run = task_job;
    luaL_setmetatable(L, TASK_MT);
    lua_rotate(L, -(nargs + 3), 2); /* co t fn args.. */
    lua_xmove(L, co, nargs + 1);    /* co t */
    lua_insert(L, -2);              /* t co */
    lua_setiuservalue(L, -2, 1);    /* t; uservalue 1 anchors the coroutine */
    lua_pushvalue(L, -1);
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    live_add(&h->sched, t);
    return t;
}

loom_task_t *loom_spawn(lua_State *L, int nargs) {
    loom_task_t *t = new_task(L, nargs);
    loom_sched_defer(t->host, &t->job);
    return t;
}

loom_task_t *loom_spawn_internal(loom_t *h, lua_State *L, int nargs,
                                 void (*on_done)(loom_t *, loom_task_t *), void *ud) {
    loom_sched_t *s = &h->sched;
    loom_task_t *t = s->pool;
    if (t) {
        s->pool = t->pool_next;
        s->npool--;
        t->pool_next = NULL;
        if (L != t->co) /* else pushed there already (loom_spawn_thread) */
            lua_xmove(L, t->co, nargs + 1);
        t->state = TASK_NEW;
        t->nargs = nargs;
        t->cancel = t->failed = t->observed = t->is_cancelled = 0;
        t->nres = 0;
        live_add(s, t);
    } else {
        t = new_task(L, nargs);
        lua_pop(L, 1);
        t->pooled = 1;
    }
    t->on_done = on_done;
    t->done_ud = ud;
    return t;
}

lua_State *loom_spawn_thread(loom_t *h, lua_State *L) {
    return h->sched.pool ? h->sched.pool->co : L;
}

/* ---------------------------------------------------------------- watchers */

/* Wakes the task parked with `serial`, if it still is. */
static int wake_ticket(loom_task_t *w, unsigned serial) {
    if (w && w->state == TASK_PARKED && w->serial == serial && w->build == lua_park_build) {
        make_ready(w, LOOM_WAKE_OK);
        return 1;
    }
    return 0;
}

/* Mailbox entry (gather): append the finished task to the box, wake box.task if it is
 * parked with ticket box.serial. Stack: ... box task */
static int post_to_box(lua_State *L, int box, int task) {
    lua_pushvalue(L, task);
    lua_rawseti(L, box, luaL_len(L, box) + 1);
    lua_getfield(L, box, "task");
    loom_task_t *w = lua_touserdata(L, -1);
    lua_getfield(L, box, "serial");
    unsigned serial = (unsigned)lua_tointeger(L, -1);
    lua_pop(L, 2);
    return wake_ticket(w, serial);
}

static int notify_watchers(lua_State *L, loom_task_t *t) {
    int woken = 0;
    push_task(L, t);                                 /* task */
    if (lua_getiuservalue(L, -1, 2) == LUA_TTABLE) { /* task list */
        int task = lua_gettop(L) - 1, list = task + 1;
        lua_Integer n = luaL_len(L, list);
        for (lua_Integer i = 1; i < n; i += 2) {
            if (lua_rawgeti(L, list, i) == LUA_TTABLE) {
                woken += post_to_box(L, lua_gettop(L), task) + 1;
            } else {
                loom_task_t *w = lua_touserdata(L, -1);
                lua_rawgeti(L, list, i + 1);
                woken += wake_ticket(w, (unsigned)lua_tointeger(L, -1));
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        lua_pushnil(L);
        lua_setiuservalue(L, task, 2);
    }
    lua_pop(L, 2);
    return woken;
}

/* ---------------------------------------------------------------- Lua API */

static loom_task_t *check_task(lua_State *L, int idx) {
    return luaL_checkudata(L, idx, TASK_MT);
}

static int l_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (!loom_host(L))
        return luaL_error(L, "loom is not initialised");
    loom_spawn(L, lua_gettop(L) - 1);
    return 1;
}

static int sleep_build(lua_State *L, void *ud, int reason) {
    (void)L, (void)ud, (void)reason;
    return 0;
}

static int l_sleep(lua_State *L) {
    double secs = luaL_checknumber(L, 1);
    loom_task_t *t = loom_task_self(L, "sleep");
    if (!(secs >= 0))
        secs = 0; /* negative and NaN sleep as 0 */
    return loom_park(L, t, secs, sleep_build, NULL, NULL);
}

static int l_now(lua_State *L) {
    lua_pushnumber(L, loom_sched_now());
    return 1;
}

double loom_sched_now(void) {
    return (double)uv_hrtime() / 1e9;
}

static int l_current(lua_State *L) {
    loom_t *h = loom_host(L);
    loom_task_t *t = h ? h->sched.current : NULL;
    if (t && t->co == L) {
        t->exposed = 1;
        push_task(L, t);
    } else {
        lua_pushnil(L);
    }
    return 1;
}

/* core.in_task() -> whether the caller runs as a loom task. Unlike loom.current() it does
 * not hand the task out, so a pooled handler task stays reusable. */
static int l_in_task(lua_State *L) {
    loom_t *h = loom_host(L);
    loom_task_t *t = h ? h->sched.current : NULL;
    lua_pushboolean(L, t && t->co == L);
    return 1;
}

/* core.is_current(task) -> whether `task` is the one running (without exposing it) */
static int l_is_current(lua_State *L) {
    loom_task_t *t = check_task(L, 1);
    lua_pushboolean(L, t->host->sched.current == t && t->co == L);
    return 1;
}

/* The values given to wake are on the stack; a timeout leaves `false`. */
static int lua_park_build(lua_State *L, void *ud, int reason) {
    (void)ud;
    if (reason == LOOM_WAKE_TIMEOUT) {
        lua_settop(L, 0);
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    return lua_gettop(L);
}

/* core.park([timeout]) -> true, ...values given to wake | false on timeout */
static int l_park(lua_State *L) {
    double timeout = luaL_optnumber(L, 1, -1);
    loom_task_t *t = loom_task_self(L, "park");
    lua_settop(L, 0);
    return loom_park(L, t, timeout, lua_park_build, NULL, NULL);
}

/* core.ticket() -> task, serial of its next park: what a waiter list records */
static int l_ticket(lua_State *L) {
    loom_task_t *t = loom_task_self(L, "ticket");
    push_task(L, t);
    lua_pushinteger(L, (lua_Integer)(t->serial + 1));
    return 2;
}

/* core.wake(task, serial, ...) -> true if the task was parked for that ticket */
static int l_wake(lua_State *L) {
    loom_task_t *t = check_task(L, 1);
    unsigned serial = (unsigned)luaL_checkinteger(L, 2);
    int n = lua_gettop(L) - 2;
    if (t->state != TASK_PARKED || t->serial != serial || t->build != lua_park_build) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_xmove(L, t->co, n);
    t->nargs = n;
    make_ready(t, LOOM_WAKE_OK);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.watch(task [, box]): when `task` is done, wake the running task's next park; or,
 * with a mailbox table, append the task to box and wake the ticket box.task/box.serial. */
static int l_watch(lua_State *L) {
    loom_task_t *t = check_task(L, 1);
    int has_box = lua_istable(L, 2);
    loom_task_t *self = has_box ? NULL : loom_task_self(L, "watch");
    if (t->state == TASK_DONE)
        return 0;
    if (lua_getiuservalue(L, 1, 2) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 2, 0);
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, 1, 2);
    }
    lua_Integer n = luaL_len(L, -1);
    if (has_box) {
        lua_pushvalue(L, 2);
        lua_rawseti(L, -2, n + 1);
        lua_pushboolean(L, 1);
    } else {
        push_task(L, self);
        lua_rawseti(L, -2, n + 1);
        lua_pushinteger(L, (lua_Integer)(self->serial + 1));
    }
    lua_rawseti(L, -2, n + 2);
    return 0;
}

static void count_alive(uv_handle_t *handle, void *arg) {
    loom_sched_t *s = &((loom_t *)arg)->sched;
    if (handle != (uv_handle_t *)&s->timer && handle != (uv_handle_t *)&s->idle &&
        uv_is_active(handle) && uv_has_ref(handle))
        s->stats_alive++;
}

/* core.stats() -> {timers = tasks parked with a deadline, ready = tasks and jobs queued,
 * alive = other handles and requests that keep the loop running (a listener, a stream being
 * read, a DNS lookup), handles = libuv handles and requests open, loom's own included}.
 * For tests that check nothing is left running: with timers, ready and alive at 0, loom.run
 * returns once the caller is done. */
static int l_stats(lua_State *L) {
    loom_t *h = loom_host(L);
    h->sched.stats_alive = 0;
    uv_walk(h->loop, count_alive, h);
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, h->sched.nheap);
    lua_setfield(L, -2, "timers");
    lua_pushinteger(L, h->sched.nready);
    lua_setfield(L, -2, "ready");
    /* uv.h: "active_reqs.count" is the loop's count of requests in flight */
    lua_pushinteger(L, h->sched.stats_alive + (lua_Integer)h->loop->active_reqs.count);
    lua_setfield(L, -2, "alive");
    lua_pushinteger(L, h->nhandles);
    lua_setfield(L, -2, "handles");
    return 1;
}

/* core.live_tasks() -> {task, ...}: every task not yet done but the running one and the
 * main task (the script's, or loom.run's), newest first. app:run's shutdown cancels them. */
static int l_live_tasks(lua_State *L) {
    loom_sched_t *s = &loom_host(L)->sched;
    int n = 0;
    lua_newtable(L);
    for (loom_task_t *t = s->live; t; t = t->live_next) {
        if (t == s->current || t == s->main || t->ref == LUA_NOREF)
            continue;
        t->exposed = 1; /* Lua holds it now: an internal task must not be recycled */
        push_task(L, t);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

static int task_cancel_l(lua_State *L) {
    task_cancel(check_task(L, 1));
    return 0;
}

static int task_done(lua_State *L) {
    lua_pushboolean(L, check_task(L, 1)->state == TASK_DONE);
    return 1;
}

/* t:result() -> true, ... | false, err. Only for a finished task. */
static int task_result(lua_State *L) {
    loom_task_t *t = check_task(L, 1);
    if (t->state != TASK_DONE)
        return luaL_error(L, "task is not done");
    t->observed = 1;
    int n = t->failed ? 1 : t->nres;
    lua_pushboolean(L, !t->failed);
    luaL_checkstack(L, n, "too many results");
    for (int i = 1; i <= n; i++)
        lua_pushvalue(t->co, i);
    lua_xmove(t->co, L, n);
    return 1 + n;
}

/* t:traceback() -> the failed task's traceback string, or nil. */
static int task_traceback(lua_State *L) {
    loom_task_t *t = check_task(L, 1);
    if (t->state != TASK_DONE || !t->failed)
        return 0;
    lua_pushvalue(t->co, 2);
    lua_xmove(t->co, L, 1);
    return 1;
}

/* Marks a task whose outcome its creator takes (loom.run's main task). */
static int task_observe(lua_State *L) {
    check_task(L, 1)->observed = 1;
    return 0;
}

static int task_tostring(lua_State *L) {
    static const char *const names[] = {"new", "ready", "running", "parked", "done"};
    loom_task_t *t = check_task(L, 1);
    lua_pushfstring(L, "loom.task (%s): %p", names[t->state], (void *)t);
    return 1;
}

static const luaL_Reg task_methods[] = {
    {"cancel", task_cancel_l},     {"done", task_done},       {"result", task_result},
    {"traceback", task_traceback}, {"observe", task_observe}, {NULL, NULL},
};

static const luaL_Reg sched_funcs[] = {
    {"spawn", l_spawn},     {"sleep", l_sleep},     {"now", l_now},
    {"current", l_current}, {"in_task", l_in_task}, {"is_current", l_is_current},
    {"park", l_park},       {"ticket", l_ticket},   {"wake", l_wake},
    {"watch", l_watch},     {"stats", l_stats},     {"live_tasks", l_live_tasks},
    {NULL, NULL},
};

int loom_open_sched(lua_State *L) {
    luaL_newmetatable(L, TASK_MT); /* M mt */
    luaL_newlib(L, task_methods);  /* M mt methods */
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, "task_methods"); /* M.task_methods = methods */
    lua_setfield(L, -2, "__index");      /* mt.__index = methods */
    lua_pushcfunction(L, task_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_setfuncs(L, sched_funcs, 0);
    return 0;
}

/* ---------------------------------------------------------------- handles */

static void on_sched_closed(uv_handle_t *handle) {
    loom_handle_closed((loom_t *)handle->data);
}

void loom_sched_init(loom_t *h) {
    loom_sched_t *s = &h->sched;
    memset(s, 0, sizeof *s);
    s->L = h->L;
    uv_timer_init(h->loop, &s->timer);
    uv_idle_init(h->loop, &s->idle);
    uv_check_init(h->loop, &s->check);
    s->timer.data = s->idle.data = s->check.data = h;
    h->nhandles += 3;
    uv_check_start(&s->check, on_check);
    uv_unref((uv_handle_t *)&s->check);
}

void loom_sched_close(loom_t *h) {
    loom_sched_t *s = &h->sched;
    uv_close((uv_handle_t *)&s->timer, on_sched_closed);
    uv_close((uv_handle_t *)&s->idle, on_sched_closed);
    uv_close((uv_handle_t *)&s->check, on_sched_closed);
    for (int i = 0; i < s->nheap; i++)
        s->heap[i]->heap_idx = -1;
    free(s->heap);
    s->heap = NULL;
    s->nheap = s->capheap = 0;
}
