/*
 * fuzz_br.c - libFuzzer target: the br decoding of src/http1/inflate.c (the client's
 * Content-Encoding: br) and the encoders of src/lib/compress.c (loom.app{ compress }).
 * See docs/fuzzing.md.
 *
 * Input: byte 0 is the mode (bit 0: round trip, else raw; bit 1: the coding of a round trip,
 * gzip or br; bit 2: a size limit in raw mode; bits 4-7: the level), byte 1 the piece size
 * (1..256), the rest the body (raw) or the payload (round trip).
 *
 * Raw mode (a build with brotli): the body is fed to the br decoder at once and in pieces;
 * both give the same status and end (unless the sink refused), one's bytes a prefix of the
 * other's, the same bytes once the stream ended, and then the same bytes as
 * libbrotli's decoder called directly, and loom_inflate_finish says truncated exactly when
 * bytes came and the stream did not end. A sink that refuses past the limit stops the
 * decoding with -2 and is never called again.
 *
 * Round trip: the payload is encoded in pieces, every other piece flushed, then finished;
 * the output is decoded by loom_inflate as it comes. After each flush the decoder has given
 * back exactly the payload so far (what makes an SSE event reach the client at once); at the
 * end, all of it, ended, and a byte after the end is an error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef LOOM_HAVE_BROTLI
#include <brotli/decode.h>
#endif
#include "compress.h"
#include "fuzz_check.h"
#include "inflate.h"

#define FUZZ_MAX_OUT (4u << 20) /* a bomb in the corpus costs no more than this */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    fbuf_t b;
    size_t limit;
    int refused;
} sink_t;

static int collect(void *ud, const char *p, size_t n) {
    sink_t *s = ud;
    FUZZ_CHECK(!s->refused); /* after a refusal the decoder must stop calling */
    FUZZ_CHECK(n > 0);
    if (s->b.len + n > s->limit) {
        s->refused = 1;
        return 1;
    }
    fbuf_put(&s->b, p, n);
    return 0;
}

static int same(const fbuf_t *a, const fbuf_t *b) {
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

#ifdef LOOM_HAVE_BROTLI
typedef struct {
    int rc, done, fin;
} outcome_t;

static outcome_t decode(const uint8_t *in, size_t n, size_t piece, sink_t *s) {
    outcome_t o = {0, 0, 0};
    loom_inflate_t *z = loom_inflate_new(LOOM_CODING_BR);
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
        FUZZ_CHECK((o.fin == 0) == (o.done || n == 0));
        if (o.fin)
            FUZZ_CHECK(strstr(loom_inflate_error(z), "truncated br body"));
    }
    loom_inflate_free(z);
    return o;
}

/* libbrotli's decoder on the whole body: 0 when it ends exactly at the body's end. */
static int reference(const uint8_t *in, size_t n, fbuf_t *out) {
    BrotliDecoderState *st = BrotliDecoderCreateInstance(NULL, NULL, NULL);
    FUZZ_CHECK(st);
    size_t avail_in = n;
    const uint8_t *next_in = in;
    BrotliDecoderResult r;
    do {
        uint8_t buf[4096], *next_out = buf;
        size_t avail_out = sizeof buf;
        r = BrotliDecoderDecompressStream(st, &avail_in, &next_in, &avail_out, &next_out, NULL);
        fbuf_put(out, buf, sizeof buf - avail_out);
    } while (r == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT && out->len <= FUZZ_MAX_OUT);
    BrotliDecoderDestroyInstance(st);
    return r == BROTLI_DECODER_RESULT_SUCCESS && avail_in == 0 ? 0 : -1;
}

static void raw_mode(const uint8_t *in, size_t n, size_t piece, size_t limit) {
    sink_t whole = {{0}, limit, 0}, pieces = {{0}, limit, 0};
    fbuf_t ref = {0};
    outcome_t a = decode(in, n, 0, &whole);
    outcome_t b = decode(in, n, piece, &pieces);
    size_t common = whole.b.len < pieces.b.len ? whole.b.len : pieces.b.len;
    FUZZ_CHECK(common == 0 || memcmp(whole.b.p, pieces.b.p, common) == 0);
    if (a.rc != -2 && b.rc != -2) {
        FUZZ_CHECK(a.rc == b.rc && a.done == b.done && a.fin == b.fin);
        /* Only an ended stream must give the same bytes: before its end libbrotli gives out
         * what its ring buffer lets go, and how much that is depends on how the input came
         * (a 17-byte truncated stream gives 16 KiB whole and 64 KiB byte by byte). */
        FUZZ_CHECK(a.rc != 0 || !a.done || same(&whole.b, &pieces.b));
    }
    if (a.rc == 0 && a.done) {
        FUZZ_CHECK(reference(in, n, &ref) == 0);
        FUZZ_CHECK(same(&whole.b, &ref));
    }
    free(whole.b.p);
    free(pieces.b.p);
    free(ref.p);
}
#endif

static int gather(void *ud, const char *p, size_t n) {
    fbuf_put(ud, p, n);
    return 0;
}

/* The payload through loom_encoder in pieces, decoded by loom_inflate as it comes. */
static void round_trip(int coding, int level, const uint8_t *in, size_t n, size_t piece) {
    loom_encoder_t *e = loom_encoder_new(coding, level);
    FUZZ_CHECK(e);
    loom_inflate_t *z = loom_inflate_new(coding == LOOM_ENC_BR ? LOOM_CODING_BR : LOOM_CODING_GZIP);
    FUZZ_CHECK(z);
    sink_t got = {{0}, (size_t)-1, 0};
    fbuf_t coded = {0};
    size_t fed = 0; /* coded bytes given to the decoder */
    int k = 0;
    for (size_t at = 0; at < n; at += piece, k++) {
        size_t len = n - at < piece ? n - at : piece;
        int op = k % 2 == 0 ? LOOM_ENC_FLUSH : LOOM_ENC_NONE;
        FUZZ_CHECK(loom_encoder_run(e, (const char *)in + at, len, op, gather, &coded) == 0);
        FUZZ_CHECK(loom_inflate_feed(z, coded.p + fed, coded.len - fed, collect, &got) == 0);
        fed = coded.len;
        if (op == LOOM_ENC_FLUSH) /* everything so far is decodable now */
            FUZZ_CHECK(got.b.len == at + len && memcmp(got.b.p, in, got.b.len) == 0);
    }
    FUZZ_CHECK(loom_encoder_run(e, NULL, 0, LOOM_ENC_FINISH, gather, &coded) == 0);
    FUZZ_CHECK(loom_encoder_run(e, "x", 1, LOOM_ENC_FLUSH, gather, &coded) == -1); /* finished */
    FUZZ_CHECK(loom_inflate_feed(z, coded.p + fed, coded.len - fed, collect, &got) == 0);
    FUZZ_CHECK(loom_inflate_done(z) && loom_inflate_finish(z) == 0);
    FUZZ_CHECK(got.b.len == n && (n == 0 || memcmp(got.b.p, in, n) == 0));
    /* a byte after the end: not another gzip member (0x1f), so an error for both codings */
    FUZZ_CHECK(loom_inflate_feed(z, "\x00", 1, collect, &got) == -1);
    loom_inflate_free(z);
    loom_encoder_free(e);
    free(got.b.p);
    free(coded.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    int mode = data[0];
    size_t piece = (size_t)data[1] + 1;
    if (mode & 1) {
        int br = (mode >> 1) & 1;
        if (br && !loom_compress_has_br())
            return 0;
        int level = br ? (mode >> 4) % 12 : (mode >> 4) % 10;
        round_trip(br ? LOOM_ENC_BR : LOOM_ENC_GZIP, level, data + 2, size - 2, piece);
        return 0;
    }
#ifdef LOOM_HAVE_BROTLI
    raw_mode(data + 2, size - 2, piece, (mode >> 2) & 1 ? 1024 : FUZZ_MAX_OUT);
#endif
    return 0;
}
