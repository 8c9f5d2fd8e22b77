/*
 * fuzz_resp.c - libFuzzer target: src/db/resp.c, the RESP2 reply parser. A stream of replies
 * parsed whole, one byte at a time, and in pieces cut where the input says (each piece
 * added to a growing buffer, the scan resumed with the same state) must give the same
 * replies and end the same way (need more, or the same error). Along the way: a scan never
 * claims more bytes than it was given, a whole reply's tokens walk to exactly its size,
 * every bulk, array and nesting stays within the limits, and a reply is never found whole
 * before its last byte has arrived (a prefix one byte short says "more").
 *
 * Input: byte 0 seeds the cuts, byte 1 the limits (max_bulk 0..63 or 512 MiB, max_elements
 * 1..16 or 2^24, max_depth 1..4 or 32); the rest is what a server would send.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_check.h"
#include "resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put_fmt(fbuf_t *b, const char *fmt, long long v) {
    char tmp[48];
    int n = snprintf(tmp, sizeof tmp, fmt, v);
    fbuf_put(b, tmp, (size_t)n);
}

/* Walks the value at *p (of a reply scanned whole) into out; returns its depth. */
static int walk(const loom_resp_limits_t *lim, const char **p, const char *end, fbuf_t *out) {
    loom_resp_token_t t;
    char err[128];
    int rc = loom_resp_token(*p, (size_t)(end - *p), lim, &t, err, sizeof err);
    FUZZ_CHECK(rc == LOOM_RESP_WHOLE);
    FUZZ_CHECK(t.size <= (size_t)(end - *p));
    *p += t.size;
    fbuf_put(out, &t.type, 1);
    switch (t.type) {
    case '+':
    case '-':
        FUZZ_CHECK(memchr(t.str, '\r', t.len) == NULL && memchr(t.str, '\n', t.len) == NULL);
        put_fmt(out, "%lld:", (long long)t.len);
        fbuf_put(out, t.str, t.len);
        return 0;
    case ':':
        put_fmt(out, "%lld;", t.n);
        return 0;
    case '$':
        FUZZ_CHECK(t.n >= -1 && (t.n < 0 || (unsigned long long)t.n <= lim->max_bulk));
        put_fmt(out, "%lld:", t.n);
        if (t.n > 0)
            fbuf_put(out, t.str, t.len);
        return 0;
    default:
        break;
    }
    FUZZ_CHECK(t.type == '*');
    FUZZ_CHECK(t.n >= -1 && (t.n < 0 || (unsigned long long)t.n <= lim->max_elements));
    put_fmt(out, "%lld[", t.n);
    int depth = 0;
    for (long long i = 0; i < t.n; i++) {
        int d = walk(lim, p, end, out);
        if (d > depth)
            depth = d;
    }
    fbuf_put(out, "]", 1);
    return t.n > 0 ? depth + 1 : 0;
}

/* Parses buf[0, len) revealed in pieces: cut(i) gives the size of the i-th piece (0: all at
 * once). The replies go to out; returns the final outcome (MORE or BAD), the error in err. */
static int parse(const loom_resp_limits_t *lim, const uint8_t *buf, size_t len, uint8_t seed,
                 int mode, fbuf_t *out, char *err) {
    loom_resp_scan_t st;
    loom_resp_scan_init(&st);
    size_t start = 0; /* where the current reply begins */
    size_t avail = 0; /* bytes revealed */
    uint32_t rng = seed * 2654435761u + 1;
    for (;;) {
        size_t step;
        if (mode == 0)
            step = len - avail;
        else if (mode == 1)
            step = 1;
        else {
            rng = rng * 1103515245u + 12345u;
            step = 1 + (rng >> 16) % 80;
        }
        if (step > len - avail)
            step = len - avail;
        avail += step;
        for (;;) {
            size_t before = st.off;
            int rc = loom_resp_scan(&st, lim, (const char *)buf + start, avail - start);
            FUZZ_CHECK(st.off >= before && st.off <= avail - start);
            if (rc == LOOM_RESP_BAD) {
                memcpy(err, st.err, sizeof st.err);
                return LOOM_RESP_BAD;
            }
            if (rc == LOOM_RESP_MORE)
                break;
            size_t size = st.off;
            FUZZ_CHECK(size > 0);
            /* one byte short is never whole */
            loom_resp_scan_t probe;
            loom_resp_scan_init(&probe);
            FUZZ_CHECK(loom_resp_scan(&probe, lim, (const char *)buf + start, size - 1) ==
                       LOOM_RESP_MORE);
            const char *p = (const char *)buf + start;
            int depth = walk(lim, &p, p + size, out);
            FUZZ_CHECK(p == (const char *)buf + start + size);
            FUZZ_CHECK(depth <= lim->max_depth);
            fbuf_put(out, "\n", 1);
            start += size;
            loom_resp_scan_init(&st);
        }
        if (avail == len)
            return LOOM_RESP_MORE;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    uint8_t seed = data[0], lb = data[1];
    loom_resp_limits_t lim;
    lim.max_bulk = (lb & 0x03) == 0 ? (size_t)512 << 20 : (size_t)(lb >> 2 & 0x3f);
    lim.max_elements = (lb & 0x0c) == 0 ? (size_t)1 << 24 : (size_t)1 + (lb >> 4);
    lim.max_depth = (lb & 0x30) == 0 ? 32 : 1 + (lb >> 6);
    data += 2, size -= 2;
    fbuf_t outs[3] = {{0}, {0}, {0}};
    char errs[3][128];
    int rcs[3];
    for (int m = 0; m < 3; m++) {
        errs[m][0] = '\0';
        rcs[m] = parse(&lim, data, size, seed, m, &outs[m], errs[m]);
    }
    for (int m = 1; m < 3; m++) {
        FUZZ_CHECK(rcs[m] == rcs[0]);
        FUZZ_CHECK(outs[m].len == outs[0].len);
        FUZZ_CHECK(outs[0].len == 0 || memcmp(outs[m].p, outs[0].p, outs[0].len) == 0);
        if (rcs[0] == LOOM_RESP_BAD)
            FUZZ_CHECK(strcmp(errs[m], errs[0]) == 0);
    }
    for (int m = 0; m < 3; m++)
        free(outs[m].p);
    return 0;
}
