/*
 * resp_mux.c - loom.redis's shared connection (automatic pipelining) in C.
 *
 * The commands of every task are encoded into one buffer, which leaves in one write in the
 * loop's prepare phase: after every callback and every scheduler drain of the turn, just
 * before the loop waits, so the commands of all the requests one turn brought (each
 * connection's read runs its handler at once) share a write, and Redis reads them at once.
 * The replies are scanned as they arrive (in the stream's read callback, no Lua) and handed,
 * in order, to the tasks that sent the commands; each task builds its Lua values from the
 * reply's bytes when it resumes. A waiter that gives up (timeout, cancel) leaves its slot in
 * the queue: its reply is read and dropped.
 *
 * What needs a task stays in lua/loom/redis.lua: opening the connection (TCP, TLS, AUTH,
 * SELECT), in a task this file spawns when a command finds no connection; it hands the
 * stream over with resp_mux_bind or gives up with resp_mux_fail.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "resp_lua.h"
#include "host.h"
#include "stream.h"
#include "task.h"
#include "fail.h"

#define MUX_MT "loom.redis.mux"
#define SLOT_INLINE 48       /* reply bytes kept in the slot itself (a short GET's reply) */
#define FREE_SLOTS 256       /* spare slots kept for reuse */
#define OUT_KEEP (64 * 1024) /* an output buffer a burst grew past this is given back */

enum { M_IDLE, M_CONNECTING, M_OPEN };

typedef struct mux mux_t;

/* One waiter: a command (or an r:pipeline batch) whose replies are owed. */
typedef struct slot {
    struct slot *next, *prev; /* the queue (next only), the handed list or the spare list */
    mux_t *m;
    loom_task_t *task; /* NULL once its waiter gave up: the replies are dropped */
    int want;          /* replies owed: 1, or a batch's n */
    int batch;         /* the waiter takes an array (r:pipeline) */
    int got;
    int failed; /* data holds an error message instead of replies */
    char *data; /* the replies' bytes, or the message: inl while they fit */
    size_t len, cap;
    char inl[SLOT_INLINE];
} slot_t;

struct mux {
    loom_res_t res;
    loom_t *host;
    loom_stream_t *s; /* the connection, while M_OPEN */
    int state;
    int closing; /* r:close(): the connection goes once nothing is owed */
    int dead;    /* shut down (host teardown, collected): handles closing */
    int boxed;
    int handles; /* libuv handles not through their close callback */
    int prep_on;
    loom_resp_limits_t lim;
    loom_resp_scan_t scan; /* of the reply arriving at the stream's read position */
    slot_t *head, *tail;   /* waiters, in the order of their commands (sent or not) */
    slot_t *handed;        /* slots of woken tasks, until they build their values */
    slot_t *spare;
    int nspare;
    loom_resp_out_t out; /* commands not written yet */
    uv_prepare_t prep;
    uv_timer_t timer;
    double timeout;  /* seconds a waiter waits, and the reader without progress; < 0 none */
    uint64_t last;   /* loop ms of the reader's last progress */
    char where[160]; /* "host:port" */
};

/* ---------------------------------------------------------------- slots */

static slot_t *slot_new(mux_t *m) {
    slot_t *sl = m->spare;
    if (sl) {
        m->spare = sl->next;
        m->nspare--;
    } else {
        sl = malloc(sizeof *sl);
        if (!sl)
            return NULL;
    }
    sl->next = sl->prev = NULL;
    sl->m = m;
    sl->task = NULL;
    sl->want = 1;
    sl->batch = sl->got = sl->failed = 0;
    sl->data = sl->inl;
    sl->len = 0;
    sl->cap = SLOT_INLINE;
    return sl;
}

static void slot_free(mux_t *m, slot_t *sl) {
    if (sl->data != sl->inl)
        free(sl->data);
    if (m->nspare < FREE_SLOTS && !m->dead) {
        sl->next = m->spare;
        m->spare = sl;
        m->nspare++;
    } else {
        free(sl);
    }
}

/* Appends n bytes to the slot's data: 0, or -1 when out of memory. */
static int slot_append(slot_t *sl, const char *p, size_t n) {
    if (sl->cap - sl->len < n) {
        size_t cap = sl->cap * 2;
        while (cap - sl->len < n)
            cap *= 2;
        char *d = sl->data == sl->inl ? malloc(cap) : realloc(sl->data, cap);
        if (!d)
            return -1;
        if (sl->data == sl->inl)
            memcpy(d, sl->inl, sl->len);
        sl->data = d;
        sl->cap = cap;
    }
    memcpy(sl->data + sl->len, p, n);
    sl->len += n;
    return 0;
}

static slot_t *queue_pop(mux_t *m) {
    slot_t *sl = m->head;
    m->head = sl->next;
    if (!m->head)
        m->tail = NULL;
    sl->next = NULL;
    return sl;
}

/* The slot's replies (or its error) are ready: its task builds them when it runs. */
static void hand(mux_t *m, slot_t *sl) {
    sl->prev = NULL;
    sl->next = m->handed;
    if (m->handed)
        m->handed->prev = sl;
    m->handed = sl;
    loom_wake(sl->task);
    sl->task = NULL;
}

static void handed_unlink(mux_t *m, slot_t *sl) {
    if (sl->prev)
        sl->prev->next = sl->next;
    else
        m->handed = sl->next;
    if (sl->next)
        sl->next->prev = sl->prev;
    sl->next = sl->prev = NULL;
}

/* ---------------------------------------------------------------- the connection */

/* Closes the connection (if any); nothing is owed on it any more. */
static void conn_drop(mux_t *m) {
    loom_stream_t *s = m->s;
    m->s = NULL;
    m->state = M_IDLE;
    loom_resp_scan_init(&m->scan);
    if (m->prep_on) {
        m->prep_on = 0;
        uv_prepare_stop(&m->prep);
    }
    if (s) {
        s->on_event = NULL;
        s->owner = NULL;
        loom_stream_close(s); /* freed by stream.c once libuv lets go */
    }
}

/* Every waiter gets an error: the first `cause`, the others closed: (as the first was the
 * one the failure hit). What was not sent is dropped. */
static void fail_all(mux_t *m, const char *cause) {
    char lost[512];
    if (strncmp(cause, "closed: ", 8) == 0)
        snprintf(lost, sizeof lost, "%s", cause);
    else
        snprintf(lost, sizeof lost, "closed: the connection failed (%s)", cause);
    m->out.len = 0;
    int first = 1;
    while (m->head) {
        slot_t *sl = queue_pop(m);
        if (!sl->task) {
            slot_free(m, sl);
            continue;
        }
        const char *msg = first ? cause : lost;
        first = 0;
        sl->failed = 1;
        sl->len = 0;
        if (slot_append(sl, msg, strlen(msg)) != 0)
            sl->len = 0; /* an empty message rather than none */
        hand(m, sl);
    }
}

/* The connection failed: closed, every waiter told. */
static void conn_fail(mux_t *m, const char *cause) {
    conn_drop(m);
    fail_all(m, cause);
}

/* Nothing owed: the connection idles as a pooled one does (reading, so that the server's
 * close is seen, but keeping nothing alive), or goes when the pool was closed. */
static void went_idle(mux_t *m) {
    if (m->closing)
        conn_drop(m);
    else
        loom_stream_ref(m->s, 0);
}

/* A whole reply of `size` bytes at p: it is the head waiter's. */
static void deliver(mux_t *m, const char *p, size_t size) {
    slot_t *sl = m->head;
    if (sl->task && slot_append(sl, p, size) != 0) {
        conn_fail(m, "closed: out of memory for a reply");
        return;
    }
    if (++sl->got < sl->want)
        return;
    queue_pop(m);
    if (sl->task)
        hand(m, sl);
    else
        slot_free(m, sl);
}

/* Why the stream ended, as the stream's own reads say it. */
static void stream_end_msg(loom_stream_t *s, char *buf, size_t len) {
    const char *tls = loom_stream_tls_error(s);
    if (s->state != ST_OPEN)
        snprintf(buf, len, "closed: stream is closed");
    else if (tls)
        snprintf(buf, len, "tls: %s (%s)", tls, s->peer);
    else if (s->rerr)
        snprintf(buf, len, "closed: %s", uv_strerror(s->rerr));
    else if (s->werr)
        snprintf(buf, len, "closed: %s (%s)", uv_strerror(s->werr), s->peer);
    else
        snprintf(buf, len, "closed: end of stream");
}

/* The stream's read events (and its close under us: the host's teardown). */
static void on_event(loom_stream_t *s) {
    mux_t *m = s->owner;
    char msg[300];
    if (s->state != ST_OPEN) {
        s->on_event = NULL;
        s->owner = NULL;
        m->s = NULL;
        conn_fail(m, "closed: stream is closed");
        return;
    }
    uint64_t now = uv_now(m->host->loop);
    while (s->len > s->pos) {
        if (!m->head) { /* bytes nobody asked for: the connection is out of step */
            conn_drop(m);
            return;
        }
        int rc = loom_resp_scan(&m->scan, &m->lim, s->buf + s->pos, s->len - s->pos);
        if (rc == LOOM_RESP_MORE)
            break;
        if (rc == LOOM_RESP_BAD) {
            snprintf(msg, sizeof msg, "redis: protocol error: %s", m->scan.err);
            conn_fail(m, msg);
            return;
        }
        size_t size = m->scan.off;
        loom_resp_scan_init(&m->scan);
        m->last = now;
        deliver(m, s->buf + s->pos, size);
        if (m->s != s)
            return;
        loom_stream_consume(s, size);
    }
    if (s->eof || s->rerr || s->werr) {
        stream_end_msg(s, msg, sizeof msg);
        conn_fail(m, msg);
        return;
    }
    if (!m->head)
        went_idle(m);
}

/* The prepare phase: what this turn queued leaves in one write. */
static void on_prepare(uv_prepare_t *prep) {
    mux_t *m = prep->data;
    m->prep_on = 0;
    uv_prepare_stop(prep);
    if (m->state != M_OPEN || m->out.len == 0)
        return;
    uv_buf_t b = uv_buf_init(m->out.p, (unsigned)m->out.len);
    int rc = loom_stream_send(m->s, &b, 1); /* what the kernel leaves is copied and queued */
    m->out.len = 0;
    if (m->out.cap > OUT_KEEP) {
        free(m->out.p);
        m->out.p = NULL;
        m->out.cap = 0;
    }
    if (rc < 0) {
        char msg[300];
        const char *tls = loom_stream_tls_error(m->s);
        if (tls)
            snprintf(msg, sizeof msg, "tls: %s (%s)", tls, m->s->peer);
        else
            snprintf(msg, sizeof msg, "closed: %s (%s)", uv_strerror(rc), m->s->peer);
        conn_fail(m, msg);
    }
}

static void arm_prepare(mux_t *m) {
    if (!m->prep_on) {
        m->prep_on = 1;
        uv_prepare_start(&m->prep, on_prepare);
    }
}

static uint64_t timeout_ms(const mux_t *m) {
    return (uint64_t)(m->timeout * 1000 + 0.5);
}

/* The reader's deadline: no reply for `timeout` while some are owed closes the connection. */
static void on_timer(uv_timer_t *tm) {
    mux_t *m = tm->data;
    if (!m->head || m->state != M_OPEN)
        return;
    uint64_t now = uv_now(m->host->loop), ms = timeout_ms(m);
    if (now - m->last < ms) {
        uv_timer_start(tm, on_timer, ms - (now - m->last), 0);
        return;
    }
    char msg[300];
    snprintf(msg, sizeof msg, "timeout: read from %s", m->s->peer);
    conn_fail(m, msg);
}

/* Commands are owed now where none were: the connection keeps the loop alive, the reader's
 * deadline runs. */
static void owed(mux_t *m) {
    loom_stream_ref(m->s, 1);
    m->last = uv_now(m->host->loop);
    if (m->timeout >= 0 && !uv_is_active((uv_handle_t *)&m->timer))
        uv_timer_start(&m->timer, on_timer, timeout_ms(m), 0);
}

/* ---------------------------------------------------------------- lifetime */

static void mux_free(mux_t *m) {
    while (m->handed) { /* tasks that never ran again */
        slot_t *sl = m->handed;
        handed_unlink(m, sl);
        slot_free(m, sl);
    }
    while (m->spare) {
        slot_t *sl = m->spare;
        m->spare = sl->next;
        free(sl);
    }
    free(m->out.p);
    free(m);
}

static void on_handle_closed(uv_handle_t *hd) {
    mux_t *m = hd->data;
    loom_handle_closed(m->host);
    if (--m->handles == 0 && !m->boxed)
        mux_free(m);
}

static void shutdown_mux(mux_t *m, const char *why) {
    if (m->dead)
        return;
    loom_res_remove(&m->res);
    conn_fail(m, why);
    m->dead = 1;
    uv_close((uv_handle_t *)&m->prep, on_handle_closed);
    uv_close((uv_handle_t *)&m->timer, on_handle_closed);
}

static void mux_res_close(loom_res_t *r) {
    shutdown_mux((mux_t *)r, "closed: the host is shutting down");
}

/* The mux at idx. The functions below are closures over the metatable (upvalue 1): a
 * compare of metatables instead of luaL_checkudata's lookup of the name. */
static mux_t *check_mux(lua_State *L, int idx) {
    mux_t **box = lua_touserdata(L, idx);
    if (!box || !lua_getmetatable(L, idx) || !lua_rawequal(L, -1, lua_upvalueindex(1)))
        luaL_typeerror(L, idx, MUX_MT);
    lua_pop(L, 1);
    if (!*box)
        luaL_argerror(L, idx, "the connection is gone");
    return *box;
}

static int mux_gc(lua_State *L) {
    mux_t **box = luaL_checkudata(L, 1, MUX_MT);
    mux_t *m = *box;
    if (!m)
        return 0;
    *box = NULL;
    m->boxed = 0;
    shutdown_mux(m, "closed: the pool is gone");
    if (m->handles == 0)
        mux_free(m);
    return 0;
}

/* core.resp_mux_new(connect, where, timeout, max_bulk, max_elements, max_depth) -> mux.
 * connect(mux) runs in a task of its own when a command finds no connection: it ends with
 * resp_mux_bind(mux, stream) or resp_mux_fail(mux, err). timeout: seconds, or a negative
 * number for none. */
static int l_mux_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    const char *where = luaL_checkstring(L, 2);
    double timeout = luaL_checknumber(L, 3);
    lua_Integer bulk = luaL_checkinteger(L, 4), elems = luaL_checkinteger(L, 5),
                depth = luaL_checkinteger(L, 6);
    luaL_argcheck(L, bulk >= 0, 4, "non-negative integer expected");
    luaL_argcheck(L, elems >= 0, 5, "non-negative integer expected");
    luaL_argcheck(L, depth >= 1 && depth <= LOOM_RESP_MAX_DEPTH, 6, "1 to 64 expected");
    loom_t *h = loom_host(L);
    if (!h)
        return luaL_error(L, "redis: no loom host");
    mux_t **box = lua_newuserdatauv(L, sizeof *box, 1);
    *box = NULL;
    luaL_setmetatable(L, MUX_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    mux_t *m = calloc(1, sizeof *m);
    if (!m)
        return luaL_error(L, "not enough memory");
    m->host = h;
    m->state = M_IDLE;
    m->boxed = 1;
    m->timeout = timeout;
    m->lim.max_bulk = (size_t)bulk;
    m->lim.max_elements = (size_t)elems;
    m->lim.max_depth = (int)depth;
    loom_resp_scan_init(&m->scan);
    snprintf(m->where, sizeof m->where, "%s", where);
    uv_prepare_init(h->loop, &m->prep);
    uv_timer_init(h->loop, &m->timer);
    m->prep.data = m->timer.data = m;
    /* neither keeps the loop alive: waiters do, through the connection (owed) */
    uv_unref((uv_handle_t *)&m->prep);
    uv_unref((uv_handle_t *)&m->timer);
    loom_handle_opened(h);
    loom_handle_opened(h);
    m->handles = 2;
    loom_res_add(h, &m->res, mux_res_close);
    *box = m;
    return 1;
}

/* ---------------------------------------------------------------- commands */

/* The values of a waiter's replies, when its task resumes. */
static int mux_build(lua_State *L, void *ud, int reason) {
    if (reason == LOOM_WAKE_TIMEOUT) {
        /* the slot stays queued (its reply is dropped) and may be gone already: the mux is
         * the calling function's first argument, still on this stack */
        mux_t *m = *(mux_t **)lua_touserdata(L, 1);
        char msg[300];
        snprintf(msg, sizeof msg, "timeout: no reply from %s in %gs", m->where, m->timeout);
        lua_pushnil(L);
        lua_pushstring(L, msg);
        return 2;
    }
    slot_t *sl = ud;
    mux_t *m = sl->m;
    handed_unlink(m, sl);
    const char *p = sl->data, *end = sl->data + sl->len;
    int n = 1;
    if (sl->failed) {
        lua_pushnil(L);
        lua_pushlstring(L, p, sl->len);
        n = 2;
    } else if (!sl->batch && *p == '-') { /* an error reply: nil, "redis: ERR ..." */
        lua_pushnil(L);
        loom_resp_push_error(L, p, sl->len, &m->lim);
        n = 2;
    } else if (!sl->batch) {
        loom_resp_push(L, &p, end, &m->lim);
    } else {
        lua_createtable(L, sl->want, 0);
        for (int i = 1; i <= sl->want; i++) {
            loom_resp_push(L, &p, end, &m->lim);
            lua_rawseti(L, -2, i);
        }
    }
    slot_free(m, sl);
    return n;
}

/* A waiter gave up (timeout, cancel): its replies will be dropped. */
static void mux_abort(void *ud) {
    ((slot_t *)ud)->task = NULL;
}

/* Queues a waiter for the command(s) just appended to m->out (from `before` on) and parks. */
static int enqueue(lua_State *L, mux_t *m, loom_task_t *t, size_t before, int want, int batch) {
    slot_t *sl = slot_new(m);
    if (!sl) {
        m->out.len = before;
        return luaL_error(L, "not enough memory");
    }
    sl->task = t;
    sl->want = want;
    sl->batch = batch;
    int was_idle = m->head == NULL;
    if (m->tail)
        m->tail->next = sl;
    else
        m->head = sl;
    m->tail = sl;
    if (m->state == M_IDLE) {
        m->state = M_CONNECTING;
        lua_getiuservalue(L, 1, 1); /* connect(mux), in a task of its own */
        lua_pushvalue(L, 1);
        loom_spawn(L, 1);
        lua_pop(L, 1);
    } else if (m->state == M_OPEN) {
        if (was_idle)
            owed(m);
        arm_prepare(m);
    }
    return loom_park(L, t, m->timeout, mux_build, mux_abort, sl);
}

/* The checks of a command: the running task, or nil, err pushed (*fail set) when the pool is
 * closed. A connection the server closed while idle is dropped here (a new one opens). */
static loom_task_t *admit(lua_State *L, mux_t *m, const char *fname, int *fail) {
    loom_task_t *t = m->host->sched.current;
    if (!t || t->co != L)
        t = loom_task_self(L, fname); /* raises the reason */
    *fail = 0;
    if (m->closing || m->dead) {
        *fail = loom_fail(L, "closed", "the pool is closed");
        return NULL;
    }
    if (m->state == M_OPEN && !m->head && !loom_stream_healthy(m->s))
        conn_drop(m);
    return t;
}

/* core.resp_mux_call(mux, fname, first, cmd, ...) -> reply | nil, err: one command, encoded
 * straight into the shared buffer. A value that is neither a string nor a number raises
 * "bad argument #(first + i - 1) to 'fname'" (i counting from cmd). */
static int l_mux_call(lua_State *L) {
    mux_t *m = check_mux(L, 1);
    const char *fname = lua_tostring(L, 2);
    int fail;
    loom_task_t *t = admit(L, m, fname ? fname : "call", &fail);
    if (fail)
        return fail;
    size_t before = m->out.len;
    int rc = loom_resp_encode(L, 4, lua_gettop(L) - 3, &m->out);
    if (rc < 0)
        return luaL_error(L, "not enough memory");
    if (rc > 0)
        return luaL_error(L, "bad argument #%d to '%s' (string or number expected, got %s)",
                          (int)(lua_tointeger(L, 3) + rc - 4), fname ? fname : "?",
                          luaL_typename(L, rc));
    return enqueue(L, m, t, before, 1, 0);
}

/* core.resp_mux_send(mux, payload, n) -> {reply | {err = ...}, ...} | nil, err: an encoded
 * batch of n commands (r:pipeline), sent whole, its n replies taken in a row. */
static int l_mux_send(lua_State *L) {
    mux_t *m = check_mux(L, 1);
    size_t len;
    const char *payload = luaL_checklstring(L, 2, &len);
    lua_Integer n = luaL_checkinteger(L, 3);
    luaL_argcheck(L, n >= 1 && n <= 0x7fffffff, 3, "batch size out of range");
    int fail;
    loom_task_t *t = admit(L, m, "pipeline", &fail);
    if (fail)
        return fail;
    size_t before = m->out.len;
    if (m->out.cap - m->out.len < len) {
        size_t cap = m->out.cap ? m->out.cap : 256;
        while (cap - m->out.len < len)
            cap *= 2;
        char *p = realloc(m->out.p, cap);
        if (!p)
            return luaL_error(L, "not enough memory");
        m->out.p = p;
        m->out.cap = cap;
    }
    memcpy(m->out.p + m->out.len, payload, len);
    m->out.len += len;
    return enqueue(L, m, t, before, (int)n, 1);
}

/* core.resp_mux_bind(mux, stream): the connection the connect task opened (AUTH and SELECT
 * done) is the shared one from now on; the stream's box lets go of it. */
static int l_mux_bind(lua_State *L) {
    mux_t *m = check_mux(L, 1);
    loom_stream_t *s = loom_stream_detach(L, 2);
    if (m->state != M_CONNECTING) {
        if (s)
            loom_stream_close(s);
        return 0;
    }
    m->state = M_IDLE;
    if (!s) {
        fail_all(m, "closed: stream is closed");
        return 0;
    }
    if (m->closing || m->dead) {
        loom_stream_close(s);
        fail_all(m, "closed: the pool is closed");
        return 0;
    }
    m->s = s;
    m->state = M_OPEN;
    s->owner = m;
    s->on_event = on_event;
    loom_resp_scan_init(&m->scan);
    loom_stream_read_start(s);
    if (m->head) {
        owed(m);
        arm_prepare(m);
    } else {
        went_idle(m);
    }
    return 0;
}

/* core.resp_mux_fail(mux, err): the connect task could not open the connection; the
 * commands that waited for it get err (the first) and closed: (the others). */
static int l_mux_fail(lua_State *L) {
    mux_t *m = check_mux(L, 1);
    const char *err = luaL_checkstring(L, 2);
    if (m->state == M_CONNECTING) {
        m->state = M_IDLE;
        fail_all(m, err);
    }
    return 0;
}

/* core.resp_mux_close(mux): no more commands; the connection closes now if nothing is owed,
 * else once the replies are in. */
static int l_mux_close(lua_State *L) {
    mux_t *m = check_mux(L, 1);
    m->closing = 1;
    if (m->state == M_OPEN && !m->head)
        conn_drop(m);
    return 0;
}

/* core.resp_mux_state(mux) -> bytes queued and not yet written, replies owed (waiters in
 * the queue, given up or not), whether a connection is open */
static int l_mux_state(lua_State *L) {
    mux_t *m = check_mux(L, 1);
    lua_Integer n = 0;
    for (slot_t *sl = m->head; sl; sl = sl->next)
        n++;
    lua_pushinteger(L, (lua_Integer)m->out.len);
    lua_pushinteger(L, n);
    lua_pushboolean(L, m->state == M_OPEN);
    return 3;
}

static const luaL_Reg mux_funcs[] = {
    {"resp_mux_new", l_mux_new},     {"resp_mux_call", l_mux_call},
    {"resp_mux_send", l_mux_send},   {"resp_mux_bind", l_mux_bind},
    {"resp_mux_fail", l_mux_fail},   {"resp_mux_close", l_mux_close},
    {"resp_mux_state", l_mux_state}, {NULL, NULL},
};

int loom_open_resp_mux(lua_State *L) {
    luaL_newmetatable(L, MUX_MT);
    lua_pushcfunction(L, mux_gc);
    lua_setfield(L, -2, "__gc");
    luaL_setfuncs(L, mux_funcs, 1); /* the metatable is every function's upvalue */
    return 0;
}
