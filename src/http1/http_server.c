/*
 * http_server.c - the HTTP/1.1 server engine: accept, read into one shared buffer, parse
 * with llhttp, hand each request to a Lua handler task, and carry the connection on:
 * keep-alive, pipelining (one request at a time, the rest wait unparsed, capped),
 * timeouts (header, keep-alive, linger, handler, send, drain) from sorted lists and one
 * timer, lingering close after errors, graceful shutdown.
 *
 * Below it, each connection's loom_sock (src/io/sock.c) reads, writes, queues and runs TLS;
 * the engine hears from it through hooks (on_alloc, on_input, on_drained, on_progress,
 * on_conn_closed). An idle connection holds no buffer and no coroutine: just this struct.
 * Knows nothing of routing (lua/loom/app.lua) or of how responses are built
 * (http_response.c).
 */
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <lauxlib.h>
#include "http_server.h"
#include "access_log.h"
#include "addr.h"
#include "stream.h" /* loom_tls_conf_check: the core.tls_config object */
#include "tls.h"
#include "fail.h"
#include "h2_session.h"

#define SERVER_MT "loom.server"
#define LINGER_MS 2000
#define SETTLE_MS 100
#define CHUNK_HIGH_WATER                                                                           \
    (256 * 1024) /* unread body bytes we still parse away to keep the connection */

static void on_handler_done(loom_t *h, loom_task_t *t);
static void handler_expired(loom_conn_t *c);
static void server_maybe_done(loom_server_t *srv);

/* ---------------------------------------------------------------- timeout lists */

static void arm_timer(loom_server_t *srv);
static void accept_conn(loom_server_t *srv);

/* How long a connection libuv accepted waits when there was no memory to take it. */
#define ACCEPT_RETRY_MS 100

static void tl_remove(loom_conn_t *c) {
    if (c->tlist == TL_NONE)
        return;
    loom_tlist_t *l = &c->srv->tl[c->tlist];
    if (c->tprev)
        c->tprev->tnext = c->tnext;
    else
        l->head = c->tnext;
    if (c->tnext)
        c->tnext->tprev = c->tprev;
    else
        l->tail = c->tprev;
    c->tprev = c->tnext = NULL;
    c->tlist = TL_NONE;
}

static void tl_add(loom_conn_t *c, int which) {
    loom_server_t *srv = c->srv;
    loom_tlist_t *l = &srv->tl[which];
    tl_remove(c);
    if (l->ms == 0)
        return; /* that limit is off (set to 0) */
    c->tlist = (uint8_t)which;
    c->deadline = uv_now(srv->host->loop) + l->ms;
    c->tprev = l->tail;
    c->tnext = NULL;
    if (l->tail)
        l->tail->tnext = c;
    else
        l->head = c;
    l->tail = c;
    /* The lists have different durations: this deadline may come before the one the timer
     * is set for (a keep-alive wait shorter than the header wait it follows, a head after
     * a long keep-alive wait). */
    if (srv->timer_at == 0 || c->deadline < srv->timer_at)
        arm_timer(srv);
}

static void on_timer(uv_timer_t *timer);
static void linger(loom_conn_t *c);

static void arm_timer(loom_server_t *srv) {
    uint64_t next = UINT64_MAX, now = uv_now(srv->host->loop);
    for (int i = 1; i < TL_COUNT; i++)
        if (srv->tl[i].head && srv->tl[i].head->deadline < next)
            next = srv->tl[i].head->deadline;
    if (srv->accept_retry_at && srv->accept_retry_at < next)
        next = srv->accept_retry_at;
    if (srv->closing) {
        if (srv->settle_at && srv->settle_at < next)
            next = srv->settle_at;
        if (srv->nconns > 0 && srv->grace_at > now && srv->grace_at < next)
            next = srv->grace_at;
    }
    if (next == UINT64_MAX || uv_is_closing((uv_handle_t *)&srv->timer)) {
        uv_timer_stop(&srv->timer);
        srv->timer_at = 0;
        return;
    }
    srv->timer_at = next > now ? next : now;
    uv_timer_start(&srv->timer, on_timer, srv->timer_at - now, 0);
}

static void close_idle_conns(loom_server_t *srv) {
    loom_conn_t *c = srv->conns, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->state == C_IDLE || (c->state == C_HEAD && !c->partial))
            loom_conn_close(c);
    }
}

static void on_timer(uv_timer_t *timer) {
    loom_server_t *srv = timer->data;
    uint64_t now = uv_now(srv->host->loop);
    srv->timer_at = 0; /* it fired; arm_timer below sets it again */
    loom_conn_t *c;
    while ((c = srv->tl[TL_HEAD].head) && c->deadline <= now) {
        tl_remove(c);
        if (!c->partial)
            loom_conn_close(c); /* nothing of a request arrived: no answer owed */
        else
            loom_conn_respond_simple(c, 408, "Request Timeout", 1);
    }
    while ((c = srv->tl[TL_IDLE].head) && c->deadline <= now)
        loom_conn_close(c);
    while ((c = srv->tl[TL_LINGER].head) && c->deadline <= now)
        loom_conn_close(c);
    while ((c = srv->tl[TL_SEND].head) && c->deadline <= now)
        loom_conn_close(c); /* the client took nothing for send_timeout */
    while ((c = srv->tl[TL_DRAIN].head) && c->deadline <= now) {
        c->keepalive = 0; /* the rest of the body did not come within body_timeout */
        linger(c);
    }
    while ((c = srv->tl[TL_HANDLER].head) && c->deadline <= now) {
        tl_remove(c);
        if (c->state != C_HANDLER || !c->task || c->resp != R_NONE)
            continue; /* the response has begun: send_timeout bounds it from here on */
        if (c->waiter && c->waiting_body)
            tl_add(c, TL_HANDLER); /* it waits for the body, which body_timeout bounds */
        else
            handler_expired(c);
    }
    if (srv->closing) {
        if (srv->settle_at && now >= srv->settle_at) {
            srv->settle_at = 0;
            close_idle_conns(srv);
        }
        if (now >= srv->grace_at) {
            while (srv->conns)
                loom_conn_close(srv->conns);
        }
    }
    if (srv->accept_retry_at && now >= srv->accept_retry_at) {
        srv->accept_retry_at = 0;
        if (!srv->closing)
            accept_conn(srv);
    }
    arm_timer(srv);
    server_maybe_done(srv);
}

/* ---------------------------------------------------------------- connection lifetime */

static void conn_free(loom_conn_t *c) {
    loom_http_msg_release(&c->msg);
    free(c->in);
    free(c->body);
    free(c);
}

static void server_free_if_done(loom_server_t *srv);

static void conn_release(loom_conn_t *c) {
    loom_server_t *srv = c->srv;
    conn_free(c);
    srv->live--;
    server_free_if_done(srv);
}

void loom_conn_release(loom_conn_t *c) {
    conn_release(c);
}

void loom_conn_sock_gone(loom_conn_t *c) {
    loom_handle_closed(c->srv->host);
    server_maybe_done(c->srv);
}

/* The sock's closed hook: its handle is closed (the TLS session freed with it). */
static void on_conn_closed(loom_sock_t *s) {
    loom_conn_t *c = loom_sock_owner(s);
    loom_server_t *srv = c->srv;
    loom_handle_closed(srv->host);
    server_maybe_done(srv);
    if (!c->task && !c->queued)
        conn_release(c);
}

/* ---------------------------------------------------------------- max_conns_per_ip */

/* How many connections each peer address has open, when max_conns_per_ip is set: a list
 * per bucket of the addresses that have one (an IPv4 address as its IPv4-mapped IPv6 form);
 * a connection points at its address's entry, and the last one to close frees it. */
struct loom_ipcount {
    loom_ipcount_t *next;
    uint32_t count;
    uint8_t addr[16];
};

#define IP_BUCKETS 1024

static unsigned ip_bucket(const uint8_t addr[16]) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++)
        h = (h ^ addr[i]) * 16777619u;
    return h & (IP_BUCKETS - 1);
}

/* The peer's address as 16 bytes; -1 when it has none (a unix-domain peer). */
static int peer_addr(loom_conn_t *c, uint8_t addr[16]) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (!loom_sock_is_tcp(&c->sock) ||
        uv_tcp_getpeername(&c->sock.h.tcp, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET) {
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        memcpy(addr, mapped, 12);
        memcpy(addr + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        return 0;
    }
    if (ss.ss_family == AF_INET6) {
        memcpy(addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        return 0;
    }
    return -1;
}

/* Counts c against its address: 0, or -1 when the address has max_per_ip open already. A
 * connection whose address cannot be told (or no memory for the entry) is let in. */
static int ip_take(loom_conn_t *c) {
    loom_server_t *srv = c->srv;
    uint8_t addr[16];
    if (!srv->ip_table || peer_addr(c, addr) != 0)
        return 0;
    loom_ipcount_t **head = &srv->ip_table[ip_bucket(addr)], *e = *head;
    while (e && memcmp(e->addr, addr, 16) != 0)
        e = e->next;
    if (!e) {
        if (!(e = malloc(sizeof *e)))
            return 0;
        memcpy(e->addr, addr, 16);
        e->count = 0;
        e->next = *head;
        *head = e;
    }
    if (e->count >= srv->max_per_ip)
        return -1;
    e->count++;
    c->ip = e;
    return 0;
}

static void ip_drop(loom_conn_t *c) {
    loom_ipcount_t *e = c->ip;
    if (!e)
        return;
    c->ip = NULL;
    if (--e->count > 0)
        return;
    loom_ipcount_t **p = &c->srv->ip_table[ip_bucket(e->addr)];
    while (*p != e)
        p = &(*p)->next;
    *p = e->next;
    free(e);
}

static void ip_table_free(loom_server_t *srv) {
    if (!srv->ip_table)
        return;
    for (int i = 0; i < IP_BUCKETS; i++)
        while (srv->ip_table[i]) {
            loom_ipcount_t *e = srv->ip_table[i];
            srv->ip_table[i] = e->next;
            free(e);
        }
    free(srv->ip_table);
    srv->ip_table = NULL;
}

void loom_conn_close(loom_conn_t *c) {
    if (c->state == C_CLOSING)
        return;
    if (c->state == C_H2) { /* the session owns the sock: it says goodbye its own way */
        loom_conn_leave(c);
        loom_h2srv_close(c);
        return;
    }
    loom_conn_leave(c);
    loom_conn_uncork(c); /* answers gathered this turn still go (a pipeline ending in EOF) */
    loom_sock_close(&c->sock);
}

void loom_conn_leave(loom_conn_t *c) {
    if (c->state == C_CLOSING)
        return;
    loom_server_t *srv = c->srv;
    c->state = C_CLOSING;
    tl_remove(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    srv->nconns--;
    ip_drop(c);
    loom_conn_detach_request(c);
}

/* ---------------------------------------------------------------- parsing */

static void stop_reading(loom_conn_t *c) {
    loom_sock_read_stop(&c->sock);
}

static void keep_in(loom_conn_t *c, const char *at, size_t len) {
    if (c->in_len + len > c->in_cap) {
        size_t cap = c->in_cap ? c->in_cap : 4096;
        while (cap < c->in_len + len)
            cap *= 2;
        char *n = cap <= UINT32_MAX ? realloc(c->in, cap) : NULL;
        if (!n) {
            loom_conn_close(c);
            return;
        }
        c->in = n;
        c->in_cap = (uint32_t)cap;
    }
    memcpy(c->in + c->in_len, at, len);
    c->in_len += (uint32_t)len;
    if (c->in_len >= c->srv->max_buffered)
        stop_reading(c); /* the pipelining cap: the peer waits until we catch up */
}

static void reject(loom_conn_t *c, llhttp_errno_t err) {
    int status = c->msg.fail ? c->msg.fail : 400;
    (void)err;
    c->parse_paused = 1; /* nothing more is parsed on this connection */
    if (c->state == C_HANDLER) {
        /* the body broke: the handler sees it in its body read; the answer closes */
        c->fail_status = (uint16_t)status;
        c->keepalive = 0;
        c->eof = 1;
        stop_reading(c);
        loom_conn_body_event(c);
        return;
    }
    loom_conn_respond_simple(c, status, loom_http_reason(status), 1);
}

/* Where the bytes feed parses are: the read buffer (on_input's), `in`, or srv->lent. */
enum { FROM_READ, FROM_IN, FROM_LENT };

void loom_conn_keep_lent(loom_conn_t *c) {
    loom_server_t *srv = c->srv;
    if (srv->reading != c || srv->lent_len == 0)
        return;
    size_t n = srv->lent_len;
    srv->lent_len = 0;
    keep_in(c, srv->lent, n);
}

/* The bytes after a pause in what on_input read: left in rbuf while this is the connection
 * being read (on_input keeps them when it ends), else copied to `in`. */
static void lend(loom_conn_t *c, const char *at, size_t len) {
    loom_server_t *srv = c->srv;
    if (srv->reading == c && c->in_len == 0 && srv->lent_len == 0) {
        srv->lent = at;
        srv->lent_len = len;
        return;
    }
    loom_conn_keep_lent(c); /* bytes lent before these go first */
    keep_in(c, at, len);
}

/* All of data was parsed: nothing is left where it came from. */
static void fed_all(loom_conn_t *c, int from) {
    if (from == FROM_IN)
        c->in_len = 0;
    else if (from == FROM_LENT)
        c->srv->lent_len = 0;
}

/* Runs llhttp over data. On a pause, what follows the pause point is kept in `in` (or left
 * in rbuf: lend). Bytes in rbuf may be left there as the body's span too (on_body). */
static void feed(loom_conn_t *c, const char *data, size_t len, int from) {
    loom_server_t *srv = c->srv;
    srv->parsing = from != FROM_IN && srv->reading == c ? c : NULL;
    llhttp_errno_t err = loom_http_execute(&c->msg, data, len);
    srv->parsing = NULL;
    if (c->state == C_CLOSING)
        return;
    if (err == HPE_OK) {
        fed_all(c, from);
        return;
    }
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
        const char *pos = llhttp_get_error_pos(&c->msg.parser);
        size_t rest = (size_t)(data + len - pos);
        if (err == HPE_PAUSED_UPGRADE && c->state != C_HANDLER) {
            /* An Upgrade (or CONNECT) request answered as any other: no protocol switched
             * (req:upgrade hands the socket over and never comes here), so what follows is
             * the next request. llhttp stops there until told so ("continue parsing, they
             * need to invoke llhttp_resume_after_upgrade()"). The answer to a CONNECT closed
             * the connection (on_headers). */
            llhttp_resume_after_upgrade(&c->msg.parser);
            feed(c, pos, rest, from);
            return;
        }
        c->parse_paused = 1;
        if (from == FROM_IN) {
            if (rest)
                memmove(c->in, pos, rest);
            c->in_len = (uint32_t)rest;
        } else if (from == FROM_LENT) {
            srv->lent = pos;
            srv->lent_len = rest;
        } else if (rest) {
            lend(c, pos, rest);
        }
        /* the body of an answered request was parsed away: carry on */
        if (c->state == C_HANDLER && c->msg_done && c->resp == R_DONE && !c->task)
            loom_conn_request_done(c);
        return;
    }
    fed_all(c, from);
    reject(c, err);
}

void loom_conn_resume_parse(loom_conn_t *c) {
    if (!c->parse_paused || c->state == C_CLOSING)
        return;
    llhttp_errno_t err = llhttp_get_errno(&c->msg.parser);
    if (c->msg.fail || (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE))
        return;
    c->parse_paused = 0;
    if (err == HPE_PAUSED)
        llhttp_resume(&c->msg.parser);
    else
        llhttp_resume_after_upgrade(&c->msg.parser); /* see feed */
    /* Even with nothing buffered: a message without a body ends right after its head, and
     * llhttp reports that end (on_message_complete) from an execute call that needs no
     * bytes; without it a body-less request would wait for the next one to finish. Not
     * when the parser paused at a message's end (on_complete), where nothing is left. */
    loom_server_t *srv = c->srv;
    if (srv->reading == c && srv->lent_len)
        feed(c, srv->lent, srv->lent_len, FROM_LENT);
    else if (c->in_len || !c->msg.ended)
        feed(c, c->in_len ? c->in : "", c->in_len, FROM_IN);
    if (c->state != C_CLOSING && !c->eof)
        loom_conn_start_reading(c);
}

/* ---------------------------------------------------------------- llhttp hooks */

/* No body follows the head (nor an upgraded protocol, which the handler takes over). */
static int bodiless(llhttp_t *p) {
    if (p->flags & (F_CHUNKED | F_TRANSFER_ENCODING | F_UPGRADE | F_CONNECTION_UPGRADE))
        return 0;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0)
        return 0;
    return llhttp_get_method(p) != HTTP_CONNECT;
}

/* 10 000 idle keep-alive connections cost these bytes each (plus the kernel's and libuv's
 * share): glibc's malloc takes them in 16-byte steps, 608 with its own 8 (bench/README.md,
 * Issue 12). A field added here should be one every connection needs. */
_Static_assert(sizeof(loom_conn_t) <= 600, "loom_conn_t grew past 600 bytes");

/* The handler of c's request starts from the scheduler, after those queued before it. */
static void queue_handler(loom_conn_t *c) {
    loom_server_t *srv = c->srv;
    if (c->queued)
        return;
    c->queued = 1;
    c->rq_next = NULL;
    if (srv->rq_tail)
        srv->rq_tail->rq_next = c;
    else
        srv->rq_head = c;
    srv->rq_tail = c;
    loom_sched_defer(srv->host, &srv->run_job);
}

static int on_headers(loom_http_msg_t *m) {
    loom_conn_t *c = loom_http_owner(m);
    loom_server_t *srv = c->srv;
    llhttp_t *p = &m->parser;
    tl_remove(c);
    loom_obs_request_start(c);
    c->http10 = llhttp_get_http_major(p) == 1 && llhttp_get_http_minor(p) == 0;
    if (llhttp_get_http_major(p) != 1) {
        m->fail = 505;
        return HPE_USER;
    }
    if (!c->http10 && m->host_count == 0) {
        m->fail = 400; /* RFC 9112 3.2: a 1.1 request without Host */
        m->why = "no Host header";
        return HPE_USER;
    }
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > srv->max_body) {
        m->fail = 413;
        m->why = "body over max_body";
        return HPE_USER;
    }
    /* llhttp_should_keep_alive, for a request (which never needs the connection's end) */
    c->keepalive = p->http_minor == 0 ? (p->flags & F_CONNECTION_KEEP_ALIVE) != 0
                                      : !(p->flags & F_CONNECTION_CLOSE);
    uint8_t method = llhttp_get_method(p);
    c->is_head = method == HTTP_HEAD;
    /* A CONNECT answered 2xx is a tunnel to a client (or a proxy in front) that will send
     * other bytes next: the connection ends with the answer, whatever it is. */
    if (method == HTTP_CONNECT)
        c->keepalive = 0;
    /* RFC 9110 10.1.1: "A server that receives a 100-continue expectation in an HTTP/1.0
     * request MUST ignore that expectation." */
    int ei = c->http10 || !m->has_expect ? -1 : loom_head_find(m->head, "expect", 6);
    c->expect = ei >= 0 && loom_head_has_token(m->head, ei, "100-continue");
    c->msg_done = 0;
    c->body_seen = 0;
    c->resp = R_NONE;
    c->status = 0;
    c->sent = 0;
    c->state = C_HANDLER;
    queue_handler(c);
    /* The body waits, unparsed, until the handler asks for it. A request without one parses
     * on to its end (on_complete pauses there), which saves resuming the parser for it. */
    if (bodiless(p))
        return 0;
    return HPE_PAUSED;
}

/* Appends to the body gathered for the handler: 0, or -1 without memory. */
static int body_append(loom_conn_t *c, const char *at, size_t len) {
    size_t have = c->body ? c->body->len : 0, cap0 = c->body ? c->body->cap : 0;
    if (have + len > cap0) {
        size_t cap = cap0 ? cap0 * 2 : 16384;
        while (cap < have + len)
            cap *= 2;
        loom_body_t *n = realloc(c->body, sizeof *n + cap);
        if (!n)
            return -1;
        n->len = have;
        n->cap = cap;
        c->body = n;
    }
    memcpy(c->body->data + have, at, len);
    c->body->len = have + len;
    return 0;
}

/* The body's span in rbuf goes to `body` (rbuf is about to be read into again, or more of
 * the body comes after it): 0, or -1 without memory. */
static int keep_span(loom_conn_t *c) {
    loom_server_t *srv = c->srv;
    size_t n = srv->span_len;
    if (n == 0 || srv->reading != c)
        return 0;
    srv->span_len = 0;
    return body_append(c, srv->span, n);
}

static int on_body(loom_http_msg_t *m, const char *at, size_t len) {
    loom_conn_t *c = loom_http_owner(m);
    loom_server_t *srv = c->srv;
    c->body_seen += len;
    if (c->discard)
        return 0;
    if (c->tlist == TL_HANDLER)
        tl_add(c, TL_HANDLER); /* the body came on: handler_timeout counts from here */
    if (c->body_seen > srv->max_body) {
        m->fail = 413;
        m->why = "body over max_body";
        return HPE_USER;
    }
    if (srv->parsing == c && srv->span_len == 0 && (!c->body || c->body->len == 0)) {
        /* bytes in rbuf, nothing gathered before them: the handler may take them from there */
        srv->span = at;
        srv->span_len = len;
        loom_conn_body_event(c);
        return 0;
    }
    if (keep_span(c) != 0 || body_append(c, at, len) != 0) {
        m->fail = 500;
        return HPE_USER;
    }
    loom_conn_body_event(c);
    return 0;
}

static int on_complete(loom_http_msg_t *m) {
    loom_conn_t *c = loom_http_owner(m);
    c->msg_done = 1;
    if (!c->discard)
        loom_conn_body_event(c);
    return HPE_PAUSED;
}

/* ---------------------------------------------------------------- next request */

/* The request is answered and its message fully parsed: reset for the next one. */
static void next_request(loom_conn_t *c) {
    loom_server_t *srv = c->srv;
    if (srv->reading == c)
        srv->span_len = 0; /* the finished request's body, not taken */
    c->nreq++;
    c->state = C_IDLE;
    c->resp = R_NONE;
    c->msg_done = 0;
    c->discard = 0;
    c->partial = 0;
    c->chunk_mode = 0;
    c->body_wanted = 0;
    c->fail_status = 0;
    c->fault_status = 0;
    if (c->body && c->body->cap > 64 * 1024) {
        free(c->body);
        c->body = NULL;
    } else if (c->body) {
        c->body->len = 0;
    }
    if (loom_conn_unparsed(c) == 0) {
        /* an idle connection holds no body buffer: 1000 of them that once took an upload
         * held 40 MB; a new one costs a malloc per body, little beside reading it */
        free(c->body);
        c->body = NULL;
        loom_http_msg_release(&c->msg);
        if (c->in_cap > 16 * 1024) {
            free(c->in);
            c->in = NULL;
            c->in_cap = 0;
        }
        /* a client that shut its side down while its request ran sends nothing more: its
         * answers are all out, so the connection is done (it used to wait, unread, for
         * keepalive_timeout) */
        if (srv->closing || c->eof) {
            loom_conn_close(c);
            return;
        }
        tl_add(c, TL_IDLE);
    } else {
        c->state = C_HEAD;
        tl_add(c, TL_HEAD);
    }
    loom_conn_resume_parse(c);
}

/* Called when the response is complete (maybe still being written) and the handler is done.
 * Carries on once everything is written and the request's body is parsed away. */
void loom_conn_request_done(loom_conn_t *c) {
    if (c->state != C_HANDLER || c->resp != R_DONE || c->task)
        return;
    if (loom_sock_pending(&c->sock) > 0) {
        tl_add(c, TL_SEND); /* the client has send_timeout to take each piece */
        return;             /* the drained hook comes back here */
    }
    if (loom_sock_error(&c->sock) || !c->keepalive || c->srv->closing) {
        linger(c);
        return;
    }
    if (!c->msg_done) {
        if (c->eof || c->msg.fail) {
            linger(c);
            return;
        }
        llhttp_t *p = &c->msg.parser;
        if ((p->flags & F_CHUNKED) || p->content_length > LOOM_CONN_DRAIN_MAX) {
            linger(c); /* too much left to read for a body nobody wants */
            return;
        }
        c->discard = 1;
        /* one deadline for the rest, not one per byte: a trickle cannot keep it (as Go) */
        tl_add(c, TL_DRAIN);
        uint32_t nreq = c->nreq;
        loom_conn_resume_parse(c);
        /* on_complete's pause brings us back through feed's caller, which may move on to
         * the next request (pipelined, and already parsed to its end if it has no body) */
        if (c->nreq != nreq || c->state != C_HANDLER || !c->msg_done)
            return;
    }
    next_request(c);
}

/* ---------------------------------------------------------------- linger */

static void on_shutdown(loom_sock_t *s, int status) {
    loom_conn_t *c = loom_sock_owner(s);
    (void)status;
    if (c->state == C_LINGER)
        tl_add(c, TL_LINGER);
}

/* After the last answer on a connection: stop sending, then read and drop what the peer
 * still sends until it closes or LINGER_MS pass, so our answer is not lost to a reset. */
static void linger(loom_conn_t *c) {
    if (c->state == C_CLOSING || c->state == C_LINGER)
        return;
    loom_conn_detach_request(c);
    c->state = C_LINGER;
    /* the shutdown waits for what is queued: send_timeout bounds that, then LINGER_MS */
    if (loom_sock_pending(&c->sock) > 0)
        tl_add(c, TL_SEND);
    else
        tl_remove(c);
    if (c->eof) {
        loom_conn_close(c);
        return;
    }
    /* on HTTPS a close_notify goes first */
    if (loom_sock_shutdown(&c->sock, on_shutdown) != 0) {
        loom_conn_close(c);
        return;
    }
    c->parse_paused = 1;
    loom_conn_start_reading(c);
}

/* ---------------------------------------------------------------- reading */

/* The sock's alloc hook: every read lands in the server's one buffer; what must stay is
 * copied out (keep_in, on_body) before the next read. */
static void on_alloc(loom_sock_t *s, size_t hint, uv_buf_t *buf) {
    loom_conn_t *c = loom_sock_owner(s);
    (void)hint;
    buf->base = c->srv->rbuf;
    buf->len = sizeof c->srv->rbuf;
}

/* The first bytes of a connection on a listener with http2: ALPN "h2" (TLS), or the h2c
 * preface (plain TCP), hands the connection to an HTTP/2 session. A preface cut short waits
 * in `in` for the rest (llhttp would answer "PRI * HTTP/2.0" with 400). Returns 1 when the
 * bytes were taken (handed over, or kept waiting), 2 when `in` holds them for HTTP/1, 0 to
 * go on as HTTP/1 with them. */
static int h2_sniff(loom_conn_t *c, const char *data, size_t n) {
    if (c->sock.tls) {
        const char *p = loom_tls_alpn(c->sock.tls);
        if (!p || strcmp(p, "h2") != 0)
            return 0;
        loom_h2srv_start(c, data, n);
        return 1;
    }
    if (c->in_len == 0) {
        int p = loom_h2_is_preface(data, n);
        if (p == 1)
            loom_h2srv_start(c, data, n);
        else if (p < 0)
            keep_in(c, data, n);
        return p != 0;
    }
    keep_in(c, data, n);
    if (c->state == C_CLOSING)
        return 1;
    int p = loom_h2_is_preface(c->in, c->in_len);
    if (p == 1)
        loom_h2srv_start(c, c->in, c->in_len);
    return p == 0 ? 2 : 1;
}

/* What the handler left in rbuf (on_input's end: the next read lands there) is copied out:
 * the body's span to `body`, the unparsed bytes to `in`. */
static void keep_borrowed(loom_conn_t *c) {
    loom_server_t *srv = c->srv;
    if (c->state == C_CLOSING) {
        srv->span_len = srv->lent_len = 0;
        return;
    }
    if (keep_span(c) != 0) {
        c->msg.fail = 500; /* as when on_body finds no memory for it */
        reject(c, HPE_USER);
    }
    loom_conn_keep_lent(c);
}

/* The sock's input hook: plaintext bytes (decrypted on HTTPS), or the end or a failure. */
static void on_input(loom_sock_t *s, ssize_t nread, const char *data) {
    loom_conn_t *c = loom_sock_owner(s);
    if (nread < 0) {
        c->eof = 1;
        stop_reading(c);
        if (c->state == C_HANDLER && c->discard) {
            loom_conn_close(c); /* the answer is out; the body being drained will not come */
            return;
        }
        if (c->state == C_HANDLER) {
            loom_conn_body_event(c); /* a body reader learns the peer left */
            if (!c->msg_done && llhttp_finish(&c->msg.parser) == HPE_OK && c->msg_done)
                loom_conn_body_event(c);
            return;
        }
        if (c->state == C_HEAD && c->partial && nread == UV_EOF && !c->parse_paused) {
            loom_conn_respond_simple(c, 400, "Bad Request", 1);
            return;
        }
        loom_conn_close(c);
        return;
    }
    loom_obs_input(c, (size_t)nread);
    if (c->state == C_LINGER)
        return;
    int from_in = 0;
    if (c->srv->h2 && c->nreq == 0 && c->state == C_HEAD && !c->partial) {
        from_in = h2_sniff(c, data, (size_t)nread);
        if (from_in == 1)
            return;
    }
    /* the header deadline counts from the first byte: set below, after the parse, for a
     * head that did not come whole in this read (the usual one needs no deadline) */
    int was_idle = c->state == C_IDLE;
    if (was_idle)
        c->state = C_HEAD;
    if (c->state == C_HEAD)
        c->partial = 1;
    loom_server_t *srv = c->srv;
    loom_t *h = srv->host;
    srv->reading = c; /* answers given from here to the end of this turn may be corked */
    srv->cork_bytes = 0;
    h->sched.hold_idle = 1; /* a handler queued by this parse starts in the drain below */
    if (c->parse_paused)
        keep_in(c, data, (size_t)nread);
    else if (from_in)
        feed(c, c->in, c->in_len, FROM_IN);
    else
        feed(c, data, (size_t)nread, FROM_READ);
    h->sched.hold_idle = 0;
    if (was_idle && c->state == C_HEAD && c->tlist == TL_IDLE)
        tl_add(c, TL_HEAD);
    /* Answer now rather than after every other connection's read of this loop turn: the
     * scheduler runs the handler in its protected drain, as it would in the check phase.
     * A handler that finishes at once moves the connection to the next pipelined request,
     * whose handler job is queued behind the drain's count: drain again while it is, so a
     * read of N requests is answered in this turn, not one request per loop turn. */
    loom_sched_drain(h);
    while (c->queued && c->state == C_HANDLER && !h->sched.draining && !h->closing &&
           !h->exit_request)
        loom_sched_drain(h);
    keep_borrowed(c);
    srv->reading = NULL;
    if (c->chunk_mode && loom_conn_body_len(c) >= CHUNK_HIGH_WATER && c->state == C_HANDLER)
        stop_reading(c); /* req:chunks() restarts reading as it takes the data */
    /* the answers gathered (loom_conn_cork) leave in one write, in order */
    loom_conn_uncork(c);
}

void loom_conn_start_reading(loom_conn_t *c) {
    if (loom_sock_reading(&c->sock) || c->eof || c->state == C_CLOSING)
        return;
    if (c->in_len >= c->srv->max_buffered && c->state != C_LINGER)
        return;
    loom_sock_read_start(&c->sock);
}

/* The sock's drained hook: everything queued went out (or a write failed: the sock keeps
 * the error, and request_done lingers on it). */
static void on_drained(loom_sock_t *s, int status) {
    loom_conn_t *c = loom_sock_owner(s);
    (void)status;
    if (c->waiter && !c->waiting_body)
        loom_wake(c->waiter);
    loom_conn_request_done(c);
}

/* The sock's progress hook: a piece went out, more wait. send_timeout counts from the
 * latest progress, for a writer task as for an answer no task waits on. */
static void on_progress(loom_sock_t *s) {
    loom_conn_t *c = loom_sock_owner(s);
    if (c->waiter && !c->waiting_body)
        loom_task_extend(c->waiter, c->srv->send_timeout);
    else if (c->tlist == TL_SEND)
        tl_add(c, TL_SEND);
}

static const loom_sock_hooks_t conn_hooks = {
    on_alloc, on_input, on_drained, on_progress, on_conn_closed,
};

/* ---------------------------------------------------------------- handler tasks */

/* In the scheduler: start the handler task for the request whose head just completed. */
static void run_handler(loom_t *h, loom_conn_t *c) {
    loom_server_t *srv = c->srv;
    lua_State *L = h->sched.L;
    if (c->state != C_HANDLER) {
        if (loom_sock_closed(&c->sock) && !c->task)
            conn_release(c);
        return;
    }
    if (srv->entry_ref == LUA_NOREF) {
        loom_conn_respond_simple(c, 503, "Service Unavailable", 1);
        return;
    }
    L = loom_spawn_thread(h, L); /* a recycled task's own: nothing to move */
    lua_rawgeti(L, LUA_REGISTRYINDEX, srv->entry_ref);
    int nargs = loom_conn_push_request(L, c);
    loom_task_t *t = loom_spawn_internal(h, L, nargs, on_handler_done, c);
    c->task = t;
    loom_task_run_now(h, t);
    /* Still running (it waits for something): handler_timeout counts from its start, which
     * is this loop turn's time still. One that answered at once needed no deadline. */
    if (c->task == t && c->state == C_HANDLER && c->resp == R_NONE && srv->tl[TL_HANDLER].ms)
        tl_add(c, TL_HANDLER);
}

/* The server's job: starts the handlers of the connections queued before it began, in
 * order (those queued meanwhile, a pipelined request's next one, wait for the next drain,
 * as a job queued while the scheduler drains does). */
static void run_handlers(loom_t *h, loom_job_t *job) {
    loom_server_t *srv = (loom_server_t *)((char *)job - offsetof(loom_server_t, run_job));
    loom_conn_t *c = srv->rq_head, *last = srv->rq_tail;
    srv->rq_head = srv->rq_tail = NULL;
    while (c) {
        loom_conn_t *next = c->rq_next;
        c->rq_next = NULL;
        c->queued = 0;
        run_handler(h, c);
        c = next;
        if (c && (h->exit_request || h->closing)) { /* the drain would stop here: keep them */
            last->rq_next = srv->rq_head;
            if (!srv->rq_head)
                srv->rq_tail = last;
            srv->rq_head = c;
            loom_sched_defer(h, &srv->run_job);
            break;
        }
    }
}

/* A handler that raised the "closed: ..." its body read gave (req:chunks() raises) after
 * the client left did nothing wrong: the client's leaving is not logged as its error. */
static int raised_client_left(loom_conn_t *c, loom_task_t *t) {
    const char *msg = lua_tostring(t->co, 2);
    if (!msg || !(c->eof || c->state == C_CLOSING))
        return 0;
    const char *nl = strchr(msg, '\n'), *hit = strstr(msg, "closed: ");
    return hit && (!nl || hit < nl) && (hit == msg || hit[-1] == ' ');
}

static void log_handler_error(loom_conn_t *c, loom_task_t *t) {
    if (raised_client_left(c, t))
        return;
    loom_obs_handler_error(c->srv);
    char target[1024];
    fprintf(stderr, "loom: error in handler for %s %s: %s\n",
            llhttp_method_name((llhttp_method_t)llhttp_get_method(&c->msg.parser)),
            loom_conn_log_target(c, target, sizeof target), lua_tostring(t->co, 2));
    fflush(stderr);
}

/* The handler ran handler_timeout without beginning its response (time spent waiting for
 * the request body aside: body_timeout bounds that). Its task is cancelled and its request
 * detached, so what it still tries on the request fails with "closed: ..."; the client is
 * answered 503 with Connection: close at once, and the connection closes without waiting
 * for the task to unwind (on_handler_done still comes, and frees the struct if need be). */
static void handler_expired(loom_conn_t *c) {
    loom_reqbox_t *box = c->box;
    int status = c->fail_status ? c->fail_status : 503;
    char target[1024];
    loom_obs_handler_timeout(c->srv);
    fprintf(stderr, "loom: handler for %s %s ran past handler_timeout (%g s): cancelled\n",
            llhttp_method_name((llhttp_method_t)llhttp_get_method(&c->msg.parser)),
            loom_conn_log_target(c, target, sizeof target),
            (double)c->srv->tl[TL_HANDLER].ms / 1000);
    fflush(stderr);
    loom_task_cancel(c->task); /* a parked task: its wait is aborted (c->waiter cleared) */
    loom_conn_detach_request(c);
    if (box)
        box->gone = 1;
    c->waiter = NULL; /* woken but not yet resumed: it must not be woken from here again */
    loom_conn_respond_simple(c, status, loom_http_reason(status), 1);
    linger(c);
}

/* The answer to a handler that let a body fault (core.req_fault) through: its status, and
 * for a body the error's own "http: ..." or "limit: ..." text (the position a plain
 * error() put before it left out), else the reason phrase. */
static void respond_fault(loom_conn_t *c, loom_task_t *t) {
    /* co holds the error and its message with the traceback, made safely by the scheduler
     * whatever the error value is (an object with __tostring too) */
    const char *e = lua_type(t->co, 2) == LUA_TSTRING ? lua_tostring(t->co, 2) : NULL;
    char body[512];
    loom_http_fault_body(e, c->fault_status, body, sizeof body);
    loom_conn_respond_simple(c, c->fault_status, body, 1);
}

static void on_handler_done(loom_t *h, loom_task_t *t) {
    loom_conn_t *c = t->done_ud;
    (void)h;
    t->observed = 1;
    c->task = NULL;
    if (t->failed && !t->is_cancelled && !c->fail_status && c->state == C_CLOSING)
        log_handler_error(c, t); /* the client is gone, but the bug is still ours */
    if (c->state == C_CLOSING) {
        loom_conn_detach_request(c);
        if (loom_sock_closed(&c->sock))
            conn_release(c);
        return;
    }
    if (t->failed) {
        /* a handler that raised because the body broke a limit, or was found malformed
         * (core.req_fault), is answered with that status, not 500: the client's request was
         * at fault, and no bug of ours is logged */
        int fault = !t->is_cancelled && !c->fail_status && c->fault_status && c->resp == R_NONE;
        if (!t->is_cancelled && !c->fail_status && !fault)
            log_handler_error(c, t);
        if (c->resp == R_NONE) {
            loom_conn_detach_request(c);
            if (c->fail_status)
                loom_conn_respond_simple(c, c->fail_status, loom_http_reason(c->fail_status), 1);
            else if (fault)
                respond_fault(c, t);
            else
                loom_conn_respond_simple(c, 500, "Internal Server Error", 0);
        } else {
            c->keepalive = 0; /* a stream cut short: the peer must see the end */
            c->resp = R_DONE;
            linger(c);
            return;
        }
    } else if (c->resp == R_STREAM) {
        loom_conn_stream_end(c);
    } else if (c->resp == R_NONE) {
        loom_conn_respond_results(c, t->co, t->nres);
    }
    loom_conn_detach_request(c);
    loom_conn_request_done(c);
}

/* ---------------------------------------------------------------- accept */

/* Out of descriptors, libuv accepts what waits and closes it at once with a descriptor it
 * keeps in reserve (uv__emfile_trick in uv__server_io). When that reserve is gone (a thread
 * took its slot between libuv's close and reopen), libuv reports EMFILE here and accepts
 * again at once: a busy loop for as long as a connection waits, and no descriptor frees
 * since the loop never returns. The server's own spare descriptor breaks it: closed, it
 * lets libuv's next accept succeed, that connection is closed at once (shed), and the
 * spare takes the slot back. */
static void spare_open(loom_server_t *srv) {
    if (srv->spare_fd < 0)
        srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void spare_close(loom_server_t *srv) {
    if (srv->spare_fd >= 0) {
        close(srv->spare_fd);
        srv->spare_fd = -1;
    }
}

static void on_connection(uv_stream_t *server, int status) {
    loom_server_t *srv = server->data;
    if ((status == UV_EMFILE || status == UV_ENFILE) && srv->spare_fd >= 0) {
        spare_close(srv); /* libuv's next accept (it tries at once) gets this slot */
        srv->shedding = 1;
        return;
    }
    if (status < 0 || srv->closing)
        return;
    accept_conn(srv);
}

/* Takes the connection libuv has accepted. Without memory for it, libuv keeps that
 * descriptor and stops watching the listener until the next uv_accept: the timer tries
 * again in a while, so the listener does not stay deaf once memory is back. */
static void accept_conn(loom_server_t *srv) {
    uv_stream_t *server = &srv->lst.stream;
    loom_conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        srv->accept_retry_at = uv_now(srv->host->loop) + ACCEPT_RETRY_MS;
        arm_timer(srv);
        return;
    }
    srv->accept_retry_at = 0;
    if (srv->path)
        loom_sock_init_pipe(&c->sock, srv->host->loop, &conn_hooks, c);
    else
        loom_sock_init_tcp(&c->sock, srv->host->loop, &conn_hooks, c);
    loom_handle_opened(srv->host);
    c->srv = srv;
    srv->live++;
    if (uv_accept(server, &c->sock.h.stream) != 0 || srv->shedding) {
        c->state = C_CLOSING;
        srv->nconns++; /* on_conn_closed's accounting expects a counted connection */
        srv->nconns--;
        loom_sock_close(&c->sock); /* its descriptor closes here */
        if (srv->shedding) {
            srv->shedding = 0;
            spare_open(srv);
        }
        return;
    }
    if (!srv->path)
        uv_tcp_nodelay(&c->sock.h.tcp, 1);
    loom_http_msg_init(&c->msg, HTTP_REQUEST, &srv->heads, &srv->parse);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    c->state = C_HEAD;
    tl_add(c, TL_HEAD); /* on HTTPS the handshake counts toward header_timeout too */
    if (srv->max_per_ip && ip_take(c) != 0) {
        /* over max_conns_per_ip: answered 503 at once and closed, as nginx's limit_conn
         * answers (on HTTPS, where nothing can be said before a handshake, just closed) */
        if (srv->tls_conf)
            loom_conn_close(c);
        else
            loom_conn_respond_simple(c, 503, "Too many connections from this address", 1);
        return;
    }
    if (srv->tls_conf && loom_sock_tls_start(&c->sock, srv->tls_conf, NULL) != 0) {
        loom_conn_close(c);
        return;
    }
    loom_conn_start_reading(c);
}

/* ---------------------------------------------------------------- server lifetime */

static void server_free_if_done(loom_server_t *srv) {
    /* at teardown a queued done_job never runs (the queue is not drained again) */
    int job_pending = (srv->done_job.queued || srv->run_job.queued) && !srv->host->closing;
    if (srv->handles == 0 && !srv->boxed && srv->live == 0 && !job_pending) {
        spare_close(srv);
        ip_table_free(srv);
        free(srv->path);
        loom_tls_conf_unref(srv->tls_conf);
        loom_head_pool_free(&srv->heads);
        loom_obs_free(srv->obs);
        free(srv->hbuf);
        free(srv);
    }
}

static void on_server_handle_closed(uv_handle_t *handle) {
    loom_server_t *srv = handle->data;
    srv->handles--;
    loom_handle_closed(srv->host);
    server_maybe_done(srv); /* the listener is gone: the timer may go too */
    server_free_if_done(srv);
}

/* In the scheduler, once the server is closed: let Lua collect the box and the app. */
static void release_refs(loom_t *h, loom_job_t *job) {
    loom_server_t *srv = (loom_server_t *)((char *)job - offsetof(loom_server_t, done_job));
    lua_State *L = h->sched.L;
    luaL_unref(L, LUA_REGISTRYINDEX, srv->self_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, srv->entry_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, srv->boxmt_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, srv->reqmt_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, srv->methods_ref);
    loom_obs_release_refs(srv->obs, L);
    srv->self_ref = srv->entry_ref = srv->boxmt_ref = LUA_NOREF;
    srv->reqmt_ref = srv->methods_ref = LUA_NOREF;
    server_free_if_done(srv);
}

/* Closes the timer once the listener is closed and no connection is left. */
static void server_maybe_done(loom_server_t *srv) {
    if (srv->closing && !srv->listening && srv->nconns == 0 && srv->handles == 1 &&
        !uv_is_closing((uv_handle_t *)&srv->timer)) {
        loom_res_remove(&srv->res);
        uv_close((uv_handle_t *)&srv->timer, on_server_handle_closed);
        if (!srv->host->closing) { /* at teardown, lua_close drops the references */
            srv->done_job.run = release_refs;
            loom_sched_defer(srv->host, &srv->done_job);
        }
    }
}

/* Stops accepting; in-flight requests get `grace_ms`, idle connections SETTLE_MS. */
static void server_close(loom_server_t *srv, uint64_t grace_ms) {
    if (srv->closing)
        return;
    srv->closing = 1;
    spare_close(srv);
    uint64_t now = uv_now(srv->host->loop);
    srv->grace_at = now + grace_ms;
    srv->settle_at = now + (grace_ms < SETTLE_MS ? grace_ms : SETTLE_MS);
    if (srv->listening) {
        srv->listening = 0;
        uv_close(&srv->lst.handle, on_server_handle_closed);
        if (srv->path) /* a unix socket's file goes with its listener (if still ours) */
            loom_sock_unlink_unix(srv->path, srv->path_ino);
    }
    if (srv->h2) /* HTTP/2 connections hear GOAWAY at once; their streams finish */
        for (loom_conn_t *c = srv->conns, *next; c; c = next) {
            next = c->next;
            if (c->state == C_H2)
                loom_h2srv_goaway(c);
        }
    uv_ref((uv_handle_t *)&srv->timer); /* the grace period keeps the loop */
    arm_timer(srv);
    server_maybe_done(srv);
}

static void server_res_close(loom_res_t *r) {
    loom_server_t *srv = (loom_server_t *)r;
    server_close(srv, 0);
    while (srv->conns)
        loom_conn_close(srv->conns);
    if (!uv_is_closing((uv_handle_t *)&srv->timer))
        uv_close((uv_handle_t *)&srv->timer, on_server_handle_closed);
}

/* ---------------------------------------------------------------- Lua API */

static loom_server_t *check_server(lua_State *L, int idx) {
    loom_server_t **box = luaL_checkudata(L, idx, SERVER_MT);
    return *box;
}

static int server_gc(lua_State *L) {
    loom_server_t **box = luaL_checkudata(L, 1, SERVER_MT);
    loom_server_t *srv = *box;
    if (!srv)
        return 0;
    *box = NULL;
    srv->boxed = 0; /* anchored by self_ref until closed: collected only after that */
    server_free_if_done(srv);
    return 0;
}

/* srv:close([grace]): stop accepting now; in-flight requests get `grace` seconds (10). */
static int server_close_l(lua_State *L) {
    loom_server_t *srv = check_server(L, 1);
    double grace = luaL_optnumber(L, 2, 10);
    if (srv && !srv->host->closing)
        server_close(srv, grace > 0 ? (uint64_t)(grace * 1000) : 0);
    return 0;
}

/* `local srv <close>`: Lua passes the error the block is leaving with (or nil) as the
 * second argument, which is no grace period; a bad one would raise and replace that error. */
static int server_close_tbc(lua_State *L) {
    lua_settop(L, 1);
    return server_close_l(L);
}

/* srv:wait(): parks the calling task until the server has closed (srv:close, or app:run's
 * signal) and its last connection is gone, answered or cut at the grace period; at once
 * when that is so already. Handler tasks cut at the grace period may still be unwinding.
 * The server keeps no list of such waiters, so this polls every 20 ms through the
 * scheduler's sleep (core.sleep), resuming here (lua_callk's continuation) each time. */
static int server_wait_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status, (void)ctx;
    loom_server_t *srv = check_server(L, 1);
    if (!srv || srv->host->closing || (srv->closing && !srv->listening && srv->nconns == 0))
        return 0;
    lua_settop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "loom.core");
    lua_getfield(L, -1, "sleep"); /* srv loaded core sleep */
    lua_replace(L, 2);
    lua_settop(L, 2);
    lua_pushnumber(L, 0.02);
    lua_callk(L, 1, 0, 0, server_wait_k);
    return server_wait_k(L, LUA_OK, 0);
}

static int server_wait(lua_State *L) {
    check_server(L, 1);
    loom_task_self(L, "wait");
    return server_wait_k(L, LUA_OK, 0);
}

static int server_index(lua_State *L) {
    loom_server_t *srv = check_server(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "port") == 0) {
        if (srv && srv->path)
            lua_pushnil(L); /* a unix socket: srv.path (as loom.listen's) */
        else
            lua_pushinteger(L, srv ? srv->port : 0);
    } else if (strcmp(k, "close") == 0) {
        lua_pushcfunction(L, server_close_l);
    } else if (strcmp(k, "path") == 0) {
        if (srv && srv->path)
            lua_pushstring(L, srv->path);
        else
            lua_pushnil(L);
    } else if (strcmp(k, "connections") == 0) {
        lua_pushinteger(L, srv ? srv->nconns : 0);
    } else if (strcmp(k, "wait") == 0) {
        lua_pushcfunction(L, server_wait);
    } else {
        lua_pushnil(L);
    }
    return 1;
}

/* SO_REUSEPORT before bind, which libuv 1.44 has no flag for: open the socket ourselves. */
static int open_reuseport(uv_tcp_t *tcp, int family) {
    int fd = socket(family, SOCK_STREAM, 0);
    int one = 1;
    if (fd < 0)
        return uv_translate_sys_error(errno);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        uv_tcp_open(tcp, fd) != 0) {
        int err = uv_translate_sys_error(errno);
        close(fd);
        return err;
    }
    return 0;
}

static int bind_listen(loom_server_t *srv, const char *host, int port, int reuseport, int backlog) {
    struct sockaddr_storage ss;
    int rc = loom_addr_parse(host, port, &ss);
    if (rc == 0 && reuseport)
        rc = open_reuseport(&srv->lst.tcp, ss.ss_family);
    if (rc == 0)
        rc = uv_tcp_bind(&srv->lst.tcp, (struct sockaddr *)&ss,
                         ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
    if (rc == 0)
        rc = uv_listen(&srv->lst.stream, backlog, on_connection);
    if (rc == 0)
        srv->port = loom_addr_local_port(&srv->lst.tcp);
    return rc;
}

/* Listens on a unix-domain socket at path (sock.c: a stale file replaced, a live one
 * UV_EADDRINUSE, a file of another kind UV_EEXIST; mode > 0 set on it before it listens). */
static int bind_unix(loom_server_t *srv, const char *path, int mode, int backlog) {
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return UV_ENAMETOOLONG; /* libuv would bind a truncated path */
    int rc = loom_sock_bind_unix(&srv->lst.pipe, path, mode, &srv->path_ino);
    if (rc != 0)
        return rc;
    rc = uv_listen(&srv->lst.stream, backlog, on_connection);
    if (rc == 0 && !(srv->path = strdup(path)))
        rc = UV_ENOMEM;
    if (rc != 0)
        loom_sock_unlink_unix(path, srv->path_ino); /* bound here, so ours */
    return rc;
}

static loom_server_t *server_new(lua_State *L, loom_t *h, int unix_socket) {
    loom_server_t *srv = calloc(1, sizeof *srv);
    if (!srv)
        luaL_error(L, "out of memory");
    srv->host = h;
    srv->spare_fd = -1;
    srv->run_job.run = run_handlers;
    srv->heads.max = 256;
    srv->entry_ref = srv->boxmt_ref = srv->self_ref = LUA_NOREF;
    srv->reqmt_ref = srv->methods_ref = LUA_NOREF;
    if (unix_socket)
        uv_pipe_init(h->loop, &srv->lst.pipe, 0);
    else
        uv_tcp_init(h->loop, &srv->lst.tcp);
    uv_timer_init(h->loop, &srv->timer);
    uv_unref((uv_handle_t *)&srv->timer);
    srv->lst.handle.data = srv->timer.data = srv;
    srv->handles = 2;
    loom_handle_opened(h);
    loom_handle_opened(h);
    loom_res_add(h, &srv->res, server_res_close);
    loom_server_t **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = srv;
    srv->boxed = 1;
    luaL_setmetatable(L, SERVER_MT);
    return srv;
}

/* A timeout in seconds to ms for a list: 0 (or less, or NaN) turns the limit off, as does
 * anything past 30 years (math.huge included, whose cast would be undefined); a positive
 * value below 1 ms is 1 ms, not off. */
static uint64_t secs_to_ms(double secs) {
    return !(secs > 0) || secs > 1e9 ? 0 : secs < 0.001 ? 1 : (uint64_t)(secs * 1000);
}

/* The same for a task's wait (loom_park): < 0 is none. */
static double secs_for_park(double secs) {
    return !(secs > 0) || secs > 1e9 ? -1 : secs;
}

/* Every timeout means "no limit" at 0 (app.lua passes handler_timeout = false as 0). */
static void read_limits(lua_State *L, int o, loom_server_t *srv) {
    srv->max_header = (uint32_t)loom_opt_integer(L, o, "max_header", 16 * 1024);
    srv->max_body = (uint64_t)loom_opt_integer(L, o, "max_body", 1024 * 1024);
    srv->tl[TL_HEAD].ms = secs_to_ms(loom_opt_number(L, o, "header_timeout", 30));
    srv->tl[TL_IDLE].ms = secs_to_ms(loom_opt_number(L, o, "keepalive_timeout", 75));
    srv->tl[TL_LINGER].ms = LINGER_MS;
    srv->tl[TL_HANDLER].ms = secs_to_ms(loom_opt_number(L, o, "handler_timeout", 60));
    srv->max_buffered = 64 * 1024 + srv->max_header;
    srv->parse = (loom_http_conf_t){.on_headers = on_headers,
                                    .on_body = on_body,
                                    .on_complete = on_complete,
                                    .max_header = srv->max_header,
                                    .owner_off = offsetof(loom_conn_t, msg),
                                    .strict_lines = 1};
    srv->obs = loom_obs_open(L, o, srv->host);
    double body = loom_opt_number(L, o, "body_timeout", 60);
    double send = loom_opt_number(L, o, "send_timeout", 60);
    srv->body_timeout = secs_for_park(body);
    srv->send_timeout = secs_for_park(send);
    srv->tl[TL_DRAIN].ms = secs_to_ms(body);
    srv->tl[TL_SEND].ms = secs_to_ms(send);
    srv->h2 = loom_opt_boolean(L, o, "http2", 0);
    lua_Integer ms = loom_opt_integer(L, o, "max_streams", 100);
    if (ms < 1 || ms > INT32_MAX)
        luaL_argerror(L, o, "option 'max_streams': a positive integer expected");
    srv->max_streams = (uint32_t)ms;
}

void loom_conn_h2_idle(loom_conn_t *c, int on) {
    if (c->state != C_H2)
        return;
    if (on)
        tl_add(c, TL_IDLE);
    else
        tl_remove(c);
}

/* The core.tls_config object in option `tls` of the options table at idx, referenced for
 * the server; NULL when there is none. Raises when it is something else. */
static loom_tls_conf_t *server_tls_conf(lua_State *L, int idx) {
    loom_tls_conf_t *conf = NULL;
    if (lua_getfield(L, idx, "tls") != LUA_TNIL) {
        conf = loom_tls_conf_check(L, -1);
        loom_tls_conf_ref(conf);
    }
    lua_pop(L, 1);
    return conf;
}

/* Every method name llhttp knows, by number (its header's method map). */
static int method_names_ref(lua_State *L) {
    lua_createtable(L, 64, 0);
#define LOOM_METHOD_NAME(num, name, string)                                                        \
    lua_pushliteral(L, #string);                                                                   \
    lua_rawseti(L, -2, num);
    HTTP_ALL_METHOD_MAP(LOOM_METHOD_NAME)
#undef LOOM_METHOD_NAME
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* core.http_listen(entry, opts) -> server | nil, err
 * entry(req, box, method, path) runs in a task of its own for each request: req is an
 * empty table with opts.request_mt as its metatable, for entry to fill
 * opts: host, port, backlog, reuseport, max_header, max_body, header_timeout,
 *       keepalive_timeout, body_timeout, send_timeout, handler_timeout, tls (a
 *       core.tls_config{server = true, ...}), access_log (true, "combined", "json" or a
 *       function(entry)), metrics (count requests for core.http_stats),
 *       path (listen on a unix-domain socket there instead of host and port) and mode (its
 *       permission bits), max_conns_per_ip (open connections from one address; 0: any) */
static int l_http_listen(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *host = loom_opt_string(L, 2, "host", "0.0.0.0");
    int port = (int)loom_opt_integer(L, 2, "port", 0);
    int backlog = (int)loom_opt_integer(L, 2, "backlog", 511);
    int reuseport = loom_opt_boolean(L, 2, "reuseport", 0);
    const char *path = loom_opt_string(L, 2, "path", NULL);
    lua_Integer mode = loom_opt_integer(L, 2, "mode", -1);
    lua_Integer per_ip = loom_opt_integer(L, 2, "max_conns_per_ip", 0);
    if (mode < -1 || mode > 07777)
        luaL_argerror(L, 2, "option 'mode': permission bits from 0 to 0o7777 expected");
    if (per_ip < 0 || per_ip > UINT32_MAX)
        luaL_argerror(L, 2, "option 'max_conns_per_ip': a non-negative integer expected");
    loom_server_t *srv = server_new(L, loom_host(L), path != NULL);
    read_limits(L, 2, srv);
    srv->tls_conf = server_tls_conf(L, 2);
    srv->max_per_ip = (uint32_t)per_ip;
    if (per_ip)
        srv->ip_table = calloc(IP_BUCKETS, sizeof *srv->ip_table);
    int rc = per_ip && !srv->ip_table ? UV_ENOMEM
             : path                   ? bind_unix(srv, path, (int)mode, backlog)
                                      : bind_listen(srv, host, port, reuseport, backlog);
    if (rc != 0) {
        srv->closing = 1;
        uv_close(&srv->lst.handle, on_server_handle_closed);
        server_maybe_done(srv);
        char ctx[300];
        if (path)
            snprintf(ctx, sizeof ctx, "unix:%s", path);
        else
            snprintf(ctx, sizeof ctx, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
        return loom_fail_uv(L, "listen", rc, ctx);
    }
    srv->listening = 1;
    spare_open(srv);
    lua_pushvalue(L, 1);
    srv->entry_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_getmetatable(L, REQBOX_MT);
    srv->boxmt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (lua_getfield(L, 2, "request_mt") == LUA_TTABLE)
        srv->reqmt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    else
        lua_pop(L, 1);
    srv->methods_ref = method_names_ref(L);
    lua_pushvalue(L, -1);
    srv->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static const luaL_Reg server_meta[] = {
    {"__gc", server_gc},
    {"__close", server_close_tbc},
    {"__index", server_index},
    {NULL, NULL},
};

static const luaL_Reg server_funcs[] = {
    {"http_listen", l_http_listen},
    {NULL, NULL},
};

int loom_open_http_server(lua_State *L) {
    luaL_newmetatable(L, SERVER_MT);
    luaL_setfuncs(L, server_meta, 0);
    lua_pop(L, 1);
    luaL_setfuncs(L, server_funcs, 0);
    loom_open_access_log(L);
    return loom_open_http_request(L);
}
