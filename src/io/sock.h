/*
 * sock.h - loom_sock: one socket object under every protocol (the io layer of
 * docs/architecture.md). It owns the libuv handle, reads into space its owner provides,
 * writes with a gathered try-write and a queue of copied pieces (backpressure, a high-water
 * mark), corks, runs the TLS pump (tls.c between ciphertext and plaintext: handshake,
 * decrypt, encrypt, close_notify), half-closes and closes.
 *
 * A sock is embedded in its owner's struct (no allocation of its own) and talks to the
 * owner only through a const table of hooks and the owner pointer (the handle's `data`).
 * It knows no HTTP, no websocket and no Lua: protocols sit above it and set its hooks.
 * Swapping the hooks and the owner (loom_sock_handover) moves a live socket, with its TLS
 * session and its queued writes, from one protocol to another.
 */
#ifndef LOOM_SOCK_H
#define LOOM_SOCK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct loom_sock loom_sock_t;
struct loom_tls;
struct loom_tls_conf;

/* What the owner is told. Every hook runs from a libuv callback; none may free the owner
 * but `closed`. */
typedef struct {
    /* Where the next read lands (on TLS: the plaintext decrypted; the ciphertext is read
     * into the session's own buffer). */
    void (*alloc)(loom_sock_t *s, size_t hint, uv_buf_t *buf);
    /* Plaintext bytes (nread > 0, in the space alloc gave), or the end of the peer's data
     * (UV_EOF: a FIN, or a TLS close_notify) or a failure (< 0; UV_EPROTO for TLS). nread 0
     * (data NULL) only for an owner that started a client handshake (loom_sock_tls_handshake):
     * the handshake is done, whether or not bytes follow. */
    void (*input)(loom_sock_t *s, ssize_t nread, const char *data);
    /* The write queue emptied (status 0), or a queued write failed (status < 0). */
    void (*drained)(loom_sock_t *s, int status);
    /* Optional: a queued piece went out and more wait (a send timeout counts from here). */
    void (*progress)(loom_sock_t *s);
    /* The handle is closed (uv_close's callback): the owner may free the sock now. */
    void (*closed)(loom_sock_t *s);
} loom_sock_hooks_t;

/* Called when a half-close (loom_sock_shutdown) has gone through, unless the sock closed. */
typedef void (*loom_sock_shut_cb)(loom_sock_t *s, int status);

typedef struct loom_sock_cork loom_sock_cork_t;

struct loom_sock {
    /* First member: a libuv handle pointer is the sock's. h.handle.data is the owner. The
     * pipe (unix-domain sockets) shares the one write path; it is 16 bytes larger than the
     * TCP handle. */
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    const loom_sock_hooks_t *hooks;
    struct loom_tls *tls;   /* the session between socket and owner, or NULL */
    loom_sock_cork_t *cork; /* plaintext gathered while corked (not on TLS), or NULL */
    uint32_t pending;       /* queued write pieces not yet completed */
    int16_t err;            /* the first write failure (a libuv error), sticky */
    uint8_t flags;          /* LOOM_SOCK_* */
    uint8_t holds;          /* thread-pool jobs using the descriptor (loom_sock_hold) */
};

enum {
    LOOM_SOCK_READING = 1,
    LOOM_SOCK_CORKED = 2,
    LOOM_SOCK_SHUT = 4,      /* uv_shutdown was called */
    LOOM_SOCK_CLOSING = 8,   /* closed by its owner (uv_close called, or DEFERRED) */
    LOOM_SOCK_CLOSED = 16,   /* its callback ran */
    LOOM_SOCK_HS_NEWS = 32,  /* a client handshake runs: its end is told as input(s, 0, NULL) */
    LOOM_SOCK_DEFERRED = 64, /* closed while held: uv_close waits for the last release */
};

/* Queued bytes past which an owner should stop producing (wait for `drained`). */
#define LOOM_SOCK_HIGH_WATER (256 * 1024)

/* Makes s a TCP socket of loop with its hooks and owner. 0 or a libuv error (then the sock
 * needs no close). */
int loom_sock_init_tcp(loom_sock_t *s, uv_loop_t *loop, const loom_sock_hooks_t *hooks,
                       void *owner);
/* The same for a unix-domain socket or a pipe (uv_pipe_t, no IPC): one write path for both. */
int loom_sock_init_pipe(loom_sock_t *s, uv_loop_t *loop, const loom_sock_hooks_t *hooks,
                        void *owner);
/* A TCP sock (else a pipe). */
static inline int loom_sock_is_tcp(const loom_sock_t *s) {
    return s->h.handle.type == UV_TCP;
}
static inline void *loom_sock_owner(const loom_sock_t *s) {
    return s->h.handle.data;
}
/* The sock now reports to other hooks and another owner (an upgrade): reads, queued
 * writes, the TLS session and the cork go along. */
void loom_sock_handover(loom_sock_t *s, const loom_sock_hooks_t *hooks, void *owner);

/* TLS: a new session of conf on s (name: the peer's name to check, or NULL). 0 or -1. */
int loom_sock_tls_start(loom_sock_t *s, struct loom_tls_conf *conf, const char *name);
/* A client starts the handshake (a server's starts with the peer's first bytes): 0, or a
 * libuv error. The handshake goes on as bytes come; loom_sock_tls_ready says when it is
 * done (writes before that fail with UV_ENOTCONN). */
int loom_sock_tls_handshake(loom_sock_t *s);
int loom_sock_tls_ready(const loom_sock_t *s);
/* Takes the session away from s (for an owner that moves it elsewhere); NULL if none. */
struct loom_tls *loom_sock_tls_detach(loom_sock_t *s);
/* Gives s a session made elsewhere (loom_tls_new with the caller's error message). */
void loom_sock_tls_attach(loom_sock_t *s, struct loom_tls *t);
/* The session's "what went wrong", for "tls: ..." messages; NULL without a session. */
const char *loom_sock_tls_error(const loom_sock_t *s);

int loom_sock_read_start(loom_sock_t *s);
/* Whether the handle keeps the loop alive (an idle pooled connection does not). */
static inline void loom_sock_ref(loom_sock_t *s, int ref) {
    if (!(s->flags & LOOM_SOCK_CLOSING)) {
        if (ref)
            uv_ref(&s->h.handle);
        else
            uv_unref(&s->h.handle);
    }
}
void loom_sock_read_stop(loom_sock_t *s);
static inline int loom_sock_reading(const loom_sock_t *s) {
    return s->flags & LOOM_SOCK_READING;
}

/* Writes bufs (encrypted on TLS): what the kernel does not take at once is copied and
 * queued in pieces, so bufs may be reused at return. 0 or a libuv error (also kept, and
 * returned by every later write). While corked the bytes are gathered instead. */
int loom_sock_write(loom_sock_t *s, uv_buf_t *bufs, int nbufs);
/* Cork: writes gather until uncork, which sends them with one write. 0 or an error. */
void loom_sock_cork(loom_sock_t *s);
int loom_sock_uncork(loom_sock_t *s);
static inline uint32_t loom_sock_pending(const loom_sock_t *s) {
    return s->pending;
}
static inline int loom_sock_error(const loom_sock_t *s) {
    return s->err;
}
/* Bytes queued in the kernel's stead (libuv's write_queue_size). */
static inline size_t loom_sock_queued(const loom_sock_t *s) {
    return s->h.stream.write_queue_size;
}
static inline int loom_sock_over_high_water(const loom_sock_t *s) {
    return loom_sock_queued(s) >= LOOM_SOCK_HIGH_WATER;
}

/* Half-close after what is queued: a TLS close_notify, then a FIN (uv_shutdown "waits for
 * pending write requests to complete"). 0 or a libuv error. */
int loom_sock_shutdown(loom_sock_t *s, loom_sock_shut_cb done);
/* Closes; idempotent. The `closed` hook comes from uv_close's callback. On a held sock
 * the close is pending: reading stops and writes fail at once (the owner sees a closing
 * sock as usual), and uv_close runs at the last release, so `closed` comes later. */
void loom_sock_close(loom_sock_t *s);
/* A thread-pool job uses the sock's descriptor (uv_fileno) meanwhile: the descriptor stays
 * open, so its number cannot go to another socket under the job. 0, or UV_EBADF on a
 * closing sock (UV_EBUSY past 255 holds). Each hold is released on the loop, once the job is done.
 */
int loom_sock_hold(loom_sock_t *s);
void loom_sock_release(loom_sock_t *s);
static inline int loom_sock_closing(const loom_sock_t *s) {
    return s->flags & LOOM_SOCK_CLOSING;
}
static inline int loom_sock_closed(const loom_sock_t *s) {
    return s->flags & LOOM_SOCK_CLOSED;
}

/* A listening unix-domain socket's file: binds p at path, where a stale socket file (nobody
 * accepts on it: a server that died) is replaced, while a live one gives UV_EADDRINUSE and
 * a file of another kind UV_EEXIST; mode > 0 is then set on the file (chmod). 0 or a libuv
 * error; *ino: the file's inode, for loom_sock_unlink_unix. */
int loom_sock_bind_unix(uv_pipe_t *p, const char *path, int mode, unsigned long *ino);
/* Removes the socket file at path when it is still the one loom_sock_bind_unix made. */
void loom_sock_unlink_unix(const char *path, unsigned long ino);

/* A reset the kernel recorded (SO_ERROR) as a libuv error, or 0: an EOF after an RST is a
 * failure, not an end. */
int loom_sock_pending_reset(loom_sock_t *s);

#endif
