-- spec/support/h2_browser_app.lua PORT CERT KEY: the page of smoke/h2_browser over HTTPS with
-- h2 offered by ALPN (the default): "/" loads /asset.js and an SSE stream (/events), and
-- opens a websocket (/ws, which the browser opens over HTTP/1.1); /seen says which protocol
-- version the server saw for each path.
local loom = require "loom"
local port, cert, key = tonumber(arg[1]), arg[2], arg[3]
local seen = {}
local app = loom.app()
app:use(function(req, next)
    seen[req.path] = req.version
    return next(req)
end)
app:get("/", function()
    return { html = [[<!doctype html><html><head><meta charset="utf-8"><title>h2</title>
<script src="/asset.js"></script></head><body><ul id="events"></ul></body></html>]] }
end)
app:get("/asset.js", function()
    return { headers = { ["content-type"] = "text/javascript" }, body = [[
window.assetLoaded = true;
window.events = [];
const es = new EventSource("/events");
es.onmessage = (e) => { window.events.push(e.data); if (window.events.length === 3) es.close(); };
const ws = new WebSocket("wss://" + location.host + "/ws");
ws.onopen = () => ws.send("over wss");
ws.onmessage = (e) => { window.wsEcho = e.data; ws.close(); };
]] }
end)
app:get("/events", function(req)
    local out = assert(req:stream{ headers = { ["content-type"] = "text/event-stream", ["cache-control"] = "no-cache" } })
    for i = 1, 3 do
        if not out:write("data: tick " .. i .. "\n\n") then return end
        loom.sleep(0.05)
    end
    -- the browser reconnects after the end unless the page closed the stream: it did
end)
app:ws("/ws", function(ws)
    for msg in ws:each() do ws:send("echo " .. msg) end
end)
app:get("/seen", function() return { json = seen } end)
app:run{ host = "127.0.0.1", port = port, tls = { cert = cert, key = key }, access_log = false }
