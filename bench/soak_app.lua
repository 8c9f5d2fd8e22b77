-- The mixed app bench/soak_server.py loads: build/loom bench/soak_app.lua PORT
--   GET  /        "Hello, World!"
--   GET  /json    a small JSON document
--   GET  /big     64 KiB of bytes
--   POST /upload  the body read piece by piece with req:chunks(); answers its length
--   GET  /stats   the server's own counts, as JSON (read by the soak after the load)
-- A handler that finds something wrong counts it in `errors` and answers 500, so wrk sees
-- it too. An upload cut short because the client went away (wrk stopping mid-request at
-- the end of a run) is counted apart, in `cut`: that is the load ending, not a fault.
local loom = rawget(_G, "loom") or require "loom"

local port = tonumber(arg[1]) or 18190
local BIG = ("0123456789abcdef"):rep(4096) -- 64 KiB
local stats = { requests = 0, uploads = 0, upload_bytes = 0, errors = 0, cut = 0, last_error = nil }

local app = loom.app()

app:get("/", function()
    stats.requests = stats.requests + 1
    return "Hello, World!"
end)

app:get("/json", function(req)
    stats.requests = stats.requests + 1
    return { json = { id = 7, name = "soak", tags = { "a", "b", "c" }, page = req.query.page,
        nested = { ok = true, n = stats.requests } } }
end)

app:get("/big", function()
    stats.requests = stats.requests + 1
    return { body = BIG }
end)

app:post("/upload", function(req)
    stats.requests = stats.requests + 1
    local want = tonumber(req.headers["content-length"])
    local n = 0
    local ok, err = pcall(function()
        for piece in req:chunks() do n = n + #piece end
    end)
    if not ok then
        if tostring(err):match("^closed") then
            stats.cut = stats.cut + 1
        else
            stats.errors = stats.errors + 1
            stats.last_error = tostring(err)
        end
        return { status = 500, text = tostring(err) }
    end
    if want and n ~= want then
        stats.errors = stats.errors + 1
        stats.last_error = ("upload of %d bytes read as %d"):format(want, n)
        return { status = 500, text = stats.last_error }
    end
    stats.uploads = stats.uploads + 1
    stats.upload_bytes = stats.upload_bytes + n
    return tostring(n)
end)

-- /stats?gc=1 runs a full collection first (for looking into memory by hand; the soak
-- does not ask for it)
app:get("/stats", function(req)
    if req.query.gc then collectgarbage() end
    stats.lua_kb = collectgarbage("count")
    return { json = stats }
end)

-- backlog: wrk opens 1000 connections at once
assert(app:listen{ host = "127.0.0.1", port = port, backlog = 4096 })
