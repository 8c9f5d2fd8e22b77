-- Hostile requests against the server, one file per case in spec/fixtures/hostile/:
-- smuggling (CL.TE, TE.CL, CL.0, duplicate lengths, odd Transfer-Encodings), chunk sizes
-- past 64 bits, obs-fold, bare LF and CR, NUL and control bytes, a second Host, floods.
--
-- A case file is
--   # what it is (any number of comment lines)
--   expect: <status>... close|open   statuses in order ("200*50": fifty 200s), then whether
--                                    the server closes the connection or keeps it open
--   handled: <n>                     how many requests a strict parser hands the handler
--   --
--   the request bytes
-- Line breaks in the bytes part are not sent; \r \n \t \0 \s (space) \\ and \xHH are,
-- and {{N:text}} is text N times.
--
-- Each case gets its own app on 127.0.0.1, port 0, counting handler calls, and one fresh
-- connection; all cases run at once. Responses are read with loom.testing's strict reader
-- until the server closes, or nothing comes for IDLE seconds ("open").
local loom = require "loom"
local run = require "support.run"
local testing = require "loom.testing"

local DIR = (os.getenv("LOOM_SRC") or ".") .. "/spec/fixtures/hostile"
-- 5 s: "nothing comes" must not be a late answer; with all the cases at once in the sanitizer
-- build on a loaded machine, 0.5 s once passed before any of 69 answers came
local IDLE = 5

local ESCAPES = { r = "\r", n = "\n", t = "\t", ["0"] = "\0", s = " ", ["\\"] = "\\" }

local function decode(s, name)
    s = s:gsub("\r?\n", "")
    s = s:gsub("{{(%d+):(.-)}}", function(n, text) return text:rep(tonumber(n)) end)
    local out, i = {}, 1
    while i <= #s do
        local c = s:sub(i, i)
        if c ~= "\\" then
            out[#out + 1] = c
            i = i + 1
        elseif s:sub(i + 1, i + 1) == "x" then
            local hex = s:sub(i + 2, i + 3)
            assert(hex:match("^%x%x$"), name .. ": bad \\x escape")
            out[#out + 1] = string.char(tonumber(hex, 16))
            i = i + 4
        else
            out[#out + 1] = assert(ESCAPES[s:sub(i + 1, i + 1)], name .. ": unknown escape")
            i = i + 2
        end
    end
    return table.concat(out)
end

-- Expands "200*3 400 close" to { 200, 200, 200, 400 }, "close".
local function parse_expect(s, name)
    local statuses, ending = {}, nil
    for word in s:gmatch("%S+") do
        local status, times = word:match("^(%d%d%d)%*?(%d*)$")
        if status then
            for _ = 1, tonumber(times) or 1 do statuses[#statuses + 1] = tonumber(status) end
        else
            assert(word == "close" or word == "open", name .. ": bad expect word " .. word)
            ending = word
        end
    end
    assert(ending, name .. ": expect must end in close or open")
    return statuses, ending
end

local function load_case(path)
    local name = path:match("([^/]+)%.txt$")
    local f = assert(io.open(path, "rb"))
    local text = f:read("a")
    f:close()
    local head, wire = text:match("^(.-)\n%-%-\n(.*)$")
    assert(head, name .. ": no '--' line before the request bytes")
    local c = { name = name, wire = decode(wire, name) }
    for line in head:gmatch("[^\n]+") do
        local key, value = line:match("^(%a+):%s*(.-)%s*$")
        if key == "expect" then
            c.statuses, c.ending = parse_expect(value, name)
        elseif key == "handled" then
            c.handled = assert(tonumber(value), name .. ": handled must be a number")
        else
            assert(line:match("^#"), name .. ": unknown line " .. line)
        end
    end
    assert(c.statuses and c.handled, name .. ": needs expect: and handled: lines")
    return c
end

local function load_cases()
    local p = assert(io.popen("ls " .. DIR .. "/*.txt"))
    local cases = {}
    for path in p:lines() do cases[#cases + 1] = load_case(path) end
    p:close()
    assert(#cases > 0, "no cases in " .. DIR)
    return cases
end

-- Sends the case on a fresh connection; returns the statuses read and how it ended.
local function play(port, wire)
    local st = assert(loom.connect("127.0.0.1", port))
    local _ <close> = st
    local r = testing.reader(st)
    -- written by a task of its own: a flood fills both directions' buffers before the
    -- server stops reading, and only reading the answers lets it go on. The server may
    -- close before all of it is written: not a failure.
    local writer = loom.spawn(function() st:write(wire) end)
    local _ <close> = run.defer(function() writer:cancel() end)
    local got = {}
    while true do
        local res, err = loom.timeout(IDLE, function() return r:response() end)
        if res then
            got[#got + 1] = res.status
        elseif err == "timeout" then
            return got, "open"
        elseif #r.buf > 0 or (err and err:match("^http:")) then
            return got, "garbage: " .. tostring(err)
        else
            return got, "close"
        end
    end
end

local function app_counting()
    local app = loom.app()
    local hits = { n = 0 }
    app:any("/{rest*}", function(req)
        hits.n = hits.n + 1
        local body, err = req:text()
        if not body then return { status = 299, text = err } end
        return "ok"
    end)
    return app, hits
end

describe("server: hostile requests", function()
    local cases = load_cases()

    it("reach the outcome a strict parser reaches, and no more handler calls", function()
        local results = {}
        run(function()
            local tasks = {}
            for i, c in ipairs(cases) do
                tasks[i] = loom.spawn(function()
                    local app, hits = app_counting()
                    local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
                    local _ <close> = run.defer(function() srv:close(0) end)
                    local got, ending = play(srv.port, c.wire)
                    results[i] = { got = got, ending = ending, handled = hits.n }
                end)
            end
            for _, t in ipairs(tasks) do assert(t:join()) end
        end, { timeout = 30 })
        local wrong, extra = {}, {}
        for i, c in ipairs(cases) do
            local res = results[i]
            local want = table.concat(c.statuses, " ") .. " " .. c.ending .. ", handled " .. c.handled
            local have = table.concat(res.got, " ") .. " " .. res.ending .. ", handled " .. res.handled
            if want ~= have then
                wrong[#wrong + 1] = ("%s: want %s, got %s"):format(c.name, want, have)
            end
            -- whatever else differs, the handler never saw more than a strict parser passes on
            if res.handled > c.handled then
                extra[#extra + 1] = ("%s: the handler saw %d request(s), a strict parser passes on %d")
                    :format(c.name, res.handled, c.handled)
            end
        end
        assert(#extra == 0, "requests a strict parser refuses reached the handler:\n  "
            .. table.concat(extra, "\n  "))
        assert(#wrong == 0, #wrong .. " case(s) differ:\n  " .. table.concat(wrong, "\n  "))
    end)

    -- RFC 9112 3.2.2: with an absolute-form target, "the origin server MUST ignore the
    -- received Host header field (if any) and instead use the host information of the
    -- request-target". A middleware that checks req.headers.host and the router, which
    -- goes by req.path, must see the same request.
    it("take Host from an absolute-form target, the path from after its authority", function()
        local app = loom.app()
        app:any("/{rest*}", function(req)
            return ("%s %s %s"):format(req.headers.host, req.path, req.target)
        end)
        local got = {}
        run(function()
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local _ <close> = run.defer(function() srv:close(0) end)
            local st = assert(loom.connect("127.0.0.1", srv.port))
            local _ <close> = st
            local r = testing.reader(st)
            for _, req in ipairs({
                "GET http://real.example:8080/admin?x=1 HTTP/1.1\r\nHost: decoy\r\n\r\n",
                "GET HTTPS://[::1]?q HTTP/1.1\r\nHost: decoy\r\n\r\n",
                "GET http://real.example HTTP/1.0\r\n\r\n", -- 1.0 needs no Host; the target gives one
            }) do
                assert(st:write(req))
                local res = assert(r:response())
                got[#got + 1] = res.status .. " " .. res.body
            end
        end)
        assert.same({
            "200 real.example:8080 /admin http://real.example:8080/admin?x=1",
            "200 [::1] / HTTPS://[::1]?q",
            "200 real.example / http://real.example",
        }, got)
    end)
end)

-- The client parses responses with the same glue (src/http1/http_parse.c): a Transfer-Encoding
-- field takes its rules even when empty, and a body in a coding the client cannot decode
-- is refused, never handed over as if it were plain.
describe("client: hostile responses", function()
    local function answer(bytes)
        local got
        run(function()
            local srv <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = function(st)
                local r = testing.reader(st)
                repeat local line = r:line() until not line or line == ""
                st:write(bytes)
                st:close()
            end })
            got = { loom.fetch(("http://127.0.0.1:%d/"):format(srv.port)) }
        end)
        return got
    end

    it("refuse Content-Length beside an empty Transfer-Encoding", function()
        local got = answer("HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\nContent-Length: 5\r\n\r\nhello")
        assert.is_nil(got[1])
        assert.matches("^http: malformed response: Content%-Length with Transfer%-Encoding", got[2])
    end)

    it("read a body to the close after an empty Transfer-Encoding (RFC 9112 6.3)", function()
        local got = answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\nhello world")
        assert(got[1], got[2])
        assert.equal("hello world", got[1]:text())
    end)

    it("refuse a transfer coding other than chunked", function()
        local got = answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        assert.is_nil(got[1])
        assert.matches("^http: malformed response: a transfer coding other than chunked", got[2])
    end)

    it("report a rejected head as malformed, not as over the size limit", function()
        local got = answer("HTTP/1.1 200 OK\r\n:x: y\r\nContent-Length: 0\r\n\r\n")
        assert.is_nil(got[1])
        assert.matches("^http: malformed response: empty header name", got[2])
    end)
end)
