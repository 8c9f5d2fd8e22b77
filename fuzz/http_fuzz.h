/*
 * http_fuzz.h - the harness fuzz_http_request.c and fuzz_http_response.c share: feeds bytes
 * to a loom_http_msg_t through loom_http_execute the way the server does (the head and the
 * message end pause llhttp; parsing resumes from where it stopped; an idle connection gives
 * its head back to the pool) and checks what the glue stored. Knows no sockets and no Lua.
 *
 * Input: byte 0 picks where the rest is split into two reads (and, for responses, its top
 * bit turns the line checks on); bytes 1.. are the wire.
 */
#ifndef LOOM_HTTP_FUZZ_H
#define LOOM_HTTP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_check.h"
#include "http_parse.h"

/* Small enough that the fuzzer reaches the limits: 256 bytes of head, LOOM_MAX_HEADERS. */
#define FUZZ_MAX_HEADER 256

typedef struct {
    size_t wire;     /* bytes given to the parser */
    size_t body;     /* body bytes llhttp reported */
    int heads, ends; /* heads completed, messages ended */
    int idle;        /* a message ended and the head may go back to the pool */
} fuzz_seen_t;

/* A message and what its hooks saw (loom_http_owner gives the struct, seen first). */
typedef struct {
    fuzz_seen_t seen;
    loom_http_msg_t m;
} fuzz_msg_t;

/* A request head that reached on_headers passed every check of http_parse.c: a target
 * without control bytes or "#", an absolute-form target with a valid authority and no
 * userinfo, a valid Host, and any Transfer-Encoding field (an empty one too) only in an
 * HTTP/1.1 request that llhttp reads as chunked and that has no Content-Length. */
static void fuzz_check_request(const loom_http_msg_t *m) {
    const loom_head_t *h = m->head;
    const char *t = h->data + h->url;
    size_t at, alen;
    for (uint32_t k = 0; k < h->url_len; k++)
        FUZZ_CHECK((unsigned char)t[k] >= 0x20 && t[k] != 0x7f && t[k] != '#');
    if (h->url_len > 0 && *t != '/' && loom_http_target_authority(t, h->url_len, &at, &alen)) {
        FUZZ_CHECK(alen > 0 && loom_http_valid_host(t + at, alen));
        FUZZ_CHECK(memchr(t + at, '@', alen) == NULL);
    }
    int te = 0;
    for (int i = 0; i < h->nhdrs; i++) {
        const loom_hspan_t *s = &h->hdrs[i];
        if (s->name_len == 4 && memcmp(h->data + s->name, "host", 4) == 0)
            FUZZ_CHECK(loom_http_valid_host(h->data + s->value, s->value_len));
        te |= s->name_len == 17 && memcmp(h->data + s->name, "transfer-encoding", 17) == 0;
    }
    if (te) {
        FUZZ_CHECK(m->parser.flags & F_CHUNKED);
        FUZZ_CHECK(!(m->parser.flags & F_CONTENT_LENGTH));
        FUZZ_CHECK(m->parser.http_major > 1 ||
                   (m->parser.http_major == 1 && m->parser.http_minor > 0));
    }
}

/* What on_headers may rely on: every span inside the stored bytes, names lowercased and not
 * empty, values without trailing blanks, the counted bytes within the limit. */
static void fuzz_check_head(const loom_http_msg_t *m) {
    const loom_head_t *h = m->head;
    FUZZ_CHECK(h != NULL);
    FUZZ_CHECK(h->len <= h->cap);
    FUZZ_CHECK((size_t)h->url + h->url_len <= h->len);
    FUZZ_CHECK(h->nhdrs >= 0 && h->nhdrs <= LOOM_MAX_HEADERS && h->nhdrs <= h->caphdrs);
    FUZZ_CHECK(m->header_bytes <= m->conf->max_header);
    for (int i = 0; i < h->nhdrs; i++) {
        const loom_hspan_t *s = &h->hdrs[i];
        FUZZ_CHECK((size_t)s->name + s->name_len <= h->len);
        FUZZ_CHECK((size_t)s->value + s->value_len <= h->len);
        FUZZ_CHECK(s->name_len > 0);
        FUZZ_CHECK(!memchr(h->data + s->name, ' ', s->name_len));
        FUZZ_CHECK(!memchr(h->data + s->name, '\t', s->name_len));
        for (uint32_t k = 0; k < s->name_len; k++)
            FUZZ_CHECK(!(h->data[s->name + k] >= 'A' && h->data[s->name + k] <= 'Z'));
        if (s->value_len > 0) {
            char last = h->data[s->value + s->value_len - 1];
            FUZZ_CHECK(last != ' ' && last != '\t');
        }
        (void)loom_head_has_token(h, i, "chunked");
        (void)loom_head_has_token(h, i, "close");
    }
    int hi = loom_head_find(h, "host", 4);
    FUZZ_CHECK(hi < h->nhdrs);
    FUZZ_CHECK(m->parser.type != HTTP_REQUEST || m->host_count <= 1);
    if (m->parser.type == HTTP_REQUEST)
        fuzz_check_request(m);
}

static int fuzz_on_headers(loom_http_msg_t *m) {
    fuzz_seen_t *seen = loom_http_owner(m); /* first member of its fuzz_msg_t */
    fuzz_check_head(m);
    seen->heads++;
    return HPE_PAUSED; /* as the server does: the body waits for the handler */
}

static int fuzz_on_body(loom_http_msg_t *m, const char *at, size_t len) {
    fuzz_seen_t *seen = loom_http_owner(m); /* first member of its fuzz_msg_t */
    FUZZ_CHECK(at != NULL || len == 0);
    seen->body += len;
    return 0;
}

static int fuzz_on_complete(loom_http_msg_t *m) {
    fuzz_seen_t *seen = loom_http_owner(m); /* first member of its fuzz_msg_t */
    seen->ends++;
    seen->idle = 1;
    return HPE_PAUSED;
}

/* One read: runs the parser over data, resuming after each pause. Returns 0 while the
 * connection may go on, -1 once the parser has failed. */
static int fuzz_feed(loom_http_msg_t *m, fuzz_seen_t *seen, const char *data, size_t len) {
    seen->wire += len;
    /* every pause is an event, and each event but the last of a message consumes bytes */
    size_t max_rounds = 4 * len + 8;
    for (size_t rounds = 0;; rounds++) {
        FUZZ_CHECK(rounds <= max_rounds);
        llhttp_errno_t err = loom_http_execute(m, data, len);
        if (err == HPE_OK)
            break;
        if (err != HPE_PAUSED) {
            FUZZ_CHECK(err != HPE_USER || m->fail != 0); /* our hooks fail only through fail() */
            if (m->fail)
                FUZZ_CHECK(m->fail == 400 || m->fail == 414 || m->fail == 431 || m->fail == 500 ||
                           m->fail == 501);
            return -1;
        }
        const char *pos = llhttp_get_error_pos(&m->parser);
        FUZZ_CHECK(pos >= data && pos <= data + len);
        len -= (size_t)(pos - data);
        data = pos;
        if (seen->idle && len == 0) { /* nothing buffered: the server releases the head */
            loom_http_msg_release(m);
            seen->idle = 0;
        }
        llhttp_resume(&m->parser);
        if (len == 0)
            data = "";
    }
    FUZZ_CHECK(seen->body <= seen->wire);
    return 0;
}

typedef struct {
    int failed;
    int heads, ends;
} fuzz_verdict_t;

/* Parses the wire in the given reads (the last one ends at len) as the server does. */
static fuzz_verdict_t fuzz_parse(const char *wire, size_t len, const size_t *splits, int nsplits,
                                 llhttp_type_t type, int strict) {
    loom_head_pool_t pool = {.max = 1};
    fuzz_msg_t fm = {.seen = {0, 0, 0, 0, 0}};
    const loom_http_conf_t conf = {.on_headers = fuzz_on_headers,
                                   .on_body = fuzz_on_body,
                                   .on_complete = fuzz_on_complete,
                                   .max_header = FUZZ_MAX_HEADER,
                                   .owner_off = offsetof(fuzz_msg_t, m),
                                   .strict_lines = strict != 0};
    loom_http_msg_init(&fm.m, type, &pool, &conf);
    fuzz_verdict_t v = {0, 0, 0};
    size_t at = 0;
    for (int i = 0; i <= nsplits && !v.failed; i++) {
        size_t to = i < nsplits ? splits[i] : len;
        v.failed = fuzz_feed(&fm.m, &fm.seen, wire + at, to - at) != 0;
        at = to;
    }
    if (!v.failed)
        (void)llhttp_finish(&fm.m.parser); /* the peer closed: a body read to the close ends */
    FUZZ_CHECK(fm.seen.ends <= fm.seen.heads);
    v.heads = fm.seen.heads;
    v.ends = fm.seen.ends;
    loom_http_msg_release(&fm.m);
    loom_head_pool_free(&pool);
    return v;
}

static int fuzz_http(const uint8_t *in, size_t n, llhttp_type_t type) {
    if (n < 1)
        return 0;
    const char *wire = (const char *)in + 1;
    size_t len = n - 1;
    int strict = type == HTTP_REQUEST ? 1 : (in[0] >> 7);
    size_t split = (size_t)(in[0] & 0x7f) % (len + 1);
    fuzz_verdict_t two = fuzz_parse(wire, len, &split, 1, type, strict);
    if (!strict || len > 512)
        return 0;
    /* The same bytes one at a time, which takes the line checks' byte-wise path where the
     * split above may have taken the whole-head one: both must see the same requests and
     * fail, or not, alike. (Not always for the same reason: a head with two faults fails on
     * the one found first, and a whole head is checked before llhttp reads any of it.) */
    size_t *every = malloc(len * sizeof *every);
    for (size_t i = 0; i < len; i++)
        every[i] = i + 1;
    fuzz_verdict_t one = fuzz_parse(wire, len, every, (int)len, type, strict);
    free(every);
    FUZZ_CHECK(one.failed == two.failed);
    FUZZ_CHECK(one.heads == two.heads && one.ends == two.ends);
    return 0;
}

#endif
