-- examples/crawl.lua: fetch many URLs at once, at most N at a time (a semaphore), and print
-- the status and size of each as it finishes.
--   loom examples/crawl.lua [-n N] URL...     (or the URLs one per line on stdin)
local limit, urls = 8, {}
local i = 1
while arg[i] do
    if arg[i] == "-n" then
        limit = assert(math.tointeger(tonumber(arg[i + 1])), "-n wants a number")
        i = i + 2
    else
        urls[#urls + 1] = arg[i]
        i = i + 1
    end
end
if #urls == 0 then
    for line in io.lines() do
        if line:match("%S") then urls[#urls + 1] = line:match("^%s*(.-)%s*$") end
    end
end

local session <close> = loom.session{ max_per_host = limit, timeout = 30 }
local slots = loom.semaphore(limit)
local ok, failed = 0, 0

local function get(url)
    return slots:with(function()
        local t0 = loom.now()
        local res, err = session:get(url)
        local ms = (loom.now() - t0) * 1000
        if res then
            ok = ok + 1
            print(("%d %8d bytes %6.1f ms  %s"):format(res.status, #res:text(), ms, url))
        else
            failed = failed + 1
            print(("ERR %s  %s"):format(err, url))
        end
    end)
end

local jobs = {}
for n, url in ipairs(urls) do jobs[n] = function() return get(url) end end
loom.gather(table.unpack(jobs))
print(("%d fetched, %d failed"):format(ok, failed))
if failed > 0 then loom.exit(1) end
