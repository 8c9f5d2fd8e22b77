/*
 * http_parse.c - llhttp callbacks that copy a message head into pooled storage, counting
 * its bytes against the limit as they arrive (a head split over many reads is counted
 * once, whole), lowercasing field names, and rejecting what llhttp accepts but a strict
 * server must not: a second or invalid Host, more than LOOM_MAX_HEADERS fields, an empty
 * field name, control bytes or "#" in a request target, an absolute-form target with an
 * invalid authority, a Transfer-Encoding (empty or not) that is not "chunked" alone with
 * no Content-Length in HTTP/1.1, and (for the server, loom_http_execute) bare LFs, lone
 * CRs and obs-fold in a head or in trailers. llhttp runs in its default strict mode:
 * Content-Length with a non-empty Transfer-Encoding, differing Content-Lengths and bad
 * chunk sizes are its errors.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "http_parse.h"

/* The line check's state (loom_http_msg_t.lines). */
/* LINES_HDRS: the start line has ended; LINES_SP: the last byte was a SP of the start line */
enum {
    LINES_CR = 1,
    LINES_BOL = 2,
    LINES_TEXT = 4,
    LINES_DONE = 8,
    LINES_HDRS = 16,
    LINES_SP = 32
};

/* What the Transfer-Encoding fields of a message said (loom_http_msg_t.te). */
enum {
    TE_SEEN = 1,    /* a Transfer-Encoding field, empty or not */
    TE_CHUNKED = 2, /* a coding was chunked */
    TE_LAST = 4,    /* the last coding so far is chunked */
    TE_OTHER = 8,   /* a coding other than chunked */
    TE_TWICE = 16   /* chunked more than once */
};

static loom_http_msg_t *msg_of(llhttp_t *p) {
    return (loom_http_msg_t *)p->data;
}

static int fail(loom_http_msg_t *m, int status, const char *why) {
    if (!m->fail) {
        m->fail = (uint16_t)status;
        m->why = why;
    }
    return HPE_USER;
}

static loom_head_t *head_get(loom_http_msg_t *m) {
    loom_head_t *h = m->pool->free;
    if (h) {
        m->pool->free = h->next_free;
        m->pool->n--;
    } else {
        h = malloc(sizeof *h);
        if (!h)
            return NULL;
    }
    h->next_free = NULL;
    h->data = h->inl;
    h->cap = sizeof h->inl;
    h->hdrs = h->hdrs_inl;
    h->caphdrs = sizeof h->hdrs_inl / sizeof h->hdrs_inl[0];
    h->len = 0;
    h->url = h->url_len = 0;
    h->nhdrs = 0;
    return h;
}

void loom_http_msg_release(loom_http_msg_t *m) {
    loom_head_t *h = m->head;
    if (!h)
        return;
    m->head = NULL;
    loom_head_release(m->pool, h);
}

void loom_head_release(loom_head_pool_t *pool, loom_head_t *h) {
    if (h->data != h->inl) { /* keep pooled heads small */
        free(h->data);
        h->data = h->inl;
        h->cap = sizeof h->inl;
    }
    if (h->hdrs != h->hdrs_inl) {
        free(h->hdrs);
        h->hdrs = h->hdrs_inl;
        h->caphdrs = sizeof h->hdrs_inl / sizeof h->hdrs_inl[0];
    }
    if (pool->n >= pool->max) {
        free(h);
        return;
    }
    h->next_free = pool->free;
    pool->free = h;
    pool->n++;
}

void loom_head_pool_free(loom_head_pool_t *pool) {
    while (pool->free) {
        loom_head_t *h = pool->free;
        pool->free = h->next_free;
        free(h);
    }
    pool->n = 0;
}

static int append(loom_head_t *h, const char *at, size_t len, int lower) {
    if (h->len + len > h->cap) {
        size_t cap = h->cap * 2;
        while (cap < h->len + len)
            cap *= 2;
        char *nd = malloc(cap);
        if (!nd)
            return -1;
        memcpy(nd, h->data, h->len);
        if (h->data != h->inl)
            free(h->data);
        h->data = nd;
        h->cap = cap;
    }
    char *dst = h->data + h->len;
    if (lower) {
        for (size_t i = 0; i < len; i++) {
            unsigned char ch = (unsigned char)at[i];
            dst[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        }
    } else {
        memcpy(dst, at, len);
    }
    h->len += len;
    return 0;
}

static int grow_spans(loom_head_t *h) {
    int cap = h->caphdrs * 2;
    loom_hspan_t *n = malloc((size_t)cap * sizeof *n);
    if (!n)
        return -1;
    memcpy(n, h->hdrs, (size_t)h->nhdrs * sizeof *n);
    if (h->hdrs != h->hdrs_inl)
        free(h->hdrs);
    h->hdrs = n;
    h->caphdrs = cap;
    return 0;
}

/* Counts head bytes cumulatively: a head that trickles in over many reads is limited as a
 * whole. The target alone over the limit is 414, anything else 431. */
static int count(loom_http_msg_t *m, size_t len) {
    uint32_t max = m->conf->max_header;
    m->header_bytes += (uint32_t)(len > max ? max + 1 : len);
    if (m->header_bytes > max)
        return fail(m, m->part == PART_URL && m->head && m->head->nhdrs == 0 ? 414 : 431,
                    "request head too large");
    return 0;
}

static int on_message_begin(llhttp_t *p) {
    loom_http_msg_t *m = msg_of(p);
    if (!m->head && !(m->head = head_get(m)))
        return fail(m, 500, "out of memory");
    loom_head_t *h = m->head;
    h->len = 0;
    h->url = h->url_len = 0;
    h->nhdrs = 0;
    m->header_bytes = 0;
    m->part = PART_NONE;
    m->in_trailers = 0;
    m->host_count = 0;
    m->te = 0;
    m->has_expect = 0;
    return 0;
}

/* ---------------------------------------------------------------- hosts (RFC 3986 3.2.2) */

static int hex(unsigned char c) {
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* 1 for unreserved / sub-delims, the characters of a reg-name besides pct-encoded: a Host
 * is checked on every request, and a table costs a few instructions a byte. */
/* clang-format off */
static const unsigned char name_tab[256] = {
    [0x20] =
    /*  !"#$%&'()*+,-./ */ 0, 1, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,
    /* 0123456789:;<=>? */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0, 0,
    /* @ABCDEFGHIJKLMNO */ 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* PQRSTUVWXYZ[\]^_ */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1,
    /* `abcdefghijklmno */ 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* pqrstuvwxyz{|}~  */ 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0,
};
/* clang-format on */

static int name_char(unsigned char c) {
    return name_tab[c];
}

/* IP-literal's inside: IPv6address, or IPvFuture = "v" 1*HEXDIG "." 1*( unreserved /
 * sub-delims / ":" ). (No zone identifier: RFC 6874 is not part of http's grammar.) */
static int ip_literal(const char *s, size_t len) {
    if (len > 0 && (*s | 0x20) == 'v') {
        size_t i = 1;
        while (i < len && hex((unsigned char)s[i]))
            i++;
        if (i == 1 || i + 1 >= len || s[i] != '.')
            return 0;
        for (i++; i < len; i++)
            if (!name_char((unsigned char)s[i]) && s[i] != ':')
                return 0;
        return 1;
    }
    char buf[64];
    struct in6_addr a;
    if (len >= sizeof buf)
        return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET6, buf, &a) == 1;
}

/* The length of the host at the start of s: an IP-literal in brackets or a reg-name (whose
 * characters an IPv4 address also uses), or len + 1 when it is invalid. */
static inline size_t host_len(const char *s, size_t len) {
    if (len > 0 && *s == '[') {
        const char *close = memchr(s, ']', len);
        if (!close || !ip_literal(s + 1, (size_t)(close - s - 1)))
            return len + 1;
        return (size_t)(close - s) + 1;
    }
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    for (; p < end; p++) {
        if (name_tab[*p])
            continue;
        if (*p != '%') /* pct-encoded: "%" HEXDIG HEXDIG */
            break;
        if (end - p < 3 || !hex(p[1]) || !hex(p[2]))
            return len + 1;
        p += 2;
    }
    return (size_t)(p - (const unsigned char *)s);
}

static int valid_host(const char *s, size_t len) {
    size_t n = host_len(s, len);
    if (n == len)
        return 1;
    if (n > len || n == 0 || s[n] != ':')
        return 0;
    for (const char *p = s + n + 1, *end = s + len; p < end; p++)
        if ((unsigned)(*p - '0') > 9)
            return 0;
    return 1;
}

int loom_http_valid_host(const char *s, size_t len) {
    return valid_host(s, len);
}

int loom_http_target_authority(const char *target, size_t len, size_t *at, size_t *alen) {
    const char *end = target + len, *s = target;
    /* RFC 3986: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
    while (s < end &&
           (((*s | 0x20) >= 'a' && (*s | 0x20) <= 'z') ||
            (s > target && ((*s >= '0' && *s <= '9') || *s == '+' || *s == '-' || *s == '.'))))
        s++;
    if (s == target || end - s < 3 || memcmp(s, "://", 3) != 0)
        return 0;
    const char *a = s + 3, *e = a;
    while (e < end && *e != '/' && *e != '?' && *e != '#')
        e++;
    *at = (size_t)(a - target);
    *alen = (size_t)(e - a);
    return 1;
}

/* ---------------------------------------------------------------- llhttp callbacks */

/* The start line's middle part: a request's target, a response's reason. */
static int keep_start(loom_http_msg_t *m, const char *at, size_t len) {
    m->part = PART_URL;
    if (count(m, len))
        return HPE_USER;
    return append(m->head, at, len, 0) ? fail(m, 500, "out of memory") : 0;
}

/* llhttp 8 lets HTAB and FF through in a target; a URI has no control bytes (RFC 3986 2),
 * and no fragment is ever sent (RFC 9110 7.1), so "#" there is not ours to cut at: a peer
 * that reads either differently routes another path. */
static int on_url(llhttp_t *p, const char *at, size_t len) {
    loom_http_msg_t *m = msg_of(p);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)at[i];
        if (ch < 0x20 || ch == 0x7f || ch == '#')
            return fail(m, 400, "control byte or '#' in the request target");
    }
    return keep_start(m, at, len);
}

/* RFC 9112 3.2.2: the authority of an absolute-form target is the request's host, checked
 * as Host is; RFC 9110 4.2.1: an http(s) URI has a host, 4.2.4: userinfo in one is an error.
 * 3.2.3: CONNECT's target is uri-host ":" port. */
static int check_target(loom_http_msg_t *m) {
    const char *t = m->head->data + m->head->url;
    size_t len = m->head->url_len, at, alen;
    if (llhttp_get_method(&m->parser) == HTTP_CONNECT) {
        size_t n = host_len(t, len);
        if (n == 0 || n + 1 >= len || t[n] != ':' || !loom_http_valid_host(t, len))
            return fail(m, 400, "invalid authority in a CONNECT target");
        return 0;
    }
    if (!loom_http_target_authority(t, len, &at, &alen))
        return 0;
    if (alen == 0 || t[at] == ':' || memchr(t + at, '@', alen) ||
        !loom_http_valid_host(t + at, alen))
        return fail(m, 400, "invalid authority in an absolute-form target");
    return 0;
}

static int on_url_complete(llhttp_t *p) {
    loom_http_msg_t *m = msg_of(p);
    m->head->url = 0;
    m->head->url_len = (uint32_t)m->head->len;
    m->part = PART_NONE;
    if (m->head->len == 0 || m->head->data[0] == '/') /* origin form: nothing more */
        return 0;
    return p->type == HTTP_REQUEST ? check_target(m) : 0;
}

static int on_field(llhttp_t *p, const char *at, size_t len) {
    loom_http_msg_t *m = msg_of(p);
    loom_head_t *h = m->head;
    if (m->part != PART_FIELD) {
        if (m->in_trailers) { /* trailers are counted, not kept */
            m->part = PART_FIELD;
        } else {
            if (h->nhdrs >= LOOM_MAX_HEADERS)
                return fail(m, 431, "too many header fields");
            if (h->nhdrs == h->caphdrs && grow_spans(h) != 0)
                return fail(m, 500, "out of memory");
            h->hdrs[h->nhdrs].name = (uint32_t)h->len;
            m->part = PART_FIELD;
        }
    }
    if (count(m, len))
        return HPE_USER;
    /* RFC 9112 5.1: whitespace between a field name and its colon must be rejected;
     * llhttp 8 lets SP through (anywhere in a name), and a lenient peer could read the name
     * differently. HTAB it refuses itself (HPE_INVALID_HEADER_TOKEN). */
    if (memchr(at, ' ', len))
        return fail(m, 400, "whitespace in a header name");
    if (m->in_trailers)
        return 0;
    return append(h, at, len, 1) ? fail(m, 500, "out of memory") : 0;
}

static int on_field_complete(llhttp_t *p) {
    loom_http_msg_t *m = msg_of(p);
    loom_head_t *h = m->head;
    /* llhttp 8 takes ":a: b" as a field with an empty name; a peer that skips the colon
     * reads "a". (The server's line check finds it in trailers too, which are not kept.) */
    if (m->part != PART_FIELD)
        return fail(m, 400, "empty header name");
    if (!m->in_trailers) { /* an empty value gets no data callback: start it empty here */
        h->hdrs[h->nhdrs].name_len = (uint32_t)h->len - h->hdrs[h->nhdrs].name;
        h->hdrs[h->nhdrs].value = (uint32_t)h->len;
        if (h->hdrs[h->nhdrs].name_len == 0)
            return fail(m, 400, "empty header name");
    }
    return 0;
}

static int on_value(llhttp_t *p, const char *at, size_t len) {
    loom_http_msg_t *m = msg_of(p);
    loom_head_t *h = m->head;
    if (m->part != PART_VALUE) {
        m->part = PART_VALUE;
        if (!m->in_trailers)
            h->hdrs[h->nhdrs].value = (uint32_t)h->len;
    }
    if (count(m, len))
        return HPE_USER;
    if (m->in_trailers)
        return 0;
    return append(h, at, len, 0) ? fail(m, 500, "out of memory") : 0;
}

/* Records a Transfer-Encoding field's codings in m->te. llhttp 8 sets F_TRANSFER_ENCODING
 * only for a non-empty value, so an empty field would escape every rule below. Empty list
 * elements are ignored (RFC 9110 5.6.1). */
static void te_codings(loom_http_msg_t *m, const char *v, size_t len) {
    const char *end = v + len;
    m->te |= TE_SEEN;
    while (v < end) {
        while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
            v++;
        const char *s = v;
        while (v < end && *v != ',')
            v++;
        const char *e = v;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e == s)
            continue;
        if (e - s == 7 && strncasecmp(s, "chunked", 7) == 0)
            m->te |= (m->te & TE_CHUNKED ? TE_TWICE : 0) | TE_CHUNKED | TE_LAST;
        else
            m->te = (uint8_t)((m->te & ~TE_LAST) | TE_OTHER);
    }
}

/* valid_host, with the pool's memory of the last valid value. */
static int host_seen_valid(loom_head_pool_t *pool, const char *v, size_t len) {
    if (len == pool->host_ok_len && memcmp(v, pool->host_ok, len) == 0)
        return 1;
    if (!valid_host(v, len))
        return 0;
    if (len <= sizeof pool->host_ok) {
        memcpy(pool->host_ok, v, len);
        pool->host_ok_len = (uint8_t)len;
    }
    return 1;
}

static int on_value_complete(llhttp_t *p) {
    loom_http_msg_t *m = msg_of(p);
    loom_head_t *h = m->head;
    m->part = PART_NONE;
    if (m->in_trailers)
        return 0;
    loom_hspan_t *s = &h->hdrs[h->nhdrs];
    s->value_len = (uint32_t)h->len - s->value;
    while (s->value_len > 0 && (h->data[s->value + s->value_len - 1] == ' ' ||
                                h->data[s->value + s->value_len - 1] == '\t'))
        s->value_len--;
    const char *name = h->data + s->name, *value = h->data + s->value;
    if (s->name_len == 4 && memcmp(name, "host", 4) == 0) {
        if (++m->host_count > 1)
            return fail(m, 400, "more than one Host header");
        /* RFC 9112 3.2: a server MUST answer 400 to "a Host header field with an invalid
         * field value" */
        if (p->type == HTTP_REQUEST && !host_seen_valid(m->pool, value, s->value_len))
            return fail(m, 400, "invalid Host header");
    } else if (s->name_len == 17 && memcmp(name, "transfer-encoding", 17) == 0) {
        te_codings(m, value, s->value_len);
    } else if (s->name_len == 6 && memcmp(name, "expect", 6) == 0) {
        m->has_expect = 1;
    }
    h->nhdrs++;
    return 0;
}

/* The rules for a message with Transfer-Encoding fields (m->te set), an empty one included:
 * llhttp 8 ignores an empty field, and would read the body by Content-Length, or as none. */
static int check_te(loom_http_msg_t *m) {
    llhttp_t *p = &m->parser;
    /* RFC 9112 6.3: with both, "ought to be handled as an error" (llhttp 8's own error when
     * the Transfer-Encoding is not empty) */
    if (p->flags & F_CONTENT_LENGTH)
        return fail(m, 400, "Content-Length with Transfer-Encoding");
    if (p->type != HTTP_REQUEST) {
        /* the client asks for no transfer coding (it sends no TE), and decodes none but
         * chunked; without chunked last the body runs to the close, as 6.3 says */
        if (m->te & TE_OTHER)
            return fail(m, 501, "a transfer coding other than chunked");
        return 0;
    }
    /* 6.3: a request whose Transfer-Encoding does not end in chunked has no knowable length,
     * and the server MUST answer 400 and close. llhttp 8 finds out only when the body
     * starts, after the handler has been given the request. 6.1: chunked at most once. */
    if (!(m->te & TE_LAST) || (m->te & TE_TWICE) || !(p->flags & F_CHUNKED))
        return fail(m, 400, "Transfer-Encoding not ending in chunked");
    /* 6.1: "A server or client that receives an HTTP/1.0 message containing a
     * Transfer-Encoding header field MUST treat the message as if the framing is faulty";
     * llhttp 8 reads it as chunked. A 1.0 peer in front of us may not. */
    if (p->http_major == 0 || (p->http_major == 1 && p->http_minor == 0))
        return fail(m, 400, "Transfer-Encoding in an HTTP/1.0 request"); /* or 0.9 */
    /* 6.1: "A server that receives a request message with a transfer coding it does not
     * understand SHOULD respond with the 501 (Not Implemented) status code and then close
     * the connection"; we decode none but chunked, and must not pass a coded body on as
     * if it were plain. */
    if (m->te & TE_OTHER)
        return fail(m, 501, "a transfer coding other than chunked");
    return 0;
}

static int on_headers_complete(llhttp_t *p) {
    loom_http_msg_t *m = msg_of(p);
    m->in_trailers = 1;
    if (m->te && check_te(m))
        return HPE_USER;
    return m->conf->on_headers ? m->conf->on_headers(m) : 0;
}

/* The last chunk's size line has been read: the trailer section starts at the current
 * position, and loom_http_execute checks its lines as it checks a head's. */
static int on_chunk_header(llhttp_t *p) {
    loom_http_msg_t *m = msg_of(p);
    if (!m->conf->strict_lines || p->content_length != 0)
        return 0;
    m->trailers = 1;
    return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
    loom_http_msg_t *m = msg_of(p);
    return m->conf->on_body ? m->conf->on_body(m, at, len) : 0;
}

static int on_message_complete(llhttp_t *p) {
    loom_http_msg_t *m = msg_of(p);
    m->ended = 1;
    m->lines = LINES_BOL; /* the next bytes start the next head */
    return m->conf->on_complete ? m->conf->on_complete(m) : 0;
}

/* ---------------------------------------------------------------- line structure */

/* Checks a head's bytes ahead of llhttp, up to the empty line that ends it. RFC 9112 2.2
 * lets a recipient take a bare LF as a line end, and llhttp 8 does after the request line
 * and for the empty line; it also unfolds obs-fold (5.2: a server MUST either reject it or
 * replace it with spaces). A peer in front of us that reads those differently sees other
 * requests than we do, so all of them are 400 here. So is a request line with more than one
 * SP between its parts, which llhttp 8 takes (3: "recipients MAY instead parse on
 * whitespace-delimited word boundaries"; a strict one does not). */
static int double_space(const char *p, size_t n) {
    const char *e = p + n;
    while ((p = memchr(p, ' ', (size_t)(e - p))) != NULL && ++p < e)
        if (*p == ' ')
            return 1;
    return 0;
}

/* The usual case of check_head: a whole head in one read, nothing of it seen before. Line
 * by line with memchr; 1 when the head is found good, -1 when bad, 0 when it does not end
 * in these bytes (check_head then takes them byte by byte, from the start). */
static int check_whole_head(loom_http_msg_t *m, const char *data, size_t len) {
    const char *p = data, *end = data + len, *lf;
    int started = 0;
    while (p < end && (lf = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if (lf == p || lf[-1] != '\r')
            return fail(m, 400, "bare LF in the head"), -1;
        size_t n = (size_t)(lf - 1 - p);
        if (memchr(p, '\r', n))
            return fail(m, 400, "CR without LF in the head"), -1;
        if (!started) {
            started = n > 0; /* empty lines before the start line are let through */
            if (started && m->parser.type == HTTP_REQUEST && double_space(p, n))
                return fail(m, 400, "more than one space in the request line"), -1;
        } else if (n == 0) {
            m->lines = LINES_DONE | LINES_HDRS | LINES_TEXT | LINES_BOL;
            return 1;
        } else if (*p == ' ' || *p == '\t' || *p == ':') {
            return fail(m, 400,
                        *p == ':' ? "empty header name"
                                  : "obs-fold or whitespace at the start of a header line"),
                   -1;
        }
        p = lf + 1;
    }
    return 0;
}

static int check_head(loom_http_msg_t *m, const char *data, size_t len) {
    if (m->lines == LINES_BOL) {
        int r = check_whole_head(m, data, len);
        if (r != 0)
            return r < 0;
    }
    uint8_t s = m->lines;
    int request = m->parser.type == HTTP_REQUEST;
    for (size_t i = 0; i < len && !(s & LINES_DONE); i++) {
        if ((s & LINES_HDRS) && !(s & (LINES_CR | LINES_BOL))) {
            /* inside a header line only a CR or LF matters: skip to the CR with memchr */
            const char *cr = memchr(data + i, '\r', len - i);
            size_t stop = cr ? (size_t)(cr - data) : len;
            if (memchr(data + i, '\n', stop - i))
                return fail(m, 400, "bare LF in the head");
            if (stop == len)
                break;
            i = stop;
        } else if (!(s & (LINES_HDRS | LINES_CR | LINES_BOL))) {
            /* inside the start line SPs matter too; other bytes only end a run of SPs */
            size_t j = i;
            while (j < len && data[j] != ' ' && data[j] != '\r' && data[j] != '\n')
                j++;
            if (j > i)
                s &= (uint8_t)~LINES_SP;
            if (j == len)
                break;
            i = j;
        }
        char ch = data[i];
        if (s & LINES_CR) {
            if (ch != '\n')
                return fail(m, 400, "CR without LF in the head");
            s &= (uint8_t)~LINES_CR;
            if ((s & LINES_BOL) && (s & LINES_TEXT))
                s |= LINES_DONE; /* an empty line after the start line: the head ends */
            s |= LINES_BOL;
            if (s & LINES_TEXT)
                s |= LINES_HDRS;
        } else if (ch == '\r') {
            s |= LINES_CR;
        } else if (ch == '\n') {
            return fail(m, 400, "bare LF in the head");
        } else {
            if ((s & LINES_BOL) && (s & LINES_TEXT) && (ch == ' ' || ch == '\t'))
                return fail(m, 400, "obs-fold or whitespace at the start of a header line");
            if ((s & LINES_BOL) && (s & LINES_TEXT) && ch == ':')
                return fail(m, 400, "empty header name");
            int sp = ch == ' ' && !(s & LINES_HDRS);
            if (request && sp && (s & LINES_SP))
                return fail(m, 400, "more than one space in the request line");
            s = (uint8_t)((s & ~(LINES_BOL | LINES_SP)) | LINES_TEXT | (sp ? LINES_SP : 0));
        }
    }
    m->lines = s;
    return 0;
}

llhttp_errno_t loom_http_execute(loom_http_msg_t *m, const char *data, size_t len) {
    if (!m->conf->strict_lines)
        return llhttp_execute(&m->parser, data, len);
    if (!(m->lines & LINES_DONE) && check_head(m, data, len))
        return HPE_USER;
    m->ended = 0;
    llhttp_errno_t err = llhttp_execute(&m->parser, data, len);
    while (err == HPE_PAUSED && m->trailers) {
        /* on_chunk_header paused after the last chunk's size line. llhttp 8 unfolds obs-fold
         * and takes bare LFs in trailers as in a head: their lines take the head's checks,
         * as header lines (the start line is behind us), up to the empty line. */
        const char *pos = llhttp_get_error_pos(&m->parser);
        size_t rest = (size_t)(data + len - pos);
        m->trailers = 0;
        m->lines = LINES_HDRS | LINES_TEXT | LINES_BOL;
        llhttp_resume(&m->parser);
        if (check_head(m, pos, rest))
            return HPE_USER;
        err = llhttp_execute(&m->parser, pos, rest);
    }
    return err;
}

/* ---------------------------------------------------------------- status lines */

static int on_status(llhttp_t *p, const char *at, size_t len) {
    return keep_start(msg_of(p), at, len);
}

static int on_status_complete(llhttp_t *p) {
    loom_http_msg_t *m = msg_of(p);
    m->head->url = 0;
    m->head->url_len = (uint32_t)m->head->len;
    m->part = PART_NONE;
    return 0;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_url_complete = on_url_complete,
    .on_status_complete = on_status_complete,
    .on_header_field_complete = on_field_complete,
    .on_header_value_complete = on_value_complete,
    .on_chunk_header = on_chunk_header,
};

void loom_http_msg_init(loom_http_msg_t *m, llhttp_type_t type, loom_head_pool_t *pool,
                        const loom_http_conf_t *conf) {
    memset(m, 0, sizeof *m);
    llhttp_init(&m->parser, type, &settings);
    m->parser.data = m;
    m->pool = pool;
    m->conf = conf;
    m->lines = LINES_BOL;
}

int loom_head_find(const loom_head_t *h, const char *name, size_t len) {
    for (int i = 0; i < h->nhdrs; i++)
        if (h->hdrs[i].name_len == len && memcmp(h->data + h->hdrs[i].name, name, len) == 0)
            return i;
    return -1;
}

int loom_head_has_token(const loom_head_t *h, int idx, const char *token) {
    const char *v = LOOM_HEAD_VALUE(h, idx), *end = v + h->hdrs[idx].value_len;
    size_t tl = strlen(token);
    while (v < end) {
        while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
            v++;
        const char *s = v;
        while (v < end && *v != ',')
            v++;
        const char *e = v;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - s) == tl && strncasecmp(s, token, tl) == 0)
            return 1;
    }
    return 0;
}
