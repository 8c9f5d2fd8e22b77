/*
 * pg.c - one PostgreSQL connection on libpq's asynchronous API, driven by the loop: the C
 * half of loom.pg (lua/loom/pg.lua holds the pool, the statement cache and the parameter
 * encoding). Never a blocking libpq call on the loop: PQconnectStartParams + PQconnectPoll
 * to connect, pipeline mode for every batch of commands (PQsendPrepare,
 * PQsendDescribePrepared, PQsendQueryPrepared, PQsendQueryParams, then PQpipelineSync),
 * PQconsumeInput/PQisBusy/PQgetResult on a uv_poll_t watching PQsocket, PQflush while it
 * returns 1, and PQcancel (which opens a connection of its own) on libuv's thread pool.
 * Knows nothing of pools, statement names or how parameters are encoded.
 *
 * A connection is a heap struct; the Lua userdata is a box pointing to it. It is freed when
 * the box is collected and every libuv handle and request it started has finished.
 * A batch whose waiter went away (timeout, cancellation) goes on in the background after a
 * PQcancel: its results are read and dropped, and the connection is idle again when the
 * pipeline's sync arrives (conn:wait_idle waits for that).
 */
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "host.h"
#include "fail.h"

#ifdef LOOM_NO_PG
/* Built without libpq's headers (CMake found no libpq): loom.pg fails to connect, saying so. */
static int l_connect(lua_State *L) {
    return loom_fail(L, "connect", "loom was built without libpq (install libpq-dev, rebuild)");
}

int loom_open_pg(lua_State *L) {
    lua_pushcfunction(L, l_connect);
    lua_setfield(L, -2, "pg_connect");
    lua_pushlightuserdata(L, NULL); /* core.null: the same value as lua-cjson's cjson.null */
    lua_setfield(L, -2, "null");
    return 0;
}
#else
#include <libpq-fe.h>

/* libpq is opened with dlopen on the first connect, not linked: a process that never uses
 * loom.pg does not load it and what it pulls in (Kerberos, LDAP, GnuTLS, p11-kit, whose
 * exit-time destructor deadlocks in freelocale under an ASan LD_PRELOAD). libpq-fe.h gives
 * the types and prototypes; each call goes through `pq`. */
#define PQ_FUNCS(X)                                                                                \
    X(PQsetNoticeProcessor)                                                                        \
    X(PQbackendPID)                                                                                \
    X(PQcancel)                                                                                    \
    X(PQclear)                                                                                     \
    X(PQcmdStatus)                                                                                 \
    X(PQcmdTuples)                                                                                 \
    X(PQconnectPoll)                                                                               \
    X(PQconnectStartParams)                                                                        \
    X(PQconsumeInput)                                                                              \
    X(PQenterPipelineMode)                                                                         \
    X(PQerrorMessage)                                                                              \
    X(PQescapeIdentifier)                                                                          \
    X(PQfinish)                                                                                    \
    X(PQflush)                                                                                     \
    X(PQfname)                                                                                     \
    X(PQfreeCancel)                                                                                \
    X(PQfreemem)                                                                                   \
    X(PQftype)                                                                                     \
    X(PQgetCancel)                                                                                 \
    X(PQgetResult)                                                                                 \
    X(PQgetisnull)                                                                                 \
    X(PQgetlength)                                                                                 \
    X(PQgetvalue)                                                                                  \
    X(PQisBusy)                                                                                    \
    X(PQnfields)                                                                                   \
    X(PQnotifies)                                                                                  \
    X(PQnparams)                                                                                   \
    X(PQntuples)                                                                                   \
    X(PQparamtype)                                                                                 \
    X(PQpipelineSync)                                                                              \
    X(PQresultErrorField)                                                                          \
    X(PQresultErrorMessage)                                                                        \
    X(PQresultStatus)                                                                              \
    X(PQsendDescribePrepared)                                                                      \
    X(PQsendPrepare)                                                                               \
    X(PQsendQueryParams)                                                                           \
    X(PQsendQueryPrepared)                                                                         \
    X(PQsetnonblocking)                                                                            \
    X(PQsocket)                                                                                    \
    X(PQstatus)                                                                                    \
    X(PQtransactionStatus)                                                                         \
    X(PQunescapeBytea)

static struct {
#define X(f) __typeof__(f) *f;
    PQ_FUNCS(X)
#undef X
} pq;
static int pq_state; /* 0 not tried, 1 loaded, -1 failed */
static char pq_why[256];

static int pq_load(void) {
    if (pq_state)
        return pq_state > 0;
    void *lib = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(pq_why, sizeof pq_why, "cannot load libpq (apt-get install libpq5): %s",
                 dlerror());
        pq_state = -1;
        return 0;
    }
#define X(f)                                                                                       \
    if (!(*(void **)&pq.f = dlsym(lib, #f))) {                                                     \
        snprintf(pq_why, sizeof pq_why, "libpq has no %s (libpq 14 or later needed)", #f);         \
        pq_state = -1;                                                                             \
        return 0;                                                                                  \
    }
    PQ_FUNCS(X)
#undef X
    pq_state = 1;
    return 1;
}

#define PG_META "loom.pg.conn"
#define MAX_OPS 10000

/* Type OIDs (src/include/catalog/pg_type.dat) */
enum {
    OID_BOOL = 16,
    OID_BYTEA = 17,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_JSON = 114,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_JSONB = 3802,
};

enum { C_CONNECTING, C_IDLE, C_BUSY, C_CLOSED };

typedef struct pgconn pgconn_t;
typedef struct pgbatch pgbatch_t;

/* One batch of ops and its sync: in the connection's FIFO while in flight (a shared
 * connection has many, one per waiting task), then on its `done` list until its task has
 * built the results. */
struct pgbatch {
    pgbatch_t *next;          /* in flight: the next batch sent */
    pgbatch_t *dprev, *dnext; /* done, not yet built */
    pgconn_t *c;
    loom_task_t *task;
    int nops;
    int op;       /* the op whose results are being read */
    int got;      /* op `op` has had a result */
    int orphaned; /* the waiter went away (timeout, cancellation): drop the results */
    int failed;   /* the connection failed before the sync: c->err says why */
    PGresult *results[];
};

typedef struct {
    uv_poll_t poll;
    pgconn_t *c;
} pgpoll_t;

typedef struct {
    uv_work_t work;
    pgconn_t *c;
    PGcancel *cancel;
} pgcancel_t;

struct pgconn {
    loom_res_t res;
    loom_t *host;
    PGconn *pg;
    pgpoll_t *poll; /* watches PQsocket; NULL when none */
    int fd;
    int events;       /* UV_READABLE | UV_WRITABLE being watched */
    int state;        /* C_* */
    int refs;         /* the box, open handles, the cancel in flight */
    int has_timer;    /* idle timer initialised */
    int cancelling;   /* a PQcancel runs on the thread pool */
    int listening;    /* a task waits for a notification */
    int idle_wait;    /* a task waits in wait_idle: for the batch's end and the cancel's */
    PGnotify *notify; /* one taken from libpq for the listener, not yet handed over */
    loom_task_t *task;
    uv_timer_t timer;       /* closes the connection after idle_timeout unused */
    uint64_t idle_ms;       /* the last conn:idle: a shared connection rearms it when it drains */
    pgbatch_t *head, *tail; /* batches in flight, in the order sent */
    pgbatch_t *done;        /* batches whose sync came, waiting for their task to build */
    /* Shared (automatic pipelining): batches of many tasks in flight at once; a waiter that
     * goes away leaves its batch to finish (no cancel: it would hit another's query). What
     * one loop turn sends leaves in one TCP segment: the socket is corked from the first
     * batch until the loop's prepare phase (PQpipelineSync flushes each sync by itself). */
    int shared;
    int corked;   /* TCP_CORK is on, `prep` started */
    int no_cork;  /* the socket refused TCP_CORK (a unix socket) */
    int has_prep; /* `prep` initialised */
    uv_prepare_t prep;
    char *err; /* "closed: ..." or "connect: ...": the connection failed */
};

/* ---------------------------------------------------------------- lifetime */

static void batch_free(pgbatch_t *b) {
    for (int i = 0; i < b->nops; i++)
        if (b->results[i])
            pq.PQclear(b->results[i]);
    free(b);
}

static void done_unlink(pgbatch_t *b) {
    pgconn_t *c = b->c;
    if (b->dprev)
        b->dprev->dnext = b->dnext;
    else
        c->done = b->dnext;
    if (b->dnext)
        b->dnext->dprev = b->dprev;
    b->dprev = b->dnext = NULL;
}

/* The batch's sync came, or the connection failed: its task builds the results (or the
 * error) when it runs; a batch whose waiter went away is dropped now. */
static void batch_finish(pgbatch_t *b) {
    pgconn_t *c = b->c;
    if (b->orphaned || !b->task) {
        batch_free(b);
        return;
    }
    b->dprev = NULL;
    b->dnext = c->done;
    if (c->done)
        c->done->dprev = b;
    c->done = b;
    loom_task_t *t = b->task;
    b->task = NULL;
    loom_wake(t);
}

static void unref_conn(pgconn_t *c) {
    if (--c->refs > 0)
        return;
    if (c->notify)
        pq.PQfreemem(c->notify);
    while (c->done) { /* tasks that never ran again (the host went down) */
        pgbatch_t *b = c->done;
        done_unlink(b);
        batch_free(b);
    }
    free(c->err);
    free(c);
}

static void on_poll_closed(uv_handle_t *h) {
    pgpoll_t *p = h->data;
    pgconn_t *c = p->c;
    loom_handle_closed(c->host);
    free(p);
    unref_conn(c);
}

static void stop_poll(pgconn_t *c) {
    if (!c->poll)
        return;
    uv_close((uv_handle_t *)&c->poll->poll, on_poll_closed);
    c->poll = NULL;
    c->events = 0;
}

/* Sets the failure message (the first one wins) from libpq's, less its trailing newline. */
static void set_err(pgconn_t *c, const char *kind, const char *msg) {
    if (c->err)
        return;
    size_t kl = strlen(kind), ml = strlen(msg);
    while (ml > 0 && (msg[ml - 1] == '\n' || msg[ml - 1] == ' '))
        ml--;
    c->err = malloc(kl + ml + 3);
    if (!c->err)
        return;
    memcpy(c->err, kind, kl);
    memcpy(c->err + kl, ": ", 2);
    /* libpq's messages span lines ("...\n\tThis probably means..."): one line */
    char *out = c->err + kl + 2;
    for (size_t i = 0; i < ml; i++) {
        char ch = msg[i] == '\n' || msg[i] == '\t' ? ' ' : msg[i];
        if (ch != ' ' || (out > c->err + kl + 2 && out[-1] != ' '))
            *out++ = ch;
    }
    *out = 0;
}

static void on_timer_closed(uv_handle_t *h) {
    pgconn_t *c = h->data;
    loom_handle_closed(c->host);
    unref_conn(c);
}

static void on_prep_closed(uv_handle_t *h) {
    pgconn_t *c = h->data;
    loom_handle_closed(c->host);
    unref_conn(c);
}

/* Closes the connection (idempotent): wakes its waiter, which finds c->err. The poll handle
 * is closed before PQfinish closes the socket it watches. */
static void conn_close(pgconn_t *c, const char *kind, const char *msg) {
    if (c->state == C_CLOSED)
        return;
    set_err(c, kind, msg);
    c->state = C_CLOSED;
    loom_res_remove(&c->res);
    stop_poll(c);
    if (c->has_timer) {
        c->has_timer = 0;
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    }
    if (c->has_prep) {
        c->has_prep = 0;
        c->corked = 0;
        uv_close((uv_handle_t *)&c->prep, on_prep_closed);
    }
    if (c->pg) {
        pq.PQfinish(c->pg);
        c->pg = NULL;
    }
    while (c->head) { /* every batch in flight fails */
        pgbatch_t *b = c->head;
        c->head = b->next;
        b->failed = 1;
        batch_finish(b);
    }
    c->tail = NULL;
    if (c->task) {
        loom_task_t *t = c->task;
        c->task = NULL;
        loom_wake(t);
    }
}

static void res_close(loom_res_t *r) {
    conn_close((pgconn_t *)r, "closed", "the host is shutting down");
}

/* ---------------------------------------------------------------- polling */

static void on_poll(uv_poll_t *p, int status, int events);
static void on_idle_timer(uv_timer_t *tm);

/* Idle connections never keep the process alive; a waiter or a batch in flight does. */
static void set_ref(pgconn_t *c) {
    if (!c->poll)
        return;
    if (c->task || c->state == C_CONNECTING || c->state == C_BUSY)
        uv_ref((uv_handle_t *)&c->poll->poll);
    else
        uv_unref((uv_handle_t *)&c->poll->poll);
}

static void wake_waiter(pgconn_t *c) {
    loom_task_t *t = c->task;
    c->task = NULL;
    if (t)
        loom_wake(t);
    set_ref(c);
}

/* Watches `events` on PQsocket, with a new handle when the socket is not the one watched.
 * `fresh` forces a new handle: while connecting, libpq may close a socket and open another
 * that gets the same number, and libuv would believe the new one already registered. */
static int watch(pgconn_t *c, int events, int fresh) {
    int fd = pq.PQsocket(c->pg);
    if (fd < 0)
        return UV_EBADF;
    if (c->poll && (fresh || fd != c->fd))
        stop_poll(c);
    if (!c->poll) {
        pgpoll_t *p = malloc(sizeof *p);
        if (!p)
            return UV_ENOMEM;
        int rc = uv_poll_init(c->host->loop, &p->poll, fd);
        if (rc < 0) {
            free(p);
            return rc;
        }
        p->c = c;
        p->poll.data = p;
        c->poll = p;
        c->fd = fd;
        c->refs++;
        c->events = 0;
        loom_handle_opened(c->host);
    }
    if (events != c->events) {
        int rc = uv_poll_start(&c->poll->poll, events, on_poll);
        if (rc < 0)
            return rc;
        c->events = events;
    }
    set_ref(c);
    return 0;
}

/* A libuv failure on the socket; libpq's own message when libpq already knows the
 * connection is gone (it closes the socket itself: PQsocket is then -1). */
static void fail_uv(pgconn_t *c, int rc) {
    const char *kind = c->state == C_CONNECTING ? "connect" : "closed";
    if (c->pg && pq.PQstatus(c->pg) == CONNECTION_BAD && *pq.PQerrorMessage(c->pg))
        conn_close(c, kind, pq.PQerrorMessage(c->pg));
    else
        conn_close(c, kind, uv_strerror(rc));
}

static void connect_step(pgconn_t *c) {
    PostgresPollingStatusType st = pq.PQconnectPoll(c->pg);
    int rc = 0;
    switch (st) {
    case PGRES_POLLING_READING:
        rc = watch(c, UV_READABLE, 1);
        break;
    case PGRES_POLLING_WRITING:
        rc = watch(c, UV_WRITABLE, 1);
        break;
    case PGRES_POLLING_OK:
        if (pq.PQsetnonblocking(c->pg, 1) != 0 || pq.PQenterPipelineMode(c->pg) != 1) {
            conn_close(c, "connect", pq.PQerrorMessage(c->pg));
            return;
        }
        c->state = C_IDLE;
        rc = watch(c, UV_READABLE, 1);
        if (rc == 0)
            wake_waiter(c);
        break;
    default:
        conn_close(c, "connect", pq.PQerrorMessage(c->pg));
        return;
    }
    if (rc < 0)
        fail_uv(c, rc);
}

/* The first batch is over (its sync came): wake its waiter, or drop its results. When
 * none is left, a wait_idle waiter is woken once the cancel sent for the batch is through
 * too (cancel_after): a cancel still on its way would hit the connection's next query. */
static void batch_done(pgconn_t *c) {
    pgbatch_t *b = c->head;
    c->head = b->next;
    if (!c->head)
        c->tail = NULL;
    batch_finish(b);
    if (c->head)
        return;
    c->state = C_IDLE;
    if (c->shared && c->has_timer && c->idle_ms)
        uv_timer_start(&c->timer, on_idle_timer, c->idle_ms, 0);
    if (c->idle_wait && c->cancelling) {
        set_ref(c);
        return;
    }
    wake_waiter(c);
}

static void keep_result(pgbatch_t *b, PGresult *r) {
    if (b->op >= b->nops) { /* more than was sent: cannot happen; drop it */
        pq.PQclear(r);
        return;
    }
    PGresult **slot = &b->results[b->op];
    ExecStatusType st = pq.PQresultStatus(r);
    if (*slot && (pq.PQresultStatus(*slot) == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED)) {
        pq.PQclear(r); /* the first error of an op is what it reports */
        return;
    }
    if (*slot)
        pq.PQclear(*slot);
    *slot = r;
}

/* Reads what has come: results of the batch in order, each op's ended by a NULL, the whole
 * batch by PGRES_PIPELINE_SYNC. */
static void read_results(pgconn_t *c) {
    while (c->state == C_BUSY && c->head && !pq.PQisBusy(c->pg)) {
        PGresult *r = pq.PQgetResult(c->pg);
        if (pq.PQstatus(c->pg) == CONNECTION_BAD) {
            if (r)
                pq.PQclear(r);
            conn_close(c, "closed", pq.PQerrorMessage(c->pg));
            return;
        }
        pgbatch_t *b = c->head;
        if (!r) {
            if (!b->got)
                break; /* nothing for the next op yet (cannot happen: each has a result) */
            b->op++;
            b->got = 0;
            continue;
        }
        if (pq.PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            pq.PQclear(r);
            batch_done(c); /* the next batch's results may be here too */
            continue;
        }
        b->got = 1;
        keep_result(b, r);
    }
}

static void on_poll(uv_poll_t *p, int status, int events) {
    pgconn_t *c = ((pgpoll_t *)p->data)->c;
    if (c->state == C_CLOSED)
        return;
    if (c->state == C_CONNECTING) {
        connect_step(c); /* it reports a failed socket itself */
        return;
    }
    if (status < 0) {
        /* libuv: an error on the socket (POLLERR gives UV_EBADF); libpq tells what it was:
         * read what the server sent last (a FATAL error, a batch's results) */
        if (pq.PQconsumeInput(c->pg) && c->state == C_BUSY)
            read_results(c);
        fail_uv(c, status);
        return;
    }
    if (events & UV_WRITABLE) {
        int f = pq.PQflush(c->pg);
        if (f < 0) {
            conn_close(c, "closed", pq.PQerrorMessage(c->pg));
            return;
        }
        if (f == 0) {
            int rc = watch(c, UV_READABLE, 0);
            if (rc < 0) {
                fail_uv(c, rc);
                return;
            }
        }
    }
    if (events & UV_READABLE) {
        if (!pq.PQconsumeInput(c->pg)) {
            conn_close(c, "closed", pq.PQerrorMessage(c->pg));
            return;
        }
        if (c->state == C_BUSY)
            read_results(c);
        if (c->state == C_CLOSED)
            return;
        if (c->listening && c->task && !c->notify) {
            /* libpq has no "peek": keep it aside for notify_build */
            c->notify = pq.PQnotifies(c->pg);
            if (c->notify)
                wake_waiter(c);
        }
        if (pq.PQstatus(c->pg) == CONNECTION_BAD)
            conn_close(c, "closed", pq.PQerrorMessage(c->pg));
    }
}

/* ---------------------------------------------------------------- the cancel thread */

static void cancel_work(uv_work_t *w) {
    pgcancel_t *k = w->data;
    char errbuf[256];
    /* libpq: "PQcancel ... can safely be invoked from a signal handler" and is thread-safe;
     * it opens a connection of its own and blocks until the server has the request. */
    pq.PQcancel(k->cancel, errbuf, sizeof errbuf);
}

static void cancel_after(uv_work_t *w, int status) {
    pgcancel_t *k = w->data;
    pgconn_t *c = k->c;
    (void)status;
    pq.PQfreeCancel(k->cancel);
    free(k);
    c->cancelling = 0;
    /* PQcancel returned: the postmaster has signalled the backend, so the cancel cannot
     * reach a later query. A wait_idle waiter whose batch is over goes on. */
    if (c->idle_wait && c->task && c->state == C_IDLE)
        wake_waiter(c);
    loom_handle_closed(c->host);
    unref_conn(c);
}

/* Asks the server to cancel what the connection runs, off the loop. */
static void start_cancel(pgconn_t *c) {
    if (c->cancelling || !c->pg)
        return;
    pgcancel_t *k = calloc(1, sizeof *k);
    if (!k)
        return;
    k->cancel = pq.PQgetCancel(c->pg);
    if (!k->cancel) {
        free(k);
        return;
    }
    k->c = c;
    k->work.data = k;
    if (uv_queue_work(c->host->loop, &k->work, cancel_work, cancel_after) != 0) {
        pq.PQfreeCancel(k->cancel);
        free(k);
        return;
    }
    c->cancelling = 1;
    c->refs++;
    loom_handle_opened(c->host);
}

/* ---------------------------------------------------------------- Lua: the box */

typedef struct {
    pgconn_t *c;
} box_t;

static pgconn_t *check_conn(lua_State *L) {
    box_t *b = luaL_checkudata(L, 1, PG_META);
    if (!b->c)
        luaL_argerror(L, 1, "connection already collected");
    return b->c;
}

static int conn_gc(lua_State *L) {
    box_t *b = luaL_checkudata(L, 1, PG_META);
    pgconn_t *c = b->c;
    if (!c)
        return 0;
    b->c = NULL;
    c->task = NULL;
    conn_close(c, "closed", "connection closed");
    unref_conn(c);
    return 0;
}

/* ---------------------------------------------------------------- connect */

static int connect_build(lua_State *L, void *ud, int reason) {
    pgconn_t *c = ud;
    c->task = NULL;
    if (reason == LOOM_WAKE_TIMEOUT)
        return loom_fail(L, "timeout", "connecting to the database");
    if (c->state == C_CLOSED)
        return loom_fail(L, "connect", "%s", c->err ? strchr(c->err, ' ') + 1 : "failed");
    return 1; /* the box, left on the stack */
}

static void connect_abort(void *ud) {
    pgconn_t *c = ud;
    c->task = NULL;
    conn_close(c, "connect", "abandoned");
}

static void ignore_notice(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

/* core.pg_connect({keyword = value, ...}, timeout) -> conn | nil, "connect: ..." */
static int l_connect(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    double timeout = luaL_optnumber(L, 2, -1);
    loom_task_t *t = loom_task_self(L, "pg connect");
    loom_t *h = loom_host(L);
    if (!pq_load())
        return loom_fail(L, "connect", "%s", pq_why);
    const char *keys[64], *vals[64];
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            return luaL_argerror(L, 1, "string keys and values expected");
        if (n == 63)
            return luaL_argerror(L, 1, "too many connection parameters");
        keys[n] = lua_tostring(L, -2);
        vals[n] = lua_tostring(L, -1); /* anchored by the table */
        n++;
        lua_pop(L, 1);
    }
    keys[n] = vals[n] = NULL;
    lua_settop(L, 1);
    box_t *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->c = NULL;
    luaL_setmetatable(L, PG_META);
    pgconn_t *c = calloc(1, sizeof *c);
    if (!c)
        return loom_fail(L, "connect", "out of memory");
    c->host = h;
    c->refs = 1;
    c->fd = -1;
    c->state = C_CONNECTING;
    b->c = c;
    loom_res_add(h, &c->res, res_close);
    c->pg = pq.PQconnectStartParams(keys, vals, 0);
    if (!c->pg) {
        conn_close(c, "connect", "out of memory");
        return loom_fail(L, "connect", "out of memory");
    }
    /* libpq prints NOTICE and WARNING messages on stderr by default: drop them */
    pq.PQsetNoticeProcessor(c->pg, ignore_notice, NULL);
    if (pq.PQstatus(c->pg) == CONNECTION_BAD) {
        lua_pushnil(L);
        lua_pushfstring(L, "connect: %s", pq.PQerrorMessage(c->pg));
        conn_close(c, "connect", "failed");
        return 2;
    }
    c->task = t;
    connect_step(c); /* "call PQconnectPoll once at the start": it may fail or finish here */
    if (c->state != C_CONNECTING) {
        c->task = NULL;
        return connect_build(L, c, LOOM_WAKE_OK);
    }
    return loom_park(L, t, timeout, connect_build, connect_abort, c);
}

/* ---------------------------------------------------------------- batches */

/* Sends op `i` (the table at the top of the stack). Returns 1 or 0 (libpq refused it). */
static int send_op(lua_State *L, pgconn_t *c, int i) {
    int top = lua_gettop(L);
    if (lua_type(L, -1) != LUA_TTABLE)
        return luaL_error(L, "pg batch: op %d: table expected", i + 1);
    lua_rawgeti(L, top, 1);
    const char *kind = luaL_checkstring(L, -1);
    lua_rawgeti(L, top, 2);
    const char *a = luaL_checkstring(L, -1);
    int ok;
    if (strcmp(kind, "prepare") == 0) {
        lua_rawgeti(L, top, 3);
        ok = pq.PQsendPrepare(c->pg, a, luaL_checkstring(L, -1), 0, NULL);
    } else if (strcmp(kind, "describe") == 0) {
        ok = pq.PQsendDescribePrepared(c->pg, a);
    } else if (strcmp(kind, "exec") == 0 || strcmp(kind, "query") == 0) {
        int np = 0;
        if (lua_rawgeti(L, top, 3) == LUA_TTABLE) /* params: strings, false for NULL */
            np = (int)lua_rawlen(L, -1);
        lua_rawgeti(L, top, 4); /* binary: {true, ...} where sent in binary */
        int bin = lua_gettop(L), params = bin - 1;
        /* up to 16 parameters on the C stack; more in userdata (collected) */
        const char *vals_s[16];
        int lens_s[16], fmts_s[16];
        const char **vals = vals_s;
        int *lens = lens_s, *fmts = fmts_s;
        if (np > 16) {
            vals = lua_newuserdatauv(L, np * sizeof *vals, 0);
            lens = lua_newuserdatauv(L, np * sizeof *lens, 0);
            fmts = lua_newuserdatauv(L, np * sizeof *fmts, 0);
        }
        for (int k = 0; k < np; k++) {
            lua_rawgeti(L, params, k + 1);
            size_t len = 0;
            vals[k] = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
            lens[k] = (int)len;
            lua_pop(L, 1); /* still anchored by params */
            fmts[k] = 0;
            if (lua_type(L, bin) == LUA_TTABLE) {
                lua_rawgeti(L, bin, k + 1);
                fmts[k] = lua_toboolean(L, -1);
                lua_pop(L, 1);
            }
        }
        if (kind[0] == 'e')
            ok = pq.PQsendQueryPrepared(c->pg, a, np, np ? vals : NULL, np ? lens : NULL,
                                        np ? fmts : NULL, 0);
        else
            ok = pq.PQsendQueryParams(c->pg, a, np, NULL, np ? vals : NULL, np ? lens : NULL,
                                      np ? fmts : NULL, 0);
    } else {
        return luaL_error(L, "pg batch: op %d: unknown kind '%s'", i + 1, kind);
    }
    lua_settop(L, top - 1);
    return ok;
}

static int nibble(char x) {
    return x <= '9' ? x - '0' : (x | 0x20) - 'a' + 10;
}

/* Pushes a text-format value of type `oid` converted as docs/databases.md says. */
static void push_value(lua_State *L, const char *v, int len, Oid oid, int decode) {
    switch (oid) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
        lua_pushinteger(L, (lua_Integer)strtoll(v, NULL, 10));
        return;
    case OID_FLOAT4:
    case OID_FLOAT8:
        lua_pushnumber(L, strtod(v, NULL)); /* also "NaN", "Infinity", "-Infinity" */
        return;
    case OID_BOOL:
        lua_pushboolean(L, v[0] == 't');
        return;
    case OID_BYTEA:
        if (len >= 2 && v[0] == '\\' && v[1] == 'x') { /* hex format (the default) */
            luaL_Buffer b;
            int n = (len - 2) / 2;
            char *out = luaL_buffinitsize(L, &b, n > 0 ? n : 1);
            for (int i = 0; i < n; i++)
                out[i] = (char)(nibble(v[2 + 2 * i]) << 4 | nibble(v[3 + 2 * i]));
            luaL_pushresultsize(&b, n);
            return;
        }
        {
            size_t n = 0; /* the escape format (bytea_output = escape) */
            unsigned char *u = pq.PQunescapeBytea((const unsigned char *)v, &n);
            if (u) {
                lua_pushlstring(L, (const char *)u, n);
                pq.PQfreemem(u);
                return;
            }
        }
        break;
    case OID_JSON:
    case OID_JSONB:
        if (decode) {
            lua_pushvalue(L, decode);
            lua_pushlstring(L, v, len);
            lua_call(L, 1, 1);
            return;
        }
        break;
    }
    lua_pushlstring(L, v, len);
}

/* Pushes the rows of a result: {{column = value}, ..., affected = n}. `null` and `decode`
 * are stack indices of loom.null and the JSON decoder. */
static void push_rows(lua_State *L, PGresult *r, int null, int decode) {
    int nrows = pq.PQntuples(r), ncols = pq.PQnfields(r);
    lua_createtable(L, nrows, 1);
    const char *cmd = pq.PQcmdStatus(r), *aff = pq.PQcmdTuples(r);
    if (aff[0] && (strncmp(cmd, "INSERT", 6) == 0 || strncmp(cmd, "UPDATE", 6) == 0 ||
                   strncmp(cmd, "DELETE", 6) == 0 || strncmp(cmd, "MERGE", 5) == 0)) {
        lua_pushinteger(L, (lua_Integer)strtoll(aff, NULL, 10));
        lua_setfield(L, -2, "affected");
    }
    for (int i = 0; i < nrows; i++) {
        lua_createtable(L, 0, ncols);
        for (int k = 0; k < ncols; k++) {
            if (pq.PQgetisnull(r, i, k))
                lua_pushvalue(L, null);
            else
                push_value(L, pq.PQgetvalue(r, i, k), pq.PQgetlength(r, i, k), pq.PQftype(r, k),
                           decode);
            lua_setfield(L, -2, pq.PQfname(r, k));
        }
        lua_rawseti(L, -2, i + 1);
    }
}

/* Pushes "pg: SQLSTATE message" for an error result. */
static void push_pg_error(lua_State *L, PGresult *r) {
    if (pq.PQresultStatus(r) == PGRES_PIPELINE_ABORTED) {
        lua_pushliteral(L, "pg: aborted: an earlier command of the pipeline failed");
        return;
    }
    const char *state = pq.PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *msg = pq.PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    if (!msg)
        msg = pq.PQresultErrorMessage(r);
    size_t ml = strlen(msg);
    while (ml > 0 && msg[ml - 1] == '\n')
        ml--;
    lua_pushfstring(L, "pg: %s ", state ? state : "XX000");
    lua_pushlstring(L, msg, ml);
    lua_concat(L, 2);
}

/* Stack: conn ops timeout null decode. Pushes {result per op}: rows, true (prepare), {param
 * type oids} (describe), or the error message (a string). On a timeout the batch is not
 * touched: batch_abort left it to the connection, which may have freed it since. */
static int batch_build(lua_State *L, void *ud, int reason) {
    pgbatch_t *b = ud;
    if (reason == LOOM_WAKE_TIMEOUT)
        return loom_fail(L, "timeout", "query ran longer than %f s", lua_tonumber(L, 3));
    pgconn_t *c = b->c;
    if (b->failed) {
        done_unlink(b);
        batch_free(b);
        lua_pushnil(L);
        lua_pushstring(L, c->err ? c->err : "closed: connection closed");
        return 2;
    }
    int null = 4, decode = lua_isfunction(L, 5) ? 5 : 0;
    /* b stays on the done list while Lua runs (a raise leaves it to the connection's end) */
    lua_createtable(L, b->nops, 0);
    for (int i = 0; i < b->nops; i++) {
        PGresult *r = b->results[i];
        if (!r) {
            lua_pushliteral(L, "pg: no result");
        } else {
            switch (pq.PQresultStatus(r)) {
            case PGRES_TUPLES_OK:
            case PGRES_SINGLE_TUPLE:
                push_rows(L, r, null, decode);
                break;
            case PGRES_COMMAND_OK:
                lua_rawgeti(L, 2, i + 1);
                lua_rawgeti(L, -1, 1);
                if (strcmp(lua_tostring(L, -1), "describe") == 0) {
                    lua_pop(L, 2);
                    int np = pq.PQnparams(r);
                    lua_createtable(L, np, 0);
                    for (int k = 0; k < np; k++) {
                        lua_pushinteger(L, pq.PQparamtype(r, k));
                        lua_rawseti(L, -2, k + 1);
                    }
                } else {
                    lua_pop(L, 2);
                    push_rows(L, r, null, decode);
                }
                break;
            case PGRES_EMPTY_QUERY:
                lua_newtable(L);
                break;
            default:
                push_pg_error(L, r);
            }
        }
        lua_rawseti(L, -2, i + 1);
    }
    done_unlink(b);
    batch_free(b);
    return 1;
}

/* The waiter went away while its batch was in flight: the batch runs to its sync and its
 * results are dropped. A dedicated connection asks the server to cancel it; a shared one
 * cannot (the cancel would hit whichever query runs when it arrives, maybe another task's). */
static void batch_abort(void *ud) {
    pgbatch_t *b = ud;
    b->task = NULL;
    b->orphaned = 1;
    if (!b->c->shared)
        start_cancel(b->c);
}

static void on_prep(uv_prepare_t *p) {
    pgconn_t *c = p->data;
    int off = 0;
    uv_prepare_stop(p);
    c->corked = 0;
    if (c->pg && pq.PQsocket(c->pg) >= 0)
        setsockopt(pq.PQsocket(c->pg), IPPROTO_TCP, TCP_CORK, &off, sizeof off);
    set_ref(c);
}

/* Corks a shared connection's socket until the loop's prepare phase: the batches of every
 * task of this turn leave together. */
static void cork(pgconn_t *c) {
    int on = 1;
    if (c->corked || c->no_cork)
        return;
    if (setsockopt(pq.PQsocket(c->pg), IPPROTO_TCP, TCP_CORK, &on, sizeof on) != 0) {
        c->no_cork = 1;
        return;
    }
    if (!c->has_prep) {
        uv_prepare_init(c->host->loop, &c->prep);
        c->prep.data = c;
        c->has_prep = 1;
        c->refs++;
        loom_handle_opened(c->host);
        uv_unref((uv_handle_t *)&c->prep);
    }
    uv_prepare_start(&c->prep, on_prep);
    c->corked = 1;
}

static int no_conn(lua_State *L, pgconn_t *c) {
    lua_pushnil(L);
    lua_pushstring(L, c->err ? c->err : "closed: connection closed");
    return 2;
}

/* conn:batch({op, ...}, timeout, null, decode) -> {result, ...} | nil, err. Runs the ops in
 * one pipeline (one round trip): {"prepare", name, sql}, {"describe", name},
 * {"exec", name, {param...}, {binary...}}, {"query", sql, {param...}, {binary...}}. */
static int l_batch(lua_State *L) {
    pgconn_t *c = check_conn(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    double timeout = luaL_optnumber(L, 3, -1);
    lua_settop(L, 5);
    loom_task_t *t = loom_task_self(L, "pg query");
    if (c->state == C_CLOSED)
        return no_conn(L, c);
    if (c->task || !(c->state == C_IDLE || (c->state == C_BUSY && c->shared)))
        return luaL_error(L, "pg: the connection is busy");
    int n = (int)lua_rawlen(L, 2);
    luaL_argcheck(L, n >= 1 && n <= MAX_OPS, 2, "1 to 10000 ops expected");
    /* the ops are checked before anything is sent: a bad one raises with the pipeline clean */
    for (int i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 2, i) != LUA_TTABLE)
            return luaL_error(L, "pg batch: op %d: table expected", i);
        lua_pop(L, 1);
    }
    pgbatch_t *b = calloc(1, sizeof *b + n * sizeof b->results[0]);
    if (!b)
        return luaL_error(L, "out of memory");
    b->c = c;
    b->nops = n;
    if (c->has_timer)
        uv_timer_stop(&c->timer);
    if (c->shared)
        cork(c);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        if (!send_op(L, c, i)) {
            free(b);
            conn_close(c, "closed", pq.PQerrorMessage(c->pg));
            return no_conn(L, c);
        }
        /* send_op popped the op */
    }
    if (!pq.PQpipelineSync(c->pg)) {
        free(b);
        conn_close(c, "closed", pq.PQerrorMessage(c->pg));
        return no_conn(L, c);
    }
    if (c->tail)
        c->tail->next = b;
    else
        c->head = b;
    c->tail = b;
    c->state = C_BUSY;
    b->task = t;
    int f = pq.PQflush(c->pg);
    int rc = f < 0 ? UV_EPIPE : watch(c, f ? UV_READABLE | UV_WRITABLE : UV_READABLE, 0);
    if (rc < 0) {
        b->task = NULL; /* dropped by conn_close, with the others in flight */
        if (f < 0)
            conn_close(c, "closed", pq.PQerrorMessage(c->pg));
        else
            fail_uv(c, rc);
        return no_conn(L, c);
    }
    return loom_park(L, t, timeout, batch_build, batch_abort, b);
}

/* conn:share(): many batches may be in flight at once (automatic pipelining); see pgconn. */
static int l_share(lua_State *L) {
    pgconn_t *c = check_conn(L);
    c->shared = 1;
    return 0;
}

/* ---------------------------------------------------------------- waiting */

static int idle_build(lua_State *L, void *ud, int reason) {
    pgconn_t *c = ud;
    c->task = NULL;
    c->idle_wait = 0;
    if (reason == LOOM_WAKE_TIMEOUT)
        return loom_fail(L, "timeout", "the cancelled query did not end");
    if (c->state == C_CLOSED)
        return no_conn(L, c);
    lua_pushboolean(L, 1);
    return 1;
}

static void idle_abort(void *ud) {
    pgconn_t *c = ud;
    c->task = NULL;
    c->idle_wait = 0;
}

/* conn:wait_idle(timeout) -> true | nil, err: waits for a batch left running (its waiter
 * timed out or was cancelled) to end, and for the cancel sent for it to be through. */
static int l_wait_idle(lua_State *L) {
    pgconn_t *c = check_conn(L);
    double timeout = luaL_optnumber(L, 2, -1);
    loom_task_t *t = loom_task_self(L, "pg wait_idle");
    if (c->task)
        return luaL_error(L, "pg: the connection is busy");
    if (c->state != C_BUSY && !(c->cancelling && c->state == C_IDLE))
        return idle_build(L, c, LOOM_WAKE_OK);
    c->task = t;
    c->idle_wait = 1;
    set_ref(c);
    return loom_park(L, t, timeout, idle_build, idle_abort, c);
}

static int push_notify(lua_State *L, PGnotify *n) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, n->relname);
    lua_setfield(L, -2, "channel");
    lua_pushstring(L, n->extra);
    lua_setfield(L, -2, "payload");
    lua_pushinteger(L, n->be_pid);
    lua_setfield(L, -2, "pid");
    pq.PQfreemem(n);
    return 1;
}

static int notify_build(lua_State *L, void *ud, int reason);

static void notify_abort(void *ud) {
    pgconn_t *c = ud;
    c->task = NULL;
    c->listening = 0;
    set_ref(c);
}

static int notify_wait(lua_State *L, pgconn_t *c, double timeout) {
    loom_task_t *t = loom_task_self(L, "pg listen");
    c->task = t;
    c->listening = 1;
    int rc = watch(c, c->events ? c->events : UV_READABLE, 0);
    if (rc < 0) {
        c->task = NULL;
        fail_uv(c, rc);
        return no_conn(L, c);
    }
    return loom_park(L, t, timeout, notify_build, notify_abort, c);
}

static int notify_build(lua_State *L, void *ud, int reason) {
    pgconn_t *c = ud;
    c->task = NULL;
    c->listening = 0;
    if (reason == LOOM_WAKE_TIMEOUT)
        return loom_fail(L, "timeout", "no notification");
    if (c->state == C_CLOSED)
        return no_conn(L, c);
    PGnotify *n = c->notify ? c->notify : pq.PQnotifies(c->pg);
    c->notify = NULL;
    set_ref(c);
    if (n)
        return push_notify(L, n);
    return loom_fail(L, "closed", "no notification"); /* woken without one: cannot happen */
}

/* conn:notification([timeout]) -> {channel, payload, pid} | nil, err */
static int l_notification(lua_State *L) {
    pgconn_t *c = check_conn(L);
    double timeout = luaL_optnumber(L, 2, -1);
    lua_settop(L, 2);
    if (c->state == C_CLOSED)
        return no_conn(L, c);
    if (c->task)
        return luaL_error(L, "pg: the connection is busy");
    PGnotify *n = c->notify ? c->notify : pq.PQnotifies(c->pg);
    c->notify = NULL;
    if (n)
        return push_notify(L, n);
    return notify_wait(L, c, timeout);
}

/* ---------------------------------------------------------------- small methods */

static void on_idle_timer(uv_timer_t *tm) {
    conn_close(tm->data, "closed", "idle connection closed (idle_timeout)");
}

/* conn:idle(seconds): closes the connection when it stays unused that long (an unreferenced
 * timer: it does not keep the process alive). The next batch stops the timer. */
static int l_idle(lua_State *L) {
    pgconn_t *c = check_conn(L);
    double secs = luaL_checknumber(L, 2);
    c->idle_ms = (uint64_t)(secs * 1000);
    if (c->state != C_IDLE)
        return 0;
    if (!c->has_timer) {
        uv_timer_init(c->host->loop, &c->timer);
        c->timer.data = c;
        c->has_timer = 1;
        c->refs++;
        loom_handle_opened(c->host);
        uv_unref((uv_handle_t *)&c->timer);
    }
    uv_timer_start(&c->timer, on_idle_timer, (uint64_t)(secs * 1000), 0);
    set_ref(c);
    return 0;
}

/* conn:status([probe]) -> "idle" | "busy" | "connecting" | "closed", transaction status
 * ("idle", "active", "intrans", "inerror", "unknown"). With `probe`, an idle connection
 * reads its socket first (a recv: the pool does it only when it hands out an idle one). */
static int l_status(lua_State *L) {
    pgconn_t *c = check_conn(L);
    static const char *const states[] = {"connecting", "idle", "busy", "closed"};
    /* An idle connection the server closed (and the loop has not looked at yet): reading
     * what is there tells, without waiting (the socket is non-blocking). */
    if (lua_toboolean(L, 2) && c->state == C_IDLE && !c->task &&
        (!pq.PQconsumeInput(c->pg) || pq.PQstatus(c->pg) == CONNECTION_BAD))
        conn_close(c, "closed", pq.PQerrorMessage(c->pg));
    lua_pushstring(L, states[c->state]);
    if (!c->pg) {
        lua_pushliteral(L, "unknown");
        return 2;
    }
    switch (pq.PQtransactionStatus(c->pg)) {
    case PQTRANS_IDLE:
        lua_pushliteral(L, "idle");
        break;
    case PQTRANS_ACTIVE:
        lua_pushliteral(L, "active");
        break;
    case PQTRANS_INTRANS:
        lua_pushliteral(L, "intrans");
        break;
    case PQTRANS_INERROR:
        lua_pushliteral(L, "inerror");
        break;
    default:
        lua_pushliteral(L, "unknown");
    }
    return 2;
}

static int l_close(lua_State *L) {
    pgconn_t *c = check_conn(L);
    if (c->task) {
        /* a waiter (a listener) finds the connection closed */
        set_err(c, "closed", "connection closed");
    }
    conn_close(c, "closed", "connection closed");
    return 0;
}

/* conn:escape_identifier(s) -> "quoted" (PQescapeIdentifier: no server round trip) */
static int l_escape_identifier(lua_State *L) {
    pgconn_t *c = check_conn(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    if (!c->pg)
        return no_conn(L, c);
    char *q = pq.PQescapeIdentifier(c->pg, s, len);
    if (!q)
        return luaL_error(L, "pg: %s", pq.PQerrorMessage(c->pg));
    lua_pushstring(L, q);
    pq.PQfreemem(q);
    return 1;
}

static int l_backend_pid(lua_State *L) {
    pgconn_t *c = check_conn(L);
    lua_pushinteger(L, c->pg ? pq.PQbackendPID(c->pg) : 0);
    return 1;
}

static int l_tostring(lua_State *L) {
    box_t *b = luaL_checkudata(L, 1, PG_META);
    lua_pushfstring(L, PG_META " (%p)", (void *)b->c);
    return 1;
}

static const luaL_Reg conn_methods[] = {
    {"batch", l_batch},
    {"share", l_share},
    {"wait_idle", l_wait_idle},
    {"notification", l_notification},
    {"idle", l_idle},
    {"status", l_status},
    {"close", l_close},
    {"escape_identifier", l_escape_identifier},
    {"backend_pid", l_backend_pid},
    {NULL, NULL},
};

static const luaL_Reg conn_meta[] = {
    {"__gc", conn_gc},
    {"__close", conn_gc},
    {"__tostring", l_tostring},
    {NULL, NULL},
};

static const luaL_Reg pg_funcs[] = {
    {"pg_connect", l_connect},
    {NULL, NULL},
};

int loom_open_pg(lua_State *L) {
    luaL_newmetatable(L, PG_META);
    luaL_setfuncs(L, conn_meta, 0);
    luaL_newlib(L, conn_methods);
    lua_setfield(L, -2, "__index"); /* mt.__index = methods */
    lua_pop(L, 1);
    luaL_setfuncs(L, pg_funcs, 0);
    lua_pushlightuserdata(L, NULL); /* core.null: the same value as lua-cjson's cjson.null */
    lua_setfield(L, -2, "null");
    return 0;
}
#endif /* LOOM_NO_PG */
