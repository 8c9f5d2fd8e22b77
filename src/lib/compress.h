/*
 * compress.h - content-coding encoders for answers: gzip with zlib and, when built with
 * libbrotli (LOOM_HAVE_BROTLI), br. Whole bodies in one call, or a stream that flushes on
 * demand so each write of a streamed answer (an SSE event) reaches the client at once.
 * Knows no sockets and no HTTP headers; src/http1/inflate.c is the decoding side.
 */
#ifndef LOOM_COMPRESS_H
#define LOOM_COMPRESS_H

#include <stddef.h>
#include <lua.h>

enum { LOOM_ENC_GZIP = 1, LOOM_ENC_BR = 2 };
/* What a run of the encoder does with its input: keep what it can (NONE), push everything
 * out so the peer can decode it all (FLUSH), or end the stream (FINISH). */
enum { LOOM_ENC_NONE = 0, LOOM_ENC_FLUSH = 1, LOOM_ENC_FINISH = 2 };

typedef struct loom_encoder loom_encoder_t;
/* Where encoded bytes go: 0, or non-zero to stop (the run then returns -2). */
typedef int (*loom_encoder_out)(void *ud, const char *p, size_t n);

/* Whether this build has br (libbrotli). */
int loom_compress_has_br(void);
/* A streaming encoder for coding at level (gzip 0-9, br 0-11); NULL without memory, or for
 * br in a build without it. */
loom_encoder_t *loom_encoder_new(int coding, int level);
/* Encodes n bytes, then does what op says; output goes to out in pieces. 0, -1 when the
 * encoder fails (or was finished before), -2 when out said stop. */
int loom_encoder_run(loom_encoder_t *e, const char *in, size_t n, int op, loom_encoder_out out,
                     void *ud);
void loom_encoder_free(loom_encoder_t *e);

/* Sets core.compress (whole bodies), core.compressor (streams) and core.compress_codings
 * on the table at the top of the stack. */
int loom_open_compress(lua_State *L);

#endif
