/*
 * h2_client.h - the HTTP/2 client connection's Lua objects (core.h2_session, core.tls_alpn;
 * see h2_client.c), over a client session of h2_session.c.
 */
#ifndef LOOM_H2_CLIENT_H
#define LOOM_H2_CLIENT_H

#include <lua.h>

int loom_open_h2_client(lua_State *L);

#endif
