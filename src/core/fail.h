/*
 * fail.h - error kinds, the helper that returns `nil, "kind: detail"`, and option checks that
 * raise in Lua's own shape: bad argument #2 to 'fetch' (option 'timeout': number expected, got
 * string).
 */
#ifndef LOOM_FAIL_H
#define LOOM_FAIL_H

#include <lua.h>
#include <lauxlib.h>

/* Pushes nil and "kind: detail"; returns 2. */
int loom_fail(lua_State *L, const char *kind, const char *fmt, ...);
/* Pushes nil and "kind: <libuv message> (context)"; returns 2. `ctx` may be NULL. */
int loom_fail_uv(lua_State *L, const char *kind, int uverr, const char *ctx);

/* Option readers for a table argument at `arg`: the default when absent or nil. */
double loom_opt_number(lua_State *L, int arg, const char *name, double def);
lua_Integer loom_opt_integer(lua_State *L, int arg, const char *name, lua_Integer def);
const char *loom_opt_string(lua_State *L, int arg, const char *name, const char *def);
int loom_opt_boolean(lua_State *L, int arg, const char *name, int def);

/* Registers a userdata type: metatable `name` with `methods` as __index and `close` as its
 * __gc and __close (either may be NULL). Leaves nothing on the stack. */
void loom_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction close);
/* Raises the standard message for option `name` at argument `arg`. */
int loom_opt_error(lua_State *L, int arg, const char *name, const char *expected);
/* Timeout option: a non-negative number, or nil/false for none (-1). */
double loom_opt_timeout(lua_State *L, int arg, const char *name, double def);

#endif
