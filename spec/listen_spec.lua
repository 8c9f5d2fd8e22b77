-- app:listen's unix-domain sockets (path, mode: issue 17 item 1) and its per-address cap on
-- open connections (max_conns_per_ip: issue 17 item 5). Unix sockets are spoken to by real
-- peers (curl --unix-socket, a Python client); the cap by raw loopback connections.
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"
local testing = require "loom.testing"
local timing = require "support.timing"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"

local function tmpdir()
    local p = assert(io.popen("mktemp -d /tmp/loom-unix-XXXXXX"))
    local d = p:read("l")
    p:close()
    return d
end

local function exists(path)
    local f = io.open(path, "r")
    if f then f:close() return true end
    -- a socket cannot be opened as a file: ask the shell
    return os.execute("test -e '" .. path .. "'") == true
end

local function mode_of(path)
    local p = assert(io.popen("stat -c %a '" .. path .. "'"))
    local m = p:read("l")
    p:close()
    return m
end

local function slurp(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

-- Runs argv (a peer) and waits for it: its exit code.
local function peer(exe, argv)
    local p = assert(core.process_spawn(exe, argv))
    local code = p:wait()
    return code
end

local function app_under_test()
    local app = loom.app()
    app:get("/who", function(req) return tostring(req.remote) .. " " .. tostring(req.remote_port) end)
    app:get("/echo", function(req) return "x=" .. req.query.x end)
    return app
end

describe("app:listen{ path }: a unix-domain socket", function()
    local dir
    before_each(function() dir = tmpdir() end)
    after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

    it("serves curl --unix-socket and a Python client; req.remote is 'unix:'; mode is applied", function()
        run(function()
            local path = dir .. "/app.sock"
            local logged = {}
            local srv <close> = assert(app_under_test():listen{ path = path, mode = "0600",
                access_log = function(entry) logged[#logged + 1] = entry.remote end })
            assert.equal(path, srv.path)
            assert.is_nil(srv.port)
            assert.equal("600", mode_of(path))
            local out = dir .. "/curl.out"
            assert.equal(0, peer("/usr/bin/curl", { "-sS", "--unix-socket", path, "-o", out,
                "http://localhost/who" }), "curl failed")
            assert.equal("unix: nil", slurp(out))
            out = dir .. "/py.out"
            assert.equal(0, peer("/usr/bin/python3", { here .. "/fixtures/unix_client.py", path, out }),
                "the Python client failed")
            assert.equal("unix: nil\nx=1\n", slurp(out))
            -- the access log names the peer as req.remote does
            timing.poll(function() return #logged >= 3 end, 0.2, "three access log entries")
            assert.same({ "unix:", "unix:", "unix:" }, logged)
        end, { timeout = 30 })
    end)

    it("takes an integer mode, and removes the file when it closes", function()
        run(function()
            local path = dir .. "/int.sock"
            local srv = assert(app_under_test():listen{ path = path, mode = 416 }) -- 0o640
            assert.equal("640", mode_of(path))
            srv:close(0)
            assert.is_false(exists(path))
            srv:wait()
        end)
    end)

    it("replaces a stale socket file, and refuses a live one or another file", function()
        run(function()
            local path = dir .. "/stale.sock"
            -- a socket file nothing listens on: a server that died without cleaning up
            assert.equal(0, peer("/usr/bin/python3", { "-c",
                "import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])", path }))
            assert.is_true(exists(path))
            local srv <close> = assert(app_under_test():listen{ path = path })
            local out = dir .. "/1.out"
            assert.equal(0, peer("/usr/bin/curl", { "-sS", "--unix-socket", path, "-o", out,
                "http://localhost/echo?x=stale" }))
            assert.equal("x=stale", slurp(out))
            -- a live one is another server's: nil, "listen: ...", and it keeps its file
            local again, err = app_under_test():listen{ path = path }
            assert.is_nil(again)
            assert.matches("^listen: .*unix:" .. path:gsub("%p", "%%%0"), err)
            assert.equal(0, peer("/usr/bin/curl", { "-sS", "--unix-socket", path, "-o", out,
                "http://localhost/echo?x=live" }))
            assert.equal("x=live", slurp(out))
            -- not a socket at all: left as it is
            local plain = dir .. "/plain"
            assert(io.open(plain, "w")):close()
            local s2, err2 = app_under_test():listen{ path = plain }
            assert.is_nil(s2)
            assert.matches("^listen: ", err2)
            assert.is_true(exists(plain))
        end, { timeout = 30 })
    end)

    it("misuse raises naming the option", function()
        local app = loom.app()
        assert.error_matches(function() app:listen{ path = 1 } end, "option 'path': string expected, got number")
        assert.error_matches(function() app:listen{ path = "/tmp/x.sock", mode = "rw" } end, "option 'mode'")
        assert.error_matches(function() app:listen{ path = "/tmp/x.sock", mode = 8192 } end, "option 'mode'")
        assert.error_matches(function() app:listen{ mode = "0660" } end, "option 'mode': only with 'path'")
        assert.error_matches(function() app:run{ path = "/tmp/x.sock", workers = 2 } end, "option 'path'")
    end)
end)

describe("app:listen{ max_conns_per_ip }", function()
    -- A raw connection that has been answered once (so the server has surely accepted it).
    local function open_answered(srv)
        local st = assert(loom.connect("127.0.0.1", srv.port))
        local r = testing.reader(st)
        assert(st:write("GET /echo?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
        local res = assert(r:response())
        return st, r, res
    end

    it("answers 503 and closes a connection over the cap; the count drops as connections close", function()
        run(function()
            local srv <close> = assert(app_under_test():listen{ host = "127.0.0.1", port = 0,
                max_conns_per_ip = 2 })
            local a, _, ra = open_answered(srv)
            local b, _, rb = open_answered(srv)
            assert.equal(200, ra.status)
            assert.equal(200, rb.status)
            -- the third from the same address: refused at once, before any request
            local c <close> = assert(loom.connect("127.0.0.1", srv.port))
            local rc = testing.reader(c)
            local res = assert(rc:response())
            assert.equal(503, res.status)
            assert.equal("close", res.headers.connection)
            assert.equal("", loom.timeout(timing.guard(1), function() return rc:rest() end))
            -- one of the two closes: a new one is let in
            a:close()
            timing.poll(function() return srv.connections <= 1 end, 0.1, "the closed connection gone")
            local d, _, rd = open_answered(srv)
            assert.equal(200, rd.status)
            d:close()
            b:close()
        end, { timeout = 30 })
    end)

    it("misuse raises naming the option", function()
        local app = loom.app()
        local positive = "bad argument #1 to 'listen' %(option 'max_conns_per_ip': positive integer expected%)"
        assert.error_matches(function() app:listen{ max_conns_per_ip = 0 } end, positive)
        assert.error_matches(function() app:listen{ max_conns_per_ip = 1.5 } end, positive)
        assert.error_matches(function() app:listen{ max_conns_per_ip = "2" } end,
            "option 'max_conns_per_ip': number expected, got string")
    end)
end)
