/*
 * lua_fuzz.h - the harness of the targets whose code under test is Lua (fuzz_url.c,
 * fuzz_cookies.c, fuzz_router.c): one loom host for the whole run, its lua_State loaded the
 * way libloom loads it (loom_new: package.preload holds every embedded lua/loom file), and
 * a driver, fuzz/<target>.lua, that returns function(bytes). Each input is one call of that
 * function; any error out of it (a failed property, or a Lua error the module did not mean
 * as its documented answer to bad input) aborts, which libFuzzer records as a crash.
 *
 * Coverage: Debian's liblua and the Lua code under test carry no compiler coverage, so a
 * line hook gives libFuzzer its signal instead. Each step from one line of a loom module to
 * the next (an edge, hashed from the chunk and both line numbers) bumps a byte counter in
 * the section libFuzzer reads as extra counters ("__libfuzzer_extra_counters", found through
 * the linker's __start_/__stop_ symbols on Linux; libFuzzer clears it before each input).
 * Knows no sockets and no HTTP.
 */
#ifndef LOOM_LUA_FUZZ_H
#define LOOM_LUA_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include "loom.h"

#ifndef LOOM_FUZZ_DIR
#error "LOOM_FUZZ_DIR (the fuzz/ directory holding the drivers) is set by cmake/fuzz.cmake"
#endif

#define LUA_FUZZ_EDGES (1u << 16)

/* Only loom's own modules count: their chunk names are "=[loom] loom.x" (src/core/host.c). */
#define LUA_FUZZ_CHUNK "=[loom]"

#define LUA_FUZZ_COUNTERS __attribute__((used, section("__libfuzzer_extra_counters")))
static uint8_t lua_fuzz_edges[LUA_FUZZ_EDGES] LUA_FUZZ_COUNTERS;

static struct {
    loom_t *host;
    lua_State *L;
    int driver;    /* registry ref of the function the driver returned */
    uint32_t prev; /* the previous line's hash, within one input */
} lua_fuzz;

/* The hook is the fuzzer's instrument, not code under test: no coverage or comparison
 * tracing of its own (which would feed libFuzzer chunk-name addresses as dictionary words). */
#define LUA_FUZZ_PLAIN
#ifdef __has_attribute
#if __has_attribute(disable_sanitizer_instrumentation)
#undef LUA_FUZZ_PLAIN
#define LUA_FUZZ_PLAIN __attribute__((disable_sanitizer_instrumentation))
#endif
#endif

LUA_FUZZ_PLAIN static uint32_t lua_fuzz_mix(uintptr_t chunk, int line) {
    uint64_t x = (uint64_t)chunk * 0x9e3779b97f4a7c15u ^ (uint64_t)(unsigned)line;
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9u;
    return (uint32_t)(x ^ (x >> 32));
}

/* Whether a chunk is one of loom's modules; by address, as the last answer is kept. */
LUA_FUZZ_PLAIN static int lua_fuzz_counts(const char *source) {
    static const char *last;
    static int last_counts;
    if (source != last) {
        const char *want = LUA_FUZZ_CHUNK;
        size_t i = 0;
        while (want[i] && source[i] == want[i])
            i++;
        last = source;
        last_counts = want[i] == '\0';
    }
    return last_counts;
}

/* The line hook: ar->currentline is set for line events; "S" adds the chunk. The chunk
 * name's address is stable for as long as the module is loaded, so it stands for the name.
 * Saturating, so a long loop never wraps a counter back to "not seen". */
LUA_FUZZ_PLAIN static void lua_fuzz_on_line(lua_State *L, lua_Debug *ar) {
    if (!lua_getinfo(L, "S", ar) || !lua_fuzz_counts(ar->source))
        return;
    uint32_t cur = lua_fuzz_mix((uintptr_t)ar->source, ar->currentline);
    uint8_t *c = &lua_fuzz_edges[(cur ^ (lua_fuzz.prev >> 1)) & (LUA_FUZZ_EDGES - 1)];
    if (*c != 255)
        (*c)++;
    lua_fuzz.prev = cur;
}

static void lua_fuzz_close(void) {
    if (lua_fuzz.host)
        loom_free(lua_fuzz.host);
    lua_fuzz.host = NULL;
}

/* Loads fuzz/<script> with fuzz/ on package.path (for lua_fuzz.lua, the drivers' helpers). */
static void lua_fuzz_open(const char *script) {
    lua_fuzz.host = loom_new(NULL);
    if (!lua_fuzz.host) {
        fprintf(stderr, "lua_fuzz: loom_new failed\n");
        abort();
    }
    lua_State *L = lua_fuzz.L = loom_lua(lua_fuzz.host);
    lua_getglobal(L, "package");
    lua_pushstring(L, LOOM_FUZZ_DIR "/?.lua");
    lua_setfield(L, -2, "path"); /* package.path = fuzz/?.lua */
    lua_pop(L, 1);
    const char *path = lua_pushfstring(L, "%s/%s", LOOM_FUZZ_DIR, script);
    if (luaL_loadfile(L, path) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK ||
        !lua_isfunction(L, -1)) {
        fprintf(stderr, "lua_fuzz: %s: %s\n", path, luaL_tolstring(L, -1, NULL));
        abort();
    }
    lua_fuzz.driver = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1); /* the path */
    atexit(lua_fuzz_close);
    lua_sethook(L, lua_fuzz_on_line, LUA_MASKLINE, 0);
}

static int lua_fuzz_traceback(lua_State *L) {
    luaL_traceback(L, L, luaL_tolstring(L, 1, NULL), 1);
    return 1;
}

/* One input: driver(bytes) in protected mode; an error is a finding. A full collection ends
 * each input, so memory stays flat, and what the input allocated is freed before libFuzzer
 * compares its mallocs with its frees: more mallocs makes it scan the whole heap for leaks
 * (LSan) on that input, a thousand times over before it gives up, most of a 60 s run. */
static int lua_fuzz_run(const char *script, const uint8_t *data, size_t size) {
    if (!lua_fuzz.L)
        lua_fuzz_open(script);
    lua_State *L = lua_fuzz.L;
    lua_fuzz.prev = 0;
    lua_pushcfunction(L, lua_fuzz_traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua_fuzz.driver);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, -3) != LUA_OK) {
        fprintf(stderr, "lua_fuzz: %s: %s\n", script, lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}

#endif
