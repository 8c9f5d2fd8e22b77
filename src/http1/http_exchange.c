/*
 * http_exchange.c - one HTTP request and its response, as the Lua object the client's tasks
 * wait on (core.http_request, x:attach, x:read_all, x:read, x:write, x:finish, x:close).
 * Every wait - for a slot in the pool, the response head, each piece of the body, a write -
 * parks the task with a real deadline: the smaller of the wait's own timeout and what is
 * left of the request's total. The body is decoded (gzip, deflate) as it is parsed and
 * kept here until Lua takes it, so a small response releases its connection before Lua
 * even looks at it. Knows nothing of URLs, redirects or cookies (lua/loom/client.lua).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "http_client.h"
#include "fail.h"

static int x_build(lua_State *L, void *ud, int reason);
static void x_abort(void *ud);

/* ---------------------------------------------------------------- state changes */

void loom_client_x_fail(loom_client_x_t *x, const char *kind, const char *fmt, ...) {
    va_list ap;
    if (x->phase == X_FAILED)
        return;
    va_start(ap, fmt);
    vsnprintf(x->emsg, sizeof x->emsg, fmt, ap);
    va_end(ap);
    x->ekind = kind;
    x->phase = X_FAILED;
    loom_client_x_event(x);
}

void loom_client_x_event(loom_client_x_t *x) {
    if (!x->waiter)
        return;
    int ready;
    switch (x->wait) {
    case W_SLOT:
        ready = x->c || x->slot || x->phase == X_FAILED;
        break;
    case W_HEAD:
        ready = x->phase >= X_HEAD;
        break;
    case W_WRITE: /* the stream wakes a writer when its bytes are out */
        ready = x->phase == X_FAILED;
        break;
    default: /* a body reader sees every step: each one restarts its idle timeout */
        ready = 1;
        break;
    }
    if (ready)
        loom_wake(x->waiter);
}

static int grow_body(loom_client_x_t *x, size_t need) {
    size_t cap = x->bcap * 2;
    /* a whole body of known length gets its buffer at once: no copies as pieces come */
    if (!(x->flags & HX_STREAM) && x->expect >= need && x->expect <= x->max_body && x->expect > cap)
        cap = (size_t)x->expect;
    while (cap < need)
        cap *= 2;
    char *nb = x->body == x->inl ? malloc(cap) : realloc(x->body, cap);
    if (!nb)
        return -1;
    if (x->body == x->inl)
        memcpy(nb, x->inl, x->blen);
    x->body = nb;
    x->bcap = cap;
    return 0;
}

static void free_body(loom_client_x_t *x) {
    if (x->body != x->inl)
        free(x->body);
    x->body = NULL;
    x->bpos = x->blen = x->bcap = 0;
}

static int append(loom_client_x_t *x, const char *p, size_t n) {
    /* max_body bounds the body kept whole; with stream = true only what res:text() gathers
     * (pieces are read ahead up to a high-water mark, so a download of any size streams) */
    int counted = !(x->flags & HX_STREAM) || x->whole;
    uint64_t held = !(x->flags & HX_STREAM) ? x->total : x->blen - x->bpos;
    if (counted && held + n > x->max_body) {
        loom_client_x_fail(x, "limit", "response body over %llu bytes (max_body)",
                           (unsigned long long)x->max_body);
        return -1;
    }
    x->total += n;
    if (x->bpos == x->blen)
        x->bpos = x->blen = 0;
    if (!x->body) { /* small bodies stay inside x: no allocation */
        x->body = x->inl;
        x->bcap = sizeof x->inl;
    }
    if (x->blen + n > x->bcap && grow_body(x, x->blen + n) != 0) {
        loom_client_x_fail(x, "limit", "out of memory for the response body");
        return -1;
    }
    memcpy(x->body + x->blen, p, n);
    x->blen += n;
    return 0;
}

static int inflate_sink(void *ud, const char *p, size_t n) {
    loom_client_x_t *x = ud;
    /* a stream reads ahead a piece at a time, but one piece of a coded body may decode to
     * any size (a br bomb): what is held unread stays under max_body there too */
    if ((x->flags & HX_STREAM) && x->blen - x->bpos + n > x->max_body) {
        loom_client_x_fail(x, "limit", "decoded response body over %llu bytes unread (max_body)",
                           (unsigned long long)x->max_body);
        return -1;
    }
    return append(x, p, n);
}

int loom_client_x_body(loom_client_x_t *x, const char *at, size_t len) {
    if (!x->z)
        return append(x, at, len);
    int rc = loom_inflate_feed(x->z, at, len, inflate_sink, x);
    if (rc == -1)
        loom_client_x_fail(x, "http", "undecodable compressed body: %s (%.*s)",
                           loom_inflate_error(x->z), x->host->origin_len, x->host->key);
    return rc;
}

/* ---------------------------------------------------------------- results */

static int push_fail(lua_State *L, loom_client_x_t *x) {
    lua_pushnil(L);
    if (x->phase == X_FAILED)
        lua_pushfstring(L, "%s: %s", x->ekind, x->emsg);
    else
        lua_pushliteral(L, "closed: response closed");
    lua_pushboolean(L, x->retryable);
    return 3;
}

/* Pushes the raw list {name1, value1, name2, value2, ...}: names lowercase, in wire order.
 * Lua makes the headers table from it when it is first asked for. */
static void push_raw(lua_State *L, const loom_head_t *hd) {
    lua_createtable(L, 2 * hd->nhdrs, 0);
    for (int i = 0; i < hd->nhdrs; i++) {
        lua_pushlstring(L, LOOM_HEAD_NAME(hd, i), hd->hdrs[i].name_len);
        lua_rawseti(L, -2, 2 * i + 1);
        lua_pushlstring(L, LOOM_HEAD_VALUE(hd, i), hd->hdrs[i].value_len);
        lua_rawseti(L, -2, 2 * i + 2);
    }
}

/* x status reason raw version, with x at index 1. */
static int push_head(lua_State *L, loom_client_x_t *x) {
    if (x->phase == X_FAILED || x->phase == X_CLOSED || !x->head)
        return push_fail(L, x);
    loom_head_t *hd = x->head;
    lua_settop(L, 1);
    lua_pushinteger(L, x->status);
    lua_pushlstring(L, hd->data + hd->url, hd->url_len);
    push_raw(L, hd);
    if (x->minor == 0)
        lua_pushliteral(L, "1.0");
    else
        lua_pushliteral(L, "1.1");
    x->head = NULL;
    loom_head_release(&x->pool->heads, hd);
    return 5;
}

/* ---------------------------------------------------------------- waits */

/* The timeout of the next wait: `base` (< 0: none), cut by what is left of the total. */
static double wait_time(loom_client_x_t *x, double base) {
    x->by_total = 0;
    if (x->deadline >= 0) {
        double left = x->deadline - loom_sched_now();
        if (left < 0)
            left = 0;
        if (base < 0 || left <= base) {
            x->by_total = 1;
            return left;
        }
    }
    return base;
}

static int park(lua_State *L, loom_client_x_t *x, int what, double base) {
    loom_task_t *t = loom_task_self(L, "fetch");
    if (x->waiter && x->waiter != t)
        return luaL_error(L, "another task is already reading this response");
    x->waiter = t;
    x->wait = what;
    return loom_park(L, t, wait_time(x, base), x_build, x_abort, x);
}

static int wait_head(lua_State *L, loom_client_x_t *x) {
    if (x->phase >= X_HEAD)
        return push_head(L, x);
    return park(L, x, W_HEAD, x->read_timeout);
}

/* Writes the request (head and body at stack indices hi and bi, or else the ones kept in
 * x's uservalues) on x's connection, then waits for the head (or, for an upload, returns
 * x, true to let Lua write the body). */
static int send_request(lua_State *L, loom_client_x_t *x, int hi, int bi) {
    loom_client_conn_t *c = x->c;
    uv_buf_t bufs[2];
    size_t len;
    int n = 1;
    if (!hi) {
        lua_settop(L, 1);
        lua_getiuservalue(L, 1, 2);
        lua_getiuservalue(L, 1, 3);
        hi = 2;
        bi = 3;
    }
    bufs[0].base = (char *)lua_tolstring(L, hi, &len);
    bufs[0].len = len;
    if (lua_type(L, bi) == LUA_TSTRING) {
        bufs[1].base = (char *)lua_tolstring(L, bi, &len);
        bufs[1].len = len;
        n = len ? 2 : 1;
    }
    int rc = loom_stream_send(c->s, bufs, n);
    lua_settop(L, 1);
    if (rc < 0) {
        const char *why = loom_stream_tls_error(c->s);
        loom_client_x_fail(x, why ? "tls" : "closed", "%s (%.*s)", why ? why : uv_strerror(rc),
                           x->host->origin_len, x->host->key);
        x->retryable = x->reused;
        loom_client_conn_close(c);
        return push_fail(L, x);
    }
    x->phase = X_SENT;
    x->req_done = !(x->flags & HX_UPLOAD);
    if (x->flags & HX_UPLOAD) {
        lua_pushboolean(L, 1);
        return 2;
    }
    return wait_head(L, x);
}

static int after_slot(lua_State *L, loom_client_x_t *x) {
    if (x->phase == X_FAILED)
        return push_fail(L, x);
    if (x->c)
        return send_request(L, x, 0, 0);
    if (x->slot) {
        lua_settop(L, 1);
        lua_pushboolean(L, 0);
        return 2;
    }
    return park(L, x, W_SLOT, x->wait_timeout); /* woken early: keep waiting */
}

static int take_body(lua_State *L, loom_client_x_t *x) {
    lua_pushlstring(L, x->body + x->bpos, x->blen - x->bpos);
    x->bpos = x->blen = 0;
    if (x->bcap > 256 * 1024) /* a big response's buffer goes with it */
        free_body(x);
    return 1;
}

static int read_all_step(lua_State *L, loom_client_x_t *x) {
    if (x->phase == X_FAILED || x->phase == X_CLOSED)
        return push_fail(L, x);
    if (x->phase == X_DONE)
        return take_body(L, x);
    if (!x->c)
        return push_fail(L, x);
    loom_stream_read_start(x->c->s); /* reading stops at the high-water mark without us */
    return park(L, x, W_BODY, x->read_timeout);
}

static int read_step(lua_State *L, loom_client_x_t *x) {
    if (x->blen > x->bpos) {
        take_body(L, x);
        if (x->c && x->c->s)
            loom_stream_read_start(x->c->s);
        return 1;
    }
    if (x->phase == X_DONE) {
        lua_pushnil(L);
        return 1;
    }
    if (x->phase == X_FAILED || x->phase == X_CLOSED || !x->c)
        return push_fail(L, x);
    loom_stream_read_start(x->c->s);
    return park(L, x, W_BODY, x->read_timeout);
}

static int after_write(lua_State *L, loom_client_x_t *x) {
    loom_client_conn_t *c = x->c;
    if (x->phase == X_FAILED || x->phase == X_CLOSED)
        return push_fail(L, x);
    if (!c || !c->s || c->s->werr) {
        loom_client_x_fail(x, "closed", "%s while sending the body (%.*s)",
                           c && c->s && c->s->werr ? uv_strerror(c->s->werr) : "connection closed",
                           x->host->origin_len, x->host->key);
        return push_fail(L, x);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static const char *waiting_for(int what) {
    switch (what) {
    case W_SLOT:
        return "waiting for a free connection to";
    case W_HEAD:
        return "no response from";
    case W_BODY:
        return "no data from";
    default:
        return "sending to";
    }
}

/* A wait ran out: x_abort has already let the connection go. */
static int timed_out(lua_State *L, loom_client_x_t *x, int what, double base) {
    x->ekind = "timeout";
    x->phase = X_FAILED;
    x->retryable = 0;
    if (x->by_total)
        snprintf(x->emsg, sizeof x->emsg, "request took longer than its total timeout (%.*s)",
                 x->host->origin_len, x->host->key);
    else
        snprintf(x->emsg, sizeof x->emsg, "%s %.*s%s%.3gs", waiting_for(what), x->host->origin_len,
                 x->host->key, what == W_SLOT ? " for " : " within ", base);
    return push_fail(L, x);
}

static int x_build(lua_State *L, void *ud, int reason) {
    loom_client_x_t *x = ud;
    int what = x->wait;
    x->waiter = NULL;
    x->wait = W_NONE;
    if (reason == LOOM_WAKE_TIMEOUT)
        return timed_out(L, x, what, what == W_SLOT ? x->wait_timeout : x->read_timeout);
    switch (what) {
    case W_SLOT:
        return after_slot(L, x);
    case W_HEAD:
        return wait_head(L, x);
    case W_WRITE:
        if (x->c && x->c->s)
            x->c->s->writer = NULL;
        return after_write(L, x);
    default:
        return lua_toboolean(L, 2) ? read_all_step(L, x) : read_step(L, x);
    }
}

/* Timeout or cancel: the exchange cannot go on, so its connection is closed. */
static void x_abort(void *ud) {
    loom_client_x_t *x = ud;
    x->waiter = NULL;
    loom_client_wait_remove(x);
    if (x->wait == W_WRITE && x->c && x->c->s)
        x->c->s->writer = NULL;
    if (x->c && x->phase < X_DONE)
        loom_client_conn_close(x->c);
}

/* ---------------------------------------------------------------- Lua API */

static loom_client_x_t *check_x(lua_State *L, int idx) {
    return luaL_checkudata(L, idx, LOOM_CLIENT_X_MT);
}

static void read_timeouts(lua_State *L, loom_client_x_t *x, int first) {
    x->wait_timeout = luaL_optnumber(L, first, -1);
    x->read_timeout = luaL_optnumber(L, first + 1, -1);
    x->deadline = luaL_optnumber(L, first + 2, -1);
}

/* core.http_request(pool, key, head, body, flags, max_body, wait_timeout, read_timeout,
 *                   deadline)
 *   -> x, status, reason, raw, version   the response head arrived (raw: {name, value, ...})
 *   -> x, false   no connection to reuse, and a slot for a new one: connect, then x:attach
 *   -> x, true    (HX_UPLOAD) the head is sent: x:write the body, then x:finish
 *   -> nil, err, retryable */
static int l_http_request(lua_State *L) {
    loom_client_pool_t *p = loom_client_pool_check(L, 1);
    size_t klen;
    const char *key = luaL_checklstring(L, 2, &klen);
    luaL_checktype(L, 3, LUA_TSTRING);
    int flags = (int)luaL_checkinteger(L, 5);
    lua_Integer max_body = luaL_checkinteger(L, 6);
    loom_task_self(L, "fetch"); /* before anything is sent: raises outside a task */
    if (p->closed)
        return loom_fail(L, "closed", "session closed");
    loom_client_host_t *h = loom_client_host_get(p, key, klen);
    if (!h)
        return luaL_error(L, "out of memory");
    loom_client_x_t *x = lua_newuserdatauv(L, sizeof *x, 3);
    memset(x, 0, offsetof(loom_client_x_t, emsg));
    luaL_setmetatable(L, LOOM_CLIENT_X_MT);
    x->pool = p;
    p->xrefs++;
    x->host = h;
    x->flags = flags;
    x->max_body = max_body > 0 ? (uint64_t)max_body : 0;
    read_timeouts(L, x, 7);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1); /* the pool outlives its exchanges */
    lua_replace(L, 1);           /* x pool? key head body ... */
    loom_client_conn_t *c = (flags & HX_FRESH) ? NULL : loom_client_take_idle(h);
    if (c) { /* the fast path: a kept-alive connection, the request goes out now */
        x->reused = 1;
        loom_client_conn_begin(c, x);
        return send_request(L, x, 3, 4);
    }
    lua_pushvalue(L, 3); /* kept for when a connection comes */
    lua_setiuservalue(L, 1, 2);
    lua_pushvalue(L, 4);
    lua_setiuservalue(L, 1, 3);
    lua_settop(L, 1); /* x */
    if (h->active < p->max_per_host) {
        h->active++;
        x->slot = 1;
        lua_pushboolean(L, 0);
        return 2;
    }
    loom_client_wait_add(h, x);
    return park(L, x, W_SLOT, x->wait_timeout);
}

/* x:attach(stream) -> as core.http_request: the new connection for x's slot. */
static int x_attach(lua_State *L) {
    loom_client_x_t *x = check_x(L, 1);
    luaL_argcheck(L, x->slot, 1, "exchange holds no slot");
    loom_stream_t *s = loom_stream_detach(L, 2);
    if (!s)
        return loom_fail(L, "closed", "connection closed");
    loom_client_conn_t *c = x->pool->closed ? NULL : loom_client_conn_new(x->host, s);
    if (!c) {
        loom_stream_close(s);
        return loom_fail(L, "closed", x->pool->closed ? "session closed" : "out of memory");
    }
    x->slot = 0; /* the slot is the connection's now */
    loom_client_conn_begin(c, x);
    return send_request(L, x, 0, 0);
}

/* x:read_all() -> the rest of the body | nil, err */
static int x_read_all(lua_State *L) {
    loom_client_x_t *x = check_x(L, 1);
    x->whole = 1;
    if ((x->flags & HX_STREAM) && x->blen - x->bpos > x->max_body) {
        loom_client_x_fail(x, "limit", "response body over %llu bytes (max_body)",
                           (unsigned long long)x->max_body);
        if (x->c)
            loom_client_conn_close(x->c);
    }
    lua_settop(L, 1);
    lua_pushboolean(L, 1); /* index 2: x_build tells read_all from read by it */
    return read_all_step(L, x);
}

/* x:read() -> the next piece of the body | nil at its end | nil, err */
static int x_read(lua_State *L) {
    loom_client_x_t *x = check_x(L, 1);
    lua_settop(L, 1);
    lua_pushboolean(L, 0);
    return read_step(L, x);
}

static int send_chunk(lua_State *L, loom_client_x_t *x, const char *p, size_t n, int last) {
    char pre[24];
    uv_buf_t bufs[3];
    int nb = 0;
    if (x->phase == X_HEAD || x->phase == X_DONE) { /* answered already: the rest is moot */
        lua_pushboolean(L, 1);
        return 1;
    }
    if (!x->c || x->phase == X_FAILED)
        return after_write(L, x);
    if (last)
        x->req_done = 1;
    if (x->flags & HX_SIZED) { /* Content-Length framing: the bytes as they are */
        if (n > 0)
            bufs[nb++] = uv_buf_init((char *)p, (unsigned)n);
    } else if (n > 0) {
        bufs[nb++] = uv_buf_init(pre, (unsigned)snprintf(pre, sizeof pre, "%zx\r\n", n));
        bufs[nb++] = uv_buf_init((char *)p, (unsigned)n);
        bufs[nb++] = uv_buf_init("\r\n", 2);
    }
    if (last && !(x->flags & HX_SIZED))
        bufs[nb++] = uv_buf_init("0\r\n\r\n", 5);
    if (nb == 0)
        return after_write(L, x);
    loom_stream_t *s = x->c->s;
    int rc = loom_stream_send(s, bufs, nb);
    if (rc < 0) {
        s->werr = s->werr ? s->werr : rc;
        return after_write(L, x);
    }
    if (rc == 0 || last)
        return after_write(L, x);
    loom_task_t *t = loom_task_self(L, "write");
    s->writer = t;
    x->waiter = t;
    x->wait = W_WRITE;
    return loom_park(L, t, wait_time(x, x->read_timeout), x_build, x_abort, x);
}

/* x:write(data) -> true | nil, err: one chunk of an upload; waits while the peer is slow. */
static int x_write(lua_State *L) {
    loom_client_x_t *x = check_x(L, 1);
    size_t n;
    const char *p = luaL_checklstring(L, 2, &n);
    return send_chunk(L, x, p, n, 0);
}

/* x:finish() -> as core.http_request, once the upload's last chunk is out. */
static int x_finish(lua_State *L) {
    loom_client_x_t *x = check_x(L, 1);
    lua_settop(L, 1);
    if (send_chunk(L, x, NULL, 0, 1) != 1 || !lua_toboolean(L, -1))
        return 3; /* nil, err, retryable */
    lua_settop(L, 1);
    return wait_head(L, x);
}

/* Lets go of everything; an unread body is drained (if small) within `drain` seconds. */
static void x_close(loom_client_x_t *x, double drain) {
    if (x->phase == X_CLOSED)
        return;
    loom_client_wait_remove(x);
    if (x->slot) {
        x->slot = 0;
        loom_client_slot_release(x->host);
    }
    loom_client_conn_t *c = x->c;
    if (c) {
        x->c = NULL;
        if (x->phase == X_HEAD && !x->waiter)
            loom_client_conn_abandon(c, drain);
        else
            loom_client_conn_close(c);
    }
    free_body(x);
    loom_inflate_free(x->z);
    x->z = NULL;
    if (x->head) {
        loom_head_release(&x->pool->heads, x->head);
        x->head = NULL;
    }
    if (x->phase != X_FAILED)
        x->phase = X_CLOSED;
}

/* x:close([drain_seconds = 2]) */
static int x_close_l(lua_State *L) {
    loom_client_x_t *x = check_x(L, 1);
    x_close(x, luaL_optnumber(L, 2, 2));
    return 0;
}

static int x_gc(lua_State *L) {
    loom_client_x_t *x = check_x(L, 1);
    if (!x->pool)
        return 0;
    x_close(x, 2);
    loom_client_pool_unref(x->pool);
    x->pool = NULL;
    return 0;
}

/* x:done() -> whether the whole response is in (x:read_all returns at once) */
static int x_done(lua_State *L) {
    loom_client_x_t *x = check_x(L, 1);
    lua_pushboolean(L, x->phase == X_DONE);
    return 1;
}

static const luaL_Reg x_methods[] = {
    {"attach", x_attach}, {"read_all", x_read_all}, {"read", x_read}, {"write", x_write},
    {"finish", x_finish}, {"close", x_close_l},     {"done", x_done}, {NULL, NULL},
};

static const luaL_Reg x_meta[] = {
    {"__gc", x_gc},
    {"__close", x_close_l},
    {NULL, NULL},
};

/* ---------------------------------------------------------------- body decoders */

/* core.body_decoder(coding) -> d | nil: a decoder of a response body's Content-Encoding
 * ("gzip", "x-gzip", "deflate", "br" when built with it), for the bodies that do not come
 * through an exchange (HTTP/2: lua/loom/client.lua). d:feed(bytes, cap) -> decoded | nil,
 * err ("limit: ..." past cap bytes from this one feed: a decompression bomb stops there);
 * d:finish() -> true | nil, err (a truncated stream). */
#define DECODER_MT "loom.body_decoder"

typedef struct {
    loom_inflate_t *z;
    luaL_Buffer *b;
    size_t got, cap;
} decoder_t;

static int decoder_sink(void *ud, const char *p, size_t n) {
    decoder_t *d = ud;
    if (d->got + n > d->cap)
        return 1;
    d->got += n;
    luaL_addlstring(d->b, p, n);
    return 0;
}

static int l_body_decoder(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    int coding = 0;
    if (strcmp(name, "gzip") == 0 || strcmp(name, "x-gzip") == 0)
        coding = LOOM_CODING_GZIP;
    else if (strcmp(name, "deflate") == 0)
        coding = LOOM_CODING_DEFLATE;
    else if (strcmp(name, "br") == 0 && loom_inflate_has_br())
        coding = LOOM_CODING_BR;
    if (!coding)
        return 0;
    decoder_t *d = lua_newuserdatauv(L, sizeof *d, 0);
    memset(d, 0, sizeof *d);
    luaL_setmetatable(L, DECODER_MT);
    d->z = loom_inflate_new(coding);
    if (!d->z)
        return luaL_error(L, "out of memory");
    return 1;
}

static int decoder_feed(lua_State *L) {
    decoder_t *d = luaL_checkudata(L, 1, DECODER_MT);
    size_t n;
    const char *p = luaL_checklstring(L, 2, &n);
    lua_Integer cap = luaL_checkinteger(L, 3);
    if (!d->z)
        return loom_fail(L, "http", "decoder closed");
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    d->b = &b;
    d->got = 0;
    d->cap = cap > 0 ? (size_t)cap : 0;
    int rc = loom_inflate_feed(d->z, p, n, decoder_sink, d);
    if (rc == -2)
        return loom_fail(L, "limit", "decoded response body over %d bytes (max_body)", (int)cap);
    if (rc != 0)
        return loom_fail(L, "http", "%s", loom_inflate_error(d->z));
    luaL_pushresult(&b);
    return 1;
}

static int decoder_finish(lua_State *L) {
    decoder_t *d = luaL_checkudata(L, 1, DECODER_MT);
    if (d->z && loom_inflate_finish(d->z) != 0)
        return loom_fail(L, "http", "%s", loom_inflate_error(d->z));
    lua_pushboolean(L, 1);
    return 1;
}

static int decoder_gc(lua_State *L) {
    decoder_t *d = luaL_checkudata(L, 1, DECODER_MT);
    loom_inflate_free(d->z);
    d->z = NULL;
    return 0;
}

static const luaL_Reg x_funcs[] = {
    {"http_request", l_http_request},
    {"body_decoder", l_body_decoder},
    {NULL, NULL},
};

int loom_open_http_exchange(lua_State *L) {
    luaL_newmetatable(L, DECODER_MT);
    lua_pushcfunction(L, decoder_gc);
    lua_setfield(L, -2, "__gc");
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, decoder_feed);
    lua_setfield(L, -2, "feed");
    lua_pushcfunction(L, decoder_finish);
    lua_setfield(L, -2, "finish");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, LOOM_CLIENT_X_MT);
    luaL_setfuncs(L, x_meta, 0);
    luaL_newlib(L, x_methods);
    lua_setfield(L, -2, "__index"); /* mt.__index = methods */
    lua_pop(L, 1);
    luaL_setfuncs(L, x_funcs, 0);
    return 0;
}
