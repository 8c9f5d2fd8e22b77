/*
 * test_inflate.c - src/http1/inflate.c: gzip, zlib-wrapped deflate and raw deflate decode to the
 * original, whole or fed one byte at a time; corrupt input fails with a message; a sink
 * that says stop (a size limit) stops the decoding; gzip members one after the other are
 * all decoded; bytes after the end that are not a member fail; a stream cut short is
 * truncated at loom_inflate_finish, an empty one is not.
 */
#include <stdio.h>
#include <string.h>
#include <zlib.h>
#include "inflate.h"

static int failures, passes;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            passes++;                                                                              \
        } else {                                                                                   \
            failures++;                                                                            \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

typedef struct {
    char buf[8192];
    size_t len;
    size_t limit;
} sink_t;

static int collect(void *ud, const char *p, size_t n) {
    sink_t *s = ud;
    if (s->len + n > s->limit || s->len + n > sizeof s->buf)
        return 1;
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    return 0;
}

/* Compresses `in` with zlib's deflate: wbits 31 = gzip, 15 = zlib, -15 = raw. */
static size_t squeeze(const char *in, size_t n, int wbits, unsigned char *out, size_t cap) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    deflateInit2(&zs, 6, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    deflate(&zs, Z_FINISH);
    size_t len = cap - zs.avail_out;
    deflateEnd(&zs);
    return len;
}

static void roundtrip(const char *name, int coding, int wbits, int bytewise) {
    static const char text[] = "loom decodes gzip and deflate bodies, piece by piece. "
                               "loom decodes gzip and deflate bodies, piece by piece.";
    unsigned char packed[512];
    size_t n = squeeze(text, sizeof text - 1, wbits, packed, sizeof packed);
    loom_inflate_t *z = loom_inflate_new(coding);
    sink_t s = {.limit = sizeof s.buf};
    int rc = 0;
    if (bytewise) {
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = loom_inflate_feed(z, (const char *)packed + i, 1, collect, &s);
    } else {
        rc = loom_inflate_feed(z, (const char *)packed, n, collect, &s);
    }
    CHECK(rc == 0, "%s: feed returned %d", name, rc);
    CHECK(s.len == sizeof text - 1 && memcmp(s.buf, text, s.len) == 0, "%s: got %zu bytes", name,
          s.len);
    CHECK(loom_inflate_done(z), "%s: the stream did not end", name);
    loom_inflate_free(z);
}

static void corrupt(void) {
    loom_inflate_t *z = loom_inflate_new(LOOM_CODING_GZIP);
    sink_t s = {.limit = sizeof s.buf};
    int rc = loom_inflate_feed(z, "this is not gzip", 16, collect, &s);
    CHECK(rc == -1, "corrupt gzip: feed returned %d", rc);
    CHECK(strlen(loom_inflate_error(z)) > 0, "corrupt gzip: no message");
    loom_inflate_free(z);
}

static void limited(void) {
    char big[4096];
    unsigned char packed[512];
    memset(big, 'a', sizeof big);
    size_t n = squeeze(big, sizeof big, 31, packed, sizeof packed);
    loom_inflate_t *z = loom_inflate_new(LOOM_CODING_GZIP);
    sink_t s = {.limit = 1000};
    int rc = loom_inflate_feed(z, (const char *)packed, n, collect, &s);
    CHECK(rc == -2, "limit: feed returned %d", rc);
    CHECK(s.len <= 1000, "limit: %zu bytes taken", s.len);
    loom_inflate_free(z);
}

static int count(void *ud, const char *p, size_t n) {
    size_t *total = ud;
    for (size_t i = 0; i < n; i++)
        if (p[i] != 'a')
            return 1;
    *total += n;
    return 0;
}

/* 1 MiB of one letter packs into about 1 KB: each small input yields many output buffers. */
static void expansive(void) {
    static char big[1 << 20];
    static unsigned char packed[1 << 16];
    memset(big, 'a', sizeof big);
    size_t n = squeeze(big, sizeof big, 31, packed, sizeof packed), total = 0;
    loom_inflate_t *z = loom_inflate_new(LOOM_CODING_GZIP);
    int rc = loom_inflate_feed(z, (const char *)packed, n, count, &total);
    CHECK(rc == 0 && total == sizeof big, "expansive: rc %d, %zu bytes", rc, total);
    CHECK(loom_inflate_done(z), "expansive: the stream did not end");
    loom_inflate_free(z);
}

/* Feeds `in` whole (piece 0) or in pieces; returns the first failing feed's code. */
static int feed(loom_inflate_t *z, const unsigned char *in, size_t n, size_t piece, sink_t *s) {
    int rc = 0;
    if (piece == 0)
        piece = n ? n : 1;
    for (size_t at = 0; at < n && rc == 0; at += piece)
        rc = loom_inflate_feed(z, (const char *)in + at, n - at < piece ? n - at : piece, collect,
                               s);
    return rc;
}

/* Two gzip members, fed whole, bytewise and in pieces that straddle the boundary. */
static void members(void) {
    unsigned char packed[512];
    size_t n = squeeze("first member, ", 14, 31, packed, sizeof packed);
    n += squeeze("second member", 13, 31, packed + n, sizeof packed - n);
    for (size_t piece = 0; piece < 8; piece++) {
        loom_inflate_t *z = loom_inflate_new(LOOM_CODING_GZIP);
        sink_t s = {.limit = sizeof s.buf};
        int rc = feed(z, packed, n, piece, &s);
        CHECK(rc == 0, "members, pieces of %zu: feed returned %d", piece, rc);
        CHECK(s.len == 27 && memcmp(s.buf, "first member, second member", 27) == 0,
              "members, pieces of %zu: got %zu bytes", piece, s.len);
        CHECK(loom_inflate_done(z) && loom_inflate_finish(z) == 0,
              "members, pieces of %zu: not ended", piece);
        loom_inflate_free(z);
    }
}

/* Bytes after the end of the stream that are not another gzip member fail at once. */
static void trailing(const char *name, int coding, int wbits, const char *extra, size_t nextra) {
    unsigned char packed[512];
    size_t n = squeeze("payload", 7, wbits, packed, sizeof packed);
    memcpy(packed + n, extra, nextra);
    loom_inflate_t *z = loom_inflate_new(coding);
    sink_t s = {.limit = sizeof s.buf};
    int rc = feed(z, packed, n, 0, &s);
    CHECK(rc == 0 && loom_inflate_done(z), "%s: the stream did not end (%d)", name, rc);
    rc = feed(z, packed + n, nextra, 1, &s);
    CHECK(rc == -1, "%s: feed returned %d", name, rc);
    CHECK(s.len == 7 && memcmp(s.buf, "payload", 7) == 0, "%s: got %zu bytes", name, s.len);
    loom_inflate_free(z);
}

/* Cut one byte short of its end (and at every shorter length), a stream is truncated. */
static void truncated(const char *name, int coding, int wbits) {
    unsigned char packed[512];
    size_t n = squeeze("a short payload, cut short", 26, wbits, packed, sizeof packed);
    for (size_t cut = 0; cut < n; cut++) {
        loom_inflate_t *z = loom_inflate_new(coding);
        sink_t s = {.limit = sizeof s.buf};
        int rc = feed(z, packed, cut, 1, &s);
        CHECK(rc == 0 || rc == -1, "%s cut at %zu: feed returned %d", name, cut, rc);
        if (rc == 0 && cut > 0) {
            CHECK(!loom_inflate_done(z) && loom_inflate_finish(z) == -1,
                  "%s cut at %zu: not truncated", name, cut);
            CHECK(strstr(loom_inflate_error(z), "truncated"), "%s: message %s", name,
                  loom_inflate_error(z));
        }
        if (cut == 0)
            CHECK(loom_inflate_finish(z) == 0, "%s: an empty body is truncated", name);
        loom_inflate_free(z);
    }
}

int main(void) {
    expansive();
    roundtrip("gzip", LOOM_CODING_GZIP, 31, 0);
    roundtrip("gzip bytewise", LOOM_CODING_GZIP, 31, 1);
    roundtrip("deflate (zlib)", LOOM_CODING_DEFLATE, 15, 0);
    roundtrip("deflate (zlib) bytewise", LOOM_CODING_DEFLATE, 15, 1);
    roundtrip("deflate (raw)", LOOM_CODING_DEFLATE, -15, 0);
    roundtrip("deflate (raw) bytewise", LOOM_CODING_DEFLATE, -15, 1);
    roundtrip("zlib under gzip's name", LOOM_CODING_GZIP, 15, 0);
    corrupt();
    limited();
    members();
    trailing("gzip + garbage", LOOM_CODING_GZIP, 31, "garbage", 7);
    trailing("gzip + zeros", LOOM_CODING_GZIP, 31, "\0\0", 2);
    trailing("gzip + zlib", LOOM_CODING_GZIP, 31, "\x78\x9c", 2);
    trailing("zlib under gzip's name + gzip", LOOM_CODING_GZIP, 15, "\x1f\x8b", 2);
    trailing("deflate (zlib) + newline", LOOM_CODING_DEFLATE, 15, "\n", 1);
    trailing("deflate (raw) + a byte", LOOM_CODING_DEFLATE, -15, "x", 1);
    truncated("gzip", LOOM_CODING_GZIP, 31);
    truncated("deflate (zlib)", LOOM_CODING_DEFLATE, 15);
    truncated("deflate (raw)", LOOM_CODING_DEFLATE, -15);
    printf("%d passed, %d failed\n", passes, failures);
    return failures ? 1 : 0;
}
