/*
 * http_server_tls.c - HTTPS under the server engine's connections. Ciphertext read from the
 * socket goes into the connection's tls.c session; the handshake advances; the plaintext is
 * decrypted into the server's shared read buffer and handed to loom_conn_input, the same
 * path plain HTTP bytes take. Writes are encrypted here and leave through
 * loom_conn_write_raw. A connection's session is a pointer: plain HTTP pays one branch.
 *
 * Stalled or failed handshakes cost nothing but their connection: the handshake runs on
 * read events, never blocking, and header_timeout (counted from accept) drops a client that
 * never finishes it. Knows nothing of parsing or of Lua requests.
 */
#include <string.h>
#include <lauxlib.h>
#include "http_server.h"
#include "stream.h"
#include "tls.h"

/* Writes out what the session produced (handshake messages, records, alerts). The raw
 * write copies what the kernel does not take at once, so the session's buffer empties. */
static int flush(loom_conn_t *c) {
    const char *p;
    size_t n = loom_tls_pending(c->tls, &p);
    if (n == 0)
        return 0;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int rc = loom_conn_write_raw(c, &b, 1);
    loom_tls_sent(c->tls, n);
    return rc;
}

int loom_conn_tls_start(loom_conn_t *c) {
    char err[128];
    c->tls = loom_tls_new(c->srv->tls_conf, NULL, err, sizeof err);
    return c->tls ? 0 : -1;
}

void loom_conn_tls_free(loom_conn_t *c) {
    loom_tls_free(c->tls);
    c->tls = NULL;
}

/* Whether c still reads through session t: a handler may have closed the connection or
 * handed the session to a websocket stream (req_upgrade) while the plaintext was parsed. */
static int still_ours(loom_conn_t *c, loom_tls_t *t) {
    return c->tls == t && c->state != C_CLOSING;
}

/* Decrypts what has arrived, a read buffer at a time, into the parser. */
static void decrypt(loom_conn_t *c) {
    loom_tls_t *t = c->tls;
    char *buf = c->srv->rbuf;
    size_t cap = sizeof c->srv->rbuf;
    int rc = LOOM_TLS_WANT;
    do {
        size_t len = 0, got;
        while (len < cap && (rc = loom_tls_read(t, buf + len, cap - len, &got)) == LOOM_TLS_OK)
            len += got;
        flush(c); /* reading may answer the peer (an alert, a refused renegotiation) */
        if (len > 0)
            loom_conn_input(c, (ssize_t)len, buf);
        if (!still_ours(c, t))
            return;
    } while (rc == LOOM_TLS_OK); /* the buffer filled up: more may be waiting */
    if (rc == LOOM_TLS_EOF)
        loom_conn_input(c, UV_EOF, NULL); /* close_notify: the peer is done sending */
    else if (rc == LOOM_TLS_ERR)
        loom_conn_input(c, UV_EPROTO, NULL);
}

void loom_conn_tls_input(loom_conn_t *c, const char *data, size_t n) {
    loom_tls_t *t = c->tls;
    char *base;
    size_t cap;
    if (loom_tls_inbuf(t, n, &base, &cap) != 0) {
        loom_conn_close(c);
        return;
    }
    memcpy(base, data, n);
    loom_tls_received(t, n);
    if (!loom_tls_handshake_done(t)) {
        int rc = loom_tls_handshake(t);
        flush(c);
        if (rc == LOOM_TLS_ERR) {
            loom_conn_close(c); /* the alert went with flush; no request to answer */
            return;
        }
        if (rc != LOOM_TLS_OK)
            return;
    }
    decrypt(c);
}

int loom_conn_tls_write(loom_conn_t *c, uv_buf_t *bufs, int nbufs) {
    if (c->state == C_CLOSING || c->werr)
        return c->werr ? c->werr : UV_ECANCELED;
    if (!loom_tls_handshake_done(c->tls)) {
        c->werr = UV_ENOTCONN; /* nothing can be said before the handshake */
        return c->werr;
    }
    for (int i = 0; i < nbufs; i++)
        if (loom_tls_write(c->tls, bufs[i].base, bufs[i].len) != LOOM_TLS_OK) {
            c->werr = UV_EPROTO;
            return c->werr;
        }
    return flush(c);
}

void loom_conn_tls_close_notify(loom_conn_t *c) {
    loom_tls_close_notify(c->tls);
    flush(c);
}

loom_tls_conf_t *loom_server_tls_conf(lua_State *L, int idx) {
    loom_tls_conf_t *conf = NULL;
    if (lua_getfield(L, idx, "tls") != LUA_TNIL) {
        conf = loom_tls_conf_check(L, -1);
        loom_tls_conf_ref(conf);
    }
    lua_pop(L, 1);
    return conf;
}
