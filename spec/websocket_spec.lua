-- WebSockets: app:ws and loom.websocket meeting on 127.0.0.1 (messages, fragments, pings,
-- the close handshake, limits, concurrent senders, middleware), and a raw client that
-- sends hostile frames: each must close its connection with the right code while the
-- server goes on serving others.
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"
local timing = require "support.timing"

local char, byte, format = string.char, string.byte, string.format

-- An app with an echo endpoint at /echo (max_message 4096 at /small), whatever `setup`
-- adds, listening on a free port. Each handler's end (what receive returned last) is put
-- on `ends`.
local function serve(setup)
    local app = loom.app()
    local ends = loom.queue()
    local function echo(ws)
        for msg, kind in ws:each() do
            assert(ws:send(msg, kind))
        end
        ends:put(ws.closed)
    end
    app:ws("/echo", echo)
    app:ws("/small", echo, { max_message = 4096 })
    if setup then setup(app, ends) end
    local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
    return srv, ends
end

local function url(srv, path)
    return format("ws://127.0.0.1:%d%s", srv.port, path or "/echo")
end

-- A client that speaks frames by hand: the upgrade request, then whatever bytes a test
-- wants to send. Returns the stream after the 101.
local function raw_connect(srv, path)
    local st = assert(loom.connect("127.0.0.1", srv.port))
    assert(st:write(format("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n" ..
        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
        path or "/echo", core.ws_key())))
    local status = assert(st:read_line())
    assert.equal("HTTP/1.1 101 Switching Protocols", status)
    repeat local line = assert(st:read_line()) until line == ""
    st:settimeout(5)
    return st
end

-- A masked client frame; `first` replaces the first byte (FIN, RSV and opcode bits).
local function frame(op, payload, fin, first)
    local f = core.ws_frame(op, payload, fin ~= false, true)
    if first then f = char(first) .. f:sub(2) end
    return f
end

-- Reads frames until a close frame; returns its code and reason (and checks the end of
-- the stream follows).
local function read_close(st)
    while true do
        local fin, rsv, op, masked, payload = core.ws_read_frame(st, 1 << 20)
        assert(fin ~= nil, rsv)
        assert.is_false(masked)
        if op == 8 then
            local code = #payload >= 2 and byte(payload, 1) * 256 + byte(payload, 2) or nil
            assert.same({ nil, "closed: end of stream" }, { st:read() })
            return code, payload:sub(3)
        end
    end
end

describe("app:ws and loom.websocket", function()
    it("echo text and binary messages; each() ends at the close", function()
        run(function()
            local srv <close>, ends = serve()
            local ws <close> = assert(loom.websocket(url(srv)))
            assert.is_true(ws:send("héllo"))
            assert.same({ "héllo", "text" }, { ws:receive() })
            local bin = "\0\1\2\255" .. string.rep("\254", 300)
            assert.is_true(ws:send(bin, "binary"))
            assert.same({ bin, "binary" }, { ws:receive() })
            assert.is_true(ws:send(""))
            assert.same({ "", "text" }, { ws:receive() })
            assert.is_true(ws:close(4001, "bye now"))
            assert.equal("closed: 4001 bye now", ends:get())
            assert.same({ nil, "closed: 4001" }, { ws:receive() }) -- the server echoes the code
            assert.equal(4001, ws.close_code)
        end)
    end)

    it("carry a 1 MiB message and a 3 MiB one each way", function()
        run(function()
            local srv <close> = serve()
            local ws <close> = assert(loom.websocket(url(srv)))
            for _, n in ipairs({ 1 << 20, 3 << 20 }) do
                local big = string.rep("0123456789abcdef", n // 16)
                assert.is_true(ws:send(big, "binary"))
                local got, kind = ws:receive()
                assert.equal("binary", kind)
                assert.equal(n, #got)
                assert.is_true(got == big)
            end
        end)
    end)

    it("close from the server side reaches the client with its code and reason", function()
        run(function()
            local app = loom.app()
            app:ws("/bye", function(ws)
                assert.equal("hi", ws:receive())
                ws:close(4321, "done here")
            end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local ws <close> = assert(loom.websocket(url(srv, "/bye")))
            ws:send("hi")
            assert.same({ nil, "closed: 4321 done here" }, { ws:receive() })
            assert.same({ 4321, "done here" }, { ws.close_code, ws.close_reason })
            assert.same({ nil, "closed: 4321 done here" }, { ws:send("more") })
        end)
    end)

    it("gather fragmented messages, pings between fragments answered", function()
        run(function()
            local srv <close> = serve()
            local st <close> = raw_connect(srv)
            -- "é" split between two fragments: only the whole message must be UTF-8
            assert(st:write(frame(1, "ab\xC3", false), frame(9, "p1"), frame(0, "\xA9cd", false),
                frame(0, "ef", true)))
            local fin, _, op, _, payload = core.ws_read_frame(st, 1000)
            assert.same({ true, 10, "p1" }, { fin, op, payload }) -- the pong first
            _, _, op, _, payload = core.ws_read_frame(st, 1000)
            assert.same({ 1, "abécdef" }, { op, payload })
            assert(st:write(frame(8, char(0x03, 0xe8))))
            assert.same({ 1000, "" }, { read_close(st) })
        end)
    end)

    it("answers pings by itself; ws:ping gets its pong without disturbing receive", function()
        run(function()
            local srv <close> = serve()
            local st <close> = raw_connect(srv)
            assert(st:write(frame(9, "are you there")))
            local fin, rsv, op, masked, payload = core.ws_read_frame(st, 1000)
            assert.same({ true, 0, 10, false, "are you there" }, { fin, rsv, op, masked, payload })
            local ws <close> = assert(loom.websocket(url(srv)))
            assert.is_true(ws:ping("x"))
            assert.is_true(ws:send("after the ping"))
            assert.same({ "after the ping", "text" }, { ws:receive() })
        end)
    end)

    it("let several tasks send while one receives; frames never interleave", function()
        run(function()
            local srv <close> = serve()
            local ws <close> = assert(loom.websocket(url(srv)))
            local senders, per = 4, 50
            local got = {}
            local reader = loom.spawn(function()
                for _ = 1, senders * per do
                    local msg = assert(ws:receive())
                    got[#got + 1] = msg
                end
            end)
            local tasks = {}
            for i = 1, senders do
                tasks[i] = function()
                    for j = 1, per do
                        -- big enough that a write often waits for the kernel
                        assert(ws:send(format("%d:%d:", i, j) .. string.rep("x", 40000)))
                    end
                end
            end
            loom.gather(table.unpack(tasks))
            assert.is_true((reader:join()))
            assert.equal(senders * per, #got)
            local last = {}
            for _, msg in ipairs(got) do
                local i, j = msg:match("^(%d+):(%d+):")
                i, j = tonumber(i), tonumber(j)
                assert.equal(40000, #msg - #msg:match("^%d+:%d+:"))
                assert.equal((last[i] or 0) + 1, j) -- each sender's messages in order
                last[i] = j
            end
        end)
    end)

    it("close() while another task is in receive(): the receiver sees the close", function()
        run(function()
            local srv <close>, ends = serve()
            -- close_timeout far past the hang guard: a close that waited for it cannot pass
            local ws = assert(loom.websocket(url(srv), { close_timeout = 60 }))
            local reader = loom.spawn(function() return ws:receive() end)
            loom.sleep(0) -- let the reader park in receive
            local t0 = loom.now()
            assert.is_true(ws:close(1000, "bye"))
            -- by the close handshake, not the close_timeout
            assert.is_true(loom.now() - t0 < timing.guard(0))
            assert.same({ true, nil, "closed: 1000" }, { reader:join() })
            assert.equal("closed: 1000 bye", ends:get())
        end)
    end)

    it("close() gives up after close_timeout when the peer never answers", function()
        run(function()
            local l <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(s)
                -- a fake server: accepts the upgrade, then stays silent
                local key
                repeat
                    local line = s:read_line()
                    key = key or (line and line:match("^Sec%-WebSocket%-Key: (.+)$"))
                until not line or line == ""
                s:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
                    "Sec-WebSocket-Accept: " .. core.ws_accept(key) .. "\r\n\r\n")
                s:read("a")
                s:close()
            end })
            local ws = assert(loom.websocket(format("ws://127.0.0.1:%d/", l.port), { close_timeout = 0.2 }))
            local t0 = loom.now()
            assert.is_true(ws:close())
            timing.within(loom.now() - t0, 0.15, 0.2, "ws:close()")
            assert.equal("closed: 1006 no close frame from the peer", ws.closed)
        end)
    end)

    it("reads a handshake header with a long run of blanks inside at once", function()
        run(function()
            local l <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(s)
                local key
                repeat
                    local line = s:read_line()
                    key = key or (line and line:match("^Sec%-WebSocket%-Key: (.+)$"))
                until not line or line == ""
                -- trimmed with "(.-)%s*$" this took seconds: quadratic in the blanks
                s:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
                    "X-Pad: a" .. string.rep(" ", 60000) .. "b \r\n" ..
                    "Sec-WebSocket-Accept: " .. core.ws_accept(key) .. "\r\n\r\n")
                s:read("a")
                s:close()
            end })
            -- CPU time, a guard against the quadratic trim (about 15 s of it here); linear
            -- takes milliseconds
            local t0 = os.clock()
            local ws = assert(loom.websocket(format("ws://127.0.0.1:%d/", l.port)))
            assert.is_true(os.clock() - t0 < 3, tostring(os.clock() - t0))
            ws:close(1000, "", 0)
        end)
    end)

    it("max_message: a message over it closes with 1009, whole or in fragments", function()
        run(function()
            local srv <close>, ends = serve()
            local ws = assert(loom.websocket(url(srv, "/small")))
            assert.is_true(ws:send(string.rep("a", 4096)))
            assert.equal(4096, #ws:receive())
            ws:send(string.rep("a", 4097))
            assert.same({ nil, "closed: 1009 message too big" }, { ws:receive() })
            assert.equal("closed: 1009 message too big", ends:get())

            local st <close> = raw_connect(srv, "/small")
            assert(st:write(frame(2, string.rep("b", 1000), false)))
            for _ = 1, 3 do assert(st:write(frame(0, string.rep("b", 1000), false))) end
            assert(st:write(frame(0, string.rep("b", 1000), true)))
            assert.same({ 1009, "message too big" }, { read_close(st) })
            assert.equal("closed: 1009 message too big", ends:get())
        end)
    end)

    it("a client's max_message guards it against a big server message", function()
        run(function()
            local srv <close> = serve()
            local ws = assert(loom.websocket(url(srv), { max_message = 100 }))
            ws:send(string.rep("z", 101))
            assert.same({ nil, "closed: 1009 message too big" }, { ws:receive() })
        end)
    end)

    it("max_message = math.huge means no limit (it used to raise in receive)", function()
        run(function()
            local srv <close> = serve()
            local ws <close> = assert(loom.websocket(url(srv), { max_message = math.huge }))
            assert(ws:send({ "a", "b", "c" }))
            assert.same({ "abc", "text" }, { ws:receive() })
        end)
    end)

    it("a handler that raises closes with 1011 and the server goes on", function()
        run(function()
            local srv <close> = serve(function(app)
                app:ws("/boom", function(ws)
                    ws:receive()
                    error("kaboom")
                end)
            end)
            local ws = assert(loom.websocket(url(srv, "/boom")))
            ws:send("x")
            assert.same({ nil, "closed: 1011 server error" }, { ws:receive() })
            local ok <close> = assert(loom.websocket(url(srv)))
            ok:send("still here")
            assert.equal("still here", ok:receive())
        end)
    end)

    it("middleware runs for the upgrade request", function()
        run(function()
            local srv <close> = serve(function(app)
                app:use(function(req, nxt)
                    if req.query.token ~= "s3cret" then return { status = 403, text = "no" } end
                    req.user = "ann"
                    return nxt(req)
                end)
                app:ws("/who", function(ws, req)
                    ws:send(req.user .. " from " .. req.remote)
                end)
            end)
            local ws, err = loom.websocket(url(srv, "/who"))
            assert.is_nil(ws)
            assert.equal("http: the server answered 403 instead of switching to websocket", err)
            ws = assert(loom.websocket(url(srv, "/who?token=s3cret")))
            assert.same({ "ann from 127.0.0.1", "text" }, { ws:receive() })
            assert.same({ nil, "closed: 1000" }, { ws:receive() })
        end)
    end)

    it("a plain GET to a websocket route gets 426; a bad key 400", function()
        run(function()
            local srv <close> = serve()
            local st <close> = assert(loom.connect("127.0.0.1", srv.port))
            st:write("GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            assert.equal("HTTP/1.1 426 Upgrade Required", st:read_line())
            local st2 <close> = assert(loom.connect("127.0.0.1", srv.port))
            st2:write("GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n" ..
                "Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n")
            assert.equal("HTTP/1.1 400 Bad Request", st2:read_line())
        end)
    end)

    it("negotiate a subprotocol", function()
        run(function()
            local srv <close> = serve(function(app)
                app:ws("/proto", function(ws) ws:send(tostring(ws.protocol)) end, { protocols = { "v2", "v1" } })
            end)
            local ws = assert(loom.websocket(url(srv, "/proto"), { protocols = { "v1", "v2" } }))
            assert.equal("v1", ws.protocol)
            assert.equal("v1", ws:receive())
            local ws2 = assert(loom.websocket(url(srv, "/proto"), { protocols = { "v9" } }))
            assert.is_nil(ws2.protocol)
            assert.equal("nil", ws2:receive())
        end)
    end)

    it("ws:send waits while the peer does not read (backpressure)", function()
        run(function()
            local sent, total = 0, 64
            local srv <close> = serve(function(app)
                app:ws("/flood", function(ws)
                    local chunk = string.rep("f", 1 << 20)
                    for _ = 1, total do
                        assert(ws:send(chunk, "binary"))
                        sent = sent + 1
                    end
                end)
            end)
            local ws <close> = assert(loom.websocket(url(srv, "/flood")))
            loom.sleep(0.3) -- the server writes as fast as it can; nobody reads
            assert.is_true(sent < total, "sends did not wait: " .. sent)
            for i = 1, total do
                local msg = assert(ws:receive())
                assert.equal(1 << 20, #msg, "message " .. i)
            end
            assert.equal(total, sent)
        end, { timeout = 30 })
    end)

    it("raise on misuse", function()
        run(function()
            assert.error_matches(function() loom.websocket("http://x/") end, "ws:// or wss:// URL expected")
            assert.error_matches(function() loom.websocket("ws://x/", { bogus = 1 }) end, "unknown option 'bogus'")
            assert.error_matches(function() loom.websocket("ws://x/", { timeout = "1" }) end, "option 'timeout'")
            local srv <close> = serve()
            local ws <close> = assert(loom.websocket(url(srv)))
            assert.error_matches(function() ws:send(42) end, "string expected")
            assert.error_matches(function() ws:send("x", "jpeg") end, "'text' or 'binary' expected")
            assert.error_matches(function() ws:close(1005) end, "close code")
            assert.error_matches(function() ws:close(1000, string.rep("r", 124)) end, "longer than 123")
            assert.error_matches(function() ws:close(1000, "bad \xff") end, "reason is not UTF%-8")
            -- what a caller's string could add to the upgrade request
            assert.error_matches(function() loom.websocket("ws://x/", { protocols = { "v1\r\nX-Evil: 1" } }) end,
                "option 'protocols': entry 1 is not a token")
            assert.error_matches(function() loom.websocket("ws://x/", { protocols = { "a, b" } }) end,
                "option 'protocols': entry 1 is not a token")
            assert.error_matches(function() loom.app():ws("/x", function() end, { protocols = { 1 } }) end,
                "option 'protocols': entry 1 is not a token")
            assert.error_matches(function() loom.websocket("ws://x/", { headers = { ["X Y"] = "1" } }) end,
                "invalid header X Y")
            assert.error_matches(function() loom.websocket("ws://x/", { max_message = -1 }) end,
                "option 'max_message': non%-negative number expected")
            assert.error_matches(function() loom.app():ws("/x", function() end, { max_message = 0 / 0 }) end,
                "option 'max_message'")
            assert.error_matches(function() loom.app():ws("/x", function() end, { max_msg = 1 }) end,
                "unknown option 'max_msg'")
        end)
    end)

    it("fail to connect with clear errors", function()
        run(function()
            local l = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function() end })
            local port = l.port
            l:close()
            local ws, err = loom.websocket(format("ws://127.0.0.1:%d/", port))
            assert.is_nil(ws)
            assert.matches("^connect: ", err)
            local app = loom.app()
            app:get("/plain", function() return "hi" end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            ws, err = loom.websocket(url(srv, "/plain"))
            assert.is_nil(ws)
            assert.equal("http: the server answered 200 instead of switching to websocket", err)
        end)
    end)
end)

-- Hostile frames from a raw client: the expected close code and reason, the handler's
-- receive reporting the same, and a well-behaved client served right after.
local hostile = {
    { "an unmasked client frame", function() return core.ws_frame(1, "hi", true, false) end,
        1002, "unmasked frame from client" },
    { "invalid UTF-8 in a text message", function() return frame(1, "bad \xff\xfe text") end,
        1007, "text is not UTF-8" },
    { "an overlong UTF-8 encoding", function() return frame(1, "\xC0\xAF") end, 1007, "text is not UTF-8" },
    { "a UTF-16 surrogate in UTF-8", function() return frame(1, "\xED\xA0\x80") end, 1007, "text is not UTF-8" },
    { "invalid UTF-8 across fragments", function()
        return frame(1, "ok\xC3", false) .. frame(0, "(", true)
    end, 1007, "text is not UTF-8" },
    { "a data opcode (3) that is reserved", function() return frame(3, "x") end, 1002, "unknown opcode" },
    { "a control opcode (11) that is reserved", function() return frame(11, "x") end, 1002, "unknown opcode" },
    { "RSV1 without an extension", function() return frame(1, "x", true, 0x80 | 0x40 | 1) end,
        1002, "reserved bits set" },
    { "RSV3 on a continuation", function()
        return frame(1, "a", false) .. frame(0, "b", true, 0x80 | 0x10)
    end, 1002, "reserved bits set" },
    { "a fragmented ping", function() return frame(9, "x", false) end, 1002, "bad control frame" },
    { "a ping over 125 bytes", function() return frame(9, string.rep("p", 126)) end, 1002, "bad control frame" },
    { "a continuation without a message", function() return frame(0, "x") end,
        1002, "continuation without a message" },
    { "a new message inside a fragmented one", function()
        return frame(1, "a", false) .. frame(1, "b")
    end, 1002, "message inside a message" },
    { "a close frame with one byte", function() return frame(8, "\3") end, 1002, "bad close frame" },
    { "a close code that may not be sent (1005)", function() return frame(8, char(0x03, 0xed)) end,
        1002, "bad close code" },
    { "a close code out of range (999)", function() return frame(8, char(0x03, 0xe7)) end,
        1002, "bad close code" },
    { "a close reason that is not UTF-8", function() return frame(8, char(0x03, 0xe8) .. "\xff") end,
        1007, "close reason is not UTF-8" },
    { "a frame claiming 2^63 bytes", function()
        return char(0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4)
    end, 1009, "message too big" },
    { "a message over max_message", function() return frame(2, string.rep("m", 5000)) end,
        1009, "message too big", "/small" },
    -- each continuation costs 64 bytes besides its payload: at most 4096 / 64 of them here
    { "a flood of empty continuation frames", function()
        return frame(1, "a", false) .. string.rep(frame(0, "", false), 100)
    end, 1009, "message too big", "/small" },
    { "a flood of 1-byte continuation frames", function()
        return frame(2, "a", false) .. string.rep(frame(0, "b", false), 100)
    end, 1009, "message too big", "/small" },
    { "a ping claiming 2^62 bytes (refused at its header)", function()
        return char(0x89, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4)
    end, 1002, "bad control frame" },
    { "a ping header claiming 200 bytes whose payload never comes", function()
        return char(0x89, 0x80 | 126, 0, 200, 1, 2, 3, 4) -- the old reader waited for it
    end, 1002, "bad control frame" },
    { "a close frame over 125 bytes", function() return frame(8, char(0x03, 0xe8) .. string.rep("r", 124)) end,
        1002, "bad control frame" },
    { "a frame length with its top bit set (RFC 6455 5.2)", function()
        return char(0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4)
    end, 1002, "bad frame length" },
    { "a close code 1015 (reserved)", function() return frame(8, char(0x03, 0xf7)) end, 1002, "bad close code" },
    { "a close code 5000", function() return frame(8, char(0x13, 0x88)) end, 1002, "bad close code" },
    { "a close reason cut inside a UTF-8 sequence", function() return frame(8, char(0x03, 0xe8) .. "ok\xC3") end,
        1007, "close reason is not UTF-8" },
}

describe("app:ws against hostile frames", function()
    for _, case in ipairs(hostile) do
        local what, bytes, code, reason, path = case[1], case[2], case[3], case[4], case[5]
        it(format("closes with %d on %s, and goes on serving", code, what), function()
            run(function()
                local srv <close>, ends = serve()
                local st <close> = raw_connect(srv, path)
                assert(st:write(bytes()))
                assert.same({ code, reason }, { read_close(st) })
                assert.equal(format("closed: %d %s", code, reason), ends:get())
                local ws <close> = assert(loom.websocket(url(srv)))
                assert.is_true(ws:send("fine"))
                assert.same({ "fine", "text" }, { ws:receive() })
            end)
        end)
    end

    -- A fake server that accepts the upgrade, then sends `bytes`; returns what it read back
    -- (the client's close frame) through the queue.
    local function fake_server(bytes, got)
        return assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(s)
            local key
            repeat
                local line = s:read_line()
                key = key or (line and line:match("^Sec%-WebSocket%-Key: (.+)$"))
            until not line or line == ""
            s:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
                "Sec-WebSocket-Accept: " .. core.ws_accept(key) .. "\r\n\r\n", bytes)
            s:settimeout(5)
            local fin, _, op, masked, payload = core.ws_read_frame(s, 1000)
            got:put({ fin, op, masked, payload and #payload >= 2 and byte(payload, 1) * 256 + byte(payload, 2) })
            s:close()
        end })
    end

    for _, case in ipairs({
        { "a masked frame from the server", core.ws_frame(1, "hi", true, true), 1002, "masked frame from server" },
        { "invalid UTF-8 from the server", core.ws_frame(1, "\xff", true, false), 1007, "text is not UTF-8" },
        { "a reserved opcode from the server", core.ws_frame(5, "", true, false), 1002, "unknown opcode" },
    }) do
        it("the client closes with " .. case[3] .. " on " .. case[1], function()
            run(function()
                local got = loom.queue()
                local l <close> = fake_server(case[2], got)
                local ws = assert(loom.websocket(format("ws://127.0.0.1:%d/", l.port)))
                assert.same({ nil, format("closed: %d %s", case[3], case[4]) }, { ws:receive() })
                assert.same({ true, 8, true, case[3] }, got:get()) -- a masked close frame with the code
            end)
        end)
    end

    it("a peer that vanishes mid-frame ends the handler with 1006", function()
        run(function()
            local srv <close>, ends = serve()
            local st = raw_connect(srv)
            local f = frame(2, string.rep("q", 1000))
            assert(st:write(f:sub(1, 500)))
            st:close()
            assert.matches("^closed: 1006 ", ends:get())
        end)
    end)
end)
