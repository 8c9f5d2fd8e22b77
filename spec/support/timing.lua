-- spec/support/timing.lua: wall-clock checks that hold on a busy machine.
--
-- A spec that checks a timeout (header_timeout, close_timeout, a grace period...) asserts
-- that it did not fire early (a lower bound) and the order of events; the upper bound is
-- only a guard against a hang. A loaded machine (the sanitizer build, other jobs on the
-- same cores) adds seconds to any wait, so a bound like "0.3 s within 1.5 s" tests the
-- machine, not loom. When the upper bound must tell two behaviours apart (say, "at once"
-- against "after a 5 s timeout"), the spec picks the other behaviour's time far above the
-- guard rather than tightening the guard.
--
--   local timing = require "support.timing"
--   timing.guard(0.3)                       --> 5.9: several times 0.3 s, plus 5 s
--   timing.within(took, 0.28, 0.3, "408")   -- took >= 0.28, and took < timing.guard(0.3)
--   timing.poll(function() return done end, 0.2, "closed")   -- polled up to the guard
local M = {}

-- The hang guard for something expected to take `expected` seconds.
function M.guard(expected)
    return 3 * expected + 5
end

-- secs is at least `lo` (it did not come early) and under the hang guard for `expected`.
function M.within(secs, lo, expected, what)
    local hi = M.guard(expected)
    if not (secs >= lo and secs < hi) then
        error(("%s after %.3f s: expected at least %.2f s, and less than %.1f s (a hang guard)")
            :format(what or "done", secs, lo, hi), 2)
    end
end

-- Waits, inside a task, until cond() is true, for a state that no event announces (a pool's
-- counts, a connection closed by a timer); checks every 10 ms and raises once the hang guard
-- for `expected` seconds has passed. Returns the seconds it took.
--   local took = timing.poll(function() return s:stats().idle == 0 end, 0.2, "idle closed")
function M.poll(cond, expected, what)
    local loom = require "loom"
    local t0 = loom.now()
    local hi = t0 + M.guard(expected or 0)
    while not cond() do
        if loom.now() >= hi then
            error(("%s: still not so after %.1f s (a hang guard)"):format(what or "condition",
                loom.now() - t0), 2)
        end
        loom.sleep(0.01)
    end
    return loom.now() - t0
end

return M
