/*
 * h2_server.c - HTTP/2 on the server engine's connections: the other half of http_server.c
 * for a connection that began with the h2c preface (a listener with http2 = true) or
 * negotiated "h2" through ALPN (TLS). The engine hands the connection's sock to an HTTP/2
 * session (src/http2/h2_session.c, which does the framing, HPACK, flow control and the
 * defences) and keeps the loom_conn_t as the sock's shell, in the server's list with state
 * C_H2, so srv.connections, srv:close, the grace period and keepalive_timeout see it.
 *
 * Each stream's request is a loom_h2req: the handler task the app's entry runs in, the Lua
 * request box (whose core.req_* calls come here through http_request.c: loom_h2srv_req), the
 * body gathered, the answer's state. The request API is the HTTP/1 one: req.version is "2",
 * :authority fills req.headers.host, cookie fields are joined with "; ", bodies are read
 * whole or piece by piece (the peer's window opens as Lua takes the bytes), req:stream and
 * req:write answer through the stream's queue, parking past LOOM_H2_STREAM_HIGH_WATER.
 *
 * It lives beside the HTTP/1 engine (src/http1) rather than in src/http2: it shares the
 * server's structs, limits, the request box and the access log, and src/http2 stays a
 * protocol layer that knows nothing of the server above it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <lauxlib.h>
#include "http_server.h"
#include "access_log.h"
#include "fail.h"
#include "h2_session.h"

typedef struct loom_h2req h2req_t;

/* One HTTP/2 connection of the server. */
typedef struct {
    loom_conn_t *c; /* the sock's shell (state C_H2 until it leaves the server's list) */
    loom_server_t *srv;
    loom_h2_session_t *s; /* NULL once the session closed */
    h2req_t *reqs;        /* requests alive, oldest first (handler_timeout scans them) */
    h2req_t *tail;
    int nreqs;
    int nstreams;     /* streams the session gave us and has not ended */
    uv_timer_t timer; /* handler_timeout of the requests */
} h2conn_t;

enum { W_NONE, W_BODY, W_WRITE };

struct loom_h2req {
    loom_job_t job; /* starts the handler (from the scheduler) */
    h2conn_t *hc;
    h2req_t *prev, *next;
    loom_h2_stream_t *st;       /* NULL once the stream ended */
    const loom_h2_head_t *head; /* valid while st is */
    loom_reqbox_t *box;
    loom_task_t *task, *waiter;
    loom_body_t *body;
    uint64_t body_seen, sent, t0, out_left, deadline;
    unsigned status : 10, fail_status : 10, fault_status : 10;
    unsigned resp : 2;        /* R_* */
    unsigned wait : 2;        /* W_*: what waiter waits for */
    unsigned in_end : 1;      /* the request body ended (END_STREAM) */
    unsigned body_wanted : 1; /* a whole-body read began: the window opens as bytes come */
    unsigned chunk_mode : 1;
    unsigned is_head : 1;
    unsigned out_sized : 1; /* the streamed answer has a length */
    unsigned out_done : 1;  /* the answer's end was queued (or it had no body) */
    unsigned expect : 1;    /* expect: 100-continue, not answered yet */
};

static size_t body_len(const h2req_t *rq) {
    return rq->body ? rq->body->len : 0;
}

static int no_body_status(int status) {
    return status < 200 || status == 204 || status == 304;
}

/* ---------------------------------------------------------------- lifetimes */

/* The shell goes last: it keeps the server (its `live` count) until the timer is closed. */
static void on_timer_closed(uv_handle_t *h) {
    h2conn_t *hc = h->data;
    loom_handle_closed(hc->srv->host);
    loom_conn_release(hc->c);
    free(hc);
}

/* The session is gone and no request refers to hc: the shell and hc go. */
static void hc_free_if_done(h2conn_t *hc) {
    if (hc->s || hc->nreqs > 0 || uv_is_closing((uv_handle_t *)&hc->timer))
        return;
    uv_close((uv_handle_t *)&hc->timer, on_timer_closed);
}

static void req_free_if_done(h2req_t *rq) {
    if (rq->task || rq->st || rq->job.queued)
        return;
    h2conn_t *hc = rq->hc;
    if (rq->prev)
        rq->prev->next = rq->next;
    else
        hc->reqs = rq->next;
    if (rq->next)
        rq->next->prev = rq->prev;
    else
        hc->tail = rq->prev;
    free(rq->body);
    free(rq);
    hc->nreqs--;
    hc_free_if_done(hc);
}

/* The request's Lua object lets go of it: what the handler still tries on it fails. */
static void detach(h2req_t *rq, int gone) {
    if (rq->box) {
        rq->box->h2 = NULL;
        rq->box->gone = gone;
        rq->box = NULL;
    }
    if (rq->waiter)
        loom_wake(rq->waiter);
}

/* ---------------------------------------------------------------- answers */

/* A header list for loom_h2_respond, from a Lua table of the handler's: names and values
 * point into the table's strings (alive while it is on the stack); a number's text is
 * copied into `nums` (freed by fields_done). */
typedef struct {
    loom_h2_header_t *h;
    size_t n, cap;
    char **nums;
    size_t nnums;
    int bad;
    const char *why;
    int has_ct, has_cl, has_date;
    uint64_t cl;
    char clbuf[24];
    loom_h2_header_t inline_h[16];
} fields_t;

static void fields_init(fields_t *f) {
    memset(f, 0, sizeof *f - sizeof f->inline_h);
    f->h = f->inline_h;
    f->cap = sizeof f->inline_h / sizeof f->inline_h[0];
}

static void fields_done(fields_t *f) {
    if (f->h != f->inline_h)
        free(f->h);
    for (size_t i = 0; i < f->nnums; i++)
        free(f->nums[i]);
    free(f->nums);
}

static void fail_field(fields_t *f, const char *why) {
    f->bad = 1;
    if (!f->why)
        f->why = why;
}

static void add(fields_t *f, const char *name, size_t nl, const char *v, size_t vl) {
    if (f->n == f->cap) {
        size_t cap = f->cap * 2;
        loom_h2_header_t *h =
            f->h == f->inline_h ? malloc(cap * sizeof *h) : realloc(f->h, cap * sizeof *h);
        if (!h) {
            fail_field(f, "out of memory");
            return;
        }
        if (f->h == f->inline_h)
            memcpy(h, f->inline_h, sizeof f->inline_h);
        f->h = h;
        f->cap = cap;
    }
    f->h[f->n++] = (loom_h2_header_t){name, v, nl, vl};
}

static int name_is(const char *s, size_t n, const char *lit) {
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* The value at the top of L as a string (a number's text is copied into f->nums, since
 * lua_tolstring on the table's own value would confuse lua_next). */
static const char *value_of(lua_State *L, fields_t *f, size_t *vl) {
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING)
        return lua_tolstring(L, -1, vl);
    if (t != LUA_TNUMBER)
        return NULL;
    lua_pushvalue(L, -1);
    const char *v = lua_tolstring(L, -1, vl);
    char **nums = realloc(f->nums, (f->nnums + 1) * sizeof *nums);
    char *copy = nums ? malloc(*vl + 1) : NULL;
    if (nums)
        f->nums = nums;
    if (copy) {
        memcpy(copy, v, *vl + 1);
        f->nums[f->nnums++] = copy;
    }
    lua_pop(L, 1);
    return copy;
}

/* The fields of the table at idx (0: none). Framing is ours: transfer-encoding and
 * connection-specific fields are left out (the session drops the latter too); a stream's
 * content-length is checked and kept (stream), a whole answer's replaced by the body's. */
static void collect(lua_State *L, int idx, fields_t *f, int stream) {
    if (!idx || lua_type(L, idx) != LUA_TTABLE)
        return;
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (!f->bad && lua_next(L, idx)) {
        size_t nl, vl;
        const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &nl) : NULL;
        if (!name || !loom_http_is_token(name, nl)) {
            fail_field(f, "invalid header name");
            lua_pop(L, 2);
            return;
        }
        if (name_is(name, nl, "transfer-encoding") || name_is(name, nl, "connection")) {
            lua_pop(L, 1);
            continue;
        }
        if (name_is(name, nl, "content-length")) {
            const char *v = value_of(L, f, &vl);
            f->has_cl = 1;
            if (stream && (!v || !loom_http_parse_digits(v, vl, &f->cl)))
                fail_field(f, "invalid content-length (digits only, below 2^64)");
            lua_pop(L, 1);
            continue;
        }
        if (name_is(name, nl, "date"))
            f->has_date = 1;
        if (name_is(name, nl, "content-type"))
            f->has_ct = 1;
        if (lua_type(L, -1) == LUA_TTABLE) {
            for (int i = 1; lua_rawgeti(L, -1, i) != LUA_TNIL; i++) {
                const char *v = value_of(L, f, &vl);
                if (!v || !loom_http_safe_value(v, vl))
                    fail_field(f, v ? "invalid header value (a control character)"
                                    : "invalid header value (not a string)");
                else
                    add(f, name, nl, v, vl);
                lua_pop(L, 1);
            }
            lua_pop(L, 1); /* the nil */
        } else {
            const char *v = value_of(L, f, &vl);
            if (!v || !loom_http_safe_value(v, vl))
                fail_field(f, v ? "invalid header value (a control character)"
                                : "invalid header value (not a string)");
            else
                add(f, name, nl, v, vl);
        }
        lua_pop(L, 1);
    }
}

static void add_date(loom_server_t *srv, fields_t *f) {
    size_t len;
    const char *d = loom_server_date(srv, &len);
    if (!f->has_date)
        add(f, "date", 4, d, len);
}

static void add_length(fields_t *f, uint64_t n) {
    int len = snprintf(f->clbuf, sizeof f->clbuf, "%llu", (unsigned long long)n);
    add(f, "content-length", 14, f->clbuf, (size_t)len);
}

static void find(const loom_h2_head_t *h, const char *name, const char **v, size_t *len) {
    size_t n = strlen(name);
    for (size_t i = 0; i < h->nheaders; i++)
        if (h->headers[i].namelen == n && memcmp(h->headers[i].name, name, n) == 0) {
            *v = h->headers[i].value;
            *len = h->headers[i].valuelen;
            return;
        }
}

/* The access log's line and the counters, when the answer is complete (as HTTP/1's). */
static void log_request_end(h2req_t *rq) {
    loom_server_t *srv = rq->hc->srv;
    const loom_h2_head_t *h = rq->head;
    if (!srv->obs || !h)
        return;
    loom_obs_h2_t r = {h->method.p,
                       h->path.p ? h->path.p : "/",
                       NULL,
                       NULL,
                       h->method.len,
                       h->path.p ? h->path.len : 1,
                       0,
                       0,
                       rq->status,
                       rq->sent,
                       rq->t0};
    find(h, "user-agent", &r.ua, &r.ua_len);
    find(h, "referer", &r.ref, &r.ref_len);
    loom_obs_h2_end(srv, &rq->hc->c->sock, &r);
    rq->t0 = 0;
}

/* A whole answer: head and body, the body queued in one write. */
static void send_whole(h2req_t *rq, int status, fields_t *f, const char *body, size_t blen) {
    loom_h2_stream_t *st = rq->st;
    int nobody = no_body_status(status);
    if (nobody)
        blen = 0;
    else
        add_length(f, blen);
    add_date(rq->hc->srv, f);
    int end = nobody || rq->is_head || blen == 0;
    rq->status = (unsigned)status;
    rq->resp = R_DONE;
    rq->out_done = 1;
    if (!st || f->bad)
        return;
    if (loom_h2_respond(st, status, f->h, f->n, end) == 0 && !end) {
        loom_h2_write(st, body, blen, 1);
        rq->sent = blen;
    }
    log_request_end(rq);
}

static void respond_simple(h2req_t *rq, int status, const char *body) {
    fields_t f;
    fields_init(&f);
    add(&f, "content-type", 12, "text/plain; charset=utf-8", 25);
    send_whole(rq, status, &f, body, strlen(body));
    fields_done(&f);
}

static void log_invalid(h2req_t *rq, const char *why) {
    const loom_h2_head_t *h = rq->head;
    fprintf(stderr, "loom: handler for %.*s %.*s returned an invalid response: %s\n",
            h ? (int)h->method.len : 1, h ? h->method.p : "?",
            h && h->path.p ? (int)h->path.len : 1, h && h->path.p ? h->path.p : "?", why);
    fflush(stderr);
}

/* The handler's results: a string (200 text/plain), nothing (204), or status, headers, body. */
static void respond_results(lua_State *L, h2req_t *rq, int nres) {
    if (rq->fail_status) {
        respond_simple(rq, rq->fail_status, loom_http_reason(rq->fail_status));
        return;
    }
    fields_t f;
    fields_init(&f);
    size_t blen = 0;
    const char *body = NULL;
    int status = 200;
    if (nres == 1 && lua_type(L, 1) == LUA_TSTRING) {
        body = lua_tolstring(L, 1, &blen);
        add(&f, "content-type", 12, "text/plain; charset=utf-8", 25);
    } else if (nres == 0 || lua_isnil(L, 1)) {
        status = 204;
    } else {
        int isint;
        lua_Integer st = lua_tointegerx(L, 1, &isint);
        if (!isint || st < 200 || st > 999) {
            fail_field(&f, "invalid status (an integer from 200 to 999)");
        } else {
            status = (int)st;
            collect(L, nres >= 2 ? 2 : 0, &f, 0);
            if (nres >= 3 && lua_type(L, 3) == LUA_TSTRING)
                body = lua_tolstring(L, 3, &blen);
        }
    }
    if (f.bad) {
        log_invalid(rq, f.why);
        fields_done(&f);
        respond_simple(rq, 500, "Internal Server Error");
        return;
    }
    send_whole(rq, status, &f, body ? body : "", blen);
    fields_done(&f);
}

/* The end of a streamed answer. One shorter than its content-length is reset: the client
 * must not take it for whole. */
static void stream_end(h2req_t *rq) {
    rq->resp = R_DONE;
    if (!rq->st || rq->out_done)
        return;
    rq->out_done = 1;
    if (rq->out_sized && rq->out_left > 0)
        loom_h2_reset(rq->st, LOOM_H2_INTERNAL_ERROR);
    else
        loom_h2_write(rq->st, NULL, 0, 1);
    log_request_end(rq);
}

/* ---------------------------------------------------------------- handler tasks */

static void log_handler_error(h2req_t *rq, loom_task_t *t) {
    const char *msg = lua_tostring(t->co, 2);
    if (!rq->st && msg) { /* the client left: its "closed: ..." is no bug of ours */
        const char *nl = strchr(msg, '\n'), *hit = strstr(msg, "closed: ");
        if (hit && (!nl || hit < nl) && (hit == msg || hit[-1] == ' '))
            return;
    }
    loom_obs_handler_error(rq->hc->srv);
    const loom_h2_head_t *h = rq->head;
    fprintf(stderr, "loom: error in handler for %.*s %.*s: %s\n", h ? (int)h->method.len : 1,
            h ? h->method.p : "?", h && h->path.p ? (int)h->path.len : 1,
            h && h->path.p ? h->path.p : "?", msg ? msg : "(error object)");
    fflush(stderr);
}

static void respond_fault(h2req_t *rq, loom_task_t *t) {
    const char *e = lua_type(t->co, 2) == LUA_TSTRING ? lua_tostring(t->co, 2) : NULL;
    char body[512];
    loom_http_fault_body(e, rq->fault_status, body, sizeof body);
    respond_simple(rq, rq->fault_status, body);
}

static void on_handler_done(loom_t *h, loom_task_t *t) {
    (void)h;
    h2req_t *rq = t->done_ud;
    t->observed = 1;
    rq->task = NULL;
    rq->deadline = 0;
    if (!rq->st || rq->resp == R_DONE) {
        if (t->failed && !t->is_cancelled && !rq->fail_status)
            log_handler_error(rq, t);
        detach(rq, !rq->st);
        req_free_if_done(rq);
        return;
    }
    if (t->failed) {
        int fault = !t->is_cancelled && !rq->fail_status && rq->fault_status && rq->resp == R_NONE;
        if (!t->is_cancelled && !rq->fail_status && !fault)
            log_handler_error(rq, t);
        if (rq->resp == R_NONE) {
            detach(rq, 0);
            if (rq->fail_status)
                respond_simple(rq, rq->fail_status, loom_http_reason(rq->fail_status));
            else if (fault)
                respond_fault(rq, t);
            else
                respond_simple(rq, 500, "Internal Server Error");
        } else { /* a stream cut short: the client must not take it for whole */
            rq->resp = R_DONE;
            rq->out_done = 1;
            loom_h2_reset(rq->st, LOOM_H2_INTERNAL_ERROR);
        }
    } else if (rq->resp == R_STREAM) {
        stream_end(rq);
    } else if (rq->resp == R_NONE) {
        respond_results(t->co, rq, t->nres);
    }
    detach(rq, 0);
    req_free_if_done(rq);
}

static void arm_timer(h2conn_t *hc);

/* Pushes the entry's arguments, as loom_conn_push_request does for HTTP/1. */
static int push_request(lua_State *L, h2req_t *rq) {
    loom_server_t *srv = rq->hc->srv;
    const loom_h2_head_t *h = rq->head;
    lua_createtable(L, 0, 8);
    if (srv->reqmt_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, srv->reqmt_ref);
        lua_setmetatable(L, -2);
    }
    loom_reqbox_t *box = lua_newuserdatauv(L, sizeof *box, 0);
    box->c = NULL;
    box->gone = 0;
    box->http10 = 2;
    box->h2 = rq;
    box->tlen = 0;
    rq->box = box;
    lua_rawgeti(L, LUA_REGISTRYINDEX, srv->boxmt_ref);
    lua_setmetatable(L, -2);
    lua_pushlstring(L, h->method.p, h->method.len);
    if (!h->path.p) {
        lua_pushliteral(L, "/"); /* CONNECT has no :path */
    } else {
        size_t n = 0;
        while (n < h->path.len && h->path.p[n] != '?' && h->path.p[n] != '#')
            n++;
        lua_pushlstring(L, h->path.p, n);
    }
    return 4;
}

static void run_handler(loom_t *h, loom_job_t *job) {
    h2req_t *rq = (h2req_t *)job;
    loom_server_t *srv = rq->hc->srv;
    lua_State *L = h->sched.L;
    if (!rq->st) {
        req_free_if_done(rq);
        return;
    }
    if (srv->entry_ref == LUA_NOREF) {
        respond_simple(rq, 503, "Service Unavailable");
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, srv->entry_ref);
    int nargs = push_request(L, rq);
    loom_task_t *t = loom_spawn_internal(h, L, nargs, on_handler_done, rq);
    rq->task = t;
    loom_task_run_now(h, t);
    if (rq->task == t && rq->resp == R_NONE && srv->tl[TL_HANDLER].ms) {
        rq->deadline = uv_now(h->loop) + srv->tl[TL_HANDLER].ms;
        arm_timer(rq->hc);
    }
}

/* handler_timeout: the handler is cancelled, the client answered 503 on its stream. */
static void handler_expired(h2req_t *rq) {
    loom_server_t *srv = rq->hc->srv;
    const loom_h2_head_t *h = rq->head;
    int status = rq->fail_status ? rq->fail_status : 503;
    loom_obs_handler_timeout(srv);
    fprintf(stderr, "loom: handler for %.*s %.*s ran past handler_timeout (%g s): cancelled\n",
            (int)h->method.len, h->method.p, h->path.p ? (int)h->path.len : 1,
            h->path.p ? h->path.p : "*", (double)srv->tl[TL_HANDLER].ms / 1000);
    fflush(stderr);
    loom_task_cancel(rq->task);
    detach(rq, 1);
    rq->waiter = NULL;
    respond_simple(rq, status, loom_http_reason(status));
}

static void on_timer(uv_timer_t *t) {
    h2conn_t *hc = t->data;
    uint64_t now = uv_now(t->loop), ms = hc->srv->tl[TL_HANDLER].ms;
    for (h2req_t *rq = hc->reqs, *next; rq; rq = next) {
        next = rq->next;
        if (!rq->deadline || rq->deadline > now)
            continue;
        if (!rq->task || rq->resp != R_NONE || !rq->st) {
            rq->deadline = 0; /* the answer has begun: send_timeout bounds it */
            continue;
        }
        if (rq->waiter && rq->wait == W_BODY) {
            rq->deadline = now + ms; /* waiting for the body, which body_timeout bounds */
            continue;
        }
        rq->deadline = 0;
        handler_expired(rq);
    }
    arm_timer(hc);
}

static void arm_timer(h2conn_t *hc) {
    uint64_t next = UINT64_MAX, now = uv_now(hc->timer.loop);
    for (h2req_t *rq = hc->reqs; rq; rq = rq->next)
        if (rq->deadline && rq->deadline < next)
            next = rq->deadline;
    if (next == UINT64_MAX) {
        uv_timer_stop(&hc->timer);
        return;
    }
    uv_timer_start(&hc->timer, on_timer, next > now ? next - now : 0, 0);
}

/* ---------------------------------------------------------------- session callbacks */

static void stream_opened(h2conn_t *hc) {
    if (hc->nstreams++ == 0)
        loom_conn_h2_idle(hc->c, 0);
}

static void stream_ended(h2conn_t *hc) {
    if (--hc->nstreams > 0 || !hc->s)
        return;
    if (hc->srv->closing && hc->c->state == C_H2)
        loom_conn_leave(hc->c); /* its GOAWAY went: the session ends by itself now */
    else
        loom_conn_h2_idle(hc->c, 1);
}

/* The content-length of the head over max_body: 413 before any body is read. */
static int too_long(const loom_h2_head_t *h, uint64_t max) {
    for (size_t i = 0; i < h->nheaders; i++) {
        const loom_h2_header_t *f = &h->headers[i];
        uint64_t n;
        if (f->namelen == 14 && memcmp(f->name, "content-length", 14) == 0 &&
            loom_http_parse_digits(f->value, f->valuelen, &n) && n > max)
            return 1;
    }
    return 0;
}

static void on_request(loom_h2_stream_t *st, const loom_h2_head_t *head) {
    h2conn_t *hc = loom_h2_session_data(loom_h2_stream_session(st));
    loom_server_t *srv = hc->srv;
    h2req_t *rq = calloc(1, sizeof *rq);
    if (!rq) {
        loom_h2_reset(st, LOOM_H2_INTERNAL_ERROR);
        return;
    }
    rq->hc = hc;
    rq->st = st;
    rq->head = head;
    rq->prev = hc->tail;
    if (hc->tail)
        hc->tail->next = rq;
    else
        hc->reqs = rq;
    hc->tail = rq;
    hc->nreqs++;
    loom_h2_stream_set_data(st, rq);
    stream_opened(hc);
    if (srv->obs)
        rq->t0 = uv_hrtime();
    rq->is_head = head->method.len == 4 && memcmp(head->method.p, "HEAD", 4) == 0;
    const char *ev = NULL;
    size_t evl = 0;
    find(head, "expect", &ev, &evl);
    rq->expect = ev && evl == 12 && strncasecmp(ev, "100-continue", 12) == 0;
    if (too_long(head, srv->max_body)) {
        respond_simple(rq, 413, "Content Too Large");
        return;
    }
    rq->job.run = run_handler;
    loom_sched_defer(srv->host, &rq->job);
}

static void wake_body(h2req_t *rq) {
    if (!rq->waiter || rq->wait != W_BODY)
        return;
    if (rq->in_end || rq->fail_status || (rq->chunk_mode && body_len(rq) > 0))
        loom_wake(rq->waiter);
    else
        loom_task_extend(rq->waiter, rq->hc->srv->body_timeout);
}

static void on_data(loom_h2_stream_t *st, const char *data, size_t len) {
    h2req_t *rq = loom_h2_stream_data(st);
    if (!rq) /* no memory for it at on_request: its reset is on the way */
        return;
    loom_server_t *srv = rq->hc->srv;
    rq->body_seen += len;
    if (rq->fail_status || rq->resp == R_DONE)
        return; /* dropped, and not given back: the stream's end returns the window */
    if (rq->body_seen > srv->max_body) {
        rq->fail_status = 413;
        wake_body(rq);
        return;
    }
    size_t have = body_len(rq), cap0 = rq->body ? rq->body->cap : 0;
    if (have + len > cap0) {
        size_t cap = cap0 ? cap0 * 2 : 16384;
        while (cap < have + len)
            cap *= 2;
        loom_body_t *n = realloc(rq->body, sizeof *n + cap);
        if (!n) {
            rq->fail_status = 500;
            wake_body(rq);
            return;
        }
        n->len = have;
        n->cap = cap;
        rq->body = n;
    }
    memcpy(rq->body->data + have, data, len);
    rq->body->len = have + len;
    if (rq->body_wanted && !rq->chunk_mode)
        loom_h2_consume(st, len); /* a whole body: max_body bounds it, not the window */
    wake_body(rq);
}

static void on_end(loom_h2_stream_t *st) {
    h2req_t *rq = loom_h2_stream_data(st);
    if (!rq)
        return;
    rq->in_end = 1;
    wake_body(rq);
}

static void stream_gone(loom_h2_stream_t *st, int reset) {
    h2req_t *rq = loom_h2_stream_data(st);
    if (!rq)
        return;
    loom_h2_stream_set_data(st, NULL);
    rq->st = NULL;
    rq->head = NULL;
    if (rq->task)
        detach(rq, reset);
    stream_ended(rq->hc);
    req_free_if_done(rq);
}

static void on_reset(loom_h2_stream_t *st, uint32_t code) {
    (void)code;
    stream_gone(st, 1);
}

static void on_close(loom_h2_stream_t *st) {
    stream_gone(st, 0);
}

static void on_writable(loom_h2_stream_t *st) {
    h2req_t *rq = loom_h2_stream_data(st);
    if (rq && rq->waiter && rq->wait == W_WRITE)
        loom_wake(rq->waiter);
}

static void on_closed(loom_h2_session_t *s) {
    h2conn_t *hc = loom_h2_session_data(s);
    loom_conn_t *c = hc->c;
    hc->s = NULL;
    if (c->state == C_H2)
        loom_conn_leave(c);
    loom_conn_sock_gone(c);
    hc_free_if_done(hc);
}

static const loom_h2_callbacks_t callbacks = {
    on_request, on_data, on_end, on_reset, on_close, on_writable, on_closed,
};

/* ---------------------------------------------------------------- the engine's calls */

static h2conn_t *conn_h2(loom_conn_t *c) {
    loom_h2_session_t *s = loom_sock_owner(&c->sock);
    return s ? loom_h2_session_data(s) : NULL;
}

void loom_h2srv_start(loom_conn_t *c, const char *data, size_t len) {
    loom_server_t *srv = c->srv;
    h2conn_t *hc = calloc(1, sizeof *hc);
    if (!hc) {
        loom_conn_close(c);
        return;
    }
    hc->c = c;
    hc->srv = srv;
    loom_h2_opts_t o;
    loom_h2_opts_default(&o);
    o.max_streams = srv->max_streams;
    o.max_header = srv->max_header;
    o.window = 256 * 1024;
    o.rbuf = srv->rbuf;
    o.rbuf_len = sizeof srv->rbuf;
    loom_h2_session_t *s = loom_h2_session_new(&c->sock, &o, &callbacks, hc);
    if (!s) {
        free(hc);
        loom_conn_close(c);
        return;
    }
    hc->s = s;
    uv_timer_init(srv->host->loop, &hc->timer);
    hc->timer.data = hc;
    loom_handle_opened(srv->host);
    c->state = C_H2;
    loom_conn_h2_idle(c, 1);
    /* what HTTP/1 kept is not needed again: the session reads into the server's buffer */
    loom_http_msg_release(&c->msg);
    free(c->body);
    c->body = NULL;
    /* the preface may have arrived in pieces, gathered in `in`: fed from there */
    char *in = c->in;
    c->in = NULL;
    c->in_len = c->in_cap = 0;
    loom_h2_session_feed(s, data, len);
    free(in);
    if (srv->closing && c->state == C_H2) /* srv:close came before its first bytes */
        loom_h2srv_goaway(c);
}

void loom_h2srv_goaway(loom_conn_t *c) {
    h2conn_t *hc = conn_h2(c);
    if (!hc || !hc->s)
        return;
    loom_h2_goaway(hc->s, LOOM_H2_NO_ERROR);
    if (hc->nstreams == 0 && c->state == C_H2)
        loom_conn_leave(c); /* nothing in flight: the session ends by itself */
}

void loom_h2srv_close(loom_conn_t *c) {
    h2conn_t *hc = conn_h2(c);
    if (!hc || !hc->s)
        return;
    if (hc->nstreams == 0)
        loom_h2_goaway(hc->s, LOOM_H2_NO_ERROR);
    else
        loom_h2_session_close(hc->s);
}

/* ---------------------------------------------------------------- the request API */

static h2req_t *live(lua_State *L, loom_reqbox_t *box) {
    h2req_t *rq = box->h2;
    if (!rq->st)
        luaL_error(L, "the request's connection is closed");
    return rq;
}

static int op_headers(lua_State *L, h2req_t *rq) {
    const loom_h2_head_t *h = rq->head;
    lua_createtable(L, 0, (int)h->nheaders + 1);
    for (size_t i = 0; i < h->nheaders; i++) {
        const loom_h2_header_t *f = &h->headers[i];
        lua_pushlstring(L, f->name, f->namelen);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) { /* name old */
            /* RFC 9113 8.2.3: a cookie split into fields is joined with "; " */
            int cookie = f->namelen == 6 && memcmp(f->name, "cookie", 6) == 0;
            lua_pushstring(L, cookie ? "; " : ", ");
            lua_pushlstring(L, f->value, f->valuelen);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, f->value, f->valuelen);
        }
        lua_rawset(L, -3);
    }
    if (h->authority.p) {
        lua_pushlstring(L, h->authority.p, h->authority.len);
        lua_setfield(L, -2, "host");
    }
    return 1;
}

static int op_peer(lua_State *L, h2req_t *rq) {
    return loom_conn_push_peer(L, rq->hc->c);
}

enum { WANT_WHOLE, WANT_CHUNK };

static int body_ready(const h2req_t *rq, int want) {
    if (rq->in_end || rq->fail_status || !rq->st)
        return 1;
    return want == WANT_CHUNK && body_len(rq) > 0;
}

static int push_body(lua_State *L, h2req_t *rq, int want) {
    if (rq->fail_status == 413)
        return loom_fail(L, "limit", "request body larger than max_body (%d bytes)",
                         (int)rq->hc->srv->max_body);
    if (rq->fail_status == 408) {
        char secs[32]; /* lua_pushfstring has no %g */
        snprintf(secs, sizeof secs, "%g", rq->hc->srv->body_timeout);
        return loom_fail(L, "timeout", "request body (no bytes for %s s)", secs);
    }
    if (rq->fail_status)
        return loom_fail(L, "http", "malformed request body");
    if (!rq->st || (!rq->in_end && !(want == WANT_CHUNK && body_len(rq) > 0)))
        return loom_fail(L, "closed", "the client reset the stream before the body was complete");
    if (want == WANT_WHOLE) {
        lua_pushlstring(L, rq->body ? rq->body->data : "", body_len(rq));
        return 1;
    }
    size_t n = body_len(rq);
    if (n == 0) {
        lua_pushnil(L); /* the end */
        return 1;
    }
    lua_pushlstring(L, rq->body->data, n);
    rq->body->len = 0;
    loom_h2_consume(rq->st, n); /* the peer may send as much again */
    return 1;
}

static int body_build(lua_State *L, void *ud, int reason) {
    h2req_t *rq = ud;
    rq->waiter = NULL;
    rq->wait = W_NONE;
    /* the answer (408 if the handler lets the failure through) ends the stream, and the
     * session's RST_STREAM (NO_ERROR) after it tells the client to stop sending */
    if (reason == LOOM_WAKE_TIMEOUT && rq->st)
        rq->fail_status = 408;
    return push_body(L, rq, rq->chunk_mode ? WANT_CHUNK : WANT_WHOLE);
}

static void wait_abort(void *ud) {
    h2req_t *rq = ud;
    rq->waiter = NULL;
    rq->wait = W_NONE;
}

static int op_body(lua_State *L, h2req_t *rq, int want, const char *fname) {
    if (rq->waiter)
        return luaL_error(L, "%s: another task is already reading this request's body", fname);
    if (want == WANT_WHOLE && rq->chunk_mode)
        return luaL_error(L, "%s: the body is being read with req:chunks()", fname);
    rq->chunk_mode = want == WANT_CHUNK;
    if (rq->expect && rq->st && !rq->in_end && rq->resp == R_NONE) {
        rq->expect = 0; /* the client waits for this before it sends the body */
        loom_h2_informational(rq->st, 100);
    }
    if (want == WANT_WHOLE && !rq->body_wanted) {
        rq->body_wanted = 1;
        if (rq->st && body_len(rq) > 0)
            loom_h2_consume(rq->st, body_len(rq));
    }
    if (body_ready(rq, want))
        return push_body(L, rq, want);
    loom_task_t *t = loom_task_self(L, fname);
    rq->waiter = t;
    rq->wait = W_BODY;
    lua_settop(L, 1);
    return loom_park(L, t, rq->hc->srv->body_timeout, body_build, wait_abort, rq);
}

static int op_stream(lua_State *L, h2req_t *rq) {
    lua_Integer status = luaL_checkinteger(L, 2);
    luaL_argcheck(L, status >= 200 && status <= 999, 2, "invalid status (200 to 999)");
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    if (rq->resp != R_NONE)
        return luaL_error(L, "stream: the response has already started");
    if (!rq->st)
        return loom_fail(L, "closed", "the client has gone");
    fields_t f;
    fields_init(&f);
    collect(L, lua_istable(L, 3) ? 3 : 0, &f, 1);
    if (f.bad) {
        const char *why = f.why;
        fields_done(&f);
        return luaL_error(L, "stream: %s", why);
    }
    int nobody = no_body_status((int)status);
    if (!f.has_ct)
        add(&f, "content-type", 12, "application/octet-stream", 24);
    if (f.has_cl && !nobody)
        add_length(&f, f.cl);
    add_date(rq->hc->srv, &f);
    rq->out_sized = f.has_cl || nobody;
    rq->out_left = nobody ? 0 : f.cl;
    int end = nobody || rq->is_head;
    int rc = f.bad ? -1 : loom_h2_respond(rq->st, (int)status, f.h, f.n, end);
    fields_done(&f);
    if (rc != 0)
        return loom_fail(L, "closed", "the client has gone");
    rq->status = (unsigned)status;
    rq->resp = R_STREAM;
    rq->out_done = (unsigned)end;
    lua_pushboolean(L, 1);
    return 1;
}

static int write_build(lua_State *L, void *ud, int reason) {
    h2req_t *rq = ud;
    rq->waiter = NULL;
    rq->wait = W_NONE;
    if (!rq->st)
        return loom_fail(L, "closed", "the client has gone");
    if (reason == LOOM_WAKE_TIMEOUT) { /* a client that stopped reading: let it go */
        char secs[32];
        snprintf(secs, sizeof secs, "%g", rq->hc->srv->send_timeout);
        loom_h2_reset(rq->st, LOOM_H2_CANCEL);
        return loom_fail(L, "timeout", "the client read nothing for %s s", secs);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int op_write(lua_State *L, h2req_t *rq) {
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    if (rq->resp != R_STREAM)
        return luaL_error(L, "write: no streaming response was started (use req:stream)");
    if (rq->waiter)
        return luaL_error(L, "write: another task is already writing this response");
    if (!rq->st)
        return loom_fail(L, "closed", "the client has gone");
    if (len == 0 || rq->out_done) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (rq->out_sized) {
        if (len > rq->out_left) {
            rq->out_left = 0;
            if (rq->status == 204 || rq->status == 304)
                return loom_fail(L, "limit", "a %d response has no body", (int)rq->status);
            return loom_fail(L, "limit", "write of %I bytes past the response's content-length",
                             (lua_Integer)len);
        }
        rq->out_left -= len;
    }
    int64_t queued = loom_h2_write(rq->st, data, len, 0);
    if (queued < 0)
        return loom_fail(L, "closed", "the client has gone");
    rq->sent += len;
    if (queued < LOOM_H2_STREAM_HIGH_WATER) {
        lua_pushboolean(L, 1);
        return 1;
    }
    loom_task_t *t = loom_task_self(L, "write");
    rq->waiter = t;
    rq->wait = W_WRITE;
    lua_settop(L, 1);
    return loom_park(L, t, rq->hc->srv->send_timeout, write_build, wait_abort, rq);
}

int loom_h2srv_req(lua_State *L, loom_reqbox_t *box, int op) {
    h2req_t *rq = box->h2;
    switch (op) {
    case LOOM_H2OP_TARGET:
        rq = live(L, box);
        if (rq->head->path.p)
            lua_pushlstring(L, rq->head->path.p, rq->head->path.len);
        else
            lua_pushliteral(L, "/");
        return 1;
    case LOOM_H2OP_HEADERS:
        return op_headers(L, live(L, box));
    case LOOM_H2OP_PEER:
        return op_peer(L, live(L, box));
    case LOOM_H2OP_CLOSING:
        lua_pushboolean(L, !rq->st || rq->hc->srv->closing);
        return 1;
    case LOOM_H2OP_BODY:
        return op_body(L, rq, WANT_WHOLE, "text");
    case LOOM_H2OP_CHUNK:
        return op_body(L, rq, WANT_CHUNK, "chunks");
    case LOOM_H2OP_STREAM:
        return op_stream(L, rq);
    case LOOM_H2OP_WRITE:
        return op_write(L, rq);
    case LOOM_H2OP_UPGRADE:
        luaL_checktype(L, 2, LUA_TTABLE);
        return loom_fail(L, "http", "a protocol upgrade is not possible on an HTTP/2 stream");
    case LOOM_H2OP_FAULT: {
        lua_Integer status = luaL_checkinteger(L, 2);
        luaL_argcheck(L, status >= 400 && status <= 599, 2, "a 4xx or 5xx status expected");
        rq->fault_status = (unsigned)status;
        return 0;
    }
    default:
        return 0;
    }
}
