/*
 * stream.h - byte streams for tasks over a loom_sock (TCP, unix-domain sockets, pipes):
 * buffered reads (any, n bytes, line, all, or framed by a parser the protocol above gives),
 * writes that wait under backpressure, half-close, one idempotent close. The sock does the
 * writing, the TLS pump and the closing; the stream keeps the plaintext that has arrived
 * (`buf`) and the tasks that wait. The HTTP client, websockets, loom.redis and loom.process
 * stand on this; it knows no protocol.
 */
#ifndef LOOM_STREAM_H
#define LOOM_STREAM_H

#include <stddef.h>
#include "host.h"
#include "sock.h"

#define STREAM_MT "loom.stream"

enum { ST_OPEN, ST_CLOSING, ST_CLOSED };

struct loom_tls;

typedef struct loom_stream loom_stream_t;

/* A framed read's parser (loom_stream_read_framed). With L NULL: whether buf[0, len) starts
 * with a whole frame, or with bytes that can never start one (1), or more are needed (0).
 * With L: pushes that frame's values (or nil, err), sets *used to the bytes it takes and
 * returns how many values it pushed; -1 when no whole frame is there (the stream ended). */
typedef int (*loom_frame_fn)(lua_State *L, void *ud, const char *buf, size_t len, size_t *used);

struct loom_stream {
    loom_res_t res;
    loom_t *host;
    loom_sock_t *sock; /* &own, or the sock an upgrade handed over (inside its old owner) */
    uv_connect_t creq;
    int state;
    int boxed; /* a Lua box still points here */
    int eof;   /* the peer finished sending */
    int rerr;  /* read error (libuv code), 0 if none */
    int werr;  /* write error (libuv code), 0 if none */
    int cerr;  /* connect result */
    char *buf; /* unread bytes are buf[pos, len) */
    size_t pos, len, cap;
    loom_task_t *reader, *writer, *connector;
    int rmode;
    size_t rwant;
    loom_frame_fn frame; /* the parser of a framed read, and its state */
    void *frame_ud;
    double timeout; /* seconds for each read and write; < 0 for none */
    char peer[112]; /* "ip:port", a unix socket's path or "pipe", for messages */
    /* A C owner instead of reading tasks (the HTTP client, a TLS handshake): called after
     * every read event and when the stream starts closing. */
    void (*on_event)(loom_stream_t *s);
    void *owner;
    /* An adopted sock goes back to its old owner, closed: these hooks get its `closed`. */
    const loom_sock_hooks_t *back_hooks;
    void *back_owner;
    loom_sock_t own;
};

/* Allocates a stream around an initialised-but-unconnected TCP handle. */
loom_stream_t *loom_stream_new(loom_t *h);
/* Pushes a new Lua box owning s. */
void loom_stream_push(lua_State *L, loom_stream_t *s);
loom_stream_t *loom_stream_check(lua_State *L, int idx);
void loom_stream_close(loom_stream_t *s);
/* Records the peer's address (for messages and st:peer()). */
void loom_stream_set_peer(loom_stream_t *s);
/* Takes s from its Lua box (which then reads as collected): a C owner keeps it. */
loom_stream_t *loom_stream_detach(lua_State *L, int idx);
/* Makes room for n more bytes at buf + len. */
int loom_stream_reserve(loom_stream_t *s, size_t n);
void loom_stream_read_start(loom_stream_t *s);
/* A read that completes when fn says a whole frame is in the buffer; fn (called again with
 * L) pushes the results. ud (fn's state) must live until the read ends. The stream's own
 * failures (nil, "closed: ..." / "timeout: ...") as for st:read. */
int loom_stream_read_framed(lua_State *L, loom_stream_t *s, loom_frame_fn fn, void *ud,
                            const char *fname);
void loom_stream_read_stop(loom_stream_t *s);
/* For a C owner (on_event) that parses buf[pos, len) itself: drops the first n unread bytes
 * (and a buffer a burst grew, once nothing is left unread). */
void loom_stream_consume(loom_stream_t *s, size_t n);
/* Sends bufs (through TLS when the sock has it): 0 when the kernel took everything, 1 when
 * the rest is queued in the sock (s->writer is woken once it is out, or a write failed), or
 * a libuv error. */
int loom_stream_send(loom_stream_t *s, uv_buf_t *bufs, int n);
/* Bytes written that the kernel has not taken yet (0 once closed). */
size_t loom_stream_queued(const loom_stream_t *s);
/* Whether the stream keeps the loop alive (a pooled idle connection does not). */
void loom_stream_ref(loom_stream_t *s, int ref);
/* Open, not ended, no failure, nothing unread: fit for another request. */
int loom_stream_healthy(const loom_stream_t *s);
/* "tls: ..." detail of a failed TLS stream, or NULL when TLS is not what failed. */
const char *loom_stream_tls_error(const loom_stream_t *s);

/* An upgrade: a new stream (its box pushed) takes over `sock`, a live socket another owner
 * (the HTTP server's connection) embeds, with its TLS session, its queued writes and the
 * `len` bytes at `data` that arrived after the request (they are read first). The sock's
 * hooks are swapped (loom_sock_handover); when the stream closes it, the old owner gets it
 * back for its `closed` hook, so that owner's struct must stay allocated until then. NULL
 * when out of memory (nothing pushed, the sock untouched). */
loom_stream_t *loom_stream_adopt(lua_State *L, loom_t *h, loom_sock_t *sock, const char *data,
                                 size_t len);

/* For loom.process (src/io/process.c): a stream on a pipe to a child's stdin, stdout or
 * stderr.
 *   loom_stream_new_pipe pushes the stream's box (a loom.stream like any other) and returns
 *     the stream, its uv_pipe_t initialised but not open; NULL (nothing pushed) when out of
 *     memory.
 *   loom_stream_uv gives the handle for uv_stdio_container_t.data.stream (flags
 *     UV_CREATE_PIPE | UV_READABLE_PIPE or UV_WRITABLE_PIPE, as the child sees it).
 *   loom_stream_opened: uv_spawn succeeded, the pipe is open: reads and writes may start.
 *   If uv_spawn failed, loom_stream_close(st) discards it (then pop or drop the box).
 * Such a stream ends as a socket does: the child closing its end is the end of the stream
 * (nil, "closed: end of stream"), a write to a child that closed its stdin fails with
 * nil, "closed: broken pipe (pipe)". */
loom_stream_t *loom_stream_new_pipe(lua_State *L, loom_t *h);
uv_stream_t *loom_stream_uv(loom_stream_t *st);
void loom_stream_opened(loom_stream_t *st);

/* tls_config.c: core.tls_config (a shared, cached configuration) */
int loom_open_tls(lua_State *L);
/* The configuration inside a core.tls_config object at idx (raises otherwise). */
struct loom_tls_conf *loom_tls_conf_check(lua_State *L, int idx);
/* Pushes the configuration for the settings table at idx (cached): 1, or 2 with nil, err. */
int loom_tls_conf_push(lua_State *L, int idx);

int loom_open_stream(lua_State *L);
int loom_open_dns(lua_State *L);

#endif
