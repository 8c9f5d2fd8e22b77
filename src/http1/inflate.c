/*
 * inflate.c - gzip and deflate decoding with zlib for response bodies. "deflate" is meant
 * to be zlib-wrapped (RFC 9110 8.4.1.2) but some servers send raw deflate: the first two
 * bytes tell them apart (a zlib header is CM = 8 and a multiple of 31), as browsers do.
 *
 * A gzip body may be several members one after the other (RFC 1952 2.2): each is decoded
 * in turn, as Go's and Python's gzip readers do. Anything else after the end of the
 * compressed stream is an error, as in curl and Go: it is not what the server meant to
 * send. A body that ends before the stream does is truncated (loom_inflate_finish), never
 * a shorter whole.
 *
 * br (RFC 7932) is one stream with no members: the same rules hold, any byte after its end
 * is an error and a body that stops before it is truncated. Without libbrotli the client
 * neither offers nor decodes it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#ifdef LOOM_HAVE_BROTLI
#include <brotli/decode.h>
#endif
#include "inflate.h"

#define OUT_CHUNK 16384

struct loom_inflate {
    z_stream zs;
    int coding;
    int started; /* zlib is set up (deflate waits for two bytes to choose) */
    int ended;   /* zlib returned Z_STREAM_END and no next member has begun */
    int members; /* gzip: another member may follow the end (the body began as gzip) */
    unsigned char first[2];
    int nfirst;
    const char *err;
#ifdef LOOM_HAVE_BROTLI
    BrotliDecoderState *br;
    char ebuf[96];
#endif
};

int loom_inflate_has_br(void) {
#ifdef LOOM_HAVE_BROTLI
    return 1;
#else
    return 0;
#endif
}

static int init(loom_inflate_t *z, int bits) {
    memset(&z->zs, 0, sizeof z->zs);
    return inflateInit2(&z->zs, bits) == Z_OK ? 0 : -1;
}

loom_inflate_t *loom_inflate_new(int coding) {
    loom_inflate_t *z = calloc(1, sizeof *z);
    if (!z)
        return NULL;
    z->coding = coding;
    if (coding == LOOM_CODING_DEFLATE)
        return z;
    if (coding == LOOM_CODING_BR) {
#ifdef LOOM_HAVE_BROTLI
        z->br = BrotliDecoderCreateInstance(NULL, NULL, NULL);
        if (z->br)
            return z;
#endif
        free(z);
        return NULL;
    }
    /* "windowBits can also be greater than 15 for optional gzip decoding. Add 32 to
     * windowBits to enable zlib and gzip decoding with automatic header detection" */
    if (init(z, 15 + 32) != 0) {
        free(z);
        return NULL;
    }
    z->started = 1;
    return z;
}

/* The stream ended and input is left: the next gzip member, or an error. */
static int next_member(loom_inflate_t *z) {
    if (!z->members) {
        z->err = "bytes after the end of the compressed stream";
        return -1;
    }
    if (*z->zs.next_in != 0x1f) { /* zlib checks the rest of the magic and the header */
        z->err = "bytes after the end of the gzip stream";
        return -1;
    }
    /* "windowBits can also be greater than 15 for optional gzip decoding. Add 16 to
     * windowBits to decode only the gzip format" */
    if (inflateReset2(&z->zs, 15 + 16) != Z_OK) {
        z->err = "corrupt compressed body";
        return -1;
    }
    z->ended = 0;
    return 0;
}

/* Inflates n bytes into out. Goes on while input is left or the last round filled the
 * output buffer: zlib may hold more output than one buffer for little input. */
static int run(loom_inflate_t *z, const char *in, size_t n, loom_inflate_out out, void *ud) {
    char buf[OUT_CHUNK];
    z->zs.next_in = (Bytef *)in;
    z->zs.avail_in = (uInt)n;
    do {
        if (z->ended && next_member(z) != 0)
            return -1;
        z->zs.next_out = (Bytef *)buf;
        z->zs.avail_out = sizeof buf;
        int rc = inflate(&z->zs, Z_NO_FLUSH);
        size_t got = sizeof buf - z->zs.avail_out;
        if (rc == Z_BUF_ERROR && got == 0)
            break; /* "no progress was possible": nothing more for now */
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
            z->err = z->zs.msg ? z->zs.msg : "corrupt compressed body";
            return -1;
        }
        if (got && out(ud, buf, got) != 0)
            return -2;
        if (rc == Z_STREAM_END)
            z->ended = 1;
    } while (z->zs.avail_in > 0 || (!z->ended && z->zs.avail_out == 0));
    return 0;
}

/* Deflate: zlib-wrapped or raw, chosen by the first two bytes. */
static int start_deflate(loom_inflate_t *z) {
    unsigned b0 = z->first[0], b1 = z->first[1];
    int zlib = (b0 & 0x0f) == 8 && (b0 * 256 + b1) % 31 == 0;
    if (init(z, zlib ? 15 : -15) != 0) {
        z->err = "out of memory";
        return -1;
    }
    z->started = 1;
    return 0;
}

#ifdef LOOM_HAVE_BROTLI
/* Decodes n bytes of br into out. BrotliDecoderDecompressStream returns NEEDS_MORE_OUTPUT
 * while it holds output for the buffer, NEEDS_MORE_INPUT once all the input is used, and
 * SUCCESS at the end of the stream, leaving in available_in what follows it. */
static int run_br(loom_inflate_t *z, const char *in, size_t n, loom_inflate_out out, void *ud) {
    uint8_t buf[OUT_CHUNK];
    const uint8_t *next_in = (const uint8_t *)in;
    size_t avail_in = n;
    if (n > 0)
        z->nfirst = 1; /* bytes came: an end before the stream's is a truncation */
    for (;;) {
        if (z->ended) {
            if (avail_in == 0)
                return 0;
            z->err = "bytes after the end of the br stream";
            return -1;
        }
        uint8_t *next_out = buf;
        size_t avail_out = sizeof buf;
        BrotliDecoderResult r =
            BrotliDecoderDecompressStream(z->br, &avail_in, &next_in, &avail_out, &next_out, NULL);
        if (r == BROTLI_DECODER_RESULT_ERROR) {
            snprintf(z->ebuf, sizeof z->ebuf, "corrupt br body (%s)",
                     BrotliDecoderErrorString(BrotliDecoderGetErrorCode(z->br)));
            z->err = z->ebuf;
            return -1;
        }
        size_t got = sizeof buf - avail_out;
        if (got && out(ud, (const char *)buf, got) != 0)
            return -2;
        if (r == BROTLI_DECODER_RESULT_SUCCESS)
            z->ended = 1;
        else if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT)
            return 0;
    }
}
#endif

int loom_inflate_feed(loom_inflate_t *z, const char *in, size_t n, loom_inflate_out out, void *ud) {
#ifdef LOOM_HAVE_BROTLI
    if (z->coding == LOOM_CODING_BR)
        return run_br(z, in, n, out, ud);
#endif
    if (n > 0 && z->nfirst == 0 && z->coding == LOOM_CODING_GZIP) {
        z->first[z->nfirst++] = (unsigned char)*in; /* gzip's magic, or zlib's header */
        z->members = z->first[0] == 0x1f;
    }
    if (!z->started) {
        while (n > 0 && z->nfirst < 2) {
            z->first[z->nfirst++] = (unsigned char)*in++;
            n--;
        }
        if (z->nfirst < 2)
            return 0;
        if (start_deflate(z) != 0)
            return -1;
        int rc = run(z, (const char *)z->first, 2, out, ud);
        if (rc != 0)
            return rc;
    }
    return n ? run(z, in, n, out, ud) : 0;
}

int loom_inflate_done(const loom_inflate_t *z) {
    return z->ended;
}

int loom_inflate_finish(loom_inflate_t *z) {
    if (z->ended || z->nfirst == 0)
        return 0;
    z->err = z->coding == LOOM_CODING_GZIP      ? "truncated gzip body"
             : z->coding == LOOM_CODING_DEFLATE ? "truncated deflate body"
                                                : "truncated br body";
    return -1;
}

const char *loom_inflate_error(const loom_inflate_t *z) {
    return z->err ? z->err : "corrupt compressed body";
}

void loom_inflate_free(loom_inflate_t *z) {
    if (!z)
        return;
    if (z->started)
        inflateEnd(&z->zs);
#ifdef LOOM_HAVE_BROTLI
    if (z->br)
        BrotliDecoderDestroyInstance(z->br);
#endif
    free(z);
}
