/*
 * access_log.h - what the server engine tells about each request once it is answered: the
 * access log line (Combined Log Format, one JSON object, or a Lua function's entry) and the
 * counters app:metrics reads. The engine calls loom_obs_request_end where an answer is
 * complete, loom_obs_request_start when a request head has arrived, and the small counting
 * hooks below; everything else (formats, the buffered writer of stdout, the Lua side) is in
 * access_log.c. A server with neither a log nor metrics has no loom_obs: each hook is then
 * one test of a NULL pointer.
 */
#ifndef LOOM_ACCESS_LOG_H
#define LOOM_ACCESS_LOG_H

#include "http_server.h"

enum { LOOM_LOG_OFF, LOOM_LOG_COMBINED, LOOM_LOG_JSON, LOOM_LOG_FUNCTION };

/* The latency histogram's upper bounds, in seconds: prometheus_client's default buckets
 * (then +Inf). */
#define LOOM_OBS_NBOUNDS 14

typedef struct {
    uint32_t key; /* method << 10 | status, plus one (0: an empty slot) */
    uint64_t n;
} loom_obs_slot_t;

struct loom_obs {
    loom_t *host;
    int format;                /* LOOM_LOG_* */
    int metrics;               /* count requests for app:metrics */
    int fn_ref;                /* the access_log function, or LUA_NOREF */
    struct loom_alog_out *out; /* the host's buffered stdout (combined, json) */
    /* function format: entries recorded by the engine, called from a scheduler job */
    char *q;
    size_t qlen, qcap;
    loom_job_t job;
    int dead;           /* the server is gone; the job frees this after the last entries */
    uint64_t err_at;    /* loop ms of the latest error of the function that was printed */
    uint64_t err_quiet; /* errors since, not printed */
    /* metrics: requests by method and status (open addressing), latency, bytes */
    loom_obs_slot_t *slots;
    uint32_t nslots, cap, last;
    uint64_t buckets[LOOM_OBS_NBOUNDS + 1]; /* per bucket, not cumulative; the last is +Inf */
    uint64_t count, sum_ns;
    uint64_t bytes_in, bytes_out;
    uint64_t handler_errors, handler_timeouts;
};

/* Reads options `access_log` (false/nil, true, "combined", "json" or a function) and
 * `metrics` (boolean) of the table at opts; NULL when both are off. Raises on a bad
 * access_log value. */
loom_obs_t *loom_obs_open(lua_State *L, int opts, loom_t *h);
/* The server has closed (in the scheduler): drops the function's registry reference. */
void loom_obs_release_refs(loom_obs_t *o, lua_State *L);
/* The server is being freed. Entries still waiting for the function are given to it first
 * (unless the host is closing). */
void loom_obs_free(loom_obs_t *o);

/* The answer to the current request is complete (handed to the socket): log and count it.
 * Reads c->status, c->sent less c->head_sent (the body's bytes) and c->t0. */
void loom_obs_request_end(loom_conn_t *c);

/* An HTTP/2 stream's answer is complete (h2_server.c): what the log and counters need. */
typedef struct {
    const char *method, *target, *ua, *ref; /* ua, ref: NULL when absent */
    size_t method_len, target_len, ua_len, ref_len;
    unsigned status;
    uint64_t body; /* the body's bytes (an HTTP/2 head is not counted) */
    uint64_t t0;   /* uv_hrtime at the head, or 0 */
} loom_obs_h2_t;
void loom_obs_h2_end(loom_server_t *srv, loom_sock_t *sock, const loom_obs_h2_t *r);

/* A request head has arrived: the duration counts from here. */
static inline void loom_obs_request_start(loom_conn_t *c) {
    if (c->srv->obs)
        c->t0 = uv_hrtime();
}

/* Bytes read from a connection (plaintext). */
static inline void loom_obs_input(loom_conn_t *c, size_t n) {
    if (c->srv->obs)
        c->srv->obs->bytes_in += n;
}

/* A handler raised (a bug of the app, logged), or ran past handler_timeout. */
static inline void loom_obs_handler_error(loom_server_t *srv) {
    if (srv->obs)
        srv->obs->handler_errors++;
}
static inline void loom_obs_handler_timeout(loom_server_t *srv) {
    if (srv->obs)
        srv->obs->handler_timeouts++;
}

/* core.http_stats(server) and core.task_count(). */
int loom_open_access_log(lua_State *L);

#endif
