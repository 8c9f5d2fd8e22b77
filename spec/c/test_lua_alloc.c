/*
 * test_lua_alloc.c - the Lua allocator of src/core/lua_alloc.c: blocks keep their contents
 * across every kind of resize (within a size class, between classes, between cached and
 * malloc'd sizes), freed blocks come back for the next allocation of their class, past a
 * class's cap blocks go back to free(), and a whole Lua state runs and closes on it. Leaks
 * show under the sanitizer build (which caches nothing) and valgrind.
 */
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include <lualib.h>
#include "lua_alloc.h"
#include "check.h"

static void *lalloc(loom_alloc_t *a, void *p, size_t o, size_t n) {
    return loom_alloc_lua(a, p, o, n);
}

static int filled(const unsigned char *p, size_t n, unsigned char v) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return 0;
    return 1;
}

/* Grows and shrinks one block through sizes on both sides of every boundary. */
static void test_resizes(loom_alloc_t *a) {
    static const size_t sizes[] = {1, 16, 17, 32, 100, 255, 256, 257, 1000, 70000, 300, 8, 0};
    unsigned char *p = lalloc(a, NULL, LUA_TTABLE, 5);
    CHECK(p != NULL);
    memset(p, 0xAB, 5);
    size_t have = 5;
    for (int i = 0; sizes[i]; i++) {
        size_t n = sizes[i];
        p = lalloc(a, p, have, n);
        CHECK(p != NULL);
        CHECK(filled(p, have < n ? have : n, 0xAB));
        memset(p, 0xAB, n); /* the whole new size is writable */
        have = n;
    }
    CHECK(lalloc(a, p, have, 0) == NULL);
}

static void test_reuse(loom_alloc_t *a) {
    void *p = lalloc(a, NULL, 0, 40);
    lalloc(a, p, 40, 0);
    void *q = lalloc(a, NULL, 0, 48); /* same class (33..48): the block just freed */
#if defined(LOOM_SANITIZE_BUILD)
    (void)q; /* nothing is cached: ASan gets every block back */
#else
    CHECK(q == p);
#endif
    void *r = lalloc(a, NULL, 0, 64); /* another class */
    CHECK(r != q);
    lalloc(a, q, 48, 0);
    lalloc(a, r, 64, 0);
}

/* Frees far more blocks of one class than its cap holds: the rest go to free() (a leak
 * otherwise, which valgrind and ASan report). */
static void test_cap(loom_alloc_t *a) {
    enum { N = 20000 };
    void **v = malloc(N * sizeof *v);
    for (int i = 0; i < N; i++) {
        v[i] = lalloc(a, NULL, 0, 24);
        memset(v[i], i & 0xff, 24);
    }
    int ok = 1;
    for (int i = 0; i < N; i++)
        ok = ok && filled(v[i], 24, (unsigned char)(i & 0xff));
    CHECK(ok);
    for (int i = 0; i < N; i++)
        lalloc(a, v[i], 24, 0);
    free(v);
}

static void test_state(void) {
    loom_alloc_t *a = loom_alloc_new();
    lua_State *L = lua_newstate(loom_alloc_lua, a);
    CHECK(L != NULL);
    luaL_openlibs(L);
    const char *code = "local t, s = {}, ''\n"
                       "for i = 1, 20000 do t[i] = { i, tostring(i) } end\n"
                       "for i = 1, 20000, 2 do t[i] = nil end\n"
                       "collectgarbage()\n"
                       "for i = 1, 300 do s = s .. string.char(65 + i % 26) end\n"
                       "local n = 0\n"
                       "for _, v in pairs(t) do n = n + v[1] end\n"
                       "return n, #s, s:sub(1, 3)";
    CHECK(luaL_dostring(L, code) == LUA_OK);
    CHECK(lua_tointeger(L, -3) == 100010000); /* 2 + 4 + ... + 20000 */
    CHECK(lua_tointeger(L, -2) == 300);
    CHECK(strcmp(lua_tostring(L, -1), "BCD") == 0);
    lua_close(L);
    loom_alloc_free(a);
}

int main(void) {
    loom_alloc_t *a = loom_alloc_new();
    CHECK(a != NULL);
    test_resizes(a);
    test_reuse(a);
    test_cap(a);
    loom_alloc_free(a);
    test_state();
    return CHECK_SUMMARY();
}
