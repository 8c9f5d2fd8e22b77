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

typedef struct loom_stream {
    loom_res_t res;
    loom_t *host;
    uv_tcp_t tcp;
    uv_connect_t creq;
    int state;
    int boxed;    /* a Lua box still points here */
    int eof;      /* the peer finished sending */
    int rerr;     /* read error (libuv code), 0 if none */
    int werr;     /* write error (libuv code), 0 if none */
    int cerr;     /* connect result */
    int reading;  /* uv_read_start is active */
    int pending_writes;
    char *buf;    /* unread bytes are buf[pos, len) */
    size_t pos, len, cap;
    loom_task_t *reader, *writer, *connector;
    int rmode;
    size_t rwant;
    double timeout; /* seconds for each read and write; < 0 for none */
    char peer[64];  /* "ip:port", for messages */
} loom_stream_t;

/* Allocates a stream around an initialised-but-unconnected TCP handle. */
loom_stream_t *loom_stream_new(loom_t *h);
/* Pushes a new Lua box owning s. */
void loom_stream_push(lua_State *L, loom_stream_t *s);
loom_stream_t *loom_stream_check(lua_State *L, int idx);
void loom_stream_close(loom_stream_t *s);

int loom_open_stream(lua_State *L);
int loom_open_dns(lua_State *L);

#endif
