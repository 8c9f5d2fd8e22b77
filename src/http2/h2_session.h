/*
 * h2_session.h - the server side of one HTTP/2 connection on libnghttp2, over a loom_sock
 * (src/io/sock.h). It owns the nghttp2 session: framing, HPACK, flow control, the preface and
 * SETTINGS, and the defences of docs/http2.md (concurrent streams, header list size,
 * CONTINUATION frames, rapid reset, empty-frame floods, HPACK table bounds, PING and
 * SETTINGS ACK floods). Requests go up through a const table of callbacks; answers come down
 * through loom_h2_respond / loom_h2_write; the bytes leave in one corked write per loop turn.
 *
 * It knows no Lua and no HTTP/1: the layer above (the server engine, next step) maps streams
 * onto request objects. A session takes over a live sock (loom_sock_handover), so it works the
 * same after ALPN "h2" on TLS and after an HTTP/1 connection read the h2c preface.
 */
#ifndef LOOM_H2_SESSION_H
#define LOOM_H2_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include "io/sock.h"

typedef struct loom_h2_session loom_h2_session_t;
typedef struct loom_h2_stream loom_h2_stream_t;

/* HTTP/2 error codes (RFC 9113 section 7), as nghttp2 numbers them. */
enum {
    LOOM_H2_NO_ERROR = 0x0,
    LOOM_H2_PROTOCOL_ERROR = 0x1,
    LOOM_H2_INTERNAL_ERROR = 0x2,
    LOOM_H2_REFUSED_STREAM = 0x7,
    LOOM_H2_CANCEL = 0x8,
    LOOM_H2_ENHANCE_YOUR_CALM = 0xb,
};

/* The client connection preface, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" (24 bytes). */
#define LOOM_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define LOOM_H2_PREFACE_LEN 24

/* A stream's queued answer bytes past which loom_h2_write's caller should wait for
 * on_writable (the peer's flow-control window, not the socket, is what holds them). */
#define LOOM_H2_STREAM_HIGH_WATER (64 * 1024)

typedef struct {
    const char *name, *value; /* not NUL-terminated; names are lowercase (nghttp2 checks) */
    size_t namelen, valuelen;
} loom_h2_header_t;

typedef struct {
    const char *p; /* NULL when the pseudo-header was absent */
    size_t len;
} loom_h2_span_t;

/* A request head. nghttp2 has checked it (RFC 9113 8.3: the pseudo-headers a request needs,
 * no connection-specific fields, lowercase names). The spans stay valid until the stream
 * ends (on_reset or on_close). */
typedef struct {
    loom_h2_span_t method, path, authority, scheme;
    loom_h2_span_t status;           /* a client session's response head: ":status" */
    const loom_h2_header_t *headers; /* the regular fields, in arrival order */
    size_t nheaders;
    size_t bytes; /* the header list size as RFC 9113 6.5.2 counts it */
} loom_h2_head_t;

/* What the layer above is told. Every callback but on_closed may run inside
 * loom_h2_session_feed (so: from the sock's input hook). A stream is the layer's from
 * on_request until exactly one of on_reset / on_close, after which it is freed. */
typedef struct {
    /* A request head is complete (HEADERS and any CONTINUATION). */
    void (*on_request)(loom_h2_stream_t *st, const loom_h2_head_t *head);
    /* Body bytes. The peer may send no more than the window the layer has given back with
     * loom_h2_consume, so a reader that does not consume holds at most one window. */
    void (*on_data)(loom_h2_stream_t *st, const char *data, size_t len);
    /* The request body ended (END_STREAM). */
    void (*on_end)(loom_h2_stream_t *st);
    /* The stream ended before its answer went out whole: the peer's RST_STREAM (code is its
     * code), a reset of ours, or the connection's end. */
    void (*on_reset)(loom_h2_stream_t *st, uint32_t code);
    /* Optional: the answer went out whole (its END_STREAM was sent). */
    void (*on_close)(loom_h2_stream_t *st);
    /* Optional: a stream loom_h2_write left over LOOM_H2_STREAM_HIGH_WATER fell below a
     * quarter of it. */
    void (*on_writable)(loom_h2_stream_t *st);
    /* The connection is closed and every stream gone: the owner may free what holds the
     * sock. The session frees itself right after this returns. */
    void (*on_closed)(loom_h2_session_t *s);
} loom_h2_callbacks_t;

typedef struct {
    uint32_t max_streams;       /* SETTINGS_MAX_CONCURRENT_STREAMS (100) */
    uint32_t window;            /* SETTINGS_INITIAL_WINDOW_SIZE, per stream (65535) */
    uint32_t conn_window;       /* the connection's receive window (1 MiB) */
    uint32_t max_header;        /* SETTINGS_MAX_HEADER_LIST_SIZE; past it: 431 (16 KiB) */
    uint32_t max_continuations; /* CONTINUATION frames per header block (8) */
    uint32_t header_table;      /* HPACK dynamic table both ways (4096) */
    uint32_t rst_burst;         /* streams reset by or because of the peer: a token bucket */
    uint32_t rst_rate;          /*   of rst_burst tokens, rst_rate back per second (1000, 33) */
    uint32_t junk_burst;        /* empty DATA/HEADERS/CONTINUATION, PRIORITY, SETTINGS */
    uint32_t junk_rate;         /*   frames: the same kind of bucket (1000, 100) */
    uint32_t max_outbound_ack;  /* SETTINGS/PING ACKs queued unsent: past it, a flood (1000) */
    int client;                 /* 1: a client session (loom_h2_request; on_request is the
                                   response head, on_end its END_STREAM) */
    char *rbuf;                 /* where reads land (shared by the owner's connections), */
    size_t rbuf_len;            /*   or NULL: the session's own 16 KiB */
} loom_h2_opts_t;

void loom_h2_opts_default(loom_h2_opts_t *o);

/* A server session on sock, which it takes over (hooks and owner; reading starts), with its
 * SETTINGS queued. sock NULL: a session with no socket, fed by loom_h2_session_feed, whose
 * output is dropped (the fuzz target). data: the owner's. NULL if out of memory. */
loom_h2_session_t *loom_h2_session_new(loom_sock_t *sock, const loom_h2_opts_t *o,
                                       const loom_h2_callbacks_t *cb, void *data);
/* Bytes from the peer: the owner's reads before the takeover (an HTTP/1 connection that saw
 * the preface), or the fuzz target's. 0, or -1 when the session is ending. */
int loom_h2_session_feed(loom_h2_session_t *s, const char *data, size_t len);
/* Graceful with LOOM_H2_NO_ERROR: GOAWAY naming the last stream taken, those streams finish,
 * then the connection closes. Any other code: GOAWAY, then close at once. */
void loom_h2_goaway(loom_h2_session_t *s, uint32_t code);
/* Closes the connection now; streams left get on_reset(CANCEL), then on_closed. */
void loom_h2_session_close(loom_h2_session_t *s);
/* A session without a sock only (with a sock the session frees itself after on_closed). */
void loom_h2_session_free(loom_h2_session_t *s);

void *loom_h2_session_data(const loom_h2_session_t *s);
loom_sock_t *loom_h2_session_sock(const loom_h2_session_t *s);
/* Open streams that reached on_request and have not ended. */
size_t loom_h2_session_streams(const loom_h2_session_t *s);
/* Why the connection failed under the session (a TLS read error's text), or NULL. */
const char *loom_h2_session_failure(const loom_h2_session_t *s);
/* The code of the GOAWAY this side sent (or is sending), or -1 if none. */
int64_t loom_h2_session_goaway_code(const loom_h2_session_t *s);

/* Client sessions: a request on a new stream. h[0..n) are the fields, pseudo-headers
 * (":method", ":scheme", ":authority", ":path") first; names are lowercased here and
 * connection-specific fields dropped. body: a body follows with loom_h2_write (its last
 * call ends the stream). data: the stream's. NULL when the session takes no more streams
 * (GOAWAY, closing) or out of memory. The stream is the layer's from here until exactly one
 * of on_close (the whole response came) / on_reset. */
loom_h2_stream_t *loom_h2_request(loom_h2_session_t *s, const loom_h2_header_t *h, size_t n,
                                  int body, void *data);
/* The peer's SETTINGS_MAX_CONCURRENT_STREAMS (unlimited: UINT32_MAX). */
uint32_t loom_h2_session_peer_max_streams(const loom_h2_session_t *s);
/* 1 once the session takes no new streams: the peer's GOAWAY, our own, or closing. */
int loom_h2_session_draining(const loom_h2_session_t *s);

/* 1 if data starts with the client preface, 0 if it cannot, -1 if too short to tell. */
int loom_h2_is_preface(const char *data, size_t len);

loom_h2_session_t *loom_h2_stream_session(const loom_h2_stream_t *st);
int32_t loom_h2_stream_id(const loom_h2_stream_t *st);
void *loom_h2_stream_data(const loom_h2_stream_t *st);
void loom_h2_stream_set_data(loom_h2_stream_t *st, void *data);

/* The answer's head: status and fields (names lowercased here; connection-specific fields,
 * which HTTP/2 forbids, are dropped). end: no body follows (HEAD, 204, 304). Otherwise the
 * body comes with loom_h2_write. 0, or -1 (answered already, or out of memory). */
int loom_h2_respond(loom_h2_stream_t *st, int status, const loom_h2_header_t *h, size_t n, int end);
/* An interim answer (1xx, e.g. 100 Continue) before the final head. 0, or -1 (answered
 * already, reset, a client session, or a status outside 100-199). */
int loom_h2_informational(loom_h2_stream_t *st, int status);
/* Queues body bytes (copied); last: the body ends with them. Returns the bytes the stream
 * now has queued (past LOOM_H2_STREAM_HIGH_WATER, wait for on_writable), or -1 (no head
 * yet, ended already, out of memory). */
int64_t loom_h2_write(loom_h2_stream_t *st, const char *data, size_t len, int last);
/* The layer has taken n bytes given by on_data: the peer may send that many more. */
void loom_h2_consume(loom_h2_stream_t *st, size_t n);
/* RST_STREAM with code; on_reset follows (from the next flush, not from inside this call). */
void loom_h2_reset(loom_h2_stream_t *st, uint32_t code);

#endif
