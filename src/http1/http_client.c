/*
 * http_client.c - the client's connection pool: one entry per key (scheme, host, port, TLS
 * settings, proxy), its kept-alive connections (most recently used first), the slots that
 * cap connections per key and the exchanges waiting for one, in order. Idle connections keep
 * reading, so a server's close is seen at once; they and their expiry timer are unreferenced,
 * so they never keep the process alive. Also parses responses on a connection (llhttp, via
 * http_parse.c) and hands the body to the exchange (http_exchange.c).
 * Knows nothing of DNS, proxies or TLS: Lua brings connected streams.
 */
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "http_client.h"
#include "fail.h"

/* bytes of an unread body still worth reading to keep a connection */
#define DRAIN_MAX (64 * 1024)
#define BODY_HIGH_WATER (256 * 1024)

static void arm_timer(loom_client_pool_t *p);

/* ---------------------------------------------------------------- lists */

static void list_remove(loom_client_conn_t **head, loom_client_conn_t *c) {
    if (c->prev)
        c->prev->next = c->next;
    else if (*head == c)
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void list_push(loom_client_conn_t **head, loom_client_conn_t *c) {
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

void loom_client_wait_add(loom_client_host_t *h, loom_client_x_t *x) {
    x->wnext = NULL;
    x->wprev = h->wtail;
    if (h->wtail)
        h->wtail->wnext = x;
    else
        h->whead = x;
    h->wtail = x;
    x->queued = 1;
}

void loom_client_wait_remove(loom_client_x_t *x) {
    loom_client_host_t *h = x->host;
    if (!x->queued)
        return;
    if (x->wprev)
        x->wprev->wnext = x->wnext;
    else
        h->whead = x->wnext;
    if (x->wnext)
        x->wnext->wprev = x->wprev;
    else
        h->wtail = x->wprev;
    x->wnext = x->wprev = NULL;
    x->queued = 0;
}

static loom_client_x_t *wait_pop(loom_client_host_t *h) {
    loom_client_x_t *x = h->whead;
    if (x)
        loom_client_wait_remove(x);
    return x;
}

/* ---------------------------------------------------------------- hosts */

loom_client_host_t *loom_client_host_get(loom_client_pool_t *p, const char *key, size_t len) {
    loom_client_host_t *h;
    for (h = p->hosts; h; h = h->next)
        if (h->keylen == len && memcmp(h->key, key, len) == 0)
            return h;
    h = calloc(1, sizeof *h);
    if (!h || !(h->key = malloc(len + 1))) {
        free(h);
        return NULL;
    }
    memcpy(h->key, key, len);
    h->key[len] = '\0';
    h->keylen = len;
    const char *bar = memchr(key, '|', len);
    h->origin_len = bar ? (int)(bar - key) : (int)len;
    h->pool = p;
    h->next = p->hosts;
    p->hosts = h;
    return h;
}

/* ---------------------------------------------------------------- connections */

static int healthy(loom_client_conn_t *c) {
    return c->s && loom_stream_healthy(c->s);
}

loom_client_conn_t *loom_client_take_idle(loom_client_host_t *h) {
    loom_client_conn_t *c;
    while ((c = h->idle) != NULL) {
        list_remove(&h->idle, c);
        list_push(&h->pool->busy, c);
        h->nidle--;
        h->active++;
        c->state = CS_BUSY;
        if (healthy(c)) {
            loom_stream_ref(c->s, 1);
            h->reused++;
            return c;
        }
        loom_client_conn_close(c);
    }
    return NULL;
}

static void conn_free_if_done(loom_client_conn_t *c) {
    if (!c->s && !c->x) {
        loom_http_msg_release(&c->msg);
        free(c);
    }
}

/* A slot came free: the next waiter gets it, to make its own connection. */
static void slot_freed(loom_client_host_t *h) {
    loom_client_x_t *x = h->pool->closed ? NULL : wait_pop(h);
    if (!x)
        return;
    h->active++;
    x->slot = 1;
    loom_client_x_event(x);
}

void loom_client_slot_release(loom_client_host_t *h) {
    h->active--;
    slot_freed(h);
}

/* Unlinks c from whatever holds it; its stream is closed or closing. */
static void conn_detach(loom_client_conn_t *c) {
    loom_client_host_t *h = c->host;
    int was = c->state;
    c->state = CS_DEAD;
    if (was == CS_IDLE) {
        list_remove(&h->idle, c);
        h->nidle--;
    } else if (was == CS_DRAIN) {
        list_remove(&h->pool->draining, c);
        h->active--;
    } else if (was == CS_BUSY) {
        list_remove(&h->pool->busy, c);
        h->active--;
    }
    loom_client_x_t *x = c->x;
    if (x) {
        c->x = NULL;
        x->c = NULL;
        if (x->phase < X_DONE) {
            loom_client_x_fail(x, "closed", "connection closed before the response %s (%.*s)",
                               x->got_bytes ? "ended" : "began", h->origin_len, h->key);
            x->retryable = x->reused && !x->got_bytes;
        } else
            loom_client_x_event(x);
    }
    if (was == CS_BUSY || was == CS_DRAIN)
        slot_freed(h);
}

void loom_client_conn_close(loom_client_conn_t *c) {
    loom_stream_t *s = c->s;
    if (c->state == CS_DEAD)
        return;
    c->s = NULL;
    if (s) {
        s->on_event = NULL;
        s->owner = NULL;
        loom_stream_close(s); /* freed by stream.c once libuv lets go */
    }
    conn_detach(c);
    conn_free_if_done(c);
}

/* Back to the pool: to the first waiter, or idle until a request or its expiry. */
static void conn_release(loom_client_conn_t *c) {
    loom_client_host_t *h = c->host;
    loom_client_pool_t *p = h->pool;
    if (!p->closed && h->whead && (h->whead->flags & HX_FRESH)) {
        /* The first waiter is a retry after a stale connection: it must go out on a new
         * one, which is all it may retry on. This one closes; its slot goes to the waiter. */
        loom_client_conn_close(c);
        return;
    }
    loom_client_x_t *x = p->closed ? NULL : wait_pop(h);
    if (x) {
        x->reused = 1;
        h->reused++;
        loom_client_conn_begin(c, x);
        loom_client_x_event(x);
        return;
    }
    if (p->closed || p->idle_ms == 0) {
        loom_client_conn_close(c);
        return;
    }
    h->active--;
    list_remove(&p->busy, c);
    c->state = CS_IDLE;
    uint64_t ms = p->idle_ms;
    if (c->ka_ms && c->ka_ms < ms)
        ms = c->ka_ms;
    c->deadline = uv_now(p->host->loop) + ms;
    list_push(&h->idle, c);
    h->nidle++;
    loom_stream_ref(c->s, 0);
    loom_stream_read_start(c->s); /* to see the server close it */
    arm_timer(p);
}

/* ---------------------------------------------------------------- parsing */

static loom_client_conn_t *conn_of(loom_http_msg_t *m) {
    return loom_http_owner(m);
}

/* "Keep-Alive: timeout=5, max=100": the server closes after that many idle seconds, so we
 * give the connection up a second before (half the time when it is that short). */
static uint64_t keepalive_ms(const loom_head_t *hd) {
    int i = loom_head_find(hd, "keep-alive", 10);
    if (i < 0)
        return 0;
    const char *v = LOOM_HEAD_VALUE(hd, i), *end = v + hd->hdrs[i].value_len;
    for (; v + 8 <= end; v++) {
        if (strncmp(v, "timeout=", 8) == 0) {
            long secs = strtol(v + 8, NULL, 10);
            if (secs <= 0)
                return 1;
            return secs > 1 ? (uint64_t)(secs - 1) * 1000 : 500;
        }
    }
    return 0;
}

static int coding_of(const loom_head_t *hd) {
    int i = loom_head_find(hd, "content-encoding", 16);
    if (i < 0)
        return 0;
    if (loom_head_has_token(hd, i, "gzip") || loom_head_has_token(hd, i, "x-gzip"))
        return LOOM_CODING_GZIP;
    if (loom_head_has_token(hd, i, "deflate"))
        return LOOM_CODING_DEFLATE;
    if (loom_inflate_has_br() && loom_head_has_token(hd, i, "br"))
        return LOOM_CODING_BR;
    return 0;
}

static int on_headers(loom_http_msg_t *m) {
    loom_client_conn_t *c = conn_of(m);
    loom_client_x_t *x = c->x;
    int status = m->parser.status_code;
    if (!x || (status >= 100 && status < 200 && status != 101))
        return 1; /* an interim response, without a body: the real one follows */
    x->status = status;
    x->minor = m->parser.http_minor;
    x->head = m->head;
    m->head = NULL; /* the exchange keeps it until Lua has the headers */
    x->phase = X_HEAD;
    c->ka_ms = keepalive_ms(x->head);
    if ((x->flags & HX_DECODE) && !(x->flags & HX_HEAD)) {
        int coding = coding_of(x->head);
        if (coding && !(x->z = loom_inflate_new(coding)))
            return -1;
    }
    if (!x->z && (m->parser.flags & F_CONTENT_LENGTH))
        x->expect = m->parser.content_length;
    /* 1: "the response has no body", whatever its Content-Length says (RFC 9112 6.3) */
    return (x->flags & HX_HEAD) || status == 204 || status == 304 ? 1 : 0;
}

static int on_body(loom_http_msg_t *m, const char *at, size_t len) {
    loom_client_conn_t *c = conn_of(m);
    if (!c->x)
        return 0; /* draining: nobody wants it */
    return loom_client_x_body(c->x, at, len) == 0 ? 0 : -1;
}

static int on_complete(loom_http_msg_t *m) {
    loom_client_conn_t *c = conn_of(m);
    int status = m->parser.status_code;
    if (c->x && c->x->phase < X_HEAD && status >= 100 && status < 200)
        return 0; /* the end of an interim response */
    c->msg_done = 1;
    c->keep = llhttp_should_keep_alive(&m->parser);
    return HPE_PAUSED; /* nothing after it belongs to us */
}

void loom_client_conn_begin(loom_client_conn_t *c, loom_client_x_t *x) {
    c->x = x;
    x->c = c;
    c->msg_done = 0;
    c->keep = 0;
    c->ka_ms = 0;
    if (llhttp_get_errno(&c->msg.parser) == HPE_PAUSED)
        llhttp_resume(&c->msg.parser);
}

/* The response ended: the connection goes back to the pool or is closed. */
static void message_done(loom_client_conn_t *c) {
    loom_client_x_t *x = c->x;
    /* an answer that came before the whole upload was sent leaves the request cut short */
    int keep = c->keep && healthy(c) && (!x || x->req_done);
    if (x && x->z && x->phase != X_FAILED && loom_inflate_finish(x->z) != 0) {
        /* the framing ended but the compressed stream did not: never a short body as whole */
        loom_client_x_fail(x, "http", "%s (%.*s)", loom_inflate_error(x->z), c->host->origin_len,
                           c->host->key);
        keep = 0;
    }
    if (x) {
        if (x->phase != X_FAILED)
            x->phase = X_DONE;
        x->c = NULL;
        c->x = NULL;
    }
    if (c->state == CS_DRAIN) {
        list_remove(&c->host->pool->draining, c);
        list_push(&c->host->pool->busy, c);
        c->state = CS_BUSY;
    }
    if (keep)
        conn_release(c);
    else
        loom_client_conn_close(c);
    if (x)
        loom_client_x_event(x);
}

static void parse_error(loom_client_conn_t *c, llhttp_errno_t err) {
    loom_client_x_t *x = c->x;
    if (x && x->phase != X_FAILED) {
        if (c->msg.fail == 414 || c->msg.fail == 431)
            loom_client_x_fail(x, "limit", "response head over %u bytes",
                               (unsigned)c->msg.conf->max_header);
        else if (c->msg.fail) /* a check of http_parse.c: it says which */
            loom_client_x_fail(x, "http", "malformed response: %s (%.*s)", c->msg.why,
                               c->host->origin_len, c->host->key);
        else if (err == HPE_USER && x->ekind)
            ; /* the body callback has said why */
        else
            loom_client_x_fail(x, "http", "malformed response: %s (%.*s)", llhttp_errno_name(err),
                               c->host->origin_len, c->host->key);
    }
    loom_client_conn_close(c);
}

/* The peer is gone: a body that runs until the close ends here; anything else broke. */
static void peer_gone(loom_client_conn_t *c) {
    loom_stream_t *s = c->s;
    /* llhttp_finish ends a body that runs until the close (our on_complete pauses, so it
     * may return HPE_PAUSED rather than HPE_OK) */
    if (c->x && c->x->phase == X_HEAD && !s->rerr && (llhttp_finish(&c->msg.parser), c->msg_done)) {
        c->keep = 0;
        message_done(c);
        return;
    }
    loom_client_x_t *x = c->x;
    if (x && x->phase < X_DONE) {
        const char *why = loom_stream_tls_error(s);
        int err = s->rerr ? s->rerr : s->werr;
        if (why)
            loom_client_x_fail(x, "tls", "%s (%.*s)", why, c->host->origin_len, c->host->key);
        else
            loom_client_x_fail(x, "closed", "%s before the response %s (%.*s)",
                               err ? uv_strerror(err) : "connection closed",
                               x->got_bytes ? "ended" : "began", c->host->origin_len, c->host->key);
        x->retryable = x->reused && !x->got_bytes;
    }
    loom_client_conn_close(c);
}

void loom_client_conn_parse(loom_client_conn_t *c) {
    loom_stream_t *s = c->s;
    size_t n = s->len - s->pos;
    if (n > 0 && !c->msg_done) {
        if (c->x)
            c->x->got_bytes = 1;
        const char *start = s->buf + s->pos;
        llhttp_errno_t err = llhttp_execute(&c->msg.parser, start, n);
        if (err == HPE_PAUSED)
            s->pos += (size_t)(llhttp_get_error_pos(&c->msg.parser) - start);
        else if (err == HPE_OK)
            s->pos = s->len;
        else {
            parse_error(c, err);
            return;
        }
    }
    if (c->msg_done) {
        message_done(c);
        return;
    }
    if (s->eof || s->rerr || s->werr) {
        peer_gone(c);
        return;
    }
    loom_client_x_t *x = c->x;
    if (x) {
        if ((x->blen - x->bpos) >= BODY_HIGH_WATER && x->wait != W_BODY)
            loom_stream_read_stop(s); /* the reader catches up first (backpressure) */
        loom_client_x_event(x);
    }
}

/* Read events and closes of a pooled stream. */
static void on_stream_event(loom_stream_t *s) {
    loom_client_conn_t *c = s->owner;
    if (s->state != ST_OPEN) { /* closed under us (teardown) */
        c->s = NULL;
        s->on_event = NULL;
        s->owner = NULL;
        conn_detach(c);
        conn_free_if_done(c);
        return;
    }
    if (c->state == CS_IDLE) { /* the server closed it, or sent what nobody asked for */
        loom_client_conn_close(c);
        return;
    }
    loom_client_conn_parse(c);
}

loom_client_conn_t *loom_client_conn_new(loom_client_host_t *h, loom_stream_t *s) {
    loom_client_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->host = h;
    c->s = s;
    c->state = CS_BUSY;
    list_push(&h->pool->busy, c);
    static const loom_http_conf_t conf = {.on_headers = on_headers,
                                          .on_body = on_body,
                                          .on_complete = on_complete,
                                          .max_header = 64 * 1024,
                                          .owner_off = offsetof(loom_client_conn_t, msg)};
    loom_http_msg_init(&c->msg, HTTP_RESPONSE, &h->pool->heads, &conf);
    s->owner = c;
    s->on_event = on_stream_event;
    h->opened++;
    loom_stream_read_start(s);
    return c;
}

void loom_client_conn_abandon(loom_client_conn_t *c, double drain_s) {
    loom_client_pool_t *p = c->host->pool;
    llhttp_t *parser = &c->msg.parser;
    c->x = NULL;
    int small = !(parser->flags & F_CHUNKED) && (parser->flags & F_CONTENT_LENGTH) &&
                parser->content_length <= DRAIN_MAX;
    if (p->closed || !small || !healthy(c) || drain_s <= 0) {
        loom_client_conn_close(c);
        return;
    }
    /* the rest is read and dropped in the background, unreferenced, within drain_s */
    c->state = CS_DRAIN; /* still holds its slot, until the drain ends */
    list_remove(&p->busy, c);
    c->deadline = uv_now(p->host->loop) + (uint64_t)(drain_s * 1000);
    list_push(&p->draining, c);
    loom_stream_ref(c->s, 0);
    loom_stream_read_start(c->s);
    arm_timer(p);
}

/* ---------------------------------------------------------------- expiry */

static void expire_list(loom_client_conn_t *c, uint64_t now, uint64_t *next) {
    while (c) {
        loom_client_conn_t *n = c->next;
        if (c->deadline <= now)
            loom_client_conn_close(c);
        else if (c->deadline < *next)
            *next = c->deadline;
        c = n;
    }
}

static void on_timer(uv_timer_t *t) {
    loom_client_pool_t *p = t->data;
    uint64_t now = uv_now(p->host->loop), next = UINT64_MAX;
    for (loom_client_host_t *h = p->hosts; h; h = h->next)
        expire_list(h->idle, now, &next);
    expire_list(p->draining, now, &next);
    if (next != UINT64_MAX)
        uv_timer_start(&p->timer, on_timer, next - now, 0);
}

static void arm_timer(loom_client_pool_t *p) {
    if (!p->timer_open || p->closed)
        return;
    uint64_t due = uv_timer_get_due_in(&p->timer);
    uint64_t now = uv_now(p->host->loop), next = UINT64_MAX;
    for (loom_client_host_t *h = p->hosts; h; h = h->next)
        for (loom_client_conn_t *c = h->idle; c; c = c->next)
            if (c->deadline < next)
                next = c->deadline;
    for (loom_client_conn_t *c = p->draining; c; c = c->next)
        if (c->deadline < next)
            next = c->deadline;
    if (next == UINT64_MAX)
        return;
    uint64_t in = next > now ? next - now : 0;
    if (!uv_is_active((uv_handle_t *)&p->timer) || in < due)
        uv_timer_start(&p->timer, on_timer, in, 0);
}

/* ---------------------------------------------------------------- pool lifetime */

static void pool_free_if_done(loom_client_pool_t *p) {
    if (p->boxed || p->xrefs > 0 || p->timer_open)
        return;
    while (p->hosts) {
        loom_client_host_t *h = p->hosts;
        p->hosts = h->next;
        free(h->key);
        free(h);
    }
    loom_head_pool_free(&p->heads);
    free(p);
}

static void on_timer_closed(uv_handle_t *handle) {
    loom_client_pool_t *p = handle->data;
    p->timer_open = 0;
    loom_handle_closed(p->host);
    pool_free_if_done(p);
}

static void close_host_conns(loom_client_host_t *h) {
    while (h->idle)
        loom_client_conn_close(h->idle);
    loom_client_x_t *x;
    while ((x = wait_pop(h)) != NULL)
        loom_client_x_fail(x, "closed", "session closed");
}

/* Closes every connection; exchanges in progress fail with `closed`. */
static void pool_close(loom_client_pool_t *p) {
    if (p->closed)
        return;
    p->closed = 1;
    loom_res_remove(&p->res);
    for (loom_client_host_t *h = p->hosts; h; h = h->next)
        close_host_conns(h);
    while (p->draining)
        loom_client_conn_close(p->draining);
    while (p->busy) {
        if (p->busy->x)
            loom_client_x_fail(p->busy->x, "closed", "session closed");
        loom_client_conn_close(p->busy);
    }
    if (p->timer_open)
        uv_close((uv_handle_t *)&p->timer, on_timer_closed);
}

static void pool_res_close(loom_res_t *r) {
    pool_close((loom_client_pool_t *)r);
}

void loom_client_pool_unref(loom_client_pool_t *p) {
    p->xrefs--;
    pool_free_if_done(p);
}

/* ---------------------------------------------------------------- Lua API */

loom_client_pool_t *loom_client_pool_check(lua_State *L, int idx) {
    loom_client_pool_t **box = luaL_checkudata(L, idx, LOOM_CLIENT_POOL_MT);
    if (!*box)
        luaL_argerror(L, idx, "session has been collected");
    return *box;
}

/* core.http_pool{max_per_host = 10, idle_timeout = 30} -> pool */
static int l_http_pool(lua_State *L) {
    loom_t *host = loom_host(L);
    int max = (int)loom_opt_integer(L, 1, "max_per_host", 10);
    double idle = loom_opt_number(L, 1, "idle_timeout", 30);
    luaL_argcheck(L, max > 0, 1, "option 'max_per_host': must be positive");
    loom_client_pool_t **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, LOOM_CLIENT_POOL_MT);
    loom_client_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return luaL_error(L, "out of memory");
    p->host = host;
    p->max_per_host = max;
    p->idle_ms = idle > 0 ? (uint64_t)(idle * 1000) : 0;
    p->heads.max = 64;
    uv_timer_init(host->loop, &p->timer);
    uv_unref((uv_handle_t *)&p->timer);
    p->timer.data = p;
    p->timer_open = 1;
    loom_handle_opened(host);
    loom_res_add(host, &p->res, pool_res_close);
    p->boxed = 1;
    *box = p;
    return 1;
}

static int pool_gc(lua_State *L) {
    loom_client_pool_t **box = luaL_checkudata(L, 1, LOOM_CLIENT_POOL_MT);
    loom_client_pool_t *p = *box;
    if (!p)
        return 0;
    *box = NULL;
    p->boxed = 0;
    pool_close(p);
    pool_free_if_done(p);
    return 0;
}

static int pool_close_l(lua_State *L) {
    loom_client_pool_t **box = luaL_checkudata(L, 1, LOOM_CLIENT_POOL_MT);
    if (*box)
        pool_close(*box);
    return 0;
}

typedef struct {
    lua_Integer idle, active, opened, reused;
} pool_counts_t;

static void add_counts(pool_counts_t *n, const loom_client_host_t *h) {
    n->idle += h->nidle;
    n->active += h->active;
    n->opened += (lua_Integer)h->opened;
    n->reused += (lua_Integer)h->reused;
}

static void set_count(lua_State *L, const char *name, lua_Integer v) {
    lua_pushinteger(L, v);
    lua_setfield(L, -2, name);
}

/* pool:stats([key]) -> {idle, active, opened, reused}: counts over one key or all. */
static int pool_stats(lua_State *L) {
    loom_client_pool_t *p = loom_client_pool_check(L, 1);
    size_t len;
    const char *key = luaL_optlstring(L, 2, NULL, &len);
    pool_counts_t n = {0, 0, 0, 0};
    for (loom_client_host_t *h = p->hosts; h; h = h->next)
        if (!key || (h->keylen == len && memcmp(h->key, key, len) == 0))
            add_counts(&n, h);
    lua_createtable(L, 0, 4);
    set_count(L, "idle", n.idle);
    set_count(L, "active", n.active);
    set_count(L, "opened", n.opened);
    set_count(L, "reused", n.reused);
    return 1;
}

static const luaL_Reg pool_methods[] = {
    {"close", pool_close_l},
    {"stats", pool_stats},
    {NULL, NULL},
};

static const luaL_Reg pool_meta[] = {
    {"__gc", pool_gc},
    {"__close", pool_close_l},
    {NULL, NULL},
};

static const luaL_Reg client_funcs[] = {
    {"http_pool", l_http_pool},
    {NULL, NULL},
};

int loom_open_http_client(lua_State *L) {
    luaL_newmetatable(L, LOOM_CLIENT_POOL_MT);
    luaL_setfuncs(L, pool_meta, 0);
    luaL_newlib(L, pool_methods);
    lua_setfield(L, -2, "__index"); /* mt.__index = methods */
    lua_pop(L, 1);
    luaL_setfuncs(L, client_funcs, 0);
    return loom_open_http_exchange(L);
}
