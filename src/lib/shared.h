/*
 * shared.h - loom.shared: a dictionary in one shared memory mapping that every worker of
 * `app:run{workers = N}` sees (see shared.c for the layout and the crash rules).
 */
#ifndef LOOM_SHARED_H
#define LOOM_SHARED_H

#include <lua.h>

int loom_open_shared(lua_State *L);

#endif
