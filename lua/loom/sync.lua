-- loom.sync: queue, semaphore and event for tasks. Waiters are FIFO lists of tickets
-- (task, serial); a stale ticket (its task was cancelled or timed out) is skipped on wake.
local core = require "loom.core"
local args = require "loom.args"

local park, ticket, wake = core.park, core.ticket, core.wake
local setmetatable, error = setmetatable, error

local M = {}

-- A FIFO of tickets.
local function waiters()
    return { head = 1, tail = 0 }
end

local function wait_on(list, fname)
    args.need_task(fname, 2)
    local t, serial = ticket()
    local i = list.tail + 1
    list.tail = i
    list[i] = t
    list[-i] = serial
    park()
end

-- Wakes the first waiter still waiting; returns whether one was.
local function wake_one(list)
    while list.head <= list.tail do
        local i = list.head
        local t, serial = list[i], list[-i]
        list[i], list[-i] = nil, nil
        list.head = i + 1
        if wake(t, serial) then return true end
    end
    list.head, list.tail = 1, 0
    return false
end

local function wake_all(list)
    while wake_one(list) do end
end

-- Queue ------------------------------------------------------------------------------

local Queue = {}
Queue.__index = Queue
Queue.__name = "loom.queue"

function M.queue(maxsize)
    if maxsize ~= nil and (math.type(maxsize) ~= "integer" or maxsize < 0) then
        args.fail("queue", 1, "non-negative integer expected, got " .. tostring(maxsize), 1)
    end
    return setmetatable({ first = 1, last = 0, max = (maxsize and maxsize > 0) and maxsize or math.huge,
        getters = waiters(), putters = waiters() }, Queue)
end

function Queue:size() return self.last - self.first + 1 end
function Queue:empty() return self.last < self.first end
function Queue:full() return self:size() >= self.max end

-- q:put(v): waits while the queue is full.
function Queue:put(v)
    while self:full() do wait_on(self.putters, "put") end
    local i = self.last + 1
    self.last = i
    self[i] = v
    wake_one(self.getters)
end

-- q:get() -> the oldest item; waits while the queue is empty.
function Queue:get()
    while self:empty() do wait_on(self.getters, "get") end
    local i = self.first
    local v = self[i]
    self[i] = nil
    self.first = i + 1
    if self.first > self.last then self.first, self.last = 1, 0 end
    wake_one(self.putters)
    return v
end

-- Semaphore --------------------------------------------------------------------------

local Semaphore = {}
Semaphore.__index = Semaphore
Semaphore.__name = "loom.semaphore"

function M.semaphore(n)
    if n == nil then n = 1 end
    if math.type(n) ~= "integer" or n < 0 then
        args.fail("semaphore", 1, "non-negative integer expected, got " .. tostring(n), 1)
    end
    local s = setmetatable({ value = n, waiters = waiters() }, Semaphore)
    s.releaser = setmetatable({}, { __close = function() s:release() end })
    return s
end

function Semaphore:acquire()
    while self.value <= 0 do wait_on(self.waiters, "acquire") end
    self.value = self.value - 1
end

function Semaphore:release()
    self.value = self.value + 1
    wake_one(self.waiters)
end

-- s:with(fn, ...) -> fn's results, holding the semaphore while fn runs (released on error
-- and cancellation too).
function Semaphore:with(fn, ...)
    args.check(fn, "function", "with", 1)
    self:acquire()
    local _ <close> = self.releaser
    return fn(...)
end

-- Event ------------------------------------------------------------------------------

local Event = {}
Event.__index = Event
Event.__name = "loom.event"

function M.event()
    return setmetatable({ flag = false, waiters = waiters() }, Event)
end

function Event:set()
    self.flag = true
    wake_all(self.waiters)
end

function Event:clear() self.flag = false end
function Event:is_set() return self.flag end

-- e:wait() -> true once the event is set.
function Event:wait()
    while not self.flag do wait_on(self.waiters, "wait") end
    return true
end

return M
