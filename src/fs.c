/*
 * fs.c - file facts for the Lua side (static files): core.stat. A stat of a local file is
 * one short syscall, done in place as nginx does; file contents are read by Lua in pieces.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <lauxlib.h>
#include "fail.h"

/* core.stat(path) -> {type = "file"|"directory"|"other", size, mtime} | nil, err */
static int l_stat(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0)
        return loom_fail(L, "closed", "%s (%s)", strerror(errno), path);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory" : "other");
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)st.st_mtime);
    lua_setfield(L, -2, "mtime");
    return 1;
}

static const luaL_Reg fs_funcs[] = {
    {"stat", l_stat},
    {NULL, NULL},
};

int loom_open_fs(lua_State *L) {
    luaL_setfuncs(L, fs_funcs, 0);
    return 0;
}
