/*
 * tls.c - mbedTLS between a ciphertext and a plaintext buffer. The BIO callbacks given to
 * mbedTLS never touch a socket: received ciphertext waits in `in` until mbedTLS asks for
 * it, and what mbedTLS sends piles up in `out` until the caller writes it out. So the
 * same session works under any event loop. Knows no Lua and no libuv.
 *
 * Host name checks: mbedTLS compares a name against dNSName entries and the CN. IP
 * literals are checked here against iPAddress entries (2.28 has no such check), and the
 * name given to mbedTLS is then explicitly NULL, which 3.6 requires to allow that.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <mbedtls/version.h>
#include <mbedtls/ssl.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/pk.h>
#include <mbedtls/error.h>
#include <mbedtls/asn1.h>
#include <mbedtls/oid.h>
#if MBEDTLS_VERSION_MAJOR >= 3 && defined(MBEDTLS_PSA_CRYPTO_C)
#include <psa/crypto.h>
#endif
#include "tls.h"

/* One certificate chain with its key, and the names it is chosen for by SNI. */
typedef struct {
    mbedtls_x509_crt crt;
    mbedtls_pk_context key;
    char **names;
    int nnames;
} own_cert_t;

struct loom_tls_conf {
    int refs;
    int server;
    int verify;
    mbedtls_ssl_config conf;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca;
    own_cert_t *own; /* own[0] is the default */
    int nown;
    char *alpn_buf;    /* the ALPN names, NUL-separated */
    const char **alpn; /* NULL-terminated, into alpn_buf: mbedTLS keeps the pointer */
};

struct loom_tls {
    loom_tls_conf_t *conf;
    mbedtls_ssl_context ssl;
    char *in;
    size_t in_pos, in_len, in_cap;
    char *out;
    size_t out_len, out_cap;
    int done;
    /* Record framing of the ciphertext that arrived, to tell an end of the transport
     * between records from one inside a record (a cut): header bytes of the next record
     * seen so far, and bytes of the current record still to come. */
    unsigned char rec_hdr[5];
    int rec_hlen;
    size_t rec_left;
    int iplen; /* > 0: the peer must show this iPAddress */
    unsigned char ip[16];
    char err[200];
};

/* Where distributions keep the bundle of trusted roots (SSL_CERT_FILE comes first). */
static const char *const ca_paths[] = {
    "/etc/ssl/certs/ca-certificates.crt",                /* Debian, Ubuntu, Alpine */
    "/etc/pki/tls/certs/ca-bundle.crt",                  /* Fedora, RHEL */
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", /* Fedora, RHEL (newer) */
    "/etc/ssl/ca-bundle.pem",                            /* openSUSE */
    "/etc/ssl/cert.pem",                                 /* Alpine, macOS, BSDs */
    "/usr/local/etc/openssl/cert.pem",                   /* macOS with Homebrew */
    NULL,
};

/* ---------------------------------------------------------------- messages */

static void describe(int rc, char *buf, size_t n) {
#if defined(MBEDTLS_ERROR_C)
    mbedtls_strerror(rc, buf, n);
#else
    snprintf(buf, n, "mbedTLS error -0x%04x", (unsigned)-rc);
#endif
}

static void set_err(char *err, size_t n, const char *what, int rc) {
    char msg[128];
    describe(rc, msg, sizeof msg);
    snprintf(err, n, "%s: %s", what, msg);
}

/* ---------------------------------------------------------------- configuration */

static int load_system_ca(mbedtls_x509_crt *ca) {
    const char *env = getenv("SSL_CERT_FILE");
    /* "returns 0 if all certificates parsed successfully, a positive number if partly
     * successful": a bundle with one odd entry still gives us the rest. */
    if (env && *env && mbedtls_x509_crt_parse_file(ca, env) >= 0)
        return 0;
    for (int i = 0; ca_paths[i]; i++)
        if (mbedtls_x509_crt_parse_file(ca, ca_paths[i]) >= 0)
            return 0;
    return mbedtls_x509_crt_parse_path(ca, "/etc/ssl/certs") >= 0 ? 0 : -1;
}

static int parse_key(loom_tls_conf_t *c, mbedtls_pk_context *key, const char *path) {
#if MBEDTLS_VERSION_MAJOR >= 3
    return mbedtls_pk_parse_keyfile(key, path, NULL, mbedtls_ctr_drbg_random, &c->drbg);
#else
    (void)c;
    return mbedtls_pk_parse_keyfile(key, path, NULL);
#endif
}

static int check_pair(loom_tls_conf_t *c, own_cert_t *o) {
#if MBEDTLS_VERSION_MAJOR >= 3
    return mbedtls_pk_check_pair(&o->crt.pk, &o->key, mbedtls_ctr_drbg_random, &c->drbg);
#else
    (void)c;
    return mbedtls_pk_check_pair(&o->crt.pk, &o->key);
#endif
}

static int add_name(own_cert_t *o, const char *p, size_t len) {
    char **names = realloc(o->names, sizeof *names * (size_t)(o->nnames + 1));
    if (!names)
        return -1;
    o->names = names;
    if (!(names[o->nnames] = malloc(len + 1)))
        return -1;
    memcpy(names[o->nnames], p, len);
    names[o->nnames++][len] = '\0';
    return 0;
}

/* The names a certificate serves when none were given: its dNSName entries, or, in an
 * old-style certificate without them, its subject's CN. */
static int names_from_cert(own_cert_t *o) {
    for (const mbedtls_x509_sequence *s = &o->crt.subject_alt_names; s && s->buf.p; s = s->next)
        if (s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2) &&
            add_name(o, (const char *)s->buf.p, s->buf.len) != 0)
            return -1;
    if (o->nnames > 0)
        return 0;
    for (const mbedtls_x509_name *n = &o->crt.subject; n; n = n->next)
        if (n->oid.p && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0)
            return add_name(o, (const char *)n->val.p, n->val.len);
    return 0;
}

static int load_pair(loom_tls_conf_t *c, own_cert_t *o, const loom_tls_cert_t *p, char *err,
                     size_t n) {
    int rc;
    if (!p->cert || !p->key) {
        snprintf(err, n, "cert and key go together");
        return -1;
    }
    if ((rc = mbedtls_x509_crt_parse_file(&o->crt, p->cert)) != 0) {
        set_err(err, n, p->cert, rc);
        return -1;
    }
    if ((rc = parse_key(c, &o->key, p->key)) != 0) {
        set_err(err, n, p->key, rc);
        return -1;
    }
    if ((rc = check_pair(c, o)) != 0) { /* else every handshake would fail, later and vaguely */
        snprintf(err, n, "%s is not the key of %s", p->key, p->cert);
        return -1;
    }
    for (int i = 0; p->names && p->names[i]; i++)
        if (add_name(o, p->names[i], strlen(p->names[i])) != 0)
            goto nomem;
    if (!p->names && names_from_cert(o) != 0)
        goto nomem;
    return 0;
nomem:
    snprintf(err, n, "out of memory");
    return -1;
}

/* Whether `name` (from SNI, len bytes) matches `pattern`: equal ignoring case, or
 * "*.example.com" matching one whole label before ".example.com" (RFC 6125 6.4.3). */
static int name_matches(const char *pattern, const unsigned char *name, size_t len) {
    size_t plen = strlen(pattern);
    if (plen == len && strncasecmp(pattern, (const char *)name, len) == 0)
        return 1;
    if (plen < 3 || pattern[0] != '*' || pattern[1] != '.')
        return 0;
    const unsigned char *dot = memchr(name, '.', len);
    size_t rest = dot ? len - (size_t)(dot - name) : 0;
    return dot && dot > name && rest == plen - 1 &&
           strncasecmp(pattern + 1, (const char *)dot, rest) == 0;
}

/* mbedTLS's SNI callback: "If a suitable certificate is found, the callback must set the
 * certificate(s) and key(s) to use with mbedtls_ssl_set_hs_own_cert() ... If no matching
 * name is found, the callback must either set a default cert, or return non-zero". A name
 * we do not know gets the default (the first pair), as nginx does. */
static int on_sni(void *p, mbedtls_ssl_context *ssl, const unsigned char *name, size_t len) {
    loom_tls_conf_t *c = p;
    own_cert_t *pick = &c->own[0];
    for (int i = 0; i < c->nown && pick == &c->own[0]; i++)
        for (int j = 0; j < c->own[i].nnames; j++)
            if (name_matches(c->own[i].names[j], name, len)) {
                pick = &c->own[i];
                break;
            }
    return mbedtls_ssl_set_hs_own_cert(ssl, &pick->crt, &pick->key);
}

static int load_own(loom_tls_conf_t *c, const loom_tls_opts_t *o, char *err, size_t n) {
    loom_tls_cert_t one = {o->cert, o->key, NULL};
    const loom_tls_cert_t *pairs = o->ncerts > 0 ? o->certs : &one;
    int npairs = o->ncerts > 0 ? o->ncerts : 1;
    if (o->ncerts <= 0 && !o->cert && !o->key) {
        if (!o->server)
            return 0;
        snprintf(err, n, "a server needs a certificate and its key");
        return -1;
    }
    if (!(c->own = calloc((size_t)npairs, sizeof *c->own))) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    for (; c->nown < npairs; c->nown++) {
        own_cert_t *oc = &c->own[c->nown];
        mbedtls_x509_crt_init(&oc->crt);
        mbedtls_pk_init(&oc->key);
        if (load_pair(c, oc, &pairs[c->nown], err, n) != 0) {
            c->nown++; /* freed with the others */
            return -1;
        }
    }
    int rc = mbedtls_ssl_conf_own_cert(&c->conf, &c->own[0].crt, &c->own[0].key);
    if (rc != 0) {
        set_err(err, n, "certificate", rc);
        return -1;
    }
    if (o->server && npairs > 1)
        mbedtls_ssl_conf_sni(&c->conf, on_sni, c);
    return 0;
}

static int load_ca(loom_tls_conf_t *c, const loom_tls_opts_t *o, char *err, size_t n) {
    if (o->ca_file) {
        int rc = mbedtls_x509_crt_parse_file(&c->ca, o->ca_file);
        if (rc < 0) {
            set_err(err, n, o->ca_file, rc);
            return -1;
        }
    } else if (load_system_ca(&c->ca) != 0) {
        snprintf(err, n, "no CA bundle found (set SSL_CERT_FILE or give ca_file)");
        return -1;
    }
    mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
    return 0;
}

#if MBEDTLS_VERSION_MAJOR < 3
/* What a TLS 1.2 server offers: forward-secret key exchange with an AEAD cipher only (the
 * suites of Mozilla's "intermediate" profile). 2.28's default list also takes the plain RSA
 * key exchange and CBC with SHA-1 from clients that offer nothing better; every browser,
 * curl, Python and Node of the last decade offers these. mbedTLS keeps the pointer. */
static const int server_suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_DHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_DHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    0,
};
#endif

/* The comma-separated list, copied: mbedTLS keeps the array, so the conf owns it. */
static int set_alpn(loom_tls_conf_t *c, const char *list, char *err, size_t n) {
    size_t len = strlen(list), count = 1;
    for (size_t i = 0; i < len; i++)
        count += list[i] == ',';
    c->alpn_buf = malloc(len + 1);
    c->alpn = calloc(count + 1, sizeof *c->alpn);
    if (!c->alpn_buf || !c->alpn) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    memcpy(c->alpn_buf, list, len + 1);
    size_t k = 0;
    for (char *p = c->alpn_buf, *comma; p; p = comma ? comma + 1 : NULL) {
        comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (*p)
            c->alpn[k++] = p;
    }
    c->alpn[k] = NULL;
    int rc = mbedtls_ssl_conf_alpn_protocols(&c->conf, c->alpn);
    if (rc != 0) {
        set_err(err, n, "ALPN", rc);
        return -1;
    }
    return 0;
}

static int setup_conf(loom_tls_conf_t *c, const loom_tls_opts_t *o, char *err, size_t n) {
    static const char pers[] = "loom";
    int rc = mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy,
                                   (const unsigned char *)pers, sizeof pers - 1);
    if (rc != 0) {
        set_err(err, n, "random seed", rc);
        return -1;
    }
    rc = mbedtls_ssl_config_defaults(&c->conf,
                                     o->server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                     MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc != 0) {
        set_err(err, n, "configuration", rc);
        return -1;
    }
    mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
#if MBEDTLS_VERSION_MAJOR < 3
    /* 2.28's default preset still takes TLS 1.0 and 1.1 when the build has them (Debian's
     * does); RFC 8996 deprecates both. 3.x has nothing below 1.2. */
    mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    if (o->server)
        mbedtls_ssl_conf_ciphersuites(&c->conf, server_suites);
#endif
    if (o->server || !o->verify) {
        mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_NONE);
    } else {
        mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
        if (load_ca(c, o, err, n) != 0)
            return -1;
    }
    if (o->alpn && o->alpn[0] && set_alpn(c, o->alpn, err, n) != 0)
        return -1;
    return load_own(c, o, err, n);
}

loom_tls_conf_t *loom_tls_conf_new(const loom_tls_opts_t *o, char *err, size_t errlen) {
#if MBEDTLS_VERSION_MAJOR >= 3 && defined(MBEDTLS_PSA_CRYPTO_C)
    /* 3.x: "psa_crypto_init() must be called before any TLS operation" (it is idempotent). */
    if (psa_crypto_init() != PSA_SUCCESS) {
        snprintf(err, errlen, "PSA crypto initialisation failed");
        return NULL;
    }
#endif
    loom_tls_conf_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->refs = 1;
    c->server = o->server;
    c->verify = o->verify && !o->server;
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    mbedtls_x509_crt_init(&c->ca);
    if (setup_conf(c, o, err, errlen) != 0) {
        loom_tls_conf_unref(c);
        return NULL;
    }
    return c;
}

void loom_tls_conf_ref(loom_tls_conf_t *c) {
    c->refs++;
}

void loom_tls_conf_unref(loom_tls_conf_t *c) {
    if (!c || --c->refs > 0)
        return;
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_x509_crt_free(&c->ca);
    for (int i = 0; i < c->nown; i++) {
        mbedtls_x509_crt_free(&c->own[i].crt);
        mbedtls_pk_free(&c->own[i].key);
        for (int j = 0; j < c->own[i].nnames; j++)
            free(c->own[i].names[j]);
        free(c->own[i].names);
    }
    free(c->own);
    free(c->alpn);
    free(c->alpn_buf);
    mbedtls_ctr_drbg_free(&c->drbg);
    mbedtls_entropy_free(&c->entropy);
    free(c);
}

/* ---------------------------------------------------------------- BIO over the buffers */

static int grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 16384;
    while (ncap < need)
        ncap *= 2;
    char *nb = realloc(*buf, ncap);
    if (!nb)
        return -1;
    *buf = nb;
    *cap = ncap;
    return 0;
}

static int bio_send(void *ctx, const unsigned char *p, size_t n) {
    loom_tls_t *t = ctx;
    if (grow(&t->out, &t->out_cap, t->out_len + n) != 0)
        return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    memcpy(t->out + t->out_len, p, n);
    t->out_len += n;
    return (int)n;
}

static int bio_recv(void *ctx, unsigned char *p, size_t n) {
    loom_tls_t *t = ctx;
    size_t have = t->in_len - t->in_pos;
    if (have == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (n > have)
        n = have;
    memcpy(p, t->in + t->in_pos, n);
    t->in_pos += n;
    if (t->in_pos == t->in_len)
        t->in_pos = t->in_len = 0;
    return (int)n;
}

/* ---------------------------------------------------------------- sessions */

static int set_name(loom_tls_t *t, const char *name) {
    if (name && inet_pton(AF_INET, name, t->ip) == 1) {
        t->iplen = 4;
        name = NULL;
    } else if (name && inet_pton(AF_INET6, name, t->ip) == 1) {
        t->iplen = 16;
        name = NULL;
    }
    return mbedtls_ssl_set_hostname(&t->ssl, name); /* also the SNI extension */
}

loom_tls_t *loom_tls_new(loom_tls_conf_t *c, const char *name, char *err, size_t errlen) {
    loom_tls_t *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->conf = c;
    loom_tls_conf_ref(c);
    mbedtls_ssl_init(&t->ssl);
    int rc = mbedtls_ssl_setup(&t->ssl, &c->conf);
    if (rc == 0 && !c->server)
        rc = set_name(t, name);
    if (rc != 0) {
        set_err(err, errlen, "session", rc);
        loom_tls_free(t);
        return NULL;
    }
    mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
    return t;
}

void loom_tls_free(loom_tls_t *t) {
    if (!t)
        return;
    mbedtls_ssl_free(&t->ssl);
    loom_tls_conf_unref(t->conf);
    free(t->in);
    free(t->out);
    free(t);
}

int loom_tls_inbuf(loom_tls_t *t, size_t want, char **base, size_t *len) {
    if (t->in_pos > 0 && t->in_pos == t->in_len)
        t->in_pos = t->in_len = 0;
    if (t->in_pos > 0 && t->in_cap - t->in_len < want) {
        memmove(t->in, t->in + t->in_pos, t->in_len - t->in_pos);
        t->in_len -= t->in_pos;
        t->in_pos = 0;
    }
    if (grow(&t->in, &t->in_cap, t->in_len + want) != 0)
        return -1;
    *base = t->in + t->in_len;
    *len = t->in_cap - t->in_len;
    return 0;
}

void loom_tls_received(loom_tls_t *t, size_t n) {
    const unsigned char *p = (const unsigned char *)t->in + t->in_len;
    t->in_len += n;
    while (n > 0) { /* a record: type, version (2), length (2), then length bytes */
        if (t->rec_left > 0) {
            size_t k = n < t->rec_left ? n : t->rec_left;
            t->rec_left -= k;
            p += k;
            n -= k;
            continue;
        }
        t->rec_hdr[t->rec_hlen++] = *p++;
        n--;
        if (t->rec_hlen == 5) {
            t->rec_left = (size_t)t->rec_hdr[3] << 8 | t->rec_hdr[4];
            t->rec_hlen = 0;
        }
    }
}

int loom_tls_transport_end(loom_tls_t *t) {
    if (t->rec_hlen == 0 && t->rec_left == 0)
        return LOOM_TLS_EOF;
    snprintf(t->err, sizeof t->err, "connection closed in the middle of a TLS record");
    return LOOM_TLS_ERR;
}

/* Whether the peer's certificate lists our IP literal as an iPAddress. */
static int ip_matches(loom_tls_t *t) {
    const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&t->ssl);
    for (const mbedtls_x509_sequence *s = crt ? &crt->subject_alt_names : NULL; s; s = s->next) {
        const mbedtls_x509_buf *b = &s->buf;
        if (b->tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && b->len == (size_t)t->iplen &&
            memcmp(b->p, t->ip, b->len) == 0)
            return 1;
    }
    return 0;
}

static void verify_error(loom_tls_t *t) {
    char info[256];
    uint32_t flags = mbedtls_ssl_get_verify_result(&t->ssl);
    info[0] = '\0';
    mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
    char *nl = strchr(info, '\n'); /* one reason per line: the first says enough */
    if (nl)
        *nl = '\0';
    snprintf(t->err, sizeof t->err, "certificate verify failed: %.160s",
             info[0] ? info : "unknown reason");
}

static int fail(loom_tls_t *t, const char *what, int rc) {
    if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED)
        verify_error(t);
    else
        set_err(t->err, sizeof t->err, what, rc);
    return LOOM_TLS_ERR;
}

int loom_tls_handshake(loom_tls_t *t) {
    if (t->done)
        return LOOM_TLS_OK;
    int rc = mbedtls_ssl_handshake(&t->ssl);
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
        return LOOM_TLS_WANT;
    if (rc != 0)
        return fail(t, "handshake failed", rc);
    if (t->iplen && t->conf->verify && !ip_matches(t)) {
        snprintf(t->err, sizeof t->err,
                 "certificate verify failed: the certificate is not "
                 "valid for this IP address");
        return LOOM_TLS_ERR;
    }
    t->done = 1;
    return LOOM_TLS_OK;
}

int loom_tls_handshake_done(const loom_tls_t *t) {
    return t->done;
}

int loom_tls_read(loom_tls_t *t, char *out, size_t cap, size_t *got) {
    *got = 0;
    for (;;) {
        int rc = mbedtls_ssl_read(&t->ssl, (unsigned char *)out, cap);
        if (rc > 0) {
            *got = (size_t)rc;
            return LOOM_TLS_OK;
        }
        if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
            return LOOM_TLS_EOF;
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
            return LOOM_TLS_WANT;
#ifdef MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET
        if (rc == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
            continue; /* TLS 1.3 (3.x): a ticket, not data */
#endif
        return fail(t, "read failed", rc);
    }
}

int loom_tls_write(loom_tls_t *t, const char *p, size_t n) {
    while (n > 0) {
        /* "may return a value less than len": it sends at most one record per call */
        int rc = mbedtls_ssl_write(&t->ssl, (const unsigned char *)p, n);
        if (rc < 0)
            return fail(t, "write failed", rc);
        p += rc;
        n -= (size_t)rc;
    }
    return LOOM_TLS_OK;
}

void loom_tls_close_notify(loom_tls_t *t) {
    if (t->done)
        mbedtls_ssl_close_notify(&t->ssl); /* the alert lands in `out`; a failure changes nothing */
}

size_t loom_tls_pending(loom_tls_t *t, const char **p) {
    *p = t->out;
    return t->out_len;
}

void loom_tls_sent(loom_tls_t *t, size_t n) {
    if (n >= t->out_len) {
        t->out_len = 0;
        if (t->out_cap > 256 * 1024) { /* give back what a big response grew */
            free(t->out);
            t->out = NULL;
            t->out_cap = 0;
        }
        return;
    }
    memmove(t->out, t->out + n, t->out_len - n);
    t->out_len -= n;
}

const char *loom_tls_alpn(const loom_tls_t *t) {
    return t->done ? mbedtls_ssl_get_alpn_protocol(&t->ssl) : NULL;
}

const char *loom_tls_error(const loom_tls_t *t) {
    return t->err[0] ? t->err : "connection failed";
}
