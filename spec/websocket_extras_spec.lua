-- WebSocket extras (issue 16): permessage-deflate (RFC 7692) negotiated and on the wire,
-- with the inflated size counted against max_message (a compression bomb ends with 1009);
-- heartbeat pings on both sides; pongs that do not wait behind blocked sends; topics
-- (ws:subscribe, app:publish) with a bound per slow subscriber. Raw peers are loom streams
-- that speak frames with core.ws_frame / core.ws_read_frame, so every bit is checked.
-- Interop with Node's ws and Chromium: spec/websocket_interop_spec.lua, smoke/chat_browser.
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"

local format, rep, byte = string.format, string.rep, string.byte
local KiB, MiB = 1024, 1 << 20

-- A raw client: upgrades `path` offering `extensions` (or none); returns the stream and the
-- answer's headers (lower-cased names).
local function raw_client(port, path, extensions)
    local st = assert(loom.connect("127.0.0.1", port))
    assert(st:write(format("GET %s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n", path, core.ws_key(),
        extensions and ("Sec-WebSocket-Extensions: " .. extensions .. "\r\n") or "")))
    assert.equal("HTTP/1.1 101 Switching Protocols", st:read_line())
    local h = {}
    while true do
        local line = assert(st:read_line())
        if line == "" then break end
        local k, v = line:match("^([^:]+):%s*(.-)%s*$")
        h[k:lower()] = v
    end
    return st, h
end

-- A client frame (masked); rsv1 marks a compressed message's first frame.
local function send(st, op, payload, fin, rsv1)
    assert(st:write(core.ws_frame(op, payload, fin ~= false, true, rsv1)))
end

local function frame(st)
    local fin, rsv, op, masked, payload = core.ws_read_frame(st, 64 * MiB)
    assert(fin ~= nil, rsv)
    return { fin = fin, rsv = rsv, op = op, masked = masked, payload = payload }
end

-- The close code in a close frame.
local function close_code(f)
    assert.equal(8, f.op)
    return byte(f.payload, 1) * 256 + byte(f.payload, 2)
end

-- An app: /echo echoes, with `opts`; returns the app and its server.
local function echo_app(opts)
    local app = loom.app()
    app:ws("/echo", function(ws) for m, k in ws:each() do ws:send(m, k) end end, opts)
    return app, assert(app:listen{ host = "127.0.0.1", port = 0 })
end

describe("permessage-deflate", function()
    it("is agreed on from the client's offers, and only when compress is on", function()
        run(function()
            local _, srv = echo_app({ compress = true })
            local function answer(offer)
                local st <close>, h = raw_client(srv.port, "/echo", offer)
                return h["sec-websocket-extensions"]
            end
            -- what Chromium and Firefox offer
            assert.equal("permessage-deflate", answer("permessage-deflate; client_max_window_bits"))
            assert.equal("permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
                answer("permessage-deflate; server_max_window_bits=10; client_no_context_takeover"))
            assert.equal("permessage-deflate; server_no_context_takeover",
                answer('permessage-deflate; server_no_context_takeover; client_max_window_bits="9"'))
            -- an offer we cannot honour is declined; the next one is taken
            assert.equal("permessage-deflate", answer("permessage-deflate; x_unknown, permessage-deflate"))
            assert.is_nil(answer("permessage-deflate; server_max_window_bits=16"))
            assert.is_nil(answer("permessage-deflate; server_max_window_bits"))
            assert.is_nil(answer("permessage-deflate; server_no_context_takeover; server_no_context_takeover"))
            assert.is_nil(answer("x-webkit-deflate-frame"))
            assert.is_nil(answer(nil))
            -- loom's client offers it; a server without compress does not take it
            local ws <close> = assert(loom.websocket(format("ws://127.0.0.1:%d/echo", srv.port), { compress = true }))
            assert.equal("permessage-deflate", ws.extensions)
            local _, plain = echo_app()
            local ws2 <close> = assert(loom.websocket(format("ws://127.0.0.1:%d/echo", plain.port), { compress = true }))
            assert.is_nil(ws2.extensions)
            assert(ws2:send(rep("x", 500)))
            assert.equal(rep("x", 500), ws2:receive())
            srv:close(); plain:close()
        end)
    end)

    it("sends RSV1 frames of raw deflate without the 00 00 ff ff tail, and small messages plain", function()
        run(function()
            local _, srv = echo_app({ compress = true })
            local st <close> = raw_client(srv.port, "/echo", "permessage-deflate")
            local z = core.ws_inflater(false)
            local d = core.ws_deflater(15, false)
            for i = 1, 20 do -- context takeover both ways: each message refers to the ones before
                local msg = format("message %d: %s", i, rep("the same words again ", 20))
                send(st, 1, d:deflate(msg, true), true, true)
                local f = frame(st)
                assert.equal(4, f.rsv)
                assert.is_true(#f.payload < #msg / 4)
                assert.is_false(f.payload:sub(-4) == "\0\0\255\255")
                assert.equal(msg, z:inflate(f.payload, true, MiB))
            end
            -- a compressed message in three frames (RSV1 on the first only)
            local whole = d:deflate(rep("abc", 1000), true)
            send(st, 2, whole:sub(1, 5), false, true)
            send(st, 0, whole:sub(6, 10), false)
            send(st, 0, whole:sub(11), true)
            local f = frame(st)
            assert.same({ 4, 2 }, { f.rsv, f.op })
            assert.equal(rep("abc", 1000), z:inflate(f.payload, true, MiB))
            -- under 64 bytes: sent as it is
            send(st, 1, "short")
            f = frame(st)
            assert.same({ 0, "short" }, { f.rsv, f.payload })
            srv:close()
        end)
    end)

    it("round-trips between loom's client and server: 300 messages, fragments, 1 MiB", function()
        run(function()
            local _, srv = echo_app({ compress = true })
            local ws <close> = assert(loom.websocket(format("ws://127.0.0.1:%d/echo", srv.port), { compress = true }))
            for i = 1, 300 do
                local msg = format('{"seq": %d, "text": "%s"}', i, rep("chat ", i % 40 + 10))
                assert(ws:send(msg))
                assert.same({ msg, "text" }, { ws:receive() })
            end
            local big = {}
            for i = 1, MiB // 16 do big[i] = format("%015d\n", i * 7919) end
            big = table.concat(big)
            assert(ws:send({ big:sub(1, 1000), big:sub(1001, 500000), big:sub(500001) }, "binary"))
            assert.same({ big, "binary" }, { ws:receive() })
            assert(ws:send(big))
            assert.is_true(ws:receive() == big)
            srv:close()
        end, { timeout = 20 })
    end)

    it("resets the contexts per message with no_context_takeover", function()
        run(function()
            local _, srv = echo_app({ compress = true })
            local st <close>, h = raw_client(srv.port, "/echo",
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
            assert.equal("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                h["sec-websocket-extensions"])
            local msg = rep("no context taken over ", 10)
            for _ = 1, 3 do
                send(st, 1, core.ws_deflater(15, false):deflate(msg, true), true, true) -- a fresh context each time
                local f = frame(st)
                assert.equal(4, f.rsv)
                assert.equal(msg, core.ws_inflater(false):inflate(f.payload, true, MiB)) -- a fresh one inflates it
            end
            srv:close()
        end)
    end)

    it("closes with 1009 when a message inflates past max_message, without inflating it all", function()
        -- made before the run's deadline starts: deflating 256 MiB is seconds of CPU, many
        -- more in the sanitizer build on a loaded machine (it once took the whole 20 s)
        local bomb = core.ws_deflater(15, false):deflate(rep("\0", 256 * MiB), true) -- 256 MiB in ~250 KiB
        assert.is_true(#bomb < MiB)
        run(function()
            local seen = loom.queue()
            local app = loom.app()
            app:ws("/small", function(ws) seen:put({ ws:receive() }) end, { compress = true, max_message = MiB })
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            for _, split in ipairs({ false, true }) do
                local st <close> = raw_client(srv.port, "/small", "permessage-deflate")
                if split then -- the same in fragments of 10 KiB
                    for i = 1, #bomb, 10 * KiB do
                        send(st, i == 1 and 2 or 0, bomb:sub(i, i + 10 * KiB - 1), i + 10 * KiB > #bomb, i == 1)
                    end
                else
                    send(st, 2, bomb, true, true)
                end
                assert.same({ nil, "closed: 1009 message too big" }, seen:get())
                assert.equal(1009, close_code(frame(st)))
            end
            -- a message just under the limit still arrives
            local ws <close> = assert(loom.websocket(format("ws://127.0.0.1:%d/small", srv.port), { compress = true }))
            assert(ws:send(rep("z", MiB), "binary"))
            assert.same({ rep("z", MiB), "binary" }, seen:get())
            srv:close()
        end, { timeout = 60 })
    end)

    it("fails with 1002 on RSV1 without the extension, on a continuation or a control frame", function()
        run(function()
            local _, plain = echo_app()
            local _, srv = echo_app({ compress = true })
            local d = core.ws_deflater(15, false)
            local cases = {
                { plain, nil, function(st) send(st, 1, d:deflate(rep("a", 100), true), true, true) end },
                { srv, "permessage-deflate", function(st)
                    send(st, 1, "abc", false)
                    send(st, 0, "def", true, true)
                end },
                { srv, "permessage-deflate", function(st) send(st, 9, "", true, true) end },
            }
            for _, c in ipairs(cases) do
                local st <close> = raw_client(c[1].port, "/echo", c[2])
                c[3](st)
                assert.equal(1002, close_code(frame(st)))
            end
            srv:close(); plain:close()
        end)
    end)

    it("fails the client's handshake when the server answers an extension it did not offer", function()
        run(function()
            local rv <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
                local key
                repeat
                    local line = st:read_line()
                    key = key or (line and line:match("^[Ss]ec%-[Ww]eb[Ss]ocket%-[Kk]ey: (%S+)"))
                until not line or line == ""
                st:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
                    "Sec-WebSocket-Accept: " .. core.ws_accept(key) .. "\r\n" ..
                    "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
                st:read()
                st:close()
            end })
            local url = format("ws://127.0.0.1:%d/", rv.port)
            local ws, err = loom.websocket(url)
            assert.is_nil(ws)
            assert.matches("^http: the server chose an extension we did not offer", err)
        end)
    end)
end)

describe("heartbeat", function()
    it("drops a server websocket whose peer answers no ping, with 1006", function()
        run(function()
            local seen = loom.queue()
            local app = loom.app()
            app:ws("/hb", function(ws)
                local t0 = loom.now()
                seen:put({ { ws:receive() }, loom.now() - t0 })
            end, { heartbeat = 0.2 })
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local st <close> = raw_client(srv.port, "/hb")
            local r = seen:get()
            assert.same({ nil, "closed: 1006 no pong within 0.2 s" }, r[1])
            assert.is_true(r[2] >= 0.35, "closed after " .. r[2] .. " s") -- a ping at 0.2, nothing by 0.4
            local f = frame(st)
            assert.same({ 9, "" }, { f.op, f.payload }) -- the ping it did not answer
            srv:close()
        end)
    end)

    it("keeps a client websocket open while pongs come back, and drops it when they stop", function()
        run(function()
            local _, srv = echo_app()
            -- each pong has a whole second to come back (a loaded machine stalls for tenths)
            local ws <close> = assert(loom.websocket(format("ws://127.0.0.1:%d/echo", srv.port), { heartbeat = 1 }))
            local got = loom.queue()
            local reader = loom.spawn(function() got:put({ ws:receive() }) end)
            loom.sleep(2.5) -- two intervals: pings went out and pongs came back to the reader
            assert.is_nil(ws.closed)
            assert(ws:send("still open"))
            assert.same({ "still open", "text" }, got:get())
            reader:join()
            -- a server that answers nothing
            local rv <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
                local key
                repeat
                    local line = st:read_line()
                    key = key or (line and line:match("^[Ss]ec%-[Ww]eb[Ss]ocket%-[Kk]ey: (%S+)"))
                until not line or line == ""
                st:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
                    "Sec-WebSocket-Accept: " .. core.ws_accept(key) .. "\r\n\r\n")
                st:read(1 << 20) -- the pings, unanswered
                st:read()
                st:close()
            end })
            local mute <close> = assert(loom.websocket(format("ws://127.0.0.1:%d/", rv.port), { heartbeat = 0.1 }))
            assert.same({ nil, "closed: 1006 no pong within 0.1 s" }, { mute:receive() })
            srv:close()
        end, { timeout = 30 })
    end)

    it("rejects a heartbeat that is not a positive number", function()
        assert.has_error(function() loom.app():ws("/x", function() end, { heartbeat = 0 }) end,
            "bad argument #3 to 'ws' (option 'heartbeat': positive number of seconds expected, got 0)")
        assert.has_error(function() loom.app():ws("/x", function() end, { compress = "yes" }) end,
            "bad argument #3 to 'ws' (option 'compress': boolean expected, got string)")
    end)

    it("answers a ping right after the frame being written, not after sends still waiting", function()
        run(function()
            local waiting = loom.queue()
            local app = loom.app()
            local server_ws
            app:ws("/busy", function(ws)
                server_ws = ws
                -- a big send that gives up: its bytes stay queued behind a peer not reading
                loom.timeout(0.2, ws.send, ws, rep("B", 8 * MiB), "binary")
                -- a second send, waiting for them
                loom.spawn(function() waiting:put(true); ws:send("second") end)
                ws:receive() -- only receives: answers the ping
            end)
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local st <close> = raw_client(srv.port, "/busy")
            waiting:get()
            local before = core.stream_queued(server_ws.st)
            send(st, 9, "are you there")
            -- the pong is queued at once (on the old code it waited for "second")
            local deadline = loom.now() + 3
            while core.stream_queued(server_ws.st) == before and loom.now() < deadline do loom.sleep(0.01) end
            local order = {}
            for _ = 1, 3 do
                local f = frame(st)
                order[#order + 1] = f.op == 10 and ("pong:" .. f.payload) or #f.payload
            end
            assert.same({ 8 * MiB, "pong:are you there", 6 }, order)
            srv:close()
        end, { timeout = 20 })
    end)
end)

describe("topics", function()
    it("publishes to the subscribers of a topic, once each, until they unsubscribe or close", function()
        run(function()
            local app = loom.app()
            local ready = loom.queue()
            app:ws("/t", function(ws, req)
                for topic in req.query.topics:gmatch("[^,]+") do assert(ws:subscribe(topic)) end
                ready:put(true)
                for m in ws:each() do
                    if m == "leave news" then ws:unsubscribe("news"); ready:put(true) end
                end
            end)
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local function client(topics)
                local ws = assert(loom.websocket(format("ws://127.0.0.1:%d/t?topics=%s", srv.port, topics)))
                ready:get()
                return ws
            end
            local a, b, c = client("news,chat"), client("news"), client("chat")
            assert.equal(0, app:publish("nobody", "x"))
            assert.equal(2, app:publish("news", "headline"))
            assert.equal(2, app:publish("chat", "\0\1", "binary"))
            assert.same({ "headline", "text" }, { a:receive() })
            assert.same({ "\0\1", "binary" }, { a:receive() })
            assert.same({ "headline", "text" }, { b:receive() })
            assert.same({ "\0\1", "binary" }, { c:receive() })
            assert(a:send("leave news"))
            ready:get()
            assert.equal(1, app:publish("news", "second"))
            assert.equal("second", b:receive())
            b:close()
            assert.equal(0, app:publish("news", "third")) -- closing unsubscribed b
            c:close()
            assert.equal(1, app:publish("chat", "to a")) -- c's close unsubscribed it; a stays in chat
            assert.equal("to a", a:receive())
            a:close()
            assert.equal(0, app:publish("chat", "gone"))
            srv:close()
        end)
    end)

    it("keeps published frames in order with ws:send, and after a fragmented send's last fragment", function()
        run(function()
            local app = loom.app()
            local sending = loom.queue()
            app:ws("/t", function(ws)
                ws:subscribe("t")
                app:publish("t", "published first")
                assert(ws:send("sent second")) -- what was published before goes first
                -- a fragmented send that waits (the peer is not reading yet) between fragments
                loom.spawn(function() sending:put(true); ws:send({ rep("a", 4 * MiB), rep("b", 4 * MiB) }) end)
                ws:receive()
            end)
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local st <close> = raw_client(srv.port, "/t")
            sending:get()
            assert.equal(1, app:publish("t", "published during the fragments"))
            local got = {}
            for _ = 1, 5 do
                local f = frame(st)
                got[#got + 1] = #f.payload > 100 and (f.op .. ":" .. #f.payload) or f.payload
            end
            assert.same({ "published first", "sent second", "1:" .. 4 * MiB, "0:" .. 4 * MiB,
                "published during the fragments" }, got)
            srv:close()
        end, { timeout = 20 })
    end)

    it("rejects misuse", function()
        run(function()
            local app = loom.app()
            assert.has_error(function() app:publish(1, "x") end,
                "bad argument #1 to 'publish' (string expected, got number)")
            assert.has_error(function() app:publish("t", "x", "json") end,
                "bad argument #3 to 'publish' ('text' or 'binary' expected, got json)")
            local _, srv = echo_app()
            local ws <close> = assert(loom.websocket(format("ws://127.0.0.1:%d/echo", srv.port)))
            assert.has_error(function() ws:subscribe("t") end,
                "subscribe: only a websocket of app:ws can subscribe to topics")
            srv:close()
        end)
    end)

    it("drops a subscriber that does not read once max_queue bytes wait for it (1008), others get all", function()
        run(function()
            local app = loom.app()
            local ready, ended = loom.queue(), loom.queue()
            local mute_ws
            app:ws("/t", function(ws, req)
                if req.query.mute then mute_ws = ws end
                ws:subscribe("feed")
                ready:put(true)
                ended:put({ req.query.mute and "mute" or "reader", ws:receive() })
            end, { max_queue = 256 * KiB, close_timeout = 0.3 })
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local mute <close> = raw_client(srv.port, "/t?mute=1")
            ready:get()
            local reader = assert(loom.websocket(format("ws://127.0.0.1:%d/t", srv.port)))
            ready:get()
            local got, acks = 0, loom.queue()
            local reading = loom.spawn(function()
                while true do
                    local m = reader:receive()
                    if m == "end" or not m then return end
                    got = got + 1
                    if got % 4 == 0 then acks:put(got) end
                end
            end)
            local msg = rep("p", 32 * KiB)
            local most, to_mute = 0, 0
            for i = 1, 400 do -- 12.5 MiB: far more than the kernel's buffers take
                local n = app:publish("feed", msg)
                if n == 2 then to_mute = to_mute + 1 end
                if mute_ws and not mute_ws.closed then most = math.max(most, core.stream_queued(mute_ws.st)) end
                if i % 4 == 0 then acks:get() end -- the reader keeps up
            end
            app:publish("feed", "end")
            reading:join()
            assert.is_true(to_mute > 0 and to_mute < 400, "the mute peer got " .. to_mute)
            assert.is_true(most <= 256 * KiB, "queued " .. most)
            local r = ended:get()
            assert.same({ "mute", nil, "closed: 1008 slow subscriber" }, { r[1], r[2], r[3] })
            reader:close()
            assert.is_true(got >= 400, "the reader got " .. got)
            srv:close()
        end, { timeout = 30 })
    end)

    it("counts against max_queue what publish queues, not the subscriber's own ws:send going out", function()
        run(function()
            local app = loom.app()
            local sending, ended = loom.queue(), loom.queue()
            local server_ws
            app:ws("/t", function(ws)
                server_ws = ws
                ws:subscribe("t")
                -- 8 MiB: more than loopback takes in for a peer that reads nothing (3.75 MiB here)
                loom.spawn(function() sending:put(true); ws:send(rep("s", 8 * MiB), "binary") end)
                ended:put({ ws:receive() })
            end, { max_queue = 64 * KiB, close_timeout = 5 })
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local st <close> = raw_client(srv.port, "/t")
            sending:get()
            assert.is_true(core.stream_queued(server_ws.st) > 64 * KiB, "the send is going out")
            -- one publish at a time, each written behind the send before the next (the cork
            -- task, spawned by the publish, runs before one spawned after it)
            local msg = rep("p", 16 * KiB) -- 16 KiB + 4 bytes of header: three fit in 64 KiB
            local counts = {}
            for i = 1, 4 do
                counts[i] = app:publish("t", msg)
                loom.spawn(function() end):join()
            end
            assert.same({ 1, 1, 1, 0 }, counts)
            local f = frame(st)
            assert.same({ 2, 8 * MiB }, { f.op, #f.payload })
            for _ = 1, 3 do
                f = frame(st)
                assert.is_true(f.op == 1 and f.payload == msg, "a published frame expected")
            end
            local c = frame(st)
            assert.equal(1008, close_code(c))
            send(st, 8, c.payload) -- answer the close
            assert.same({ nil, "closed: 1008 slow subscriber" }, ended:get())
            srv:close()
        end, { timeout = 30 })
    end)
end)
