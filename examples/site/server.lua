-- examples/site/server.lua: a static site (examples/site/public: index.html, style.css,
-- app.js, logo.svg) with one dynamic route, /api/time, which the page's script calls.
--
--   $ build/loom examples/site/server.lua [port]
--   listening on http://127.0.0.1:8080             (then open it in a browser)
--
-- app:static serves the directory with content types, index.html for "/", ETag and
-- Last-Modified (answered 304 when the browser already has the file) and byte ranges.
-- The Lua file stays outside the served directory. Runs and mounts like examples/hello.lua.

-- This file's directory, wherever loom was started from.
local here = debug.getinfo(1, "S").source:match("^@(.*)/") or "."

-- mount(app [, prefix]) -> app
local function mount(app, prefix)
    prefix = prefix or ""
    app:get(prefix .. "/api/time", function()
        local now = os.time()
        return { json = { unix = now, utc = os.date("!%Y-%m-%dT%H:%M:%SZ", now) },
            headers = { ["cache-control"] = "no-store" } }
    end)
    app:static(prefix == "" and "/" or prefix, here .. "/public")
    return app
end

if debug.getinfo(1, "S").source == "@" .. tostring(arg and arg[0]) then
    mount(loom.app()):run{
        host = os.getenv("HOST") or "127.0.0.1",
        port = tonumber(arg[1] or os.getenv("PORT")) or 8080,
    }
end

return mount
