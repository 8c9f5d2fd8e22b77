-- A copy of ../shared/bench/profiles/loom.lua for bench/cg.sh (static/ need not exist). Usage: loom profiles_loom.lua PORT
local loom = rawget(_G, "loom") or require "loom"
local port = tonumber(arg[1]) or 18204
local app = loom.app()
app:get("/plaintext", function() return "Hello, World!" end)
app:get("/json", function() return { json = { message = "Hello, World!" } } end)
app:get("/users/{id}", function(req) return { json = { id = req.params.id, page = req.query.page } } end)
app:post("/upload", function(req)
    local n = 0
    for chunk in req:chunks() do n = n + #chunk end
    return tostring(n)
end)
app:static("/static", "static")
assert(app:listen{ host = "127.0.0.1", port = port })   -- access_log is off by default for listen
