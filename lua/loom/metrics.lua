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

-- The exposition of app's counters, as text.
function M.render(app)
    local t = gather(app)
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
    out[#out + 1] = 'loom_http_open_connections{protocol="http1"} ' .. num(t.connections)
    local ws = 0
    for _ in pairs(app.websockets or {}) do ws = ws + 1 end
    out[#out + 1] = 'loom_http_open_connections{protocol="websocket"} ' .. num(ws)
    family(out, "loom_http_handler_errors_total", "counter", "Handlers that raised an error.")
    out[#out + 1] = "loom_http_handler_errors_total " .. num(t.handler_errors)
    family(out, "loom_http_handler_timeouts_total", "counter", "Handlers cancelled at handler_timeout.")
    out[#out + 1] = "loom_http_handler_timeouts_total " .. num(t.handler_timeouts)
    local c = client_pools()
    family(out, "loom_client_sessions", "gauge", "Client sessions (loom.session, loom.fetch's own) alive.")
    out[#out + 1] = "loom_client_sessions " .. num(c.sessions)
    family(out, "loom_client_connections", "gauge", "Client pool connections, by state.")
    out[#out + 1] = 'loom_client_connections{state="active"} ' .. num(c.active)
    out[#out + 1] = 'loom_client_connections{state="idle"} ' .. num(c.idle)
    family(out, "loom_client_connections_opened_total", "counter", "Client connections opened.")
    out[#out + 1] = "loom_client_connections_opened_total " .. num(c.opened)
    family(out, "loom_client_connections_reused_total", "counter", "Client requests sent on a kept connection.")
    out[#out + 1] = "loom_client_connections_reused_total " .. num(c.reused)
    family(out, "loom_tasks", "gauge", "Tasks not yet done (handlers included), the scrape's own and the main task aside.")
    out[#out + 1] = "loom_tasks " .. num(core.task_count())
    family(out, "loom_lua_memory_bytes", "gauge", "Bytes of the Lua heap.")
    out[#out + 1] = "loom_lua_memory_bytes " .. num(math.floor(collectgarbage("count") * 1024))
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
