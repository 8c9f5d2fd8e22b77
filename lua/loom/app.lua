-- loom.app: the web framework over the C server engine: routes, middleware, what a
-- handler may return, static files, listen and run. The request path from socket to
-- handler and back is C (src/http_*.c); this file decides what runs and what it means.
local core = require "loom.core"
local args = require "loom.args"
local json = require "loom.json"
local router = require "loom.router"
local request = require "loom.request"

local type, pairs, error, setmetatable, tostring = type, pairs, error, setmetatable, tostring

local App = {}
App.__index = App
App.__name = "loom.app"

local LIMITS = { "max_body", "max_header", "header_timeout", "keepalive_timeout", "body_timeout", "send_timeout",
    "handler_timeout" }
local APP_OPTS, LISTEN_OPTS, RUN_OPTS = {}, {}, { workers = true, grace = true }
for _, k in ipairs(LIMITS) do APP_OPTS[k] = true end
for _, k in ipairs({ "host", "port", "backlog", "reuseport", "access_log", "tls" }) do
    LISTEN_OPTS[k], RUN_OPTS[k] = true, true
end

-- loom.app{ max_body = 1 MiB, max_header = 16 KiB, header_timeout = 30, keepalive_timeout = 75,
--           body_timeout = 60, send_timeout = 60, handler_timeout = 60 (0 or false: none) }
local function new(opts)
    opts = args.known(args.opts(opts, "app", 1), APP_OPTS, "app", 1)
    local app = setmetatable({ router = router.new(), middleware = {}, limits = {},
        websockets = setmetatable({}, { __mode = "k" }) }, App)
    for _, k in ipairs(LIMITS) do
        local v
        if k == "handler_timeout" and opts[k] == false then
            v = 0 -- no limit
        else
            v = args.opt(opts, k, "number", nil, "app", 1)
            if v and v < 0 then args.fail("app", 1, "option '" .. k .. "': must not be negative") end
        end
        app.limits[k] = v
    end
    return app
end

-- Routes ------------------------------------------------------------------------------

local function check_route(pattern, handler, fname)
    args.check(pattern, "string", fname, 1)
    if pattern:sub(1, 1) ~= "/" then args.fail(fname, 1, "pattern must start with '/'", 2) end
    args.check(handler, "function", fname, 2)
end

-- app:route(method, pattern, handler)
function App:route(method, pattern, handler)
    args.check(method, "string", "route", 1)
    check_route(pattern, handler, "route")
    self.router:add(method:upper(), pattern, handler)
    return self
end

for _, m in ipairs({ "get", "post", "put", "patch", "delete", "head", "options" }) do
    local method = m:upper()
    App[m] = function(self, pattern, handler)
        check_route(pattern, handler, m)
        self.router:add(method, pattern, handler)
        return self
    end
end

-- app:any(pattern, handler): every method
function App:any(pattern, handler)
    check_route(pattern, handler, "any")
    self.router:add("*", pattern, handler)
    return self
end

-- app:use(function(req, next) ... return next(req) end): middleware, outermost first
function App:use(fn)
    args.check(fn, "function", "use", 1)
    self.middleware[#self.middleware + 1] = fn
    return self
end

-- Responses ---------------------------------------------------------------------------

local function has_header(headers, lname)
    if not headers then return false end
    if headers[lname] ~= nil then return true end
    for k in pairs(headers) do
        if type(k) == "string" and k:lower() == lname then return true end
    end
    return false
end

local function with_header(headers, name, value)
    local h = {}
    if headers then for k, v in pairs(headers) do h[k] = v end end
    h[name] = value
    return h
end

local static -- loom.static, loaded when a file is returned

-- Turns what a handler returned into a table {status, headers, body} (or file).
local function normalize(res)
    local t = type(res)
    if t == "string" then
        return { status = 200, headers = { ["content-type"] = "text/plain; charset=utf-8" }, body = res }
    elseif res == nil then
        return { status = 204 }
    elseif t ~= "table" then
        error("handler returned a " .. t .. " (expected a string, a table or nothing)", 0)
    end
    if res.body ~= nil or res.file ~= nil or (res.text == nil and res.html == nil and res.json == nil) then
        local body = res.body
        if body ~= nil and type(body) ~= "string" then
            error("response body must be a string, got " .. type(body), 0)
        end
        if body ~= nil and not has_header(res.headers, "content-type") and res.file == nil then
            return { status = res.status or 200, body = body,
                headers = with_header(res.headers, "content-type", "application/octet-stream") }
        end
        return res
    end
    local body, ct
    if res.text ~= nil then
        body, ct = tostring(res.text), "text/plain; charset=utf-8"
    elseif res.html ~= nil then
        body, ct = tostring(res.html), "text/html; charset=utf-8"
    else
        body, ct = json.encode(res.json), "application/json"
    end
    local headers = res.headers
    if not has_header(headers, "content-type") then headers = with_header(headers, "content-type", ct) end
    return { status = res.status or 200, headers = headers, body = body }
end

-- What the C engine takes: a string (200 text/plain), nothing (204, or a finished stream),
-- or status, headers, body.
local emit
function emit(req, res)
    if type(res) == "string" then return res end
    res = normalize(res)
    if res.file ~= nil then
        static = static or require "loom.static"
        -- nothing once the file is streamed; a table for 304, 404 or 416, to emit in turn
        local answer = static.send(req, res.file, res.status, res.headers)
        if answer ~= nil then return emit(req, answer) end
        return
    end
    return res.status or 200, res.headers, res.body
end

local function not_found()
    return { status = 404, headers = { ["content-type"] = "text/plain; charset=utf-8" }, body = "Not Found" }
end

-- The innermost handler: route, call, and (under middleware) normalize.
local function dispatcher(app, wrap)
    local r = app.router
    return function(req)
        local h, params = r:match(req.method, req.path)
        if not h then
            if #params > 0 then
                local allow = table.concat(params, ", ")
                return { status = 405, body = "Method Not Allowed",
                    headers = { ["content-type"] = "text/plain; charset=utf-8", allow = allow } }
            end
            return not_found()
        end
        if params and next(params) then req.params = params end
        local res = h(req)
        if wrap then return normalize(res) end
        return res
    end
end

-- The function the engine runs, in a task of its own, for each request. C passes an empty
-- request table that already has its metatable. Without middleware, a route without
-- patterns is found here, in two lookups, rather than through the dispatcher; a string
-- result (the commonest answer) goes back to C as it is.
function App:_entry()
    local mw = self.middleware
    local inner = dispatcher(self, #mw > 0)
    local chain = inner
    for i = #mw, 1, -1 do
        local m, nxt = mw[i], chain
        chain = function(req)
            return m(req, function(r)
                local res = nxt(r or req)
                return normalize(res)
            end)
        end
    end
    local exact = #mw == 0 and self.router.exact or {}
    local type = type
    return function(req, box, method, path)
        req.method, req.path, req._box = method, path, box
        local routes = exact[method]
        local h = routes and routes[path]
        local res
        if h then res = h(req) else res = chain(req) end
        if type(res) == "string" then return res end
        return emit(req, res)
    end
end

-- app:ws(pattern, function(ws, req) ... end [, { max_message }]): a websocket endpoint;
-- middleware runs for the upgrade request like for any other.
function App:ws(pattern, fn, opts)
    check_route(pattern, fn, "ws")
    self.router:add("GET", pattern, require("loom.websocket").server_handler(fn, opts, self.websockets))
    return self
end

-- Closes the app's open websockets with 1001 (going away), each in a task of its own.
-- app:run does this after srv:close: an upgraded connection is no longer the server's, and
-- its handler would otherwise keep the process alive.
function App:close_websockets()
    for ws in pairs(self.websockets) do
        core.spawn(function() ws:close(1001, "server shutting down") end)
    end
end

-- app:static(prefix, dir): files under dir at prefix/...
function App:static(prefix, dir)
    args.check(prefix, "string", "static", 1)
    args.check(dir, "string", "static", 2)
    static = static or require "loom.static"
    prefix = prefix:gsub("/+$", "")
    local handler = static.handler(dir)
    self.router:add("GET", prefix .. "/{path*}", handler)
    if prefix ~= "" then self.router:add("GET", prefix, handler) end
    return self
end

-- Serving -----------------------------------------------------------------------------

local TLS_SHAPE = "option 'tls': {cert = file, key = file [, names]} or a list of them expected"

-- The server's TLS configuration from app:listen's `tls` option: one {cert, key} pair, or
-- a list of pairs chosen by the client's SNI among their `names` (default: the names in
-- the certificate), the first pair when no name matches. -> config | nil, "tls: ..."
local function tls_config(tls)
    if type(tls) ~= "table" then args.fail("listen", 1, TLS_SHAPE, 2) end
    local pairs_ = tls[1] ~= nil and tls or { tls }
    local certs = {}
    for i, p in ipairs(pairs_) do
        if type(p) ~= "table" or type(p.cert) ~= "string" or type(p.key) ~= "string" then
            args.fail("listen", 1, TLS_SHAPE, 2)
        end
        local names = p.names
        if type(names) == "string" then names = { names } end
        if names ~= nil and type(names) ~= "table" then
            args.fail("listen", 1, "option 'tls': names must be a string or a list of strings", 2)
        end
        certs[i] = { cert = p.cert, key = p.key, names = names }
    end
    return core.tls_config{ server = true, certs = certs }
end

-- app:listen{ host = "0.0.0.0", port = 8080, reuseport, backlog, access_log, tls } -> server | nil, err
function App:listen(opts)
    opts = args.known(args.opts(opts, "listen", 1), LISTEN_OPTS, "listen", 1)
    local o = {}
    o.host = args.opt(opts, "host", "string", "0.0.0.0", "listen", 1)
    if o.host == "localhost" then o.host = "127.0.0.1" end
    local port = args.opt(opts, "port", "number", 8080, "listen", 1)
    if math.type(port) ~= "integer" or port < 0 or port > 65535 then
        args.fail("listen", 1, "option 'port': integer from 0 to 65535 expected")
    end
    o.port = port
    o.backlog = args.opt(opts, "backlog", "number", nil, "listen", 1)
    o.reuseport = args.opt(opts, "reuseport", "boolean", nil, "listen", 1)
    o.access_log = args.opt(opts, "access_log", "boolean", nil, "listen", 1)
    if opts.tls ~= nil then
        local err
        o.tls, err = tls_config(opts.tls)
        if not o.tls then return nil, err end
    end
    for _, k in ipairs(LIMITS) do o[k] = self.limits[k] end
    o.request_mt = request.mt
    return core.http_listen(self:_entry(), o)
end

-- app:run{ host, port, access_log = true, workers = 1, grace = 10 }: listen, say where,
-- serve until SIGINT or SIGTERM, then close gracefully.
function App:run(opts)
    opts = args.known(args.opts(opts, "run", 1), RUN_OPTS, "run", 1)
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    if o.access_log == nil then o.access_log = true end
    local workers = args.opt(opts, "workers", "number", tonumber(os.getenv("LOOM_WORKERS")) or 1, "run", 1)
    local grace = args.opt(opts, "grace", "number", 10, "run", 1)
    o.workers, o.grace = nil, nil
    local run = function()
        local srv, err = self:listen(o)
        if not srv then error(err, 0) end
        return srv
    end
    if workers > 1 then
        return require("loom.workers").run(function()
            local srv = run()
            -- what the worker closes on a signal: the server, then the websockets
            return { port = srv.port, close = function(_, g) srv:close(g); self:close_websockets() end }
        end, workers, o, grace)
    end
    local srv = run()
    io.stdout:write(("listening on %s://%s:%d\n"):format(o.tls and "https" or "http", o.host or "0.0.0.0",
        srv.port))
    io.stdout:flush()
    local sig = core.wait_signal({ "SIGINT", "SIGTERM" })
    io.stderr:write(("loom: %s, closing (up to %gs for requests in flight)\n"):format(sig, grace))
    srv:close(grace)
    self:close_websockets()
    return srv
end

return { new = new, App = App, normalize = normalize }
