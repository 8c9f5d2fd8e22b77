-- examples/ws_fanout.lua: websocket fan-out between instances through Redis pub/sub. Run
-- it twice (two ports, or many processes behind a load balancer) against one Redis: a
-- message a client sends to any instance reaches the clients of every instance.
--
--   $ build/loom examples/ws_fanout.lua 8081 redis://127.0.0.1:6379
--   $ build/loom examples/ws_fanout.lua 8082 redis://127.0.0.1:6379
--   (a websocket client on ws://127.0.0.1:8081/ws and one on :8082/ws)
--
-- Each instance keeps its own websockets (app:publish to the topic "room" sends to the
-- local ones) and one Redis subscription to the channel "fanout". A message from a client
-- is PUBLISHed to Redis, never sent locally at once: it comes back through the
-- subscription, on every instance alike, so all clients see messages in Redis's order.
-- What it sends: {from = instance, text}. Shared state lives in Redis, none in a process.
local port = tonumber(arg[1]) or 8080
local redis_url = arg[2] or os.getenv("REDIS_URL") or "redis://127.0.0.1:6379"
local CHANNEL = "fanout"

local app = loom.app()
local r = loom.redis(redis_url)
local me = ("%s:%d"):format(os.getenv("HOSTNAME") or "local", port)
local sub

-- The subscription, from Redis to the local websockets, until on_shutdown closes it. When
-- Redis goes away, it is made again every second until Redis is back.
local stopping = false
app:on_startup(function()
    sub = assert(r:subscribe(CHANNEL)) -- subscribed before the port opens: nothing missed
    loom.spawn(function()
        while true do
            local channel, msg = sub:receive()
            if channel then
                app:publish("room", msg)
            elseif stopping then
                break
            else
                io.stderr:write("ws_fanout: subscription lost (", msg, "), subscribing again\n")
                loom.sleep(1)
                sub = r:subscribe(CHANNEL) or sub
            end
        end
    end)
end)

app:on_shutdown(function()
    stopping = true
    sub:close()
    r:close()
end)

app:ws("/ws", function(ws)
    ws:subscribe("room")
    for text, kind in ws:each() do
        if kind == "text" then
            local ok, err = r:publish(CHANNEL, loom.json.encode { from = me, text = text:sub(1, 2000) })
            if not ok then ws:send(loom.json.encode { error = err }) end
        end
    end
end, { max_message = 16 * 1024 })

app:get("/", function() return "ws_fanout: websocket on /ws, instance " .. me .. "\n" end)

app:run { host = "127.0.0.1", port = port }
