/*
 * fuzz_inflate.c - libFuzzer target: src/http1/inflate.c, the client's gzip and deflate body
 * decoder, fed the way http_exchange.c feeds it (body pieces as llhttp hands them over, a
 * sink that may refuse past a size limit). See docs/fuzzing.md.
 *
 * Input: byte 0 is the mode (bits 0-1: the coding, gzip or deflate; bit 2: compress mode;
 * bit 3: a size limit; bits 4-7: the zlib level in compress mode, plus garbage after the
 * stream from 10 up), byte 1 the piece size (1..256), the rest the body. In raw mode the
 * rest is fed as it is; in compress mode it is the payload, repeated up to 64 times (byte 1
 * again), compressed by zlib first.
 *
 * Checks: feeding in pieces gives the same bytes, status and end as feeding at once, and
 * the same bytes as zlib's inflate called directly (member after member for gzip); the end
 * of the body is truncation exactly when some bytes came and the stream did not end; a
 * payload compressed by zlib (gzip, zlib-wrapped or raw deflate, gzip in two members)
 * decodes to itself, ended, and with garbage after it fails; a sink that refuses stops the
 * decoding with -2, and only when the output is past the limit.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "fuzz_check.h"
#include "inflate.h"

/* Past this the sink refuses: a zip bomb in the corpus costs no more than this. */
#define FUZZ_MAX_OUT (4u << 20)

typedef struct {
    unsigned char *buf;
    size_t len, cap, limit;
    int refused;
} sink_t;

typedef struct {
    int rc;   /* 0, -1 (corrupt) or -2 (the sink refused) from the first failing feed */
    int done; /* loom_inflate_done at the end */
    int fin;  /* loom_inflate_finish at the end, after a clean decoding */
} outcome_t;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void sink_init(sink_t *s, size_t limit) {
    s->len = 0;
    s->cap = 4096;
    s->buf = malloc(s->cap);
    s->limit = limit;
    s->refused = 0;
    FUZZ_CHECK(s->buf);
}

static int sink_append(sink_t *s, const void *p, size_t n) {
    if (s->len + n > s->cap) {
        while (s->len + n > s->cap)
            s->cap *= 2;
        s->buf = realloc(s->buf, s->cap);
        FUZZ_CHECK(s->buf);
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    return 0;
}

/* The decoder's sink: refuses, as the client's max_body does, past the limit. */
static int collect(void *ud, const char *p, size_t n) {
    sink_t *s = ud;
    FUZZ_CHECK(!s->refused); /* after a refusal the decoder must stop calling */
    FUZZ_CHECK(n > 0);
    if (s->len + n > s->limit) {
        s->refused = 1;
        return 1;
    }
    return sink_append(s, p, n);
}

/* Feeds in pieces of `piece` bytes (all at once when 0), stopping at the first failure as
 * the exchange does. */
static outcome_t decode(int coding, const unsigned char *in, size_t n, size_t piece, sink_t *s) {
    outcome_t o = {0, 0, 0};
    loom_inflate_t *z = loom_inflate_new(coding);
    FUZZ_CHECK(z);
    if (piece == 0)
        piece = n ? n : 1;
    for (size_t at = 0; at < n && o.rc == 0; at += piece) {
        size_t len = n - at < piece ? n - at : piece;
        o.rc = loom_inflate_feed(z, (const char *)in + at, len, collect, s);
    }
    FUZZ_CHECK(o.rc == 0 || o.rc == -1 || o.rc == -2);
    FUZZ_CHECK((o.rc == -2) == s->refused);
    if (o.rc == -1)
        FUZZ_CHECK(loom_inflate_error(z) && *loom_inflate_error(z));
    o.done = loom_inflate_done(z);
    if (o.rc == 0) {
        o.fin = loom_inflate_finish(z);
        FUZZ_CHECK(o.fin == 0 || o.fin == -1);
        FUZZ_CHECK((o.fin == 0) == (o.done || n == 0)); /* truncated: bytes came, no end */
        if (o.fin)
            FUZZ_CHECK(strstr(loom_inflate_error(z), "truncated"));
    }
    loom_inflate_free(z);
    return o;
}

/* The same stream through zlib directly, the header chosen as inflate.c documents, and for
 * a body that began as gzip, each member after the end. 0 with the whole output when zlib
 * reports the end of a stream with no input after it, else -1. */
static int reference(int coding, const unsigned char *in, size_t n, sink_t *s) {
    int bits = 15 + 32;
    int members = coding == LOOM_CODING_GZIP && n > 0 && in[0] == 0x1f;
    if (coding == LOOM_CODING_DEFLATE) {
        if (n < 2)
            return -1;
        int zlib = (in[0] & 0x0f) == 8 && (in[0] * 256 + in[1]) % 31 == 0;
        bits = zlib ? 15 : -15;
    }
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    FUZZ_CHECK(inflateInit2(&zs, bits) == Z_OK);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)n;
    unsigned char buf[4096];
    int rc;
    for (;;) {
        zs.next_out = buf;
        zs.avail_out = sizeof buf;
        rc = inflate(&zs, Z_NO_FLUSH);
        sink_append(s, buf, sizeof buf - zs.avail_out);
        if (rc == Z_STREAM_END && zs.avail_in > 0 && members && *zs.next_in == 0x1f) {
            FUZZ_CHECK(inflateReset2(&zs, 15 + 16) == Z_OK); /* the next gzip member */
            continue;
        }
        if (rc != Z_OK || s->len > FUZZ_MAX_OUT)
            break;
    }
    inflateEnd(&zs);
    return rc == Z_STREAM_END && zs.avail_in == 0 ? 0 : -1;
}

static int same_bytes(const sink_t *a, const sink_t *b) {
    return a->len == b->len && (a->len == 0 || memcmp(a->buf, b->buf, a->len) == 0);
}

/* Whether one output is the start of the other: decoding never takes back a byte. */
static int one_prefixes_other(const sink_t *a, const sink_t *b) {
    size_t n = a->len < b->len ? a->len : b->len;
    return n == 0 || memcmp(a->buf, b->buf, n) == 0;
}

/* Raw mode: the input is the compressed body. A refusal may come at different points (the
 * pieces' output reaches the sink sooner), so outcomes are compared when neither refused. */
static void raw_mode(int coding, const unsigned char *in, size_t n, size_t piece, size_t limit) {
    sink_t whole, pieces, ref;
    sink_init(&whole, limit);
    sink_init(&pieces, limit);
    sink_init(&ref, (size_t)-1);
    outcome_t a = decode(coding, in, n, 0, &whole);
    outcome_t b = decode(coding, in, n, piece, &pieces);
    FUZZ_CHECK(one_prefixes_other(&whole, &pieces));
    if (a.rc != -2 && b.rc != -2) {
        FUZZ_CHECK(a.rc == b.rc && a.done == b.done && a.fin == b.fin);
        FUZZ_CHECK(a.rc != 0 || same_bytes(&whole, &pieces));
    }
    if (a.rc == 0 && a.done && reference(coding, in, n, &ref) == 0)
        FUZZ_CHECK(same_bytes(&whole, &ref));
    free(whole.buf);
    free(pieces.buf);
    free(ref.buf);
}

/* zlib's deflate of `in`: wbits 31 = gzip, 15 = zlib, -15 = raw. */
static void squeeze(const unsigned char *in, size_t n, int wbits, int level, sink_t *out) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    FUZZ_CHECK(deflateInit2(&zs, level, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)n;
    unsigned char buf[4096];
    int rc;
    do {
        zs.next_out = buf;
        zs.avail_out = sizeof buf;
        rc = deflate(&zs, Z_FINISH);
        sink_append(out, buf, sizeof buf - zs.avail_out);
    } while (rc == Z_OK);
    FUZZ_CHECK(rc == Z_STREAM_END);
    deflateEnd(&zs);
}

/* Compress mode: the payload, repeated, compressed by zlib, must decode to itself; with
 * garbage after the stream it fails (unless the sink refused first). */
static void compress_mode(int form, int level, const unsigned char *in, size_t n, size_t repeat,
                          size_t piece, int limited, int garbage) {
    static const int wbits[4] = {31, 15, -15, 31};
    int coding = form == 0 || form == 3 ? LOOM_CODING_GZIP : LOOM_CODING_DEFLATE;
    sink_t payload, packed, out;
    sink_init(&payload, (size_t)-1);
    sink_init(&packed, (size_t)-1);
    for (size_t i = 0; i < repeat; i++)
        sink_append(&payload, in, n);
    if (form == 3) { /* gzip in two members, split in the middle of the payload */
        squeeze(payload.buf, payload.len / 2, 31, level, &packed);
        squeeze(payload.buf + payload.len / 2, payload.len - payload.len / 2, 31, level, &packed);
    } else {
        squeeze(payload.buf, payload.len, wbits[form], level, &packed);
    }
    if (garbage)
        sink_append(&packed, "garbage", 7);
    size_t limit = limited ? payload.len / 2 : payload.len;
    sink_init(&out, limit);
    outcome_t o = decode(coding, packed.buf, packed.len, piece, &out);
    if (limited && payload.len > 0) {
        FUZZ_CHECK(o.rc == -2);
    } else if (garbage) {
        FUZZ_CHECK(o.rc == -1 && same_bytes(&out, &payload));
    } else {
        FUZZ_CHECK(o.rc == 0 && o.done && o.fin == 0);
        FUZZ_CHECK(same_bytes(&out, &payload));
    }
    free(payload.buf);
    free(packed.buf);
    free(out.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    int mode = data[0];
    size_t piece = (size_t)data[1] + 1;
    int limited = (mode >> 3) & 1;
    if (mode & 4) {
        int level = (mode >> 4) % 10;
        compress_mode(mode & 3, level, data + 2, size - 2, (size_t)data[1] % 64 + 1, piece, limited,
                      (mode >> 4) >= 10);
    } else {
        int coding = mode & 1 ? LOOM_CODING_DEFLATE : LOOM_CODING_GZIP;
        raw_mode(coding, data + 2, size - 2, piece, limited ? 1024 : FUZZ_MAX_OUT);
    }
    return 0;
}
