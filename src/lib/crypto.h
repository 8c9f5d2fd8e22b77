/*
 * crypto.h - loom.crypto (src/lib/crypto.c) and the two helpers other C files may use: random
 * bytes for boundaries, nonces and session ids, and a constant-time compare.
 */
#ifndef LOOM_CRYPTO_H
#define LOOM_CRYPTO_H

#include <stddef.h>
#include <lua.h>

/* Fills buf with n bytes from the kernel's CSPRNG (getrandom(2)). 0, or -1 with errno. */
int loom_crypto_random(void *buf, size_t n);
/* 1 when the two byte strings are equal, else 0; the time taken depends on alen only. */
int loom_crypto_equal(const void *a, size_t alen, const void *b, size_t blen);
/* Sets core.crypto (the public loom.crypto) and the internal core.aes_gcm_seal/open on the
 * table at the top of the stack. */
int loom_open_crypto(lua_State *L);

#endif
