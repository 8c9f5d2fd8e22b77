/*
 * http_server.h - the HTTP/1.1 server engine shared by http_server.c (accept, read, parse,
 * connection lifecycle, timeouts), http_response.c (response heads and writes) and
 * http_request.c (the Lua request object, bodies, streaming responses). Each connection
 * embeds a loom_sock (src/io/sock.h), which owns the TCP handle, the write queue and the
 * TLS session; the engine sets its hooks and never touches the handle's I/O itself.
 */
#ifndef LOOM_HTTP_SERVER_H
#define LOOM_HTTP_SERVER_H

#include "host.h"
#include "http_parse.h"
#include "io/sock.h"

/* The most of an unread request body the server reads and drops after the answer to keep
 * the connection; past it (or for a chunked body) the connection closes. */
#define LOOM_CONN_DRAIN_MAX (64 * 1024)

typedef struct loom_server loom_server_t;
typedef struct loom_conn loom_conn_t;
typedef struct loom_reqbox loom_reqbox_t;
typedef struct loom_ipcount loom_ipcount_t;

/* A request body gathered for its handler (allocated when the first bytes come). */
typedef struct {
    size_t len, cap;
    char data[];
} loom_body_t;
typedef struct loom_obs loom_obs_t; /* access log and metrics (access_log.h) */

/* A connection's place in one of the server's timeout lists. Each list has one fixed
 * duration, so appending keeps it sorted by deadline and one timer serves them all. */
typedef struct {
    loom_conn_t *head, *tail;
    uint64_t ms; /* the list's duration */
} loom_tlist_t;

/* TL_SEND: an answer the kernel has not taken whole, with no writer task timing it (a whole
 * answer, a stream's end, an error answer): send_timeout from the latest piece written.
 * TL_DRAIN: after the answer, the rest of a body nobody read is parsed away: body_timeout
 * from the latest byte. A list whose duration is 0 has no limit: tl_add puts nothing in it. */
enum { TL_NONE, TL_HEAD, TL_IDLE, TL_LINGER, TL_HANDLER, TL_SEND, TL_DRAIN, TL_COUNT };

enum {
    C_HEAD,    /* reading a request head (or waiting for the first byte after accept) */
    C_HANDLER, /* a handler task owns the request */
    C_IDLE,    /* kept alive, no request in progress */
    C_LINGER,  /* answered and shut down; reading until the peer closes */
    C_CLOSING, /* uv_close called */
    C_H2,      /* handed to an HTTP/2 session (h2_server.c): the struct is the sock's shell */
};

enum { R_NONE, R_STREAM, R_DONE };

struct loom_conn {
    loom_sock_t sock; /* first; sock.h.handle.data = this */
    loom_server_t *srv;
    loom_http_msg_t msg;
    loom_conn_t *rq_next;       /* in the server's queue of handlers to start (queued) */
    loom_conn_t *prev, *next;   /* every connection of the server */
    loom_conn_t *tprev, *tnext; /* the timeout list it is in */
    uint64_t deadline;
    uint64_t out_left;       /* if out_sized: body bytes the answer still owes */
    char *in;                /* unparsed bytes: pipelined requests, or a body not asked for yet */
    uint32_t in_len, in_cap; /* at most max_buffered plus one read */
    loom_body_t *body;       /* request body gathered for the handler, or NULL */
    uint64_t body_seen;      /* body bytes parsed for this request (limit) */
    uint64_t sent;           /* response bytes, for the access log */
    uint64_t t0;             /* uv_hrtime when the request head arrived (access log, metrics) */
    loom_task_t *task;       /* the handler, while it runs */
    loom_task_t *waiter;     /* a task parked on the body or on a streaming write */
    loom_reqbox_t *box;      /* the Lua request object of the current request */
    loom_ipcount_t *ip;      /* its peer address's count (max_conns_per_ip), or NULL */
    uint32_t nreq;           /* requests finished on this connection (tells one from the next) */
    uint32_t head_sent;      /* bytes of the answer's head: sent less these is its body */
    /* the rest in bits: 10 000 idle connections are what they cost (statuses are 100-999) */
    unsigned status : 10;      /* response status, for the access log */
    unsigned fail_status : 10; /* the body broke (413, 400): the answer becomes this, and closes */
    unsigned
        fault_status : 10;  /* core.req_fault: a handler that raises is answered this, closing */
    unsigned tlist : 3;     /* TL_* */
    unsigned state : 3;     /* C_* */
    unsigned resp : 2;      /* R_* */
    unsigned keepalive : 1; /* the request allows another after it */
    unsigned msg_done : 1;  /* on_message_complete seen for the current request */
    unsigned is_head : 1;   /* HEAD request: no body in the answer */
    unsigned http10 : 1;
    unsigned expect : 1;       /* Expect: 100-continue not yet answered */
    unsigned parse_paused : 1; /* llhttp is paused; `in` holds the bytes after the pause */
    unsigned eof : 1;          /* the peer finished sending (or the read failed) */
    unsigned partial : 1;      /* bytes of the current request head have arrived */
    unsigned body_wanted : 1;  /* a task asked for the body: parse it as it comes */
    unsigned discard : 1;      /* parse the rest of the body and drop it */
    unsigned chunk_mode : 1;   /* the handler takes the body piece by piece (req:chunks) */
    unsigned waiting_body : 1; /* `waiter` waits for the body (else for writes to drain) */
    unsigned chunked_out : 1;  /* streaming response uses chunked encoding */
    unsigned out_sized : 1;    /* the streamed answer has a length (Content-Length, or no body) */
    unsigned queued : 1;       /* in the server's handler queue (rq_next) */
};

struct loom_server {
    loom_res_t res;
    loom_t *host;
    union { /* the listener: TCP, or a unix-domain socket (path) */
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } lst;
    char *path;                /* the unix socket's file (removed at close), or NULL for TCP */
    unsigned long path_ino;    /* its inode: another file put there later is left alone */
    uint32_t max_per_ip;       /* max_conns_per_ip: open connections from one address (0: any) */
    loom_ipcount_t **ip_table; /* their counts, by address (IP_BUCKETS lists), when capped */
    uv_timer_t timer;
    uint64_t timer_at; /* loop time the timer fires at; 0 while it is stopped */
    int handles;       /* libuv handles of the server still open (listener, timer) */
    int listening;
    int boxed;
    int closing;  /* srv:close was called */
    int spare_fd; /* kept for when libuv's own EMFILE reserve is gone (see on_connection) */
    int shedding; /* the spare was let go: the next accepted connection is closed at once */
    int port;
    int live;            /* connection structs not yet freed: the server outlives them */
    int self_ref;        /* anchors the Lua box while the server is up */
    loom_job_t done_job; /* drops the Lua references once everything is closed */
    /* Connections whose request head just completed, in order: one scheduler job starts
     * their handlers (a job in each connection would cost every idle one its bytes). */
    loom_job_t run_job;
    loom_conn_t *rq_head, *rq_tail;
    int entry_ref;   /* Lua function(req, box, method, path) -> response */
    int boxmt_ref;   /* metatable of request boxes (REQBOX_MT) */
    int reqmt_ref;   /* metatable of request tables (opts.request_mt), or LUA_NOREF */
    int methods_ref; /* {[llhttp method number] = name}: interned once, not per request */
    loom_obs_t *obs; /* access log and request counters, or NULL (access_log.c) */
    loom_conn_t *conns;
    int nconns;
    loom_tlist_t tl[TL_COUNT];
    uint64_t grace_at, settle_at; /* while closing: force-close, close idle ones */
    uint64_t accept_retry_at;     /* an accepted connection waits for memory until then */
    uint32_t max_header;
    loom_http_conf_t parse; /* what every connection's parser shares */
    uint64_t max_body;
    size_t max_buffered;  /* unparsed bytes kept before reads stop (pipelining cap) */
    double body_timeout;  /* seconds a body read may wait for the next bytes (< 0: no limit) */
    double send_timeout;  /* seconds a streaming write may wait for the client (< 0: none) */
    int h2;               /* a connection's first bytes may start HTTP/2 (h2c or ALPN "h2") */
    uint32_t max_streams; /* concurrent streams of an HTTP/2 connection */
    loom_conn_t *reading; /* the connection whose read is being handled (on_input), or NULL */
    size_t cork_bytes;    /* bytes gathered in its cork so far */
    /* Bytes of `reading`'s read left where they landed, in rbuf, instead of being copied
     * out: its handler, started in the same on_input, mostly takes them from there (a
     * 64 KiB upload then costs one copy, into its Lua string, not three). on_input copies
     * what is left to `in` and `body` before it returns, and rbuf is read into again. */
    const char *lent;     /* unparsed bytes after a pause (else they go to `in`) */
    size_t lent_len;      /* 0: none */
    const char *span;     /* body bytes parsed for the handler (else they go to `body`), */
    size_t span_len;      /*   only while `body` is empty: then they are all it has */
    loom_conn_t *parsing; /* `reading`, while llhttp parses bytes in rbuf (not `in`) */
    struct loom_tls_conf *tls_conf; /* HTTPS: certificates for every connection, or NULL */
    loom_head_pool_t heads;         /* pool of head storage */
    char *hbuf;                     /* response heads are built here */
    size_t hcap;
    uint64_t date_sec; /* loop second the Date value was made in */
    char date[40];     /* "Date: ...\r\n", cached once a second */
    size_t date_len;
    /* Every read lands here; what must stay is copied out. 128 KiB: a 64 KiB upload and
     * its head come in one read, not two (a syscall, a parse and a resume less). */
    char rbuf[128 * 1024];
};

struct loom_reqbox {
    loom_conn_t *c;        /* NULL once the request is finished */
    int gone;              /* it finished because its connection closed under the handler */
    int http10;            /* kept past the request's end: req.version is read lazily; 2: HTTP/2 */
    struct loom_h2req *h2; /* an HTTP/2 stream's request (h2_server.c) while it lasts */
    /* the target, copied when req.query is made (http_request.c): req.target and
     * req.query_all read it after the request's end; tlen 0 when there is no copy */
    unsigned char tlen;
    char target[47];
};

#define REQBOX_MT "loom.request"

/* Bytes of the request body gathered and not yet taken by the handler: the span left in
 * the read buffer (srv->span), else `body`. */
static inline size_t loom_conn_body_len(const loom_conn_t *c) {
    if (c->srv->span_len && c->srv->reading == c)
        return c->srv->span_len;
    return c->body ? c->body->len : 0;
}
static inline const char *loom_conn_body_data(const loom_conn_t *c) {
    if (c->srv->span_len && c->srv->reading == c)
        return c->srv->span;
    return c->body ? c->body->data : "";
}
/* The handler took what loom_conn_body_len counts. */
static inline void loom_conn_body_taken(loom_conn_t *c) {
    if (c->srv->span_len && c->srv->reading == c)
        c->srv->span_len = 0;
    else if (c->body)
        c->body->len = 0;
}
/* Bytes received and not parsed yet: pipelined requests, or a body not asked for yet. */
static inline size_t loom_conn_unparsed(const loom_conn_t *c) {
    return c->in_len + (c->srv->reading == c ? c->srv->lent_len : 0);
}

/* http_server.c */
void loom_conn_close(loom_conn_t *c);
/* An upgrade: c leaves its server (the connection list and count, its timeout, its request)
 * while its sock lives on with another owner (loom_stream_adopt), which gives the sock back
 * closed, to on_conn_closed: the struct stays allocated until then. */
void loom_conn_leave(loom_conn_t *c);
/* The handler is done and the response is out (or queued): go on with the connection. */
void loom_conn_request_done(loom_conn_t *c);
/* Parses what `in` holds, after a pause is lifted (body wanted, or the next request). */
void loom_conn_resume_parse(loom_conn_t *c);
/* The unparsed bytes left in the read buffer (srv->lent) are copied to `in`, for whoever
 * takes `in` as it is (req:upgrade). */
void loom_conn_keep_lent(loom_conn_t *c);
void loom_conn_start_reading(loom_conn_t *c);
/* HTTP/2 (h2_server.c): the session of c closed its sock (the engine's accounting of it);
 * the struct is freed with loom_conn_release once nothing refers to it. */
void loom_conn_sock_gone(loom_conn_t *c);
void loom_conn_release(loom_conn_t *c);
/* An HTTP/2 connection with no stream open waits keepalive_timeout (on: 1), else nothing. */
void loom_conn_h2_idle(loom_conn_t *c, int on);

/* http_response.c */
/* Gathers this connection's answers until loom_conn_uncork, if its read is being handled
 * (the end of on_input uncorks): pipelined answers, or a streamed head and its first
 * pieces, leave in one write. Elsewhere (a handler woken later) it does nothing. */
static inline void loom_conn_cork(loom_conn_t *c) {
    if (c->srv->reading == c)
        loom_sock_cork(&c->sock);
}
/* Sends what the cork gathered (one write); nothing when not corked. */
void loom_conn_uncork_now(loom_conn_t *c);
static inline void loom_conn_uncork(loom_conn_t *c) {
    if (c->sock.flags & LOOM_SOCK_CORKED)
        loom_conn_uncork_now(c);
}
/* Writes bufs through the connection's sock (encrypted on HTTPS), counting them for the
 * access log; returns 0 or a libuv error. */
int loom_conn_write(loom_conn_t *c, uv_buf_t *bufs, int nbufs);
/* Writes a complete response from a handler's results on L (the task's stack). */
void loom_conn_respond_results(loom_conn_t *c, lua_State *L, int nres);
/* Writes a complete response, as a handler's status, headers (table at hidx of L) and body
 * would be, with a body held in C (app:static's cached pages: no Lua string). -1, with
 * nothing sent, when the request failed or is answered, or the status or a header is
 * invalid: loom_conn_respond_results deals with those. */
int loom_conn_respond_body(loom_conn_t *c, lua_State *L, int status, int hidx, const char *body,
                           size_t blen);
/* loom_conn_respond_body with the shared head of a JSON answer (core.resp_json_head): its
 * one line written without a look at the table. */
int loom_conn_respond_json(loom_conn_t *c, int status, const char *body, size_t blen);
/* Writes a complete response with a plain-text body; closes the connection after it when
 * `close` is set. */
void loom_conn_respond_simple(loom_conn_t *c, int status, const char *body, int close);
/* Starts a streaming response: status and headers (table at index hidx of L, or 0). Returns
 * 0, a libuv error, or -1 with *why saying which header was invalid (nothing was sent). */
int loom_conn_stream_start(loom_conn_t *c, lua_State *L, int status, int hidx, const char **why);
/* Writes the last chunk of a streaming response. */
void loom_conn_stream_end(loom_conn_t *c);
/* Builds a 101 head with the headers of the table at hidx; NULL if a header is invalid. */
const char *loom_conn_head_101(loom_conn_t *c, lua_State *L, int hidx, size_t *len);
/* Writes "HTTP/1.1 100 Continue" if the request expects it and it was not sent yet. */
void loom_conn_send_continue(loom_conn_t *c);
const char *loom_http_reason(int status);
/* 1*DIGIT that fits in 64 bits (a Content-Length): 1 and *out, or 0. */
int loom_http_parse_digits(const char *s, size_t n, uint64_t *out);
/* The body of the answer to a handler that let a body fault through: the error's own
 * "http: ..." or "limit: ..." text from e (its first line), else status's reason phrase. */
void loom_http_fault_body(const char *e, int status, char *body, size_t n);
/* Pushes the peer of c: ip, port (2), "unix:" (1), or nothing (0). */
int loom_conn_push_peer(lua_State *L, loom_conn_t *c);
/* RFC 9110 token (a header name); a field value without CR, LF, NUL or other controls. */
int loom_http_is_token(const char *s, size_t n);
int loom_http_safe_value(const char *s, size_t n);
/* The Date value of this second ("Sun, 06 Nov 1994 08:49:37 GMT"), cached. */
const char *loom_server_date(loom_server_t *srv, size_t *len);
/* The request target, escaped as nginx writes a log field ('"', '\\', control bytes and
 * bytes from 0x7f as \xHH), for a log line ("" when there is no head). */
const char *loom_conn_log_target(loom_conn_t *c, char *out, size_t cap);

/* http_request.c */
int loom_conn_push_request(lua_State *L, loom_conn_t *c);
/* The request ended: detach its Lua object and wake whoever waits on the body. */
void loom_conn_detach_request(loom_conn_t *c);
/* Body parsing progressed (data, completion, failure, or the peer left). */
void loom_conn_body_event(loom_conn_t *c);
int loom_open_http_request(lua_State *L);

int loom_open_http_server(lua_State *L);

/* h2_server.c: HTTP/2 on the server's connections (src/http2/h2_session.c below it) */
/* Hands c over to a new HTTP/2 session, with data (what c read so far) fed to it; closes
 * c when that fails. */
void loom_h2srv_start(loom_conn_t *c, const char *data, size_t len);
/* srv:close: GOAWAY (NO_ERROR) on c, whose streams in flight finish. */
void loom_h2srv_goaway(loom_conn_t *c);
/* c left the server's list (loom_conn_leave): with no stream open, GOAWAY and the session
 * ends; else the session closes now (its streams reset). */
void loom_h2srv_close(loom_conn_t *c);
/* The core.req_* functions for a box whose request is an HTTP/2 stream's. */
enum {
    LOOM_H2OP_TARGET,
    LOOM_H2OP_HEADERS,
    LOOM_H2OP_PEER,
    LOOM_H2OP_CLOSING,
    LOOM_H2OP_BODY,
    LOOM_H2OP_CHUNK,
    LOOM_H2OP_STREAM,
    LOOM_H2OP_WRITE,
    LOOM_H2OP_UPGRADE,
    LOOM_H2OP_FAULT,
};
int loom_h2srv_req(lua_State *L, loom_reqbox_t *box, int op);

#endif
