-- Server-side faults, each followed by proof that the process still serves and that the
-- fault left nothing behind: a peer that resets (RST) in the middle of a request head, of a
-- request body, of a response; a client that leaves while its handler runs; handlers that
-- raise, loop on yields, sleep forever or never return (handler_timeout).
--
-- Resets come from spec/support/rst_peer.py, a Python client the spec drives line by line
-- (a loom stream closes with FIN). After each fault: a fresh request is answered, the
-- server's connection count is back to 0, the libuv handles are back to what they were
-- before the fault, the handler's task has ended (a <close> variable in it says so), and
-- support.run checks that no task, timer or handle is left. File-descriptor exhaustion is
-- spec/smoke/fault_fds.sh (it needs `ulimit -n` on a process of its own).
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"
local testing = require "loom.testing"

local SRC = os.getenv("LOOM_SRC") or "."
local GET = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"

-- A Python client on 127.0.0.1:port, driven by the commands of rst_peer.py. peer:finish()
-- ends its input and waits for it to exit (blocking, briefly: every read of the peer gives
-- up after 5 s), so what it was told has happened once finish returns.
local function peer(port)
    local p = assert(io.popen("exec python3 " .. SRC .. "/spec/support/rst_peer.py", "w"))
    local self = {}
    function self.cmd(...)
        for _, line in ipairs({ ... }) do p:write(line, "\n") end
        p:flush()
    end
    function self.finish()
        assert(p:close(), "rst_peer failed (its message is on stderr)")
    end
    self.cmd("connect " .. port)
    return self
end

-- Waits until cond() holds: there is no event for a connection count or a handle count, so
-- it is polled, up to `secs` (3).
local function wait_until(cond, what, secs)
    local deadline = loom.now() + (secs or 3)
    while not cond() do
        if loom.now() > deadline then error("timed out waiting for " .. what, 2) end
        loom.sleep(0.005)
    end
end

-- A <close> marker for a handler: ended.n counts handler frames left, however they were
-- left (a return, an error, a cancellation).
local function marker(ended)
    return setmetatable({}, { __close = function() ended.n = ended.n + 1 end })
end

-- The fault is over: the server answers a fresh request, holds no connection, and the loop
-- holds no more handles than `base` (taken before the fault, with the server listening).
local function assert_recovered(srv, base)
    local st <close> = assert(loom.connect("127.0.0.1", srv.port))
    assert(st:write("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
    local res = assert(testing.reader(st):response())
    assert.equal(200, res.status)
    assert.equal("ok", res.body)
    st:close()
    wait_until(function() return srv.connections == 0 end, "the server's connections to close")
    wait_until(function() return core.stats().handles == base end, "the handles to be released")
end

-- Runs body(srv, base) with app listening on 127.0.0.1, port 0 (GET / answers "ok").
local function serve(app, body, opts)
    app:get("/", function() return "ok" end)
    run(function()
        local srv = assert(app:listen{ host = "127.0.0.1", port = 0 })
        local _ <close> = run.defer(function() srv:close(0) end)
        return body(srv, core.stats().handles)
    end, opts)
end

describe("fault: the peer resets", function()
    it("in the middle of a request head: the connection goes, no handler runs", function()
        local app, calls = loom.app(), 0
        app:get("/never", function() calls = calls + 1 end)
        serve(app, function(srv, base)
            local p = peer(srv.port)
            p.cmd("send GET /never HTTP/1.1\\r\\nHost: t\\r\\nX-Long: aaaa")
            wait_until(function() return srv.connections == 1 end, "the connection")
            p.cmd("rst")
            p.finish()
            wait_until(function() return srv.connections == 0 end, "the reset connection to close")
            assert.equal(0, calls)
            assert_recovered(srv, base)
        end)
    end)

    it("while the handler waits in req:text(): it gets nil, 'closed: ...' and ends", function()
        local app, ended = loom.app(), { n = 0 }
        local entered, done, got = loom.event(), loom.event(), nil
        app:post("/text", function(req)
            local _ <close> = marker(ended)
            entered:set()
            got = table.pack(req:text())
            done:set()
            return "unheard"
        end)
        serve(app, function(srv, base)
            local p = peer(srv.port)
            p.cmd("send POST /text HTTP/1.1\\r\\nHost: t\\r\\nContent-Length: 100\\r\\n\\r\\n0123456789")
            entered:wait() -- the handler is parked in req:text() by the time this returns
            p.cmd("rst")
            p.finish()
            assert(loom.timeout(3, function() return done:wait() end), "req:text() did not return")
            assert.is_nil(got[1])
            assert.matches("^closed: ", got[2])
            wait_until(function() return ended.n == 1 end, "the handler to end")
            assert_recovered(srv, base)
        end)
    end)

    it("before the handler asked for the body: its later read fails with 'closed: ...'", function()
        local app, ended = loom.app(), { n = 0 }
        local entered, go, done, got = loom.event(), loom.event(), loom.event(), nil
        app:post("/late", function(req)
            local _ <close> = marker(ended)
            entered:set()
            go:wait()
            got = table.pack(req:text())
            done:set()
        end)
        serve(app, function(srv, base)
            local p = peer(srv.port)
            p.cmd("send POST /late HTTP/1.1\\r\\nHost: t\\r\\nContent-Length: 100\\r\\n\\r\\n0123456789")
            entered:wait()
            p.cmd("rst")
            p.finish()
            go:set()
            assert(loom.timeout(3, function() return done:wait() end), "req:text() did not return")
            assert.is_nil(got[1])
            assert.matches("^closed: ", got[2])
            wait_until(function() return ended.n == 1 end, "the handler to end")
            assert_recovered(srv, base)
        end)
    end)

    it("while the handler loops on req:chunks(): the loop raises 'closed: ...'", function()
        local app, ended = loom.app(), { n = 0 }
        local first, done, result = loom.event(), loom.event(), {}
        app:put("/chunks", function(req)
            local _ <close> = marker(ended)
            result.n = 0
            result.ok, result.err = pcall(function()
                for piece in req:chunks() do
                    result.n = result.n + #piece
                    first:set()
                end
            end)
            done:set()
        end)
        serve(app, function(srv, base)
            local p = peer(srv.port)
            p.cmd("send PUT /chunks HTTP/1.1\\r\\nHost: t\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n"
                .. "5\\r\\nhello\\r\\n")
            first:wait() -- the loop took "hello" and waits for the next piece
            p.cmd("rst")
            p.finish()
            assert(loom.timeout(3, function() return done:wait() end), "req:chunks() did not end")
            assert.equal(5, result.n)
            assert.is_false(result.ok)
            assert.matches("closed: ", result.err)
            wait_until(function() return ended.n == 1 end, "the handler to end")
            assert_recovered(srv, base)
        end)
    end)

    it("in the middle of a large response body: the connection goes, its buffers too", function()
        local app, ended = loom.app(), { n = 0 }
        local size = 8 * 1024 * 1024
        local answered = loom.event()
        app:get("/big", function()
            local _ <close> = marker(ended)
            answered:set()
            return ("x"):rep(size)
        end)
        serve(app, function(srv, base)
            local p = peer(srv.port)
            p.cmd("send GET /big HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n", "recv 65536")
            answered:wait()
            assert.equal(1, srv.connections)
            p.cmd("rst")
            p.finish()
            wait_until(function() return srv.connections == 0 end, "the reset connection to close")
            assert.equal(1, ended.n)
            assert_recovered(srv, base)
        end)
    end)

    it("in the middle of a streamed response: out:write gives nil, 'closed: ...'", function()
        local app, ended = loom.app(), { n = 0 }
        local started, done, result = loom.event(), loom.event(), { writes = 0 }
        app:get("/stream", function(req)
            local _ <close> = marker(ended)
            local out = assert(req:stream{ headers = { ["content-type"] = "text/plain" } })
            started:set()
            local piece = ("y"):rep(65536)
            repeat
                result.ok, result.err = out:write(piece)
                if result.ok then result.writes = result.writes + 1 end
            until not result.ok or result.writes > 100000
            done:set()
        end)
        serve(app, function(srv, base)
            local p = peer(srv.port)
            p.cmd("send GET /stream HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n", "recv 65536")
            started:wait()
            p.cmd("rst")
            p.finish()
            assert(loom.timeout(3, function() return done:wait() end), "out:write kept succeeding")
            assert.is_nil(result.ok)
            assert.matches("^closed: ", result.err)
            wait_until(function() return ended.n == 1 end, "the handler to end")
            assert_recovered(srv, base)
        end)
    end)
end)
