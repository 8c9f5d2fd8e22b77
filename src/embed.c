/*
 * embed.c - loom_new, the top of the embedding API (loom.h): a Lua state of loom's own with
 * the standard libraries, loom.core and every Lua file of lua/loom/ preloaded, and `loom`
 * required as a global. It sits above every layer, as it assembles them all; the host object
 * it creates is core/host.c's.
 */
#include <stdio.h>
#include <string.h>
#include <lauxlib.h>
#include <lualib.h>
#include "host.h"
#include "embedded.h"
#include "lua_alloc.h"

int luaopen_loom_core(lua_State *L);

/* ---------------------------------------------------------------- embedded Lua */

static int load_embedded(lua_State *L) {
    const loom_embedded_t *e = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushfstring(L, "=[loom] %s", e->name);
    if (luaL_loadbuffer(L, e->src, e->len, lua_tostring(L, -1)) != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, e->name);
    lua_call(L, 1, 1);
    return 1;
}

/* package.preload gets loom.core and every Lua file of lua/loom/, so the host needs no
 * path set-up. */
static void preload(lua_State *L) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_loom_core);
    lua_setfield(L, -2, "loom.core");
    for (const loom_embedded_t *e = loom_embedded; e->name; e++) {
        lua_pushlightuserdata(L, (void *)e);
        lua_pushcclosure(L, load_embedded, 1);
        lua_setfield(L, -2, e->name);
    }
    lua_pop(L, 1);
}

static int open_host_p(lua_State *L) {
    luaL_openlibs(L);
    preload(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "loom");
    lua_call(L, 1, 1);
    lua_setglobal(L, "loom");
    return 0;
}

/* ---------------------------------------------------------------- a state of our own */

static int on_panic(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n",
            msg ? msg : "error object is not a string");
    return 0; /* Lua aborts */
}

/* As the stock interpreter's (luaL_newstate's, which is private to lauxlib): warnings are
 * off until "@on", "@off" turns them off again, a message may come in pieces. */
static void on_warn(void *ud, const char *msg, int tocont) {
    loom_t *h = ud;
    if (!h->warn_cont && !tocont && msg[0] == '@') {
        if (strcmp(msg, "@on") == 0)
            h->warn_on = 1;
        else if (strcmp(msg, "@off") == 0)
            h->warn_on = 0;
        return;
    }
    if (h->warn_on) {
        if (!h->warn_cont)
            fputs("Lua warning: ", stderr);
        fputs(msg, stderr);
        if (!tocont)
            fputs("\n", stderr);
        fflush(stderr);
    }
    h->warn_cont = tocont;
}

loom_t *loom_new(uv_loop_t *loop) {
    loom_alloc_t *alloc = loom_alloc_new();
    lua_State *L = alloc ? lua_newstate(loom_alloc_lua, alloc) : NULL;
    if (!L) {
        loom_alloc_free(alloc);
        return NULL;
    }
    lua_atpanic(L, on_panic);
    loom_t *h = loom_host_create(L, loop);
    if (!h) {
        lua_close(L);
        loom_alloc_free(alloc);
        return NULL;
    }
    h->owns_L = 1;
    h->alloc = alloc; /* freed after lua_close, in host_destroy */
    lua_setwarnf(L, on_warn, h);
    lua_pushcfunction(L, open_host_p);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        fprintf(stderr, "loom: %s\n", lua_tostring(L, -1));
        loom_free(h);
        return NULL;
    }
    return h;
}
