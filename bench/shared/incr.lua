-- bench/shared/incr.lua: d:incr from two processes at once on one loom.shared dict.
-- The parent makes the dict and starts two copies of this script (which attach to it
-- through the inherited memfd); each copy runs N increments of one key in a loop and
-- prints "ops cpu_seconds wall_seconds". Run by bench/shared/run.sh.
local loom = require "loom"
local core = require "loom.core"

local N = tonumber(os.getenv("INCR_N") or "") or 20000000
local d = assert(loom.shared("bench", 1 << 20))

if os.getenv("INCR_CHILD") then
    local c0, w0 = os.clock(), core.now()
    for _ = 1, N do d:incr("hits", 1, 0) end
    local cpu, wall = os.clock() - c0, core.now() - w0
    io.stdout:write(("%d %.4f %.4f\n"):format(N, cpu, wall))
    io.stdout:flush()
    return
end

core.setenv("INCR_CHILD", "1")
local procs = {}
for i = 1, 2 do
    procs[i] = assert(core.process_spawn(core.exepath(), { arg[0] }))
end
for i = 1, 2 do procs[i]:wait() end
local total = d:get("hits")
io.stdout:write(("total %d (expected %d)\n"):format(total, 2 * N))
