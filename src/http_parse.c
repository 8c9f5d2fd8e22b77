/*
 * http_parse.c - llhttp callbacks that copy a message head into pooled storage, counting
 * its bytes against the limit as they arrive (a head split over many reads is counted
 * once, whole), lowercasing field names, and rejecting what llhttp accepts but a strict
 * server must not: a second Host, more than LOOM_MAX_HEADERS fields, and (for the server,
 * loom_http_execute) bare LFs, lone CRs and obs-fold in a head, a bare LF after trailers.
 * llhttp runs in its default strict mode: Content-Length with Transfer-Encoding, differing
 * Content-Lengths and bad chunk sizes are its errors.
 */
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
    m->header_bytes += (uint32_t)(len > m->max_header ? m->max_header + 1 : len);
    if (m->header_bytes > m->max_header)
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
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
    loom_http_msg_t *m = msg_of(p);
    m->part = PART_URL;
    if (count(m, len))
        return HPE_USER;
    return append(m->head, at, len, 0) ? fail(m, 500, "out of memory") : 0;
}

static int on_url_complete(llhttp_t *p) {
    loom_http_msg_t *m = msg_of(p);
    m->head->url = 0;
    m->head->url_len = (uint32_t)m->head->len;
    m->part = PART_NONE;
    return 0;
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
     * llhttp 8 lets it through, and a lenient peer could read the name differently. */
    if (memchr(at, ' ', len) || memchr(at, '\t', len))
        return fail(m, 400, "whitespace in a header name");
    if (m->in_trailers)
        return 0;
    return append(h, at, len, 1) ? fail(m, 500, "out of memory") : 0;
}

static int on_field_complete(llhttp_t *p) {
    loom_http_msg_t *m = msg_of(p);
    loom_head_t *h = m->head;
    if (!m->in_trailers) { /* an empty value gets no data callback: start it empty here */
        h->hdrs[h->nhdrs].name_len = (uint32_t)h->len - h->hdrs[h->nhdrs].name;
        h->hdrs[h->nhdrs].value = (uint32_t)h->len;
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
    if (s->name_len == 4 && memcmp(h->data + s->name, "host", 4) == 0 && ++m->host_count > 1)
        return fail(m, 400, "more than one Host header");
    h->nhdrs++;
    return 0;
}

static int on_headers_complete(llhttp_t *p) {
    loom_http_msg_t *m = msg_of(p);
    m->in_trailers = 1;
    m->chunked = (p->flags & F_CHUNKED) != 0;
    /* RFC 9112 6.3: a request whose Transfer-Encoding does not end in chunked has no
     * knowable length, and the server MUST answer 400 and close. llhttp 8 finds out only
     * when the body starts, after the handler has been given the request. */
    if (p->type == HTTP_REQUEST && (p->flags & F_TRANSFER_ENCODING) && !(p->flags & F_CHUNKED))
        return fail(m, 400, "Transfer-Encoding not ending in chunked");
    /* RFC 9112 6.1: "A server or client that receives an HTTP/1.0 message containing a
     * Transfer-Encoding header field MUST treat the message as if the framing is faulty";
     * llhttp 8 reads it as chunked. A 1.0 peer in front of us may not. */
    if (p->type == HTTP_REQUEST && (p->flags & F_TRANSFER_ENCODING) && p->http_major == 1 &&
        p->http_minor == 0)
        return fail(m, 400, "Transfer-Encoding in an HTTP/1.0 request");
    return m->on_headers ? m->on_headers(m) : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
    loom_http_msg_t *m = msg_of(p);
    return m->on_body ? m->on_body(m, at, len) : 0;
}

static int on_message_complete(llhttp_t *p) {
    loom_http_msg_t *m = msg_of(p);
    m->ended = 1;
    m->lines = LINES_BOL; /* the next bytes start the next head */
    return m->on_complete ? m->on_complete(m) : 0;
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
        } else if (*p == ' ' || *p == '\t') {
            return fail(m, 400, "obs-fold or whitespace at the start of a header line"), -1;
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
    if (!m->strict_lines)
        return llhttp_execute(&m->parser, data, len);
    if (!(m->lines & LINES_DONE) && check_head(m, data, len))
        return HPE_USER;
    m->ended = 0;
    llhttp_errno_t err = llhttp_execute(&m->parser, data, len);
    const char *end = err == HPE_OK       ? data + len
                      : err == HPE_PAUSED ? llhttp_get_error_pos(&m->parser)
                                          : NULL;
    if (err == HPE_PAUSED && m->ended && m->chunked) {
        /* llhttp 8 takes a bare LF for the empty line that ends the trailers; the message
         * ended at `end`, right after that line's LF */
        char before = end - data >= 2 ? end[-2] : m->last;
        if (before != '\r') {
            fail(m, 400, "bare LF after the trailers");
            return HPE_USER;
        }
    }
    if (end && end > data)
        m->last = end[-1];
    return err;
}

/* ---------------------------------------------------------------- status lines */

static int on_status(llhttp_t *p, const char *at, size_t len) {
    return on_url(p, at, len);
}

static int on_status_complete(llhttp_t *p) {
    return on_url_complete(p);
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
};

void loom_http_msg_init(loom_http_msg_t *m, llhttp_type_t type, loom_head_pool_t *pool) {
    memset(m, 0, sizeof *m);
    llhttp_init(&m->parser, type, &settings);
    m->parser.data = m;
    m->pool = pool;
    m->max_header = 16 * 1024;
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
