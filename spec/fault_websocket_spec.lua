-- WebSocket faults: a peer that stops reading. Sends must wait rather than queue (the
-- process's write queue stays bounded while a sender tries 200 MB), a sender that gives up
-- (loom.timeout) must not leave its bytes piling up, and ws:close, app:close_websockets and
-- a fragmented send cut short must end such a connection within close_timeout. Each case
-- then checks that a fresh websocket on the same server still echoes, and support.run
-- checks nothing was left running. spec/websocket_spec.lua has the plain backpressure case
-- (sends wait, then all arrive once the peer reads).
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"
local timing = require "support.timing"

local format, byte = string.format, string.byte
local MiB = 1 << 20

-- An app with an echo endpoint, and `path` running `handler` (close_timeout 0.3 s: checked
-- by its lower bound, 0.25 s, and a guard against a hang, support.timing).
local function serve(path, handler)
    local app = loom.app()
    app:ws("/echo", function(ws) for m, k in ws:each() do ws:send(m, k) end end)
    app:ws(path, handler, { close_timeout = 0.3 })
    return app, assert(app:listen{ host = "127.0.0.1", port = 0 })
end

-- A peer that upgrades and then reads nothing: the raw stream.
local function mute_peer(srv, path)
    local st = assert(loom.connect("127.0.0.1", srv.port))
    assert(st:write(format("GET %s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", path, core.ws_key())))
    assert.equal("HTTP/1.1 101 Switching Protocols", st:read_line())
    repeat local line = assert(st:read_line()) until line == ""
    return st
end

-- The process still serves: a new websocket round trip.
local function still_serving(srv)
    local ws <close> = assert(loom.websocket(format("ws://127.0.0.1:%d/echo", srv.port)))
    assert(ws:send("still here"))
    assert.same({ "still here", "text" }, { ws:receive() })
end

-- Resident memory of this process, kB (Linux).
local function rss_kb()
    local f = assert(io.open("/proc/self/status"))
    local kb = tonumber(f:read("a"):match("VmRSS:%s*(%d+)"))
    f:close()
    return kb
end

local function elapsed_since(t0) return loom.now() - t0 end

describe("a websocket peer that stops reading", function()
    it("keeps the write queue bounded while the server tries to send 200 MB, each send under a timeout", function()
        run(function()
            local report = loom.queue()
            local app, srv = serve("/flood", function(ws)
                local msg = string.rep("f", 2 * MiB)
                local sent, timed_out, most = 0, 0, 0
                local rss0 = rss_kb()
                for _ = 1, 100 do -- 100 x 2 MiB
                    local ok, err = loom.timeout(0.02, ws.send, ws, msg, "binary")
                    if ok then sent = sent + 1 elseif err == "timeout" then timed_out = timed_out + 1 end
                    most = math.max(most, core.stream_queued(ws.st))
                end
                local grew = rss_kb() - rss0
                local t0 = loom.now()
                local closed = ws:close()
                report:put({ sent = sent, timed_out = timed_out, most = most, grew = grew,
                    close = closed, close_took = elapsed_since(t0), closed = ws.closed })
            end)
            local peer <close> = mute_peer(srv, "/flood")
            local r = report:get()
            -- the kernel took a few messages; every other send gave up, and none of them
            -- left its 2 MiB behind: at most one message (and its frame header) is queued
            assert.is_true(r.sent < 20, "sends did not wait: " .. r.sent)
            assert.equal(100, r.sent + r.timed_out)
            assert.is_true(r.close)
            assert.is_true(r.most <= 2 * MiB + 14, "queued " .. r.most .. " bytes")
            if not os.getenv("LOOM_SANITIZE") then -- ASan's quarantine keeps freed memory
                assert.is_true(r.grew < 64 * 1024, "RSS grew by " .. r.grew .. " kB")
            end
            -- the close frame cannot get past the unsent message: dropped after close_timeout
            assert.equal("closed: 1006 no close frame from the peer", r.closed)
            timing.within(r.close_took, 0.25, 0.3, "ws:close()")
            -- the peer gets what the kernel had, then the end
            local got = 0
            while true do
                local d = peer:read()
                if not d then break end
                got = got + #d
            end
            assert.is_true(got < 40 * MiB, "peer read " .. got)
            still_serving(srv)
            srv:close()
            app:close_websockets()
        end, { timeout = 30 })
    end)

    it("a send waiting on it is ended by ws:close from another task, within close_timeout", function()
        run(function()
            local report = loom.queue()
            local app, srv = serve("/stuck", function(ws)
                local sending = loom.event()
                local sender = loom.spawn(function()
                    sending:set()
                    -- 64 MiB: more than the kernel's buffers on both ends, so this send waits
                    return ws:send(string.rep("s", 64 * MiB), "binary")
                end)
                sending:wait() -- the sender ran up to its wait
                local queued = core.stream_queued(ws.st)
                local t0 = loom.now()
                local closed = ws:close(4000, "bye")
                local took = elapsed_since(t0)
                local _, ok, err = sender:join()
                report:put({ queued = queued, close = closed, took = took, ok = ok, err = err,
                    closed = ws.closed })
            end)
            local peer <close> = mute_peer(srv, "/stuck")
            local r = report:get()
            assert.is_true(r.queued > 0, "the send did not wait")
            assert.is_true(r.close)
            timing.within(r.took, 0.25, 0.3, "ws:close()")
            assert.is_nil(r.ok)
            assert.equal("closed: 1006 no close frame from the peer", r.err)
            assert.equal(r.err, r.closed)
            still_serving(srv)
            srv:close()
            app:close_websockets()
        end, { timeout = 20 })
    end)

    it("app:close_websockets() stops a handler stuck sending to it, within close_timeout", function()
        run(function()
            local ended = loom.queue()
            local started = loom.event()
            local app, srv = serve("/stream", function(ws)
                started:set()
                -- 64 MiB: more than the kernel's buffers on both ends, so the send waits
                local chunk = string.rep("c", 64 * MiB)
                local ok, err
                repeat ok, err = ws:send(chunk, "binary") until not ok -- until the connection goes
                ended:put(err)
            end)
            local peer <close> = mute_peer(srv, "/stream")
            started:wait() -- the handler ran up to its wait in send
            local t0 = loom.now()
            app:close_websockets()
            assert.equal("closed: 1006 no close frame from the peer", ended:get())
            timing.within(elapsed_since(t0), 0.25, 0.3, "the handler's send ended")
            -- and the connection is dropped (the peer reads what the kernel had, then the end)
            repeat until not peer:read()
            timing.within(elapsed_since(t0), 0.25, 0.3, "the connection dropped")
            still_serving(srv)
            srv:close()
        end, { timeout = 20 })
    end)

    it("a fragmented send cut short by a timeout drops the connection instead of corrupting it", function()
        run(function()
            local report = loom.queue()
            local app, srv = serve("/frag", function(ws)
                local part = string.rep("p", 16 * MiB)
                local ok, err = loom.timeout(0.1, ws.send, ws, { part, part, part }, "binary")
                report:put({ ok = ok, err = err, closed = ws.closed, after = { ws:send("next") } })
            end)
            local peer <close> = mute_peer(srv, "/frag")
            local r = report:get()
            assert.is_nil(r.ok)
            assert.equal("timeout", r.err)
            assert.equal("closed: 1006 message cut short", r.closed)
            assert.same({ nil, "closed: 1006 message cut short" }, r.after)
            still_serving(srv)
            srv:close()
            app:close_websockets()
        end, { timeout = 20 })
    end)

    it("the client side: sends to a server that reads nothing stay bounded, and close returns", function()
        run(function()
            local release = loom.event()
            -- a server that upgrades, then reads nothing until released
            local l <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(s)
                local key
                repeat
                    local line = s:read_line()
                    key = key or (line and line:match("^Sec%-WebSocket%-Key: (.+)$"))
                until not line or line == ""
                s:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
                    "Sec-WebSocket-Accept: " .. core.ws_accept(key) .. "\r\n\r\n")
                release:wait()
                s:close()
            end })
            local ws = assert(loom.websocket(format("ws://127.0.0.1:%d/", l.port), { close_timeout = 0.3 }))
            local msg = string.rep("m", 2 * MiB)
            local most, gave_up = 0, 0
            for _ = 1, 50 do -- 100 MB
                if not loom.timeout(0.02, ws.send, ws, msg) then gave_up = gave_up + 1 end
                most = math.max(most, core.stream_queued(ws.st))
            end
            assert.is_true(gave_up > 30, "gave up " .. gave_up)
            assert.is_true(most <= 2 * MiB + 14, "queued " .. most .. " bytes")
            local t0 = loom.now()
            assert.is_true(ws:close())
            timing.within(elapsed_since(t0), 0.25, 0.3, "ws:close()")
            assert.equal("closed: 1006 no close frame from the peer", ws.closed)
            release:set()
        end, { timeout = 20 })
    end)
end)

-- Hostile servers for loom.websocket: spec/support/ws_hostile.py, plain python3 sockets.
local HOSTILE = debug.getinfo(1, "S").source:match("^@(.*/)") .. "support/ws_hostile.py"

local function exepath(cmd)
    local p = io.popen("command -v " .. cmd)
    local path = p:read("l")
    p:close()
    return path
end

-- Starts ws_hostile.py in `mode`; returns the process and the ws:// URL of its server.
local function hostile_server(mode)
    local ports = loom.queue()
    local rv <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
        ports:put(tonumber(st:read_line()))
        st:close()
    end })
    local peer = assert(core.process_spawn(exepath("python3"), { HOSTILE, mode, tostring(rv.port) }))
    -- a hang guard: python3 can take seconds to start on a loaded machine
    local port = assert(loom.timeout(20, ports.get, ports), "ws_hostile.py did not start")
    return peer, format("ws://127.0.0.1:%d/", port)
end

describe("loom.websocket against a hostile server", function()
    it("refuses a 101 answer whose head never ends: limit, at 64 KiB", function()
        run(function()
            local peer, url = hostile_server("endless-head")
            local rss0 = rss_kb()
            local ws, err = loom.websocket(url, { timeout = 20 })
            assert.is_nil(ws)
            assert.equal("limit: response head over 65536 bytes", err)
            if not os.getenv("LOOM_SANITIZE") then
                assert.is_true(rss_kb() - rss0 < 16 * 1024, "RSS grew by " .. (rss_kb() - rss0) .. " kB")
            end
            assert.same({ 0 }, { peer:wait() }) -- the server saw us go
        end, { timeout = 30 })
    end)

    it("times the whole handshake out, however steadily its head trickles in", function()
        run(function()
            -- a byte every 100 ms: each header line comes within 1 s (the old per-read timeout
            -- never fired), the head never ends
            local peer, url = hostile_server("trickle-head")
            local t0 = loom.now()
            local ws, err = loom.websocket(url, { timeout = 1.5 })
            local took = elapsed_since(t0)
            assert.is_nil(ws)
            assert.matches("^timeout: websocket handshake with 127%.0%.0%.1:%d+$", err)
            assert.is_true(took >= 1.4 and took < 10, tostring(took))
            assert.same({ 0 }, { peer:wait() })
        end, { timeout = 30 })
    end)
end)

describe("a websocket peer that floods", function()
    it("close() ends at close_timeout though the peer keeps pinging instead of answering", function()
        run(function()
            local pinged = loom.queue()
            -- a server that upgrades, then pings every 50 ms and never sends a close frame
            local l <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(s)
                local key
                repeat
                    local line = s:read_line()
                    key = key or (line and line:match("^Sec%-WebSocket%-Key: (.+)$"))
                until not line or line == ""
                s:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
                    "Sec-WebSocket-Accept: " .. core.ws_accept(key) .. "\r\n\r\n")
                local n = 0
                while s:write(core.ws_frame(9, "still here", true, false)) do
                    n = n + 1
                    if n == 3 then pinged:put(true) end
                    loom.sleep(0.05) -- the peer's pace, not a wait for an event
                end
                s:close()
            end })
            local ws = assert(loom.websocket(format("ws://127.0.0.1:%d/", l.port), { close_timeout = 0.3 }))
            pinged:get()
            local t0 = loom.now()
            assert.is_true(ws:close())
            local took = elapsed_since(t0)
            timing.within(took, 0.25, 0.3, "ws:close()")
            assert.equal("closed: 1006 no close frame from the peer", ws.closed)
        end, { timeout = 20 })
    end)

    it("a flood of empty continuation frames ends with 1009 at the default max_message", function()
        run(function()
            local ended = loom.queue()
            local app, srv = serve("/gather", function(ws)
                ended:put({ ws:receive() })
            end)
            local peer <close> = mute_peer(srv, "/gather")
            local rss0 = rss_kb()
            -- 400000 empty continuations: each costs 64 bytes, so 16 MiB / 64 = 262144 of them
            -- are allowed; the old reader kept every one and never closed
            local batch = string.rep(core.ws_frame(0, "", false, true), 10000)
            local writer = loom.spawn(function()
                assert(peer:write(core.ws_frame(2, "x", false, true)))
                for _ = 1, 40 do
                    if not peer:write(batch) then break end -- the server may close first
                end
            end)
            assert.same({ nil, "closed: 1009 message too big" }, ended:get())
            writer:join()
            if not os.getenv("LOOM_SANITIZE") then
                local grew = rss_kb() - rss0
                assert.is_true(grew < 32 * 1024, "RSS grew by " .. grew .. " kB")
            end
            -- the peer gets the close frame
            local fin, _, op, _, payload = core.ws_read_frame(peer, 1000)
            assert.same({ true, 8, 1009 }, { fin, op, byte(payload, 1) * 256 + byte(payload, 2) })
            srv:close()
            app:close_websockets()
        end, { timeout = 30 })
    end)

    it("pings from a peer that reads no pongs: the pongs wait, never pile up", function()
        run(function()
            local state = {}
            local app, srv = serve("/pings", function(ws)
                state.ws = ws
                state.result = { ws:receive() }
            end)
            local peer <close> = mute_peer(srv, "/pings")
            -- 125-byte pings, up to 400000 of them: 50 MB of pongs, more than the kernel's
            -- buffers hold, so the server's pong writes wait and our ping writes stall
            local batch = string.rep(core.ws_frame(9, string.rep("p", 125), true, true), 1000)
            peer:settimeout(1)
            local wrote, err = 0, nil
            for _ = 1, 400 do
                local ok
                ok, err = peer:write(batch)
                if not ok then break end
                wrote = wrote + 1000
            end
            assert.matches("^timeout", err, "the server kept reading pings it could not answer")
            -- the server waits in one pong's write: that frame (125 bytes and a 2-byte header)
            -- is all it holds
            local queued = core.stream_queued(state.ws.st)
            assert.is_true(queued > 0 and queued <= 127, "queued " .. queued .. " bytes")
            assert.is_nil(state.result)
            peer:close()
            srv:close()
            app:close_websockets()
        end, { timeout = 30 })
    end)
end)
