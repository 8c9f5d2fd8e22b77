/*
 * inflate.h - gzip and deflate response bodies decoded with zlib, and br with libbrotli
 * (when built with it: LOOM_HAVE_BROTLI), piece by piece as they arrive. Knows no Lua and
 * no HTTP beyond the content codings.
 */
#ifndef LOOM_INFLATE_H
#define LOOM_INFLATE_H

#include <stddef.h>

typedef struct loom_inflate loom_inflate_t;

/* Where decoded bytes go; returns 0, or non-zero to stop (a size limit). */
typedef int (*loom_inflate_out)(void *ud, const char *p, size_t n);

enum { LOOM_CODING_GZIP = 1, LOOM_CODING_DEFLATE = 2, LOOM_CODING_BR = 3 };

/* A decoder; NULL without memory, or for br in a build without libbrotli. */
loom_inflate_t *loom_inflate_new(int coding);
/* Whether this build decodes br. */
int loom_inflate_has_br(void);
/* Decodes n bytes: 0, or -1 with a message (corrupt data, bytes after the end of the
 * stream that are not another gzip member), or -2 when the sink said stop. */
int loom_inflate_feed(loom_inflate_t *z, const char *in, size_t n, loom_inflate_out out, void *ud);
/* Whether the compressed stream (the last gzip member so far) ended properly. */
int loom_inflate_done(const loom_inflate_t *z);
/* The body is over: 0 when the stream ended or no byte came at all (an empty body, a 304),
 * else -1 with the message "truncated gzip body" (or deflate, or br). */
int loom_inflate_finish(loom_inflate_t *z);
const char *loom_inflate_error(const loom_inflate_t *z);
void loom_inflate_free(loom_inflate_t *z);

#endif
