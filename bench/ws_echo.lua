-- bench/ws_echo.lua PORT: loom's side of bench/ws_echo.sh, a websocket echo server.
local app = loom.app()
app:ws("/", function(ws)
    for msg, kind in ws:each() do ws:send(msg, kind) end
end)
app:run{ host = "127.0.0.1", port = tonumber(arg[1]), access_log = false }
