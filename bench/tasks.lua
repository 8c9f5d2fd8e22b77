-- bench/tasks.lua: what tasks cost. Run as `build/loom bench/tasks.lua [N]`.
--
--   1. 1000 tasks that each loom.sleep(0.2), spawned together: how long until all are done
--      (the ideal is 0.2 s: the sleeps overlap), and the time to spawn them.
--   2. N tasks (default 100 000) asleep at once: the process's RSS (VmRSS from
--      /proc/self/status) before and with them, and the cost per task.
-- Not a test: it prints figures; bench/README.md says what to expect.

local N = tonumber(arg and arg[1]) or 100000

local function rss_kb()
    local f = io.open("/proc/self/status", "r")
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return tonumber(s:match("VmRSS:%s*(%d+)%s*kB"))
end

local function mb(kb)
    return kb and string.format("%.1f MB", kb / 1024) or "n/a"
end

-- 1. overlap: 1000 sleepers of 0.2 s
do
    local tasks = {}
    local t0 = loom.now()
    for i = 1, 1000 do tasks[i] = loom.spawn(loom.sleep, 0.2) end
    local spawned = loom.now() - t0
    for i = 1, 1000 do tasks[i]:join() end
    local total = loom.now() - t0
    print(string.format("1000 tasks x sleep(0.2): all done in %.3f s (ideal 0.200), spawning took %.1f ms",
        total, spawned * 1000))
end

-- 2. memory: N tasks asleep at once (each in loom.sleep, so the timer heap holds N entries)
do
    collectgarbage()
    collectgarbage()
    local before = rss_kb()
    local tasks = {}
    local t0 = loom.now()
    for i = 1, N do tasks[i] = loom.spawn(loom.sleep, 1) end
    loom.sleep(0) -- every task has started and is asleep
    local started = loom.now() - t0
    local during = rss_kb()
    for i = 1, N do tasks[i]:join() end
    local all = loom.now() - t0
    local per = during and before and (during - before) / N
    print(string.format("%d tasks asleep at once: RSS %s (%s before: %s more, %.2f KB per task)",
        N, mb(during), mb(before), mb(during and before and during - before), per or 0))
    print(string.format("  spawned and asleep in %.3f s; all woke and were joined %.3f s after the first spawn",
        started, all))
    print(string.format("  target: RSS < 250 MB with 100 000 tasks asleep: %s",
        during and (N ~= 100000 and "n/a (N differs)" or during < 250 * 1024 and "met" or "MISSED") or "n/a"))
end
