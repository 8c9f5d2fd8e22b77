/*
 * websocket.c - the RFC 6455 frame codec (header parsing, masking, encoding), reading frames
 * off a stream (a framed read: the stream knows no websocket), and the Sec-WebSocket-Accept
 * computation (SHA-1 and base64 from mbedTLS). The protocol state (fragments, control
 * frames, close handshake) is in lua/loom/websocket.lua.
 */
#include <string.h>
#include <lauxlib.h>
#include <uv.h>
#include <mbedtls/version.h>
#include <mbedtls/sha1.h>
#include <mbedtls/base64.h>
#include "websocket.h"
#include "fail.h"
#include "stream.h"

int loom_ws_parse_header(const unsigned char *p, size_t n, loom_ws_frame_t *f) {
    if (n < 2)
        return 0;
    f->fin = (p[0] & 0x80) != 0;
    f->rsv = (p[0] >> 4) & 7;
    f->opcode = p[0] & 0x0f;
    f->masked = (p[1] & 0x80) != 0;
    uint64_t len = p[1] & 0x7f;
    size_t h = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = ((uint64_t)p[2] << 8) | p[3];
        h = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | p[2 + i];
        h = 10;
    }
    if (f->masked) {
        if (n < h + 4)
            return 0;
        memcpy(f->key, p + h, 4);
        h += 4;
    }
    f->header = h;
    f->length = len;
    return 1;
}

const char *loom_ws_header_error(const loom_ws_frame_t *f) {
    /* RFC 6455 5.2: "the most significant bit MUST be 0" of a 64-bit length */
    if (f->length >> 63)
        return "bad frame length";
    /* 5.5: "All control frames MUST have a payload length of 125 bytes or less and MUST
     * NOT be fragmented." Refused at the header: its payload is never waited for. */
    if (f->opcode >= 8 && (f->length > 125 || !f->fin))
        return "bad control frame";
    return NULL;
}

void loom_ws_unmask(char *dst, const char *src, size_t len, const unsigned char key[4],
                    size_t offset) {
    for (size_t i = 0; i < len; i++)
        dst[i] = (char)(src[i] ^ key[(offset + i) & 3]);
}

/* core.ws_frame(opcode, payload, fin, mask, rsv1) -> the frame's bytes (rsv1: a compressed
 * message's first frame, RFC 7692). Clients mask (RFC 6455
 * 5.3) with a fresh random key per frame. */
static int l_frame(lua_State *L) {
    int opcode = (int)luaL_checkinteger(L, 1);
    size_t len;
    const char *payload = luaL_optlstring(L, 2, "", &len);
    int fin = lua_isnoneornil(L, 3) ? 1 : lua_toboolean(L, 3);
    int mask = lua_toboolean(L, 4);
    int rsv1 = lua_toboolean(L, 5);
    unsigned char head[14];
    size_t h = 0;
    head[h++] = (unsigned char)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0f));
    unsigned char m = mask ? 0x80 : 0;
    if (len < 126) {
        head[h++] = (unsigned char)(m | len);
    } else if (len <= 0xffff) {
        head[h++] = m | 126;
        head[h++] = (unsigned char)(len >> 8);
        head[h++] = (unsigned char)len;
    } else {
        head[h++] = m | 127;
        for (int i = 7; i >= 0; i--)
            head[h++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    unsigned char key[4] = {0, 0, 0, 0};
    if (mask) {
        if (uv_random(NULL, NULL, key, sizeof key, 0, NULL) != 0)
            return luaL_error(L, "ws_frame: no random bytes for the mask");
        memcpy(head + h, key, 4);
        h += 4;
    }
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, h + len);
    memcpy(out, head, h);
    if (mask)
        loom_ws_unmask(out + h, payload, len, key, 0);
    else
        memcpy(out + h, payload, len);
    luaL_pushresultsize(&b, h + len);
    return 1;
}

static int sha1(const unsigned char *in, size_t n, unsigned char out[20]) {
#if MBEDTLS_VERSION_MAJOR >= 3
    return mbedtls_sha1(in, n, out);
#else
    return mbedtls_sha1_ret(in, n, out);
#endif
}

/* core.ws_accept(key) -> base64(SHA-1(key .. GUID)), the Sec-WebSocket-Accept value */
static int l_accept(lua_State *L) {
    size_t klen;
    const char *key = luaL_checklstring(L, 1, &klen);
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char buf[256], digest[20], out[64];
    size_t olen = 0;
    luaL_argcheck(L, klen < sizeof buf - sizeof guid, 1, "key too long");
    memcpy(buf, key, klen);
    memcpy(buf + klen, guid, sizeof guid - 1);
    if (sha1(buf, klen + sizeof guid - 1, digest) != 0 ||
        mbedtls_base64_encode(out, sizeof out, &olen, digest, sizeof digest) != 0)
        return luaL_error(L, "ws_accept: hashing failed");
    lua_pushlstring(L, (const char *)out, olen);
    return 1;
}

/* core.ws_key() -> a fresh Sec-WebSocket-Key: base64 of 16 random bytes */
static int l_key(lua_State *L) {
    unsigned char raw[16], out[32];
    size_t olen = 0;
    if (uv_random(NULL, NULL, raw, sizeof raw, 0, NULL) != 0 ||
        mbedtls_base64_encode(out, sizeof out, &olen, raw, sizeof raw) != 0)
        return luaL_error(L, "ws_key: no random bytes");
    lua_pushlstring(L, (const char *)out, olen);
    return 1;
}

/* core.ws_push(stream, bytes) -> queued | nil, err: hands whole frames to the stream
 * without waiting for the peer to read them (what the kernel does not take is queued in
 * libuv, after any bytes queued before), and returns the bytes then queued. For control
 * frames that must not wait behind a blocked send, and for frames published to a topic;
 * the caller bounds what it queues. A frame queued whole never interleaves with another. */
static int l_push(lua_State *L) {
    loom_stream_t *s = loom_stream_check(L, 1);
    size_t len;
    const char *p = luaL_checklstring(L, 2, &len);
    if (s->state != ST_OPEN)
        return loom_fail(L, "closed", "stream is closed");
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
    int rc = loom_stream_send(s, &b, 1);
    if (rc < 0)
        return loom_fail_uv(L, "closed", rc, s->peer);
    lua_pushinteger(L, (lua_Integer)loom_stream_queued(s));
    return 1;
}

/* ---------------------------------------------------------------- reading frames */

/* A frame read's parser (loom_stream_read_framed); ud carries the payload cap. Without L:
 * whether a whole frame is there, or a header that is refused whatever follows. With L:
 * pushes fin, rsv, opcode, masked, payload (unmasked) of the frame at buf; or nil,
 * "http: ..." for a header RFC 6455 refuses (a control frame over 125 bytes, a length with
 * its top bit set), nil, "limit: ..." for a payload over the cap, both without waiting for
 * the payload; -1 when the stream ended before a whole frame. */
static int ws_frame_fn(lua_State *L, void *ud, const char *buf, size_t len, size_t *used) {
    uint64_t max = (uint64_t)(uintptr_t)ud;
    loom_ws_frame_t f;
    if (!loom_ws_parse_header((const unsigned char *)buf, len, &f))
        return L ? -1 : 0;
    const char *bad = loom_ws_header_error(&f);
    if (!L)
        return bad || f.length > max || len - f.header >= f.length;
    *used = 0;
    if (bad)
        return loom_fail(L, "http", "%s", bad);
    if (f.length > max)
        return loom_fail(L, "limit", "frame larger than %I bytes", (lua_Integer)max);
    if (len - f.header < f.length)
        return -1;
    const char *src = buf + f.header;
    lua_pushboolean(L, f.fin);
    lua_pushinteger(L, f.rsv);
    lua_pushinteger(L, f.opcode);
    lua_pushboolean(L, f.masked);
    luaL_Buffer b;
    char *dst = luaL_buffinitsize(L, &b, (size_t)f.length);
    if (f.masked)
        loom_ws_unmask(dst, src, (size_t)f.length, f.key, 0);
    else
        memcpy(dst, src, (size_t)f.length);
    luaL_pushresultsize(&b, (size_t)f.length);
    *used = f.header + (size_t)f.length;
    return 5;
}

/* core.ws_read_frame(stream, max) -> fin, rsv, opcode, masked, payload | nil, err: a framed
 * read of the stream; the cap travels as the parser's state (no allocation per frame). */
static int l_read_frame(lua_State *L) {
    loom_stream_t *s = loom_stream_check(L, 1);
    lua_Integer max = luaL_checkinteger(L, 2);
    uintptr_t cap = max > 0 ? (uintptr_t)max : 0;
    return loom_stream_read_framed(L, s, ws_frame_fn, (void *)cap, "receive");
}

static const luaL_Reg ws_funcs[] = {
    {"ws_push", l_push}, {"ws_frame", l_frame},           {"ws_accept", l_accept},
    {"ws_key", l_key},   {"ws_read_frame", l_read_frame}, {NULL, NULL},
};

int loom_open_websocket(lua_State *L) {
    luaL_setfuncs(L, ws_funcs, 0);
    return loom_open_ws_deflate(L);
}
