-- examples/chat/server.lua: a chat room. The page (index.html and chat.js, served from
-- this directory) connects to /ws with the browser's WebSocket; whatever one client says,
-- every client sees.
--
--   $ build/loom examples/chat/server.lua [port] [host]
--   listening on http://127.0.0.1:8080        (then open that address in two tabs)
--
-- Messages are JSON: the page sends {text}; the server sends {kind = "message" | "join" |
-- "leave", name, text}. Each client has its own outgoing queue and writer task, so one
-- slow reader never holds up the others: when its queue is full, it misses messages.
local port = tonumber(arg[1]) or 8080
local host = arg[2] or "127.0.0.1"
local here = arg[0]:match("^(.*)/[^/]*$") or "."

local QUEUE = 256          -- messages waiting for one client before it misses some
local MAX_TEXT = 2000      -- characters of one message

local app = loom.app()
local clients = {}         -- ws -> its outgoing queue
local joined = 0

-- Queues a message for every client; never waits.
local function broadcast(msg)
    local data = loom.json.encode(msg)
    for _, out in pairs(clients) do
        if not out:full() then out:put(data) end
    end
end

app:ws("/ws", function(ws, req)
    joined = joined + 1
    local name = (req.query.name or ""):gsub("[^%w _.-]", ""):sub(1, 24)
    if name == "" then name = "guest" .. joined end
    local out = loom.queue(QUEUE)
    local writer = loom.spawn(function()
        while ws:send(out:get()) do end
    end)
    clients[ws] = out
    broadcast{ kind = "join", name = name }
    for text, kind in ws:each() do
        local ok, msg = pcall(loom.json.decode, text)
        if kind == "text" and ok and type(msg) == "table" and type(msg.text) == "string" then
            broadcast{ kind = "message", name = name, text = msg.text:sub(1, MAX_TEXT) }
        end
    end
    clients[ws] = nil
    writer:cancel()
    broadcast{ kind = "leave", name = name }
end, { max_message = 64 * 1024 })

app:static("/", here)

app:run{ host = host, port = port }
