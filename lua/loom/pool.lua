-- loom.pool: a bounded pool of connections with waiters served in order, shared by loom.pg
-- and loom.redis. A protocol module makes a kind of pool from the functions that open,
-- check and close one of its connections; the pool's state lives in the protocol's own pool
-- object (max, nopen, idle, waiters, closed), so each keeps its fields and its tostring.
local core = require "loom.core"

local park, ticket, wake, now = core.park, core.ticket, core.wake, core.now
local format, error, pcall, setmetatable = string.format, error, pcall, setmetatable

local M = {}

-- The fields of an empty pool, set in `p` (the protocol's pool object).
function M.init(p, max)
    p.max, p.idle, p.nopen, p.waiters, p.closed = max, {}, 0, { head = 1, tail = 0 }, false
    return p
end

-- Wakes the first waiter still waiting, handing it `c` (or nothing: "try again").
local function wake_one(list, c)
    while list.head <= list.tail do
        local i = list.head
        local t, serial = list[i], list[-i]
        list[i], list[-i] = nil, nil
        list.head = i + 1
        if wake(t, serial, c) then return true end
    end
    list.head, list.tail = 1, 0
    return false
end

local function closed_err()
    return nil, "closed: the pool is closed"
end

-- What a waiter is handed instead of a connection: one of the max slots, to open a
-- connection in (so a newcomer cannot take it first).
local SLOT = setmetatable({}, { __name = "loom.pool.slot" })

-- A slot is free (a connection closed, or failed to open): the first waiter takes it, or
-- the count of open connections goes down.
local function free_slot(p)
    if p.closed or not wake_one(p.waiters, SLOT) then
        p.nopen = p.nopen - 1
        if p.closed then while wake_one(p.waiters) do end end
    end
end

-- kind{ open, check, close, rest } -> { acquire, release, close }
--   open(p) -> c | nil, err      a new connection for pool p (may raise: a cancellation)
--   check(c) -> boolean          an idle connection is still fit to hand out
--   close(c)                     closes a connection
--   rest(p, c)                   (optional) c goes to the idle list
function M.kind(h)
    local open, check, close, rest = h.open, h.check, h.close, h.rest

    -- Opens a connection in a slot already counted in nopen; the slot is freed again
    -- when that fails or raises (the task cancelled while connecting).
    local function open_in_slot(p)
        local ok, c, err = pcall(open, p)
        if ok and c then return c end
        free_slot(p)
        if not ok then error(c, 0) end
        return nil, err
    end

    -- A connection from the pool: an idle one (the most recently used), a new one while
    -- fewer than max are open, else the first released one, waiters served in order.
    -- Waiting counts against `budget` seconds (connect_timeout, as in loom.fetch).
    local function acquire(p, budget)
        local deadline
        while true do
            if p.closed then return closed_err() end
            local idle = p.idle
            while #idle > 0 do
                local c = idle[#idle]
                idle[#idle] = nil
                if check(c) then return c end
                close(c) -- closed while idle (idle_timeout, the server went)
                free_slot(p)
            end
            if p.nopen < p.max then
                p.nopen = p.nopen + 1
                return open_in_slot(p)
            end
            deadline = deadline or now() + budget
            local left = deadline - now()
            if left <= 0 then
                return nil, format("timeout: waiting for a free connection (max %d) for %gs",
                    p.max, budget)
            end
            local list = p.waiters
            local t, serial = ticket()
            local i = list.tail + 1
            list.tail = i
            list[i], list[-i] = t, serial
            local _, c = park(left)
            if c == SLOT then
                if p.closed then
                    free_slot(p)
                    return closed_err()
                end
                return open_in_slot(p)
            end
            if c then return c end
        end
    end

    -- Gives a connection back: to the first waiter, or to the idle list. One that is not
    -- `fit` (failed, owes a reply), or whose pool closed, is closed instead and its slot
    -- goes to the first waiter.
    local function release(p, c, fit)
        if not fit or p.closed then
            close(c)
            free_slot(p)
            return
        end
        if wake_one(p.waiters, c) then return end
        if rest then rest(p, c) end
        local idle = p.idle
        idle[#idle + 1] = c
    end

    -- Closes the idle connections now (those in use when they come back); the waiters
    -- wake to find the pool closed.
    local function close_pool(p)
        p.closed = true
        local idle = p.idle
        for i = #idle, 1, -1 do
            close(idle[i])
            idle[i] = nil
            p.nopen = p.nopen - 1
        end
        while wake_one(p.waiters) do end
    end

    return { acquire = acquire, release = release, close = close_pool }
end

M.closed_err = closed_err

return M
