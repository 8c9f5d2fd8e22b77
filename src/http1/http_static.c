/*
 * http_static.c - the file half of app:static (lua/loom/static.lua): every file operation on
 * libuv's thread pool, never on the loop, and the body of a file answer sent through the
 * server connection (http_server.h) without passing through Lua.
 *
 * core.static_load(path, max) stats a path and, for a regular file of at most `max` bytes,
 * reads it whole, in one thread-pool job (static.lua keeps small files in memory with it).
 * core.static_open(path) opens a file and fstats it in one job, and returns a sender; once
 * the handler has sent the head (req:stream with the Content-Length), sender:send(box) moves
 * the body:
 *   - plain HTTP, the sock's write queue empty: sendfile(2) in the thread pool, on the
 *     socket's own descriptor, which the job holds (loom_sock_hold: a close of the
 *     connection meanwhile waits for the job, so the number cannot go to another socket),
 *     nonblocking as the socket is, so a slow client stops it with EAGAIN rather than
 *     holding a pool thread;
 *   - after EAGAIN: a chunk read in the thread pool and written through the sock's write
 *     queue (loom_conn_write), then a wait for the queue to drain before the next sendfile,
 *     so no byte of the file overtakes a queued one;
 *   - HTTPS (or a corked sock): chunks read in the thread pool and written through the sock
 *     (which encrypts), waiting for the queue to fall under its high-water mark.
 * Each call parks at most once; static.lua calls send until it says the body is out. The
 * body counts against the answer's Content-Length (c->out_left), so a file that shrinks as
 * it is sent leaves the answer short, and the engine closes the connection at its end.
 *
 * Knows nothing of routing, headers or caching: static.lua decides what to send.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <lauxlib.h>
#include "http_server.h"
#include "fail.h"

#define FILE_MT "loom.static_file"
#define SENDER_MT "loom.static_sender"
#define FALLBACK_CHUNK (64 * 1024) /* read after sendfile met a full socket */
#define TLS_CHUNK (128 * 1024)     /* read per step on HTTPS */
#define NOWAIT_LIMIT (64 * 1024)   /* the most a send reads on the loop (RWF_NOWAIT) */

enum { OP_LOAD, OP_OPEN, OP_SEND, OP_READ };

/* One job for the thread pool. It belongs to its task while the task waits, and to itself
 * once the task let go (cancelled): work_done then frees it and closes what it opened. */
typedef struct {
    uv_work_t req;
    loom_t *host;
    loom_task_t *task; /* NULL once the task let go */
    int op, done;
    int fd;            /* the file (opened by OP_LOAD / OP_OPEN, else the sender's) */
    int own_fd;        /* fd was opened here and not yet handed on */
    int sockfd;        /* OP_SEND: the socket's descriptor (of sock) */
    loom_sock_t *sock; /* OP_SEND: held while the job runs, released on the loop */
    int64_t off;
    size_t count; /* bytes wanted (send, read), or the most OP_LOAD reads */
    int64_t max;  /* OP_LOAD: read files up to this size (< 0: stat only) */
    int keep;     /* OP_LOAD: keep a larger regular file open */
    int err;      /* a libuv error, or 0 */
    int again;    /* OP_SEND stopped on a full socket */
    size_t got;   /* bytes sent or read */
    struct stat st;
    char *buf;
    char path[]; /* OP_LOAD, OP_OPEN */
} work_t;

/* An open file, shared by the answers that send it (static.lua keeps one per large file
 * it remembers). Closing it never disturbs a send: each sender has its own duplicate. */
typedef struct {
    int fd; /* -1 once closed */
} file_t;

/* One answer's body: its own duplicate of the file's descriptor, where it is, what is left. */
typedef struct {
    int fd; /* -1 once closed */
    int64_t off;
    uint64_t left;
    int need_read;  /* the next step reads a chunk (sendfile met EAGAIN) */
    int nowait_max; /* bodies up to this size may be read on the loop from the page cache */
    work_t *w;      /* in flight, or NULL */
    loom_task_t *task;
    loom_reqbox_t *box; /* while parked: the request (on the task's stack) */
} sender_t;

/* ---------------------------------------------------------------- the pool side */

static int sys_err(void) {
    return uv_translate_sys_error(errno);
}

/* Reads up to count bytes at off into buf; stops early at the file's end. */
static void read_at(work_t *w, int64_t off, size_t count) {
    w->got = 0;
    while (w->got < count) {
        ssize_t n = pread(w->fd, w->buf + w->got, count - w->got, (off_t)(off + (int64_t)w->got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            w->err = sys_err();
            return;
        }
        if (n == 0)
            return;
        w->got += (size_t)n;
    }
}

static void do_load(work_t *w) {
    if (stat(w->path, &w->st) != 0) {
        w->err = sys_err();
        return;
    }
    int small = w->max >= 0 && w->st.st_size <= w->max;
    if (!S_ISREG(w->st.st_mode) || (!small && !w->keep))
        return;
    w->fd = open(w->path, O_RDONLY | O_CLOEXEC);
    if (w->fd < 0) {
        w->err = sys_err();
        return;
    }
    w->own_fd = 1;
    /* what is read or kept is the file opened: its own stat (it may have changed since) */
    if (fstat(w->fd, &w->st) != 0 || !S_ISREG(w->st.st_mode)) {
        w->err = errno ? sys_err() : UV_EISDIR;
        return;
    }
    if (w->max < 0 || w->st.st_size > w->max)
        return; /* kept open, not read */
    w->buf = malloc((size_t)w->st.st_size + 1);
    if (!w->buf) {
        w->err = UV_ENOMEM;
        return;
    }
    read_at(w, 0, (size_t)w->st.st_size);
}

static void do_send(work_t *w) {
    w->got = 0;
    while (w->got < w->count) {
        off_t off = (off_t)(w->off + (int64_t)w->got);
        size_t want = w->count - w->got;
        ssize_t n = sendfile(w->sockfd, w->fd, &off, want > (1u << 30) ? (1u << 30) : want);
        if (n > 0) {
            w->got += (size_t)n;
            continue;
        }
        if (n == 0) /* the file ends before the range does: it shrank */
            return;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            w->again = 1;
        else
            w->err = sys_err();
        return;
    }
}

static void work_run(uv_work_t *req) {
    work_t *w = (work_t *)req;
    switch (w->op) {
    case OP_LOAD:
        do_load(w);
        break;
    case OP_OPEN:
        w->fd = open(w->path, O_RDONLY | O_CLOEXEC);
        if (w->fd < 0) {
            w->err = sys_err();
            break;
        }
        w->own_fd = 1;
        if (fstat(w->fd, &w->st) != 0)
            w->err = sys_err();
        else if (!S_ISREG(w->st.st_mode))
            w->err = UV_EISDIR;
        break;
    case OP_SEND:
        do_send(w);
        break;
    case OP_READ:
        read_at(w, w->off, w->count);
        break;
    }
}

/* ---------------------------------------------------------------- the loop side */

static void work_free(work_t *w) {
    if (w->own_fd && w->fd >= 0)
        close(w->fd); /* a regular file's close does not wait on the disk */
    free(w->buf);
    free(w);
}

static void work_done(uv_work_t *req, int status) {
    work_t *w = (work_t *)req;
    loom_handle_closed(w->host);
    w->done = 1;
    if (status == UV_ECANCELED && !w->err)
        w->err = UV_ECANCELED;
    if (w->sock) { /* a close meanwhile happens now; the owner is freed only later */
        loom_sock_release(w->sock);
        w->sock = NULL;
        w->sockfd = -1;
    }
    if (!w->task) {
        work_free(w);
        return;
    }
    loom_wake(w->task);
}

static work_t *work_new(lua_State *L, int op, const char *path) {
    size_t plen = path ? strlen(path) + 1 : 0;
    work_t *w = calloc(1, sizeof *w + plen);
    if (!w)
        luaL_error(L, "out of memory");
    w->host = loom_host(L);
    w->op = op;
    w->fd = -1;
    w->sockfd = -1;
    if (path)
        memcpy(w->path, path, plen);
    return w;
}

/* Queues w for the thread pool; 0 or a libuv error (then w is freed). */
static int work_start(work_t *w) {
    int rc = uv_queue_work(w->host->loop, &w->req, work_run, work_done);
    if (rc < 0) {
        if (w->sock)
            loom_sock_release(w->sock);
        free(w->buf);
        free(w);
        return rc;
    }
    loom_handle_opened(w->host); /* teardown waits for the pool as for a handle */
    return 0;
}

/* A task that stops waiting (cancelled) leaves the job to finish on its own. */
static void work_abandon(work_t *w) {
    w->task = NULL;
    if (w->done)
        work_free(w);
    else
        uv_cancel((uv_req_t *)&w->req); /* fails once it runs: work_done frees it then */
}

static void push_stat(lua_State *L, const struct stat *st) {
    lua_createtable(L, 0, 5);
    lua_pushstring(L, S_ISREG(st->st_mode) ? "file" : S_ISDIR(st->st_mode) ? "directory" : "other");
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)st->st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)st->st_mtim.tv_sec);
    lua_setfield(L, -2, "mtime");
    lua_pushinteger(L, (lua_Integer)st->st_mtim.tv_nsec);
    lua_setfield(L, -2, "mtime_ns");
    lua_pushinteger(L, (lua_Integer)st->st_ino);
    lua_setfield(L, -2, "ino");
}

static int fail_fs(lua_State *L, int err, const char *path) {
    return loom_fail(L, "fs", "%s %s (%s)", uv_err_name(err), uv_strerror(err), path);
}

/* ---------------------------------------------------------------- files */

/* Pushes a file object owning fd. */
static void push_file(lua_State *L, int fd) {
    file_t *f = lua_newuserdatauv(L, sizeof *f, 0);
    f->fd = fd;
    luaL_setmetatable(L, FILE_MT);
}

/* Pushes the result of an OP_LOAD or OP_OPEN job: stat, contents | nil, file | nil. */
static int load_build(lua_State *L, void *ud, int reason) {
    work_t *w = ud;
    (void)reason; /* no deadline: only OK comes here (a cancel aborts) */
    int n;
    if (w->err) {
        n = fail_fs(L, w->err, w->path);
    } else {
        push_stat(L, &w->st);
        if (w->buf && w->got == (size_t)w->st.st_size)
            lua_pushlstring(L, w->buf, w->got);
        else
            lua_pushnil(L); /* not read, or changed as it was read */
        if (w->own_fd && w->fd >= 0 && !w->buf) {
            push_file(L, w->fd);
            w->own_fd = 0; /* the file object closes it now */
        } else {
            lua_pushnil(L);
        }
        n = 3;
    }
    work_free(w);
    return n;
}

static void load_abort(void *ud) {
    work_abandon(ud);
}

static int start_load(lua_State *L, int op, const char *path, lua_Integer max, int keep) {
    loom_task_t *t = loom_task_self(L, "static_load");
    work_t *w = work_new(L, op, path);
    w->max = max;
    w->keep = keep;
    w->task = t;
    int rc = work_start(w);
    if (rc < 0)
        return fail_fs(L, rc, path);
    return loom_park(L, t, -1, load_build, load_abort, w);
}

/* core.static_load(path, max [, keep]) -> {type, size, mtime, mtime_ns, ino}, contents,
 * file | nil, err. One thread-pool job: the stat; for a regular file of at most max bytes
 * its contents (a string), read from the descriptor the stat then describes; with keep, a
 * larger regular file opened (a file object, its stat from that descriptor). max < 0: only
 * the stat (or, with keep, the open). */
static int l_static_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lua_Integer max = luaL_checkinteger(L, 2);
    return start_load(L, OP_LOAD, path, max, lua_toboolean(L, 3));
}

/* core.static_open(path) -> {type, size, mtime, mtime_ns, ino}, nil, file | nil, err: the
 * file opened and fstat'ed in one thread-pool job (a directory or a device is EISDIR). */
static int l_static_open(lua_State *L) {
    return start_load(L, OP_OPEN, luaL_checkstring(L, 1), -1, 1);
}

static file_t *check_file(lua_State *L) {
    return luaL_checkudata(L, 1, FILE_MT);
}

/* file:close(): closes the descriptor now (also __close and __gc). Senders made from it
 * keep their own. */
static int file_close(lua_State *L) {
    file_t *f = check_file(L);
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
    return 0;
}

/* file:sender() -> a sender with its own duplicate of the descriptor | nil, err (also once
 * the file is closed: the cache let it go meanwhile) */
static int file_sender(lua_State *L) {
    file_t *f = check_file(L);
    if (f->fd < 0)
        return loom_fail(L, "fs", "the file is closed");
    int fd = fcntl(f->fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return loom_fail_uv(L, "fs", sys_err(), NULL);
    sender_t *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    s->fd = fd;
    luaL_setmetatable(L, SENDER_MT);
    return 1;
}

/* file:cached(offset, n) -> the n bytes at offset, read on the loop with preadv2(RWF_NOWAIT)
 * (cached_write says why that never waits for the disk), or nil when they are not all in
 * the page cache (or the file is shorter, or closed). n at most 64 KiB. For a whole answer
 * of a small range: head and body then leave in one write. */
static int file_cached(lua_State *L) {
    file_t *f = check_file(L);
    lua_Integer off = luaL_checkinteger(L, 2), n = luaL_checkinteger(L, 3);
    luaL_argcheck(L, off >= 0, 2, "non-negative offset expected");
    luaL_argcheck(L, n >= 0 && n <= NOWAIT_LIMIT, 3, "0 to 65536 bytes expected");
    if (f->fd < 0)
        return 0;
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)n);
    struct iovec iov = {p, (size_t)n};
    ssize_t got = n > 0 ? preadv2(f->fd, &iov, 1, (off_t)off, RWF_NOWAIT) : 0;
    luaL_pushresultsize(&b, got == n ? (size_t)n : 0);
    if (got != n) {
        lua_pop(L, 1);
        lua_pushnil(L);
    }
    return 1;
}

/* file:respond(box, status, headers, offset, n) -> true once the whole answer is written:
 * status and headers as a handler's, the n bytes at offset as its body, read on the loop
 * with preadv2(RWF_NOWAIT) into a buffer on the C stack and written with the head in one
 * write (as file:cached's string would be, without a 64 KiB string to allocate, copy and
 * collect per answer); false when they are not all in the page cache (or the file is
 * shorter); nil when box is not an HTTP/1 request's, or its answer cannot be given so
 * (begun, failed, the connection going, the file closed, an invalid header): file:cached
 * then, and the engine's own checks. n at most 64 KiB. */
static int file_respond(lua_State *L) {
    file_t *f = check_file(L);
    lua_Integer status = luaL_checkinteger(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_Integer off = luaL_checkinteger(L, 5), n = luaL_checkinteger(L, 6);
    luaL_argcheck(L, off >= 0, 5, "non-negative offset expected");
    luaL_argcheck(L, n >= 0 && n <= NOWAIT_LIMIT, 6, "0 to 65536 bytes expected");
    loom_reqbox_t *box = luaL_testudata(L, 2, REQBOX_MT);
    loom_conn_t *c = box ? box->c : NULL;
    if (!c || c->state == C_CLOSING || f->fd < 0)
        return 0;
    char buf[NOWAIT_LIMIT];
    struct iovec iov = {buf, (size_t)n};
    ssize_t got = n > 0 ? preadv2(f->fd, &iov, 1, (off_t)off, RWF_NOWAIT) : 0;
    if (got != n) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (loom_conn_respond_body(c, L, (int)status, 4, buf, (size_t)n) != 0)
        return 0;
    lua_pushboolean(L, 1);
    return 1;
}

/* core.static_plain(box) -> true when box is an HTTP/1 request whose head holds no Range,
 * If-None-Match or If-Modified-Since: a whole file answered as it is, told without making
 * req.headers (a table of every header) for three fields that are seldom there; false
 * otherwise (HTTP/2, a finished request: the caller then looks at req.headers). */
static int l_static_plain(lua_State *L) {
    loom_reqbox_t *box = luaL_testudata(L, 1, REQBOX_MT);
    loom_conn_t *c = box && !box->h2 ? box->c : NULL;
    const loom_head_t *h = c ? c->msg.head : NULL;
    int plain = h != NULL;
    for (int i = 0; plain && i < h->nhdrs; i++) {
        const char *n = LOOM_HEAD_NAME(h, i);
        size_t len = h->hdrs[i].name_len;
        if ((len == 5 && memcmp(n, "range", 5) == 0) ||
            (len == 13 && memcmp(n, "if-none-match", 13) == 0) ||
            (len == 17 && memcmp(n, "if-modified-since", 17) == 0))
            plain = 0;
    }
    lua_pushboolean(L, plain);
    return 1;
}

/* ---------------------------------------------------------------- senders */

static void sender_close_fd(sender_t *s) {
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

static sender_t *check_sender(lua_State *L) {
    return luaL_checkudata(L, 1, SENDER_MT);
}

/* Whether the connection is gone for the sender (the box emptied, or closing). */
static loom_conn_t *sender_conn(lua_State *L, int idx) {
    loom_reqbox_t *box = luaL_checkudata(L, idx, REQBOX_MT);
    loom_conn_t *c = box->c;
    return c && c->state != C_CLOSING ? c : NULL;
}

/* The task no longer waits in the connection's writer slot. */
static void release_waiter(loom_conn_t *c, loom_task_t *t) {
    if (c && c->waiter == t)
        c->waiter = NULL;
}

/* The task stops waiting for s's job (cancelled, or the connection ended): the job runs on
 * alone and closes the file when it is done, since it may still be reading it (a number
 * closed here could be another file's by then). */
static void sender_abandon(sender_t *s) {
    work_t *w = s->w;
    s->w = NULL;
    if (!w)
        return;
    if (!w->done) {
        w->own_fd = 1;
        s->fd = -1;
    }
    work_abandon(w);
}

/* The body went out short of the answer's length (or the file shrank): static.lua then
 * returns, and the engine closes the connection after the short answer. */
static void count_out(loom_conn_t *c, size_t n) {
    if (c->out_sized)
        c->out_left = c->out_left > n ? c->out_left - n : 0;
}

static int step_result(lua_State *L, sender_t *s) {
    if (s->left == 0)
        sender_close_fd(s);
    lua_pushboolean(L, s->left == 0);
    return 1;
}

static int send_build(lua_State *L, void *ud, int reason) {
    sender_t *s = ud;
    work_t *w = s->w;
    (void)reason;
    s->w = NULL;
    loom_conn_t *c = sender_conn(L, 2);
    release_waiter(c, s->task);
    if (!w->done) { /* only work_done wakes it; kept for safety */
        s->w = w;
        sender_abandon(s);
        return loom_fail(L, "closed", "the client has gone");
    }
    int err = w->err, op = w->op;
    size_t got = w->got;
    if (!err && w->op == OP_SEND) {
        s->off += (int64_t)got;
        s->left -= got;
        if (c) {
            c->sent += got;
            count_out(c, got);
        }
        s->need_read = w->again;
        if (!w->again && s->left > 0 && got < w->count)
            err = UV_EOF; /* the file ends early */
    } else if (!err && w->op == OP_READ) {
        if (got == 0) {
            err = UV_EOF;
        } else if (c) {
            uv_buf_t b = uv_buf_init(w->buf, (unsigned)got);
            int rc = loom_conn_write(c, &b, 1); /* the sock copies what the kernel leaves */
            count_out(c, got);
            s->off += (int64_t)got;
            s->left -= got;
            s->need_read = 0;
            if (rc < 0)
                err = rc;
        }
    }
    work_free(w);
    if (!c)
        return loom_fail(L, "closed", "the client has gone");
    if (err == UV_EOF)
        return loom_fail(L, "fs", "the file shrank while it was sent");
    if (err)
        return loom_fail_uv(L, op == OP_SEND ? "closed" : "fs", err, NULL);
    return step_result(L, s);
}

static void send_abort(void *ud) {
    sender_t *s = ud;
    release_waiter(s->box ? s->box->c : NULL, s->task);
    sender_abandon(s);
}

static int drained_build(lua_State *L, void *ud, int reason) {
    sender_t *s = ud;
    loom_conn_t *c = sender_conn(L, 2);
    release_waiter(c, s->task);
    if (!c)
        return loom_fail(L, "closed", "the client has gone");
    if (reason == LOOM_WAKE_TIMEOUT) { /* the client stopped reading */
        loom_conn_close(c);
        return loom_fail(L, "timeout", "the client read nothing for %g s", c->srv->send_timeout);
    }
    if (loom_sock_error(&c->sock))
        return loom_fail_uv(L, "closed", loom_sock_error(&c->sock), NULL);
    lua_pushboolean(L, 0);
    return 1;
}

static void drained_abort(void *ud) {
    sender_t *s = ud;
    release_waiter(s->box ? s->box->c : NULL, s->task);
}

/* A body of at most nowait_max bytes whose pages are all in the page cache: read on the
 * loop with preadv2(RWF_NOWAIT), which "do[es] not wait for data which is not immediately
 * available" (preadv2(2)): it never waits for the disk, and fails with EAGAIN (or
 * EOPNOTSUPP where the file system cannot tell) instead; then written through the sock like
 * any answer. 0 when the whole rest went so, 1 to take the thread-pool way instead, or the
 * write's failure. */
static int cached_write(loom_conn_t *c, sender_t *s) {
    char buf[NOWAIT_LIMIT];
    size_t want = (size_t)s->left;
    if (want > sizeof buf)
        return 1;
    struct iovec iov = {buf, want};
    ssize_t n = preadv2(s->fd, &iov, 1, (off_t)s->off, RWF_NOWAIT);
    if (n < 0 || (size_t)n != want)
        return 1; /* not cached (or the file shrank: the pool's way finds out) */
    uv_buf_t b = uv_buf_init(buf, (unsigned)want);
    int rc = loom_conn_write(c, &b, 1); /* the sock copies what the kernel leaves */
    count_out(c, want);
    s->off += (int64_t)want;
    s->left = 0;
    return rc < 0 ? rc : 0;
}

/* sender:send(box, first, count [, nowait]) on the first call, sender:send(box) after: moves
 * the next piece of the body -> true once it is all out, false for more (call again), nil,
 * err ("other": the request is not an HTTP/1 one, whose connection this file knows; the
 * caller writes the body itself). nowait: a body up to this size (at most 64 KiB) whose
 * pages are cached is read on the loop (cached_write) rather than sent from the pool. */
static int sender_send(lua_State *L) {
    sender_t *s = check_sender(L);
    const loom_reqbox_t *rb = luaL_testudata(L, 2, REQBOX_MT);
    if (!rb || rb->http10 == 2) { /* not an HTTP/1 request (HTTP/2): its own writes */
        lua_pushnil(L);
        lua_pushliteral(L, "other");
        return 2;
    }
    loom_conn_t *c = sender_conn(L, 2);
    if (!lua_isnoneornil(L, 3)) {
        lua_Integer first = luaL_checkinteger(L, 3), count = luaL_checkinteger(L, 4);
        luaL_argcheck(L, first >= 0, 3, "non-negative offset expected");
        luaL_argcheck(L, count >= 0, 4, "non-negative count expected");
        lua_Integer nowait = luaL_optinteger(L, 5, 0);
        s->off = first;
        s->left = (uint64_t)count;
        s->nowait_max = nowait < 0 ? 0 : nowait > NOWAIT_LIMIT ? NOWAIT_LIMIT : (int)nowait;
    }
    if (s->fd < 0)
        return luaL_error(L, "send: the file is closed");
    if (!c)
        return loom_fail(L, "closed", "the client has gone");
    if (c->resp != R_STREAM)
        return luaL_error(L, "send: no streaming response was started");
    if (s->left == 0 || c->is_head)
        return step_result(L, s);
    if (c->waiter)
        return luaL_error(L, "send: another task is already writing this response");
    if (loom_sock_error(&c->sock))
        return loom_fail_uv(L, "closed", loom_sock_error(&c->sock), NULL);
    loom_sock_t *sock = &c->sock;
    /* first the way without the thread pool (into the cork too, after its head) */
    if (s->nowait_max > 0 && s->left <= (uint64_t)s->nowait_max && loom_sock_pending(sock) == 0) {
        int rc = cached_write(c, s);
        if (rc < 0)
            return loom_fail_uv(L, "closed", rc, NULL);
        if (rc == 0)
            return step_result(L, s);
    }
    /* a head gathered in the cork (the handler ran within the connection's read) leaves
     * now: sendfile writes past the sock, so nothing of the answer may wait in it */
    if ((sock->flags & LOOM_SOCK_CORKED) && !sock->tls && loom_sock_uncork(sock) < 0)
        return loom_fail_uv(L, "closed", loom_sock_error(sock), NULL);
    int plain = !sock->tls && !(sock->flags & LOOM_SOCK_CORKED) && loom_sock_is_tcp(sock);
    loom_task_t *t = loom_task_self(L, "send");
    s->task = t;
    s->box = lua_touserdata(L, 2);
    lua_settop(L, 2);
    /* what is queued goes first: sendfile waits for an empty queue, a read for room */
    if (loom_sock_pending(sock) > 0 &&
        ((plain && !s->need_read) || loom_sock_over_high_water(sock) || s->need_read)) {
        c->waiter = t;
        c->waiting_body = 0;
        return loom_park(L, t, c->srv->send_timeout, drained_build, drained_abort, s);
    }
    int op = plain && !s->need_read ? OP_SEND : OP_READ;
    work_t *w = work_new(L, op, NULL);
    w->fd = s->fd;
    w->off = s->off;
    w->task = t;
    if (op == OP_SEND) {
        uv_os_fd_t fd;
        w->count = s->left;
        if (uv_fileno(&sock->h.handle, &fd) != 0 || loom_sock_hold(sock) != 0) {
            free(w);
            return loom_fail(L, "closed", "cannot reach the connection's socket");
        }
        w->sock = sock;
        w->sockfd = fd;
    } else {
        size_t chunk = plain ? FALLBACK_CHUNK : TLS_CHUNK;
        w->count = s->left < chunk ? (size_t)s->left : chunk;
        w->buf = malloc(w->count);
        if (!w->buf) {
            free(w);
            return luaL_error(L, "out of memory");
        }
    }
    int rc = work_start(w);
    if (rc < 0)
        return loom_fail_uv(L, "fs", rc, NULL);
    s->w = w;
    /* not in the connection's writer slot: a queue that drains meanwhile (HTTPS) would wake
     * the task before its job is done; the job is short (sendfile never waits on the
     * socket), and send_build finds the connection gone if it went */
    return loom_park(L, t, -1, send_build, send_abort, s);
}

static int read_build(lua_State *L, void *ud, int reason) {
    sender_t *s = ud;
    work_t *w = s->w;
    (void)reason;
    s->w = NULL;
    int n;
    if (w->err)
        n = loom_fail_uv(L, "fs", w->err, NULL);
    else {
        lua_pushlstring(L, w->buf, w->got);
        n = 1;
    }
    work_free(w);
    return n;
}

static void read_abort(void *ud) {
    sender_abandon(ud);
}

/* sender:read(offset, n) -> up to n bytes from offset ("" at the end) | nil, err: for an
 * answer whose body passes through a coder (compression), so it cannot go by sendfile. */
static int sender_read(lua_State *L) {
    sender_t *s = check_sender(L);
    lua_Integer off = luaL_checkinteger(L, 2), n = luaL_checkinteger(L, 3);
    luaL_argcheck(L, off >= 0, 2, "non-negative offset expected");
    luaL_argcheck(L, n > 0 && n <= (1 << 24), 3, "1 to 2^24 bytes expected");
    if (s->fd < 0)
        return luaL_error(L, "read: the file is closed");
    loom_task_t *t = loom_task_self(L, "read");
    work_t *w = work_new(L, OP_READ, NULL);
    w->fd = s->fd;
    w->off = off;
    w->count = (size_t)n;
    w->task = t;
    w->buf = malloc((size_t)n);
    if (!w->buf) {
        free(w);
        return luaL_error(L, "out of memory");
    }
    int rc = work_start(w);
    if (rc < 0)
        return loom_fail_uv(L, "fs", rc, NULL);
    s->w = w;
    s->task = t;
    s->box = NULL;
    lua_settop(L, 1);
    return loom_park(L, t, -1, read_build, read_abort, s);
}

/* sender:close(): closes the file now (also __close and __gc). */
static int sender_close(lua_State *L) {
    sender_t *s = check_sender(L);
    sender_close_fd(s);
    return 0;
}

static const luaL_Reg sender_methods[] = {
    {"send", sender_send},
    {"read", sender_read},
    {"close", sender_close},
    {NULL, NULL},
};

static const luaL_Reg file_methods[] = {
    {"sender", file_sender},
    {"cached", file_cached},
    {"respond", file_respond},
    {"close", file_close},
    {NULL, NULL},
};

static const luaL_Reg static_funcs[] = {
    {"static_load", l_static_load},
    {"static_open", l_static_open},
    {"static_plain", l_static_plain},
    {NULL, NULL},
};

/* A metatable `name` with methods, and close as __gc and __close. */
static void new_type(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction close) {
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index"); /* mt.__index = methods */
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
}

int loom_open_http_static(lua_State *L) {
    new_type(L, SENDER_MT, sender_methods, sender_close);
    new_type(L, FILE_MT, file_methods, file_close);
    luaL_setfuncs(L, static_funcs, 0);
    return 0;
}
