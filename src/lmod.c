/*
 * lmod.c - luaopen_loom_core: the C half of the Lua module, one loom_open_<area> per file.
 * In the host the state already has a host; under stock lua the first require creates one.
 */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <lauxlib.h>
#include <llhttp.h>
#include <mbedtls/version.h>
#include "loom.h"
#include "host.h"
#include "stream.h"
#include "http_server.h"
#include "http_client.h"
#include "h2_client.h"
#include "websocket.h"
#include "crypto.h"
#include "compress.h"
#include "json.h"
#include "route.h"

int luaopen_loom_core(lua_State *L);
int loom_open_fs(lua_State *L);
int loom_open_signal(lua_State *L);
int loom_open_udp(lua_State *L);
int loom_open_shared(lua_State *L);
int loom_open_process(lua_State *L);
int loom_open_pg(lua_State *L);
int loom_open_resp(lua_State *L);
int loom_open_multipart(lua_State *L);
int loom_open_http_static(lua_State *L);

const char *loom_libs_version(void) {
    static char buf[192];
    char tls[18];
    mbedtls_version_get_string(tls);
    snprintf(buf, sizeof buf, "%s, libuv %s, llhttp %d.%d.%d, mbed TLS %s, nghttp2 %s", LUA_RELEASE,
             uv_version_string(), LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH,
             tls, nghttp2_version(0)->version_str);
    return buf;
}

int luaopen_loom_core(lua_State *L) {
    if (!loom_host(L))
        loom_host_attach(L);
    lua_newtable(L);
    loom_open_host(L);
    loom_open_sched(L);
    loom_open_stream(L);
    loom_open_dns(L);
    loom_open_tls(L);
    loom_open_http_server(L);
    loom_open_http_client(L);
    loom_open_h2_client(L);
    loom_open_fs(L);
    loom_open_signal(L);
    loom_open_udp(L);
    loom_open_shared(L);
    loom_open_process(L);
    loom_open_websocket(L);
    loom_open_pg(L);
    loom_open_resp(L);
    loom_open_multipart(L);
    loom_open_http_static(L);
    loom_open_crypto(L);
    loom_open_compress(L);
    loom_open_json(L);
    loom_open_route(L);
    return 1;
}
