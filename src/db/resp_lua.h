/*
 * resp_lua.h - the Lua side of RESP shared by resp.c (core.resp_read, core.resp_command) and
 * resp_mux.c (loom.redis's shared connection): commands encoded from Lua values, replies
 * pushed as Lua values.
 */
#ifndef LOOM_RESP_LUA_H
#define LOOM_RESP_LUA_H

#include <stddef.h>
#include <lua.h>
#include "resp.h"

/* A growing byte buffer (malloc'd; p NULL while empty). */
typedef struct {
    char *p;
    size_t len, cap;
} loom_resp_out_t;

/* Appends to out the RESP array of bulk strings for the n values at L[from ..] (strings as
 * they are, integers in decimal, floats as %.17g). Returns 0; or the stack index of the first
 * value that is neither a string nor a number; or -1 when out of memory (in both cases out is
 * as it was). Raises nothing. */
int loom_resp_encode(lua_State *L, int from, int n, loom_resp_out_t *out);

/* Pushes the value of the whole (already scanned) reply at *p and moves *p past it: a status
 * as {ok = s}, an error as {err = "redis: ..."}, a nil bulk or array as loom.null. */
void loom_resp_push(lua_State *L, const char **p, const char *end, const loom_resp_limits_t *lim);

/* Pushes "redis: " .. the error line of the reply at buf (a '-' reply, scanned). */
void loom_resp_push_error(lua_State *L, const char *buf, size_t len, const loom_resp_limits_t *lim);

int loom_open_resp_mux(lua_State *L);

#endif
