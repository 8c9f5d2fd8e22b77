/*
 * test_server_nomem.c - the HTTP server when there is no memory for a connection it has
 * accepted. libuv then keeps the accepted descriptor and stops watching the listener until
 * the next uv_accept; the server must come back to it, or it never accepts again.
 *
 * This executable defines calloc, so loom's calls come here: the next N allocations of a
 * connection (calloc(1, sizeof(loom_conn_t))) fail, as the script asks. A client in the
 * same script then expects its answer, and a second one after it. Sanitizer builds have
 * their own calloc, which this one would bypass: there the test reports itself skipped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include <lua.h>
#include "loom.h"
#include "http_server.h"

#if !defined(LOOM_SANITIZE_BUILD)
#include "check.h"

extern void *__libc_calloc(size_t n, size_t size);

static int failing; /* connection allocations still to fail */
static int refused; /* how many did */

void *calloc(size_t n, size_t size) {
    if (failing > 0 && n == 1 && size == sizeof(loom_conn_t)) {
        failing--;
        refused++;
        return NULL;
    }
    return __libc_calloc(n, size);
}

/* fail_conn_allocs(n): the next n connection allocations fail */
static int l_fail_conn_allocs(lua_State *L) {
    failing = (int)luaL_checkinteger(L, 1);
    return 0;
}

static const char *script = "local app = loom.app()\n"
                            "app:get('/', function() return 'ok' end)\n"
                            "local srv = assert(app:listen{ host = '127.0.0.1', port = 0 })\n"
                            "local url = 'http://127.0.0.1:' .. srv.port .. '/'\n"
                            "fail_conn_allocs(3)\n"
                            "local t0 = loom.now()\n"
                            "local res, err = loom.fetch(url, { timeout = 5 })\n"
                            "first = res and res:text() or err\n"
                            "waited = loom.now() - t0\n"
                            "res, err = loom.fetch(url, { timeout = 5 })\n"
                            "second = res and res:text() or err\n"
                            "srv:close(0)\n";

static const char *global_string(loom_t *h, const char *name, char *buf, size_t cap) {
    lua_State *L = loom_lua(h);
    lua_getglobal(L, name);
    snprintf(buf, cap, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(nil)");
    lua_pop(L, 1);
    return buf;
}

int main(void) {
    loom_t *h = loom_new(NULL);
    CHECK(h != NULL);
    lua_register(loom_lua(h), "fail_conn_allocs", l_fail_conn_allocs);
    CHECK(loom_dostring(h, script, "=nomem") == 0);
    CHECK(loom_run(h) == 0);
    char first[256], second[256], waited[64];
    global_string(h, "first", first, sizeof first);
    global_string(h, "second", second, sizeof second);
    global_string(h, "waited", waited, sizeof waited);
    CHECK(refused == 3);
    CHECK(strcmp(first, "ok") == 0);  /* answered once memory was back */
    CHECK(strcmp(second, "ok") == 0); /* and the listener accepts again */
    CHECK(atof(waited) >= 0.25);      /* three retries, 100 ms apart */
    if (strcmp(first, "ok") != 0 || strcmp(second, "ok") != 0)
        fprintf(stderr, "first: %s\nsecond: %s\n", first, second);
    loom_free(h);
    return CHECK_SUMMARY();
}

#else

int main(void) {
    puts("skipped: a sanitizer build brings its own calloc");
    return 77;
}

#endif
