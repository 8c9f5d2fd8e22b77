-- loom.shared's lock and increments under several processes: real loom hosts as children
-- (core.process_spawn of build/loom), incrementing one dict at the same time, dying while
-- holding the lock while another process waits on it, and a dead holder that is still a
-- zombie (its parent busy, not reaping it). The basics (get, set, ttl, add, LRU) are in
-- spec/runtime_spec.lua.
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

local function tmpdir()
    local p = io.popen("mktemp -d")
    local d = p:read("l")
    p:close()
    return d
end

local function spit(path, s)
    local f = assert(io.open(path, "wb"))
    f:write(s)
    f:close()
end

local function slurp(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return s
end

-- The state letter of process pid in /proc ("R", "S", "Z", ...), or nil once it is gone.
local function proc_state(pid)
    local s = slurp("/proc/" .. pid .. "/stat")
    return s and s:match("%) (%a)")
end

-- A child host running `src` (which sees its dict under the name given), with RT_MODE set.
local child = [[
    local d = assert(loom.shared("sh_spec", 1 << 20))
    local mode = os.getenv("RT_MODE")
    if mode == "incr" then
        -- every child creates the key with init: only one may, the others add to it
        for _ = 1, 30000 do assert(d:incr("n", 1, 0)) end
        for _ = 1, 1000 do assert(d:incr("f", 0.5, 0)) end
    elseif mode == "die_locked" then
        d:_crash("locked"); d:get("n")
    elseif mode == "stress_incr" or mode == "stress_fill" then
        local s = assert(loom.shared("sh_stress", 1 << 16))
        local keys = { "c1", "c2", "c3", "c4" }
        local deadline = os.time() + 30
        while not s:get("ready") do assert(os.time() < deadline, "the filler never started") end
        if mode == "stress_incr" then
            for i = 1, 200000 do
                assert(s:incr(keys[i % 4 + 1], 1, 0))
                if i % 16 == 0 then s:incr("tmp", 1) end -- present or not, int or float
            end
        else
            -- values that check themselves: "f<j>:<j>:" then a pattern made from j
            local function value(j)
                return ("%d:"):format(j) .. string.rep(string.char(65 + j % 26), 40 + j % 200)
            end
            local function check(k)
                local v = s:get(k)
                if v then
                    local j = assert(tonumber(v:match("^(%d+):")), v)
                    assert(v == value(j), "entry " .. k .. " was overwritten: " .. v)
                end
            end
            local j = 0
            while not s:get("stop") do
                assert(os.time() < deadline, "the incrementers never finished")
                j = j + 1
                assert(s:set("f" .. j % 300, value(j)))
                check("f" .. (j * 7) % 300)
                -- the counters and "ready" stay recently used: only the filler's keys go
                for _, k in ipairs(keys) do s:get(k) end
                s:get("ready")
                local t = j % 24
                if t == 0 then s:set("tmp", 0) elseif t == 8 then s:delete("tmp")
                elseif t == 12 then s:set("tmp", 0.5) elseif t == 20 then s:delete("tmp") end
            end
            for k = 0, 299 do check("f" .. k) end
        end
    end
]]

describe("loom.shared across processes", function()
    local dir, d
    setup(function()
        dir = tmpdir()
        spit(dir .. "/child.lua", child)
        d = assert(loom.shared("sh_spec", 1 << 20))
    end)
    teardown(function() os.execute("rm -rf " .. dir) end)

    local function spawn(mode)
        core.setenv("RT_MODE", mode)
        return assert(core.process_spawn(LOOM, { dir .. "/child.lua" }))
    end

    it("counts exactly when three processes increment one key they race to create", function()
        run(function()
            d:delete("n")
            d:delete("f")
            local p1, p2 = spawn("incr"), spawn("incr")
            for _ = 1, 30000 do assert(d:incr("n", 1, 0)) end
            for _ = 1, 1000 do assert(d:incr("f", 0.5, 0)) end
            assert.same({ 0 }, { p1:wait() })
            assert.same({ 0 }, { p2:wait() })
            assert.equal(90000, d:get("n"))
            assert.equal("integer", math.type(d:get("n")))
            assert.equal(1500.0, d:get("f"))
        end, { timeout = 60 })
    end)

    -- Two processes increment four counters (lock-free once each knows their cells) and a
    -- key that a third keeps deleting, re-making and turning float, while that third fills
    -- the dict with strings so that entries are evicted and their cells reused all along:
    -- no increment is lost, and none lands in a cell that meanwhile holds something else.
    it("counts exactly while cells are freed, reused and evicted under the increments", function()
        run(function()
            local s = assert(loom.shared("sh_stress", 1 << 16))
            local filler = spawn("stress_fill")
            local p1, p2 = spawn("stress_incr"), spawn("stress_incr")
            assert(s:set("ready", true))
            assert.same({ 0 }, { p1:wait() })
            assert.same({ 0 }, { p2:wait() })
            assert(s:set("stop", true))
            assert.same({ 0 }, { filler:wait() })
            local total = 0
            for _, k in ipairs({ "c1", "c2", "c3", "c4" }) do
                assert.equal("integer", math.type(s:get(k)))
                total = total + s:get(k)
            end
            assert.equal(400000, total)
            assert.is_true(s:stats().evictions > 100, "the filler evicted entries")
        end, { timeout = 90 })
    end)

    it("hands the lock of a holder killed in it to a process sleeping on it", function()
        run(function()
            assert(d:set("n", 0))
            local killer = spawn("die_locked")
            local p1, p2 = spawn("incr"), spawn("incr")
            assert.same({ 0 }, { p1:wait() })
            assert.same({ 0 }, { p2:wait() })
            local code, sig = killer:wait()
            assert.equal("SIGKILL", sig, code)
            assert.equal(60000, d:get("n"))
        end, { timeout = 60 })
    end)

    it("takes the lock over from a dead holder its parent has not reaped yet", function()
        run(function()
            assert(d:set("n", 7))
            local p = spawn("die_locked")
            -- busy here (the loop does not run, so nothing reaps the child) until it is a
            -- zombie holding the lock; then increment: the lock must be taken over
            local deadline = os.time() + 20
            while proc_state(p.pid) ~= "Z" do
                assert(os.time() < deadline, "the child never died")
            end
            assert.equal(8, d:incr("n", 1))
            assert.equal("Z", proc_state(p.pid))
            local code, sig = p:wait()
            assert.equal("SIGKILL", sig, code)
        end, { timeout = 60 })
    end)
end)

describe("loom.shared increments a process has seen before", function()
    -- The second d:incr of a key takes the lock-free path: these check that it gives way to
    -- whatever changed the key meanwhile, and that eviction still sees the key in use.
    it("follow deletes, sets, floats and ttls, and keep a key in use from eviction", function()
        run(function()
            local d = assert(loom.shared("sh_spec_fast", 16384))
            assert.equal(1, d:incr("x", 1, 0))
            assert.equal(2, d:incr("x", 1, 0))
            assert(d:delete("x"))
            assert.same({ nil, "not found" }, { d:incr("x", 1) })
            assert(d:set("x", 10))
            assert.equal(11, d:incr("x", 1))
            assert.equal(11.5, d:incr("x", 0.5))
            assert.equal(12.5, d:incr("x", 1))
            assert.equal("float", math.type(d:get("x")))
            assert(d:set("x", "text"))
            assert.same({ nil, "not a number" }, { d:incr("x", 1) })
            -- a ttl of 0.3 s: increments do not extend it, and after it the key starts over
            assert.equal(1, d:incr("t", 1, 0, 0.3))
            assert.equal(2, d:incr("t", 1, 0, 0.3))
            loom.sleep(0.4)
            assert.equal(1, d:incr("t", 1, 0, 0.3))
            -- fill the dict several times over while "hot" is only ever incremented
            local v = ("x"):rep(100)
            assert.equal(1, d:incr("hot", 1, 0))
            local n = 1
            for i = 1, 3 * d:stats().cells do
                assert(d:set("k" .. i, v))
                if i % 10 == 0 then
                    n = n + 1
                    assert.equal(n, d:incr("hot", 1, 0))
                end
            end
            assert.is_true(d:stats().evictions > d:stats().cells)
            assert.equal(n, d:get("hot"))
        end)
    end)
end)

describe("loom.shared methods", function()
    -- (called as methods, a:incr(k, ...), Lua numbers the arguments after self from 1)
    it("raise on misuse naming the argument, and serve any dict given as self", function()
        run(function()
            local a = assert(loom.shared("sh_spec_a", 1 << 16))
            local b = assert(loom.shared("sh_spec_b", 1 << 16))
            assert(b:set("k", "from b"))
            assert.equal("from b", a.get(b, "k"))
            assert.equal(3, a.incr(b, "c", 1, 2))
            assert.is_nil(a:get("c"))
            assert.has_error(function() a.incr("k", 1) end,
                "bad argument #1 to 'incr' (loom.shared expected, got string)")
            assert.has_error(function() a.get({}, "k") end,
                "bad argument #1 to 'get' (loom.shared expected, got table)")
            assert.has_error(function() a:incr("c", "x") end,
                "bad argument #2 to 'incr' (number expected, got string)")
            assert.has_error(function() a:incr("c", 1, {}) end,
                "bad argument #3 to 'incr' (number expected, got table)")
            assert.has_error(function() a:incr("c", 1, 0, -1) end,
                "bad argument #4 to 'incr' (ttl must be >= 0)")
            assert.has_error(function() a:incr("", 1) end,
                "bad argument #1 to 'incr' (key of 1 to 65535 bytes expected)")
            assert.has_error(function() a:incr(nil, 1) end,
                "bad argument #1 to 'incr' (string expected, got nil)")
            -- a numeric string is a number, as everywhere in Lua's API
            assert.equal(5, a:incr("s", 2, "3"))
            assert.equal(5.5, a:incr("s", 0.5))
            assert.equal(2.0, a:incr("t", 1.0, 1))
            assert.equal("float", math.type(a:get("t")))
            assert.same({ nil, "not found" }, { a:incr("none", 1, nil, 5) })
            assert.is_true(tostring(a):find("^loom.shared") ~= nil)
        end)
    end)
end)
