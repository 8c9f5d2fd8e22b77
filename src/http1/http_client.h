/*
 * http_client.h - the HTTP/1.1 client engine shared by http_client.c (the pool: hosts,
 * kept-alive connections, slots and their waiters, idle expiry, response parsing on a
 * connection) and http_exchange.c (one request and its response, as the Lua object that
 * tasks wait on). Connections are loom streams (plain or TLS) that the pool owns; making
 * them (DNS, connect, proxies, TLS) is left to Lua, off the hot path.
 */
#ifndef LOOM_HTTP_CLIENT_H
#define LOOM_HTTP_CLIENT_H

#include "stream.h"
#include "http_parse.h"
#include "inflate.h"

#define LOOM_CLIENT_POOL_MT "loom.http_pool"
#define LOOM_CLIENT_X_MT "loom.http_exchange"

typedef struct loom_client_pool loom_client_pool_t;
typedef struct loom_client_host loom_client_host_t;
typedef struct loom_client_conn loom_client_conn_t;
typedef struct loom_client_x loom_client_x_t;

/* One pool key: scheme, host, port, TLS settings and proxy (made by Lua). */
struct loom_client_host {
    loom_client_host_t *next;
    loom_client_pool_t *pool;
    char *key;
    size_t keylen;
    int origin_len;           /* key[0, origin_len) is "scheme://host:port", for messages */
    loom_client_conn_t *idle; /* most recently used first */
    int nidle;
    int active; /* connections in use, plus slots granted for connections being made */
    loom_client_x_t *whead, *wtail; /* exchanges waiting for a connection or a slot, in order */
    unsigned long opened, reused;
};

struct loom_client_pool {
    loom_res_t res;
    loom_t *host;
    uv_timer_t timer; /* idle expiry and drains; unreferenced: it never keeps the loop */
    int timer_open;
    int boxed;
    int xrefs; /* exchange objects that point here */
    int closed;
    int max_per_host;
    uint64_t idle_ms;
    loom_client_host_t *hosts;
    loom_client_conn_t *busy;     /* connections in use */
    loom_client_conn_t *draining; /* unread bodies read and dropped in the background */
    loom_head_pool_t heads;
};

enum { CS_IDLE, CS_BUSY, CS_DRAIN, CS_DEAD };

struct loom_client_conn {
    loom_client_conn_t *prev, *next; /* in its host's idle list, or the pool's busy or drain list */
    loom_client_host_t *host;
    loom_stream_t *s; /* NULL once closed */
    loom_http_msg_t msg;
    loom_client_x_t *x; /* the exchange in progress */
    int state;
    int msg_done;
    int keep;          /* the response allows another request */
    uint64_t deadline; /* loop ms: idle expiry or end of a drain */
    uint64_t ka_ms;    /* the server's Keep-Alive: timeout, 0 when absent */
};

/* Flags of a request. */
enum {
    HX_HEAD = 1,   /* no body in the response */
    HX_DECODE = 2, /* decode gzip and deflate bodies */
    HX_UPLOAD = 4, /* the body is written afterwards, chunked (x:write, x:finish) */
    HX_FRESH = 8,  /* a new connection: the retry of a request that met a stale one */
    HX_STREAM = 16 /* the body is read piece by piece: keep little of it buffered */
};
/* With HX_UPLOAD: the head gives Content-Length, and x:write sends the bytes unframed. */
enum { HX_SIZED = 32 };

enum { X_NEW, X_SENT, X_HEAD, X_DONE, X_FAILED, X_CLOSED };
enum { W_NONE, W_SLOT, W_HEAD, W_BODY, W_WRITE };

struct loom_client_x {
    loom_client_pool_t *pool;
    loom_client_host_t *host;
    loom_client_conn_t *c;
    loom_task_t *waiter;
    int wait;                       /* W_*: what the waiter waits for */
    loom_client_x_t *wnext, *wprev; /* in the host's waiting list */
    int queued;
    int slot; /* holds a slot: Lua must bring a new connection */
    int flags;
    int phase;     /* X_* */
    int got_bytes; /* a response byte arrived */
    int reused;    /* sent on a kept-alive connection */
    int req_done;  /* the whole request is written (or queued in order) */
    int whole;     /* read_all gathers the rest: max_body counts it */
    int status, minor;
    int by_total;      /* the current wait's deadline is the total one */
    loom_head_t *head; /* the final response head, until Lua has it */
    char *body;        /* decoded body bytes not yet given to Lua: [bpos, blen) */
    size_t blen, bpos, bcap;
    uint64_t total; /* decoded body bytes so far */
    uint64_t max_body;
    uint64_t expect; /* the body's Content-Length, when it is kept as it comes (not decoded) */
    loom_inflate_t *z;
    double read_timeout; /* < 0: none */
    double wait_timeout;
    double deadline;   /* loom.now() seconds; < 0: none */
    const char *ekind; /* failure kind, when phase is X_FAILED */
    int retryable;
    char emsg[200]; /* set before it is read: not cleared for each request */
    char inl[512];  /* a small body, without an allocation */
};

/* http_client.c */
loom_client_pool_t *loom_client_pool_check(lua_State *L, int idx);
loom_client_host_t *loom_client_host_get(loom_client_pool_t *p, const char *key, size_t len);
/* Takes a healthy idle connection for x, or returns NULL. */
loom_client_conn_t *loom_client_take_idle(loom_client_host_t *h);
/* A new connection around a stream Lua connected, already counted in host->active. */
loom_client_conn_t *loom_client_conn_new(loom_client_host_t *h, loom_stream_t *s);
/* Prepares the parser for the next response on c, for exchange x. */
void loom_client_conn_begin(loom_client_conn_t *c, loom_client_x_t *x);
/* Closes c (and frees its slot for a waiter). */
void loom_client_conn_close(loom_client_conn_t *c);
/* The exchange lets go of its unfinished response: drain it if little is left, or close. */
void loom_client_conn_abandon(loom_client_conn_t *c, double drain_s);
/* Gives back a slot that was granted but not used. */
void loom_client_slot_release(loom_client_host_t *h);
void loom_client_wait_add(loom_client_host_t *h, loom_client_x_t *x);
void loom_client_wait_remove(loom_client_x_t *x);
/* Parses what the connection's stream holds. */
void loom_client_conn_parse(loom_client_conn_t *c);
void loom_client_pool_unref(loom_client_pool_t *p);
int loom_open_http_client(lua_State *L);

/* http_exchange.c */
/* Progress on x: wakes its task when what it waits for has come. */
void loom_client_x_event(loom_client_x_t *x);
void loom_client_x_fail(loom_client_x_t *x, const char *kind, const char *fmt, ...);
int loom_client_x_body(loom_client_x_t *x, const char *at, size_t len);
int loom_open_http_exchange(lua_State *L);

#endif
