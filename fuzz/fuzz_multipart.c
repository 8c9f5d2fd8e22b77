/*
 * fuzz_multipart.c - libFuzzer target: src/http1/multipart.c, a multipart/form-data body parsed
 * whole, one byte per call, and in pieces cut where the input says, must give the same
 * parts (headers, name, filename, type, body bytes joined per part) and the same outcome.
 * Along the way: events come in the grammar's order, used never exceeds what was given,
 * header names are lower case, values hold no CR, LF or NUL, every part has a name, a
 * filename holds no control characters, no body holds a delimiter (a part leaking into
 * the next), and no more than max_parts parts begin. See docs/fuzzing.md.
 *
 * Input: byte 0 seeds the cuts, byte 1 the limits (max_parts 1..8, max_part_header
 * 32..527); then a Content-Type value up to "\n" (its boundary parameter, through
 * loom_multipart_boundary), then the body.
 */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_check.h"
#include "multipart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put_int(fbuf_t *b, long v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%ld;", v);
    fbuf_put(b, tmp, (size_t)n);
}

typedef struct {
    const char *boundary;
    size_t blen;
    size_t max_parts, max_head;
} fuzz_cfg_t;

enum where { OUT, IN_HEAD, IN_BODY, DONE };

/* No "\r\n--boundary" followed by a byte that would end a delimiter line: such a body
 * would hold the start of the next part. */
static void check_body(const fuzz_cfg_t *c, const fbuf_t *body) {
    char delim[4 + LOOM_MP_MAX_BOUNDARY];
    size_t dlen = 4 + c->blen;
    if (body->len == 0)
        return;
    memcpy(delim, "\r\n--", 4);
    memcpy(delim + 4, c->boundary, c->blen);
    const char *p = body->p, *end = body->p + body->len;
    while (p != NULL && p < end) {
        const char *hit = memmem(p, (size_t)(end - p), delim, dlen);
        if (hit == NULL)
            break;
        if (hit + dlen < end) {
            char x = hit[dlen];
            FUZZ_CHECK(x != '-' && x != '\r' && x != ' ' && x != '\t');
        }
        p = hit + 1;
    }
    /* the body cannot end with a whole delimiter either (it waits for the next byte) */
    FUZZ_CHECK(body->len < dlen || memcmp(end - dlen, delim, dlen) != 0);
}

static void check_header(const loom_mp_event_t *ev) {
    FUZZ_CHECK(ev->name != NULL && ev->name_len > 0 && ev->data != NULL);
    for (size_t i = 0; i < ev->name_len; i++)
        FUZZ_CHECK(!(ev->name[i] >= 'A' && ev->name[i] <= 'Z') && ev->name[i] != ':' &&
                   ev->name[i] != ' ');
    for (size_t i = 0; i < ev->len; i++)
        FUZZ_CHECK(ev->data[i] != '\r' && ev->data[i] != '\n' && ev->data[i] != '\0');
    if (ev->len > 0) {
        FUZZ_CHECK(ev->data[0] != ' ' && ev->data[0] != '\t');
        FUZZ_CHECK(ev->data[ev->len - 1] != ' ' && ev->data[ev->len - 1] != '\t');
    }
}

static void check_part(const loom_mp_part_t *p, fbuf_t *t) {
    FUZZ_CHECK(p->name != NULL);
    fbuf_put(t, "E", 1);
    put_int(t, (long)p->name_len);
    fbuf_put(t, p->name, p->name_len);
    if (p->filename != NULL) {
        for (size_t i = 0; i < p->filename_len; i++)
            FUZZ_CHECK((unsigned char)p->filename[i] >= 0x20 && p->filename[i] != 0x7f);
        fbuf_put(t, "F", 1);
        put_int(t, (long)p->filename_len);
        fbuf_put(t, p->filename, p->filename_len);
    }
    if (p->type != NULL) {
        for (size_t i = 0; i < p->type_len; i++)
            FUZZ_CHECK(p->type[i] != '\r' && p->type[i] != '\n');
        fbuf_put(t, "T", 1);
        put_int(t, (long)p->type_len);
        fbuf_put(t, p->type, p->type_len);
    }
}

/* Parses body cut at cuts[0..ncuts); returns the outcome, with the transcript in t. */
static int parse(const fuzz_cfg_t *c, const char *body, size_t len, const size_t *cuts,
                 size_t ncuts, fbuf_t *t) {
    loom_multipart_t *mp = loom_multipart_new(c->boundary, c->blen, c->max_parts, c->max_head);
    FUZZ_CHECK(mp != NULL); /* loom_multipart_boundary accepted it */
    fbuf_t part = {0};
    enum where at = OUT;
    size_t nparts = 0, from = 0;
    int rc = 0;
    for (size_t i = 0; i <= ncuts && rc >= 0; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        const char *p = body + from;
        size_t n = to - from;
        from = to;
        /* each event but a tail's flush or a delimiter decided by a byte still to come
         * uses a byte, and those two never follow each other */
        size_t given = n;
        for (size_t rounds = 0;; rounds++) {
            FUZZ_CHECK(rounds <= 2 * given + 8);
            loom_mp_event_t ev;
            size_t used = (size_t)-1;
            rc = loom_multipart_execute(mp, p, n, &used, &ev);
            FUZZ_CHECK(used <= n);
            if (rc == LOOM_MP_DATA && !(ev.data >= p && ev.data + ev.len <= p + n))
                FUZZ_CHECK(ev.len <= 4 + c->blen); /* only a kept tail comes from the parser */
            p += used, n -= used;
            if (rc == LOOM_MP_MORE) {
                FUZZ_CHECK(n == 0);
                break;
            }
            if (rc < 0) {
                FUZZ_CHECK(loom_multipart_status(rc) >= 400);
                FUZZ_CHECK(rc != LOOM_MP_ENOMEM && rc >= LOOM_MP_EDUP_HEADER);
                break;
            }
            switch (rc) {
            case LOOM_MP_PART:
                FUZZ_CHECK(at == OUT);
                FUZZ_CHECK(++nparts <= c->max_parts);
                at = IN_HEAD;
                fbuf_put(t, "P", 1);
                break;
            case LOOM_MP_HEADER:
                FUZZ_CHECK(at == IN_HEAD);
                check_header(&ev);
                fbuf_put(t, "H", 1);
                put_int(t, (long)ev.name_len);
                fbuf_put(t, ev.name, ev.name_len);
                put_int(t, (long)ev.len);
                fbuf_put(t, ev.data, ev.len);
                break;
            case LOOM_MP_HEADERS_END:
                FUZZ_CHECK(at == IN_HEAD);
                check_part(loom_multipart_part(mp), t);
                at = IN_BODY;
                break;
            case LOOM_MP_DATA:
                FUZZ_CHECK(at == IN_BODY && ev.len > 0 && ev.data != NULL);
                fbuf_put(&part, ev.data, ev.len);
                break;
            case LOOM_MP_PART_END:
                FUZZ_CHECK(at == IN_BODY);
                check_body(c, &part);
                fbuf_put(t, "B", 1);
                put_int(t, (long)part.len);
                fbuf_put(t, part.p, part.len);
                part.len = 0;
                at = OUT;
                break;
            case LOOM_MP_END:
                FUZZ_CHECK(at == OUT);
                at = DONE;
                fbuf_put(t, "$", 1);
                break;
            default:
                FUZZ_CHECK(!"unknown event");
            }
        }
    }
    int fin = loom_multipart_finish(mp);
    FUZZ_CHECK(rc < 0 ? fin == rc : (fin == 0) == (at == DONE));
    check_body(c, &part); /* what a truncated part had */
    fbuf_put(t, "b", 1);
    put_int(t, (long)part.len);
    fbuf_put(t, part.p, part.len);
    put_int(t, fin);
    free(part.p);
    loom_multipart_free(mp);
    return fin;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3)
        return 0;
    const char *in = (const char *)data + 2, *nl = memchr(in, '\n', size - 2);
    if (nl == NULL)
        return 0;
    fuzz_cfg_t c;
    size_t ctlen = (size_t)(nl - in);
    char ct[256];
    if (ctlen >= sizeof ct)
        return 0;
    memcpy(ct, in, ctlen); /* the boundary span points into it, as into a header */
    if (loom_multipart_boundary(ct, ctlen, &c.boundary, &c.blen) != 0)
        return 0;
    FUZZ_CHECK(c.blen >= 1 && c.blen <= LOOM_MP_MAX_BOUNDARY);
    FUZZ_CHECK(c.boundary >= ct && c.boundary + c.blen <= ct + ctlen);
    c.max_parts = 1 + (data[1] & 7);
    c.max_head = 32 + (size_t)(data[1] >> 3) * 16;
    const char *body = nl + 1;
    size_t len = size - (size_t)(body - (const char *)data);

    fbuf_t whole = {0}, bytewise = {0}, cut = {0};
    int a = parse(&c, body, len, NULL, 0, &whole);

    size_t *every = malloc((len + 1) * sizeof *every);
    for (size_t i = 0; i < len; i++)
        every[i] = i + 1;
    int b = parse(&c, body, len, every, len ? len - 1 : 0, &bytewise);

    /* cuts from a little generator seeded by byte 0: pieces of 1 to 80 bytes */
    size_t ncuts = 0;
    uint32_t x = data[0] * 2654435761u + 1;
    for (size_t at = 0;;) {
        x = x * 1664525u + 1013904223u;
        at += 1 + (x >> 24) % 80;
        if (at >= len)
            break;
        every[ncuts++] = at;
    }
    int d = parse(&c, body, len, every, ncuts, &cut);
    free(every);

    FUZZ_CHECK(a == b && a == d);
    FUZZ_CHECK(whole.len == bytewise.len && memcmp(whole.p, bytewise.p, whole.len) == 0);
    FUZZ_CHECK(whole.len == cut.len && memcmp(whole.p, cut.p, whole.len) == 0);
    free(whole.p);
    free(bytewise.p);
    free(cut.p);
    return 0;
}
