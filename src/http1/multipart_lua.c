/*
 * multipart_lua.c - the Lua side of the multipart/form-data parser (multipart.h) for
 * loom.multipart: a parser object fed the body's pieces as the engine hands them over,
 * one event per call. Body bytes reach Lua once, as a string cut from the piece (or from
 * the few bytes the parser kept between pieces); the part's head is gathered into a table
 * here, so Lua sees one event per part head rather than one per header line.
 *
 *     core.mp_boundary(ctype) -> boundary | nil, err, status
 *     core.mp_new(boundary, max_parts, max_part_header) -> parser
 *     parser:next(piece, pos) -> nil                        every byte from pos was used
 *                              | 1, pos, headers, name, filename, type     a part's head
 *                              | 2, pos, bytes                             body bytes
 *                              | 3, pos                                    the part ended
 *                              | 4, pos                                    the close delimiter
 *                              | false, err, status                        a malformed body
 *     parser:finish() -> true | false, err, status          at the body's end
 *
 * pos counts the bytes of piece already used (0 at first); a call goes on from there.
 */
#include <string.h>
#include <lauxlib.h>
#include "multipart.h"

#define MP_MT "loom.multipart_parser"

typedef struct {
    loom_multipart_t *mp;
} mp_box_t;

enum { EV_PART = 1, EV_DATA, EV_PART_END, EV_END };

static mp_box_t *check_box(lua_State *L) {
    mp_box_t *b = luaL_checkudata(L, 1, MP_MT);
    if (!b->mp)
        luaL_error(L, "multipart parser is closed");
    return b;
}

static int push_error(lua_State *L, int rc) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, loom_multipart_strerror(rc));
    lua_pushinteger(L, loom_multipart_status(rc));
    return 3;
}

/* core.mp_boundary(ctype) -> boundary | nil, err, status */
static int l_mp_boundary(lua_State *L) {
    size_t len;
    const char *ct = luaL_optlstring(L, 1, "", &len);
    const char *b;
    size_t blen;
    int rc = loom_multipart_boundary(ct, len, &b, &blen);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushstring(L, loom_multipart_strerror(rc));
        lua_pushinteger(L, rc == LOOM_MP_ENOT_FORM ? 415 : loom_multipart_status(rc));
        return 3;
    }
    lua_pushlstring(L, b, blen);
    return 1;
}

/* core.mp_new(boundary, max_parts, max_part_header) -> parser */
static int l_mp_new(lua_State *L) {
    size_t blen;
    const char *b = luaL_checklstring(L, 1, &blen);
    lua_Integer max_parts = luaL_checkinteger(L, 2);
    lua_Integer max_head = luaL_checkinteger(L, 3);
    luaL_argcheck(L, blen >= 1 && blen <= LOOM_MP_MAX_BOUNDARY, 1, "boundary of 1 to 70 bytes");
    luaL_argcheck(L, max_parts >= 0, 2, "must not be negative");
    luaL_argcheck(L, max_head >= 0, 3, "must not be negative");
    /* uservalue 1: the head being read (a table of its headers) */
    mp_box_t *box = lua_newuserdatauv(L, sizeof *box, 1);
    box->mp = NULL;
    luaL_setmetatable(L, MP_MT);
    box->mp = loom_multipart_new(b, blen, (size_t)max_parts, (size_t)max_head);
    if (!box->mp)
        return luaL_error(L, "multipart: out of memory or not a boundary");
    return 1;
}

/* parser:next(piece, pos): see the top of the file */
static int l_mp_next(lua_State *L) {
    mp_box_t *box = check_box(L);
    size_t len;
    const char *p = luaL_checklstring(L, 2, &len);
    lua_Integer pos = luaL_checkinteger(L, 3);
    luaL_argcheck(L, pos >= 0 && (size_t)pos <= len, 3, "position outside the piece");
    size_t at = (size_t)pos;
    for (;;) {
        size_t used = 0;
        loom_mp_event_t ev;
        int rc = loom_multipart_execute(box->mp, p + at, len - at, &used, &ev);
        at += used;
        if (rc < 0)
            return push_error(L, rc);
        switch (rc) {
        case LOOM_MP_MORE:
            lua_pushnil(L);
            return 1;
        case LOOM_MP_PART:
            lua_createtable(L, 0, 4);
            lua_setiuservalue(L, 1, 1);
            break;
        case LOOM_MP_HEADER: {
            lua_getiuservalue(L, 1, 1);
            lua_pushlstring(L, ev.name, ev.name_len);
            lua_pushvalue(L, -1);
            if (lua_rawget(L, -3) == LUA_TSTRING) { /* a repeated header: joined, as req.headers */
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, ev.data, ev.len);
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, ev.data, ev.len);
            }
            lua_rawset(L, -3);
            lua_pop(L, 1);
            break;
        }
        case LOOM_MP_HEADERS_END: {
            const loom_mp_part_t *part = loom_multipart_part(box->mp);
            lua_pushinteger(L, EV_PART);
            lua_pushinteger(L, (lua_Integer)at);
            lua_getiuservalue(L, 1, 1);
            lua_pushnil(L);
            lua_setiuservalue(L, 1, 1);
            lua_pushlstring(L, part->name, part->name_len);
            if (part->filename)
                lua_pushlstring(L, part->filename, part->filename_len);
            else
                lua_pushnil(L);
            if (part->type)
                lua_pushlstring(L, part->type, part->type_len);
            else
                lua_pushnil(L);
            return 6;
        }
        case LOOM_MP_DATA:
            lua_pushinteger(L, EV_DATA);
            lua_pushinteger(L, (lua_Integer)at);
            lua_pushlstring(L, ev.data, ev.len);
            return 3;
        case LOOM_MP_PART_END:
        case LOOM_MP_END:
            lua_pushinteger(L, rc == LOOM_MP_END ? EV_END : EV_PART_END);
            lua_pushinteger(L, (lua_Integer)at);
            return 2;
        default:
            return luaL_error(L, "multipart: unknown event %d", rc);
        }
    }
}

/* parser:finish() -> true | false, err, status */
static int l_mp_finish(lua_State *L) {
    mp_box_t *box = check_box(L);
    int rc = loom_multipart_finish(box->mp);
    if (rc < 0)
        return push_error(L, rc);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_mp_gc(lua_State *L) {
    mp_box_t *box = luaL_checkudata(L, 1, MP_MT);
    if (box->mp)
        loom_multipart_free(box->mp);
    box->mp = NULL;
    return 0;
}

static const luaL_Reg mp_methods[] = {
    {"next", l_mp_next},
    {"finish", l_mp_finish},
    {"close", l_mp_gc},
    {NULL, NULL},
};

static const luaL_Reg mp_funcs[] = {
    {"mp_boundary", l_mp_boundary},
    {"mp_new", l_mp_new},
    {NULL, NULL},
};

int loom_open_multipart(lua_State *L) {
    luaL_newmetatable(L, MP_MT);
    luaL_newlib(L, mp_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_mp_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_mp_gc);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    luaL_setfuncs(L, mp_funcs, 0);
    return 0;
}
