-- The access log (issue 16 item 4): access_log = true | "combined" | "json" | function(entry).
-- The text formats are read from the stdout of a real `loom` process (app:run, stopped
-- with SIGTERM: the graceful stop must lose no line), fed by curl and by a raw socket with
-- bytes a client may use to forge fields; the JSON lines go through Python's strict json
-- parser. The size field is the body's bytes (13 for the hello, not the 130 of head and
-- body the old log wrote); the duration counts from the request head's arrival.
local loom = require "loom"
local core = require "loom.core"
local cjson = require "cjson"
local run = require "support.run"
local testing = require "loom.testing"

-- the fixture beside this file (spec/fixtures), whichever tree's lua/ is under test
local FIXTURE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") .. "/fixtures/access_log_app.lua"
local LOOM_BIN = os.getenv("LOOM_BIN") or "build/loom"
local GUARD = 10

local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

local function lines_of(s)
    local t = {}
    for line in s:gmatch("[^\n]+") do t[#t + 1] = line end
    return t
end

local function wait_until(cond, what, why)
    local deadline = loom.now() + GUARD
    while not cond() do
        if loom.now() > deadline then error("timed out waiting for " .. what .. (why and why() or ""), 2) end
        loom.sleep(0.005)
    end
end

-- Runs the fixture app with access log `fmt` in a process of its own; body(port) sends
-- the requests; then SIGTERM, and the process must exit 0. -> stdout (after the
-- "listening on" line), stderr
local function with_app(fmt, body)
    local out_path, err_path = os.tmpname(), os.tmpname()
    run(function()
        local cmd = ("exec %s %s %s >%s 2>%s"):format(LOOM_BIN, FIXTURE, fmt, out_path, err_path)
        local p = assert(core.process_spawn("/bin/sh", { "-c", cmd }))
        local exited = false
        local _ <close> = run.defer(function()
            if not exited then
                p:kill()
                p:wait()
            end
        end)
        local port -- app:run's first line; no event says it is written
        wait_until(function()
            port = tonumber(read_file(out_path):match("^listening on http://127%.0%.0%.1:(%d+)\n"))
            return port
        end, "the fixture's port", function() return "; its stderr: " .. read_file(err_path) end)
        body(port)
        assert(p:kill("SIGTERM"))
        assert.equal(0, p:wait())
        exited = true
    end, { timeout = 30 })
    local out, err = read_file(out_path), read_file(err_path)
    os.remove(out_path)
    os.remove(err_path)
    return (out:gsub("^listening on [^\n]*\n", "")), err
end

-- curl, a real client, with its own User-Agent and a Referer.
local function curl(port, path)
    local p = assert(core.process_spawn("/usr/bin/curl", { "-s", "-o", "/dev/null", "-A", "curl-agent",
        "-e", "http://ref.example/", "http://127.0.0.1:" .. port .. path }))
    assert.equal(0, p:wait())
end

-- A raw request whose target and headers hold '"', '\', a tab and bytes past 0x7e: what a
-- client would use to end a field or forge a line.
local HOSTILE_TARGET = "/a\"b\\c\xff\xc3\xa9?x=\""
local HOSTILE_UA = "x\"y\\z\255\tw"
local function hostile(port)
    local st = assert(loom.connect("127.0.0.1", port))
    local _ <close> = st
    local r = testing.reader(st)
    assert(st:write("GET " .. HOSTILE_TARGET .. " HTTP/1.1\r\nHost: t\r\nUser-Agent: " .. HOSTILE_UA
        .. "\r\nReferer: r\"\r\n\r\n"))
    local res = assert(loom.timeout(GUARD, function() return r:response() end))
    assert.equal(404, res.status)
end

-- n GET /hello on one connection, written at once, every answer read.
local function pipelined(port, n)
    local st = assert(loom.connect("127.0.0.1", port))
    local _ <close> = st
    local r = testing.reader(st)
    assert(st:write(string.rep("GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", n)))
    for _ = 1, n do
        local res = assert(loom.timeout(GUARD, function() return r:response() end))
        assert.equal("Hello, World!", res.body)
    end
end

describe("access_log: combined", function()
    for _, fmt in ipairs({ "combined", "true" }) do
        it(("(%s) writes the body's bytes, escapes the client's fields, loses no line at a graceful stop")
            :format(fmt), function()
            local out = with_app(fmt, function(port)
                curl(port, "/hello")
                hostile(port)
                pipelined(port, 500) -- the last lines are still in the buffer at SIGTERM
            end)
            local lines = lines_of(out)
            assert.equal(502, #lines)
            local pat = '^(%S+) %- %- %[(%d%d/%a%a%a/%d%d%d%d:%d%d:%d%d:%d%d [%+%-]%d%d%d%d)%] '
                .. '"([^"]*)" (%d+) (%d+) "([^"]*)" "([^"]*)"$'
            local ip, _, req, status, bytes, ref, ua = lines[1]:match(pat)
            assert(ip, "not a Combined Log Format line: " .. lines[1])
            assert.same({ "127.0.0.1", "GET /hello HTTP/1.1", "200", "13", "http://ref.example/", "curl-agent" },
                { ip, req, status, bytes, ref, ua })
            _, _, req, status, bytes, ref, ua = lines[2]:match(pat)
            assert(req, "the hostile request's line has other fields: " .. lines[2])
            assert.equal('GET /a\\x22b\\x5Cc\\xFF\\xC3\\xA9?x=\\x22 HTTP/1.1', req)
            assert.same({ "404", "9", "r\\x22", "x\\x22y\\x5Cz\\xFF\\x09w" }, { status, bytes, ref, ua })
            for i = 3, 502 do
                assert.matches('"GET /hello HTTP/1.1" 200 13 "-" "-"', lines[i], nil, true)
            end
        end)
    end
end)

describe("access_log: a stdout nobody reads", function()
    -- The log goes into a pipe whose reader takes the "listening on" line and then reads
    -- nothing: the kernel's pipe buffer (64 KiB) fills after some 700 lines. The old log
    -- (printf and fflush) blocked the whole server there; now lines wait in memory.
    it("never blocks the server", function()
        local port_path, pid_path, done_path = os.tmpname(), os.tmpname(), os.tmpname()
        local err_path = os.tmpname()
        os.remove(done_path)
        local _ <close> = run.defer(function()
            for _, f in ipairs({ port_path, pid_path, done_path, err_path }) do os.remove(f) end
        end)
        run(function()
            local cmd = ("%s %s true %s 2>%s | { IFS= read -r line; printf '%%s\\n' \"$line\" >%s; "
                .. "n=0; while [ ! -e %s ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n + 1)); done; }")
                :format(LOOM_BIN, FIXTURE, pid_path, err_path, port_path, done_path)
            local p = assert(core.process_spawn("/bin/sh", { "-c", cmd }))
            local pid
            local _ <close> = run.defer(function() -- on failure (it may run outside the task)
                io.open(done_path, "w"):close() -- the reader goes
                if pid then os.execute("kill -KILL " .. pid) end
            end)
            local port
            wait_until(function()
                port = tonumber(read_file(port_path):match("^listening on http://127%.0%.0%.1:(%d+)"))
                pid = read_file(pid_path):match("^(%d+)")
                return port and pid
            end, "the fixture's port", function() return "; its stderr: " .. read_file(err_path) end)
            for _ = 1, 30 do pipelined(port, 100) end -- 3000 lines, some 270 KB
            assert(core.process_spawn("/bin/kill", { "-TERM", pid })):wait()
            io.open(done_path, "w"):close()
            assert.equal(0, p:wait())
            pid = nil
        end, { timeout = 30 })
        -- the lines that could not go were let go once the reader left, and that was said
        assert.matches("loom: access log: writing to stdout failed", read_file(err_path), nil, true)
    end)
end)

-- Each line parsed by Python's json (strict: valid JSON in valid UTF-8), handed back as
-- one ASCII JSON array.
local function parse_json_lines(text)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    local p = assert(io.popen("/usr/bin/python3 -c 'import json, sys\n"
        .. "rows = [json.loads(l) for l in open(sys.argv[1], encoding=\"utf-8\", errors=\"strict\")]\n"
        .. "print(json.dumps(rows))' " .. path .. " 2>&1"))
    local s = p:read("a")
    p:close()
    os.remove(path)
    local ok, rows = pcall(cjson.decode, s)
    assert(ok and type(rows) == "table", "python3 could not parse the lines: " .. s)
    return rows
end

describe("access_log: json", function()
    it("writes one object a line that a strict parser reads, with the body's bytes and the duration", function()
        local out = with_app("json", function(port)
            curl(port, "/hello")
            hostile(port)
            curl(port, "/slow")
            pipelined(port, 100)
        end)
        local rows = parse_json_lines(out)
        assert.equal(103, #rows)
        local hello = rows[1]
        assert.same({ "127.0.0.1", "GET", "/hello", "HTTP/1.1", 200, 13, "curl-agent", "http://ref.example/" },
            { hello.remote, hello.method, hello.path, hello.protocol, hello.status, hello.bytes, hello.ua,
                hello.referer })
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", hello.time)
        assert(hello.duration >= 0 and hello.duration < GUARD, "duration " .. tostring(hello.duration))
        -- the client's bytes come back as they were sent; the one byte that is not UTF-8
        -- (0xff) as the character U+00FF, valid UTF-8 as it was
        local h = rows[2]
        assert.equal("/a\"b\\c\xc3\xbf\xc3\xa9?x=\"", h.path)
        assert.equal("x\"y\\z\xc3\xbf\tw", h.ua)
        assert.equal("r\"", h.referer)
        assert.same({ 404, 9 }, { h.status, h.bytes })
        -- /slow answers 0.2 s after its head arrived
        assert(rows[3].duration >= 0.2, "the slow request's duration: " .. tostring(rows[3].duration))
        assert(rows[3].duration < GUARD)
        assert.equal(cjson.null, rows[103].referer)
        assert.equal(cjson.null, rows[103].ua)
    end)
end)

describe("access_log: a function", function()
    it("is called with each entry, after the answer", function()
        local app = loom.app()
        app:get("/hello", function() return "Hello, World!" end)
        local entries, got = {}, loom.event()
        run(function()
            local srv = assert(app:listen{ host = "127.0.0.1", port = 0, access_log = function(e)
                entries[#entries + 1] = e
                if #entries == 2 then got:set() end
            end })
            local _ <close> = run.defer(function() srv:close(0) end)
            local st = assert(loom.connect("127.0.0.1", srv.port))
            local _ <close> = st
            local r = testing.reader(st)
            assert(st:write("GET /hello?a=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: ua\xff\r\nReferer: /from\r\n\r\n"))
            assert.equal("Hello, World!", assert(r:response()).body)
            assert(st:write("POST /hello HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi"))
            assert.equal(405, assert(r:response()).status)
            assert(loom.timeout(GUARD, function() return got:wait() end))
        end)
        local e = entries[1]
        assert.same({ "GET", "/hello?a=1", 200, 13, "127.0.0.1", "ua\xff", "/from", "HTTP/1.1" },
            { e.method, e.path, e.status, e.bytes, e.remote, e.ua, e.referer, e.protocol })
        assert(e.duration >= 0 and e.duration < GUARD)
        assert(math.abs(e.time - os.time()) < 60 + GUARD, "time " .. tostring(e.time))
        e = entries[2]
        assert.same({ "POST", "/hello", 405, #"Method Not Allowed", "HTTP/1.0" },
            { e.method, e.path, e.status, e.bytes, e.protocol })
        assert.is_nil(e.ua)
        assert.is_nil(e.referer)
    end)

    it("that raises never breaks a request, and its error is printed once (not per request)", function()
        local out, err = with_app("fn-error", function(port)
            for _ = 1, 3 do curl(port, "/hello") end
            pipelined(port, 20)
        end)
        assert.equal(23, #lines_of(out))
        assert.matches("^entry 200 13\n", out)
        local n = 0
        for _ in err:gmatch("loom: error in the access_log function: [^\n]*broken logger") do n = n + 1 end
        assert.equal(1, n)
    end)
end)

describe("access_log: misuse", function()
    it("raises naming the option", function()
        local app = loom.app()
        for _, v in ipairs({ "xml", 42, {} }) do
            assert.error_matches(function() app:listen{ host = "127.0.0.1", port = 0, access_log = v } end,
                "bad argument #1 to 'listen' %(option 'access_log': true, false, \"combined\", \"json\" or a function expected")
        end
    end)
end)
