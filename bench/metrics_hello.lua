-- The hello-world server of bench/metrics.py: build/loom bench/metrics_hello.lua PORT MODE
--   MODE off: as bench/hello.lua; metrics: app:metrics("/metrics") (every request counted);
--   combined / json: the access log in that format (stdout: the bench sends it to /dev/null)
local loom = rawget(_G, "loom") or require "loom"
local mode = arg[2] or "off"
local app = loom.app()
app:get("/", function() return "Hello, World!" end)
if mode == "metrics" then app:metrics("/metrics") end
local log = (mode == "combined" or mode == "json") and mode or false
assert(app:listen{ host = "127.0.0.1", port = tonumber(arg[1]) or 18086, access_log = log })
