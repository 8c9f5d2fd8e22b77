-- examples/hello.lua: the smallest loom server: one route.
--
--   $ build/loom examples/hello.lua [port]          (or PORT=8080 HOST=0.0.0.0 build/loom ...)
--   listening on http://127.0.0.1:8080
--   $ curl http://127.0.0.1:8080/
--   Hello, world!
--
-- Every example in this directory both runs and mounts. Run as the script loom was given,
-- it serves itself (port from arg[1] or $PORT, default 8080; host from $HOST, default
-- 127.0.0.1, so nothing is exposed beyond this machine unless asked). Required (as
-- examples/main.lua does), it only returns mount(app, prefix), which adds its routes to
-- the caller's app under prefix.

-- mount(app [, prefix]) -> app
local function mount(app, prefix)
    prefix = prefix or ""
    app:get(prefix == "" and "/" or prefix, function()
        return "Hello, world!\n"
    end)
    return app
end

-- The script loom was started with is this file: serve.
if debug.getinfo(1, "S").source == "@" .. tostring(arg and arg[0]) then
    mount(loom.app()):run{
        host = os.getenv("HOST") or "127.0.0.1",
        port = tonumber(arg[1] or os.getenv("PORT")) or 8080,
    }
end

return mount
