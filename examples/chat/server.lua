-- examples/chat/server.lua: a chat room. The page (index.html and chat.js, served from
-- this directory) connects to /ws with the browser's WebSocket; whatever one client says,
-- every client sees.
--
--   $ build/loom examples/chat/server.lua [port] [host]
--   listening on http://127.0.0.1:8080        (then open that address in two tabs)
--
-- Messages are JSON: the page sends {text}; the server sends {kind = "message" | "join" |
-- "leave", name, text}, and to a newcomer {kind = "history", messages = {...}}, the last
-- messages said. Every client subscribes to the topic "room" and app:publish sends to all
-- of them: the frame is built once and queued for each socket without waiting, so one
-- slow reader never holds up the others; one that lets more than max_queue bytes pile up
-- is dropped (1008) and its page reconnects. compress = true: permessage-deflate with the
-- browsers, which all offer it (the history goes compressed; published frames do not).
local port = tonumber(arg[1]) or 8080
local host = arg[2] or "127.0.0.1"
local here = arg[0]:match("^(.*)/[^/]*$") or "."

local MAX_TEXT = 2000      -- characters of one message
local HISTORY = 50         -- messages a newcomer is sent

local app = loom.app()
local history = {}
local joined = 0

local function publish(msg)
    app:publish("room", loom.json.encode(msg))
    if msg.kind == "message" then
        history[#history + 1] = msg
        if #history > HISTORY then table.remove(history, 1) end
    end
end

app:ws("/ws", function(ws, req)
    joined = joined + 1
    local name = (req.query.name or ""):gsub("[^%w _.-]", ""):sub(1, 24)
    if name == "" then name = "guest" .. joined end
    local past = #history > 0 and loom.json.encode{ kind = "history", messages = history }
    ws:subscribe("room") -- before the history goes: nothing said meanwhile is missed
    if past then ws:send(past) end
    publish{ kind = "join", name = name }
    for text, kind in ws:each() do
        local ok, msg = pcall(loom.json.decode, text)
        if kind == "text" and ok and type(msg) == "table" and type(msg.text) == "string" then
            publish{ kind = "message", name = name, text = msg.text:sub(1, MAX_TEXT) }
        end
    end
    -- closing unsubscribed it
    publish{ kind = "leave", name = name }
end, { max_message = 64 * 1024, compress = true, heartbeat = 30, max_queue = 256 * 1024 })

app:static("/", here)

app:run{ host = host, port = port }
