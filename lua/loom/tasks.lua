-- loom.tasks: joining, gathering and timeouts, built on the scheduler's park/wake/watch
-- primitives (src/sched.c). Methods are added to the C task type.
local core = require "loom.core"
local args = require "loom.args"

local spawn, park, ticket, watch = core.spawn, core.park, core.ticket, core.watch
local select, type, error, setmetatable = select, type, error, setmetatable
local pack, unpack = table.pack, table.unpack

local M = {}
local task_methods = core.task_methods
local task_mt = getmetatable(spawn(function() end))

local function is_task(v)
    return getmetatable(v) == task_mt
end
M.is_task = is_task

local function need_task(fname)
    args.need_task(fname, 2)
end

-- task:join() -> true, ... | false, err. Waits for the task; any number of tasks may join.
function task_methods:join()
    if not is_task(self) then args.fail("join", 1, "loom.task expected", 1) end
    if not self:done() then
        need_task("join")
        if core.is_current(self) then
            error("join: a task cannot join itself", 2)
        end
        repeat
            watch(self)
            park()
        until self:done()
    end
    return self:result()
end

-- A to-be-closed guard that cancels the tasks of a list that are still running, so a
-- gather or timeout that unwinds (error or cancellation) leaves no orphans behind.
local canceller_mt = {
    __close = function(list)
        for i = 1, list.n do
            local t = list[i]
            if t then t:cancel() end
        end
    end,
}

local function as_task(v, i, fname)
    if type(v) == "function" then return spawn(v) end
    if is_task(v) then return v end
    args.fail(fname, i, "function or task expected, got " .. type(v), 2)
end

-- loom.gather(f1, f2, ...) -> {first result of each}. If one raises, the others are
-- cancelled and gather raises that error.
function M.gather(...)
    local n = select("#", ...)
    for i = 1, n do
        local v = select(i, ...)
        if type(v) ~= "function" and not is_task(v) then
            args.fail("gather", i, "function or task expected, got " .. type(v), 1)
        end
    end
    need_task("gather")
    local tasks = setmetatable({ n = n }, canceller_mt)
    for i = 1, n do tasks[i] = as_task(select(i, ...), i, "gather") end
    local _ <close> = tasks
    local results, left, where, box = {}, n, {}, {}
    local function take(t)
        local r = pack(t:result())
        if not r[1] then error(r[2], 0) end
        for _, i in ipairs(where[t]) do
            results[i] = r[2]
            tasks[i] = false
            left = left - 1
        end
    end
    for i = 1, n do
        local t = tasks[i]
        if where[t] then
            table.insert(where[t], i)
        else
            where[t] = { i }
            watch(t, box) -- done tasks are not posted: the pass below takes them
        end
    end
    for i = 1, n do -- in argument order, so which error wins does not depend on pairs()
        local t = tasks[i]
        if t and t:done() then take(t) end
    end
    local seen = 0
    while left > 0 do
        if #box == seen then
            box.task, box.serial = ticket()
            park()
        end
        while seen < #box do
            seen = seen + 1
            local t = box[seen]
            if tasks[where[t][1]] then take(t) end
        end
    end
    return results
end

-- loom.timeout(seconds, fn, ...) -> fn's results, or nil, "timeout". fn runs in its own
-- task, cancelled when the time is up (timeout waits for it to unwind).
function M.timeout(secs, fn, ...)
    args.check(secs, "number", "timeout", 1)
    args.check(fn, "function", "timeout", 2)
    need_task("timeout")
    local t = spawn(fn, ...)
    local _ <close> = setmetatable({ t, n = 1 }, canceller_mt)
    if not t:done() then
        watch(t)
        park(secs >= 0 and secs or 0)
    end
    if not t:done() then
        t:cancel()
        t:join()
        return nil, "timeout"
    end
    local r = pack(t:result())
    if not r[1] then error(r[2], 0) end
    return unpack(r, 2, r.n)
end

return M
