-- Install from a checkout: luarocks --lua-version=5.4 make rockspec/loom-scm-1.rockspec
rockspec_format = "3.0"
package = "loom"
version = "scm-1"
source = {
   -- `luarocks make` builds the checkout it is run in; this URL is not fetched.
   url = "git+file://.",
}
description = {
   summary = "Async HTTP for Lua 5.4: libuv, llhttp and mbedTLS under coroutines",
   detailed = [[
loom gives Lua 5.4 an event loop, tasks on coroutines, an HTTP/1.1 client
and server, websockets and TLS. After installing, stock lua5.4 can
`local loom = require "loom"` and drive it with `loom.run(fn, ...)`.

Building needs CMake and the development files of libuv >= 1.44,
llhttp >= 8 (Debian: node-llhttp), mbedTLS 2.28 or 3.x and zlib.
At run time loom.json needs lua-cjson (Debian: lua-cjson), which this rock
does not list so that Debian's package can serve it.
]],
   labels = { "http", "async", "libuv", "server", "client", "websocket" },
}
dependencies = {
   "lua >= 5.4",
}
build = {
   type = "cmake",
   variables = {
      CMAKE_INSTALL_PREFIX = "$(PREFIX)",
      LUA_INCLUDE_DIR = "$(LUA_INCDIR)",
      LOOM_ROCK = "ON",
      LOOM_LUA_LIBDIR = "$(LIBDIR)",
      LOOM_LUA_DIR = "$(LUADIR)",
      LOOM_TESTS = "OFF",
      LOOM_WERROR = "OFF",
   },
}
