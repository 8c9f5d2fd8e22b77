-- The hello-world server the benchmarks measure: build/loom bench/hello.lua PORT
local loom = rawget(_G, "loom") or require "loom"
local app = loom.app()
app:get("/", function() return "Hello, World!" end)
assert(app:listen{ host = "127.0.0.1", port = tonumber(arg[1]) or 18085 })
