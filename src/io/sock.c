/*
 * sock.c - loom_sock: the libuv handle, reads into owner space, the write queue, cork, the
 * TLS pump, half-close and close, shared by every connection (see sock.h). Knows no HTTP,
 * no websocket and no Lua; it tells its owner through hooks and never calls up otherwise.
 */
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "sock.h"
#include "tls.h"

/* What the kernel does not take is queued in pieces of this size, so each completion shows
 * progress to a waiting writer. */
#define WRITE_PIECE (256 * 1024)
#define CORK_MIN 4096
#define TLS_DIRECT (16 * 1024) /* the largest TLS record's plaintext */
/* The plain read and write (every request's) stay a few instructions and a tail call: what
 * they leave to a helper must not be inlined into them. */
#define OUT_OF_LINE __attribute__((noinline))

struct loom_sock_cork {
    size_t len, cap;
    char data[];
};

typedef struct {
    uv_write_t req;
    loom_sock_t *s;
    char data[];
} piece_t;

static void sock_fields(loom_sock_t *s, const loom_sock_hooks_t *hooks, void *owner) {
    s->h.handle.data = owner;
    s->hooks = hooks;
    s->tls = NULL;
    s->cork = NULL;
    s->pending = 0;
    s->err = 0;
    s->flags = 0;
    s->holds = 0;
}

int loom_sock_init_tcp(loom_sock_t *s, uv_loop_t *loop, const loom_sock_hooks_t *hooks,
                       void *owner) {
    int rc = uv_tcp_init(loop, &s->h.tcp);
    sock_fields(s, hooks, owner);
    return rc;
}

int loom_sock_init_pipe(loom_sock_t *s, uv_loop_t *loop, const loom_sock_hooks_t *hooks,
                        void *owner) {
    int rc = uv_pipe_init(loop, &s->h.pipe, 0);
    sock_fields(s, hooks, owner);
    return rc;
}

void loom_sock_handover(loom_sock_t *s, const loom_sock_hooks_t *hooks, void *owner) {
    s->hooks = hooks;
    s->h.handle.data = owner;
}

static void set_err(loom_sock_t *s, int err) {
    if (!s->err)
        s->err = (int16_t)err;
}

/* ---------------------------------------------------------------- writes */

static void on_write(uv_write_t *req, int status) {
    piece_t *w = (piece_t *)req;
    loom_sock_t *s = w->s;
    free(w);
    s->pending--;
    if (status < 0)
        set_err(s, status);
    if (s->flags & LOOM_SOCK_CLOSING)
        return;
    if (s->pending == 0)
        s->hooks->drained(s, status);
    else if (s->hooks->progress)
        s->hooks->progress(s);
}

/* Queues what the kernel did not take (after `sent` bytes of bufs) as copied pieces. */
static int queue(loom_sock_t *s, uv_buf_t *bufs, int nbufs, size_t sent, size_t left) {
    int i = 0;
    size_t skip = sent;
    while (i < nbufs && skip >= bufs[i].len) /* the cursor starts after what was sent */
        skip -= bufs[i++].len;
    while (left > 0) {
        size_t piece = left < WRITE_PIECE ? left : WRITE_PIECE;
        piece_t *w = malloc(sizeof *w + piece);
        if (!w) {
            set_err(s, UV_ENOMEM);
            return UV_ENOMEM;
        }
        for (size_t off = 0; off < piece;) {
            size_t n = bufs[i].len - skip;
            if (n > piece - off)
                n = piece - off;
            memcpy(w->data + off, bufs[i].base + skip, n);
            off += n;
            skip += n;
            if (skip == bufs[i].len) {
                i++;
                skip = 0;
            }
        }
        w->s = s;
        uv_buf_t b = uv_buf_init(w->data, (unsigned)piece);
        int rc = uv_write(&w->req, &s->h.stream, &b, 1, on_write);
        if (rc < 0) {
            free(w);
            set_err(s, rc);
            return rc;
        }
        s->pending++;
        left -= piece;
    }
    return 0;
}

/* What a try-write of bufs left (rc: its result) is queued, or its failure kept. */
OUT_OF_LINE static int write_rest(loom_sock_t *s, uv_buf_t *bufs, int nbufs, int rc, size_t total) {
    if (rc < 0 && rc != UV_EAGAIN) {
        set_err(s, rc);
        return rc;
    }
    size_t sent = rc > 0 ? (size_t)rc : 0;
    return queue(s, bufs, nbufs, sent, total - sent);
}

/* The bytes go to the socket as they are: a try-write while nothing is queued (bytes must
 * not overtake queued ones), the rest copied and queued. */
static int write_raw(loom_sock_t *s, uv_buf_t *bufs, int nbufs) {
    size_t total = 0;
    if (s->err || (s->flags & LOOM_SOCK_CLOSING))
        return s->err ? s->err : UV_ECANCELED;
    for (int i = 0; i < nbufs; i++)
        total += bufs[i].len;
    if (s->pending > 0)
        return queue(s, bufs, nbufs, 0, total);
    int rc = uv_try_write(&s->h.stream, bufs, (unsigned)nbufs);
    if (rc >= 0 && (size_t)rc == total)
        return 0;
    return write_rest(s, bufs, nbufs, rc, total);
}

/* Writes out what the TLS session produced (handshake messages, records, alerts). The raw
 * write copies what the kernel does not take, so the session's buffer empties. */
static int tls_flush(loom_sock_t *s) {
    const char *p;
    size_t n = loom_tls_pending(s->tls, &p);
    if (n == 0)
        return 0;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int rc = write_raw(s, &b, 1);
    loom_tls_sent(s->tls, n);
    return rc;
}

static int cork_append(loom_sock_t *s, uv_buf_t *bufs, int nbufs);

/* The plaintext a cork gathered on TLS becomes records (at most 16 KiB each) after the
 * records already made: the order of the bytes is the order of the writes. */
static int tls_seal_cork(loom_sock_t *s) {
    loom_sock_cork_t *k = s->cork;
    if (!k || k->len == 0)
        return 0;
    size_t n = k->len;
    k->len = 0;
    if (loom_tls_write(s->tls, k->data, n) != LOOM_TLS_OK) {
        set_err(s, UV_EPROTO);
        return s->err;
    }
    return 0;
}

static int tls_write(loom_sock_t *s, uv_buf_t *bufs, int nbufs) {
    if (!loom_tls_handshake_done(s->tls)) {
        set_err(s, UV_ENOTCONN); /* nothing can be said before the handshake */
        return s->err;
    }
    if (s->flags & LOOM_SOCK_CORKED) {
        /* Small writes (an h2 session's frames, pipelined answers) gather as plaintext and
         * leave as few full records: a record per write would cost the peer a decryption
         * and 29 bytes each. A big one seals what was gathered and goes as it is. */
        size_t total = 0, had = s->cork ? s->cork->len : 0;
        for (int i = 0; i < nbufs; i++)
            total += bufs[i].len;
        if (had + total > TLS_DIRECT && tls_seal_cork(s) < 0)
            return s->err;
        if (total <= TLS_DIRECT)
            return cork_append(s, bufs, nbufs);
    }
    for (int i = 0; i < nbufs; i++)
        if (loom_tls_write(s->tls, bufs[i].base, bufs[i].len) != LOOM_TLS_OK) {
            set_err(s, UV_EPROTO);
            return s->err;
        }
    /* corked: the records gather in the session's own buffer until uncork */
    return s->flags & LOOM_SOCK_CORKED ? 0 : tls_flush(s);
}

static int cork_append(loom_sock_t *s, uv_buf_t *bufs, int nbufs) {
    loom_sock_cork_t *k = s->cork;
    size_t total = 0, len = k ? k->len : 0;
    for (int i = 0; i < nbufs; i++)
        total += bufs[i].len;
    if (!k || len + total > k->cap) {
        size_t cap = k ? k->cap * 2 : CORK_MIN;
        while (cap < len + total)
            cap *= 2;
        k = realloc(k, sizeof *k + cap);
        if (!k) {
            set_err(s, UV_ENOMEM);
            return UV_ENOMEM;
        }
        k->len = len;
        k->cap = cap;
        s->cork = k;
    }
    for (int i = 0; i < nbufs; i++) {
        memcpy(k->data + k->len, bufs[i].base, bufs[i].len);
        k->len += bufs[i].len;
    }
    return 0;
}

/* Not the plain case: a failure or a close before, TLS, a cork, or queued bytes. */
OUT_OF_LINE static int write_other(loom_sock_t *s, uv_buf_t *bufs, int nbufs) {
    if (s->err || (s->flags & LOOM_SOCK_CLOSING))
        return s->err ? s->err : UV_ECANCELED;
    if (s->tls)
        return tls_write(s, bufs, nbufs);
    if (s->flags & LOOM_SOCK_CORKED)
        return cork_append(s, bufs, nbufs);
    return write_raw(s, bufs, nbufs);
}

/* The plain case first, in as few instructions as it takes: every answer comes here. */
int loom_sock_write(loom_sock_t *s, uv_buf_t *bufs, int nbufs) {
    if (s->err | s->pending | (s->flags & (LOOM_SOCK_CLOSING | LOOM_SOCK_CORKED)) || s->tls)
        return write_other(s, bufs, nbufs);
    size_t total = 0;
    for (int i = 0; i < nbufs; i++)
        total += bufs[i].len;
    int rc = uv_try_write(&s->h.stream, bufs, (unsigned)nbufs);
    if (rc >= 0 && (size_t)rc == total)
        return 0;
    return write_rest(s, bufs, nbufs, rc, total);
}

void loom_sock_cork(loom_sock_t *s) {
    s->flags |= LOOM_SOCK_CORKED;
}

int loom_sock_uncork(loom_sock_t *s) {
    loom_sock_cork_t *k = s->cork;
    int rc = 0;
    if (!(s->flags & LOOM_SOCK_CORKED))
        return 0;
    s->flags &= (uint8_t)~LOOM_SOCK_CORKED;
    if (s->tls && tls_seal_cork(s) < 0) {
        s->cork = NULL;
        free(k);
        return s->err;
    }
    s->cork = NULL;
    if (s->tls && !(s->flags & LOOM_SOCK_CLOSING))
        rc = tls_flush(s);
    else if (k && k->len > 0) {
        uv_buf_t b = uv_buf_init(k->data, (unsigned)k->len);
        rc = write_raw(s, &b, 1); /* what stays is copied: the gathered block can go */
    }
    free(k);
    return rc;
}

/* ---------------------------------------------------------------- reading */

/* On TLS the ciphertext is read straight into the session's input buffer (no copy), with
 * room for at least a whole record: a session that only ever sees small requests keeps
 * the 16 KiB buffer it has anyway. */
OUT_OF_LINE static void tls_alloc(loom_sock_t *s, uv_buf_t *buf) {
    char *base;
    size_t len;
    if (loom_tls_inbuf(s->tls, TLS_DIRECT, &base, &len) != 0) {
        buf->base = NULL; /* libuv reports UV_ENOBUFS */
        buf->len = 0;
        return;
    }
    buf->base = base;
    buf->len = len;
}

static void on_alloc(uv_handle_t *handle, size_t hint, uv_buf_t *buf) {
    loom_sock_t *s = (loom_sock_t *)handle;
    if (s->tls)
        tls_alloc(s, buf);
    else
        s->hooks->alloc(s, hint, buf);
}

/* Whether s still reads through session t: the owner may have closed it, or taken the
 * session away, while the plaintext was handed up. */
static int still_tls(loom_sock_t *s, struct loom_tls *t) {
    return s->tls == t && !(s->flags & LOOM_SOCK_CLOSING);
}

/* Decrypts what has arrived, an owner buffer at a time. */
static void tls_decrypt(loom_sock_t *s) {
    struct loom_tls *t = s->tls;
    int rc;
    do {
        uv_buf_t buf;
        size_t len = 0, got;
        s->hooks->alloc(s, 64 * 1024, &buf);
        rc = LOOM_TLS_WANT;
        while (len < buf.len &&
               (rc = loom_tls_read(t, buf.base + len, buf.len - len, &got)) == LOOM_TLS_OK)
            len += got;
        tls_flush(s); /* reading may answer the peer (an alert, a refused renegotiation) */
        if (len > 0)
            s->hooks->input(s, (ssize_t)len, buf.base);
        if (!still_tls(s, t))
            return;
    } while (rc == LOOM_TLS_OK); /* the buffer filled up: more may be waiting */
    if (rc == LOOM_TLS_EOF)
        s->hooks->input(s, UV_EOF, NULL); /* close_notify: the peer is done sending */
    else if (rc == LOOM_TLS_ERR)
        s->hooks->input(s, UV_EPROTO, NULL);
}

/* Ciphertext read from the socket: into the session, the handshake on, then plaintext. */
static void tls_input(loom_sock_t *s, const char *data, size_t n) {
    struct loom_tls *t = s->tls;
    char *base;
    size_t cap;
    if (loom_tls_inbuf(t, n, &base, &cap) != 0) {
        s->hooks->input(s, UV_ENOMEM, NULL);
        return;
    }
    if (base != data) /* read elsewhere: the session came after the read began */
        memcpy(base, data, n);
    loom_tls_received(t, n);
    if (!loom_tls_handshake_done(t)) {
        int rc = loom_tls_handshake(t);
        tls_flush(s);
        if (rc == LOOM_TLS_ERR) {
            s->hooks->input(s, UV_EPROTO, NULL); /* the alert went with the flush */
            return;
        }
        if (rc != LOOM_TLS_OK)
            return;
        if (s->flags & LOOM_SOCK_HS_NEWS) {
            s->flags &= (uint8_t)~LOOM_SOCK_HS_NEWS;
            s->hooks->input(s, 0, NULL); /* the client's handshake is done */
            if (!still_tls(s, t))
                return;
        }
    }
    tls_decrypt(s);
}

/* TLS bytes, the end, or a failure. */
OUT_OF_LINE static void read_other(loom_sock_t *s, ssize_t nread, const uv_buf_t *buf) {
    if (nread > 0) {
        tls_input(s, buf->base, (size_t)nread); /* plaintext comes back through input */
    } else if (nread < 0) {
        /* a FIN that cuts a TLS record short is a truncation, not an end */
        if (nread == UV_EOF && s->tls && loom_tls_transport_end(s->tls) == LOOM_TLS_ERR)
            nread = UV_EPROTO;
        s->hooks->input(s, nread, NULL);
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
    loom_sock_t *s = (loom_sock_t *)stream;
    if (nread > 0 && !s->tls)
        s->hooks->input(s, nread, buf->base);
    else
        read_other(s, nread, buf);
}

int loom_sock_read_start(loom_sock_t *s) {
    if (s->flags & (LOOM_SOCK_READING | LOOM_SOCK_CLOSING))
        return 0;
    int rc = uv_read_start(&s->h.stream, on_alloc, on_read);
    if (rc == 0)
        s->flags |= LOOM_SOCK_READING;
    return rc;
}

void loom_sock_read_stop(loom_sock_t *s) {
    if (s->flags & LOOM_SOCK_READING) {
        uv_read_stop(&s->h.stream);
        s->flags &= (uint8_t)~LOOM_SOCK_READING;
    }
}

/* ---------------------------------------------------------------- TLS session */

int loom_sock_tls_start(loom_sock_t *s, struct loom_tls_conf *conf, const char *name) {
    char err[128];
    s->tls = loom_tls_new(conf, name, err, sizeof err);
    return s->tls ? 0 : -1;
}

int loom_sock_tls_handshake(loom_sock_t *s) {
    s->flags |= LOOM_SOCK_HS_NEWS;
    int rc = loom_tls_handshake(s->tls);
    int wrc = tls_flush(s);
    return rc == LOOM_TLS_ERR ? UV_EPROTO : wrc;
}

int loom_sock_tls_ready(const loom_sock_t *s) {
    return s->tls && loom_tls_handshake_done(s->tls);
}

struct loom_tls *loom_sock_tls_detach(loom_sock_t *s) {
    struct loom_tls *t = s->tls;
    s->tls = NULL;
    return t;
}

void loom_sock_tls_attach(loom_sock_t *s, struct loom_tls *t) {
    s->tls = t;
}

const char *loom_sock_tls_error(const loom_sock_t *s) {
    return s->tls ? loom_tls_error(s->tls) : NULL;
}

/* ---------------------------------------------------------------- ends */

typedef struct {
    uv_shutdown_t req;
    loom_sock_shut_cb done;
} shut_t;

static void on_shutdown(uv_shutdown_t *req, int status) {
    shut_t *sh = (shut_t *)req;
    loom_sock_t *s = (loom_sock_t *)req->handle;
    loom_sock_shut_cb done = sh->done;
    free(sh);
    if (!(s->flags & LOOM_SOCK_CLOSING) && done)
        done(s, status);
}

int loom_sock_shutdown(loom_sock_t *s, loom_sock_shut_cb done) {
    if (s->flags & (LOOM_SOCK_SHUT | LOOM_SOCK_CLOSING))
        return s->flags & LOOM_SOCK_CLOSING ? UV_ECANCELED : 0;
    loom_sock_uncork(s);
    if (s->tls) {
        loom_tls_close_notify(s->tls);
        tls_flush(s);
    }
    shut_t *sh = malloc(sizeof *sh);
    if (!sh)
        return UV_ENOMEM;
    sh->done = done;
    int rc = uv_shutdown(&sh->req, &s->h.stream, on_shutdown);
    if (rc != 0) {
        free(sh);
        return rc;
    }
    s->flags |= LOOM_SOCK_SHUT;
    return 0;
}

static void on_close(uv_handle_t *handle) {
    loom_sock_t *s = (loom_sock_t *)handle;
    s->flags |= LOOM_SOCK_CLOSED;
    loom_tls_free(s->tls);
    s->tls = NULL;
    free(s->cork);
    s->cork = NULL;
    s->hooks->closed(s);
}

void loom_sock_close(loom_sock_t *s) {
    if (s->flags & LOOM_SOCK_CLOSING)
        return;
    if (s->holds > 0) {
        /* A job writing to the descriptor (static sendfile) would otherwise go on until its
         * file is out, seconds on a fast reader; after a shutdown its next write fails, so
         * the close waits for one call of the job, not for the whole file. */
        uv_os_fd_t fd;
        if (uv_fileno(&s->h.handle, &fd) == 0)
            shutdown(fd, SHUT_RDWR);
        loom_sock_read_stop(s); /* uv_close would stop it; no input may come meanwhile */
        s->flags |= LOOM_SOCK_CLOSING | LOOM_SOCK_DEFERRED;
        return;
    }
    s->flags |= LOOM_SOCK_CLOSING;
    s->flags &= (uint8_t)~LOOM_SOCK_READING;
    uv_close(&s->h.handle, on_close);
}

int loom_sock_hold(loom_sock_t *s) {
    if (s->flags & LOOM_SOCK_CLOSING)
        return UV_EBADF;
    if (s->holds == UINT8_MAX)
        return UV_EBUSY;
    s->holds++;
    return 0;
}

void loom_sock_release(loom_sock_t *s) {
    if (--s->holds > 0 || !(s->flags & LOOM_SOCK_DEFERRED))
        return;
    s->flags &= (uint8_t)~LOOM_SOCK_DEFERRED;
    uv_close(&s->h.handle, on_close);
}

int loom_sock_pending_reset(loom_sock_t *s) {
    uv_os_fd_t fd;
    int err = 0;
    socklen_t len = sizeof err;
    if (uv_fileno(&s->h.handle, &fd) != 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return 0;
    return err ? uv_translate_sys_error(err) : 0;
}

/* ---------------------------------------------------------------- unix socket files */

/* Whether something accepts on the socket file at path: 1, 0 (refused: stale), or an error. */
static int unix_live(const char *path) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path)
        return UV_ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return uv_translate_sys_error(errno);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa); /* local: no wait */
    int err = errno;
    close(fd);
    if (rc == 0)
        return 1;
    return err == ECONNREFUSED ? 0 : uv_translate_sys_error(err);
}

int loom_sock_bind_unix(uv_pipe_t *p, const char *path, int mode, unsigned long *ino) {
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return UV_EEXIST;
        int live = unix_live(path);
        if (live != 0)
            return live > 0 ? UV_EADDRINUSE : live;
        if (unlink(path) != 0 && errno != ENOENT)
            return uv_translate_sys_error(errno);
    }
    int rc = uv_pipe_bind(p, path);
    if (rc != 0)
        return rc;
    if (mode > 0 && chmod(path, (mode_t)mode) != 0)
        return uv_translate_sys_error(errno);
    *ino = stat(path, &st) == 0 ? (unsigned long)st.st_ino : 0;
    return 0;
}

void loom_sock_unlink_unix(const char *path, unsigned long ino) {
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && (unsigned long)st.st_ino == ino)
        unlink(path);
}
