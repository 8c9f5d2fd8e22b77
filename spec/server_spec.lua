-- The HTTP/1.1 server engine over raw loopback sockets: framing, strict parsing (what a
-- request smuggler would try), every status the engine answers by itself, limits,
-- timeouts, keep-alive, pipelining, Expect: 100-continue, HTTP/1.0, HEAD, and srv:close.
-- Requests are written byte for byte with loom.connect; responses are read with the
-- strict reader of loom.testing (a bare LF or a bad header line from the server fails).
-- Timeouts are set to 0.3 s, far from the defaults (30 s, 75 s, 10 s), and checked by their
-- lower bound (0.28 s) and the order of events; the upper bound is only a guard against a
-- hang (support.timing), as a loaded machine adds seconds to any wait.
local loom = require "loom"
local run = require "support.run"
local testing = require "loom.testing"
local timing = require "support.timing"

-- Runs body(srv) in a task with app listening on 127.0.0.1, port 0; the server is closed
-- when the body ends, however it ends.
local function serve(app, body, opts)
    run(function()
        local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
        local _ <close> = run.defer(function() srv:close(0) end)
        return body(srv)
    end, opts)
end

-- A raw connection and a reader over it.
local function open(srv)
    local st = assert(loom.connect("127.0.0.1", srv.port))
    return st, testing.reader(st)
end

-- The server closes the connection (within `secs`) without sending anything more.
local function assert_closed(r, secs)
    local rest = loom.timeout(secs or 3, function() return r:rest() end)
    assert(rest ~= nil, "the server kept the connection open")
    assert.equal("", rest)
end

-- The connection is still open: nothing arrives and it does not end within `secs`.
local function assert_open(st, secs)
    local got, err = loom.timeout(secs, function() return st:read() end)
    assert.is_nil(got)
    assert.equal("timeout", err)
end

-- One request on a fresh connection; returns the response (the connection is closed).
local function exchange(srv, wire, method)
    local st, r = open(srv)
    local _ <close> = st
    assert(st:write(wire))
    local res = assert(r:response(method))
    return res, r
end

-- A request that must be refused with `status` and a closed connection.
local function assert_refused(srv, wire, status)
    local res, r = exchange(srv, wire)
    assert.equal(status, res.status)
    assert.equal("close", res.headers.connection)
    assert.equal("text/plain; charset=utf-8", res.headers["content-type"])
    assert_closed(r)
    return res
end

local function echo_app(opts)
    local app = loom.app(opts)
    local hits = { n = 0 }
    app:get("/", function() hits.n = hits.n + 1; return "root" end)
    app:post("/echo", function(req)
        hits.n = hits.n + 1
        local body, err = req:text()
        if not body then return { status = 299, text = err } end
        return body
    end)
    return app, hits
end

local GET = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"

describe("server: answers", function()
    it("carries Date and Content-Length, and keeps the connection alive", function()
        serve(echo_app(), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            for _ = 1, 3 do
                assert(st:write(GET))
                local res = assert(r:response())
                assert.equal(200, res.status)
                assert.equal("1.1", res.version)
                assert.equal("4", res.headers["content-length"])
                assert.equal("text/plain; charset=utf-8", res.headers["content-type"])
                assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", res.headers.date)
                assert.is_nil(res.headers.connection)
                assert.equal("root", res.body)
            end
        end)
    end)

    it("answers 404 for a path no route matches", function()
        serve(echo_app(), function(srv)
            local res = exchange(srv, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
            assert.equal(404, res.status)
            assert.equal("Not Found", res.body)
            assert.equal("9", res.headers["content-length"])
        end)
    end)

    it("answers 405 with Allow when the path has routes for other methods", function()
        local app = loom.app()
        app:get("/thing", function() return "g" end)
        app:post("/thing", function() return "p" end)
        app:delete("/thing", function() return "d" end)
        serve(app, function(srv)
            local res = exchange(srv, "PUT /thing HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
            assert.equal(405, res.status)
            assert.equal("DELETE, GET, HEAD, POST", res.headers.allow)
            assert.equal("Method Not Allowed", res.body)
        end)
    end)

    it("answers 500 with a plain body when a handler raises, and the connection stays usable", function()
        local app = loom.app()
        app:get("/boom", function() error({ secret = "do not show" }) end)
        app:get("/boom2", function() error("secret detail /etc/passwd") end)
        app:get("/ok", function() return "fine" end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            for _, path in ipairs({ "/boom", "/boom2" }) do
                assert(st:write("GET " .. path .. " HTTP/1.1\r\nHost: t\r\n\r\n"))
                local res = assert(r:response())
                assert.equal(500, res.status)
                assert.equal("Internal Server Error", res.body)
                assert.equal("text/plain; charset=utf-8", res.headers["content-type"])
                assert.is_nil(res.headers.connection)
            end
            assert(st:write("GET /ok HTTP/1.1\r\nHost: t\r\n\r\n"))
            local res = assert(r:response())
            assert.equal(200, res.status)
            assert.equal("fine", res.body)
        end)
    end)

    it("answers 500 when a handler returns something that is not a response", function()
        local app = loom.app()
        app:get("/num", function() return 42 end)
        app:get("/badheader", function() return { status = 200, headers = { ["x-a"] = "1\r\nx-b: 2" }, body = "" } end)
        app:get("/badstatus", function() return { status = 1000, body = "" } end)
        serve(app, function(srv)
            for _, path in ipairs({ "/num", "/badheader", "/badstatus" }) do
                local res = exchange(srv, "GET " .. path .. " HTTP/1.1\r\nHost: t\r\n\r\n")
                assert.equal(500, res.status, path)
                assert.equal("Internal Server Error", res.body)
                assert.is_nil(res.headers["x-b"])
            end
        end)
    end)

    it("routes a request target in absolute form by its path", function()
        local app = loom.app()
        app:get("/a/b", function(req) return req.path .. " " .. req.query.x .. " " .. req.target end)
        app:get("/", function(req) return "root " .. req.path end)
        serve(app, function(srv)
            local res = exchange(srv, "GET http://t:80/a/b?x=1 HTTP/1.1\r\nHost: t\r\n\r\n")
            assert.equal(200, res.status)
            assert.equal("/a/b 1 http://t:80/a/b?x=1", res.body)
            res = exchange(srv, "GET HTTP://t HTTP/1.1\r\nHost: t\r\n\r\n")
            assert.equal("root /", res.body)
            res = exchange(srv, "GET https://t?q HTTP/1.1\r\nHost: t\r\n\r\n")
            assert.equal("root /", res.body)
        end)
    end)

    it("answers 505 for an HTTP version other than 1.x", function()
        serve(echo_app(), function(srv)
            assert_refused(srv, "GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505)
        end)
    end)
end)

describe("server: malformed requests get 400 and a closed connection", function()
    local cases = {
        { "garbage", "HELLO\r\n\r\n" },
        { "a space in the target", "GET /a b HTTP/1.1\r\nHost: t\r\n\r\n" },
        { "a space before the colon", "GET / HTTP/1.1\r\nHost : t\r\n\r\n" },
        { "a NUL in a header value", "GET / HTTP/1.1\r\nHost: t\r\nX: a\0b\r\n\r\n" },
        { "a bare CR", "GET / HTTP/1.1\r\nHost: t\rX: y\r\n\r\n" },
        { "HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX: y\r\n\r\n" },
        { "a second Host", "GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n" },
        { "a second Host, other case", "GET / HTTP/1.1\r\nHost: t\r\nhOsT: t\r\n\r\n" },
        { "obs-fold", "GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n" },
        { "obs-fold with a tab", "GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tb\r\n\r\n" },
        { "whitespace before the first header", "GET / HTTP/1.1\r\n Host: t\r\n\r\n" },
        { "bare LF line endings", "GET / HTTP/1.1\nHost: t\n\n" },
        { "a bare LF after the request line", "GET / HTTP/1.1\nHost: t\r\n\r\n" },
        { "a bare LF after a header", "GET / HTTP/1.1\r\nHost: t\nX: y\r\n\r\n" },
        { "a bare LF ending the head", "GET / HTTP/1.1\r\nHost: t\r\n\n" },
        { "Content-Length with Transfer-Encoding",
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" },
        { "Transfer-Encoding with Content-Length",
            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n" },
        { "differing Content-Lengths",
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd" },
        { "a Content-Length list", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 4\r\n\r\nabcd" },
        { "a signed Content-Length", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc" },
        { "a hex Content-Length", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0x3\r\n\r\nabc" },
        { "a Transfer-Encoding other than chunked last",
            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n" },
        { "Transfer-Encoding: gzip alone", "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nabc" },
    }
    for _, case in ipairs(cases) do
        it(case[1], function()
            local app, hits = echo_app()
            serve(app, function(srv)
                local res = assert_refused(srv, case[2], 400)
                assert.equal("Bad Request", res.body)
                assert.equal(0, hits.n) -- no handler saw it
            end)
        end)
    end

    -- Broken chunked bodies: the head is fine, so the handler runs; its read of the body
    -- fails and the answer is 400 whatever the handler returns.
    local chunked = {
        { "a bad chunk size", "zz\r\nabc\r\n0\r\n\r\n" },
        { "a negative chunk size", "-3\r\nabc\r\n0\r\n\r\n" },
        { "a chunk size with a space", "3 \r\nabc\r\n0\r\n\r\n" },
        { "an overflowing chunk size", "fffffffffffffffff\r\nabc\r\n0\r\n\r\n" },
        { "chunk data longer than its size", "3\r\nabcX\r\n0\r\n\r\n" },
        { "a bare LF after a chunk size", "3\nabc\r\n0\r\n\r\n" },
        { "a bare LF after chunk data", "3\r\nabc\n0\r\n\r\n" },
        { "a bare LF after the last chunk", "3\r\nabc\r\n0\n\r\n" },
        { "a bare LF ending the trailers", "3\r\nabc\r\n0\r\n\n" },
        { "a bare LF after a trailer", "3\r\nabc\r\n0\r\nX: y\n\r\n" },
    }
    for _, case in ipairs(chunked) do
        it("chunked body with " .. case[1], function()
            local app = loom.app()
            local seen
            app:post("/echo", function(req)
                seen = { req:text() }
                return "handler answer"
            end)
            serve(app, function(srv)
                local res = assert_refused(srv,
                    "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" .. case[2], 400)
                assert.equal("Bad Request", res.body)
                assert.is_nil(seen[1])
                assert.matches("^http: ", seen[2])
            end)
        end)
    end

    it("a client that closes in the middle of a head", function()
        serve(echo_app(), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("GET / HTTP/1.1\r\nHo"))
            assert(st:shutdown())
            local res = assert(r:response())
            assert.equal(400, res.status)
            assert_closed(r)
        end)
    end)
end)

describe("server: limits", function()
    it("413 for a Content-Length over max_body, before the body is sent", function()
        local app, hits = echo_app{ max_body = 10 }
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n"))
            local res = assert(r:response())
            assert.equal(413, res.status)
            assert.equal("close", res.headers.connection)
            assert_closed(r)
            assert.equal(0, hits.n)
        end)
    end)

    it("takes a body of exactly max_body", function()
        serve(echo_app{ max_body = 10 }, function(srv)
            local res = exchange(srv, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789")
            assert.equal(200, res.status)
            assert.equal("0123456789", res.body)
        end)
    end)

    it("413 for a chunked body that grows over max_body; the handler's read fails", function()
        local app = loom.app{ max_body = 10 }
        local got
        app:post("/echo", function(req)
            got = { req:text() }
            return "not sent"
        end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                .. "6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n"))
            local res = assert(r:response())
            assert.equal(413, res.status)
            assert.equal("close", res.headers.connection)
            assert_closed(r)
            assert.is_nil(got[1])
            assert.matches("^limit: ", got[2])
        end)
    end)

    it("413 reaches req:chunks() as an error", function()
        local app = loom.app{ max_body = 10 }
        local err
        app:post("/up", function(req)
            local ok, e = pcall(function() for _ in req:chunks() do end end)
            err = not ok and e
            return "not sent"
        end)
        serve(app, function(srv)
            local res, r = exchange(srv, "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                .. "6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n")
            assert.equal(413, res.status)
            assert_closed(r)
            assert.matches("^limit: ", err) -- kind first, no position
        end)
    end)

    it("431 for more header fields than allowed", function()
        local app, hits = echo_app()
        serve(app, function(srv)
            local lines = {}
            for i = 1, 150 do lines[i] = ("X-H%d: %d\r\n"):format(i, i) end
            assert_refused(srv, "GET / HTTP/1.1\r\nHost: t\r\n" .. table.concat(lines) .. "\r\n", 431)
            assert.equal(0, hits.n)
        end)
    end)

    it("431 for one huge header over max_header", function()
        serve(echo_app(), function(srv)
            assert_refused(srv, "GET / HTTP/1.1\r\nHost: t\r\nX-Big: " .. ("a"):rep(17 * 1024) .. "\r\n\r\n", 431)
        end)
    end)

    it("431 counts a head that trickles in over many reads as a whole", function()
        serve(echo_app{ max_header = 1024 }, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("GET / HTTP/1.1\r\nHost: t\r\n"))
            local res
            local writer = loom.spawn(function()
                for i = 1, 100 do
                    if not st:write(("X-%d: %s\r\n"):format(i, ("v"):rep(40))) then return end
                    loom.sleep(0)
                end
            end)
            res = assert(r:response())
            writer:cancel()
            assert.equal(431, res.status)
        end)
    end)

    it("a head just under max_header passes", function()
        serve(echo_app{ max_header = 1024 }, function(srv)
            -- the request line and fields are counted; 900 bytes of value stay under 1024
            local res = exchange(srv, "GET / HTTP/1.1\r\nHost: t\r\nX: " .. ("v"):rep(900) .. "\r\n\r\n")
            assert.equal(200, res.status)
        end)
    end)

    it("414 for a request target over max_header", function()
        serve(echo_app(), function(srv)
            local res = assert_refused(srv, "GET /" .. ("a"):rep(20 * 1024) .. " HTTP/1.1\r\nHost: t\r\n\r\n", 414)
            assert.equal("URI Too Long", res.body)
        end)
    end)
end)

describe("server: timeouts", function()
    it("408 when the head is not complete header_timeout after accept, though bytes trickle in", function()
        serve(echo_app{ header_timeout = 0.3 }, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            local t0 = loom.now()
            local sent = 0
            -- a head that never ends, a byte every 20 ms until the server hangs up: a deadline
            -- that each byte pushed back would never come, whatever the machine's speed
            local writer = loom.spawn(function()
                local head = "GET / HTTP/1.1\r\nHost: t\r\nX-Slow: "
                while st:write(sent < #head and head:sub(sent + 1, sent + 1) or "z") do
                    sent = sent + 1
                    loom.sleep(0.02)
                end
            end)
            local res = assert(r:response())
            local took = loom.now() - t0
            writer:cancel()
            assert.equal(408, res.status)
            assert.equal("close", res.headers.connection)
            timing.within(took, 0.28, 0.3, "408")
            assert(sent > 5, "the bytes did not trickle in (" .. sent .. " sent)")
            assert_closed(r)
        end)
    end)

    it("closes a connection that sends nothing after header_timeout, without an answer", function()
        serve(echo_app{ header_timeout = 0.3 }, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            local t0 = loom.now()
            assert_closed(r, timing.guard(0.3))
            timing.within(loom.now() - t0, 0.28, 0.3, "closed")
        end)
    end)

    it("on a kept-alive connection, counts header_timeout from the next request's first byte", function()
        serve(echo_app{ header_timeout = 0.3, keepalive_timeout = 5 }, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write(GET))
            assert.equal(200, assert(r:response()).status)
            assert_open(st, 0.5) -- longer than header_timeout: the idle wait is keepalive_timeout's
            local t0 = loom.now()
            assert(st:write("GET / HTTP/1.1\r\n"))
            local res = assert(r:response())
            local took = loom.now() - t0
            assert.equal(408, res.status)
            timing.within(took, 0.28, 0.3, "408")
            assert_closed(r)
        end)
    end)

    it("closes an idle kept-alive connection after keepalive_timeout", function()
        serve(echo_app{ keepalive_timeout = 0.3 }, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write(GET))
            assert.equal(200, assert(r:response()).status)
            local t0 = loom.now()
            assert_closed(r, timing.guard(0.3))
            timing.within(loom.now() - t0, 0.28, 0.3, "closed")
        end)
    end)

    it("closes an idle connection after keepalive_timeout after a POST with a body too", function()
        serve(echo_app{ keepalive_timeout = 0.3 }, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"))
            assert.equal("hi", assert(r:response()).body)
            local t0 = loom.now()
            assert_closed(r, timing.guard(0.3))
            timing.within(loom.now() - t0, 0.28, 0.3, "closed")
        end)
    end)

    it("keeps a connection whose requests come faster than keepalive_timeout", function()
        -- 10 requests 0.25 s apart: 2.5 s in all, past keepalive_timeout (2 s), with 1.75 s of
        -- room in each gap for a loaded machine
        serve(echo_app{ keepalive_timeout = 2 }, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            for _ = 1, 10 do
                assert(st:write(GET))
                assert.equal(200, assert(r:response()).status)
                loom.sleep(0.25)
            end
        end)
    end)
end)

describe("server: keep-alive and pipelining", function()
    it("answers pipelined requests in order, however long each handler takes", function()
        local app = loom.app()
        app:get("/slow/{n}", function(req)
            loom.sleep(tonumber(req.params.n) / 100)
            return "n=" .. req.params.n
        end)
        app:post("/echo", function(req) return req:text() end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("GET /slow/20 HTTP/1.1\r\nHost: t\r\n\r\n"
                .. "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
                .. "GET /slow/0 HTTP/1.1\r\nHost: t\r\n\r\n"
                .. "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"
                .. "GET /slow/5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
            local want = { "n=20", "hello", "n=0", "abc", "n=5" }
            for i, body in ipairs(want) do
                local res = assert(r:response())
                assert.equal(200, res.status)
                assert.equal(body, res.body, "response " .. i)
            end
            assert_closed(r)
        end)
    end)

    it("a pipelined request after one whose body the handler ignored", function()
        local app = loom.app()
        app:post("/ignore", function() return "ignored" end)
        app:get("/", function() return "root" end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\nGET /x "
                .. GET))
            assert.equal("ignored", assert(r:response()).body)
            local res = assert(r:response())
            assert.equal("root", res.body)
        end)
    end)

    it("a client that shuts its side down while its handlers run gets its answers, then the end", function()
        local app = loom.app()
        app:get("/slow", function() loom.sleep(0.05); return "slow" end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            -- two pipelined requests, then the client's FIN: both are answered, in order,
            -- and the connection ends at once instead of waiting for keepalive_timeout (75 s)
            assert(st:write("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n" .. "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"))
            assert(st:shutdown())
            assert.equal("slow", assert(r:response()).body)
            assert.equal("slow", assert(r:response()).body)
            assert_closed(r, 2)
        end)
    end)

    it("Connection: close from the client closes after the answer", function()
        serve(echo_app(), function(srv)
            local res, r = exchange(srv, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert.equal(200, res.status)
            assert.equal("close", res.headers.connection)
            assert_closed(r)
        end)
    end)

    it("Connection: close from the handler closes after the answer", function()
        local app = loom.app()
        app:get("/", function() return { status = 200, headers = { connection = "close" }, text = "bye" } end)
        serve(app, function(srv)
            local res, r = exchange(srv, GET)
            assert.equal("bye", res.body)
            assert.equal("close", res.headers.connection)
            assert_closed(r)
        end)
    end)
end)

describe("server: Expect: 100-continue", function()
    it("sends 100 Continue when the handler reads the body, not before", function()
        local app = loom.app()
        local reading = loom.event()
        app:post("/echo", function(req)
            reading:set()
            return "got " .. req:text()
        end)
        app:get("/", function() return "root" end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"))
            local line = assert(r:line())
            assert.equal("HTTP/1.1 100 Continue", line)
            assert.equal("", assert(r:line()))
            assert.is_true(reading:is_set())
            assert(st:write("hello"))
            local res = assert(r:response())
            assert.equal(200, res.status)
            assert.equal("got hello", res.body)
            assert(st:write(GET)) -- and the connection carries on
            assert.equal("root", assert(r:response()).body)
        end)
    end)

    it("answers without 100 Continue when the handler does not read, and closes", function()
        local app = loom.app()
        app:post("/no", function() return { status = 403, text = "no" } end)
        app:get("/", function() return "root" end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("POST /no HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"))
            local res = assert(r:response())
            assert.equal(403, res.status)
            assert.same({}, res.interim)
            -- the body never comes: what the client sends next must not be taken for it
            assert.equal("close", res.headers.connection)
            assert_closed(r)
        end)
    end)
end)

describe("server: HTTP/1.0", function()
    it("closes after the answer by default", function()
        serve(echo_app(), function(srv)
            local res, r = exchange(srv, "GET / HTTP/1.0\r\n\r\n")
            assert.equal(200, res.status)
            assert.equal("root", res.body)
            assert.equal("close", res.headers.connection)
            assert_closed(r)
        end)
    end)

    it("keeps the connection alive when asked", function()
        serve(echo_app(), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            for _ = 1, 2 do
                assert(st:write("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
                local res = assert(r:response())
                assert.equal("keep-alive", res.headers.connection)
                assert.equal("4", res.headers["content-length"])
                assert.equal("root", res.body)
            end
        end)
    end)

    it("reports version 1.0 to the handler and ends a streamed body by closing", function()
        local app = loom.app()
        app:get("/s", function(req)
            local out = req:stream{ headers = { ["content-type"] = "text/plain" } }
            out:write(req.version .. ":")
            out:write("streamed")
        end)
        serve(app, function(srv)
            local res, r = exchange(srv, "GET /s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert.is_nil(res.headers["transfer-encoding"])
            assert.equal("close", res.headers.connection)
            assert.equal("1.0:streamed", res.body)
            assert_closed(r)
        end)
    end)

    it("keeps method, path and version readable in a request kept past its handler", function()
        local app, kept = loom.app(), {}
        app:get("/k", function(req) kept[#kept + 1] = req; return "k" end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" .. "GET /k HTTP/1.1\r\nHost: t\r\n\r\n"))
            assert.equal("k", assert(r:response()).body)
            assert.equal("k", assert(r:response()).body)
            assert.same({ "GET", "/k", "1.0" }, { kept[1].method, kept[1].path, kept[1].version })
            assert.same({ "GET", "/k", "1.1" }, { kept[2].method, kept[2].path, kept[2].version })
            -- what needs the connection says the request is over
            assert.has_error(function() return kept[1].headers end, "the request is finished (its handler has returned)")
        end)
    end)
end)

describe("server: HEAD", function()
    it("answers HEAD for a GET route with GET's headers and no body", function()
        local app = loom.app()
        app:get("/doc", function() return { status = 200, headers = { ["x-kind"] = "doc" }, html = "<p>hello</p>" } end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("GET /doc HTTP/1.1\r\nHost: t\r\n\r\n"))
            local get = assert(r:response())
            assert(st:write("HEAD /doc HTTP/1.1\r\nHost: t\r\n\r\n"))
            local head = assert(r:response("HEAD"))
            assert.equal(200, head.status)
            assert.equal("12", head.headers["content-length"])
            for _, h in ipairs(get.raw_headers) do
                if h[1]:lower() ~= "date" then
                    assert.equal(h[2], head.headers[h[1]], h[1])
                end
            end
            assert.equal(#get.raw_headers, #head.raw_headers)
            assert.equal("", head.body)
            -- no body bytes followed the HEAD answer: the next answer starts clean
            assert(st:write("GET /doc HTTP/1.1\r\nHost: t\r\n\r\n"))
            assert.equal("<p>hello</p>", assert(r:response()).body)
        end)
    end)

    it("answers HEAD for a streaming GET route without the chunks", function()
        local app = loom.app()
        app:get("/s", function(req)
            local out = req:stream{ headers = { ["content-type"] = "text/plain" } }
            out:write("abc")
        end)
        serve(app, function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("HEAD /s HTTP/1.1\r\nHost: t\r\n\r\n"))
            local head = assert(r:response("HEAD"))
            assert.equal(200, head.status)
            assert.equal("chunked", head.headers["transfer-encoding"])
            assert(st:write("GET /s HTTP/1.1\r\nHost: t\r\n\r\n"))
            assert.equal("abc", assert(r:response()).body)
        end)
    end)
end)

describe("server: request bodies", function()
    it("reads chunked bodies, with extensions and trailers", function()
        serve(echo_app(), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                .. "5;name=value\r\nhello\r\nA\r\n, chunked!\r\n0\r\nX-Trailer: yes\r\n\r\n"))
            local res = assert(r:response())
            assert.equal("hello, chunked!", res.body)
            assert(st:write("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
            res = assert(r:response())
            assert.equal(200, res.status)
            assert.equal("", res.body)
        end)
    end)

    it("reads a body that arrives in pieces", function()
        serve(echo_app(), function(srv)
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nab"))
            loom.sleep(0.05)
            assert(st:write("cd"))
            loom.sleep(0.05)
            assert(st:write("ef"))
            assert.equal("abcdef", assert(r:response()).body)
        end)
    end)

    it("tells the handler when the client leaves in the middle of a body", function()
        local app = loom.app()
        local got, reading, done = nil, loom.event(), loom.event()
        app:post("/echo", function(req)
            reading:set()
            got = { req:text() }
            done:set()
        end)
        serve(app, function(srv)
            local st = open(srv)
            assert(st:write("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc"))
            reading:wait() -- the handler is parked in req:text() by the time this returns
            st:close()
            done:wait()
            assert.is_nil(got[1])
            assert.matches("^closed", got[2])
        end)
    end)
end)

describe("server: srv:close(grace)", function()
    it("stops accepting at once and returns without waiting", function()
        run(function()
            local app = echo_app()
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local port = srv.port
            -- it does not wait: no other task runs (it does not yield) before it returns
            local other_ran = false
            loom.spawn(function() other_ran = true end)
            srv:close()
            assert.is_false(other_ran, "srv:close() waited")
            local st, err = loom.connect("127.0.0.1", port)
            assert.is_nil(st)
            assert.matches("^connect: ", err)
            srv:close() -- twice is harmless
            srv:close(1)
        end)
    end)

    it("lets a request in flight finish with Connection: close, and closes idle connections", function()
        local app = loom.app()
        local entered, release = loom.event(), loom.event()
        app:get("/slow", function()
            entered:set()
            release:wait()
            return "finished"
        end)
        app:get("/", function() return "root" end)
        run(function()
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local idle, ri = open(srv)
            local _ <close> = idle
            assert(idle:write(GET))
            assert.equal(200, assert(ri:response()).status)
            local busy, rb = open(srv)
            local _b <close> = busy
            assert(busy:write("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"))
            entered:wait()
            srv:close(5)
            assert_closed(ri, 3) -- the idle one goes at once, long before the grace period
            loom.sleep(0.1)
            release:set()
            local res = assert(rb:response())
            assert.equal("finished", res.body)
            assert.equal("close", res.headers.connection)
            assert_closed(rb)
        end)
    end)

    it("lets a streaming handler see it through req:shutting_down() and end in good order", function()
        local app = loom.app()
        local started, seen_before = loom.event(), nil
        app:get("/ticks", function(req)
            local out = assert(req:stream{ headers = { ["content-type"] = "text/plain" } })
            seen_before = req:shutting_down()
            started:set()
            while not req:shutting_down() do
                if not out:write("tick;") then return end
                loom.sleep(0.02)
            end
            out:write("bye")
        end)
        run(function()
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("GET /ticks HTTP/1.1\r\nHost: t\r\n\r\n"))
            started:wait()
            loom.sleep(0.1)
            srv:close(30)
            -- the handler ends at its next tick; the grace period (30 s) is far past the guard
            local res, err = loom.timeout(timing.guard(0.1), function() return r:response() end)
            assert(res, "the stream ran on towards the grace period (" .. tostring(err) .. ")")
            assert.is_false(seen_before)
            assert.matches("^tick;.*bye$", res.body)
            assert_closed(r)
        end)
    end)

    it("closes connections still busy when the grace period ends", function()
        local app = loom.app()
        local entered, release = loom.event(), loom.event()
        app:get("/stuck", function()
            entered:set()
            release:wait()
            return "too late"
        end)
        run(function()
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("GET /stuck HTTP/1.1\r\nHost: t\r\n\r\n"))
            entered:wait()
            local t0 = loom.now()
            srv:close(0.3)
            assert_closed(r, timing.guard(0.3))
            timing.within(loom.now() - t0, 0.25, 0.3, "closed")
            release:set()
        end)
    end)

    it("as a to-be-closed variable closes the server and lets the block's error through", function()
        run(function()
            local app = echo_app()
            local port
            local ok, err = pcall(function()
                local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
                port = srv.port
                error({ code = 42 })
            end)
            assert.is_false(ok)
            assert.same({ code = 42 }, err)
            assert.is_nil((loom.connect("127.0.0.1", port)))
            ok, err = pcall(function()
                local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
                error("the real error", 0)
            end)
            assert.equal("the real error", err)
        end)
    end)

    it("may be called from a handler", function()
        local app = loom.app()
        local srv
        app:get("/quit", function()
            srv:close(2)
            srv:close() -- and twice there too
            return "bye"
        end)
        run(function()
            srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local port = srv.port
            local res, r = exchange(srv, "GET /quit HTTP/1.1\r\nHost: t\r\n\r\n")
            assert.equal("bye", res.body)
            assert.equal("close", res.headers.connection)
            assert_closed(r)
            assert.is_nil((loom.connect("127.0.0.1", port)))
        end)
    end)

    it("ends a streaming response cut off by the grace period so the client sees it incomplete", function()
        local app = loom.app()
        local started, ended = loom.event(), loom.event()
        local last
        app:get("/forever", function(req)
            local out = req:stream{ headers = { ["content-type"] = "text/plain" } }
            started:set()
            repeat
                last = { out:write("tick\n") }
                loom.sleep(0.02)
            until not last[1]
            ended:set()
        end)
        run(function()
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local st, r = open(srv)
            local _ <close> = st
            assert(st:write("GET /forever HTTP/1.1\r\nHost: t\r\n\r\n"))
            started:wait()
            srv:close(0.2)
            local res, err = loom.timeout(timing.guard(0.2), function() return r:response() end)
            assert.is_nil(res)
            assert.matches("cut short", err)
            -- the handler's next write fails (it does not raise) and its loop ends
            ended:wait()
            assert.same({ nil, "closed: the client has gone" }, last)
        end)
    end)
end)
