-- Tasks: spawn, join, cancel, sleep, gather, timeout, queue, semaphore, event, now, json,
-- misuse, and blocking calls made where they cannot wait.
local loom = require "loom"
local run = require "support.run"
local timing = require "support.timing"

local pack = table.pack

-- A to-be-closed value that records that it was closed, and with which error.
local function closer(log, name)
    return setmetatable({}, {
        __close = function(_, err)
            log[#log + 1] = name .. ":" .. tostring(err)
        end,
    })
end

describe("loom.spawn and task:join", function()
    it("starts the task on the next tick, with its arguments", function()
        run(function()
            local started = false
            local t = loom.spawn(function(a, b)
                started = true
                return a + b, "x"
            end, 1, 2)
            assert.is_false(started)
            assert.is_false(t:done())
            assert.same({ true, 3, "x" }, { t:join() })
            assert.is_true(started)
            assert.is_true(t:done())
        end)
    end)

    it("keeps nils among the results", function()
        run(function()
            local r = pack(loom.spawn(function() return nil, 2, nil end):join())
            assert.equal(4, r.n)
            assert.same({ true, nil, 2, nil }, { r[1], r[2], r[3], r[4] })
            assert.same({ true }, { loom.spawn(function() end):join() })
        end)
    end)

    it("gives every joiner the results, and join may be called again", function()
        run(function()
            local go = loom.event()
            local t = loom.spawn(function()
                go:wait()
                return 42, "x"
            end)
            local joiners = {}
            for i = 1, 3 do
                joiners[i] = loom.spawn(function() return t:join() end)
            end
            loom.sleep(0) -- every joiner is now waiting
            for i = 1, 3 do assert.is_false(joiners[i]:done()) end
            go:set()
            for i = 1, 3 do
                assert.same({ true, true, 42, "x" }, { joiners[i]:join() })
            end
            assert.same({ true, 42, "x" }, { t:join() })
            assert.same({ true, 42, "x" }, { t:join() })
        end)
    end)

    it("gives false, err for a task that raised, keeping the error value", function()
        run(function()
            local t = loom.spawn(function() error("boom") end)
            local ok, err = t:join()
            assert.is_false(ok)
            assert.matches("boom", err)
            assert.matches("boom", t:traceback())
            local obj = { code = 7 }
            local ok2, err2 = loom.spawn(function() error(obj) end):join()
            assert.is_false(ok2)
            assert.equal(obj, err2)
        end)
    end)

    it("ends a task whose error object's __tostring raises or yields (join gives it back)", function()
        run(function()
            local raising = setmetatable({}, { __tostring = function() error("x") end })
            local yielding = setmetatable({}, { __tostring = function() coroutine.yield() return "y" end })
            for _, obj in ipairs({ raising, yielding }) do
                local t = loom.spawn(function() error(obj) end)
                assert.same({ false, obj }, { t:join() })
                assert.matches("error object is a table value", t:traceback(), 1, true)
            end
            -- a __tostring that works still gives the message
            local fine = setmetatable({}, { __tostring = function() return "fine message" end })
            local t = loom.spawn(function() error(fine) end)
            assert.same({ false, fine }, { t:join() })
            assert.matches("fine message", t:traceback(), 1, true)
        end, { timeout = 5 })
    end)

    it("loom.current() is the running task", function()
        run(function()
            local me
            local t = loom.spawn(function() me = loom.current() end)
            t:join()
            assert.equal(t, me)
            assert.is_not_nil(loom.current())
        end)
        assert.is_nil(loom.current())
    end)

    it("a task that joins itself raises", function()
        run(function()
            local t
            t = loom.spawn(function() return t:join() end)
            local ok, err = t:join()
            assert.is_false(ok)
            assert.matches("join: a task cannot join itself", err)
        end)
    end)

    it("runs many tasks", function()
        run(function()
            local n, tasks = 0, {}
            for i = 1, 1000 do
                tasks[i] = loom.spawn(function()
                    loom.sleep(0)
                    n = n + 1
                    return i
                end)
            end
            for i = 1, 1000 do assert.same({ true, i }, { tasks[i]:join() }) end
            assert.equal(1000, n)
        end)
    end)
end)

describe("task:cancel", function()
    it("raises cancelled in the task; join gives false, 'cancelled'", function()
        run(function()
            local reached = false
            -- a sleep far past the hang guard: a cancel that waited it out cannot pass
            local t = loom.spawn(function()
                loom.sleep(60)
                reached = true
            end)
            loom.sleep(0)
            local t0 = loom.now()
            t:cancel()
            assert.same({ false, "cancelled" }, { t:join() })
            assert.is_false(reached)
            assert.is_true(loom.now() - t0 < timing.guard(0), "cancel waited for the sleep")
        end)
    end)

    it("ends a task that only calls coroutine.yield(): its <close> variables run", function()
        run(function()
            local spins, closed = 0, false
            local t = loom.spawn(function()
                local _ <close> = setmetatable({}, { __close = function() closed = true end })
                while true do
                    spins = spins + 1
                    coroutine.yield()
                end
            end)
            loom.sleep(0)
            loom.sleep(0)
            assert(spins >= 2, "the task ran between the sleeps")
            t:cancel()
            assert.same({ false, "cancelled" }, { t:join() })
            assert.is_true(closed)
            local at = spins
            loom.sleep(0)
            loom.sleep(0)
            assert.equal(at, spins)
        end)
    end)

    it("is harmless on a finished task, and when repeated", function()
        run(function()
            local t = loom.spawn(function() return "done" end)
            assert.same({ true, "done" }, { t:join() })
            t:cancel()
            t:cancel()
            assert.same({ true, "done" }, { t:join() })
            local u = loom.spawn(function() loom.sleep(5) end)
            loom.sleep(0)
            u:cancel()
            u:cancel()
            assert.same({ false, "cancelled" }, { u:join() })
            u:cancel()
            assert.same({ false, "cancelled" }, { u:join() })
        end)
    end)

    it("lets pcall see the error, and the task may carry on", function()
        run(function()
            local seen
            local t = loom.spawn(function()
                local ok, err = pcall(loom.sleep, 5)
                seen = { ok, err }
                return "after"
            end)
            loom.sleep(0)
            t:cancel()
            assert.same({ true, "after" }, { t:join() })
            assert.same({ false, "cancelled" }, seen)
        end)
    end)

    it("runs <close> variables, innermost first, with the error", function()
        run(function()
            local log = {}
            local t = loom.spawn(function()
                local a <close> = closer(log, "a")
                local b <close> = closer(log, "b")
                loom.sleep(5)
            end)
            loom.sleep(0)
            t:cancel()
            assert.same({ false, "cancelled" }, { t:join() })
            assert.same({ "b:cancelled", "a:cancelled" }, log)
        end)
    end)

    it("runs <close> variables when a task raises", function()
        run(function()
            local log = {}
            local t = loom.spawn(function()
                local a <close> = closer(log, "a")
                loom.sleep(0)
                error("oops", 0)
            end)
            assert.same({ false, "oops" }, { t:join() })
            assert.same({ "a:oops" }, log)
        end)
    end)

    it("before the task started: the function never runs", function()
        run(function()
            local ran = false
            local t = loom.spawn(function() ran = true end)
            t:cancel()
            assert.same({ false, "cancelled" }, { t:join() })
            assert.is_false(ran)
        end)
    end)

    it("of the running task is delivered at its next wait", function()
        run(function()
            local steps = {}
            local t = loom.spawn(function()
                loom.current():cancel()
                steps[#steps + 1] = "still running"
                loom.sleep(0)
                steps[#steps + 1] = "never"
            end)
            assert.same({ false, "cancelled" }, { t:join() })
            assert.same({ "still running" }, steps)
        end)
    end)

    it("of a task waiting in join leaves the joined task alone", function()
        run(function()
            local go = loom.event()
            local target = loom.spawn(function() go:wait() return 1 end)
            local joiner = loom.spawn(function() return target:join() end)
            loom.sleep(0)
            joiner:cancel()
            assert.same({ false, "cancelled" }, { joiner:join() })
            go:set()
            assert.same({ true, 1 }, { target:join() })
        end)
    end)
end)

describe("loom.sleep", function()
    it("waits about as long as asked", function()
        run(function()
            local t0 = loom.now()
            loom.sleep(0.05)
            local dt = loom.now() - t0
            timing.within(dt, 0.045, 0.05, "slept")
        end)
    end)

    it("sleep(0) lets the other ready tasks run first", function()
        run(function()
            local log = {}
            local a = loom.spawn(function()
                for i = 1, 3 do
                    log[#log + 1] = "a" .. i
                    loom.sleep(0)
                end
            end)
            local b = loom.spawn(function()
                for i = 1, 3 do
                    log[#log + 1] = "b" .. i
                    loom.sleep(0)
                end
            end)
            a:join()
            b:join()
            assert.same({ "a1", "b1", "a2", "b2", "a3", "b3" }, log)
        end)
    end)

    it("sleep(0) lets a task that became ready run", function()
        run(function()
            local flag = false
            loom.spawn(function() flag = true end)
            assert.is_false(flag)
            loom.sleep(0)
            assert.is_true(flag)
        end)
    end)

    it("wakes sleepers by deadline, and equal deadlines in order", function()
        run(function()
            local order = {}
            local tasks = {}
            for i, d in ipairs({ 0.06, 0.02, 0.04, 0.02, 0.02 }) do
                tasks[i] = loom.spawn(function()
                    loom.sleep(d)
                    order[#order + 1] = i
                end)
            end
            for _, t in ipairs(tasks) do t:join() end
            assert.same({ 2, 4, 5, 3, 1 }, order)
        end)
    end)

    -- loom.now() counts ns; the timers count whole ms of the loop's cached clock. A sleep
    -- that starts at any point inside a ms must still not end before its time (it woke up to
    -- 1.5 ms early when the timeout was rounded to the nearest ms from the cached clock). A
    -- spin of a varying fraction of a ms before each sleep starts them at every phase. A
    -- lower bound only: a loaded machine makes them late, never early. 1e-9: the rounding of
    -- two doubles near the clock's value (about 1e-12 s), far below a ms.
    it("never ends before its time by loom.now(), at any phase of the ms", function()
        run(function()
            local early = {}
            local n = 0
            for i = 1, 240 do
                local spin_until = loom.now() + (i * 0.000137) % 0.001
                while loom.now() < spin_until do end
                local d = ({ 0.0001, 0.0004, 0.0005, 0.0009, 0.001, 0.0012, 0.0015, 0.002, 0.0025, 0.003 })[i % 10 + 1]
                local t0 = loom.now()
                loom.sleep(d)
                local took = loom.now() - t0
                n = n + 1
                if took < d - 1e-9 then early[#early + 1] = ("sleep(%g) took %.6f s"):format(d, took) end
            end
            assert.equal(240, n)
            assert.same({}, early)
        end)
    end)

    it("a loom.timeout's time is a lower bound by loom.now() too", function()
        run(function()
            local early = {}
            for i = 1, 60 do
                local spin_until = loom.now() + (i * 0.000211) % 0.001
                while loom.now() < spin_until do end
                local d = ({ 0.0005, 0.001, 0.0015, 0.002 })[i % 4 + 1]
                local t0 = loom.now()
                local r = pack(loom.timeout(d, function() loom.sleep(60) end))
                local took = loom.now() - t0
                assert.same({ n = 2, nil, "timeout" }, r)
                if took < d - 1e-9 then early[#early + 1] = ("timeout(%g) took %.6f s"):format(d, took) end
            end
            assert.same({}, early)
        end)
    end)

    it("treats negative and NaN as 0", function()
        run(function()
            local t0 = loom.now()
            loom.sleep(-1)
            loom.sleep(0 / 0)
            -- not forever (NaN compared as a huge deadline), not a wait for abs(-1)
            assert.is_true(loom.now() - t0 < timing.guard(0), "slept " .. loom.now() - t0)
        end)
    end)
end)

describe("loom.gather", function()
    it("returns the first result of each, in argument order", function()
        run(function()
            local t = loom.spawn(function()
                loom.sleep(0.01)
                return "task", "ignored"
            end)
            local r = loom.gather(
                function() loom.sleep(0.03) return 1 end,
                function() return 2, "ignored" end,
                t,
                function() end)
            assert.same({ 1, 2, "task" }, r)
            assert.is_nil(r[4])
        end)
    end)

    it("runs its functions concurrently", function()
        run(function()
            -- each function waits until all three have started: run one after another, the
            -- first would wait for ever (and the timeout below says so), whatever the machine
            local started, all = 0, loom.event()
            local function meet()
                started = started + 1
                if started == 3 then all:set() end
                all:wait()
                return started
            end
            local r = pack(loom.timeout(timing.guard(0), loom.gather, meet, meet, meet))
            assert.same({ n = 1, { 3, 3, 3 } }, r)
        end)
    end)

    it("with no arguments returns an empty table", function()
        run(function()
            assert.same({}, loom.gather())
        end)
    end)

    it("accepts a task given twice and a finished task", function()
        run(function()
            local done = loom.spawn(function() return "d" end)
            done:join()
            local t = loom.spawn(function() loom.sleep(0.01) return "t" end)
            assert.same({ "d", "t", "t" }, loom.gather(done, t, t))
        end)
    end)

    it("cancels the others when one raises, and raises that error", function()
        run(function()
            local log = {}
            local slow = loom.spawn(function()
                local c <close> = closer(log, "slow")
                loom.sleep(60)
            end)
            local t0 = loom.now()
            -- the others sleep far past the hang guard: waiting them out cannot pass
            local ok, err = pcall(loom.gather,
                function() loom.sleep(0.01) error("first", 0) end,
                slow,
                function() loom.sleep(60) end)
            assert.is_false(ok)
            assert.equal("first", err)
            assert.same({ false, "cancelled" }, { slow:join() })
            assert.same({ "slow:cancelled" }, log)
            local took = loom.now() - t0
            assert.is_true(took < timing.guard(0.01), "gather raised after " .. took .. " s")
        end)
    end)

    it("raises the error of the first argument when several have failed already", function()
        run(function()
            local tasks = {}
            for i = 1, 5 do
                tasks[i] = loom.spawn(function() error("failed " .. i, 0) end)
                tasks[i]:observe()
            end
            loom.sleep(0)
            for i = 1, 5 do assert.is_true(tasks[i]:done()) end
            local ok, err = pcall(loom.gather, tasks[3], tasks[1], tasks[5], tasks[2])
            assert.same({ false, "failed 3" }, { ok, err })
        end)
    end)

    it("cancels its tasks when the gathering task is cancelled", function()
        run(function()
            local inner
            local outer = loom.spawn(function()
                inner = loom.spawn(function() loom.sleep(5) end)
                loom.gather(inner, function() loom.sleep(5) end)
            end)
            loom.sleep(0)
            loom.sleep(0)
            outer:cancel()
            assert.same({ false, "cancelled" }, { outer:join() })
            assert.same({ false, "cancelled" }, { inner:join() })
        end)
    end)
end)

describe("loom.timeout", function()
    it("gives nil, 'timeout' when fn takes too long, and cancels it", function()
        run(function()
            local log = {}
            local t0 = loom.now()
            local r = pack(loom.timeout(0.1, function()
                local c <close> = closer(log, "fn")
                loom.sleep(60) -- far past the hang guard: only a prompt timeout passes
            end))
            local dt = loom.now() - t0
            assert.same({ n = 2, nil, "timeout" }, r)
            timing.within(dt, 0.09, 0.1, "timeout")
            assert.same({ "fn:cancelled" }, log)
        end)
    end)

    it("passes fn's arguments and results through, nils included", function()
        run(function()
            local r = pack(loom.timeout(1, function(a, b)
                loom.sleep(0)
                return a, nil, b
            end, "x", "y"))
            assert.same({ n = 3, "x", nil, "y" }, r)
            assert.same({ n = 0 }, pack(loom.timeout(1, function() end)))
        end)
    end)

    it("re-raises fn's error", function()
        run(function()
            local ok, err = pcall(loom.timeout, 1, function()
                loom.sleep(0)
                error("inner", 0)
            end)
            assert.same({ false, "inner" }, { ok, err })
        end)
    end)

    it("nests: the inner deadline fires first", function()
        run(function()
            local r = pack(loom.timeout(1, function()
                return "outer", loom.timeout(0.02, loom.sleep, 5)
            end))
            assert.same({ n = 3, "outer", nil, "timeout" }, r)
        end)
    end)

    it("cancels fn when the waiting task is cancelled", function()
        run(function()
            local log = {}
            local t = loom.spawn(function()
                return loom.timeout(5, function()
                    local c <close> = closer(log, "fn")
                    loom.sleep(5)
                end)
            end)
            loom.sleep(0)
            loom.sleep(0)
            t:cancel()
            assert.same({ false, "cancelled" }, { t:join() })
            loom.sleep(0)
            assert.same({ "fn:cancelled" }, log)
        end)
    end)
end)

describe("loom.queue", function()
    it("is first-in, first-out", function()
        run(function()
            local q = loom.queue()
            for i = 1, 100 do q:put(i) end
            assert.equal(100, q:size())
            for i = 1, 100 do assert.equal(i, q:get()) end
            assert.is_true(q:empty())
        end)
    end)

    it("get waits for a put", function()
        run(function()
            local q = loom.queue()
            local getter = loom.spawn(function() return q:get() end)
            loom.sleep(0)
            assert.is_false(getter:done())
            q:put("v")
            assert.same({ true, "v" }, { getter:join() })
        end)
    end)

    it("serves waiting getters in the order they came", function()
        run(function()
            local q = loom.queue()
            local got = {}
            local tasks = {}
            for i = 1, 3 do
                tasks[i] = loom.spawn(function() got[i] = q:get() end)
            end
            loom.sleep(0)
            q:put("a")
            q:put("b")
            q:put("c")
            for i = 1, 3 do tasks[i]:join() end
            assert.same({ "a", "b", "c" }, got)
        end)
    end)

    it("a bounded put waits while the queue is full", function()
        run(function()
            local q = loom.queue(2)
            q:put(1)
            q:put(2)
            assert.is_true(q:full())
            local putter = loom.spawn(function()
                q:put(3)
                return "put"
            end)
            loom.sleep(0)
            assert.is_false(putter:done())
            assert.equal(2, q:size())
            assert.equal(1, q:get())
            assert.same({ true, "put" }, { putter:join() })
            assert.equal(2, q:get())
            assert.equal(3, q:get())
        end)
    end)

    it("a cancelled getter takes nothing", function()
        run(function()
            local q = loom.queue()
            local gone = loom.spawn(function() return q:get() end)
            local stays = loom.spawn(function() return q:get() end)
            loom.sleep(0)
            gone:cancel()
            assert.same({ false, "cancelled" }, { gone:join() })
            q:put("x")
            assert.same({ true, "x" }, { stays:join() })
        end)
    end)

    it("passes values between a producer and a consumer", function()
        run(function()
            local q = loom.queue(3)
            local consumer = loom.spawn(function()
                local sum = 0
                while true do
                    local v = q:get()
                    if v == nil then return sum end
                    sum = sum + v
                end
            end)
            for i = 1, 100 do q:put(i) end
            q:put(nil)
            assert.same({ true, 5050 }, { consumer:join() })
        end)
    end)
end)

describe("loom.semaphore", function()
    it("with() limits how many run at once", function()
        run(function()
            local s = loom.semaphore(2)
            local active, most = 0, 0
            local fns = {}
            for i = 1, 6 do
                fns[i] = function()
                    return s:with(function(x)
                        active = active + 1
                        most = math.max(most, active)
                        loom.sleep(0.01)
                        active = active - 1
                        return x * 10
                    end, i)
                end
            end
            assert.same({ 10, 20, 30, 40, 50, 60 }, loom.gather(table.unpack(fns)))
            assert.equal(2, most)
        end)
    end)

    it("with() releases when fn raises", function()
        run(function()
            local s = loom.semaphore(1)
            local ok, err = pcall(s.with, s, function() error("bad", 0) end)
            assert.same({ false, "bad" }, { ok, err })
            assert.equal("got it", loom.timeout(0.5, function()
                s:acquire()
                return "got it"
            end))
        end)
    end)

    it("with() releases when the holder is cancelled", function()
        run(function()
            local s = loom.semaphore(1)
            local holder = loom.spawn(function() s:with(loom.sleep, 5) end)
            loom.sleep(0)
            local waiter = loom.spawn(function()
                s:acquire()
                s:release()
                return "acquired"
            end)
            loom.sleep(0)
            assert.is_false(waiter:done())
            holder:cancel()
            assert.same({ true, "acquired" }, { waiter:join() })
        end)
    end)

    it("acquire waits for release", function()
        run(function()
            local s = loom.semaphore(0)
            local t = loom.spawn(function() s:acquire() return "in" end)
            loom.sleep(0)
            assert.is_false(t:done())
            s:release()
            assert.same({ true, "in" }, { t:join() })
        end)
    end)
end)

describe("loom.event", function()
    it("wakes every waiter when set", function()
        run(function()
            local e = loom.event()
            assert.is_false(e:is_set())
            local tasks = {}
            for i = 1, 3 do tasks[i] = loom.spawn(function() return e:wait() end) end
            loom.sleep(0)
            for i = 1, 3 do assert.is_false(tasks[i]:done()) end
            e:set()
            assert.is_true(e:is_set())
            for i = 1, 3 do assert.same({ true, true }, { tasks[i]:join() }) end
            assert.is_true(e:wait()) -- already set: returns at once
            e:clear()
            assert.is_false(e:is_set())
            assert.is_nil(loom.timeout(0.01, e.wait, e))
        end)
    end)
end)

describe("loom.now", function()
    it("is a monotonic float in seconds", function()
        run(function()
            local t0 = loom.now()
            assert.equal("float", math.type(t0))
            local prev = t0
            for _ = 1, 1000 do
                local t = loom.now()
                assert.is_true(t >= prev)
                prev = t
            end
            loom.sleep(0.02)
            local dt = loom.now() - t0
            -- seconds, not ms or us; generous above: loaded CI machines stall
            assert.is_true(dt >= 0.015 and dt < 10, "dt " .. dt)
        end)
    end)
end)

describe("loom.json", function()
    it("encodes and decodes", function()
        local s = loom.json.encode({ a = 1, b = { 1, 2, 3 }, c = "x\n" })
        assert.same({ a = 1, b = { 1, 2, 3 }, c = "x\n" }, loom.json.decode(s))
        assert.equal("[1,2,3]", loom.json.encode({ 1, 2, 3 }))
        assert.equal('"\\u00e9"', loom.json.encode("\xc3\xa9"):gsub("\xc3\xa9", "\\u00e9"))
    end)

    it("has a null that round-trips", function()
        assert.is_not_nil(loom.json.null)
        assert.equal('{"k":null}', loom.json.encode({ k = loom.json.null }))
        local v = loom.json.decode('{"k":null,"a":[1,null,3]}')
        assert.equal(loom.json.null, v.k)
        assert.equal(loom.json.null, v.a[2])
        assert.equal(3, #v.a)
    end)

    it("decodes integers as integers", function()
        local v = loom.json.decode('{"n":3,"a":[1,2.5,-7,1e3],"big":1e300}')
        assert.equal("integer", math.type(v.n))
        assert.equal("3", tostring(v.n))
        assert.same({ "integer", "float", "integer", "integer" },
            { math.type(v.a[1]), math.type(v.a[2]), math.type(v.a[3]), math.type(v.a[4]) })
        assert.equal(1e300, v.big)
        assert.equal(42, loom.json.decode("42"))
        assert.equal("integer", math.type(loom.json.decode("42")))
    end)

    it("raises on malformed JSON and on misuse", function()
        local ok, err = pcall(loom.json.decode, "{bad")
        assert.is_false(ok)
        assert.matches("Expected object key string", err)
        assert.is_nil(err:find("loom.json", 1, true), "the error points into loom.json")
        assert.error_matches(function() loom.json.decode(1) end,
            "bad argument #1 to 'decode' %(string expected, got number%)")
        assert.has_error(function() loom.json.encode({ f = print }) end)
        assert.error_matches(function() loom.json.array(1) end,
            "bad argument #1 to 'array' %(table expected, got number%)")
    end)

    it("writes a table marked by json.array as an array, even empty", function()
        local j = loom.json
        assert.equal("{}", j.encode({}))
        assert.equal("[]", j.encode(j.array()))
        local list = { 1, 2 }
        assert.equal(list, j.array(list))
        local doc = { items = j.array(), n = 0, nested = { j.array({}), list }, s = "[]" }
        assert.same({ items = {}, n = 0, nested = { {}, { 1, 2 } }, s = "[]" }, j.decode(j.encode(doc)))
        local text = j.encode(doc)
        assert.truthy(text:find('"items":[]', 1, true))
        assert.truthy(text:find('"nested":[[],[1,2]]', 1, true))
        -- the value given is left as it was
        assert.equal(j.array_mt or getmetatable(doc.items), getmetatable(doc.items))
        assert.is_nil(next(doc.items))
        assert.equal("table", type(doc.nested[1]))
        -- an empty table not marked stays an object beside a marked one
        assert.equal('{"a":[],"b":{}}', j.encode({ a = j.array(), b = {} }):gsub('"b":{},"a":%[%]', '"a":[],"b":{}'))
        -- as the answer of a handler
        run(function()
            local app = loom.app()
            app:get("/none", function() return { json = { todos = j.array() } } end)
            local srv <close> = assert(app:listen{ host = "127.0.0.1", port = 0 })
            local res = assert(loom.fetch("http://127.0.0.1:" .. srv.port .. "/none"))
            assert.equal('{"todos":[]}', res:text())
        end)
    end)
end)

describe("misuse raises, naming the argument", function()
    it("for the task functions", function()
        run(function()
            assert.error_matches(function() loom.sleep("x") end,
                "bad argument #1 to 'sleep' %(number expected, got string%)")
            assert.error_matches(function() loom.spawn(1) end,
                "bad argument #1 to 'spawn' %(function expected, got number%)")
            assert.error_matches(function() loom.queue(-1) end, "bad argument #1 to 'queue'")
            assert.error_matches(function() loom.queue(1.5) end, "bad argument #1 to 'queue'")
            assert.error_matches(function() loom.semaphore("x") end, "bad argument #1 to 'semaphore'")
            assert.error_matches(function() loom.timeout("x", print) end,
                "bad argument #1 to 'timeout' %(number expected, got string%)")
            assert.error_matches(function() loom.timeout(1) end,
                "bad argument #2 to 'timeout' %(function expected, got no value%)")
            assert.error_matches(function() loom.gather(function() end, 5) end,
                "bad argument #2 to 'gather' %(function or task expected, got number%)")
            assert.error_matches(function() loom.semaphore(1):with(nil) end, "bad argument #1 to 'with'")
            local t = loom.spawn(function() end)
            assert.error_matches(function() t.join(5) end, "bad argument #1 to 'join'")
            assert.error_matches(function() t.cancel(5) end, "bad argument #1 to 'cancel'")
            assert.error_matches(function() loom.exit("x") end, "bad argument #1 to 'exit'")
            assert.error_matches(function() loom.run(5) end, "bad argument #1 to 'run'")
        end)
    end)

    it("loom.run inside a task", function()
        run(function()
            assert.error_matches(function() loom.run(function() end) end,
                "cannot be called inside a task")
        end)
    end)
end)

describe("blocking calls outside any task", function()
    it("raise a clear error instead of hanging", function()
        local q, e, s = loom.queue(1), loom.event(), loom.semaphore(0)
        assert.error_matches(function() loom.sleep(1) end, "sleep: called outside any task")
        assert.error_matches(function() q:get() end, "get: called outside any task")
        q:put(1) -- not full: no wait needed
        assert.error_matches(function() q:put(2) end, "put: called outside any task")
        assert.error_matches(function() e:wait() end, "wait: called outside any task")
        assert.error_matches(function() s:acquire() end, "acquire: called outside any task")
        assert.error_matches(function() loom.gather(print) end, "gather: called outside any task")
        assert.error_matches(function() loom.timeout(1, print) end, "timeout: called outside any task")
        assert.error_matches(function() loom.connect("127.0.0.1", 9) end,
            "connect: called outside any task")
        local t = loom.spawn(function() end)
        assert.error_matches(function() t:join() end, "join: called outside any task")
        -- the error names what to use instead
        assert.error_matches(function() loom.sleep(1) end, "loom.run or loom.spawn", nil, true)
        run(function() assert.same({ true }, { t:join() }) end)
    end)

    it("inside coroutine.wrap in a task raise an error naming loom.spawn", function()
        run(function()
            local function wrapped(fn)
                return function() coroutine.wrap(fn)() end
            end
            assert.error_matches(wrapped(function() loom.sleep(0) end),
                "sleep: called inside a coroutine that is not a loom task %(use loom.spawn")
            assert.error_matches(wrapped(function() loom.queue():get() end),
                "get: called inside a coroutine that is not a loom task %(use loom.spawn")
            assert.error_matches(wrapped(function() loom.timeout(1, print) end),
                "timeout: called inside a coroutine that is not a loom task %(use loom.spawn")
            -- the task itself is unharmed
            loom.sleep(0)
        end)
    end)
end)
