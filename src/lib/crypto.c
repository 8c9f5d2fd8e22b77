/*
 * crypto.c - loom.crypto: digests and HMAC (mbedTLS's md layer, the same calls in 2.28 and
 * 3.x), random bytes from the kernel's CSPRNG (getrandom(2)), a constant-time compare, hex
 * and base64/base64url. Also core.aes_gcm_seal/open, internal, for sealed session cookies.
 * Knows no sockets, no tasks and no HTTP; every function is a plain call that never waits.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <lauxlib.h>
#include <mbedtls/gcm.h>
#include <mbedtls/md.h>
#include "crypto.h"
#include "fail.h"

/* The most random(n) gives in one call: a sanity bound, not a limit of the source. */
#define RANDOM_MAX (1 << 20)
/* AES-GCM: 96-bit nonces (the size GCM is defined for without a GHASH of the IV), full tags. */
#define GCM_IV_LEN 12
#define GCM_TAG_LEN 16

int loom_crypto_random(void *buf, size_t n) {
    unsigned char *p = buf;
    while (n > 0) {
        /* getrandom(2): "reads of up to 256 bytes will always return as many bytes as
         * requested and will not be interrupted by signals"; larger reads may be short. */
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

int loom_crypto_equal(const void *a, size_t alen, const void *b, size_t blen) {
    const volatile unsigned char *x = a, *y = b;
    unsigned char diff = 0;
    /* Time depends on alen only: b is read modulo its length (itself when empty), and a
     * length mismatch is folded in after the loop rather than returned before it. */
    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)(x[i] ^ (blen ? y[i % blen] : x[i]));
    return (diff == 0) & (alen == blen);
}

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Pushes the digest of s under md (SHA-1/256/512). */
static int push_digest(lua_State *L, mbedtls_md_type_t type) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(type);
    unsigned char out[MBEDTLS_MD_MAX_SIZE];
    if (md == NULL || mbedtls_md(md, (const unsigned char *)s, n, out) != 0)
        return luaL_error(L, "crypto: digest unavailable in this mbed TLS");
    lua_pushlstring(L, (const char *)out, mbedtls_md_get_size(md));
    return 1;
}

/* crypto.sha1(s), .sha256(s), .sha512(s) -> raw digest bytes */
static int crypto_sha1(lua_State *L) {
    return push_digest(L, MBEDTLS_MD_SHA1);
}
static int crypto_sha256(lua_State *L) {
    return push_digest(L, MBEDTLS_MD_SHA256);
}
static int crypto_sha512(lua_State *L) {
    return push_digest(L, MBEDTLS_MD_SHA512);
}

/* crypto.hmac("sha256" | "sha1" | "sha512", key, msg) -> raw MAC bytes */
static int crypto_hmac(lua_State *L) {
    static const char *const names[] = {"sha256", "sha1", "sha512", NULL};
    static const mbedtls_md_type_t types[] = {MBEDTLS_MD_SHA256, MBEDTLS_MD_SHA1,
                                              MBEDTLS_MD_SHA512};
    int which = luaL_checkoption(L, 1, NULL, names);
    size_t klen, mlen;
    const char *key = luaL_checklstring(L, 2, &klen);
    const char *msg = luaL_checklstring(L, 3, &mlen);
    const mbedtls_md_info_t *md = mbedtls_md_info_from_type(types[which]);
    unsigned char out[MBEDTLS_MD_MAX_SIZE];
    if (md == NULL || mbedtls_md_hmac(md, (const unsigned char *)key, klen,
                                      (const unsigned char *)msg, mlen, out) != 0)
        return luaL_error(L, "crypto: HMAC unavailable in this mbed TLS");
    lua_pushlstring(L, (const char *)out, mbedtls_md_get_size(md));
    return 1;
}

/* crypto.random(n) -> n bytes from the kernel's CSPRNG; 0 <= n <= 1 MiB */
static int crypto_random(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= RANDOM_MAX, 1, "n must be 0 to 1048576");
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)n);
    if (loom_crypto_random(p, (size_t)n) != 0)
        return luaL_error(L, "crypto: getrandom failed (%s)", strerror(errno));
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

/* crypto.equal(a, b) -> boolean, in time that depends on the lengths only */
static int crypto_equal(lua_State *L) {
    size_t alen, blen;
    const char *a = luaL_checklstring(L, 1, &alen);
    const char *b = luaL_checklstring(L, 2, &blen);
    lua_pushboolean(L, loom_crypto_equal(a, alen, b, blen));
    return 1;
}

/* crypto.hex(s) -> lower-case hex */
static int crypto_hex(lua_State *L) {
    static const char digits[] = "0123456789abcdef";
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, 2 * n);
    for (size_t i = 0; i < n; i++) {
        p[2 * i] = digits[s[i] >> 4];
        p[2 * i + 1] = digits[s[i] & 15];
    }
    luaL_pushresultsize(&b, 2 * n);
    return 1;
}

static int push_base64(lua_State *L, const char *alphabet, int pad) {
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    size_t full = n / 3, rest = n % 3;
    size_t out = 4 * full + (rest == 0 ? 0 : pad ? 4 : rest + 1);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, out);
    char *q = p;
    for (size_t i = 0; i < full; i++, s += 3) {
        uint32_t v = (uint32_t)s[0] << 16 | (uint32_t)s[1] << 8 | s[2];
        *q++ = alphabet[v >> 18];
        *q++ = alphabet[(v >> 12) & 63];
        *q++ = alphabet[(v >> 6) & 63];
        *q++ = alphabet[v & 63];
    }
    if (rest) {
        uint32_t v = (uint32_t)s[0] << 16 | (rest == 2 ? (uint32_t)s[1] << 8 : 0);
        *q++ = alphabet[v >> 18];
        *q++ = alphabet[(v >> 12) & 63];
        if (rest == 2)
            *q++ = alphabet[(v >> 6) & 63];
        else if (pad)
            *q++ = '=';
        if (pad)
            *q++ = '=';
    }
    luaL_pushresultsize(&b, (size_t)(q - p));
    return 1;
}

/* crypto.base64(s) -> padded standard base64 (RFC 4648 section 4) */
static int crypto_base64(lua_State *L) {
    return push_base64(L, b64_std, 1);
}
/* crypto.base64url(s) -> unpadded base64url (RFC 4648 section 5) */
static int crypto_base64url(lua_State *L) {
    return push_base64(L, b64_url, 0);
}

static int sextet(const char *alphabet, unsigned char c) {
    const char *at = c ? memchr(alphabet, c, 64) : NULL;
    return at ? (int)(at - alphabet) : -1;
}

/* Returns nil, "crypto: invalid base64 (<detail>)". */
static int bad_base64(lua_State *L, const char *fmt, ...) {
    char detail[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return loom_fail(L, "crypto", "invalid base64 (%s)", detail);
}

/* Decodes s in `alphabet`. padded: the length is a multiple of 4, with '=' as needed;
 * url: '=' padding is optional but, when present, must be right. Either way the bits
 * past the last byte must be zero (RFC 4648 3.5: one string per byte string). */
static int push_unbase64(lua_State *L, const char *alphabet, int url) {
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    size_t len = n;
    if (url && n % 4 == 0 && n > 0 && s[n - 1] == '=') /* padded base64url: drop the '=' */
        len -= (n >= 2 && s[n - 2] == '=') ? 2 : 1;
    else if (!url) {
        if (n % 4 != 0)
            return bad_base64(L, "length %zu is not a multiple of 4", n);
        if (n > 0 && s[n - 1] == '=')
            len -= (s[n - 2] == '=') ? 2 : 1;
    }
    if (len % 4 == 1)
        return bad_base64(L, "truncated: %zu characters", len);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len / 4 * 3 + 2);
    char *q = p;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = sextet(alphabet, s[i]);
        if (v < 0)
            return bad_base64(L, "unexpected byte 0x%02x at %zu", (unsigned)s[i], i + 1);
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *q++ = (char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return bad_base64(L, "non-zero bits after the last byte");
    luaL_pushresultsize(&b, (size_t)(q - p));
    return 1;
}

/* crypto.unbase64(s) -> bytes | nil, "crypto: invalid base64 (...)" */
static int crypto_unbase64(lua_State *L) {
    return push_unbase64(L, b64_std, 0);
}
/* crypto.unbase64url(s) -> bytes | nil, "crypto: invalid base64 (...)"; padding optional */
static int crypto_unbase64url(lua_State *L) {
    return push_unbase64(L, b64_url, 1);
}

/* Checks an AES key (16, 24 or 32 bytes) and a 12-byte IV at arguments 1 and 2. */
static void check_key_iv(lua_State *L, const char **key, size_t *klen, const char **iv) {
    size_t ivlen;
    *key = luaL_checklstring(L, 1, klen);
    *iv = luaL_checklstring(L, 2, &ivlen);
    luaL_argcheck(L, *klen == 16 || *klen == 24 || *klen == 32, 1, "key of 16, 24 or 32 bytes");
    luaL_argcheck(L, ivlen == GCM_IV_LEN, 2, "iv of 12 bytes");
}

/* core.aes_gcm_seal(key, iv, plaintext, aad?) -> ciphertext .. 16-byte tag. Internal (for
 * sealed session cookies): the caller never reuses an iv under one key. */
static int crypto_gcm_seal(lua_State *L) {
    const char *key, *iv;
    size_t klen, n, alen = 0;
    check_key_iv(L, &key, &klen, &iv);
    const char *plain = luaL_checklstring(L, 3, &n);
    const char *aad = luaL_optlstring(L, 4, "", &alen);
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, n + GCM_TAG_LEN);
    mbedtls_gcm_context gcm;
    mbedtls_gcm_init(&gcm);
    int rc = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, (const unsigned char *)key,
                                (unsigned)klen * 8);
    if (rc == 0)
        rc = mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, n, (const unsigned char *)iv,
                                       GCM_IV_LEN, (const unsigned char *)aad, alen,
                                       (const unsigned char *)plain, out, GCM_TAG_LEN, out + n);
    mbedtls_gcm_free(&gcm);
    if (rc != 0)
        return luaL_error(L, "crypto: AES-GCM failed (-0x%04x)", (unsigned)-rc);
    luaL_pushresultsize(&b, n + GCM_TAG_LEN);
    return 1;
}

/* core.aes_gcm_open(key, iv, sealed, aad?) -> plaintext | nil, "crypto: ..." when sealed is
 * shorter than a tag or does not authenticate under key, iv and aad. Internal. */
static int crypto_gcm_open(lua_State *L) {
    const char *key, *iv;
    size_t klen, n, alen = 0;
    check_key_iv(L, &key, &klen, &iv);
    const unsigned char *sealed = (const unsigned char *)luaL_checklstring(L, 3, &n);
    const char *aad = luaL_optlstring(L, 4, "", &alen);
    if (n < GCM_TAG_LEN)
        return loom_fail(L, "crypto", "sealed data shorter than its tag");
    n -= GCM_TAG_LEN;
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, n);
    mbedtls_gcm_context gcm;
    mbedtls_gcm_init(&gcm);
    int rc = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, (const unsigned char *)key,
                                (unsigned)klen * 8);
    if (rc == 0)
        rc = mbedtls_gcm_auth_decrypt(&gcm, n, (const unsigned char *)iv, GCM_IV_LEN,
                                      (const unsigned char *)aad, alen, sealed + n, GCM_TAG_LEN,
                                      sealed, out);
    mbedtls_gcm_free(&gcm);
    if (rc == MBEDTLS_ERR_GCM_AUTH_FAILED) {
        memset(out, 0, n); /* mbedTLS zeroes it too; nothing unauthenticated stays */
        return loom_fail(L, "crypto", "authentication failed");
    }
    if (rc != 0)
        return luaL_error(L, "crypto: AES-GCM failed (-0x%04x)", (unsigned)-rc);
    luaL_pushresultsize(&b, n);
    return 1;
}

static const luaL_Reg crypto_funcs[] = {
    {"sha1", crypto_sha1},
    {"sha256", crypto_sha256},
    {"sha512", crypto_sha512},
    {"hmac", crypto_hmac},
    {"random", crypto_random},
    {"equal", crypto_equal},
    {"hex", crypto_hex},
    {"base64", crypto_base64},
    {"unbase64", crypto_unbase64},
    {"base64url", crypto_base64url},
    {"unbase64url", crypto_unbase64url},
    {NULL, NULL},
};

/* Internal: on the core table itself, not in loom.crypto. */
static const luaL_Reg crypto_internal[] = {
    {"aes_gcm_seal", crypto_gcm_seal},
    {"aes_gcm_open", crypto_gcm_open},
    {NULL, NULL},
};

int loom_open_crypto(lua_State *L) {
    luaL_newlib(L, crypto_funcs); /* core.crypto = {sha256 = ..., ...} */
    lua_setfield(L, -2, "crypto");
    luaL_setfuncs(L, crypto_internal, 0);
    return 0;
}
