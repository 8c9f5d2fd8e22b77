/*
 * fuzz_ws_deflate.c - libFuzzer target: src/ws/ws_deflate.c, permessage-deflate's inflater
 * and deflater (core.ws_inflater, core.ws_deflater), called through the Lua API as
 * lua/loom/websocket.lua calls them, in a lua_State of the target's own whose allocator
 * counts the bytes. The Sec-WebSocket-Extensions parser is Lua: fuzz_ws_ext. See
 * docs/fuzzing.md.
 *
 * Input: byte 0 is the mode (bit 0: the inflater resets after each message, as with
 * client_no_context_takeover; bit 1: round-trip mode; bits 2-4: the cap, max_message, one
 * of CAPS; bits 5-7: the deflater's window bits 8..15 in round-trip mode), byte 1 the piece
 * size (1..256) the second run cuts frames into, the rest the messages, each one a length
 * byte and that many bytes (the last takes what is left), at most MAX_MESSAGES.
 *
 * Raw mode: the messages are compressed bytes from a peer. One inflater gets each message
 * whole, as one final frame; a second gets it cut into frames of the piece size, each with
 * the cap left of max_message, as websocket.lua does; a third, zlib called directly as RFC
 * 7692 7.2.2 reads a message (its bytes then 00 00 ff ff, a stream that ends with BFINAL
 * followed by a new one, the window kept across messages unless reset), is the reference.
 * Checks: whole and cut give the same bytes or fail the same way ("limit: ..." or "http:
 * ..."); what they give is the reference's bytes, "limit" exactly when the reference
 * inflates past the cap; a message never comes back longer than the cap; and the Lua heap
 * never grows by more than a few times the cap plus a chunk during a call, whatever the
 * message inflates to (a bomb stops at the cap, in memory too). After a failure the
 * connection ends: later messages are not fed.
 *
 * Round-trip mode: the messages are payloads, each sent twice in a row (so that with
 * context takeover the second is a back-reference to the first), deflated by a deflater
 * with the window bits and reset of the mode (bit 0 for both ends: the negotiation never
 * lets a deflater keep its context while the peer resets) in parts of the piece size, as a
 * fragmented send; the inflater gets each part as a frame with the cap left. Every message
 * comes back whole with a cap of exactly its size; then a fresh pair with a cap one byte
 * short of a message of at least a byte gives "limit".
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include <lua.h>
#include <zlib.h>
#include "fuzz_check.h"
#include "websocket.h"

#define MAX_MESSAGES 8
#define CHUNK 16384 /* ws_deflate.c's output step */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const size_t CAPS[8] = {0, 1, 100, 1000, 16384, 65536, 1 << 20, 4 << 20};

/* ------------------------------------------------------------ a Lua heap that counts */

static size_t mem_cur, mem_peak;

/* Counts a realloc as both blocks alive at once, as a moving realloc has them. */
static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    size_t old = ptr ? osize : 0; /* for a new block osize is the object's type */
    if (nsize == 0) {
        mem_cur -= old;
        free(ptr);
        return NULL;
    }
    if (mem_cur + nsize > mem_peak)
        mem_peak = mem_cur + nsize;
    void *p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    mem_cur = mem_cur - old + nsize;
    return p;
}

static lua_State *L;

static void open_state(void) {
    L = lua_newstate(counting_alloc, NULL);
    FUZZ_CHECK(L);
    lua_newtable(L);
    loom_open_ws_deflate(L); /* core.ws_deflater, core.ws_inflater into the table */
    lua_setglobal(L, "core");
}

/* Pushes core.ws_inflater(no_context) or core.ws_deflater(bits, no_context). */
static void new_inflater(int no_context) {
    lua_getglobal(L, "core");
    lua_getfield(L, -1, "ws_inflater");
    lua_remove(L, -2);
    lua_pushboolean(L, no_context);
    FUZZ_CHECK(lua_pcall(L, 1, 1, 0) == LUA_OK);
}

static void new_deflater(int bits, int no_context) {
    lua_getglobal(L, "core");
    lua_getfield(L, -1, "ws_deflater");
    lua_remove(L, -2);
    lua_pushinteger(L, bits);
    lua_pushboolean(L, no_context);
    FUZZ_CHECK(lua_pcall(L, 2, 1, 0) == LUA_OK);
}

/* z:inflate(in, final, cap) on the inflater at stack index z: 0 with the bytes appended to
 * out, 1 for "limit: ...", 2 for "http: ...". The Lua heap grows by no more than a few
 * times the cap plus a chunk during the call, and a result is never longer than the cap. */
static int inflate_frame(int z, const uint8_t *in, size_t n, int final, size_t cap, fbuf_t *out) {
    lua_getfield(L, z, "inflate");
    lua_pushvalue(L, z);
    lua_pushlstring(L, (const char *)in, n);
    lua_pushboolean(L, final);
    lua_pushinteger(L, (lua_Integer)cap);
    size_t base = mem_cur;
    mem_peak = mem_cur;
    FUZZ_CHECK(lua_pcall(L, 4, 2, 0) == LUA_OK);
    FUZZ_CHECK(mem_peak - base <= 3 * (cap + 2 * CHUNK) + 65536);
    int kind;
    if (lua_isstring(L, -2)) {
        size_t len;
        const char *s = lua_tolstring(L, -2, &len);
        FUZZ_CHECK(len <= cap);
        fbuf_put(out, s, len);
        kind = 0;
    } else {
        FUZZ_CHECK(lua_isnil(L, -2) && lua_type(L, -1) == LUA_TSTRING);
        const char *err = lua_tostring(L, -1);
        kind = strncmp(err, "limit: ", 7) == 0 ? 1 : strncmp(err, "http: ", 6) == 0 ? 2 : -1;
        FUZZ_CHECK(kind > 0);
    }
    lua_pop(L, 2);
    return kind;
}

/* d:deflate(in, final) on the deflater at stack index d, appended to out. */
static void deflate_part(int d, const uint8_t *in, size_t n, int final, fbuf_t *out) {
    lua_getfield(L, d, "deflate");
    lua_pushvalue(L, d);
    lua_pushlstring(L, (const char *)in, n);
    lua_pushboolean(L, final);
    FUZZ_CHECK(lua_pcall(L, 3, 1, 0) == LUA_OK);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    FUZZ_CHECK(s);
    fbuf_put(out, s, len);
    lua_pop(L, 1);
}

/* One message to the inflater at z, cut into frames of `piece` bytes (0: whole), each
 * with what is left of the cap: 0 with the message in out, or 1/2 as inflate_frame. */
static int inflate_message(int z, const uint8_t *in, size_t n, size_t piece, size_t cap,
                           fbuf_t *out) {
    if (piece == 0 || piece > n)
        piece = n;
    size_t at = 0;
    out->len = 0;
    do {
        size_t len = n - at < piece ? n - at : piece;
        int kind = inflate_frame(z, in + at, len, at + len == n, cap - out->len, out);
        if (kind)
            return kind;
        at += len;
    } while (at < n);
    return 0;
}

/* ------------------------------------------------------------ the reference: zlib */

typedef struct {
    z_stream zs;
    int no_context;
} ref_t;

/* Feeds n bytes, a stream with BFINAL followed by a new one: 0, 1 past cap bytes of
 * output in all (out->len counts them), 2 for bad data. */
static int ref_feed(ref_t *r, const uint8_t *in, size_t n, size_t cap, fbuf_t *out) {
    unsigned char buf[4096];
    r->zs.next_in = (Bytef *)in;
    r->zs.avail_in = (uInt)n;
    for (;;) {
        r->zs.next_out = buf;
        r->zs.avail_out = sizeof buf;
        int rc = inflate(&r->zs, Z_SYNC_FLUSH);
        size_t got = sizeof buf - r->zs.avail_out;
        fbuf_put(out, buf, got);
        if (out->len > cap)
            return 1;
        if (rc == Z_STREAM_END) {
            FUZZ_CHECK(inflateReset(&r->zs) == Z_OK);
            if (r->zs.avail_in == 0)
                return 0;
            continue;
        }
        if (rc == Z_BUF_ERROR)
            return 0; /* all input taken, all output given */
        if (rc != Z_OK)
            return 2;
        if (r->zs.avail_in == 0 && r->zs.avail_out > 0)
            return 0;
    }
}

static int ref_message(ref_t *r, const uint8_t *in, size_t n, size_t cap, fbuf_t *out) {
    static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
    out->len = 0;
    int kind = ref_feed(r, in, n, cap, out);
    if (kind == 0)
        kind = ref_feed(r, tail, sizeof tail, cap, out);
    if (kind == 0 && r->no_context)
        FUZZ_CHECK(inflateReset(&r->zs) == Z_OK);
    return kind;
}

/* ------------------------------------------------------------ the modes */

typedef struct {
    const uint8_t *p;
    size_t len;
} msg_t;

static size_t split_messages(const uint8_t *in, size_t n, msg_t *msgs) {
    size_t count = 0, at = 0;
    while (count < MAX_MESSAGES && (at < n || count == 0)) {
        size_t len;
        if (count == MAX_MESSAGES - 1 || at >= n) {
            len = n - at;
        } else {
            len = in[at++];
            if (len > n - at)
                len = n - at;
        }
        msgs[count].p = in + at;
        msgs[count].len = len;
        count++;
        at += len;
    }
    return count;
}

static int same(const fbuf_t *a, const fbuf_t *b) {
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static void raw_mode(int no_context, size_t cap, size_t piece, const msg_t *msgs, size_t count) {
    new_inflater(no_context);
    int whole = lua_gettop(L);
    new_inflater(no_context);
    int cut = lua_gettop(L);
    ref_t ref;
    memset(&ref, 0, sizeof ref);
    ref.no_context = no_context;
    FUZZ_CHECK(inflateInit2(&ref.zs, -15) == Z_OK);
    fbuf_t a = {0}, b = {0}, r = {0};
    for (size_t i = 0; i < count; i++) {
        int ka = inflate_message(whole, msgs[i].p, msgs[i].len, 0, cap, &a);
        int kb = inflate_message(cut, msgs[i].p, msgs[i].len, piece, cap, &b);
        int kr = ref_message(&ref, msgs[i].p, msgs[i].len, cap, &r);
        FUZZ_CHECK(ka == kb);
        FUZZ_CHECK(ka == kr);
        if (ka)
            break; /* the connection ends */
        FUZZ_CHECK(same(&a, &b));
        FUZZ_CHECK(same(&a, &r));
    }
    inflateEnd(&ref.zs);
    free(a.p);
    free(b.p);
    free(r.p);
    lua_settop(L, 0);
}

static void round_trip(int reset, int bits, size_t piece, const msg_t *msgs, size_t count) {
    new_deflater(bits, reset);
    int d = lua_gettop(L);
    new_inflater(reset);
    int z = lua_gettop(L);
    fbuf_t packed = {0}, out = {0};
    size_t frame_ends[64];
    for (size_t i = 0; i < 2 * count; i++) {
        const msg_t *m = &msgs[i / 2];
        /* a fragmented send: each part deflated and flushed, the last one final */
        packed.len = 0;
        size_t nframes = 0, at = 0;
        do {
            size_t len = m->len - at < piece ? m->len - at : piece;
            if (nframes == 63)
                len = m->len - at;
            deflate_part(d, m->p + at, len, at + len == m->len, &packed);
            frame_ends[nframes++] = packed.len;
            at += len;
        } while (at < m->len);
        out.len = 0;
        size_t from = 0;
        for (size_t f = 0; f < nframes; f++) {
            int kind = inflate_frame(z, (const uint8_t *)packed.p + from, frame_ends[f] - from,
                                     f + 1 == nframes, m->len - out.len, &out);
            FUZZ_CHECK(kind == 0);
            from = frame_ends[f];
        }
        FUZZ_CHECK(out.len == m->len && (m->len == 0 || memcmp(out.p, m->p, m->len) == 0));
    }
    lua_settop(L, 0);
    /* one byte short of the cap: "limit", however the frames are cut */
    const msg_t *last = &msgs[count - 1];
    if (last->len > 0) {
        new_deflater(bits, reset);
        d = lua_gettop(L);
        new_inflater(reset);
        z = lua_gettop(L);
        packed.len = 0;
        deflate_part(d, last->p, last->len, 1, &packed);
        FUZZ_CHECK(inflate_message(z, (const uint8_t *)packed.p, packed.len, piece, last->len - 1,
                                   &out) == 1);
        lua_settop(L, 0);
    }
    free(packed.p);
    free(out.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    if (!L)
        open_state();
    int mode = data[0];
    size_t piece = (size_t)data[1] + 1;
    msg_t msgs[MAX_MESSAGES];
    size_t count = split_messages(data + 2, size - 2, msgs);
    if (mode & 2)
        round_trip(mode & 1, 8 + (mode >> 5), piece, msgs, count);
    else
        raw_mode(mode & 1, CAPS[(mode >> 2) & 7], piece, msgs, count);
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
