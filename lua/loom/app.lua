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
    "handler_timeout", "max_streams" }
local APP_OPTS, LISTEN_OPTS, RUN_OPTS = {}, {}, { workers = true, grace = true, cancel_tasks = true }
for _, k in ipairs(LIMITS) do APP_OPTS[k] = true end
APP_OPTS.max_parts, APP_OPTS.max_part_header = true, true -- req:parts() and req:form(), in Lua
APP_OPTS.compress = true -- lua/loom/compress.lua
for _, k in ipairs({ "host", "port", "backlog", "reuseport", "access_log", "tls", "path", "mode",
    "max_conns_per_ip", "http2" }) do
    LISTEN_OPTS[k], RUN_OPTS[k] = true, true
end

-- loom.app{ max_body = 1 MiB, max_header = 16 KiB, header_timeout = 30, keepalive_timeout = 75,
--           body_timeout = 60, send_timeout = 60, handler_timeout = 60 (0 or false: none),
--           max_streams = 100 (concurrent streams of an HTTP/2 connection) }
local function new(opts)
    opts = args.known(args.opts(opts, "app", 1), APP_OPTS, "app", 1)
    local app = setmetatable({ router = router.new(), middleware = {}, limits = {}, fallthrough = {},
        startup = {}, shutdown = {}, websockets = setmetatable({}, { __mode = "k" }) }, App)
    for _, k in ipairs(LIMITS) do
        local v
        if k == "handler_timeout" and opts[k] == false then
            v = 0 -- no limit
        else
            v = args.opt(opts, k, "number", nil, "app", 1)
            if v and v < 0 then args.fail("app", 1, "option '" .. k .. "': must not be negative") end
            if v and k == "max_streams" and (math.type(v) ~= "integer" or v < 1 or v > 0x7fffffff) then
                args.fail("app", 1, "option 'max_streams': positive integer expected")
            end
        end
        app.limits[k] = v
    end
    for _, k in ipairs({ "max_parts", "max_part_header" }) do
        local v = args.opt(opts, k, "number", nil, "app", 1)
        if v and (v < 0 or math.type(v) ~= "integer") then
            args.fail("app", 1, "option '" .. k .. "': must be a non-negative integer")
        end
        if v then
            app.form_limits = app.form_limits or {}
            app.form_limits[k] = v
        end
    end
    if opts.compress then app.compress = require("loom.compress").config(opts.compress) end
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

local function header_key(headers, lname)
    if not headers then return nil end
    if headers[lname] ~= nil then return lname end
    for k in pairs(headers) do
        if type(k) == "string" and k:lower() == lname then return k end
    end
    return nil
end

local function has_header(headers, lname)
    return header_key(headers, lname) ~= nil
end

local function with_header(headers, name, value)
    local h = {}
    if headers then for k, v in pairs(headers) do h[k] = v end end
    h[name] = value
    return h
end

local static -- loom.static, loaded when a file is returned
local server_cookies -- loom.server_cookies, loaded when an answer sets cookies

-- The content type normalize put in a header table itself (not the handler), by table: a
-- middleware that turns an answer into another kind ({json = ...} with the old headers)
-- gets the new kind's type rather than the old default.
local auto_type = setmetatable({}, { __mode = "k" })
-- The body normalize made for a table of its own making: a middleware that then sets
-- text, html or json on that table replaces the body.
local made_body = setmetatable({}, { __mode = "k" })

local function typed(headers, ct, final)
    local key = header_key(headers, "content-type")
    if key ~= nil and not (key == "content-type" and auto_type[headers] == headers[key]) then
        return headers -- the handler's own type wins
    end
    headers = with_header(headers, "content-type", ct)
    if not final then auto_type[headers] = ct end
    return headers
end

-- Turns what a handler returned into the one response shape middleware sees:
-- {status, headers, body} for strings and tables, {status, headers, file, ...} for a file
-- (sent once the middleware is done), {status = 204} for nothing, and for an answer that
-- req:stream already began {status, headers (as sent), streamed = true}. `final`: for
-- emit, no middleware will see it (nothing is noted for them).
local function normalize(res, req, final)
    local t = type(res)
    if t == "string" then
        local r = { status = 200, headers = typed(nil, "text/plain; charset=utf-8", final), body = res }
        if not final then made_body[r] = res end
        return r
    elseif res == nil then
        local sent = req and rawget(req, "_streamed")
        if sent then return { status = sent.status, headers = sent.headers, streamed = true } end
        return { status = 204 }
    elseif t ~= "table" then
        error("handler returned a " .. t .. " (expected a string, a table or nothing)", 0)
    end
    if res.streamed then return res end
    local kind = res.text ~= nil or res.html ~= nil or res.json ~= nil
    if kind and res.body ~= nil and made_body[res] == res.body then
        res.body = nil -- a middleware set text, html or json on an answer we made
    end
    if res.file ~= nil then
        static = static or require "loom.static"
        if static.is_prepared(res) then return res end
        local r = static.prepare(req, res)
        r.cookies = res.cookies
        return r
    end
    if res.body ~= nil or not kind then
        local body = res.body
        if body ~= nil and type(body) ~= "string" then
            error("response body must be a string, got " .. type(body), 0)
        end
        if body ~= nil and not has_header(res.headers, "content-type") then
            local r = { status = res.status or 200, body = body, cookies = res.cookies,
                headers = typed(res.headers, "application/octet-stream", final), compress = res.compress }
            if not final then made_body[r] = body end
            return r
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
    local r = { status = res.status or 200, headers = typed(res.headers, ct, final), body = body,
        cookies = res.cookies, compress = res.compress }
    if not final then made_body[r] = body end
    return r
end

-- What the C engine takes: a string (200 text/plain), nothing (204, or a finished stream),
-- or status, headers, body. Files are sent from here, after the middleware is done.
local emit, emit_other
local req_plain = core.req_plain -- a string answer with no req.response_headers: as it is
local rawget, with_extra, json_encode = rawget, request.with_extra, json.encode
-- The head of a {json = v} answer with nothing to add, shared: it goes only to C, which made
-- it and writes its line without reading it (core.resp_json_head, src/http1/http_response.c);
-- with req.response_headers, with_extra copies it; an app with compress gets its own
-- table, which the coder may change.
local JSON_HEADERS = core.resp_json_head()
-- What the entry of an app without compress asks instead of req_plain: also true for a
-- {json = v} answer it could encode (src/lib/json.c: cjson's bytes for plain tables of
-- strings, numbers and booleans) and has sent itself on HTTP/1 with JSON_HEADERS' line;
-- the rest goes to emit_other as before. Not without lua-cjson (json.null unset), where
-- {json = v} raises json.encode's error.
local entry_plain = json.null ~= nil and core.req_plain_json or req_plain
function emit(req, res)
    local plain, streamed, extra, tbl = req_plain(req, res)
    if plain then return res end
    return emit_other(req, res, false, streamed, extra, tbl)
end
-- emit for an answer req_plain has turned down, with what it found: req._streamed,
-- req.response_headers, whether res is a table. shared: JSON_HEADERS may be answered (the
-- app does not compress).
function emit_other(req, res, shared, streamed, extra, tbl)
    if streamed then return end -- the head is out: nothing to change now
    if tbl and res.json ~= nil and res.headers == nil and res.cookies == nil
        and res.body == nil and res.text == nil and res.html == nil and res.file == nil
        and not res.streamed then -- the commonest table ({json = v}): what normalize makes
        local headers = shared and JSON_HEADERS or { ["content-type"] = "application/json" }
        if extra and next(extra) ~= nil then headers = with_extra(req, headers) end
        return res.status or 200, headers, json_encode(res.json)
    end
    res = normalize(res, req, true)
    local headers = request.with_extra(req, res.headers)
    if res.cookies ~= nil then -- Set-Cookie lines, Secure by default over TLS
        server_cookies = server_cookies or require "loom.server_cookies"
        headers = server_cookies.add(headers, res.cookies, req.tls, 2)
    end
    if res.file ~= nil then
        -- nothing once the file is streamed; status, headers, body for a small file kept in
        -- memory; a table (404 when it went meanwhile) to emit
        local answer, h, body = static.stream(req, res, headers)
        if h ~= nil then return answer, h, body end
        if answer ~= nil then return emit(req, answer) end
        return
    end
    return res.status or 200, headers, res.body
end

local function plain_answer(status, text, headers)
    headers = headers or {}
    headers["content-type"] = "text/plain; charset=utf-8"
    auto_type[headers] = headers["content-type"]
    return { status = status, headers = headers, body = text }
end

-- A message for an error value, whatever its __tostring does.
local function error_text(e)
    if type(e) == "string" or type(e) == "number" then return tostring(e) end
    local ok, s = pcall(tostring, e)
    if ok and type(s) == "string" then return s end
    return "(error object is a " .. type(e) .. " value)"
end

-- Whether e was raised because req:parts() or req:form() found the body at fault: they keep
-- the message in req._body_error and tell the engine its status (core.req_fault), which
-- answers it when the error reaches the engine.
local function body_fault(req, e)
    local msg = rawget(req, "_body_error")
    if msg == nil or rawget(req, "_streamed") then return false end
    if type(e) ~= "string" then e = error_text(e) end -- an assert that raises objects (busted's)
    return e == msg or e:sub(-#msg) == msg -- raised again, with a position
end

-- The traceback of the latest error a guarded handler raised, taken where it was raised
-- (xpcall returns right after, so the code after it reads it before anything else runs):
-- one message handler for every request rather than a closure made for each.
local last_tb
local function keep_traceback(e)
    last_tb = debug.traceback(error_text(e), 2)
    return e
end

-- Runs fn(req) and, when it raises, answers with the app's on_error handler instead, after
-- logging the error as the server would. Left to the server: cancellation (handler_timeout),
-- a client that is gone, and any answer whose head is already out.
local function guarded(app, fn)
    local on_error = app.error_handler
    return function(req)
        local ok, res = xpcall(fn, keep_traceback, req)
        if ok then return res end
        local tb = last_tb
        last_tb = nil
        local e = res
        if e == "cancelled" or rawget(req, "_streamed") or rawget(req, "_error_handled")
            or (type(e) == "string" and e:find("^closed: ")) or body_fault(req, e) then
            error(e, 0)
        end
        io.stderr:write(("loom: error in handler for %s %s: %s\n"):format(req.method, req.target, tb))
        io.stderr:flush()
        app.handler_errors = (app.handler_errors or 0) + 1 -- app:metrics (the engine counts the rest)
        rawset(req, "_error_handled", true)
        return normalize(on_error(req, e), req)
    end
end

-- The innermost handler: static files that fall through, then routes, then not found.
local function dispatcher(app, wrap)
    local r = app.router
    local fall = app.fallthrough
    local not_found = app.not_found_handler
    return function(req)
        for i = 1, #fall do
            local res = fall[i](req)
            if res ~= nil then return res end
        end
        local method, path = req.method, req.path
        local h, params = r:find(method, path)
        if not h then h, params = r:match(method, path) end
        if not h then
            if #params > 0 then
                local allow = table.concat(params, ", ")
                return plain_answer(405, "Method Not Allowed", { allow = allow })
            end
            if not_found then return normalize(not_found(req), req) end
            return plain_answer(404, "Not Found")
        end
        if params then req.params = params end -- nil or non-empty: no next() needed
        local res = h(req)
        if wrap then return normalize(res, req) end
        return res
    end
end

-- The function the engine runs, in a task of its own, for each request. C passes an empty
-- request table that already has its metatable. Without middleware (nor error handler nor
-- static files that fall through), a route without patterns is found here, in two
-- lookups, rather than through the dispatcher; a string result (the commonest answer)
-- goes back to C as it is. Every answer is sent by emit once the middleware is done.
function App:_entry(tls)
    local mw = self.middleware
    local inner = dispatcher(self, #mw > 0)
    if self.error_handler then inner = guarded(self, inner) end
    local chain = inner
    for i = #mw, 1, -1 do
        local m, nxt = mw[i], chain
        chain = function(req)
            return m(req, function(r)
                r = r or req
                return normalize(nxt(r), r)
            end)
        end
    end
    if #mw > 0 and self.error_handler then chain = guarded(self, chain) end
    local direct = #mw == 0 and not self.error_handler and #self.fallthrough == 0
    local exact = direct and self.router.exact or {}
    local type = type
    local form_limits = self.form_limits
    local cz = self.compress
    if cz then -- the same, with the answer through the coder (lua/loom/compress.lua)
        local answer = require("loom.compress").answer
        return function(req, box, method, path)
            req.method, req.path, req._box, req._compress = method, path, box, cz
            if tls then req.tls = true end
            if form_limits then req._form_limits = form_limits end
            local routes = exact[method]
            local h = routes and routes[path]
            local res = (h or chain)(req)
            if type(res) == "table" and res.compress == false then req._no_compress = true end
            return answer(cz, req, emit(req, res))
        end
    end
    local router = self.router
    -- router.sets[method]: method's patterns as one set (lua/loom/router.lua), once matched
    local find_pattern, route_match, sets = router.find_pattern, core.route_match, router.sets
    return function(req, box, method, path)
        req.method, req.path, req._box = method, path, box
        if tls then req.tls = true end
        if form_limits then req._form_limits = form_limits end
        local routes = exact[method]
        local h = routes and routes[path]
        -- an error goes on to the engine: a 500 and a log line, or when the body was found at
        -- fault (core.req_fault) that status and the error's text
        if not h and direct then -- a pattern route: the dispatcher's find, without its call
            local set, params = sets[method], nil
            if set then
                h, params = route_match(set, path)
            else
                h, params = find_pattern(router, method, path)
            end
            if h then req.params = params end -- else the dispatcher's 404, 405, HEAD and "*"
        end
        local res = (h or chain)(req)
        local plain, streamed, extra, tbl = entry_plain(req, res)
        if plain then return res end
        return emit_other(req, res, true, streamed, extra, tbl)
    end
end

-- app:not_found(function(req) ... end): the answer for a path no route (nor file) matches,
-- instead of the plain 404; it may return anything a handler may.
function App:not_found(fn)
    args.check(fn, "function", "not_found", 1)
    self.not_found_handler = fn
    return self
end

-- app:on_error(function(req, err) ... end): the answer when a handler or middleware raises,
-- instead of the plain 500 (the error is still logged).
function App:on_error(fn)
    args.check(fn, "function", "on_error", 1)
    self.error_handler = fn
    return self
end

-- app:metrics(path): requests are counted (by the servers app:listen or app:run make after
-- this call) and GET path answers them in Prometheus text format (lua/loom/metrics.lua).
function App:metrics(path)
    return require("loom.metrics").mount(self, path)
end

-- app:ws(pattern, function(ws, req) ... end [, { max_message }]): a websocket endpoint;
-- middleware runs for the upgrade request like for any other.
function App:ws(pattern, fn, opts)
    check_route(pattern, fn, "ws")
    self.router:add("GET", pattern, require("loom.websocket").server_handler(fn, opts, self.websockets))
    return self
end

-- app:publish(topic, msg [, kind]) -> receivers: msg to every websocket subscribed to topic
-- (ws:subscribe); see lua/loom/websocket.lua.
function App:publish(topic, msg, kind)
    return require("loom.websocket").publish(self, topic, msg, kind)
end

-- Closes the app's open websockets with 1001 (going away), each in a task of its own, and
-- returns those tasks. app:run does this after srv:close: an upgraded connection is no
-- longer the server's, and its handler would otherwise keep the process alive.
function App:close_websockets()
    local closers = {}
    for ws in pairs(self.websockets) do
        closers[#closers + 1] = core.spawn(function() ws:close(1001, "server shutting down") end)
    end
    return closers
end

local STATIC_OPTS = { fallthrough = true, precompressed = true, max_open_files = true }

-- app:static(prefix, dir [, { fallthrough = false, precompressed = false,
-- max_open_files = 1024 }]): files under dir at prefix/...; with fallthrough, a path that
-- names no file goes on to the routes (files are looked up first), instead of a 404; with
-- precompressed, file.br / file.gz beside a file are sent when the client accepts them
-- (lua/loom/static.lua).
function App:static(prefix, dir, opts)
    args.check(prefix, "string", "static", 1)
    args.check(dir, "string", "static", 2)
    opts = args.known(args.opts(opts, "static", 3), STATIC_OPTS, "static", 3)
    local fall = args.opt(opts, "fallthrough", "boolean", false, "static", 3)
    local mopts = { precompressed = args.opt(opts, "precompressed", "boolean", false, "static", 3),
        max_open_files = args.opt(opts, "max_open_files", "number", 1024, "static", 3) }
    if math.type(mopts.max_open_files) ~= "integer" or mopts.max_open_files < 1 then
        args.fail("static", 3, "option 'max_open_files': positive integer expected, got "
            .. tostring(mopts.max_open_files), 1)
    end
    static = static or require "loom.static"
    prefix = prefix:gsub("/+$", "")
    if fall then
        self.fallthrough[#self.fallthrough + 1] = static.fallthrough(prefix, dir, mopts)
        return self
    end
    local handler = static.handler(dir, mopts)
    self.router:add("GET", prefix .. "/{path*}", handler)
    if prefix ~= "" then self.router:add("GET", prefix, handler) end
    return self
end

-- Serving -----------------------------------------------------------------------------

local TLS_SHAPE = "option 'tls': {cert = file, key = file [, names]} or a list of them expected"

-- The server's TLS configuration from app:listen's `tls` option: one {cert, key} pair, or
-- a list of pairs chosen by the client's SNI among their `names` (default: the names in
-- the certificate), the first pair when no name matches. -> config | nil, "tls: ..."
local function tls_config(tls, http2)
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
    -- ALPN: h2 first unless http2 = false (the engine hands "h2" connections to HTTP/2);
    -- http/1.0 too, as nginx offers: a client whose list meets none is refused the handshake
    return core.tls_config{ server = true, certs = certs, alpn = http2 and "h2,http/1.1,http/1.0" or nil }
end

-- app:listen{ host = "0.0.0.0", port = 8080, reuseport, backlog, access_log, tls, path, mode,
--             max_conns_per_ip, http2 } -> server | nil, err
-- http2: with tls, ALPN offers h2 beside http/1.1 unless it is false; without tls, true
-- serves h2c by prior knowledge beside HTTP/1.1 on the same port (docs/http2.md)
-- access_log: false (default), true or "combined", "json", or a function(entry) (docs/server.md)
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
    -- a unix-domain socket instead of host and port; mode: its permission bits, "0660" or 432
    o.path = args.opt(opts, "path", "string", nil, "listen", 1)
    local mode = opts.mode
    if type(mode) == "string" and mode:match("^[0-7]+$") then mode = tonumber(mode, 8) end
    if mode ~= nil and (math.type(mode) ~= "integer" or mode < 0 or mode > 4095) then
        args.fail("listen", 1, "option 'mode': permission bits expected (\"0660\" or an integer to 0o7777)")
    end
    if mode ~= nil and not o.path then args.fail("listen", 1, "option 'mode': only with 'path'") end
    o.mode = mode
    local per_ip = args.opt(opts, "max_conns_per_ip", "number", nil, "listen", 1)
    if per_ip ~= nil and (math.type(per_ip) ~= "integer" or per_ip < 1) then
        args.fail("listen", 1, "option 'max_conns_per_ip': positive integer expected")
    end
    o.max_conns_per_ip = per_ip
    o.reuseport = args.opt(opts, "reuseport", "boolean", nil, "listen", 1)
    o.access_log = require("loom.metrics").access_log_opt(opts.access_log, "listen", 1)
    o.metrics = self.metrics_path ~= nil
    local http2 = args.opt(opts, "http2", "boolean", nil, "listen", 1)
    if opts.tls ~= nil then
        http2 = http2 ~= false
        local err
        o.tls, err = tls_config(opts.tls, http2)
        if not o.tls then return nil, err end
    end
    o.http2 = http2 == true
    for _, k in ipairs(LIMITS) do o[k] = self.limits[k] end
    o.request_mt = request.mt
    local srv, err = core.http_listen(self:_entry(o.tls ~= nil), o)
    if srv and o.metrics then require("loom.metrics").track(self, srv) end
    return srv, err
end

-- app:on_startup(function(app) ... end): runs in app:run before the server listens (in
-- each worker with workers = N), in the order given; an error ends app:run with it.
function App:on_startup(fn)
    args.check(fn, "function", "on_startup", 1)
    self.startup[#self.startup + 1] = fn
    return self
end

-- app:on_shutdown(function(app) ... end): runs in app:run once the server has drained
-- (every connection answered or cut at the grace period), before the process's remaining
-- tasks are cancelled, in the order given; an error is logged and the next hook runs.
function App:on_shutdown(fn)
    args.check(fn, "function", "on_shutdown", 1)
    self.shutdown[#self.shutdown + 1] = fn
    return self
end

-- Cancels every task but the running one and the main task, and waits up to `secs` for
-- them to unwind (their pcall and <close> handlers run). Tasks that their unwinding starts
-- are cancelled in turn, a few rounds deep.
local function cancel_tasks(secs)
    local tasks = require "loom.tasks"
    local deadline = core.now() + secs
    for _ = 1, 3 do
        local list = core.live_tasks()
        if #list == 0 then return end
        for _, t in ipairs(list) do t:cancel() end
        local left = deadline - core.now()
        local ok = left > 0 and tasks.timeout(left, function()
            for _, t in ipairs(list) do t:join() end
            return true
        end)
        if not ok then
            local n = 0
            for _, t in ipairs(list) do if not t:done() then n = n + 1 end end
            io.stderr:write(("loom: %d task(s) still running %gs after they were cancelled\n"):format(n, secs))
            io.stderr:flush()
            return
        end
    end
end

local function run_hooks(app, list, what, protect)
    for _, fn in ipairs(list) do
        if protect then
            local ok, err = xpcall(fn, function(e) return debug.traceback(error_text(e), 2) end, app)
            if not ok then
                io.stderr:write(("loom: error in %s hook: %s\n"):format(what, err))
                io.stderr:flush()
            end
        else
            fn(app)
        end
    end
end

-- After the signal: close the server, wait for its drain, close the websockets, run the
-- shutdown hooks, then cancel what is left.
local function shutdown(app, srv, grace, cancel)
    srv:close(grace)
    local closers = app:close_websockets()
    srv:wait()
    for _, t in ipairs(closers) do t:join() end
    run_hooks(app, app.shutdown, "on_shutdown", true)
    if cancel then cancel_tasks(grace) end
end

-- app:run{ host, port, access_log = true, workers = 1, grace = 10, cancel_tasks = true }:
-- run the startup hooks, listen, say where, serve until SIGINT or SIGTERM; then close
-- gracefully, wait until the last connection is done (up to grace seconds), run the
-- shutdown hooks and cancel the process's remaining tasks (unless cancel_tasks = false),
-- and return the closed server.
function App:run(opts)
    opts = args.known(args.opts(opts, "run", 1), RUN_OPTS, "run", 1)
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    if o.access_log == nil then o.access_log = true end
    local workers = args.opt(opts, "workers", "number", tonumber(os.getenv("LOOM_WORKERS")) or 1, "run", 1)
    local grace = args.opt(opts, "grace", "number", 10, "run", 1)
    local cancel = args.opt(opts, "cancel_tasks", "boolean", true, "run", 1)
    o.workers, o.grace, o.cancel_tasks = nil, nil, nil
    if o.path and workers > 1 then -- each worker would listen on the file the one before made
        args.fail("run", 1, "option 'path': a unix socket is served by one process (workers = 1)")
    end
    local run = function()
        run_hooks(self, self.startup, "on_startup", false)
        local srv, err = self:listen(o)
        if not srv then error(err, 0) end
        return srv
    end
    if workers > 1 then
        local metrics = self.metrics_path and require("loom.metrics")
        return require("loom.workers").run({
            listen = run,
            shutdown = function(srv) shutdown(self, srv, grace, cancel) end,
            finish = function() if cancel then cancel_tasks(grace) end end,
            prepare = metrics and metrics.prepare_workers,
            started = metrics and function(i, n) return metrics.share_worker(self, i, n) end,
        }, workers, o, grace)
    end
    local srv = run()
    if srv.path then
        io.stdout:write(("listening on unix:%s (%s)\n"):format(srv.path, o.tls and "https" or "http"))
    else
        io.stdout:write(("listening on %s://%s:%d\n"):format(o.tls and "https" or "http", o.host or "0.0.0.0",
            srv.port))
    end
    io.stdout:flush()
    local sig = core.wait_signal({ "SIGINT", "SIGTERM" })
    io.stderr:write(("loom: %s, closing (up to %gs for requests in flight)\n"):format(sig, grace))
    shutdown(self, srv, grace, cancel)
    return srv
end

return { new = new, App = App, normalize = normalize }
