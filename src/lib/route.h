/*
 * route.h - the matcher of loom.router's patterns (lua/loom/router.lua): a list of compiled
 * routes tried in order against a path, in C. Knows nothing of requests or the server.
 */
#ifndef LOOM_ROUTE_H
#define LOOM_ROUTE_H

#include <lua.h>

/* Sets core.route_set and core.route_match on the table at the top of the stack. */
int loom_open_route(lua_State *L);

#endif
