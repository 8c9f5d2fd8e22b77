/*
 * tls.h - mbedTLS between a ciphertext buffer and the caller's plaintext: a configuration
 * (trust anchors, own certificate, verification) shared by many sessions, and a session
 * that is fed the bytes read from the socket and hands back the bytes to write to it.
 * Knows no Lua and no libuv; works with mbedTLS 2.28 and 3.x.
 */
#ifndef LOOM_TLS_H
#define LOOM_TLS_H

#include <stddef.h>

typedef struct loom_tls_conf loom_tls_conf_t;
typedef struct loom_tls loom_tls_t;

/* A certificate chain and its key, and the host names they serve. */
typedef struct {
    const char *cert; /* certificate chain, PEM or DER file */
    const char *key;  /* its private key */
    const char *const
        *names; /* NULL-terminated; NULL: the dNSNames (else the CN) of the certificate */
} loom_tls_cert_t;

typedef struct {
    int server;          /* 0: client */
    int verify;          /* client: check the peer's chain and name */
    const char *ca_file; /* NULL: the system bundle */
    const char *cert;    /* own certificate chain (PEM or DER file), optional for clients */
    const char *key;     /* its private key */
    /* Servers: the pairs to choose from by the client's SNI, the first when no name matches
     * (or none was sent). Used instead of cert and key when ncerts > 0. */
    const loom_tls_cert_t *certs;
    int ncerts;
    /* ALPN protocols offered, most wanted first, comma-separated ("h2,http/1.1"); NULL or
     * "": none. Copied into the configuration. */
    const char *alpn;
} loom_tls_opts_t;

/* Results of the session calls. */
enum { LOOM_TLS_OK = 0, LOOM_TLS_WANT = 1, LOOM_TLS_EOF = 2, LOOM_TLS_ERR = -1 };

/* A new configuration with one reference, or NULL with a message in err. */
loom_tls_conf_t *loom_tls_conf_new(const loom_tls_opts_t *o, char *err, size_t errlen);
void loom_tls_conf_ref(loom_tls_conf_t *c);
void loom_tls_conf_unref(loom_tls_conf_t *c);

/* A session that will check the peer against `name` (a host name or an IP literal; NULL:
 * no name check). The session holds a reference to the configuration. */
loom_tls_t *loom_tls_new(loom_tls_conf_t *c, const char *name, char *err, size_t errlen);
void loom_tls_free(loom_tls_t *t);

/* Ciphertext in: space to read into (at least `want` bytes), then how much arrived. */
int loom_tls_inbuf(loom_tls_t *t, size_t want, char **base, size_t *len);
void loom_tls_received(loom_tls_t *t, size_t n);
/* The transport ended (TCP FIN): EOF when that fell between records, ERR (with the error
 * set) when it cut a record short - truncation, not an end (RFC 8446 6.1, RFC 9112 9.8). An
 * end between records without close_notify is taken as an end, as Go's crypto/tls does:
 * many servers close so. */
int loom_tls_transport_end(loom_tls_t *t);

/* Advances the handshake: OK when done, WANT when it needs the peer, ERR. */
int loom_tls_handshake(loom_tls_t *t);
int loom_tls_handshake_done(const loom_tls_t *t);
/* Plaintext out of what arrived: OK with *got > 0, WANT, EOF (close_notify), ERR. */
int loom_tls_read(loom_tls_t *t, char *out, size_t cap, size_t *got);
/* Encrypts all of p into the outgoing buffer: OK or ERR. */
int loom_tls_write(loom_tls_t *t, const char *p, size_t n);
/* Queues a close_notify alert in the outgoing buffer (after the handshake; else nothing). */
void loom_tls_close_notify(loom_tls_t *t);

/* Ciphertext out: what waits to be sent, then how much the caller took. */
size_t loom_tls_pending(loom_tls_t *t, const char **p);
void loom_tls_sent(loom_tls_t *t, size_t n);

/* What went wrong, for "tls: ..." messages. */
const char *loom_tls_error(const loom_tls_t *t);
/* The protocol ALPN chose once the handshake is done ("h2", "http/1.1"), or NULL. */
const char *loom_tls_alpn(const loom_tls_t *t);

#endif
