-- Request bodies taken from the read buffer. The engine leaves the bytes a read brought in
-- its buffer while the handler it starts in the same turn takes them (the body's piece as
-- a Lua string straight from there, the unparsed rest after a pause parsed from there) and
-- copies out only what is left when the read's handling ends. These requests are written
-- with loom.connect so that head, body and the next request come in one write (and mostly
-- in one read); each checks the bytes the handler got, their order, and what follows.
local loom = require "loom"
local run = require "support.run"
local testing = require "loom.testing"
local timing = require "support.timing"

local function serve(app, body)
    run(function()
        local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
        local _ <close> = run.defer(function() srv:close(0) end)
        return body(srv)
    end, { timeout = 30 })
end

local function open(srv)
    local st = assert(loom.connect("127.0.0.1", srv.port))
    return st, testing.reader(st)
end

-- n bytes where every byte value shows up and a shifted or repeated piece would not match
local function pattern(n)
    local t = {}
    for i = 1, n // 251 + 1 do t[i] = ("%08d"):format(i) .. string.rep(string.char(i % 256), 243) end
    return table.concat(t):sub(1, n)
end

local GET = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"

local function post(path, body)
    return ("POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"):format(path, #body) .. body
end

-- An app whose POST /chunks keeps each piece req:chunks() gave, /text reads req:text()
-- twice around a sleep, /ignore never reads the body; GET / answers "root".
local function body_app(seen)
    local app = loom.app{ max_body = 1024 * 1024 }
    app:post("/chunks", function(req)
        local pieces = {}
        for piece in req:chunks() do
            assert(#piece > 0, "an empty piece")
            pieces[#pieces + 1] = piece
        end
        seen[#seen + 1] = table.concat(pieces)
        return tostring(#seen[#seen])
    end)
    app:post("/text", function(req)
        local a = assert(req:text())
        loom.sleep(0.01) -- the read that brought the body has been handled since
        local b = assert(req:text())
        seen[#seen + 1] = a
        return a == b and "same" or "differ"
    end)
    app:post("/ignore", function() return "ignored" end)
    app:get("/", function() return "root" end)
    return app
end

-- An app whose POST /wait takes the body's first piece, then waits for `go` while the rest
-- arrives, then takes the rest: what it got lands in gate.got.
local function waiting_app(gate)
    local app = loom.app{ max_body = 1024 * 1024 }
    app:post("/wait", function(req)
        local pieces = {}
        local next_piece = req:chunks()
        pieces[1] = next_piece()
        gate.took:set()
        gate.go:wait() -- the rest comes (and is read) while this handler does not read
        for piece in next_piece do pieces[#pieces + 1] = piece end
        gate.got = table.concat(pieces)
        return tostring(#gate.got)
    end)
    app:get("/", function() return "root" end)
    return app
end

-- Writes first, waits until the handler took its first piece, writes rest (the rest of
-- the body and a GET), lets the server read it while the handler waits, then lets the
-- handler go on; checks both answers and the body the handler got.
local function take_then_wait(first, rest, body)
    local gate = { took = loom.event(), go = loom.event() }
    serve(waiting_app(gate), function(srv)
        local st, r = open(srv)
        local _ <close> = st
        assert(st:write(first))
        assert(loom.timeout(timing.guard(0), gate.took.wait, gate.took), "the first piece was not given")
        assert(st:write(rest .. GET))
        loom.sleep(0.05) -- time for the server to read it while the handler waits
        gate.go:set()
        assert.equal(tostring(#body), assert(r:response()).body)
        assert.equal("root", assert(r:response()).body)
        assert(gate.got == body, "the body the handler got differs")
    end)
end

describe("request bodies from the read buffer", function()
    it("a 64 KiB body read with req:chunks(), with the next request in the same write", function()
        local seen, body = {}, pattern(65536)
        serve(body_app(seen), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write(post("/chunks", body) .. post("/chunks", "tail") .. GET))
            assert.equal("65536", assert(r:response()).body)
            assert.equal("4", assert(r:response()).body)
            assert.equal("root", assert(r:response()).body)
            assert(seen[1] == body, "the 64 KiB body the handler got differs")
            assert.equal("tail", seen[2])
        end)
    end)

    it("a chunked body whose pieces came in one read: all of them, in order", function()
        local seen = {}
        serve(body_app(seen), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("POST /chunks HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                .. "3\r\nabc\r\n1\r\nd\r\n5\r\nefghi\r\n0\r\n\r\n" .. GET))
            assert.equal("9", assert(r:response()).body)
            assert.equal("root", assert(r:response()).body)
            assert.equal("abcdefghi", seen[1])
        end)
    end)

    it("req:text() gives the same body before and after the read is handled", function()
        local seen, body = {}, pattern(70000)
        serve(body_app(seen), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write(post("/text", body) .. post("/text", "short") .. GET))
            assert.equal("same", assert(r:response()).body)
            assert.equal("same", assert(r:response()).body)
            assert.equal("root", assert(r:response()).body)
            assert(seen[1] == body, "the body req:text() gave differs")
            assert.equal("short", seen[2])
        end)
    end)

    it("a piece taken, then the rest arriving while the handler waits: all of it, in order", function()
        local body = pattern(100000)
        local wire = post("/wait", body)
        take_then_wait(wire:sub(1, #wire - 60000), wire:sub(#wire - 60000 + 1), body)
    end)

    it("the same chunked: the chunks that come in one read while it waits stay in order", function()
        local chunk = function(s) return ("%x\r\n%s\r\n"):format(#s, s) end
        take_then_wait(
            "POST /wait HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" .. chunk("first"),
            chunk("second") .. chunk("third") .. chunk(pattern(30000)) .. "0\r\n\r\n",
            "firstsecondthird" .. pattern(30000))
    end)

    it("a 64 KiB body nobody reads is parsed away; the request after it is answered", function()
        serve(body_app({}), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write(post("/ignore", pattern(65536)) .. GET))
            assert.equal("ignored", assert(r:response()).body)
            assert.equal("root", assert(r:response()).body)
        end)
    end)

    it("300 pipelined requests of every kind, written in pieces of random sizes", function()
        -- bodies by Content-Length and chunked, read with req:chunks(), req:text() or not
        -- at all, and GETs, in pieces cut at random (a fixed seed), so that reads end
        -- anywhere: in a head, in a body, in a chunk's size line; every answer and every
        -- body a handler got is checked
        local seen = {}
        math.randomseed(13)
        local wire, want, bodies = {}, {}, {}
        for i = 1, 300 do
            local kind = math.random(5)
            local body = pattern(math.random(0, kind == 3 and 60000 or 150000)):sub(1 + i % 7)
            if kind == 1 or kind == 2 then
                wire[i] = post(kind == 1 and "/chunks" or "/text", body)
                want[i], bodies[#bodies + 1] = kind == 1 and tostring(#body) or "same", body
            elseif kind == 3 then
                wire[i], want[i] = post("/ignore", body), "ignored"
            elseif kind == 4 then
                local parts, at = {}, 1
                while at <= #body do
                    local piece = body:sub(at, at + math.random(1, 40000) - 1)
                    parts[#parts + 1] = ("%x\r\n%s\r\n"):format(#piece, piece)
                    at = at + #piece
                end
                wire[i] = "POST /chunks HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .. table.concat(parts) .. "0\r\n\r\n"
                want[i], bodies[#bodies + 1] = tostring(#body), body
            else
                wire[i], want[i] = GET, "root"
            end
        end
        local all = table.concat(wire)
        serve(body_app(seen), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            local writer = loom.spawn(function()
                local at = 1
                while at <= #all do
                    local n = math.random(1, 200000)
                    assert(st:write(all:sub(at, at + n - 1)))
                    at = at + n
                    if math.random(3) == 1 then loom.sleep(0) end
                end
            end)
            for i = 1, #want do
                local res = assert(r:response())
                assert.equal(want[i], res.body, "answer " .. i)
            end
            writer:join()
        end)
        assert.equal(#bodies, #seen)
        for i = 1, #bodies do assert(seen[i] == bodies[i], "body " .. i .. " differs") end
    end)

    it("a websocket's first frame in the write of its upgrade request reaches the handler", function()
        local app = loom.app()
        app:ws("/ws", function(ws)
            local msg = assert(ws:receive())
            assert(ws:send("echo: " .. msg))
        end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            local mask, text = "\1\2\3\4", "hello"
            local masked = text:gsub("()(.)", function(i, ch)
                return string.char(ch:byte() ~ mask:byte((i - 1) % 4 + 1))
            end)
            assert(st:write("GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                .. "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                .. "\x81" .. string.char(0x80 | #text) .. mask .. masked))
            assert.equal("HTTP/1.1 101 Switching Protocols", assert(r:line()))
            repeat local line = assert(r:line()) until line == ""
            local reply = "echo: hello"
            assert.equal("\x81" .. string.char(#reply) .. reply, assert(r:bytes(2 + #reply)))
        end)
    end)
end)
