/*
 * fail.c - runtime failures as `nil, "kind: detail"` and misuse as raised errors.
 * Knows nothing of libuv handles or tasks; only formats.
 */
#include <stdarg.h>
#include <stdio.h>
#include <lauxlib.h>
#include <uv.h>
#include "fail.h"

int loom_fail(lua_State *L, const char *kind, const char *fmt, ...) {
    va_list ap;
    lua_pushnil(L);
    lua_pushfstring(L, "%s: ", kind);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return 2;
}

int loom_fail_uv(lua_State *L, const char *kind, int uverr, const char *ctx) {
    if (ctx)
        return loom_fail(L, kind, "%s (%s)", uv_strerror(uverr), ctx);
    return loom_fail(L, kind, "%s", uv_strerror(uverr));
}

int loom_opt_error(lua_State *L, int arg, const char *name, const char *expected) {
    const char *got = luaL_typename(L, -1);
    const char *msg = lua_pushfstring(L, "option '%s': %s expected, got %s", name, expected, got);
    return luaL_argerror(L, arg, msg);
}

/* Pushes opts[name]; the caller pops it. Absent table means every option is absent. */
static int push_opt(lua_State *L, int arg, const char *name) {
    if (lua_type(L, arg) != LUA_TTABLE) {
        lua_pushnil(L);
        return LUA_TNIL;
    }
    return lua_getfield(L, arg, name);
}

double loom_opt_number(lua_State *L, int arg, const char *name, double def) {
    int t = push_opt(L, arg, name);
    double v = def;
    if (t == LUA_TNUMBER)
        v = lua_tonumber(L, -1);
    else if (t != LUA_TNIL)
        loom_opt_error(L, arg, name, "number");
    lua_pop(L, 1);
    return v;
}

lua_Integer loom_opt_integer(lua_State *L, int arg, const char *name, lua_Integer def) {
    int t = push_opt(L, arg, name);
    lua_Integer v = def;
    int isnum = 0;
    if (t == LUA_TNUMBER) {
        v = lua_tointegerx(L, -1, &isnum);
        if (!isnum)
            loom_opt_error(L, arg, name, "integer");
    } else if (t != LUA_TNIL) {
        loom_opt_error(L, arg, name, "integer");
    }
    lua_pop(L, 1);
    return v;
}

const char *loom_opt_string(lua_State *L, int arg, const char *name, const char *def) {
    int t = push_opt(L, arg, name);
    const char *v = def;
    if (t == LUA_TSTRING)
        v = lua_tostring(L, -1); /* stays alive: it is held by the options table */
    else if (t != LUA_TNIL)
        loom_opt_error(L, arg, name, "string");
    lua_pop(L, 1);
    return v;
}

int loom_opt_boolean(lua_State *L, int arg, const char *name, int def) {
    int t = push_opt(L, arg, name);
    int v = def;
    if (t == LUA_TBOOLEAN)
        v = lua_toboolean(L, -1);
    else if (t != LUA_TNIL)
        loom_opt_error(L, arg, name, "boolean");
    lua_pop(L, 1);
    return v;
}

double loom_opt_timeout(lua_State *L, int arg, const char *name, double def) {
    int t = push_opt(L, arg, name);
    double v = def;
    if (t == LUA_TNUMBER) {
        v = lua_tonumber(L, -1);
        if (!(v >= 0))
            loom_opt_error(L, arg, name, "non-negative number");
    } else if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        v = -1;
    } else if (t != LUA_TNIL) {
        loom_opt_error(L, arg, name, "number");
    }
    lua_pop(L, 1);
    return v;
}

void loom_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction close) {
    luaL_newmetatable(L, name);
    if (methods) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    if (close) {
        lua_pushcfunction(L, close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, close);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
}
