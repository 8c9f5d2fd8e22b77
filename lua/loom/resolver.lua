-- loom.resolver: name lookups for the client and loom.connect, over core.resolve
-- (getaddrinfo on a thread per lookup, src/io/dns.c; so /etc/hosts holds). Answers are cached
-- for a few seconds; lookups of one name in flight are shared; at most MAX_ACTIVE run at
-- once, each holding its thread until the system resolver returns (a timed-out lookup
-- too). A caller waits at most its timeout: `timeout: dns lookup of NAME`. A name whose
-- server never answers holds one slot until the system resolver gives up (resolv.conf's
-- timeout times attempts), not the other names' lookups.
-- State is per Lua state (one per host), so two hosts in a process share nothing.
local core = require "loom.core"

local M = {}

local TTL = 5           -- seconds an answer is reused
local MAX_CACHED = 256  -- names kept; the cache starts over beyond that
local MAX_ACTIVE = 16   -- lookups running at once (threads)

local now, park, ticket, wake, spawn = core.now, core.park, core.ticket, core.wake, core.spawn
local resolve = core.resolve

local cache, ncached = {}, 0
local pending = {} -- name -> job {waiters = {task, serial, ...}, addrs, err, done}
local queue = { head = 1, tail = 0 }  -- jobs waiting for a lookup slot
local active = 0

local function is_numeric(name)
    return name:match("^%d+%.%d+%.%d+%.%d+$") or name:find(":", 1, true)
end

local function finish(job, addrs, err)
    job.addrs, job.err, job.done = addrs, err, true
    local w = job.waiters
    for i = 1, #w, 2 do wake(w[i], w[i + 1]) end
end

local start

-- Runs in a task of its own, without a timeout: the slot is given back only when the
-- thread really is free again.
local function lookup(job)
    local addrs, err = resolve(job.name)
    active = active - 1
    pending[job.name] = nil
    if addrs then
        if ncached >= MAX_CACHED then cache, ncached = {}, 0 end
        cache[job.name] = { addrs = addrs, expires = now() + TTL }
        ncached = ncached + 1
    end
    finish(job, addrs, err)
    if queue.head <= queue.tail then
        local next_job = queue[queue.head]
        queue[queue.head] = nil
        queue.head = queue.head + 1
        start(next_job)
    end
end

start = function(job)
    active = active + 1
    spawn(lookup, job)
end

-- resolver.resolve(name, timeout) -> {ip, ...} | nil, "dns: ..."
function M.resolve(name, timeout)
    if is_numeric(name) then return { name } end
    local hit = cache[name]
    if hit and hit.expires > now() then return hit.addrs end
    local job = pending[name]
    if not job then
        job = { name = name, waiters = {} }
        pending[name] = job
        if active < MAX_ACTIVE then
            start(job)
        else
            queue.tail = queue.tail + 1
            queue[queue.tail] = job
        end
    end
    local w = job.waiters
    local t, serial = ticket()
    w[#w + 1], w[#w + 2] = t, serial
    while not job.done do
        if not park(timeout) then
            return nil, "timeout: dns lookup of " .. name
        end
    end
    if job.addrs then return job.addrs end
    return nil, job.err
end

-- Forgets cached answers (tests; after /etc/hosts changed).
function M.flush()
    cache, ncached = {}, 0
end

return M
