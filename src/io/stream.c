/*
 * stream.c - byte streams for tasks over a loom_sock (TCP, unix-domain sockets, pipes) and
 * the raw listener (loom.listen).
 *
 * Reads are pulled: the socket is read while a reader waits or while less than HIGH_WATER
 * bytes sit unread, so a slow consumer stops the peer through flow control. A write goes
 * to the sock (sock.c: a try-write, the rest copied and queued, through TLS when the sock
 * has a session) and the writer waits until the queue is out; a write that finds bytes
 * still queued by a writer that gave up waits for them first, so at most one write's bytes
 * are ever held. The stream is a heap struct with its sock inside (or an adopted sock
 * inside its old owner); the Lua box points to it; it is freed when both the box and libuv
 * have let go. Knows no protocol: a framed read takes its parser from the layer above.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <lauxlib.h>
#include "stream.h"
#include "addr.h"
#include "tls.h"
#include "fail.h"

#define LISTENER_MT "loom.listener"
#define HIGH_WATER (256 * 1024)
#define READ_CHUNK (64 * 1024)
#define MAX_LINE (64 * 1024)

enum { RD_ANY, RD_N, RD_LINE, RD_ALL, RD_FRAMED };

static const loom_sock_hooks_t stream_hooks;

/* ---------------------------------------------------------------- lifetime */

static void stream_res_close(loom_res_t *r) {
    loom_stream_close((loom_stream_t *)r);
}

/* A stream around s->own, made a TCP socket or a pipe by init (an adopted sock needs none). */
static loom_stream_t *stream_alloc(loom_t *h, int pipe) {
    loom_stream_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->host = h;
    s->timeout = -1;
    s->sock = &s->own;
    if (pipe)
        loom_sock_init_pipe(&s->own, h->loop, &stream_hooks, s);
    else
        loom_sock_init_tcp(&s->own, h->loop, &stream_hooks, s);
    loom_handle_opened(h);
    loom_res_add(h, &s->res, stream_res_close);
    return s;
}

loom_stream_t *loom_stream_new(loom_t *h) {
    return stream_alloc(h, 0);
}

static void stream_free(loom_stream_t *s) {
    free(s->buf);
    free(s);
}

/* The sock's closed hook. An adopted sock goes back to its old owner, whose struct holds
 * it: that owner's own closed hook frees it (and counts the handle closed). */
static void on_sock_closed(loom_sock_t *sock) {
    loom_stream_t *s = loom_sock_owner(sock);
    s->state = ST_CLOSED;
    if (s->back_hooks) {
        loom_sock_handover(sock, s->back_hooks, s->back_owner);
        s->sock = NULL;
        sock->hooks->closed(sock);
    } else {
        loom_handle_closed(s->host);
    }
    if (!s->boxed)
        stream_free(s);
}

/* Fails whoever waits with `closed`, and starts closing the handle. */
void loom_stream_close(loom_stream_t *s) {
    if (s->state != ST_OPEN)
        return;
    s->state = ST_CLOSING;
    loom_res_remove(&s->res);
    if (s->reader)
        loom_wake(s->reader);
    if (s->writer)
        loom_wake(s->writer);
    if (s->connector)
        loom_wake(s->connector);
    if (s->on_event)
        s->on_event(s);
    loom_sock_close(s->sock);
}

static int stream_gc(lua_State *L) {
    loom_stream_t **box = lua_touserdata(L, 1);
    loom_stream_t *s = *box;
    if (!s)
        return 0;
    *box = NULL;
    s->boxed = 0;
    if (s->state == ST_CLOSED) {
        stream_free(s);
    } else {
        loom_stream_close(s); /* frees in on_sock_closed */
    }
    return 0;
}

void loom_stream_push(lua_State *L, loom_stream_t *s) {
    loom_stream_t **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = s;
    s->boxed = 1;
    luaL_setmetatable(L, STREAM_MT);
}

loom_stream_t *loom_stream_detach(lua_State *L, int idx) {
    loom_stream_t **box = luaL_checkudata(L, idx, STREAM_MT);
    loom_stream_t *s = *box;
    if (s && s->state == ST_OPEN) {
        *box = NULL;
        s->boxed = 0;
        return s;
    }
    return NULL;
}

loom_stream_t *loom_stream_check(lua_State *L, int idx) {
    loom_stream_t **box = luaL_checkudata(L, idx, STREAM_MT);
    if (!*box)
        luaL_argerror(L, idx, "stream has been collected");
    return *box;
}

void loom_stream_set_peer(loom_stream_t *s) {
    char ip[48];
    int port, v6;
    if (!loom_sock_is_tcp(s->sock)) {
        snprintf(s->peer, sizeof s->peer, "unix");
        return;
    }
    loom_addr_peer(&s->sock->h.tcp, ip, sizeof ip, &port, &v6);
    snprintf(s->peer, sizeof s->peer, v6 ? "[%s]:%d" : "%s:%d", ip, port);
}

loom_stream_t *loom_stream_adopt(lua_State *L, loom_t *h, loom_sock_t *sock, const char *data,
                                 size_t len) {
    loom_stream_t *s = calloc(1, sizeof *s);
    if (!s || (len && !(s->buf = malloc(len)))) {
        free(s);
        return NULL;
    }
    if (len)
        memcpy(s->buf, data, len);
    s->len = s->cap = len;
    s->host = h;
    s->timeout = -1;
    s->sock = sock;
    s->back_hooks = sock->hooks;
    s->back_owner = loom_sock_owner(sock);
    loom_sock_handover(sock, &stream_hooks, s);
    loom_sock_uncork(sock); /* what the old owner gathered goes before the stream's bytes */
    loom_res_add(h, &s->res, stream_res_close);
    loom_stream_push(L, s);
    loom_stream_set_peer(s);
    return s;
}

/* ---------------------------------------------------------------- pipes (loom.process) */

loom_stream_t *loom_stream_new_pipe(lua_State *L, loom_t *h) {
    loom_stream_t *s = stream_alloc(h, 1);
    if (s)
        loom_stream_push(L, s);
    return s;
}

uv_stream_t *loom_stream_uv(loom_stream_t *st) {
    return &st->sock->h.stream;
}

void loom_stream_opened(loom_stream_t *st) {
    if (!st->peer[0])
        snprintf(st->peer, sizeof st->peer, "pipe");
}

/* ---------------------------------------------------------------- reading */

static size_t unread(const loom_stream_t *s) {
    return s->len - s->pos;
}

/* Whether the line at pos, ending at `nl` (or not ended yet: NULL), holds more than
 * MAX_LINE bytes besides its "\r\n" or "\n". */
static int line_too_long(const loom_stream_t *s, const char *nl) {
    const char *start = s->buf + s->pos;
    size_t len = nl ? (size_t)(nl - start) : unread(s);
    if (len > 0 && start[len - 1] == '\r')
        len--; /* the CR of a CRLF, or maybe of one whose LF is still on its way */
    return len > MAX_LINE;
}

/* Whether the waiting read can complete from the buffer (or from the end of the stream). */
static int read_ready(const loom_stream_t *s) {
    if (s->eof || s->rerr || s->state != ST_OPEN)
        return 1;
    switch (s->rmode) {
    case RD_ANY:
        return unread(s) > 0;
    case RD_N:
        return unread(s) >= s->rwant;
    case RD_LINE:
        return (unread(s) > 0 && memchr(s->buf + s->pos, '\n', unread(s)) != NULL) ||
               line_too_long(s, NULL);
    case RD_FRAMED:
        return s->frame(NULL, s->frame_ud, s->buf + s->pos, unread(s), NULL);
    default:
        return 0;
    }
}

int loom_stream_reserve(loom_stream_t *s, size_t n) {
    if (s->pos == s->len)
        s->pos = s->len = 0;
    if (s->cap - s->len < n && s->pos > 0) {
        memmove(s->buf, s->buf + s->pos, unread(s));
        s->len -= s->pos;
        s->pos = 0;
    }
    if (s->cap - s->len < n) {
        size_t cap = s->cap ? s->cap * 2 : READ_CHUNK;
        while (cap - s->len < n)
            cap *= 2;
        char *nb = realloc(s->buf, cap);
        if (!nb)
            return -1;
        s->buf = nb;
        s->cap = cap;
    }
    return 0;
}

/* The sock's alloc hook: bytes land at the end of the buffer (on TLS the ciphertext too,
 * copied into the session at once, then the plaintext decrypted there). */
static void on_alloc(loom_sock_t *sock, size_t hint, uv_buf_t *buf) {
    loom_stream_t *s = loom_sock_owner(sock);
    (void)hint;
    if (loom_stream_reserve(s, READ_CHUNK) != 0) {
        buf->base = NULL;
        buf->len = 0; /* libuv reports UV_ENOBUFS */
        return;
    }
    buf->base = s->buf + s->len;
    buf->len = s->cap - s->len;
}

static void stop_reading(loom_stream_t *s) {
    loom_sock_read_stop(s->sock);
}

/* The sock's input hook: plaintext at buf + len, the end, a failure, or (nread 0) a client
 * handshake done. libuv may report a reset as the end of the stream: when epoll says
 * POLLHUP and its last read was a short one, uv__stream_io reports UV_EOF "iff ...
 * uv__read() reported a partial read" without reading again, and the read that would have
 * failed with ECONNRESET never happens. The error is still pending on the socket
 * (loom_sock_pending_reset), so a reset is not taken for the peer's orderly end - which
 * would pass off a body that runs until the close, cut by the reset, as whole. */
static void on_input(loom_sock_t *sock, ssize_t nread, const char *data) {
    loom_stream_t *s = loom_sock_owner(sock);
    (void)data; /* == buf + len: where on_alloc put it */
    if (nread > 0) {
        s->len += (size_t)nread;
        if (!s->reader && !s->on_event && unread(s) >= HIGH_WATER)
            stop_reading(s);
    } else if (nread < 0) {
        int err = nread == UV_EOF ? loom_sock_pending_reset(sock) : (int)nread;
        if (err)
            s->rerr = err;
        else
            s->eof = 1;
        stop_reading(s);
    }
    if (s->on_event)
        s->on_event(s);
    else if (s->reader && read_ready(s))
        loom_wake(s->reader);
}

/* The sock's write queue emptied (status 0) or a queued write failed: the writer goes on. */
static void on_drained(loom_sock_t *sock, int status) {
    loom_stream_t *s = loom_sock_owner(sock);
    if (status < 0 && !s->werr)
        s->werr = status;
    if (s->writer)
        loom_wake(s->writer);
}

/* A queued piece went out and more wait: a failure among them ends the wait now. */
static void on_progress(loom_sock_t *sock) {
    loom_stream_t *s = loom_sock_owner(sock);
    if (loom_sock_error(sock) && !s->werr) {
        s->werr = loom_sock_error(sock);
        if (s->writer)
            loom_wake(s->writer);
    }
}

static const loom_sock_hooks_t stream_hooks = {
    on_alloc, on_input, on_drained, on_progress, on_sock_closed,
};

static void start_reading(loom_stream_t *s);

void loom_stream_read_start(loom_stream_t *s) {
    start_reading(s);
}

void loom_stream_read_stop(loom_stream_t *s) {
    stop_reading(s);
}

static void start_reading(loom_stream_t *s) {
    if (!loom_sock_reading(s->sock) && !s->eof && !s->rerr && s->state == ST_OPEN) {
        int rc = loom_sock_read_start(s->sock);
        if (rc != 0)
            s->rerr = rc;
    }
}

size_t loom_stream_queued(const loom_stream_t *s) {
    return s->state == ST_OPEN ? loom_sock_queued(s->sock) : 0;
}

void loom_stream_ref(loom_stream_t *s, int ref) {
    if (s->state == ST_OPEN)
        loom_sock_ref(s->sock, ref);
}

int loom_stream_healthy(const loom_stream_t *s) {
    return s->state == ST_OPEN && !s->eof && !s->rerr && !s->werr && s->pos == s->len;
}

const char *loom_stream_tls_error(const loom_stream_t *s) {
    if (s->state != ST_OPEN || (s->rerr != UV_EPROTO && s->werr != UV_EPROTO))
        return NULL;
    return loom_sock_tls_error(s->sock);
}

void loom_stream_consume(loom_stream_t *s, size_t n) {
    s->pos += n;
    if (s->pos == s->len) {
        s->pos = s->len = 0;
        if (s->cap > 4 * READ_CHUNK) { /* give back a buffer a burst grew */
            free(s->buf);
            s->buf = NULL;
            s->cap = 0;
        }
    }
}

static void consume(lua_State *L, loom_stream_t *s, size_t n, size_t skip) {
    lua_pushlstring(L, s->buf + s->pos, n);
    loom_stream_consume(s, n + skip);
}

static int end_of_stream(lua_State *L, loom_stream_t *s) {
    if (s->state != ST_OPEN)
        return loom_fail(L, "closed", "stream is closed");
    if (s->rerr && loom_stream_tls_error(s))
        return loom_fail(L, "tls", "%s (%s)", loom_stream_tls_error(s), s->peer);
    if (s->rerr)
        return loom_fail(L, "closed", "%s", uv_strerror(s->rerr));
    return loom_fail(L, "closed", "end of stream");
}

/* A framed read's result: what s->frame pushes for the frame at buf + pos, or why the
 * stream ended before a whole one. */
static int push_framed(lua_State *L, loom_stream_t *s) {
    size_t used = 0;
    int n = s->frame(L, s->frame_ud, s->buf + s->pos, unread(s), &used);
    if (n < 0)
        return end_of_stream(L, s);
    s->pos += used;
    if (s->pos == s->len)
        s->pos = s->len = 0;
    return n;
}

/* Pushes what the finished read gives: data, or nil and why. */
static int push_read(lua_State *L, loom_stream_t *s) {
    if (s->rmode == RD_FRAMED && s->state == ST_OPEN)
        return push_framed(L, s);
    size_t n = unread(s);
    if (s->state != ST_OPEN)
        return end_of_stream(L, s);
    switch (s->rmode) {
    case RD_ANY:
        break;
    case RD_N:
        if (n > s->rwant)
            n = s->rwant;
        break;
    case RD_LINE: {
        const char *nl = n > 0 ? memchr(s->buf + s->pos, '\n', n) : NULL; /* buf may be NULL */
        if (nl && !line_too_long(s, nl)) {
            size_t len = (size_t)(nl - (s->buf + s->pos));
            size_t cut = len > 0 && nl[-1] == '\r' ? 1 : 0;
            consume(L, s, len - cut, 1 + cut);
            return 1;
        }
        if (nl || line_too_long(s, NULL)) /* too long, even if its end has arrived too */
            return loom_fail(L, "limit", "line longer than %d bytes", MAX_LINE);
        break; /* end of stream: the last line has no newline */
    }
    default:
        if (s->rerr)
            return end_of_stream(L, s);
        break;
    }
    if (n == 0)
        return s->rmode == RD_ALL && s->eof ? (lua_pushliteral(L, ""), 1) : end_of_stream(L, s);
    consume(L, s, n, 0);
    return 1;
}

static int read_build(lua_State *L, void *ud, int reason) {
    loom_stream_t *s = ud;
    s->reader = NULL;
    if (reason == LOOM_WAKE_TIMEOUT)
        return loom_fail(L, "timeout", "read from %s", s->peer);
    if (unread(s) >= HIGH_WATER)
        stop_reading(s);
    return push_read(L, s);
}

static void read_abort(void *ud) {
    loom_stream_t *s = ud;
    s->reader = NULL;
}

/* Shared by read and read_line once the mode is known. */
static int do_read(lua_State *L, loom_stream_t *s, int mode, size_t want, const char *fname) {
    if (s->reader)
        return luaL_error(L, "%s: another task is already reading this stream", fname);
    s->rmode = mode;
    s->rwant = want;
    if (read_ready(s))
        return push_read(L, s);
    loom_task_t *t = loom_task_self(L, fname);
    start_reading(s);
    if (read_ready(s)) /* start_reading may have failed */
        return push_read(L, s);
    s->reader = t;
    return loom_park(L, t, s->timeout, read_build, read_abort, s);
}

/* st:read() -> what is there (at least one byte); st:read(n) -> n bytes (fewer only at the
 * end); st:read("a") -> everything until the peer closes. nil, err at the end. */
static int stream_read(lua_State *L) {
    loom_stream_t *s = loom_stream_check(L, 1);
    if (lua_isnoneornil(L, 2))
        return do_read(L, s, RD_ANY, 0, "read");
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *fmt = lua_tostring(L, 2);
        if (*fmt == '*')
            fmt++;
        if (*fmt == 'a')
            return do_read(L, s, RD_ALL, 0, "read");
        if (*fmt == 'l')
            return do_read(L, s, RD_LINE, 0, "read");
        return luaL_argerror(L, 2, "invalid format (expected a count, 'a' or 'l')");
    }
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0, 2, "count must be non-negative");
    if (n == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    return do_read(L, s, RD_N, (size_t)n, "read");
}

int loom_stream_read_framed(lua_State *L, loom_stream_t *s, loom_frame_fn fn, void *ud,
                            const char *fname) {
    if (s->reader)
        return luaL_error(L, "%s: another task is already reading this stream", fname);
    s->frame = fn;
    s->frame_ud = ud;
    return do_read(L, s, RD_FRAMED, 0, fname);
}

static int stream_read_line(lua_State *L) {
    return do_read(L, loom_stream_check(L, 1), RD_LINE, 0, "read_line");
}

/* ---------------------------------------------------------------- writing */

/* A writer woke: pushes nil, err and returns 2 when its wait ended in a failure, else 0. */
static int writer_failed(lua_State *L, loom_stream_t *s, int reason) {
    s->writer = NULL;
    if (reason == LOOM_WAKE_TIMEOUT)
        return loom_fail(L, "timeout", "write to %s", s->peer);
    if (s->state != ST_OPEN)
        return loom_fail(L, "closed", "stream is closed");
    if (s->werr)
        return loom_fail(L, "closed", "%s", uv_strerror(s->werr));
    return 0;
}

static int write_build(lua_State *L, void *ud, int reason) {
    int failed = writer_failed(L, ud, reason);
    if (failed)
        return failed;
    lua_pushboolean(L, 1);
    return 1;
}

static void write_abort(void *ud) {
    ((loom_stream_t *)ud)->writer = NULL;
}

int loom_stream_send(loom_stream_t *s, uv_buf_t *bufs, int n) {
    if (s->state != ST_OPEN)
        return UV_EPIPE;
    if (s->werr)
        return s->werr;
    int rc = loom_sock_write(s->sock, bufs, n);
    if (rc < 0) {
        s->werr = rc;
        return rc;
    }
    return loom_sock_pending(s->sock) > 0;
}

/* Sends the strings at stack indices 2.. and waits until the kernel has them all. */
static int write_now(lua_State *L, loom_stream_t *s, loom_task_t *t) {
    int n = lua_gettop(L) - 1;
    uv_buf_t bufs[16];
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *p = lua_tolstring(L, i + 2, &len);
        bufs[i] = uv_buf_init((char *)p, (unsigned)len);
    }
    int rc = loom_stream_send(s, bufs, n);
    if (rc < 0 && loom_stream_tls_error(s))
        return loom_fail(L, "tls", "%s (%s)", loom_stream_tls_error(s), s->peer);
    if (rc < 0)
        return loom_fail_uv(L, "closed", rc, s->peer);
    if (rc == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    s->writer = t;
    return loom_park(L, t, s->timeout, write_build, write_abort, s);
}

/* Woken once the bytes an earlier writer left queued are out: now ours go. */
static int admit_build(lua_State *L, void *ud, int reason) {
    loom_stream_t *s = ud;
    int failed = writer_failed(L, s, reason);
    if (failed)
        return failed;
    return write_now(L, s, loom_task_self(L, "write"));
}

/* st:write(s1, s2, ...) -> true once the kernel has the bytes, or nil, err. */
static int stream_write(lua_State *L) {
    loom_stream_t *s = loom_stream_check(L, 1);
    int n = lua_gettop(L) - 1;
    luaL_argcheck(L, n >= 1 && n <= 16, 2, "expected 1 to 16 strings");
    for (int i = 0; i < n; i++)
        luaL_checkstring(L, i + 2);
    loom_task_t *t = loom_task_self(L, "write");
    if (s->writer)
        return luaL_error(L, "write: another task is already writing this stream");
    if (s->state != ST_OPEN)
        return loom_fail(L, "closed", "stream is closed");
    if (s->werr)
        return loom_fail(L, "closed", "%s", uv_strerror(s->werr));
    if (loom_sock_pending(s->sock) > 0) {
        /* A writer that gave up (a timeout, a cancel) left its bytes queued; they still go
         * out, in order. Ours wait until they have, so writes that keep giving up to a peer
         * that reads nothing cannot pile up in memory: at most one write's bytes are held. */
        s->writer = t;
        return loom_park(L, t, s->timeout, admit_build, write_abort, s);
    }
    return write_now(L, s, t);
}

/* ---------------------------------------------------------------- other methods */

static int stream_close_l(lua_State *L) {
    loom_stream_t **box = luaL_checkudata(L, 1, STREAM_MT);
    if (*box)
        loom_stream_close(*box);
    return 0;
}

/* st:shutdown(): no more writes from here; the peer reads the end of the stream (after a
 * TLS close_notify on TLS, and after what is still queued). */
static int stream_shutdown(lua_State *L) {
    loom_stream_t *s = loom_stream_check(L, 1);
    if (s->state != ST_OPEN)
        return loom_fail(L, "closed", "stream is closed");
    int rc = loom_sock_shutdown(s->sock, NULL);
    if (rc < 0)
        return loom_fail_uv(L, "closed", rc, s->peer);
    lua_pushboolean(L, 1);
    return 1;
}

/* st:settimeout(seconds | nil): bound every later read and write. */
static int stream_settimeout(lua_State *L) {
    loom_stream_t *s = loom_stream_check(L, 1);
    double v = luaL_optnumber(L, 2, -1);
    s->timeout = v >= 0 ? v : -1;
    return 0;
}

/* st:peer() -> ip, port. The ip is bare ("::1"), though messages show "[::1]:port". */
static int stream_peer(lua_State *L) {
    loom_stream_t *s = loom_stream_check(L, 1);
    const char *colon = strrchr(s->peer, ':');
    if (!colon)
        return 0;
    const char *ip = s->peer;
    size_t len = (size_t)(colon - s->peer);
    if (len >= 2 && ip[0] == '[' && ip[len - 1] == ']') {
        ip++;
        len -= 2;
    }
    lua_pushlstring(L, ip, len);
    lua_pushinteger(L, atoi(colon + 1));
    return 2;
}

static int stream_tostring(lua_State *L) {
    loom_stream_t **box = luaL_checkudata(L, 1, STREAM_MT);
    loom_stream_t *s = *box;
    lua_pushfstring(L, "loom.stream (%s%s)", s ? s->peer : "collected",
                    s && s->state != ST_OPEN ? ", closed" : "");
    return 1;
}

/* core.stream_queued(st) -> bytes written to st that the kernel has not taken yet (what
 * libuv holds in the stream's write queue): for specs that check writes stay bounded. */
static int l_stream_queued(lua_State *L) {
    loom_stream_t *s = loom_stream_check(L, 1);
    lua_pushinteger(L, (lua_Integer)loom_stream_queued(s));
    return 1;
}

/* ---------------------------------------------------------------- connect */

static void on_connect(uv_connect_t *req, int status) {
    loom_stream_t *s = req->data;
    if (status == UV_ECANCELED)
        return; /* closed while connecting: the task was told already */
    s->cerr = status;
    if (s->connector)
        loom_wake(s->connector);
}

static int connect_build(lua_State *L, void *ud, int reason) {
    loom_stream_t *s = ud;
    s->connector = NULL;
    if (reason == LOOM_WAKE_TIMEOUT) {
        loom_stream_close(s);
        return loom_fail(L, "timeout", "connect to %s", s->peer);
    }
    if (s->state != ST_OPEN)
        return loom_fail(L, "closed", "stream closed while connecting");
    if (s->cerr) {
        int err = s->cerr;
        loom_stream_close(s);
        return loom_fail_uv(L, "connect", err, s->peer);
    }
    if (loom_sock_is_tcp(s->sock))
        uv_tcp_nodelay(&s->sock->h.tcp, 1);
    lua_pushvalue(L, 4); /* the box, left there by tcp_connect or pipe_connect */
    return 1;
}

/* Cancelled or timed out: close the half-made stream now rather than when the collector
 * finds its box, so the socket and its connect attempt go at once. */
static void connect_abort(void *ud) {
    loom_stream_t *s = ud;
    s->connector = NULL;
    loom_stream_close(s);
}

/* core.tcp_connect(ip, port, timeout) -> stream | nil, err. `ip` is numeric. */
static int l_tcp_connect(lua_State *L) {
    const char *ip = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    double timeout = luaL_optnumber(L, 3, -1);
    loom_task_t *t = loom_task_self(L, "connect");
    struct sockaddr_storage ss;
    luaL_argcheck(L, port > 0 && port < 65536, 2, "port out of range");
    if (loom_addr_parse(ip, (int)port, &ss) != 0)
        return loom_fail(L, "connect", "invalid address (%s)", ip);
    loom_stream_t *s = loom_stream_new(loom_host(L));
    if (!s)
        return loom_fail(L, "connect", "out of memory");
    lua_settop(L, 3);
    loom_stream_push(L, s); /* index 4: connect_build returns it */
    snprintf(s->peer, sizeof s->peer, strchr(ip, ':') ? "[%s]:%d" : "%s:%d", ip, (int)port);
    s->creq.data = s;
    int rc = uv_tcp_connect(&s->creq, &s->sock->h.tcp, (struct sockaddr *)&ss, on_connect);
    if (rc < 0) {
        loom_stream_close(s);
        return loom_fail_uv(L, "connect", rc, s->peer);
    }
    s->connector = t;
    return loom_park(L, t, timeout, connect_build, connect_abort, s);
}

/* core.pipe_connect(path, timeout) -> stream | nil, err: a unix-domain socket. */
static int l_pipe_connect(lua_State *L) {
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    double timeout = luaL_optnumber(L, 2, -1);
    loom_task_t *t = loom_task_self(L, "connect");
    luaL_argcheck(L, len > 0 && len < sizeof(((struct sockaddr_un *)0)->sun_path), 1,
                  "path empty or too long for a unix socket");
    loom_stream_t *s = stream_alloc(loom_host(L), 1);
    if (!s)
        return loom_fail(L, "connect", "out of memory");
    lua_settop(L, 3);
    loom_stream_push(L, s); /* index 4: connect_build returns it */
    snprintf(s->peer, sizeof s->peer, "%s", path);
    s->creq.data = s;
    uv_pipe_connect(&s->creq, &s->sock->h.pipe, path, on_connect); /* fails in on_connect */
    s->connector = t;
    return loom_park(L, t, timeout, connect_build, connect_abort, s);
}

/* ---------------------------------------------------------------- TLS on a stream */

/* Read events while the handshake runs: wake the task once it is done or has failed. */
static void on_handshake_event(loom_stream_t *s) {
    if (s->connector &&
        (loom_sock_tls_ready(s->sock) || s->eof || s->rerr || s->werr || s->state != ST_OPEN))
        loom_wake(s->connector);
}

static int wrap_build(lua_State *L, void *ud, int reason) {
    loom_stream_t *s = ud;
    s->connector = NULL;
    s->on_event = NULL;
    const char *name = lua_tostring(L, 2);
    if (reason == LOOM_WAKE_TIMEOUT) {
        loom_stream_close(s);
        return loom_fail(L, "timeout", "TLS handshake with %s (%s)", name, s->peer);
    }
    if (s->state != ST_OPEN)
        return loom_fail(L, "closed", "stream closed during the TLS handshake");
    if (!loom_sock_tls_ready(s->sock)) {
        const char *why = loom_stream_tls_error(s);
        if (!why)
            why = s->eof ? "connection closed during the handshake"
                         : uv_strerror(s->rerr ? s->rerr : s->werr);
        lua_pushfstring(L, "%s (%s)", why, name);
        loom_stream_close(s);
        return loom_fail(L, "tls", "%s", lua_tostring(L, -1));
    }
    lua_pushvalue(L, 1);
    return 1;
}

static void wrap_abort(void *ud) {
    loom_stream_t *s = ud;
    s->connector = NULL;
    s->on_event = NULL;
}

/* core.tls_wrap(stream, name, config | opts [, timeout]) -> stream | nil, err
 * Starts TLS as a client on a connected stream and waits for the handshake. `name` is what
 * the certificate must show (opts.server_name overrides it) and what SNI sends. */
static int l_tls_wrap(lua_State *L) {
    loom_stream_t *s = loom_stream_check(L, 1);
    const char *name = luaL_checkstring(L, 2);
    double timeout = luaL_optnumber(L, 4, -1);
    loom_task_t *t = loom_task_self(L, "tls_wrap");
    if (lua_istable(L, 3)) {
        name = loom_opt_string(L, 3, "server_name", name);
        lua_pushstring(L, name);
        lua_replace(L, 2);
        if (loom_tls_conf_push(L, 3) == 2)
            return 2;
        lua_replace(L, 3);
    }
    loom_tls_conf_t *c = loom_tls_conf_check(L, 3);
    lua_settop(L, 3);
    if (s->state == ST_OPEN && s->sock->tls)
        return luaL_argerror(L, 1, "stream already has TLS");
    if (s->state != ST_OPEN)
        return loom_fail(L, "closed", "stream is closed");
    char err[256];
    loom_tls_t *tls = loom_tls_new(c, name, err, sizeof err);
    if (!tls)
        return loom_fail(L, "tls", "%s", err);
    loom_sock_tls_attach(s->sock, tls);
    int rc = loom_sock_tls_handshake(s->sock); /* the ClientHello */
    if (rc < 0) {
        loom_stream_close(s);
        return loom_fail_uv(L, "tls", rc, s->peer);
    }
    s->on_event = on_handshake_event;
    s->connector = t;
    loom_stream_read_start(s);
    return loom_park(L, t, timeout, wrap_build, wrap_abort, s);
}

/* ---------------------------------------------------------------- listener */

typedef struct loom_listener {
    loom_res_t res;
    loom_t *host;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    int state;
    int boxed;
    int handler_ref; /* the Lua function each connection's task runs */
    int pending;     /* accepted connections whose task is not spawned yet */
    int port;
    unsigned long ino; /* a unix socket's file, removed on close if it is still this one */
    char *path;
} loom_listener_t;

typedef struct {
    loom_job_t job;
    loom_listener_t *ln;
    loom_stream_t *s;
} accept_job_t;

static void listener_free_if_done(loom_listener_t *ln) {
    if (ln->state == ST_CLOSED && !ln->boxed && ln->pending == 0) {
        free(ln->path);
        free(ln);
    }
}

static void on_listener_closed(uv_handle_t *handle) {
    loom_listener_t *ln = handle->data;
    ln->state = ST_CLOSED;
    loom_handle_closed(ln->host);
    listener_free_if_done(ln);
}

static void listener_close(loom_listener_t *ln, lua_State *L) {
    if (ln->state != ST_OPEN)
        return;
    ln->state = ST_CLOSING;
    loom_res_remove(&ln->res);
    if (L && ln->handler_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, ln->handler_ref);
        ln->handler_ref = LUA_NOREF;
    }
    if (ln->path && ln->ino)
        loom_sock_unlink_unix(ln->path, ln->ino);
    uv_close(&ln->h.handle, on_listener_closed);
}

static void listener_res_close(loom_res_t *r) {
    listener_close((loom_listener_t *)r, NULL);
}

/* In the scheduler: give the accepted connection a box and a task. */
static void run_accept(loom_t *h, loom_job_t *job) {
    accept_job_t *aj = (accept_job_t *)job;
    loom_listener_t *ln = aj->ln;
    loom_stream_t *s = aj->s;
    lua_State *L = h->sched.L;
    free(aj);
    ln->pending--;
    if (ln->handler_ref == LUA_NOREF || s->state != ST_OPEN) {
        loom_stream_close(s);
        listener_free_if_done(ln);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, ln->handler_ref);
    loom_stream_push(L, s);
    loom_spawn(L, 1);
    lua_pop(L, 1);
    listener_free_if_done(ln);
}

static void on_connection(uv_stream_t *server, int status) {
    loom_listener_t *ln = server->data;
    if (status < 0 || ln->state != ST_OPEN)
        return;
    int tcp = server->type == UV_TCP;
    loom_stream_t *s = stream_alloc(ln->host, !tcp);
    accept_job_t *aj = s ? malloc(sizeof *aj) : NULL;
    if (!aj || uv_accept(server, &s->sock->h.stream) != 0) {
        free(aj);
        if (s)
            loom_stream_close(s);
        return;
    }
    if (tcp)
        uv_tcp_nodelay(&s->sock->h.tcp, 1);
    loom_stream_set_peer(s);
    memset(&aj->job, 0, sizeof aj->job);
    aj->job.run = run_accept;
    aj->ln = ln;
    aj->s = s;
    ln->pending++;
    loom_sched_defer(ln->host, &aj->job);
}

static loom_listener_t *check_listener(lua_State *L, int idx) {
    loom_listener_t **box = luaL_checkudata(L, idx, LISTENER_MT);
    return *box;
}

static int listener_gc(lua_State *L) {
    loom_listener_t **box = luaL_checkudata(L, 1, LISTENER_MT);
    loom_listener_t *ln = *box;
    if (!ln)
        return 0;
    *box = NULL;
    ln->boxed = 0;
    listener_close(ln, L);
    listener_free_if_done(ln);
    return 0;
}

static int listener_close_l(lua_State *L) {
    loom_listener_t *ln = check_listener(L, 1);
    if (ln)
        listener_close(ln, L);
    return 0;
}

static int listener_index(lua_State *L) {
    loom_listener_t *ln = check_listener(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "port") == 0 && ln && !ln->path) {
        lua_pushinteger(L, ln->port);
        return 1;
    }
    if (strcmp(k, "path") == 0 && ln && ln->path) {
        lua_pushstring(L, ln->path);
        return 1;
    }
    if (strcmp(k, "close") == 0) {
        lua_pushcfunction(L, listener_close_l);
        return 1;
    }
    return 0;
}

/* A new listener with its box pushed, its handle initialised (TCP or a pipe). */
static loom_listener_t *listener_new(lua_State *L, int pipe) {
    loom_t *h = loom_host(L);
    loom_listener_t *ln = calloc(1, sizeof *ln);
    if (!ln)
        return NULL;
    ln->host = h;
    ln->handler_ref = LUA_NOREF;
    if (pipe)
        uv_pipe_init(h->loop, &ln->h.pipe, 0);
    else
        uv_tcp_init(h->loop, &ln->h.tcp);
    ln->h.handle.data = ln;
    loom_handle_opened(h);
    loom_res_add(h, &ln->res, listener_res_close);
    loom_listener_t **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = ln;
    ln->boxed = 1;
    luaL_setmetatable(L, LISTENER_MT);
    return ln;
}

/* Listening went well (rc 0): the handler is kept; else the listener closes and nil, err. */
static int listen_result(lua_State *L, loom_listener_t *ln, int rc, const char *where) {
    if (rc < 0) {
        listener_close(ln, L);
        return loom_fail_uv(L, "listen", rc, where);
    }
    lua_pushvalue(L, 3);
    ln->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

/* core.tcp_listen(host, port, handler, backlog) -> listener | nil, err */
static int l_tcp_listen(lua_State *L) {
    const char *host = luaL_checkstring(L, 1);
    lua_Integer port = luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    int backlog = (int)luaL_optinteger(L, 4, 511);
    struct sockaddr_storage ss;
    luaL_argcheck(L, port >= 0 && port < 65536, 2, "port out of range");
    if (loom_addr_parse(host, (int)port, &ss) != 0)
        return loom_fail(L, "listen", "invalid address (%s)", host);
    loom_listener_t *ln = listener_new(L, 0);
    if (!ln)
        return loom_fail(L, "listen", "out of memory");
    unsigned flags = ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0;
    int rc = uv_tcp_bind(&ln->h.tcp, (struct sockaddr *)&ss, flags);
    if (rc == 0)
        rc = uv_listen(&ln->h.stream, backlog, on_connection);
    char ctx[80];
    snprintf(ctx, sizeof ctx, "%s:%d", host, (int)port);
    if (rc == 0)
        ln->port = loom_addr_local_port(&ln->h.tcp);
    return listen_result(L, ln, rc, ctx);
}

/* core.pipe_listen(path, handler, backlog, mode) -> listener | nil, err: a unix-domain
 * socket at path (a stale socket file is replaced; the file goes when the listener closes). */
static int l_pipe_listen(lua_State *L) {
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    int backlog = (int)luaL_optinteger(L, 3, 511);
    int mode = (int)luaL_optinteger(L, 4, 0);
    luaL_argcheck(L, len > 0 && len < sizeof(((struct sockaddr_un *)0)->sun_path), 1,
                  "path empty or too long for a unix socket");
    lua_settop(L, 2);
    lua_pushnil(L);
    lua_insert(L, 1); /* nil path handler: the handler at 3, as listen_result wants */
    loom_listener_t *ln = listener_new(L, 1);
    if (!ln || !(ln->path = strdup(path)))
        return loom_fail(L, "listen", "out of memory");
    int rc = loom_sock_bind_unix(&ln->h.pipe, path, mode, &ln->ino);
    if (rc == 0)
        rc = uv_listen(&ln->h.stream, backlog, on_connection);
    return listen_result(L, ln, rc, path);
}

/* ---------------------------------------------------------------- registration */

static const luaL_Reg stream_methods[] = {
    {"read", stream_read},         {"read_line", stream_read_line},
    {"write", stream_write},       {"close", stream_close_l},
    {"shutdown", stream_shutdown}, {"settimeout", stream_settimeout},
    {"peer", stream_peer},         {NULL, NULL},
};

static const luaL_Reg stream_meta[] = {
    {"__gc", stream_gc},
    {"__close", stream_close_l},
    {"__tostring", stream_tostring},
    {NULL, NULL},
};

static const luaL_Reg listener_meta[] = {
    {"__gc", listener_gc},
    {"__close", listener_close_l},
    {"__index", listener_index},
    {NULL, NULL},
};

static const luaL_Reg stream_funcs[] = {
    {"tcp_connect", l_tcp_connect},
    {"pipe_connect", l_pipe_connect},
    {"tls_wrap", l_tls_wrap},
    {"tcp_listen", l_tcp_listen},
    {"pipe_listen", l_pipe_listen},
    {"stream_queued", l_stream_queued},
    {NULL, NULL},
};

/* libuv writes to TCP with write(2), and "If all file descriptors referring to the read end
 * of a pipe [or the peer of a socket] have been closed, then a write(2) will cause a SIGPIPE
 * signal to be generated" (write(2)), whose default action ends the process. Streams report
 * EPIPE as `closed: ...` instead, so the signal is ignored, as node does; a handler the
 * embedder installed is left alone. */
static void ignore_sigpipe(void) {
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
}

int loom_open_stream(lua_State *L) {
    ignore_sigpipe();
    luaL_newmetatable(L, STREAM_MT);
    luaL_setfuncs(L, stream_meta, 0);
    luaL_newlib(L, stream_methods);
    lua_setfield(L, -2, "__index"); /* mt.__index = methods */
    lua_pop(L, 1);
    luaL_newmetatable(L, LISTENER_MT);
    luaL_setfuncs(L, listener_meta, 0);
    lua_pop(L, 1);
    luaL_setfuncs(L, stream_funcs, 0);
    return 0;
}
