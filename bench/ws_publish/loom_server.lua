-- bench/ws_publish/loom_server.lua PORT: subscribers on /sub (topic "t"); GET /publish?count=M&size=S
-- publishes M messages of S bytes to all of them with app:publish, one call per message.
local port = tonumber(arg[1]) or 9001
local app = loom.app()
app:ws("/sub", function(ws)
    ws:subscribe("t")
    for _ in ws:each() do end
end, { max_queue = 16 * 1024 * 1024 })
app:get("/publish", function(req)
    local count, size = tonumber(req.query.count) or 100, tonumber(req.query.size) or 64
    local msg = string.rep("x", size)
    local receivers = 0
    local t0 = loom.now()
    for _ = 1, count do receivers = app:publish("t", msg) end
    return { json = { receivers = receivers, secs = loom.now() - t0 } }
end)
app:run{ host = "127.0.0.1", port = port, backlog = 4096, access_log = false }
