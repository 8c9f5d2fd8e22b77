-- The server engine against what a handler or a client may get wrong (issue 18): headers
-- and statuses a handler gives that would split or end the answer, a streamed answer's
-- Content-Length held to what is written, bodies drained and answers sent under a deadline,
-- requests after an Upgrade or a CONNECT, 100 Continue and HTTP/1.0, the access log's
-- escaping, timeouts set to 0, and one Date header.
--
-- Everything talks raw HTTP over loom.connect, so what reaches the wire is what is checked.
-- "The server closes" is read as the end of the stream within GUARD seconds: a hang guard,
-- far past what the code under test needs; the old code kept those connections open.
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"
local testing = require "loom.testing"

local SRC = os.getenv("LOOM_SRC") or "."
local LOOM_BIN = os.getenv("LOOM_BIN") or "build/loom"
local GUARD = 5

-- Runs body(srv) with app listening on 127.0.0.1, port 0 (GET /ok answers "ok").
local function serve(app, body, opts)
    app:get("/ok", function() return "ok" end)
    run(function()
        local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
        local _ <close> = run.defer(function() srv:close(0) end)
        return body(srv)
    end, opts)
end

local function open(srv)
    local st = assert(loom.connect("127.0.0.1", srv.port))
    return st, testing.reader(st)
end

local function get(path, extra)
    return "GET " .. path .. " HTTP/1.1\r\nHost: t\r\n" .. (extra or "") .. "\r\n"
end

-- One response on r, within GUARD seconds.
local function response(r, method)
    local res, err = loom.timeout(GUARD, function() return r:response(method) end)
    assert(res, "no response: " .. tostring(err))
    return res
end

-- The head's lines, status line first, raw.
local function head_lines(r)
    local lines = {}
    repeat
        local line = assert(loom.timeout(GUARD, function() return r:line() end))
        lines[#lines + 1] = line
    until line == ""
    return lines
end

-- What the server still sends, up to its close; fails when it keeps the connection open.
local function until_closed(r, what)
    local rest, err = loom.timeout(GUARD, function() return r:rest() end)
    assert(rest, (what or "the server did not close the connection") .. " (" .. tostring(err) .. ")")
    return rest
end

-- The connection still serves: a request on it is answered.
local function still_serves(st, r)
    assert(st:write(get("/ok")))
    local res = response(r)
    assert.equal(200, res.status)
    assert.equal("ok", res.body)
end

local function wait_until(cond, what, secs)
    local deadline = loom.now() + (secs or GUARD)
    while not cond() do
        if loom.now() > deadline then error("timed out waiting for " .. what, 2) end
        loom.sleep(0.005)
    end
end

local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

-- Runs a shell command beside the loop (its output to files); waits for it to end.
local function sh(cmd)
    local p = assert(core.process_spawn("/bin/sh", { "-c", cmd }))
    return p:wait()
end

describe("server: headers a handler gives", function()
    local bad = {
        ["/crlf"] = { ["x-a"] = "v\r\nx-injected: 1" },
        ["/lf"] = { ["x-a"] = "v\nx-injected: 1" },
        ["/nul"] = { ["x-a"] = "v\0w" },
        ["/ctl"] = { ["x-a"] = "v\1w" },
        ["/del"] = { ["x-a"] = "v\127w" },
        ["/name"] = { ["x a"] = "v" },
        ["/name-crlf"] = { ["x-a\r\nx-injected"] = "1" },
        ["/list"] = { ["set-cookie"] = { "a=1", "b=2\r\nx-injected: 1" } },
        ["/list-type"] = { ["set-cookie"] = { "a=1", true } },
    }

    it("with CR, LF, NUL or another control byte, or a name that is no token: 500", function()
        local app = loom.app()
        for path, headers in pairs(bad) do
            app:get(path, function() return { headers = headers, body = "not sent" } end)
        end
        app:get("/tab", function() return { headers = { ["x-a"] = "a\tb" }, body = "tab" } end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            for path in pairs(bad) do
                assert(st:write(get(path)))
                local res = response(r)
                assert.equal(500, res.status, path)
                assert.is_nil(res.headers["x-injected"], path)
                assert.not_equal("not sent", res.body, path)
            end
            assert(st:write(get("/tab")))
            local res = response(r)
            assert.equal(200, res.status)
            assert.equal("a\tb", res.headers["x-a"])
            still_serves(st, r)
        end)
    end)

    it("to req:stream: it raises, the answer is 500", function()
        local app = loom.app()
        local errs = {}
        for path, headers in pairs(bad) do
            app:get(path, function(req)
                local ok, err = pcall(req.stream, req, { headers = headers })
                errs[path] = not ok and err or "no error"
                error(err, 0)
            end)
        end
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            for path in pairs(bad) do
                assert(st:write(get(path)))
                local res = response(r)
                assert.equal(500, res.status, path)
                assert.is_nil(res.headers["x-injected"], path)
                assert.matches("stream: invalid header", errs[path], nil, true)
            end
            still_serves(st, r)
        end)
    end)
end)

describe("server: statuses a handler gives", function()
    it("1xx, below 200, over 999 or not an integer: 500, and the connection goes on", function()
        local app = loom.app()
        local statuses = { 100, 101, 103, 199, 99, 0, -200, 1000, 200.5 }
        for i, status in ipairs(statuses) do
            app:get("/s" .. i, function() return { status = status } end)
        end
        app:get("/stream103", function(req) req:stream{ status = 103 } end)
        app:get("/stream101", function(req) req:stream{ status = 101 } end)
        app:get("/s600", function() return { status = 600, body = "x" } end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            for i, status in ipairs(statuses) do
                assert(st:write(get("/s" .. i)))
                local res = response(r)
                assert.equal(500, res.status, "status " .. status)
                assert.same({}, res.interim, "status " .. status)
            end
            for _, path in ipairs{ "/stream103", "/stream101" } do
                assert(st:write(get(path)))
                local res = response(r)
                assert.equal(500, res.status, path)
                assert.same({}, res.interim, path)
            end
            assert(st:write(get("/s600")))
            assert.equal(600, response(r).status)
            still_serves(st, r)
        end)
    end)
end)

describe("server: a streamed answer's content-length", function()
    local function stream_app(results)
        local app = loom.app()
        -- /w/<declared>/<piece>/<piece>...: declares a length, writes the pieces
        app:get("/w/{spec*}", function(req)
            local declared, pieces = req.params.spec:match("^([^/]*)/?(.*)$")
            local out = assert(req:stream{ headers = { ["content-length"] = declared } })
            local got = {}
            for piece in pieces:gmatch("[^/]+") do got[#got + 1] = { out:write(piece) } end
            results[#results + 1] = got
        end)
        return app
    end

    it("a write past it sends nothing of itself, fails with 'limit: ...', closes", function()
        local results = {}
        serve(stream_app(results), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write(get("/w/5/hel/lo-world")))
            local lines = head_lines(r)
            assert.equal("HTTP/1.1 200 OK", lines[1])
            assert.equal("hel", until_closed(r))
            assert.same({ true }, results[1][1])
            assert.is_nil(results[1][2][1])
            assert.matches("^limit: ", results[1][2][2])
        end)
    end)

    it("a body that ends short of it closes the connection", function()
        local results = {}
        serve(stream_app(results), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write(get("/w/10/hello")))
            head_lines(r)
            assert.equal("hello", until_closed(r))
            assert.same({ { true } }, results[1])
        end)
    end)

    it("a body of exactly that length keeps the connection", function()
        local results = {}
        serve(stream_app(results), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write(get("/w/5/hel/lo")))
            local res = response(r)
            assert.equal("5", res.headers["content-length"])
            assert.equal("hello", res.body)
            still_serves(st, r)
        end)
    end)

    it("must be digits that fit in 64 bits: anything else raises, the answer is 500", function()
        local app = loom.app()
        local values = { "abc", "5 ", " 5", "-1", "5, 5", "0x10", "", ("1"):rep(40),
            "18446744073709551616", "5\r\nx-injected: 1", -1, 2.5 }
        local errs = {}
        for i, v in ipairs(values) do
            app:get("/v" .. i, function(req)
                local ok, err = pcall(req.stream, req, { headers = { ["content-length"] = v } })
                errs[i] = not ok and err or "no error"
                if ok then return end
                error(err, 0)
            end)
        end
        app:get("/num", function(req)
            local out = assert(req:stream{ headers = { ["content-length"] = 3 } })
            out:write("abc")
        end)
        app:get("/max", function(req)
            assert(req:stream{ headers = { ["Content-Length"] = "18446744073709551615" } })
            error("stop", 0) -- the body cannot be sent: the connection is cut
        end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            for i, v in ipairs(values) do
                assert(st:write(get("/v" .. i)))
                local res = response(r)
                assert.equal(500, res.status, ("%q"):format(v))
                assert.matches("invalid content-length", errs[i], nil, true)
            end
            assert(st:write(get("/num")))
            local res = response(r)
            assert.equal("abc", res.body)
            still_serves(st, r)
            assert(st:write(get("/max")))
            local lines = head_lines(r)
            assert.equal("HTTP/1.1 200 OK", lines[1])
            local cls = 0
            for _, line in ipairs(lines) do
                if line:lower():match("^content%-length:") then
                    cls = cls + 1
                    assert.equal("content-length: 18446744073709551615", line:lower())
                end
            end
            assert.equal(1, cls)
        end)
    end)

    it("a 204 or 304 stream has no body: a write fails, nothing is sent", function()
        local app, results = loom.app(), {}
        for _, status in ipairs{ 204, 304 } do
            app:get("/" .. status, function(req)
                local out = assert(req:stream{ status = status })
                results[status] = { out:write("body") }
            end)
        end
        serve(app, function(srv)
            for _, status in ipairs{ 204, 304 } do
                local st, r = open(srv)
                local _ <close> = st
                assert(st:write(get("/" .. status)))
                assert.equal(status, response(r).status)
                assert.equal("", until_closed(r))
                assert.is_nil(results[status][1])
                assert.matches("^limit: ", results[status][2])
            end
        end)
    end)

    it("a whole answer's content-length header is the body's, whatever the handler said", function()
        local app = loom.app()
        app:get("/lies", function()
            return { headers = { ["content-length"] = "100" }, body = "short" }
        end)
        app:get("/lies-less", function()
            return { headers = { ["content-length"] = "2" }, body = "longer" }
        end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write(get("/lies") .. get("/lies-less")))
            local res = response(r)
            assert.equal("5", res.headers["content-length"])
            assert.equal("short", res.body)
            res = response(r)
            assert.equal("6", res.headers["content-length"])
            assert.equal("longer", res.body)
            still_serves(st, r)
        end)
    end)

    it("app:static: a file that shrinks as it is sent ends the connection", function()
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p " .. dir))
        local path = dir .. "/big.bin"
        local size = 32 * 1024 * 1024
        local f = assert(io.open(path, "wb"))
        f:write(("0123456789abcdef"):rep(size // 16))
        f:close()
        local _ <close> = setmetatable({}, { __close = function()
            os.remove(path)
            os.remove(dir)
        end })
        local app = loom.app()
        app:static("/files", dir)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write(get("/files/big.bin")))
            local lines = head_lines(r)
            assert.equal("HTTP/1.1 200 OK", lines[1])
            assert(r:bytes(65536))
            assert(io.open(path, "wb")):close() -- truncated while the handler sends it
            local rest = until_closed(r, "the connection stayed open after the short body")
            assert.is_true(65536 + #rest < size)
            st:close()
            local st2, r2 = open(srv)
            local _ <close> = st2
            still_serves(st2, r2)
        end, { timeout = 30 })
    end)
end)

describe("server: deadlines after the handler", function()
    it("an unread body is drained for body_timeout at most, then the connection closes", function()
        local app = loom.app{ body_timeout = 0.3 }
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            local t0 = loom.now()
            assert(st:write("POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
                .. ("x"):rep(10)))
            local res = response(r)
            assert.equal(404, res.status)
            assert.equal("", until_closed(r))
            assert.is_true(loom.now() - t0 >= 0.29) -- body_timeout counts from the answer
            wait_until(function() return srv.connections == 0 end, "the connection to go")
        end)
    end)

    it("an unread body that comes whole keeps the connection", function()
        -- the rest comes at once: body_timeout is only a guard here
        local app = loom.app{ body_timeout = 30 }
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("POST /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
                .. ("x"):rep(10)))
            assert.equal(404, response(r).status)
            assert(st:write(("x"):rep(990)))
            still_serves(st, r)
        end)
    end)

    it("an unread body the server will not drain (chunked, or over 64 KiB): the answer says close", function()
        local app = loom.app{ max_body = 1 << 20 }
        serve(app, function(srv)
            for _, body in ipairs({
                "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                "Content-Length: " .. (100 * 1024) .. "\r\n\r\n" .. ("x"):rep(10),
            }) do
                local st, r = open(srv)
                local _ <close> = st
                assert(st:write("PUT /nowhere HTTP/1.1\r\nHost: t\r\n" .. body))
                local res = response(r)
                assert.equal(404, res.status)
                assert.equal("close", res.headers.connection) -- it used to promise keep-alive
                assert.equal("", until_closed(r))
            end
        end)
    end)

    it("a whole answer to a client that reads nothing is cut after send_timeout", function()
        local app = loom.app{ send_timeout = 0.3 }
        local size = 16 * 1024 * 1024
        local answered = loom.event()
        local big = ("z"):rep(size)
        app:get("/big", function()
            answered:set()
            return big
        end)
        serve(app, function(srv)
            local st = assert(loom.connect("127.0.0.1", srv.port))
            local _ <close> = st
            local t0 = loom.now()
            assert(st:write(get("/big")))
            answered:wait()
            wait_until(function() return srv.connections == 0 end,
                "the server to drop the client that reads nothing")
            assert.is_true(loom.now() - t0 >= 0.29) -- send_timeout counts from the last piece
        end)
    end)

    it("a client that reads slowly but steadily gets the whole answer", function()
        -- longer in all than send_timeout, but never that long without taking a piece (a
        -- 256 KiB piece is 4 reads, 80 ms: send_timeout leaves a loaded machine room)
        local app = loom.app{ send_timeout = 2 }
        local size = 8 * 1024 * 1024
        local big = ("z"):rep(size)
        app:get("/big", function() return big end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            local t0 = loom.now()
            assert(st:write(get("/big")))
            local lines = head_lines(r)
            assert.equal("HTTP/1.1 200 OK", lines[1])
            for _ = 1, size // 65536 do -- 128 reads of 64 KiB, 20 ms apart
                assert.equal(65536, #assert(r:bytes(65536)))
                loom.sleep(0.02)
            end
            assert.is_true(loom.now() - t0 > 2)
        end, { timeout = 30 })
    end)
end)

describe("server: after an Upgrade or a CONNECT answered as any request", function()
    local upgrades = {
        websocket = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
            .. "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        h2c = "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            .. "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n",
    }
    for name, extra in pairs(upgrades) do
        it("(" .. name .. ") the next request on the connection is answered", function()
            serve(loom.app(), function(srv)
                local st, r = open(srv)
                local _ <close> = st
                assert(st:write(get("/ok", extra)))
                assert.equal(200, response(r).status)
                still_serves(st, r)
                assert(st:write(get("/ok", extra) .. get("/ok"))) -- pipelined behind it too
                assert.equal(200, response(r).status)
                assert.equal(200, response(r).status)
            end)
        end)
    end

    it("(curl --http2 on plain HTTP, two URLs on one connection) both are answered", function()
        serve(loom.app(), function(srv)
            local url = "http://127.0.0.1:" .. srv.port .. "/ok"
            local path = os.tmpname()
            local _ <close> = run.defer(function() os.remove(path) end)
            sh(("curl -sS --max-time %d --http2 -w ' %%{http_code} %%{num_connects}\\n' %s %s >%s 2>&1")
                :format(GUARD, url, url, path))
            local out = read_file(path)
            assert.equal("ok 200 1\nok 200 0\n", out) -- the second reused the connection
        end)
    end)

    it("(CONNECT) the answer closes the connection", function()
        serve(loom.app(), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n" .. get("/ok")))
            local res = response(r)
            assert.equal("close", res.headers.connection)
            assert.equal("", until_closed(r))
        end)
    end)
end)

describe("server: Expect: 100-continue", function()
    it("is ignored in an HTTP/1.0 request (RFC 9110 10.1.1)", function()
        local app = loom.app()
        app:post("/echo", function(req) return assert(req:text()) end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"))
            local all = until_closed(r)
            assert.matches("^HTTP/1%.1 200 OK\r\n", all)
            assert.is_nil(all:find("100 Continue", 1, true))
            assert.matches("\r\n\r\nhello$", all)
        end)
    end)

    it("is still answered in an HTTP/1.1 request", function()
        local app = loom.app()
        app:post("/echo", function(req) return assert(req:text()) end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                .. "Content-Length: 5\r\n\r\n"))
            assert.equal("HTTP/1.1 100 Continue", assert(r:line()))
            assert.equal("", assert(r:line()))
            assert(st:write("hello"))
            assert.equal("hello", response(r).body)
        end)
    end)
end)

-- The pauses below check that something does not happen (no event announces "not closed").
-- They hold on a slow machine: server and client share one loop, so a timer a server armed
-- with 0 s (taken as "at once") fires no later than the pause's own 0.1 s timer, and the
-- write or the response after the pause then fails; a longer pause would prove no more.
describe("server: timeouts set to 0 mean no limit", function()
    it("header_timeout = 0 and keepalive_timeout = 0: requests are answered after a pause", function()
        local app = loom.app{ header_timeout = 0, keepalive_timeout = 0 }
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            loom.sleep(0.1) -- a connection that waits is not closed at once
            assert(st:write("GET /ok HTTP/1.1\r\n"))
            loom.sleep(0.1) -- nor one whose head comes in pieces
            assert(st:write("Host: t\r\n\r\n"))
            assert.equal("ok", response(r).body)
            loom.sleep(0.1) -- nor a kept-alive one
            still_serves(st, r)
        end)
    end)

    it("body_timeout = 0: a body that comes late is read", function()
        local app = loom.app{ body_timeout = 0 }
        app:post("/echo", function(req) return assert(req:text()) end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhe"))
            loom.sleep(0.1)
            assert(st:write("llo"))
            assert.equal("hello", response(r).body)
        end)
    end)

    it("send_timeout = 0: a streamed write waits for a slow client", function()
        local app = loom.app{ send_timeout = 0 }
        local size = 16 * 1024 * 1024
        local result
        app:get("/stream", function(req)
            local out = assert(req:stream{ headers = { ["content-length"] = size } })
            result = { out:write(("s"):rep(size)) }
        end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write(get("/stream")))
            local res = response(r)
            assert.equal(size, #res.body)
            assert.same({ true }, result)
        end, { timeout = 30 })
    end)
end)

describe("server: Date", function()
    it("a handler's own date header is the only one sent", function()
        local app = loom.app()
        local date = "Tue, 01 Jan 2030 00:00:00 GMT"
        app:get("/whole", function() return { headers = { Date = date }, body = "x" } end)
        app:get("/stream", function(req)
            local out = assert(req:stream{ headers = { date = date } })
            out:write("x")
        end)
        app:get("/none", function() return "x" end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            for _, path in ipairs{ "/whole", "/stream", "/none" } do
                assert(st:write(get(path)))
                local dates = {}
                for _, line in ipairs(head_lines(r)) do
                    local v = line:match("^[Dd][Aa][Tt][Ee]:%s*(.*)$")
                    if v then dates[#dates + 1] = v end
                end
                assert.equal(1, #dates, path)
                if path ~= "/none" then assert.equal(date, dates[1], path) end
                local body = path == "/stream" and "1\r\nx\r\n0\r\n\r\n" or "x"
                assert.equal(body, r:bytes(#body))
            end
        end)
    end)
end)

describe("server: log lines", function()
    -- The fixture app runs in a process of its own, its stdout (the access log) read here.
    it("escape '\"', '\\', control bytes and bytes past 0x7e as \\xHH (as nginx)", function()
        local out_path, err_path = os.tmpname(), os.tmpname()
        local _ <close> = run.defer(function()
            os.remove(out_path)
            os.remove(err_path)
        end)
        local ua, ua_logged = "x\"y\\z\255", "x\\x22y\\x5Cz\\xFF"
        local requests = {
            { "/a\"b", 'GET /a\\x22b HTTP/1.1' },
            { "/a\\x22\"", 'GET /a\\x5Cx22\\x22 HTTP/1.1' },
            { "/caf\xc3\xa9", 'GET /caf\\xC3\\xA9 HTTP/1.1' },
            { "/bad-header", 'GET /bad-header HTTP/1.1' },
            { "/interim?\"", 'GET /interim?\\x22 HTTP/1.1' },
        }
        run(function()
            local cmd = ("exec %s %s/spec/fixtures/server_log_app.lua >%s 2>%s")
                :format(LOOM_BIN, SRC, out_path, err_path)
            local p = assert(core.process_spawn("/bin/sh", { "-c", cmd }))
            local exited = false
            local _ <close> = run.defer(function()
                if not exited then
                    p:kill()
                    p:wait()
                end
            end)
            local port -- the fixture's first line; no event says it is written
            wait_until(function()
                port = tonumber(read_file(out_path):match("^(%d+)\n"))
                return port
            end, "the fixture's port")
            local st = assert(loom.connect("127.0.0.1", port))
            local _ <close> = st
            local r = testing.reader(st)
            for _, q in ipairs(requests) do
                assert(st:write("GET " .. q[1] .. " HTTP/1.1\r\nHost: t\r\n"
                    .. "User-Agent: " .. ua .. "\r\nReferer: r\"\r\n\r\n"))
                response(r)
            end
            assert(st:write(get("/quit")))
            assert.equal("bye", response(r).body)
            assert.equal(0, p:wait())
            exited = true
        end)
        local log = read_file(out_path):gsub("^%d+\n", "")
        local errors = read_file(err_path)
        local lines = {}
        for line in log:gmatch("[^\n]+") do lines[#lines + 1] = line end
        assert.equal(#requests + 1, #lines) -- and /quit's
        for i, q in ipairs(requests) do
            -- host - - [time] "request line" status bytes "referer" "user-agent", nothing more
            local req_line, status, ref, ua_field = lines[i]:match(
                '^%S+ %- %- %[[^%]]+%] "([^"]*)" (%d+) %d+ "([^"]*)" "([^"]*)"$')
            assert(req_line, "not one log line of the expected fields: " .. lines[i])
            assert.equal(q[2], req_line)
            assert.equal("r\\x22", ref)
            assert.equal(ua_logged, ua_field)
            if q[1] == "/bad-header" or q[1]:match("^/interim") then assert.equal("500", status) end
        end
        -- stderr says why each 500 was given, with the target escaped too
        assert.matches("loom: handler for GET /bad-header returned an invalid response: "
            .. "invalid header value", errors, nil, true)
        assert.matches("loom: handler for GET /interim?\\x22 returned an invalid response: "
            .. "invalid status", errors, nil, true)
    end)
end)
