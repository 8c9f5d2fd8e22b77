-- loom.metrics: app:metrics(path) and the access_log option's check. The counting is C
-- (src/http1/access_log.c: a few counters per server, bumped where each answer ends); this
-- file only reads them when the path is scraped and writes the Prometheus text exposition
-- format (version 0.0.4): requests by method and status, a latency histogram, bytes in and
-- out, open connections (HTTP/1.1 and websockets), handler errors and timeouts, the client
-- sessions' pools, live tasks and the Lua heap.
local core = require "loom.core"
local args = require "loom.args"

local concat, format, pairs, type = table.concat, string.format, pairs, type

local M = {}

local ACCESS_LOG = "true, false, \"combined\", \"json\" or a function expected"

-- The access_log option of app:listen and app:run, checked: nil, a boolean, "combined",
-- "json" or a function(entry).
function M.access_log_opt(v, fname, n)
    local t = type(v)
    if v == nil or t == "boolean" or t == "function" or v == "combined" or v == "json" then return v end
    args.fail(fname, n, "option 'access_log': " .. ACCESS_LOG .. ", got " .. (t == "string" and format("%q", v) or t), 2)
end

-- The servers of each app that count (weak: a closed server goes with its box).
local servers = setmetatable({}, { __mode = "k" })

-- app:listen made srv with metrics on.
function M.track(app, srv)
    local set = servers[app]
    if not set then
        set = setmetatable({}, { __mode = "k" })
        servers[app] = set
    end
    set[srv] = true
end

-- A label value, escaped as the text format says: backslash, double quote and line feed.
local function label(v)
    return (tostring(v):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local function num(v)
    if math.type(v) == "integer" then return format("%d", v) end
    return format("%.17g", v)
end

local function family(out, name, kind, help)
    out[#out + 1] = "# HELP " .. name .. " " .. help
    out[#out + 1] = "# TYPE " .. name .. " " .. kind
end

-- The app's servers' counters, added up.
local function gather(app)
    local total = { requests = {}, buckets = {}, sum = 0, count = 0, bytes_in = 0, bytes_out = 0,
        handler_errors = app.handler_errors or 0, handler_timeouts = 0, connections = 0 }
    for srv in pairs(servers[app] or {}) do
        local s = core.http_stats(srv)
        if s then
            for _, r in ipairs(s.requests) do
                local key = r[1] .. " " .. r[2]
                total.requests[key] = (total.requests[key] or 0) + r[3]
            end
            total.le = s.le
            for i, v in ipairs(s.buckets) do total.buckets[i] = (total.buckets[i] or 0) + v end
            for _, k in ipairs({ "sum", "count", "bytes_in", "bytes_out", "handler_errors", "handler_timeouts",
                "connections" }) do
                total[k] = total[k] + s[k]
            end
        end
    end
    return total
end

-- The client sessions' pools (lua/loom/client.lua), added up.
local function client_pools()
    local n = { idle = 0, active = 0, opened = 0, reused = 0, sessions = 0 }
    local client = package.loaded["loom.client"]
    for sess in pairs(client and client.sessions or {}) do
        local s = sess:stats()
        n.sessions = n.sessions + 1
        for _, k in ipairs({ "idle", "active", "opened", "reused" }) do n[k] = n[k] + (s[k] or 0) end
    end
    return n
end

-- What one process counts, as plain values: the servers' counters (gather), the open
-- websockets, the client pools, the tasks and the Lua heap.
local function snapshot(app, in_publisher)
    local t = gather(app)
    local ws = 0
    for _ in pairs(app.websockets or {}) do ws = ws + 1 end
    local c = client_pools()
    local tasks = core.task_count()
    -- task_count leaves out the calling task: the publisher's own count when it calls
    if app.metrics_shared and app.metrics_shared.task and not in_publisher then tasks = tasks - 1 end
    return {
        requests = t.requests, le = t.le, buckets = t.buckets,
        counters = { sum = t.sum + 0.0, count = t.count, bytes_in = t.bytes_in, bytes_out = t.bytes_out,
            handler_errors = t.handler_errors, handler_timeouts = t.handler_timeouts,
            opened = c.opened, reused = c.reused },
        gauges = { connections = t.connections, websockets = ws, sessions = c.sessions, active = c.active,
            idle = c.idle, tasks = tasks, memory = math.floor(collectgarbage("count") * 1024) },
    }
end

-- Adds snapshot b into a: counters and gauges alike (gauges only when with_gauges: a dead
-- worker's counts carry over into its successor, its open connections do not).
local function add(a, b, with_gauges)
    for k, v in pairs(b.requests or {}) do a.requests[k] = (a.requests[k] or 0) + v end
    for i, v in ipairs(b.buckets or {}) do a.buckets[i] = (a.buckets[i] or 0) + v end
    a.le = a.le or b.le
    for k, v in pairs(b.counters or {}) do a.counters[k] = (a.counters[k] or 0) + v end
    if with_gauges then
        for k, v in pairs(b.gauges or {}) do a.gauges[k] = (a.gauges[k] or 0) + v end
    end
    return a
end

-- ---------------------------------------------------------------- across workers
-- With app:run{ workers = N }, each worker counts its own answers, and a scrape reaches one
-- of them. So that a scrape shows the whole server, each worker writes its snapshot, every
-- second and when it stops, into a loom.shared dictionary the supervisor made before it
-- started them (key "w<i>", JSON); the scraped worker adds the others' last ones to its
-- own. A restarted worker starts from what its predecessor last wrote, so a _total never
-- goes down (a worker killed loses what it counted since it last wrote, at most a second's
-- worth, but no scrape showed it); the others' figures are at most a second old.
local DICT, DICT_SIZE, PERIOD = "loom_metrics", 1 << 20, 1

-- The supervisor, before it starts the workers.
function M.prepare_workers()
    assert(require("loom.runtime").shared(DICT, DICT_SIZE))
end

local function decode(s)
    local ok, v = pcall(require("loom.json").decode, s)
    if ok and type(v) == "table" then
        v.requests, v.buckets = v.requests or {}, v.buckets or {}
        v.counters, v.gauges = v.counters or {}, v.gauges or {}
        return v
    end
end

local function own(app, in_publisher)
    local sh = app.metrics_shared
    local t = snapshot(app, in_publisher)
    if sh and sh.base then add(t, sh.base, false) end
    return t
end

local function publish(app, in_publisher)
    local sh = app.metrics_shared
    local t = own(app, in_publisher)
    local j = require("loom.json")
    -- JSON arrays from the buckets even when empty, and keys the decoder gives back as strings
    sh.dict:set("w" .. sh.me, j.encode({ requests = next(t.requests) and t.requests or nil,
        buckets = #t.buckets > 0 and t.buckets or nil, le = t.le, counters = t.counters, gauges = t.gauges }))
end

-- Worker i of n, once it listens: returns the function that stops the publishing (and
-- publishes a last time; the worker calls it when told to stop), or nil when there is no
-- dictionary to share.
function M.share_worker(app, i, n)
    if not os.getenv("LOOM_SHARED_" .. DICT) then return nil end
    local d = require("loom.runtime").shared(DICT, DICT_SIZE)
    if not d then return nil end
    local prev = d:get("w" .. i)
    local sh = { dict = d, me = i, n = n, base = prev and decode(prev) }
    app.metrics_shared = sh
    publish(app)
    sh.task = core.spawn(function()
        while true do
            core.sleep(PERIOD)
            publish(app, true)
        end
    end)
    return function()
        if sh.task then sh.task:cancel() end
        sh.task = nil
        publish(app)
    end
end

-- This process's snapshot, and with workers the others' last ones added. The scraped
-- worker writes its own first: a later scrape that another worker answers then counts at
-- least as much of this one's, so a _total never goes down from one scrape to the next.
local function totals(app)
    local t = own(app)
    local sh = app.metrics_shared
    if not sh then return t end
    publish(app)
    for j = 1, sh.n do
        if j ~= sh.me then
            local s = sh.dict:get("w" .. j)
            local other = s and decode(s)
            if other then add(t, other, true) end
        end
    end
    return t
end

-- The exposition of app's counters, as text.
function M.render(app)
    local s = totals(app)
    local t = { requests = s.requests, le = s.le, buckets = s.buckets }
    for k, v in pairs(s.counters) do t[k] = v end
    local out = {}
    family(out, "loom_http_requests_total", "counter", "HTTP requests answered, by method and status.")
    local keys = {}
    for k in pairs(t.requests) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
        local method, status = k:match("^(%S+) (%d+)$")
        out[#out + 1] = format('loom_http_requests_total{method="%s",status="%s"} %s', label(method), status,
            num(t.requests[k]))
    end
    family(out, "loom_http_request_duration_seconds", "histogram",
        "Time from a request's head to its whole answer handed to the socket.")
    for i, le in ipairs(t.le or {}) do
        out[#out + 1] = format('loom_http_request_duration_seconds_bucket{le="%s"} %s', le, num(t.buckets[i]))
    end
    if not t.le then out[#out + 1] = 'loom_http_request_duration_seconds_bucket{le="+Inf"} 0' end
    out[#out + 1] = "loom_http_request_duration_seconds_sum " .. num(t.sum + 0.0)
    out[#out + 1] = "loom_http_request_duration_seconds_count " .. num(t.count)
    family(out, "loom_http_received_bytes_total", "counter", "Bytes read from HTTP connections (plaintext).")
    out[#out + 1] = "loom_http_received_bytes_total " .. num(t.bytes_in)
    family(out, "loom_http_sent_bytes_total", "counter", "Bytes of HTTP answers, heads and bodies.")
    out[#out + 1] = "loom_http_sent_bytes_total " .. num(t.bytes_out)
    family(out, "loom_http_open_connections", "gauge", "Open connections, by protocol.")
    out[#out + 1] = 'loom_http_open_connections{protocol="http1"} ' .. num(s.gauges.connections)
    out[#out + 1] = 'loom_http_open_connections{protocol="websocket"} ' .. num(s.gauges.websockets)
    family(out, "loom_http_handler_errors_total", "counter", "Handlers that raised an error.")
    out[#out + 1] = "loom_http_handler_errors_total " .. num(t.handler_errors)
    family(out, "loom_http_handler_timeouts_total", "counter", "Handlers cancelled at handler_timeout.")
    out[#out + 1] = "loom_http_handler_timeouts_total " .. num(t.handler_timeouts)
    local g = s.gauges
    family(out, "loom_client_sessions", "gauge", "Client sessions (loom.session, loom.fetch's own) alive.")
    out[#out + 1] = "loom_client_sessions " .. num(g.sessions)
    family(out, "loom_client_connections", "gauge", "Client pool connections, by state.")
    out[#out + 1] = 'loom_client_connections{state="active"} ' .. num(g.active)
    out[#out + 1] = 'loom_client_connections{state="idle"} ' .. num(g.idle)
    family(out, "loom_client_connections_opened_total", "counter", "Client connections opened.")
    out[#out + 1] = "loom_client_connections_opened_total " .. num(t.opened)
    family(out, "loom_client_connections_reused_total", "counter", "Client requests sent on a kept connection.")
    out[#out + 1] = "loom_client_connections_reused_total " .. num(t.reused)
    family(out, "loom_tasks", "gauge", "Tasks not yet done (handlers included), the scrape's own and the main task aside.")
    out[#out + 1] = "loom_tasks " .. num(g.tasks)
    family(out, "loom_lua_memory_bytes", "gauge", "Bytes of the Lua heap.")
    out[#out + 1] = "loom_lua_memory_bytes " .. num(g.memory)
    out[#out + 1] = ""
    return concat(out, "\n")
end

local CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

-- app:metrics(path): counting on for the servers app:listen makes from now on, and the
-- exposition at GET path.
function M.mount(app, path)
    if type(path) ~= "string" then args.fail("metrics", 1, "string expected, got " .. type(path), 2) end
    if path:sub(1, 1) ~= "/" then args.fail("metrics", 1, "path must start with '/'", 2) end
    app.metrics_path = path
    app:get(path, function()
        return { status = 200, headers = { ["content-type"] = CONTENT_TYPE }, body = M.render(app) }
    end)
    return app
end

return M
