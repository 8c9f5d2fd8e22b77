-- loom: N GETs with C in flight through one session; prints requests per second.
local loom = rawget(_G, "loom") or require "loom"
local url, n, c = arg[1], tonumber(arg[2]), tonumber(arg[3])
local s = loom.session{ max_per_host = c }
local left = n
local function worker()
    while left > 0 do
        left = left - 1
        local res = assert(s:get(url))
        assert(res:text() == "Hello, World!")
    end
end
local fns = {}
for i = 1, c do fns[i] = worker end
local t0 = loom.now()
loom.gather(table.unpack(fns))
print(string.format("%.0f", n / (loom.now() - t0)))
s:close()
