/*
 * json.h - a small JSON encoder for the commonest answers ({json = v} with v a few plain
 * tables of strings, numbers and booleans), writing the bytes lua-cjson writes as loom.json
 * sets it up (lua/loom/json.lua): the same escapes, "/" as it is, numbers as "%.14g", keys
 * in lua_next's order. It never raises and calls no Lua code: what it does not handle the
 * same way in every lua-cjson loom supports, it turns down, and the caller takes cjson.
 */
#ifndef LOOM_JSON_H
#define LOOM_JSON_H

#include <stddef.h>
#include <lua.h>

/* Room the encoder takes for its output; a longer JSON text is turned down. */
#define LOOM_JSON_SMALL 4096

/* Encodes the value at idx into buf (LOOM_JSON_SMALL bytes): its length, or 0 when it turns
 * the value down (a table with a metatable, a key that is not a string in a table that is
 * not a sequence, a sparse array, an integer of 15 digits or more, NaN or an infinity, a
 * function, userdata, a thread, a light userdata other than cjson.null, nesting deeper than
 * 16, or a text longer than buf). Leaves the stack as it found it. */
size_t loom_json_small(lua_State *L, int idx, char *buf);

/* Sets core.json_small (the encoder from Lua: the JSON text or nil, for specs) on the table
 * at the top of the stack. */
int loom_open_json(lua_State *L);

#endif
