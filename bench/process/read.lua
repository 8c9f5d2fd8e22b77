-- bench/process/read.lua [BYTES [CHUNK]]: loom.process reads BYTES (default 1 GiB, a whole
-- number of MiB) from `dd if=/dev/zero bs=1M` through a stdout pipe, st:read(CHUNK) in a
-- loop (st:read() without CHUNK: whatever has arrived), and prints
-- "bytes seconds GB/s rss_start_kb rss_max_kb" (RSS sampled every 64 MiB). Run by run.sh.
local loom = require "loom"
local core = require "loom.core"

local total = tonumber(arg[1]) or (1 << 30)
local chunk = tonumber(arg[2])

local function rss_kb()
    local f = io.open("/proc/self/statm")
    local pages = tonumber(f:read("a"):match("^%d+ (%d+)"))
    f:close()
    return pages * 4
end

local p = assert(loom.process{ "dd", "if=/dev/zero", "bs=1M", "count=" .. (total >> 20), "status=none", stdout = "pipe" })
local out = p.stdout
local t0 = core.now()
local n, next_sample = 0, 64 << 20
local rss0, rss_max = rss_kb(), 0
while true do
    local s = out:read(chunk)
    if not s then break end
    n = n + #s
    if n >= next_sample then
        next_sample = next_sample + (64 << 20)
        local r = rss_kb()
        if r > rss_max then rss_max = r end
    end
end
local secs = core.now() - t0
assert(p:wait() == 0)
out:close()
assert(n == total, n)
io.stdout:write(("%d %.3f %.2f %d %d\n"):format(n, secs, n / secs / 1e9, rss0, rss_max))
