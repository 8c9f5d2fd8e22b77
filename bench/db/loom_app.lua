-- bench/db/loom_app.lua PORT DATABASE_URL REDIS_URL POOL REDIS_POOL [pool]: TechEmpower's database shapes
-- and a Redis GET, as a loom user writes them (bench/db/run.py starts it pinned to one core). The
-- queries of /db and /fortunes share one connection (loom.pg's automatic pipelining), as the GETs do
-- (loom.redis's); with "pool" last, auto_pipeline = false for both gives each query in flight a pooled
-- connection of its own (POOL of them) and each GET one (REDIS_POOL of them), as before.
--   /db         one random row of world (10 000 rows) as JSON
--   /queries?n= n random rows (1..500), one db:pipeline round trip
--   /fortunes   the fortune table plus one row, sorted by message, HTML-escaped into a page
--   /redis      GET bench:greeting
local port, db_url, redis_url = tonumber(arg[1]), arg[2], arg[3]
local pool = tonumber(arg[4]) or 16
local redis_pool = tonumber(arg[5]) or 50
local auto_pipeline = arg[6] ~= "pool"

local db = loom.pg(db_url .. "?max=" .. pool .. "&auto_pipeline=" .. tostring(auto_pipeline))
local r = loom.redis{ host = redis_url:match("//([^:/]+)"),
    port = tonumber(redis_url:match(":(%d+)/?%d*$")), max = redis_pool, auto_pipeline = auto_pipeline }
local random, concat, sort = math.random, table.concat, table.sort

local WORLD = "select id, randomnumber from world where id = $1"

local app = loom.app()

app:get("/db", function()
    local row = assert(db:query(WORLD, random(10000)))[1]
    return { json = { id = row.id, randomNumber = row.randomnumber } }
end)

app:get("/queries", function(req)
    local n = math.tointeger(tonumber(req.query.n or req.query.queries)) or 1
    n = n < 1 and 1 or n > 500 and 500 or n
    local list = {}
    for i = 1, n do list[i] = { WORLD, random(10000) } end
    local res = assert(db:pipeline(list))
    local out = {}
    for i = 1, n do
        local row = res[i][1]
        out[i] = { id = row.id, randomNumber = row.randomnumber }
    end
    return { json = out }
end)

local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }
app:get("/fortunes", function()
    local rows = assert(db:query("select id, message from fortune"))
    rows[#rows + 1] = { id = 0, message = "Additional fortune added at request time." }
    sort(rows, function(a, b) return a.message < b.message end)
    local out = { "<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
        .. "<tr><th>id</th><th>message</th></tr>" }
    for i, row in ipairs(rows) do
        out[i + 1] = "<tr><td>" .. row.id .. "</td><td>" .. row.message:gsub("[&<>\"']", ESC)
            .. "</td></tr>"
    end
    out[#out + 1] = "</table></body></html>"
    return { html = concat(out) }
end)

app:get("/redis", function()
    return assert(r:get("bench:greeting"))
end)

app:run{ host = "127.0.0.1", port = port, access_log = false }
