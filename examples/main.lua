-- examples/main.lua: one server with every example of this directory mounted under its
-- own prefix, and an index page linking them. `make run` starts it.
--
--   $ build/loom examples/main.lua [port]           (or PORT=8080 HOST=0.0.0.0 ...)
--   listening on http://127.0.0.1:8080
--
--   /          this index
--   /hello     examples/hello.lua
--   /api       examples/json_api.lua (/api/todos ...)
--   /site/     examples/site/server.lua (static files and /site/api/time)
--   /clock     examples/sse_clock.lua (server-sent events at /clock/events)
--
-- Each example, required, returns mount(app, prefix) (see examples/hello.lua); this file
-- makes the app, mounts them, and runs it.

local here = debug.getinfo(1, "S").source:match("^@(.*)/") or "."
package.path = here .. "/?.lua;" .. package.path

local INDEX = [[<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>loom examples</title>
<h1>loom examples</h1>
<ul>
  <li><a href="/hello">/hello</a>: one route (examples/hello.lua)</li>
  <li><a href="/api/todos">/api/todos</a>: a JSON API with validation (examples/json_api.lua)</li>
  <li><a href="/site/">/site/</a>: static files and a dynamic route (examples/site/)</li>
  <li><a href="/clock">/clock</a>: server-sent events, one a second (examples/sse_clock.lua)</li>
</ul>
</html>
]]

local app = loom.app{ max_body = 64 * 1024 }
require("hello")(app, "/hello")
require("json_api")(app, "/api")
require("site.server")(app, "/site")
require("sse_clock")(app, "/clock")
app:get("/", function() return { html = INDEX } end)
app:not_found(function(req) -- a page that leads back, and JSON under the API
    if req.path:find("^/api/") then return { status = 404, json = { error = "no such path" } } end
    return { status = 404, html = '<p>Nothing here. See <a href="/">the examples</a>.</p>' }
end)

app:run{
    host = os.getenv("HOST") or "127.0.0.1",
    port = tonumber(arg[1] or os.getenv("PORT")) or 8080,
}
