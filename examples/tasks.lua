-- examples/tasks.lua: tasks in loom — spawn, gather, timeout and a queue.
--
--   $ build/loom examples/tasks.lua
--
-- Three "downloads" run at once with gather; one that takes too long is cut short by
-- timeout; a producer hands work to two consumers through a bounded queue.

-- A stand-in for slow I/O: waits, then returns a result.
local function fetch(name, secs)
    loom.sleep(secs)
    return name .. " (" .. math.floor(secs * 1000) .. " ms)"
end

-- 1. gather: run functions concurrently, collect their first results in order.
local t0 = loom.now()
local results = loom.gather(
    function() return fetch("alpha", 0.15) end,
    function() return fetch("beta", 0.05) end,
    function() return fetch("gamma", 0.10) end)
print("gathered: " .. table.concat(results, ", "))
-- they overlapped: the whole took about as long as the slowest one
print(string.format("gather took under 0.3 s: %s", loom.now() - t0 < 0.3))

-- 2. timeout: give up on work that takes too long (the work's task is cancelled).
local ok, err = loom.timeout(0.05, fetch, "slow", 5)
print("timeout: " .. tostring(ok) .. ", " .. tostring(err))
print("timeout passes results: " .. loom.timeout(1, fetch, "quick", 0.01))

-- 3. spawn + join, and cancel.
local task = loom.spawn(fetch, "spawned", 0.02)
print("joined: " .. select(2, task:join()))
local sleeper = loom.spawn(loom.sleep, 10)
loom.sleep(0)
sleeper:cancel()
local okc, errc = sleeper:join()
print("cancelled: " .. tostring(okc) .. ", " .. errc)

-- 4. queue: a producer and two consumers; put waits while the queue is full.
local q = loom.queue(2)
local done = {}
local function consumer(name)
    return function()
        local n = 0
        while true do
            local job = q:get()
            if job == nil then break end -- nil: no more work
            loom.sleep(0.01)
            n = n + job
        end
        done[#done + 1] = name
        return n
    end
end
local c1, c2 = loom.spawn(consumer("c1")), loom.spawn(consumer("c2"))
for job = 1, 10 do q:put(job) end
q:put(nil)
q:put(nil)
local _, n1 = c1:join()
local _, n2 = c2:join()
print("queue: consumers summed " .. (n1 + n2) .. " (expected 55)")
