-- bench/compress/loom_app.lua PORT LEVEL: the 20 KB JSON answer with compress = { level }
-- (LEVEL 0: compress off), and a small text answer (never coded: under min_size).
local port, level = tonumber(arg[1]), tonumber(arg[2]) or 6
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local data = dofile(here .. "/data.lua")
local app = loom.app{ compress = level > 0 and { level = level } or nil }
app:get("/json20k", function() return { json = data } end)
app:get("/hello", function() return "Hello, World!" end)
app:run{ host = "127.0.0.1", port = port, access_log = false }
