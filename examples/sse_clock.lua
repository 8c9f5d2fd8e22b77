-- examples/sse_clock.lua: server-sent events. /events streams the time, one event a second,
-- for as long as the client listens; / is a page that shows it with EventSource.
--
--   $ build/loom examples/sse_clock.lua [port]
--   $ curl -N http://127.0.0.1:8080/events
--   retry: 3000
--
--   id: 1
--   data: 2026-11-24T10:00:00Z
--   ...
--
-- The handler is a loop over out:write: a write waits while the client is slow and returns
-- nil, "closed: ..." once it has gone, which ends the loop and the handler. When the server
-- shuts down (SIGTERM, srv:close), req:shutting_down() ends the loop too, with a last
-- event, instead of the grace period cutting the stream. Runs and mounts like
-- examples/hello.lua.

local INTERVAL = 1 -- seconds between events

local PAGE = [[<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>loom clock</title>
<h1>The time at the server</h1>
<p id="now">waiting for the first event...</p>
<script>
  const now = document.getElementById("now");
  const events = new EventSource("{{events}}");
  events.onmessage = (e) => { now.textContent = e.data; };
  events.onerror = () => { now.textContent += " (reconnecting)"; };
</script>
</html>
]]

-- mount(app [, prefix]) -> app
local function mount(app, prefix)
    prefix = prefix or ""
    app:get(prefix == "" and "/" or prefix, function()
        return { html = (PAGE:gsub("{{events}}", prefix .. "/events")) }
    end)

    app:get(prefix .. "/events", function(req)
        local out = assert(req:stream{ headers = {
            ["content-type"] = "text/event-stream",
            ["cache-control"] = "no-cache",
        } })
        -- a browser that loses the stream reconnects after this many milliseconds, sending
        -- the last id it saw; a clock has nothing to replay, so it simply goes on
        if not out:write("retry: 3000\n\n") then return end
        local id = tonumber(req.headers["last-event-id"]) or 0
        while not req:shutting_down() do
            id = id + 1
            local event = ("id: %d\ndata: %s\n\n"):format(id, os.date("!%Y-%m-%dT%H:%M:%SZ"))
            if not out:write(event) then return end -- the client has gone
            loom.sleep(INTERVAL)
        end
        out:write("event: bye\ndata: the server is shutting down\n\n")
    end)
    return app
end

if debug.getinfo(1, "S").source == "@" .. tostring(arg and arg[0]) then
    mount(loom.app()):run{
        host = os.getenv("HOST") or "127.0.0.1",
        port = tonumber(arg[1] or os.getenv("PORT")) or 8080,
    }
end

return mount
