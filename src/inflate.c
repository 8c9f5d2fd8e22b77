/*
 * inflate.c - gzip and deflate decoding with zlib for response bodies. "deflate" is meant
 * to be zlib-wrapped (RFC 9110 8.4.1.2) but some servers send raw deflate: the first
 * failure before any output retries the same bytes as raw deflate, as browsers do.
 * Bytes after the end of the compressed stream are ignored.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "inflate.h"

#define OUT_CHUNK 16384

struct loom_inflate {
    z_stream zs;
    int coding;
    int ended;
    int produced; /* any output yet: past that, no retry as raw deflate */
    int raw;      /* retried as raw deflate */
    const char *err;
};

static int init(loom_inflate_t *z, int bits) {
    memset(&z->zs, 0, sizeof z->zs);
    return inflateInit2(&z->zs, bits) == Z_OK ? 0 : -1;
}

loom_inflate_t *loom_inflate_new(int coding) {
    loom_inflate_t *z = calloc(1, sizeof *z);
    if (!z)
        return NULL;
    z->coding = coding;
    /* "windowBits can also be greater than 15 for optional gzip decoding. Add 32 to
     * windowBits to enable zlib and gzip decoding with automatic header detection" */
    if (init(z, coding == LOOM_CODING_GZIP ? 15 + 32 : 15) != 0) {
        free(z);
        return NULL;
    }
    return z;
}

static int run(loom_inflate_t *z, const char *in, size_t n, loom_inflate_out out, void *ud) {
    char buf[OUT_CHUNK];
    z->zs.next_in = (Bytef *)in;
    z->zs.avail_in = (uInt)n;
    while (!z->ended && (z->zs.avail_in > 0)) {
        z->zs.next_out = (Bytef *)buf;
        z->zs.avail_out = sizeof buf;
        int rc = inflate(&z->zs, Z_NO_FLUSH);
        size_t got = sizeof buf - z->zs.avail_out;
        if (rc != Z_OK && rc != Z_STREAM_END && !(rc == Z_BUF_ERROR && got > 0)) {
            z->err = z->zs.msg ? z->zs.msg : "corrupt compressed body";
            return -1;
        }
        if (got) {
            z->produced = 1;
            if (out(ud, buf, got) != 0)
                return -2;
        }
        if (rc == Z_STREAM_END)
            z->ended = 1;
        else if (got == 0 && z->zs.avail_in > 0 && rc == Z_BUF_ERROR)
            break;
    }
    return 0;
}

int loom_inflate_feed(loom_inflate_t *z, const char *in, size_t n, loom_inflate_out out, void *ud) {
    int rc = run(z, in, n, out, ud);
    if (rc == -1 && z->coding == LOOM_CODING_DEFLATE && !z->produced && !z->raw &&
        z->zs.total_in <= n) {
        inflateEnd(&z->zs);
        z->raw = 1;
        z->err = NULL;
        if (init(z, -15) != 0) {
            z->err = "out of memory";
            return -1;
        }
        rc = run(z, in, n, out, ud);
    }
    return rc;
}

int loom_inflate_done(const loom_inflate_t *z) {
    return z->ended;
}

const char *loom_inflate_error(const loom_inflate_t *z) {
    return z->err ? z->err : "corrupt compressed body";
}

void loom_inflate_free(loom_inflate_t *z) {
    if (!z)
        return;
    inflateEnd(&z->zs);
    free(z);
}
