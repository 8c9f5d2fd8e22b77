/*
 * ws_deflate.c - permessage-deflate (RFC 7692) for websockets: a raw-deflate compressor and
 * a capped decompressor per connection and direction, kept across messages (context
 * takeover) or reset after each one (no_context_takeover). The negotiation and framing
 * (RSV1, which frames are compressed) are in lua/loom/websocket.lua.
 *
 * A compressed message is raw deflate flushed with Z_SYNC_FLUSH, without the 00 00 ff ff
 * that ends the flush (RFC 7692 7.2.1); the receiver appends them before inflating the
 * message's last frame (7.2.2). Inflating is capped: output past the cap stops it at once,
 * so a small message that inflates to gigabytes costs at most the cap plus one chunk.
 *
 *   core.ws_deflater(window_bits, no_context) -> d;  d:deflate(data, final) -> bytes
 *   core.ws_inflater(no_context) -> z;  z:inflate(data, final, cap) -> bytes | nil, err
 *   core.ws_push(stream, bytes) -> queued | nil, err   (websocket.c)
 */
#include <string.h>
#include <lauxlib.h>
#include <zlib.h>
#include "websocket.h"

#define DEFLATER_MT "loom.ws_deflater"
#define INFLATER_MT "loom.ws_inflater"
#define CHUNK 16384

typedef struct {
    z_stream zs;
    int ready;      /* zlib is set up */
    int no_context; /* reset after each message */
    int bits;
} wsz_t;

static wsz_t *check(lua_State *L, const char *mt) {
    wsz_t *z = luaL_checkudata(L, 1, mt);
    if (!z->ready)
        luaL_error(L, "websocket compression context is closed");
    return z;
}

static int deflater_gc(lua_State *L) {
    wsz_t *z = luaL_checkudata(L, 1, DEFLATER_MT);
    if (z->ready)
        deflateEnd(&z->zs);
    z->ready = 0;
    return 0;
}

static int inflater_gc(lua_State *L) {
    wsz_t *z = luaL_checkudata(L, 1, INFLATER_MT);
    if (z->ready)
        inflateEnd(&z->zs);
    z->ready = 0;
    return 0;
}

/* core.ws_deflater(window_bits, no_context): window_bits 8..15; zlib's raw deflate cannot
 * use a 256-byte window, so 8 becomes 9, as zlib itself does (and Node's ws, Python's
 * websockets and browsers accept). */
static int l_deflater(lua_State *L) {
    int bits = (int)luaL_checkinteger(L, 1);
    luaL_argcheck(L, bits >= 8 && bits <= 15, 1, "window bits 8..15 expected");
    if (bits == 8)
        bits = 9;
    wsz_t *z = lua_newuserdatauv(L, sizeof *z, 0);
    memset(z, 0, sizeof *z);
    z->no_context = lua_toboolean(L, 2);
    z->bits = bits;
    if (deflateInit2(&z->zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK)
        return luaL_error(L, "ws_deflater: out of memory");
    z->ready = 1;
    luaL_setmetatable(L, DEFLATER_MT);
    return 1;
}

/* d:deflate(data, final) -> the compressed bytes of data, flushed (Z_SYNC_FLUSH) so the
 * peer can inflate all of it now; for the message's last part (final) without the
 * trailing 00 00 ff ff, and with the context reset when no_context. */
static int l_deflate(lua_State *L) {
    wsz_t *z = check(L, DEFLATER_MT);
    size_t len;
    const char *in = luaL_checklstring(L, 2, &len);
    int final = lua_toboolean(L, 3);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    z->zs.next_in = (Bytef *)in;
    z->zs.avail_in = (uInt)len;
    size_t total = 0;
    do {
        char *out = luaL_prepbuffsize(&b, CHUNK);
        z->zs.next_out = (Bytef *)out;
        z->zs.avail_out = CHUNK;
        int rc = deflate(&z->zs, Z_SYNC_FLUSH);
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return luaL_error(L, "deflate failed (%d)", rc);
        size_t n = CHUNK - z->zs.avail_out;
        luaL_addsize(&b, n);
        total += n;
    } while (z->zs.avail_out == 0);
    if (final) {
        /* Z_SYNC_FLUSH ends with an empty stored block: 00 00 ff ff (RFC 7692 7.2.1). With
         * nothing to flush (an empty last part after a part already flushed, or an empty
         * message after another) zlib writes nothing; the peer appends 00 00 ff ff to what
         * it gets, which alone starts a stored block it cannot finish, and the next message
         * is garbage to it. 0x00 is the empty message's form (7.2.3.6): with the tail, an
         * empty stored block. (fuzz_ws_deflate found it.) */
        if (total >= 4)
            luaL_buffsub(&b, 4);
        else if (total == 0)
            luaL_addchar(&b, 0);
        if (z->no_context)
            deflateReset(&z->zs);
    }
    luaL_pushresult(&b);
    return 1;
}

/* core.ws_inflater(no_context): the window is always 15 bits, which inflates what any
 * window_bits the peer was allowed produced. */
static int l_inflater(lua_State *L) {
    wsz_t *z = lua_newuserdatauv(L, sizeof *z, 0);
    memset(z, 0, sizeof *z);
    z->no_context = lua_toboolean(L, 1);
    z->bits = 15;
    if (inflateInit2(&z->zs, -15) != Z_OK)
        return luaL_error(L, "ws_inflater: out of memory");
    z->ready = 1;
    luaL_setmetatable(L, INFLATER_MT);
    return 1;
}

/* Inflates n bytes at `in` into b; 0, or -1 past `cap` bytes of output in all (*total
 * counts them), or -2 for bad data. A block with BFINAL ends the peer's stream: the next
 * bytes start a new one (RFC 7692 7.2.3.3 allows either). */
static int run_inflate(wsz_t *z, luaL_Buffer *b, const char *in, size_t n, size_t cap,
                       size_t *total) {
    z->zs.next_in = (Bytef *)in;
    z->zs.avail_in = (uInt)n;
    for (;;) {
        size_t room = CHUNK;
        uInt before = z->zs.avail_in;
        char *out = luaL_prepbuffsize(b, room);
        z->zs.next_out = (Bytef *)out;
        z->zs.avail_out = (uInt)room;
        int rc = inflate(&z->zs, Z_SYNC_FLUSH);
        size_t got = room - z->zs.avail_out;
        luaL_addsize(b, got);
        *total += got;
        if (*total > cap)
            return -1;
        if (rc == Z_STREAM_END) {
            inflateReset(&z->zs);
            if (z->zs.avail_in == 0)
                return 0;
            continue;
        }
        if (rc == Z_BUF_ERROR && got == 0)
            return 0; /* needs more input: all of it was taken */
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return -2;
        if (z->zs.avail_in == 0 && z->zs.avail_out > 0)
            return 0;
        if (got == 0 && z->zs.avail_in == before)
            return -2; /* no progress: never spin */
    }
}

/* z:inflate(data, final, cap) -> the bytes data inflates to, or nil, "limit: ..." as soon
 * as they pass cap bytes, or nil, "http: ..." when data is not deflate. `final`: the
 * message's last frame, after which 00 00 ff ff is fed (and the context reset when
 * no_context). After a failure the inflater is unusable: the connection ends. */
static int l_inflate(lua_State *L) {
    wsz_t *z = check(L, INFLATER_MT);
    size_t len;
    const char *in = luaL_checklstring(L, 2, &len);
    int final = lua_toboolean(L, 3);
    lua_Integer cap = luaL_checkinteger(L, 4);
    size_t ucap = cap > 0 ? (size_t)cap : 0;
    static const char tail[4] = {0, 0, (char)0xff, (char)0xff};
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t total = 0;
    int rc = run_inflate(z, &b, in, len, ucap, &total);
    if (rc == 0 && final)
        rc = run_inflate(z, &b, tail, sizeof tail, ucap, &total);
    if (rc < 0) {
        luaL_pushresult(&b);
        lua_pop(L, 1);
        lua_pushnil(L);
        if (rc == -1)
            lua_pushfstring(L, "limit: message inflates past %I bytes", cap);
        else
            lua_pushfstring(L, "http: bad compressed data (%s)", z->zs.msg ? z->zs.msg : "inflate");
        return 2;
    }
    if (final && z->no_context)
        inflateReset(&z->zs);
    luaL_pushresult(&b);
    return 1;
}

static const luaL_Reg deflater_methods[] = {{"deflate", l_deflate}, {NULL, NULL}};
static const luaL_Reg inflater_methods[] = {{"inflate", l_inflate}, {NULL, NULL}};

static void new_mt(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc) {
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

static const luaL_Reg funcs[] = {
    {"ws_deflater", l_deflater},
    {"ws_inflater", l_inflater},
    {NULL, NULL},
};

int loom_open_ws_deflate(lua_State *L) {
    new_mt(L, DEFLATER_MT, deflater_methods, deflater_gc);
    new_mt(L, INFLATER_MT, inflater_methods, inflater_gc);
    luaL_setfuncs(L, funcs, 0);
    return 0;
}
