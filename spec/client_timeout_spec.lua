-- Client timeouts against servers that stall: each fires no sooner than its value (and,
-- as a guard against a hang, within a few times it: support.timing; a loaded machine adds
-- seconds to any wait), gives nil, "timeout: ...", and lets the connection go (the server
-- sees it closed, the pool has nothing in use).
local loom = require "loom"
local run = require "support.run"
local util = require "support.client_util"
local timing = require "support.timing"
local resolver = require "loom.resolver"

setup(function() util.warm_default() end)

-- Runs fn, returns its results and the seconds it took.
local function timed(fn)
    local t0 = loom.now()
    local r = table.pack(fn())
    return loom.now() - t0, table.unpack(r, 1, r.n)
end

local function within(secs, value)
    timing.within(secs, value * 0.98, value, "timed out")
end

-- A server that answers what `answer` writes, then stalls; `closed` is set when the
-- client hangs up.
local function stalling(answer)
    local closed = loom.event()
    local srv, base = util.raw_server(function(st, req)
        if answer then answer(st, req) end
        while st:read() do end -- until the client lets go
        closed:set()
        return "close"
    end)
    return srv, base, closed
end

describe("timeouts", function()
    it("read_timeout: no response head", function()
        run(function()
            local srv <close>, base, closed = stalling()
            local s <close> = loom.session()
            local secs, res, err = timed(function() return s:get(base .. "/", { read_timeout = 0.5 }) end)
            assert.is_nil(res)
            assert.equal("timeout: no response from " .. base .. " within 0.5s", err)
            within(secs, 0.5)
            closed:wait()
            assert.equal(0, s:stats().active)
        end)
    end)

    it("read_timeout: a body that stops coming", function()
        run(function()
            local srv <close>, base, closed = stalling(function(st)
                st:write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
            end)
            local s <close> = loom.session()
            local secs, res, err = timed(function() return s:get(base .. "/", { read_timeout = 0.5 }) end)
            assert.is_nil(res)
            assert.equal("timeout: no data from " .. base .. " within 0.5s", err)
            within(secs, 0.5)
            closed:wait()
            assert.equal(0, s:stats().active)
            -- the same with stream = true: the head comes, a chunk read times out
            local r = assert(s:get(base .. "/", { read_timeout = 0.5, stream = true }))
            local it = r:chunks()
            assert.equal("part", it())
            local ok, e = pcall(it)
            assert.is_false(ok)
            assert.matches("^timeout: no data from", e)
        end)
    end)

    it("timeout: the total, while bytes trickle in", function()
        run(function()
            -- a byte every 50 ms until the client hangs up, of a body that never ends: only the
            -- total timeout can end this, however slow the machine (read_timeout, 20 times the
            -- pace, leaves a stalled loop room: bytes late by tenths must not end it)
            local srv <close>, base, closed = stalling(function(st)
                st:write("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                repeat loom.sleep(0.05) until not st:write("x")
            end)
            local s <close> = loom.session()
            local secs, res, err = timed(function()
                return s:get(base .. "/", { timeout = 2, read_timeout = 1 })
            end)
            assert.is_nil(res)
            assert.equal("timeout: request took longer than its total timeout (" .. base .. ")", err)
            within(secs, 2)
            closed:wait()
            assert.equal(0, s:stats().active)
        end)
    end)

    it("connect_timeout: a listener that never answers", function()
        local port = util.free_port()
        local p = assert(io.popen("python3 spec/fixtures/client_blackhole.py " .. port))
        local pid = tonumber(p:read("l"):match("ready (%d+)"))
        run(function()
            local s <close> = loom.session()
            local secs, res, err = timed(function()
                return s:get("http://127.0.0.1:" .. port .. "/", { connect_timeout = 0.5 })
            end)
            assert.is_nil(res)
            assert.equal("timeout: connect to 127.0.0.1:" .. port, err)
            within(secs, 0.5)
            assert.equal(0, s:stats().active)
        end)
        util.stop_process(pid)
        p:close()
    end)

    it("connect_timeout: waiting for a pooled connection", function()
        run(function()
            local srv <close>, base, closed = stalling(function(st)
                st:write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            end)
            local s <close> = loom.session{ max_per_host = 1 }
            local held = assert(s:get(base .. "/", { stream = true }))
            local secs, res, err = timed(function() return s:get(base .. "/", { connect_timeout = 0.5 }) end)
            assert.is_nil(res)
            assert.equal("timeout: waiting for a free connection to " .. base .. " for 0.5s", err)
            within(secs, 0.5)
            held:close()
            closed:wait()
            assert.equal(0, s:stats().active)
        end)
    end)

    it("timeout: for a lookup slower than the connect timeout", function()
        run(function()
            resolver.flush()
            local res, err = loom.fetch("http://localhost:9/", { connect_timeout = 0 })
            assert.is_nil(res)
            assert.equal("timeout: dns lookup of localhost", err)
        end)
    end)
end)
