/*
 * compress.c - the encoders behind loom.app{ compress }: gzip (zlib's deflate with a gzip
 * wrapper) and br (libbrotli's encoder, when built with it). Two shapes:
 *
 *   core.compress(coding, s [, level]) -> the whole coded body. One z_stream per Lua state is
 *     kept and reset between calls, and the output goes to a scratch buffer kept with it,
 *     so an answer costs zlib no allocation and Lua one string.
 *   core.compressor(coding [, level]) -> enc; enc:write(s [, flush = true]) -> the coded
 *     bytes so far (with flush, all of s is decodable from them: Z_SYNC_FLUSH /
 *     BROTLI_OPERATION_FLUSH), enc:finish([s]) -> the last bytes; enc:close().
 *
 * core.compress_codings is {gzip = true, br = true} (br only when built with libbrotli).
 * Knows no HTTP: lua/loom/compress.lua negotiates and writes the headers.
 */
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include <zlib.h>
#ifdef LOOM_HAVE_BROTLI
#include <brotli/encode.h>
#endif
#include "compress.h"

#define ENCODER_MT "loom.compressor"
#define OUT_CHUNK 16384
#define GZIP_BITS (15 + 16) /* "Add 16 to windowBits to write a simple gzip header" */
#define GZIP_DEFAULT 6
#define BR_DEFAULT 4
#define BR_STREAM_WINDOW 18 /* 256 KiB of history per streamed answer rather than 4 MiB */
/* A scratch buffer past this is freed after the body it served: one huge answer does not
 * keep its size for ever. */
#define SCRATCH_KEEP (1u << 20)

struct loom_encoder {
    int coding;
    int finished;
    z_stream zs;
#ifdef LOOM_HAVE_BROTLI
    BrotliEncoderState *br;
#endif
};

int loom_compress_has_br(void) {
#ifdef LOOM_HAVE_BROTLI
    return 1;
#else
    return 0;
#endif
}

/* ---------------------------------------------------------------- streams */

static int encoder_init(loom_encoder_t *e, int coding, int level) {
    memset(e, 0, sizeof *e);
    e->coding = coding;
    if (coding == LOOM_ENC_GZIP)
        return deflateInit2(&e->zs, level, Z_DEFLATED, GZIP_BITS, 8, Z_DEFAULT_STRATEGY) == Z_OK
                   ? 0
                   : -1;
#ifdef LOOM_HAVE_BROTLI
    if (coding == LOOM_ENC_BR) {
        e->br = BrotliEncoderCreateInstance(NULL, NULL, NULL);
        if (!e->br)
            return -1;
        BrotliEncoderSetParameter(e->br, BROTLI_PARAM_QUALITY, (uint32_t)level);
        BrotliEncoderSetParameter(e->br, BROTLI_PARAM_LGWIN, BR_STREAM_WINDOW);
        return 0;
    }
#endif
    e->coding = 0;
    return -1;
}

static void encoder_end(loom_encoder_t *e) {
    if (e->coding == LOOM_ENC_GZIP)
        deflateEnd(&e->zs);
#ifdef LOOM_HAVE_BROTLI
    else if (e->coding == LOOM_ENC_BR)
        BrotliEncoderDestroyInstance(e->br);
#endif
    e->coding = 0;
}

loom_encoder_t *loom_encoder_new(int coding, int level) {
    loom_encoder_t *e = malloc(sizeof *e);
    if (e && encoder_init(e, coding, level) != 0) {
        free(e);
        e = NULL;
    }
    return e;
}

void loom_encoder_free(loom_encoder_t *e) {
    if (!e)
        return;
    encoder_end(e);
    free(e);
}

static int run_gzip(loom_encoder_t *e, const char *in, size_t n, int op, loom_encoder_out out,
                    void *ud) {
    static const int flush[] = {Z_NO_FLUSH, Z_SYNC_FLUSH, Z_FINISH};
    char buf[OUT_CHUNK];
    e->zs.next_in = (Bytef *)in;
    e->zs.avail_in = (uInt)n;
    int rc;
    /* "If deflate returns with avail_out == 0, this function must be called again with the
     * same value of the flush parameter and more output space" */
    do {
        e->zs.next_out = (Bytef *)buf;
        e->zs.avail_out = sizeof buf;
        rc = deflate(&e->zs, flush[op]);
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
            return -1;
        size_t got = sizeof buf - e->zs.avail_out;
        if (got && out(ud, buf, got) != 0)
            return -2;
    } while (e->zs.avail_out == 0 || e->zs.avail_in > 0 ||
             (op == LOOM_ENC_FINISH && rc != Z_STREAM_END));
    return 0;
}

#ifdef LOOM_HAVE_BROTLI
static int run_br(loom_encoder_t *e, const char *in, size_t n, int op, loom_encoder_out out,
                  void *ud) {
    static const BrotliEncoderOperation ops[] = {BROTLI_OPERATION_PROCESS, BROTLI_OPERATION_FLUSH,
                                                 BROTLI_OPERATION_FINISH};
    uint8_t buf[OUT_CHUNK];
    const uint8_t *next_in = (const uint8_t *)in;
    size_t avail_in = n;
    /* "the flush is complete when available_in is 0 and BrotliEncoderHasMoreOutput returns
     * BROTLI_FALSE"; a finish, when BrotliEncoderIsFinished says so */
    for (;;) {
        uint8_t *next_out = buf;
        size_t avail_out = sizeof buf;
        if (!BrotliEncoderCompressStream(e->br, ops[op], &avail_in, &next_in, &avail_out, &next_out,
                                         NULL))
            return -1;
        size_t got = sizeof buf - avail_out;
        if (got && out(ud, (const char *)buf, got) != 0)
            return -2;
        if (avail_in > 0 || BrotliEncoderHasMoreOutput(e->br))
            continue;
        if (op == LOOM_ENC_FINISH && !BrotliEncoderIsFinished(e->br))
            continue;
        return 0;
    }
}
#endif

int loom_encoder_run(loom_encoder_t *e, const char *in, size_t n, int op, loom_encoder_out out,
                     void *ud) {
    if (e->finished || op < LOOM_ENC_NONE || op > LOOM_ENC_FINISH)
        return -1;
    if (op == LOOM_ENC_FINISH)
        e->finished = 1;
    if (e->coding == LOOM_ENC_GZIP)
        return run_gzip(e, in, n, op, out, ud);
#ifdef LOOM_HAVE_BROTLI
    if (e->coding == LOOM_ENC_BR)
        return run_br(e, in, n, op, out, ud);
#endif
    return -1;
}

/* ---------------------------------------------------------------- Lua: arguments */

/* The coding at arg: "gzip" or "br" (raises for anything else, and for br without it). */
static int check_coding(lua_State *L, int arg) {
    const char *s = luaL_checkstring(L, arg);
    if (strcmp(s, "gzip") == 0)
        return LOOM_ENC_GZIP;
    if (strcmp(s, "br") == 0) {
        if (!loom_compress_has_br())
            luaL_argerror(L, arg, "br: this loom was built without libbrotli");
        return LOOM_ENC_BR;
    }
    return luaL_argerror(L, arg, lua_pushfstring(L, "unknown coding '%s' (gzip or br)", s));
}

static int check_level(lua_State *L, int arg, int coding) {
    int max = coding == LOOM_ENC_GZIP ? 9 : 11;
    if (lua_isnoneornil(L, arg))
        return coding == LOOM_ENC_GZIP ? GZIP_DEFAULT : BR_DEFAULT;
    lua_Integer level = luaL_checkinteger(L, arg);
    luaL_argcheck(L, level >= 0 && level <= max, arg,
                  coding == LOOM_ENC_GZIP ? "level from 0 to 9" : "level from 0 to 11");
    return (int)level;
}

/* ---------------------------------------------------------------- Lua: whole bodies */

/* The per-state cache behind core.compress: one gzip stream, reset between bodies, and the
 * output buffer. */
typedef struct {
    z_stream zs;
    int ready;
    int level;
    char *buf;
    size_t cap;
} whole_t;

static char *scratch(whole_t *w, size_t need) {
    if (need > w->cap) {
        char *nb = realloc(w->buf, need);
        if (!nb)
            return NULL;
        w->buf = nb;
        w->cap = need;
    }
    return w->buf;
}

static void scratch_trim(whole_t *w) {
    if (w->cap > SCRATCH_KEEP) {
        free(w->buf);
        w->buf = NULL;
        w->cap = 0;
    }
}

/* gzip of s into w->buf: its length, or -1. deflateBound "would be used to allocate an
 * output buffer for deflation in a single pass", so one deflate(Z_FINISH) ends it. */
static long whole_gzip(whole_t *w, const char *s, size_t n, int level) {
    if (!w->ready) {
        if (deflateInit2(&w->zs, level, Z_DEFLATED, GZIP_BITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            return -1;
        w->ready = 1;
        w->level = level;
    } else {
        deflateReset(&w->zs);
        /* "deflateParams() can be called ... before the first call of deflate()": the
         * level changes with no output pending */
        if (level != w->level && deflateParams(&w->zs, level, Z_DEFAULT_STRATEGY) != Z_OK)
            return -1;
        w->level = level;
    }
    size_t bound = deflateBound(&w->zs, (uLong)n);
    if (!scratch(w, bound))
        return -1;
    w->zs.next_in = (Bytef *)s;
    w->zs.avail_in = (uInt)n;
    w->zs.next_out = (Bytef *)w->buf;
    w->zs.avail_out = (uInt)bound;
    if (deflate(&w->zs, Z_FINISH) != Z_STREAM_END)
        return -1;
    return (long)(bound - w->zs.avail_out);
}

#ifdef LOOM_HAVE_BROTLI
static long whole_br(whole_t *w, const char *s, size_t n, int level) {
    size_t bound = BrotliEncoderMaxCompressedSize(n);
    if (bound == 0 || !scratch(w, bound))
        return -1;
    size_t got = bound;
    if (!BrotliEncoderCompress(level, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_GENERIC, n,
                               (const uint8_t *)s, &got, (uint8_t *)w->buf))
        return -1;
    return (long)got;
}
#endif

/* core.compress(coding, s [, level]) -> the coded body */
static int l_compress(lua_State *L) {
    int coding = check_coding(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    int level = check_level(L, 3, coding);
    whole_t *w = lua_touserdata(L, lua_upvalueindex(1));
    long got = -1;
    if (coding == LOOM_ENC_GZIP)
        got = whole_gzip(w, s, n, level);
#ifdef LOOM_HAVE_BROTLI
    else
        got = whole_br(w, s, n, level);
#endif
    if (got < 0) {
        scratch_trim(w);
        return luaL_error(L, "compress: out of memory");
    }
    lua_pushlstring(L, w->buf, (size_t)got);
    scratch_trim(w);
    return 1;
}

static int whole_gc(lua_State *L) {
    whole_t *w = lua_touserdata(L, 1);
    if (w->ready)
        deflateEnd(&w->zs);
    w->ready = 0;
    free(w->buf);
    w->buf = NULL;
    w->cap = 0;
    return 0;
}

/* ---------------------------------------------------------------- Lua: streams */

static loom_encoder_t *check_encoder(lua_State *L) {
    loom_encoder_t *e = luaL_checkudata(L, 1, ENCODER_MT);
    if (!e->coding)
        luaL_error(L, "compressor: closed");
    return e;
}

static int add_out(void *ud, const char *p, size_t n) {
    luaL_addlstring(ud, p, n);
    return 0;
}

/* Runs the encoder on the string at arg (absent: nothing) and pushes what came out. */
static int push_run(lua_State *L, loom_encoder_t *e, int arg, int op) {
    size_t n = 0;
    const char *s = lua_isnoneornil(L, arg) ? "" : luaL_checklstring(L, arg, &n);
    if (e->finished)
        return luaL_error(L, "compressor: already finished");
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (loom_encoder_run(e, s, n, op, add_out, &b) != 0)
        return luaL_error(L, "compressor: encoding failed");
    luaL_pushresult(&b);
    return 1;
}

/* core.compressor(coding [, level]) -> enc */
static int l_compressor(lua_State *L) {
    int coding = check_coding(L, 1);
    int level = check_level(L, 2, coding);
    loom_encoder_t *e = lua_newuserdatauv(L, sizeof *e, 0);
    /* the struct lives in the userdata: zlib keeps a pointer to its z_stream, and a Lua
     * userdata never moves */
    if (encoder_init(e, coding, level) != 0)
        return luaL_error(L, "compressor: out of memory");
    luaL_setmetatable(L, ENCODER_MT);
    return 1;
}

/* enc:write(s [, flush = true]) -> the coded bytes so far */
static int enc_write(lua_State *L) {
    loom_encoder_t *e = check_encoder(L);
    int flush = lua_isnoneornil(L, 3) || lua_toboolean(L, 3);
    return push_run(L, e, 2, flush ? LOOM_ENC_FLUSH : LOOM_ENC_NONE);
}

/* enc:finish([s]) -> the last bytes; the encoder's memory goes back at once */
static int enc_finish(lua_State *L) {
    loom_encoder_t *e = check_encoder(L);
    push_run(L, e, 2, LOOM_ENC_FINISH);
    encoder_end(e);
    return 1;
}

static int enc_close(lua_State *L) {
    loom_encoder_t *e = luaL_checkudata(L, 1, ENCODER_MT);
    encoder_end(e);
    return 0;
}

static int enc_tostring(lua_State *L) {
    loom_encoder_t *e = luaL_checkudata(L, 1, ENCODER_MT);
    lua_pushfstring(L, "loom.compressor (%s): %p",
                    e->coding == LOOM_ENC_GZIP ? "gzip"
                    : e->coding == LOOM_ENC_BR ? "br"
                                               : "closed",
                    (void *)e);
    return 1;
}

static const luaL_Reg enc_methods[] = {
    {"write", enc_write}, {"finish", enc_finish}, {"close", enc_close}, {NULL, NULL}};

static const luaL_Reg enc_meta[] = {{"__gc", enc_close},
                                    {"__close", enc_close},
                                    {"__tostring", enc_tostring},
                                    {"__index", NULL},
                                    {NULL, NULL}};

int loom_open_compress(lua_State *L) {
    luaL_newmetatable(L, ENCODER_MT);
    luaL_setfuncs(L, enc_meta, 0);
    luaL_newlib(L, enc_methods);
    lua_setfield(L, -2, "__index"); /* mt.__index = methods */
    lua_pop(L, 1);

    whole_t *w = lua_newuserdatauv(L, sizeof *w, 0);
    memset(w, 0, sizeof *w);
    lua_newtable(L);
    lua_pushcfunction(L, whole_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushcclosure(L, l_compress, 1); /* core.compress keeps the cache as its upvalue */
    lua_setfield(L, -2, "compress");
    lua_pushcfunction(L, l_compressor);
    lua_setfield(L, -2, "compressor");

    lua_createtable(L, 0, 2);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "gzip");
    if (loom_compress_has_br()) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "br");
    }
    lua_setfield(L, -2, "compress_codings");
    return 0;
}
