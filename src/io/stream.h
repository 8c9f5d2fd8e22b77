/*
 * stream.h - TCP byte streams for tasks: buffered reads (any, n bytes, line, all), writes
 * that wait under backpressure, one idempotent close. The HTTP client and websockets stand
 * on this; TLS slots in below the read buffer (plaintext is what sits in `buf`).
 */
#ifndef LOOM_STREAM_H
#define LOOM_STREAM_H

#include <stddef.h>
#include "host.h"

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
    uv_tcp_t tcp;
    uv_connect_t creq;
    int state;
    int boxed;   /* a Lua box still points here */
    int eof;     /* the peer finished sending */
    int rerr;    /* read error (libuv code), 0 if none */
    int werr;    /* write error (libuv code), 0 if none */
    int cerr;    /* connect result */
    int reading; /* uv_read_start is active */
    int pending_writes;
    char *buf; /* unread bytes are buf[pos, len) */
    size_t pos, len, cap;
    loom_task_t *reader, *writer, *connector;
    int rmode;
    size_t rwant;
    loom_frame_fn frame; /* the parser of a framed read, and its state */
    void *frame_ud;
    double timeout;       /* seconds for each read and write; < 0 for none */
    char peer[64];        /* "ip:port", for messages */
    struct loom_tls *tls; /* TLS below the buffer (src/io/stream_tls.c), or NULL */
    /* A C owner instead of reading tasks (the HTTP client, a TLS handshake): called after
     * every read event and when the stream starts closing. */
    void (*on_event)(loom_stream_t *s);
    void *owner;
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
/* Sends bufs, through TLS when the stream has it: 0 when the kernel took everything, 1 when
 * the rest is queued (pending_writes; on completion s->writer is woken), or a libuv error. */
int loom_stream_send(loom_stream_t *s, uv_buf_t *bufs, int n);
/* The same below TLS: bytes go to the socket as they are. */
int loom_stream_send_raw(loom_stream_t *s, uv_buf_t *bufs, int n);

/* stream_tls.c */
void loom_stream_tls_alloc(loom_stream_t *s, uv_buf_t *buf);
void loom_stream_tls_input(loom_stream_t *s, size_t n);
int loom_stream_tls_send(loom_stream_t *s, uv_buf_t *bufs, int n);
/* The socket ended under TLS: 0, or UV_EPROTO when that cut a record short (the "tls: ..."
 * detail then says so). */
int loom_stream_tls_end(loom_stream_t *s);
void loom_stream_tls_free(loom_stream_t *s);
/* Takes over a session that another owner (the HTTP server, on an upgrade) ran on this
 * socket; records it had received but not decrypted join the buffer. */
void loom_stream_tls_adopt(loom_stream_t *s, struct loom_tls *t);
/* "tls: ..." detail of a failed TLS stream, or NULL when TLS is not what failed. */
const char *loom_stream_tls_error(loom_stream_t *s);
int loom_open_tls(lua_State *L);
/* The configuration inside a core.tls_config object at idx (raises otherwise). */
struct loom_tls_conf *loom_tls_conf_check(lua_State *L, int idx);

int loom_open_stream(lua_State *L);
int loom_open_dns(lua_State *L);

#endif
