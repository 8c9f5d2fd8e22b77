/*
 * embed.c - a C program that hosts loom.
 *
 * It registers a C function as the Lua global `greet(name)`, then runs a script in which
 * a raw TCP server (loom.listen on 127.0.0.1, port 0) answers each line it reads with
 * greet(line), a client task (loom.connect) sends a name and prints the answer, and both
 * close. loom_run returns once nothing is left to do; loom_free releases everything.
 *
 *   $ build/examples/embed/embed
 *   client got: Hello, embedder! (from C)
 *   exit status 0
 */
#include <stdio.h>
#include <lauxlib.h>
#include <lua.h>
#include "loom.h"

/* greet(name) -> "Hello, <name>! (from C)". An ordinary lua_CFunction: loom adds nothing. */
static int greet(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    lua_pushfstring(L, "Hello, %s! (from C)", name);
    return 1;
}

static const char *script =
    "local srv = assert(loom.listen{ host = '127.0.0.1', port = 0, handler = function(st)\n"
    "    -- one task per connection: answer each line, until the client closes\n"
    "    for line in function() return st:read_line() end do\n"
    "        st:write(greet(line), '\\n')\n"
    "    end\n"
    "    st:close()\n"
    "end })\n"
    "\n"
    "local c = assert(loom.connect('127.0.0.1', srv.port))\n"
    "c:write('embedder\\n')\n"
    "print('client got: ' .. assert(c:read_line()))\n"
    "c:close()\n"
    "srv:close() -- nothing is left: loom_run returns\n";

int main(void) {
    loom_t *h = loom_new(NULL); /* loom owns the loop */
    if (!h) {
        fprintf(stderr, "embed: cannot create the host\n");
        return 1;
    }
    lua_State *L = loom_lua(h);
    lua_pushcfunction(L, greet);
    lua_setglobal(L, "greet");

    if (loom_dostring(h, script, "=embed") != 0) {
        fprintf(stderr, "embed: %s\n", lua_tostring(L, -1));
        loom_free(h);
        return 1;
    }
    int status = loom_run(h); /* 0, 1 if the script raised, or loom.exit's code */
    loom_free(h);
    printf("exit status %d\n", status);
    return status;
}
