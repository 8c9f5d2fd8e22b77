/*
 * h2_client.c - the HTTP/2 client connection as Lua objects, over a client session of
 * h2_session.c (o.client = 1) that takes over a connected (and, for https, handshaken with
 * ALPN "h2") loom stream's sock. One connection carries many requests, one stream each:
 *
 *   core.h2_session(stream) -> conn           the session takes the stream's sock
 *   core.tls_alpn(stream) -> "h2" | "http/1.1" | nil
 *   conn:request(fields, body, read_timeout) -> rq | nil, err, retryable
 *       fields {name, value, ...} with the pseudo-headers first; body: a string (sent
 *       whole), true (rq:write / rq:finish follow) or nil (none)
 *   conn:capacity() -> streams it may still open (-1 when draining or closed)
 *   conn:close([now])
 *   rq:head() -> status, {name, value, ...} | nil, err, retryable
 *   rq:read() -> piece | nil (the end) | nil, err
 *   rq:write(s) / rq:finish() -> true | nil, err
 *   rq:close()
 *
 * Flow control: body bytes stay here until rq:read takes them, and only then are they given
 * back to the peer (loom_h2_consume), so an unread response holds one stream window. A
 * stream the peer refused or never processed (GOAWAY above it, REFUSED_STREAM) fails
 * "retryable": the Lua client sends an idempotent request again on a new connection.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "h2_session.h"
#include "h2_client.h"
#include "stream.h"
#include "tls.h"
#include "fail.h"

#define CONN_MT "loom.h2_conn"
#define RQ_MT "loom.h2_request"
#define STREAM_WINDOW (256 * 1024)

typedef struct h2c {
    loom_res_t res;
    loom_h2_session_t *s; /* NULL once closed */
    loom_stream_t *st;    /* whose sock the session took; freed when it closes */
    loom_t *host;
    int boxed;
    int refs; /* requests that point here */
    char peer[112];
} h2c_t;

enum { R_WAIT, R_HEAD, R_DONE, R_FAILED, R_CLOSED };
enum { W_NONE, W_HEAD, W_BODY, W_WRITE };

typedef struct {
    h2c_t *c;
    loom_h2_stream_t *st; /* NULL once the stream ended */
    loom_task_t *waiter;
    int wait;
    int phase;
    int status;
    int retryable;
    int writable_wait;
    char *hbuf; /* the head's fields: name\0value\0 ... */
    size_t hlen, nfields;
    char *body; /* unread bytes [bpos, blen) */
    size_t blen, bpos, bcap;
    double read_timeout; /* each wait's; the total timeout is the Lua side's */
    const char *ekind;
    char emsg[160];
} rq_t;

/* An idle connection (no request in progress) does not keep the loop alive, as an idle
 * HTTP/1 connection in the pool does not. */
static void conn_ref(h2c_t *c, int ref) {
    loom_sock_t *sock = c->s ? loom_h2_session_sock(c->s) : NULL;
    if (sock)
        loom_sock_ref(sock, ref);
}

static void conn_free_if_done(h2c_t *c) {
    if (!c->s && !c->boxed && c->refs == 0)
        free(c);
}

static void rq_event(rq_t *r) {
    if (!r->waiter)
        return;
    int ready = r->wait == W_HEAD ? r->phase != R_WAIT : 1;
    if (r->wait == W_WRITE)
        ready = r->phase >= R_DONE || !r->writable_wait;
    if (ready)
        loom_wake(r->waiter);
}

static void rq_fail(rq_t *r, const char *kind, int retryable, const char *fmt, const char *a) {
    if (r->phase == R_FAILED || r->phase == R_CLOSED)
        return;
    r->phase = R_FAILED;
    r->ekind = kind;
    r->retryable = retryable;
    snprintf(r->emsg, sizeof r->emsg, fmt, a);
    rq_event(r);
}

/* ---------------------------------------------------------------- session callbacks */

static void on_head(loom_h2_stream_t *st, const loom_h2_head_t *head) {
    rq_t *r = loom_h2_stream_data(st);
    if (!r)
        return;
    int status = 0;
    for (size_t i = 0; i < head->status.len && i < 3; i++)
        status = status * 10 + (head->status.p[i] - '0');
    size_t n = 0;
    for (size_t i = 0; i < head->nheaders; i++)
        n += head->headers[i].namelen + head->headers[i].valuelen + 2;
    r->hbuf = malloc(n + 1);
    if (!r->hbuf) {
        rq_fail(r, "http", 0, "%s", "out of memory for the response head");
        loom_h2_reset(st, LOOM_H2_INTERNAL_ERROR);
        return;
    }
    char *p = r->hbuf;
    for (size_t i = 0; i < head->nheaders; i++) {
        memcpy(p, head->headers[i].name, head->headers[i].namelen);
        p += head->headers[i].namelen;
        *p++ = '\0';
        memcpy(p, head->headers[i].value, head->headers[i].valuelen);
        p += head->headers[i].valuelen;
        *p++ = '\0';
    }
    r->hlen = n;
    r->nfields = head->nheaders;
    r->status = status;
    r->phase = R_HEAD;
    rq_event(r);
}

static void on_data(loom_h2_stream_t *st, const char *data, size_t len) {
    rq_t *r = loom_h2_stream_data(st);
    if (!r || r->phase >= R_FAILED) {
        loom_h2_consume(st, len);
        return;
    }
    if (r->bpos == r->blen)
        r->bpos = r->blen = 0;
    if (r->blen + len > r->bcap) {
        if (r->bpos > 0) {
            memmove(r->body, r->body + r->bpos, r->blen - r->bpos);
            r->blen -= r->bpos;
            r->bpos = 0;
        }
        size_t cap = r->bcap ? r->bcap : 16384;
        while (cap < r->blen + len)
            cap *= 2;
        char *nb = realloc(r->body, cap);
        if (!nb) {
            rq_fail(r, "http", 0, "%s", "out of memory for the response body");
            loom_h2_reset(st, LOOM_H2_INTERNAL_ERROR);
            return;
        }
        r->body = nb;
        r->bcap = cap;
    }
    memcpy(r->body + r->blen, data, len);
    r->blen += len;
    rq_event(r);
}

static void on_end(loom_h2_stream_t *st) {
    (void)st; /* on_close follows with NO_ERROR */
}

static void stream_gone(rq_t *r) {
    r->st = NULL;
    if (r->c) {
        if (--r->c->refs == 0 && !r->c->boxed && r->c->s)
            loom_h2_goaway(r->c->s, LOOM_H2_NO_ERROR); /* nobody can use it any more */
        else if (r->c->refs == 0)
            conn_ref(r->c, 0);
        conn_free_if_done(r->c);
        r->c = NULL;
    }
}

static void on_close(loom_h2_stream_t *st) {
    rq_t *r = loom_h2_stream_data(st);
    if (!r)
        return;
    if (r->phase == R_HEAD)
        r->phase = R_DONE;
    else if (r->phase == R_WAIT)
        rq_fail(r, "http", 0, "%s", "stream ended without a response");
    stream_gone(r);
    rq_event(r);
}

static void on_reset(loom_h2_stream_t *st, uint32_t code) {
    rq_t *r = loom_h2_stream_data(st);
    if (!r)
        return;
    char msg[64];
    snprintf(msg, sizeof msg, "%u", code);
    const char *tls =
        code == LOOM_H2_CANCEL ? loom_h2_session_failure(loom_h2_stream_session(st)) : NULL;
    if (tls && r->phase < R_DONE) { /* the connection broke: say how, as HTTP/1 does */
        char m[sizeof r->emsg];
        snprintf(m, sizeof m, "%s (https://%s)", tls, r->c ? r->c->peer : "the server");
        rq_fail(r, "tls", 0, "%s", m);
        stream_gone(r);
        rq_event(r);
        return;
    }
    /* REFUSED_STREAM, or a stream the peer never took (GOAWAY, the connection's end, code
     * CANCEL here) before any answer: nothing was processed, so it may go again */
    int retry = r->phase == R_WAIT && (code == LOOM_H2_REFUSED_STREAM || code == LOOM_H2_CANCEL ||
                                       code == LOOM_H2_NO_ERROR);
    if (r->phase < R_DONE)
        rq_fail(r, "closed", retry, "HTTP/2 stream reset (error code %s)", msg);
    stream_gone(r);
    rq_event(r);
}

static void on_writable(loom_h2_stream_t *st) {
    rq_t *r = loom_h2_stream_data(st);
    if (!r)
        return;
    r->writable_wait = 0;
    rq_event(r);
}

static void on_closed(loom_h2_session_t *s) {
    h2c_t *c = loom_h2_session_data(s);
    loom_stream_t *st = c->st;
    c->s = NULL;
    c->st = NULL;
    loom_res_remove(&c->res);
    if (st) { /* the sock was closed by the session: what the stream closing would do */
        loom_handle_closed(st->host);
        free(st->buf);
        free(st);
    }
    conn_free_if_done(c);
}

static const loom_h2_callbacks_t client_cb = {
    on_head, on_data, on_end, on_reset, on_close, on_writable, on_closed,
};

static void conn_res_close(loom_res_t *res) {
    h2c_t *c = (h2c_t *)res;
    if (c->s)
        loom_h2_session_close(c->s);
}

/* ---------------------------------------------------------------- Lua: the connection */

static h2c_t *check_conn(lua_State *L, int idx) {
    h2c_t **b = luaL_checkudata(L, idx, CONN_MT);
    return *b;
}

/* core.h2_session(stream) -> conn | nil, err */
static int l_h2_session(lua_State *L) {
    loom_stream_t *st = loom_stream_detach(L, 1);
    if (!st)
        return loom_fail(L, "closed", "connection closed");
    h2c_t *c = calloc(1, sizeof *c);
    if (!c) {
        loom_stream_close(st);
        return loom_fail(L, "http", "out of memory");
    }
    loom_h2_opts_t o;
    loom_h2_opts_default(&o);
    o.client = 1;
    o.window = STREAM_WINDOW;
    o.max_header = 64 * 1024;
    c->st = st;
    c->host = st->host;
    memcpy(c->peer, st->peer, sizeof c->peer);
    loom_res_remove(&st->res); /* the connection answers for the sock now */
    st->on_event = NULL;
    loom_stream_read_stop(st);
    c->s = loom_h2_session_new(st->sock, &o, &client_cb, c);
    if (!c->s) {
        free(c);
        loom_stream_close(st);
        return loom_fail(L, "http", "out of memory");
    }
    if (st->len > st->pos) /* what the stream read ahead after the handshake */
        loom_h2_session_feed(c->s, st->buf + st->pos, st->len - st->pos);
    loom_res_add(c->host, &c->res, conn_res_close);
    conn_ref(c, 0);
    h2c_t **b = lua_newuserdatauv(L, sizeof *b, 0);
    *b = c;
    c->boxed = 1;
    luaL_setmetatable(L, CONN_MT);
    return 1;
}

/* core.tls_alpn(stream) -> the protocol ALPN chose, or nil */
static int l_tls_alpn(lua_State *L) {
    loom_stream_t *st = loom_stream_check(L, 1);
    const char *p = st->sock && st->sock->tls ? loom_tls_alpn(st->sock->tls) : NULL;
    if (p)
        lua_pushstring(L, p);
    else
        lua_pushnil(L);
    return 1;
}

static int conn_capacity(lua_State *L) {
    h2c_t *c = check_conn(L, 1);
    lua_Integer n = -1; /* closed or draining: no use any more */
    if (c && c->s && !loom_h2_session_draining(c->s)) {
        uint32_t max = loom_h2_session_peer_max_streams(c->s);
        size_t open = loom_h2_session_streams(c->s);
        n = max > open ? (lua_Integer)(max - open) : 0;
        if (n > 1000000)
            n = 1000000;
    }
    lua_pushinteger(L, n);
    return 1;
}

/* conn:close([now]): GOAWAY, the streams in flight finish; now: closed at once, they fail */
static int conn_close(lua_State *L) {
    h2c_t *c = check_conn(L, 1);
    if (c && c->s) {
        if (lua_toboolean(L, 2))
            loom_h2_session_close(c->s);
        else
            loom_h2_goaway(c->s, LOOM_H2_NO_ERROR);
    }
    return 0;
}

static int conn_gc(lua_State *L) {
    h2c_t **b = luaL_checkudata(L, 1, CONN_MT);
    h2c_t *c = *b;
    if (!c)
        return 0;
    *b = NULL;
    c->boxed = 0;
    if (c->s && c->refs == 0)
        loom_h2_session_close(c->s);
    conn_free_if_done(c);
    return 0;
}

static int rq_write_step(lua_State *L, rq_t *r, const char *p, size_t n, int last);

/* conn:request(fields, body, read_timeout) -> rq | nil, err, retryable */
static int conn_request(lua_State *L) {
    h2c_t *c = check_conn(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int has_body = !lua_isnoneornil(L, 3);
    size_t n = lua_rawlen(L, 2) / 2;
    if (!c || !c->s || loom_h2_session_draining(c->s)) {
        lua_pushnil(L);
        lua_pushstring(L, "closed: HTTP/2 connection is closing");
        lua_pushboolean(L, 1);
        return 3;
    }
    loom_h2_header_t *h = lua_newuserdatauv(L, (n ? n : 1) * sizeof *h, 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (lua_Integer)(2 * i + 1));
        lua_rawgeti(L, 2, (lua_Integer)(2 * i + 2));
        h[i].name = luaL_checklstring(L, -2, &h[i].namelen);
        h[i].value = luaL_checklstring(L, -1, &h[i].valuelen);
        lua_pop(L, 2); /* the strings stay alive in the fields table */
    }
    rq_t *r = lua_newuserdatauv(L, sizeof *r, 1);
    memset(r, 0, sizeof *r);
    luaL_setmetatable(L, RQ_MT);
    r->read_timeout = luaL_optnumber(L, 4, -1);
    r->st = loom_h2_request(c->s, h, n, has_body, r);
    if (!r->st) {
        lua_pushnil(L);
        lua_pushstring(L, "closed: HTTP/2 connection takes no more streams");
        lua_pushboolean(L, 1);
        return 3;
    }
    r->c = c;
    if (c->refs++ == 0)
        conn_ref(c, 1);
    if (lua_type(L, 3) == LUA_TSTRING) {
        size_t blen;
        const char *b = lua_tolstring(L, 3, &blen);
        loom_h2_write(r->st, b, blen, 1);
    }
    return 1;
}

/* ---------------------------------------------------------------- Lua: a request */

static rq_t *check_rq(lua_State *L, int idx) {
    return luaL_checkudata(L, idx, RQ_MT);
}

static int push_fail(lua_State *L, rq_t *r) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", r->ekind ? r->ekind : "http", r->emsg);
    lua_pushboolean(L, r->retryable);
    return 3;
}

static int rq_build(lua_State *L, void *ud, int reason);

static void rq_abort(void *ud) {
    rq_t *r = ud;
    r->waiter = NULL;
    if (r->st && r->phase < R_DONE)
        loom_h2_reset(r->st, LOOM_H2_CANCEL);
}

static int park(lua_State *L, rq_t *r, int what) {
    loom_task_t *t = loom_task_self(L, "fetch");
    r->waiter = t;
    r->wait = what;
    return loom_park(L, t, r->read_timeout, rq_build, rq_abort, r);
}

static int head_step(lua_State *L, rq_t *r) {
    if (r->phase == R_FAILED || r->phase == R_CLOSED)
        return push_fail(L, r);
    if (r->phase == R_WAIT)
        return park(L, r, W_HEAD);
    lua_pushinteger(L, r->status);
    lua_createtable(L, (int)r->nfields * 2, 0);
    const char *p = r->hbuf;
    for (size_t i = 0; i < r->nfields; i++) {
        size_t nl = strlen(p);
        lua_pushlstring(L, p, nl);
        lua_rawseti(L, -2, (lua_Integer)(2 * i + 1));
        p += nl + 1;
        size_t vl = strlen(p);
        lua_pushlstring(L, p, vl);
        lua_rawseti(L, -2, (lua_Integer)(2 * i + 2));
        p += vl + 1;
    }
    return 2;
}

static int read_step(lua_State *L, rq_t *r) {
    if (r->blen > r->bpos) {
        size_t n = r->blen - r->bpos;
        lua_pushlstring(L, r->body + r->bpos, n);
        r->bpos = r->blen = 0;
        if (r->st)
            loom_h2_consume(r->st, n); /* the peer may send as much again */
        return 1;
    }
    if (r->phase == R_DONE || r->phase == R_CLOSED) {
        lua_pushnil(L);
        return 1;
    }
    if (r->phase == R_FAILED)
        return push_fail(L, r);
    return park(L, r, W_BODY);
}

static int rq_build(lua_State *L, void *ud, int reason) {
    rq_t *r = ud;
    int what = r->wait;
    r->waiter = NULL;
    r->wait = W_NONE;
    if (reason == LOOM_WAKE_TIMEOUT) {
        r->phase = R_FAILED;
        r->ekind = "timeout";
        r->retryable = 0;
        snprintf(r->emsg, sizeof r->emsg, "%s %s within %.3gs",
                 what == W_HEAD   ? "no response from"
                 : what == W_BODY ? "no data from"
                                  : "sending to",
                 r->c ? r->c->peer : "the server", r->read_timeout);
        return push_fail(L, r);
    }
    if (what == W_HEAD)
        return head_step(L, r);
    if (what == W_WRITE) {
        if (r->phase == R_FAILED)
            return push_fail(L, r);
        lua_pushboolean(L, 1);
        return 1;
    }
    return read_step(L, r);
}

static int rq_head(lua_State *L) {
    return head_step(L, check_rq(L, 1));
}

static int rq_read(lua_State *L) {
    return read_step(L, check_rq(L, 1));
}

static int rq_write_step(lua_State *L, rq_t *r, const char *p, size_t n, int last) {
    if (r->phase == R_FAILED)
        return push_fail(L, r);
    if (!r->st || r->phase >= R_HEAD) { /* answered already: the rest is moot */
        lua_pushboolean(L, 1);
        return 1;
    }
    int64_t q = loom_h2_write(r->st, p, n, last);
    if (q < 0) {
        lua_pushnil(L);
        lua_pushstring(L, "closed: HTTP/2 stream takes no more body");
        return 2;
    }
    if (q >= LOOM_H2_STREAM_HIGH_WATER && !last) {
        r->writable_wait = 1;
        return park(L, r, W_WRITE);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int rq_write(lua_State *L) {
    rq_t *r = check_rq(L, 1);
    size_t n;
    const char *p = luaL_checklstring(L, 2, &n);
    return rq_write_step(L, r, p, n, 0);
}

static int rq_finish(lua_State *L) {
    return rq_write_step(L, check_rq(L, 1), NULL, 0, 1);
}

static void rq_release(rq_t *r) {
    if (r->st) {
        loom_h2_stream_set_data(r->st, NULL);
        if (r->phase < R_DONE)
            loom_h2_reset(r->st, LOOM_H2_CANCEL);
        else if (r->blen > r->bpos)
            loom_h2_consume(r->st, r->blen - r->bpos);
        stream_gone(r);
    }
    free(r->hbuf);
    free(r->body);
    r->hbuf = r->body = NULL;
    r->blen = r->bpos = r->bcap = 0;
    if (r->phase != R_FAILED)
        r->phase = R_CLOSED;
}

static int rq_close(lua_State *L) {
    rq_release(check_rq(L, 1));
    return 0;
}

static int rq_done(lua_State *L) {
    rq_t *r = check_rq(L, 1);
    lua_pushboolean(L, r->phase == R_DONE);
    return 1;
}

static const luaL_Reg conn_methods[] = {
    {"request", conn_request},
    {"capacity", conn_capacity},
    {"close", conn_close},
    {NULL, NULL},
};

static const luaL_Reg rq_methods[] = {
    {"head", rq_head},   {"read", rq_read}, {"write", rq_write}, {"finish", rq_finish},
    {"close", rq_close}, {"done", rq_done}, {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"h2_session", l_h2_session},
    {"tls_alpn", l_tls_alpn},
    {NULL, NULL},
};

int loom_open_h2_client(lua_State *L) {
    luaL_newmetatable(L, CONN_MT);
    lua_pushcfunction(L, conn_gc);
    lua_setfield(L, -2, "__gc");
    luaL_newlib(L, conn_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    loom_new_class(L, RQ_MT, rq_methods, rq_close);
    luaL_setfuncs(L, funcs, 0);
    return 0;
}
