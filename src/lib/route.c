/*
 * route.c - loom.router's pattern matching in C. A method's patterns (or one bucket of them)
 * are compiled once into a set: for each route, its segments (a literal, {name}: one
 * non-empty segment, or a last {name*}: the rest of the path, possibly empty) and where its
 * handler and parameter names sit in the set's user value. A match walks the path once per
 * route tried, in the order the routes were added, and builds the params table of the
 * first that takes it, decoding a parameter only when it holds a '%' (url.decode: "%XX"
 * with two hex digits is that byte, anything else stays). The router tried each route
 * with Lua's string.match on an anchored pattern: about 1.3k instructions for /users/{id},
 * a third of them making the capture's string on the way.
 */
#include <stdint.h>
#include <string.h>
#include <lauxlib.h>
#include "route.h"

enum { SEG_LIT, SEG_PARAM, SEG_REST };

typedef struct {
    uint32_t lit; /* a literal's offset in the pool */
    uint32_t len;
    uint32_t kind;
} seg_t;

typedef struct {
    uint32_t seg0, nsegs; /* its segments: segs[seg0 .. seg0 + nsegs) */
    uint32_t uv;          /* its handler's index in the user value; the names follow */
    uint32_t nparams;
} route_t;

typedef struct {
    uint32_t nroutes;
    route_t *routes;
    seg_t *segs;
    char *pool;
} rset_t;

#define SET_MT "loom.route_set"

/* The sizes a list of routes needs: routes, segments, literal bytes. */
static void measure(lua_State *L, int list, uint32_t *nroutes, uint32_t *nsegs, size_t *pool) {
    *nroutes = (uint32_t)luaL_len(L, list);
    *nsegs = 0;
    *pool = 0;
    for (uint32_t i = 1; i <= *nroutes; i++) {
        luaL_argcheck(L, lua_rawgeti(L, list, i) == LUA_TTABLE, 1, "a list of routes expected");
        luaL_argcheck(L, lua_getfield(L, -1, "segs") == LUA_TTABLE, 1, "a route has no segs");
        lua_Integer n = luaL_len(L, -1);
        for (lua_Integer k = 1; k <= n; k++) {
            if (lua_rawgeti(L, -1, k) == LUA_TSTRING)
                *pool += lua_rawlen(L, -1);
            lua_pop(L, 1);
        }
        *nsegs += (uint32_t)n;
        lua_pop(L, 2);
    }
}

/* Fills route r from the route table at the top; the user value (at uv) gets its handler
 * and names from *next on. */
static void fill(lua_State *L, rset_t *s, route_t *r, uint32_t *seg, size_t *pool, int uv,
                 uint32_t *next) {
    r->seg0 = *seg;
    r->uv = *next;
    lua_getfield(L, -1, "handler");
    lua_rawseti(L, uv, (*next)++);
    lua_getfield(L, -1, "segs");
    lua_Integer n = luaL_len(L, -1);
    r->nsegs = (uint32_t)n;
    r->nparams = 0;
    for (lua_Integer k = 1; k <= n; k++) {
        seg_t *g = &s->segs[(*seg)++];
        if (lua_rawgeti(L, -1, k) == LUA_TSTRING) {
            size_t len;
            const char *lit = lua_tolstring(L, -1, &len);
            memcpy(s->pool + *pool, lit, len);
            g->kind = SEG_LIT;
            g->lit = (uint32_t)*pool;
            g->len = (uint32_t)len;
            *pool += len;
        } else {
            g->kind = lua_tointeger(L, -1) == 2 ? SEG_REST : SEG_PARAM;
            r->nparams++;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "names");
    for (uint32_t k = 1; k <= r->nparams; k++) {
        lua_rawgeti(L, -1, k);
        lua_rawseti(L, uv, (*next)++);
    }
    lua_pop(L, 1);
}

/* core.route_set(list) -> set: list[i] = {handler = f, names = {...}, segs = {...}}, a
 * segment being its literal text, 1 for {name} or 2 for {name*} (lua/loom/router.lua). */
static int route_set(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    uint32_t nroutes, nsegs;
    size_t pool;
    measure(L, 1, &nroutes, &nsegs, &pool);
    size_t size = sizeof(rset_t) + nroutes * sizeof(route_t) + nsegs * sizeof(seg_t) + pool;
    rset_t *s = lua_newuserdatauv(L, size, 1);
    s->nroutes = nroutes;
    s->routes = (route_t *)(s + 1);
    s->segs = (seg_t *)(s->routes + nroutes);
    s->pool = (char *)(s->segs + nsegs);
    luaL_setmetatable(L, SET_MT);
    lua_createtable(L, (int)(nroutes * 2), 0);
    int uv = lua_gettop(L);
    uint32_t seg = 0, next = 1;
    size_t used = 0;
    for (uint32_t i = 0; i < nroutes; i++) {
        lua_rawgeti(L, 1, i + 1);
        fill(L, s, &s->routes[i], &seg, &used, uv, &next);
        lua_pop(L, 1);
    }
    lua_setiuservalue(L, -2, 1);
    return 1;
}

typedef struct {
    const char *p;
    size_t len;
} span_t;

/* Whether route r takes path (which starts with '/'); its parameters' spans into caps. */
static int take(const rset_t *s, const route_t *r, const char *path, size_t plen, span_t *caps) {
    const char *p = path + 1, *end = path + plen;
    const seg_t *g = &s->segs[r->seg0], *last = g + r->nsegs - 1;
    for (;; g++) {
        if (g->kind == SEG_REST) { /* always the last */
            caps->p = p;
            caps->len = (size_t)(end - p);
            return 1;
        }
        const char *e = memchr(p, '/', (size_t)(end - p));
        if (!e)
            e = end;
        size_t len = (size_t)(e - p);
        if (g->kind == SEG_LIT) {
            if (len != g->len || memcmp(p, s->pool + g->lit, len) != 0)
                return 0;
        } else {
            if (len == 0)
                return 0;
            caps->p = p;
            caps->len = len;
            caps++;
        }
        if (g == last)
            return e == end;
        if (e == end)
            return 0;
        p = e + 1;
    }
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Pushes s[0, n) percent-decoded as url.decode does. */
static void push_decoded(lua_State *L, const char *s, size_t n) {
    const char *pct = memchr(s, '%', n);
    if (!pct) {
        lua_pushlstring(L, s, n);
        return;
    }
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, n);
    size_t i = (size_t)(pct - s), o = i;
    memcpy(out, s, i);
    for (; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval((unsigned char)s[i + 1])) >= 0 &&
            (lo = hexval((unsigned char)s[i + 2])) >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    luaL_pushresultsize(&b, o);
}

/* core.route_match(set, path) -> handler, params of the first route of set that takes path
 * | nothing. */
static int route_match(lua_State *L) {
    rset_t *s = lua_touserdata(L, 1);
    /* the set's metatable kept as an upvalue: luaL_checkudata finds it by name */
    if (!s || !lua_getmetatable(L, 1) || !lua_rawequal(L, -1, lua_upvalueindex(1)))
        s = luaL_checkudata(L, 1, SET_MT);
    size_t plen;
    const char *path = luaL_checklstring(L, 2, &plen);
    if (plen == 0 || path[0] != '/')
        return 0; /* "*", "host:443": no pattern takes it */
    span_t caps[32];
    for (uint32_t i = 0; i < s->nroutes; i++) {
        const route_t *r = &s->routes[i];
        if (r->nparams > 32 || !take(s, r, path, plen, caps))
            continue;
        lua_settop(L, 2);
        lua_getiuservalue(L, 1, 1);
        lua_rawgeti(L, 3, r->uv);
        lua_createtable(L, 0, (int)r->nparams);
        for (uint32_t k = 0; k < r->nparams; k++) { /* a repeated name keeps the last value */
            lua_rawgeti(L, 3, r->uv + 1 + k);
            push_decoded(L, caps[k].p, caps[k].len);
            lua_rawset(L, 5);
        }
        return 2;
    }
    return 0;
}

int loom_open_route(lua_State *L) {
    lua_pushcfunction(L, route_set);
    lua_setfield(L, -2, "route_set");
    luaL_newmetatable(L, SET_MT);
    lua_pushcclosure(L, route_match, 1);
    lua_setfield(L, -2, "route_match");
    return 0;
}
