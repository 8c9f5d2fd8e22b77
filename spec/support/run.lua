-- spec/support/run.lua: runs a spec body as a loom task, with a deadline.
--
--   local run = require "support.run"
--   it("echoes", function()
--       run(function()
--           local srv <close> = assert(loom.listen{ host = "127.0.0.1", port = 0, handler = h })
--           ...
--       end)
--   end)
--
-- run(body [, opts]) -> body's results. The body runs in a task of its own inside
-- loom.run. The call raises (so the spec fails) when:
--   * the body raises: the error, then the body's traceback;
--   * the body is still running after opts.timeout seconds (default 10): the body is
--     cancelled and the traceback shows where it was waiting;
--   * once the body has returned, something it started is still alive after opts.grace
--     seconds (default 2): a task parked with a deadline, a queued task, or a libuv handle
--     or request that keeps the loop running (a listener, a stream being read, a DNS
--     lookup). Checked with core.stats(). opts.leftovers = true skips this check.
-- A failure ends loom.run at once (a failing main task stops the loop), so a spec that
-- leaves a server running fails instead of hanging. What it left stays in the loop, so the
-- specs after it fail at once too, saying so: look for the first failure.
local loom = require "loom"
local core = require "loom.core"

local M = {}

-- What still keeps the loop running, as text; nil when nothing. The checks are absolute
-- rather than against counts taken before the body: whatever is left would keep the next
-- loom.run from returning, so once a spec leaks, the following ones fail (fast) too.
local function leftovers()
    collectgarbage() -- streams dropped without close() are closed by their finalizers
    local now = core.stats()
    local extra = {}
    if now.timers > 0 then extra[#extra + 1] = now.timers .. " task(s) waiting with a deadline" end
    if now.ready > 0 then extra[#extra + 1] = now.ready .. " task(s) or job(s) ready to run" end
    if now.alive > 0 then
        extra[#extra + 1] = now.alive .. " libuv handle(s) or request(s) active (a listener, "
            .. "a stream being read, a lookup)"
    end
    return #extra > 0 and table.concat(extra, ", ") or nil
end

-- Waits up to `grace` seconds for the body's leftovers to go (a closed stream needs a loop
-- turn for its close callback). There is no event for "the loop is idle", hence the polling.
local function settle(grace)
    local deadline = loom.now() + grace
    local what = leftovers()
    while what and loom.now() < deadline do
        loom.sleep(0.01)
        what = leftovers()
    end
    return what
end

-- The body's error with its traceback added. busted's failure objects (tables with a
-- message) stay tables, so busted still reports a failed assertion as a failure.
local function describe(err, tb)
    if not tb then return err end
    tb = tb:match("\n(stack traceback:.*)$") or tb -- its first line repeats the message
    if type(err) == "table" and type(err.message) == "string" then
        err.message = err.message .. "\n(in the spec's task) " .. tb
        return err
    end
    return tostring(err) .. "\n" .. tb
end

local function main(body, opts)
    local limit = opts.timeout or 10
    if not opts.leftovers then
        loom.sleep(0) -- lets tasks spawned outside loom.run start
        local inherited = leftovers()
        if inherited then
            error("not run: an earlier spec left work running (" .. inherited .. ")", 0)
        end
    end
    local t = loom.spawn(body)
    t:observe()
    local timed_out = false
    if not t:done() then
        -- a watcher task with the deadline; join wakes us as soon as the body ends
        local r = loom.timeout(limit, function() return t:join() end)
        timed_out = r == nil
    end
    if timed_out then
        t:cancel()
        local ok, e = loom.timeout(1, function() return t:join() end)
        local tb = ok ~= nil and t:traceback() or nil
        error(("spec body still running after %gs, cancelled%s"):format(limit,
            tb and ("; where it waited:\n" .. tb) or ""), 0)
    end
    local r = table.pack(t:result())
    if not r[1] then
        error(describe(r[2], t:traceback()), 0)
    end
    if not opts.leftovers then
        local what = settle(opts.grace or 2)
        if what then
            error("spec body left running: " .. what, 0)
        end
    end
    return table.unpack(r, 2, r.n)
end

-- run(body [, opts]): see above. opts: timeout (10), grace (2), leftovers (false).
function M.run(body, opts)
    if type(body) ~= "function" then error("run: body must be a function", 2) end
    local r = table.pack(pcall(loom.run, main, body, opts or {}))
    if not r[1] then
        -- strings get the position of the spec's run() call, tables pass as they are
        error(r[2], type(r[2]) == "string" and 2 or nil)
    end
    return table.unpack(r, 2, r.n)
end

-- Tables with __close, for the body: defer(fn) runs fn when the variable goes out of scope.
function M.defer(fn)
    return setmetatable({}, { __close = fn })
end

return setmetatable(M, { __call = function(_, ...) return M.run(...) end })
