-- WebSockets against a third-party implementation, Debian's python3-websockets
-- (spec/support/ws_peer.py), on 127.0.0.1 in both directions: text, binary, a 1 MiB
-- message, fragmented messages each way, pings each way, close codes and reasons.
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"

local format = string.format
local PEER = "spec/support/ws_peer.py"

-- Debian's python3 has python3-websockets (scripts/deps.sh installs both); a python3
-- earlier in PATH (pyenv, a venv) may not.
local function python()
    for _, p in ipairs({ "/usr/bin/python3", "python3" }) do
        if os.execute(p .. " -c 'import websockets' 2>/dev/null") then return p end
    end
    error("no python3 with the websockets module (apt-get install python3-websockets)")
end

local function exepath(cmd)
    if cmd:find("/") then return cmd end
    local p = io.popen("command -v " .. cmd)
    local path = p:read("l")
    p:close()
    return path
end

local PYTHON = exepath(python())

-- Starts the python peer; returns the process.
local function spawn_peer(...)
    return assert(core.process_spawn(PYTHON, { PEER, ... }))
end

describe("loom.websocket against python3-websockets' server", function()
    it("speaks text, binary, 1 MiB, fragments, pings and close codes", function()
        run(function()
            -- the peer connects here to tell its port: an event, not a guess
            local ports = loom.queue()
            local rv <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
                ports:put(tonumber(st:read_line()))
                st:close()
            end })
            local peer = spawn_peer("server", tostring(rv.port))
            local url = format("ws://127.0.0.1:%d/", ports:get())

            local ws <close> = assert(loom.websocket(url))
            assert(ws:send("héllo"))
            assert.same({ "héllo", "text" }, { ws:receive() })
            local bin = string.rep("\0\1\2\255", 64)
            assert(ws:send(bin, "binary"))
            assert.same({ bin, "binary" }, { ws:receive() })
            local big = string.rep("0123456789abcdef", (1 << 20) // 16)
            assert(ws:send(big, "binary"))
            local got = assert(ws:receive())
            assert.equal(#big, #got)
            assert.is_true(got == big)
            -- fragments from the peer, and from us
            assert(ws:send("frag:ab|cdé|f"))
            assert.same({ "abcdéf", "text" }, { ws:receive() })
            assert(ws:send({ "x", "", "yz" }))
            assert.same({ "xyz", "text" }, { ws:receive() })
            assert(ws:send({ "\1\2", "\3" }, "binary"))
            assert.same({ "\1\2\3", "binary" }, { ws:receive() })
            -- the peer pings us: answered while we are in receive()
            assert(ws:send("ping:are you there"))
            assert.same({ "pong:are you there", "text" }, { ws:receive() })
            -- we ping the peer
            assert(ws:ping("loom-ping"))
            assert(ws:send("after ping"))
            assert.same({ "after ping", "text" }, { ws:receive() })
            assert.equal("loom-ping", ws.last_pong)
            -- the peer closes with a code and reason
            assert(ws:send("close:4003:py says bye"))
            assert.same({ nil, "closed: 4003 py says bye" }, { ws:receive() })

            -- we close with a code and reason; the peer reports what it saw
            local ws2 = assert(loom.websocket(url))
            assert.is_true(ws2:close(4004, "loom says bye"))
            assert.equal(4004, ws2.close_code) -- echoed
            local ws3 <close> = assert(loom.websocket(url))
            assert(ws3:send("closes"))
            local closes = loom.json.decode((ws3:receive()))
            assert.same({ 4004, "loom says bye" }, closes[#closes])
            assert(ws3:send("quit"))
            assert.equal("bye", ws3:receive())
            assert.same({ nil, "closed: 1000" }, { ws3:receive() })
            assert.same({ 0 }, { peer:wait() })
        end, { timeout = 30 })
    end)
end)

describe("app:ws against python3-websockets' client", function()
    it("speaks text, binary, 1 MiB, fragments, pings and close codes", function()
        run(function()
            local seen = {}
            local app = loom.app()
            app:ws("/echo", function(ws)
                for msg, kind in ws:each() do ws:send(msg, kind) end
                seen[#seen + 1] = ws.closed
            end)
            app:ws("/echo-frag", function(ws)
                local msg = assert(ws:receive())
                assert(ws:send({ msg:sub(1, 2), msg:sub(3, 4), msg:sub(5) }))
                ws:receive()
            end)
            app:ws("/echo-closer", function(ws)
                assert(ws:receive())
                ws:close(4002, "loom bye")
            end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local peer = spawn_peer("client", format("ws://127.0.0.1:%d/echo", srv.port))
            assert.same({ 0 }, { peer:wait() })
            assert.same({ "closed: 4000 py bye" }, seen)
        end, { timeout = 30 })
    end)
end)

-- Node's `ws` with permessage-deflate (spec/support/ws_node_peer.js), from npm into
-- $LOOM_BUILD/npm on first use, as smoke/chat_browser installs playwright-core. Without
-- node or npm (offline) these are reported pending, never passed.
local WS_NPM = "ws@8.18.3"

local function node_modules()
    local dir = (os.getenv("LOOM_BUILD") or "build") .. "/npm"
    local f = io.open(dir .. "/node_modules/ws/package.json")
    if f then f:close(); return dir end
    if not os.execute("command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1") then return nil end
    os.execute(format("timeout 60 npm install --prefix %q --no-audit --no-fund --loglevel=error %s >/dev/null 2>&1",
        dir, WS_NPM))
    f = io.open(dir .. "/node_modules/ws/package.json")
    if f then f:close(); return dir end
    return nil
end

local NODE_DIR = node_modules()
local NODE = NODE_DIR and exepath("node")

local function spawn_node(...)
    return assert(core.process_spawn(NODE, { "spec/support/ws_node_peer.js", NODE_DIR, ... }))
end

describe("permessage-deflate against Node's ws", function()
    if not NODE_DIR then
        pending("no node and npm to install " .. WS_NPM)
        return
    end

    it("loom's client: both directions compressed, fragments, context takeover over 300 messages", function()
        run(function()
            local ports = loom.queue()
            local rv <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
                ports:put(tonumber(st:read_line()))
                st:close()
            end })
            local peer = spawn_node("server", tostring(rv.port))
            local ws <close> = assert(loom.websocket(format("ws://127.0.0.1:%d/", ports:get()), { compress = true }))
            assert.equal("permessage-deflate", ws.extensions)
            assert(ws:send("ext"))
            assert.equal("permessage-deflate", ws:receive())
            for i = 1, 300 do
                local msg = format('{"seq":%d,"text":"%s"}', i, string.rep("chat ", 10 + i % 40))
                assert(ws:send(msg))
                assert.same({ msg, "text" }, { ws:receive() })
            end
            assert(ws:send({ string.rep("a", 100), string.rep("b", 100), "c" }))
            assert.equal(string.rep("a", 100) .. string.rep("b", 100) .. "c", ws:receive())
            assert(ws:send("frag:5"))
            assert.equal("part-1;part-2;part-3;part-4;part-5;", ws:receive())
            local big = {}
            for i = 1, (1 << 20) // 16 do big[i] = format("%015d\n", i * 7919) end
            big = table.concat(big)
            assert(ws:send(big, "binary"))
            assert.is_true(ws:receive() == big)
            assert(ws:send("quit"))
            assert.same({ nil, "closed: 1000 bye" }, { ws:receive() })
            assert.same({ 0 }, { peer:wait() })
        end, { timeout = 30 })
    end)

    it("app:ws: Node's client with context takeover, and with no_context_takeover and 10 window bits", function()
        run(function()
            local app = loom.app()
            local agreed = {}
            app:ws("/echo", function(ws)
                agreed[#agreed + 1] = ws.extensions
                for msg, kind in ws:each() do ws:send(msg, kind) end
            end, { compress = true })
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local url = format("ws://127.0.0.1:%d/echo", srv.port)
            assert.same({ 0 }, { spawn_node("client", url):wait() })
            assert.same({ 0 }, { spawn_node("client", url, "nocontext"):wait() })
            assert.same({ "permessage-deflate",
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10" },
                agreed)
        end, { timeout = 30 })
    end)
end)
