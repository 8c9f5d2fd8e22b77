-- Pipelined answers in one write (issue 12 item 4): when one read brings several requests
-- whose handlers finish in the same loop turn, the engine corks the connection's socket and
-- their answers leave in one write, in order; a handler that takes longer holds back only
-- the answers after it. A Python client (spec/fixtures/pipeline_peer.py) counts the TCP
-- data segments the answers arrived in (TCP_INFO), which is the number of writes: one
-- write per answer sends one segment each on loopback (TCP_NODELAY).
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"
local testing = require "loom.testing"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"

local function app_under_test(gate)
    local app = loom.app()
    app:get("/n/{i}", function(req) return req.params.i end)
    app:get("/s/{i}", function(req)
        -- a streamed head and a short body written in the same turn
        local out = assert(req:stream{ headers = { ["content-length"] = #req.params.i } })
        assert(out:write(req.params.i))
    end)
    app:get("/big/{i}", function(req) return string.rep(req.params.i, 200 * 1024) end)
    app:get("/slow/{i}", function(req)
        gate.entered:set()
        gate.open:wait()
        return req.params.i
    end)
    return app
end

-- Runs the peer against srv: returns the data segments the n answers came in.
local function peer_segments(srv, n, path)
    local p = assert(core.process_spawn("/usr/bin/python3",
        { here .. "/fixtures/pipeline_peer.py", tostring(srv.port), tostring(n), path }))
    local code, signal = p:wait()
    assert.is_nil(signal)
    assert(code ~= 200, "the peer found the answers wrong (its stderr says how)")
    assert(code > 100 and code < 200, "python3 could not run the peer (exit " .. tostring(code) .. ")")
    return code - 100
end

describe("pipelined answers", function()
    it("16 requests in one write are answered in one write, in order", function()
        run(function()
            local srv <close> = assert(app_under_test({}):listen{ host = "127.0.0.1", port = 0 })
            assert.equal(1, peer_segments(srv, 16, "/n/"))
            -- and again on the same server: nothing was left corked
            assert.equal(1, peer_segments(srv, 4, "/n/"))
        end, { timeout = 30 })
    end)

    it("a streamed head and its short body leave in one write", function()
        run(function()
            local srv <close> = assert(app_under_test({}):listen{ host = "127.0.0.1", port = 0 })
            assert.equal(1, peer_segments(srv, 1, "/s/"))
            assert.equal(1, peer_segments(srv, 8, "/s/"))
        end, { timeout = 30 })
    end)

    it("a slow handler in the middle holds back only the answers after it", function()
        run(function()
            local gate = { entered = loom.event(), open = loom.event() }
            local srv <close> = assert(app_under_test(gate):listen{ host = "127.0.0.1", port = 0 })
            local st <close> = assert(loom.connect("127.0.0.1", srv.port))
            local r = testing.reader(st)
            local paths = { "/n/1", "/n/2", "/slow/3", "/n/4", "/n/5" }
            local wire = {}
            for i, p in ipairs(paths) do
                wire[i] = "GET " .. p .. " HTTP/1.1\r\nHost: x\r\n\r\n"
            end
            assert(st:write(table.concat(wire)))
            -- the answers before the slow handler arrive while it still waits
            for i = 1, 2 do
                local res = assert(r:response())
                assert.equal(200, res.status)
                assert.equal(tostring(i), res.body)
            end
            gate.entered:wait()
            assert.same({ nil, "timeout" }, { loom.timeout(0.2, r.response, r) })
            gate.open:set()
            for i = 3, 5 do
                local res = assert(r:response())
                assert.equal(tostring(i), res.body)
            end
        end, { timeout = 30 })
    end)

    it("an answer bigger than the cork in the middle of a pipeline keeps the order", function()
        run(function()
            local srv <close> = assert(app_under_test({}):listen{ host = "127.0.0.1", port = 0 })
            local st <close> = assert(loom.connect("127.0.0.1", srv.port))
            local r = testing.reader(st)
            local paths = { "/n/1", "/big/2", "/n/3", "/big/4", "/n/5" }
            local wire = {}
            for i, p in ipairs(paths) do
                wire[i] = "GET " .. p .. " HTTP/1.1\r\nHost: x\r\n\r\n"
            end
            assert(st:write(table.concat(wire)))
            for i, p in ipairs(paths) do
                local res = assert(r:response())
                local want = p:find("big", 1, true) and string.rep(tostring(i), 200 * 1024) or tostring(i)
                assert.equal(#want, #res.body)
                assert(res.body == want, "answer " .. i .. " is not " .. p .. "'s")
            end
        end, { timeout = 30 })
    end)

    it("answers gathered before the peer's end still go out", function()
        run(function()
            local srv <close> = assert(app_under_test({}):listen{ host = "127.0.0.1", port = 0 })
            local st <close> = assert(loom.connect("127.0.0.1", srv.port))
            local r = testing.reader(st)
            local wire = {}
            for i = 1, 5 do
                wire[i] = "GET /n/" .. i .. " HTTP/1.1\r\nHost: x\r\n\r\n"
            end
            assert(st:write(table.concat(wire)))
            assert(st:shutdown())
            for i = 1, 5 do
                assert.equal(tostring(i), assert(r:response()).body)
            end
            assert.equal("", r:rest())
        end, { timeout = 30 })
    end)
end)
