-- loom.client: loom.fetch, sessions and responses. What users customise lives here:
-- options and their defaults, request heads, bodies (string, json, form, streamed),
-- redirects, cookies (loom.cookies), proxies and TLS settings (loom.dial). The hot path -
-- pool lookup, writing the request, parsing the response - is C (src/http1/http_client.c,
-- src/http1/http_exchange.c); a request's URL and head are cached per session.
local core = require "loom.core"
local args = require "loom.args"
local json = require "loom.json"
local url = require "loom.url"
local cookies = require "loom.cookies"
local dial = require "loom.dial"

local M = {}

local http_request, http_pool, tls_config, now = core.http_request, core.http_pool, core.tls_config, core.now
local park, ticket, wake = core.park, core.ticket, core.wake
local type, pairs, ipairs, setmetatable, tostring = type, pairs, ipairs, setmetatable, tostring
local format, lower, concat = string.format, string.lower, table.concat
local error, pcall = error, pcall

local F_HEAD, F_DECODE, F_UPLOAD, F_FRESH, F_STREAM, F_SIZED = 1, 2, 4, 8, 16, 32
local MAX_BODY = 64 * 1024 * 1024
-- what the client offers with decode: br too when loom is built with libbrotli
local ACCEPT_ENCODING = core.compress_codings.br and "gzip, deflate, br" or "gzip, deflate"
local USER_AGENT = "loom/" .. core.version
local MAX_CACHED_URLS = 512

-- Options of a request, and what each must be ("timeout": a number >= 0 or false).
local REQUEST_OPTS = {
    method = "string", headers = "table", query = "table", body = { "string", "function" },
    json = "any", form = "table", timeout = "timeout", connect_timeout = "timeout",
    read_timeout = "timeout", redirects = { "boolean", "number" }, max_body = "number",
    stream = "boolean", tls = "table", decode = "boolean", retry = { "table", "boolean" },
    progress = "function", multipart = "table", unix = "string", http2 = { "boolean", "string" },
}
local SESSION_OPTS = {
    base_url = "string", headers = "table", timeout = "timeout", connect_timeout = "timeout",
    read_timeout = "timeout", max_per_host = "number", idle_timeout = "number",
    cookies = "boolean", tls = "table", redirects = { "boolean", "number" }, max_body = "number",
    proxy = { "string", "boolean", "table" }, decode = "boolean", trace = "table",
    retry = { "table", "boolean" }, unix = "string", http2 = { "boolean", "string" },
}
local TLS_OPTS = { verify = "boolean", ca_file = "string", cert = "string", key = "string",
    server_name = "string" }

-- What reaches the wire as given must not be able to end a line there: a CR or LF in a
-- header value taken from user input would add headers, or a whole second request, to
-- what the server reads (RFC 9110 5.5: "a recipient of CR, LF, or NUL within a field value
-- MUST either reject the message or replace each of those characters with SP"). Names and
-- the method are tokens (RFC 9110 5.1, 9.1: token = 1*tchar).
local TOKEN = "^[%w!#$%%&'*+%-.^_`|~]+$"

-- s shown in an error message, its controls and non-ASCII bytes escaped.
local function shown(s)
    return (s:gsub("[%c\\\127-\255]", function(c) return format("\\x%02X", c:byte()) end))
end

-- Why `value` cannot be a field value, or nil when it can.
local function bad_value(value)
    if value:find("[\r\n%z]") then return "CR, LF or NUL" end
    if value:find("[\1-\8\11-\31\127]") then return "control character" end
    return nil
end

-- Raises unless name = value can go on the wire as a header (value false: removes it).
local function check_header(name, value, opt, fname, n)
    if type(name) ~= "string" then
        args.fail(fname, n, format("option '%s': header name expected, got %s", opt, type(name)), 3)
    end
    if not name:find(TOKEN) then
        args.fail(fname, n, format("option '%s': invalid header name '%s' (not a token)", opt, shown(name)), 3)
    end
    local t = type(value)
    if t == "number" or value == false then return end
    if t ~= "string" then
        args.fail(fname, n, format("option '%s': value for header '%s': string or number expected, got %s",
            opt, name, t), 3)
    end
    local why = bad_value(value)
    if why then args.fail(fname, n, format("option '%s': invalid value for header '%s' (%s)", opt, name, why), 3) end
end

-- Framing is the client's, set from the body on every hop: a caller's Transfer-Encoding, or
-- a Content-Length other than the body's, would make the server read the body (or the next
-- request on the connection) by other bounds than we write. `body`: the request's (a
-- string, a function or nil), or false for session headers, which go with any body.
local function check_framing(headers, body, opt, fname, n)
    for name, value in pairs(headers) do
        local l = lower(name)
        if value ~= false and (l == "transfer-encoding" or l == "content-length") then
            local want = type(body) == "string" and #body or body == nil and 0 or nil
            if l == "transfer-encoding" or not want or tostring(value) ~= tostring(want) then
                args.fail(fname, n, format("option '%s': header '%s' is set by the client from the body",
                    opt, name), 3)
            end
        end
    end
end

local function check_headers(headers, opt, fname, n)
    for name, value in pairs(headers) do check_header(name, value, opt, fname, n) end
end

local function check_opts(opts, known, fname, n)
    for k, v in pairs(opts) do
        local want = known[k]
        if not want then
            args.fail(fname, n, format("unknown option '%s'", tostring(k)), 2)
        elseif want == "timeout" then
            args.timeout(opts, k, nil, fname, n)
        elseif want ~= "any" then
            args.opt(opts, k, want, nil, fname, n)
        end
        if k == "tls" then
            for tk, tv in pairs(v) do
                if not TLS_OPTS[tk] then args.fail(fname, n, format("unknown option 'tls.%s'", tostring(tk)), 2) end
                args.opt(v, tk, TLS_OPTS[tk], nil, fname, n)
                -- C takes these as C strings: a NUL would cut the name verified or the path read
                if type(tv) == "string" and (tv:find("%z") or tk == "server_name" and tv:find("[%c%s\127]")) then
                    args.fail(fname, n, format("option 'tls.%s': invalid character in '%s'", tk, shown(tv)), 2)
                end
            end
        elseif k == "headers" then
            check_headers(v, "headers", fname, n)
        elseif k == "method" and not v:find(TOKEN) then
            args.fail(fname, n, format("option 'method': invalid method '%s' (not a token)", shown(v)), 2)
        end
    end
end

-- Headers ---------------------------------------------------------------------------

-- res.headers: lowercase keys; any other case finds them too.
local headers_mt = {
    __index = function(t, k)
        if type(k) == "string" then
            local l = lower(k)
            if l ~= k then return rawget(t, l) end
        end
        return nil
    end,
}

-- An ordered set of request headers: later values for the same name (any case) win.
local function header_set()
    return { names = {}, values = {} }
end

local function hset(h, name, value)
    local l = lower(name)
    if h.values[l] == nil then h.names[#h.names + 1] = name end
    h.values[l] = value
end

local function hget(h, name)
    return h.values[lower(name)]
end

local function hmerge(h, t)
    if not t then return end
    for k, v in pairs(t) do
        if v == false then
            local l = lower(k)
            if h.values[l] ~= nil then h.values[l] = false end
        else
            hset(h, k, tostring(v))
        end
    end
end

local function hrender(h, out)
    for _, name in ipairs(h.names) do
        local v = h.values[lower(name)]
        if v then
            out[#out + 1] = name
            out[#out + 1] = ": "
            out[#out + 1] = v
            out[#out + 1] = "\r\n"
        end
    end
end

-- URLs ------------------------------------------------------------------------------

local function host_header(u)
    local h = u.host:find(":", 1, true) and ("[" .. u.host .. "]") or u.host
    local default = (u.scheme == "https" and 443 or 80)
    return h, u.port == default and h or (h .. ":" .. u.port)
end

-- Splits an absolute URL and adds what requests need: target, Host value, origin.
local function parse_url(s)
    local u, err = url.split(s)
    if not u then return nil, err end
    if u.scheme ~= "http" and u.scheme ~= "https" then return nil, "unsupported scheme '" .. u.scheme .. "'" end
    local h, hostport = host_header(u)
    u.hostport = hostport
    u.origin = u.scheme .. "://" .. h .. ":" .. u.port
    u.target = u.query and (u.path .. "?" .. u.query) or u.path
    u.href = s
    return u
end

local function remove_dots(path)
    local out = {}
    for seg in path:gmatch("[^/]*") do out[#out + 1] = seg end
    local stack = {}
    for i, seg in ipairs(out) do
        if seg == ".." then
            if #stack > 1 then stack[#stack] = nil end
            if i == #out then stack[#stack + 1] = "" end -- "/a/b/.." is "/a/" (RFC 3986 5.2.4)
        elseif seg ~= "." or i == #out then
            stack[#stack + 1] = seg == "." and "" or seg
        end
    end
    local p = concat(stack, "/")
    return p:sub(1, 1) == "/" and p or "/" .. p
end

-- A reference with a scheme is absolute (RFC 3986 5.2.2: "if defined(R.scheme) then
-- T.scheme = R.scheme; T.authority = R.authority; T.path = remove_dot_segments(R.path);
-- T.query = R.query"): "g:h" is the URL g:h, not a path. The scheme is lowercased and the
-- fragment dropped; dot segments go from a path that starts with "/".
local function absolute_ref(scheme, rest)
    rest = rest:gsub("#.*$", "")
    local authority, after = rest:match("^(//[^/?]*)(.*)$")
    if authority then rest = after else authority = "" end
    local path, query = rest:match("^([^?]*)(.*)$")
    if path:sub(1, 1) == "/" then path = remove_dots(path) end
    return scheme:lower() .. ":" .. authority .. path .. query
end

-- Resolves a reference (a Location, or a URL against base_url) against the base URL string.
local function join(base, ref)
    local scheme, rest = ref:match("^(%a[%w+.-]*):(.*)$")
    if scheme then return absolute_ref(scheme, rest) end
    local b = url.split(base)
    if not b then return ref end
    local authority = base:match("^%a[%w+.-]*://([^/?#]*)")
    if ref:sub(1, 2) == "//" then return b.scheme .. ":" .. ref end
    local prefix = b.scheme .. "://" .. authority
    ref = ref:gsub("#.*$", "")
    if ref == "" then return base:gsub("#.*$", "") end
    if ref:sub(1, 1) == "?" then return prefix .. b.path .. ref end
    if ref:sub(1, 1) == "/" then
        local p, q = ref:match("^([^?]*)(.*)$")
        return prefix .. remove_dots(p) .. q
    end
    local dir = b.path:match("^(.*/)") or "/"
    local p, q = ref:match("^([^?]*)(.*)$")
    return prefix .. remove_dots(dir .. p) .. q
end
M.join = join

-- Requests --------------------------------------------------------------------------

local Session = {}
Session.__index = Session
Session.__name = "loom.session"

local Response = {}
Response.__name = "loom.response"

-- The TLS configuration and its pool-key part for a request's settings.
local function tls_for(sess, topts, alpn)
    local t = sess.tls
    if topts then
        t = {}
        for k, v in pairs(sess.tls or {}) do t[k] = v end
        for k, v in pairs(topts) do t[k] = v end
    end
    t = t or {}
    local verify = t.verify ~= false
    local k = format("%s|%s|%s|%s|%s", verify and 1 or 0, t.ca_file or "", t.cert or "", t.key or "",
        t.server_name or "")
    local ck = alpn and k .. "|" .. alpn or k -- the pool key does not change with ALPN
    local conf = sess.tlsconfs[ck]
    if not conf then
        local err
        conf, err = tls_config{ verify = verify, ca_file = t.ca_file, cert = t.cert, key = t.key, alpn = alpn }
        if not conf then return nil, err end
        sess.tlsconfs[ck] = conf
    end
    return conf, k, t.server_name
end

-- The proxy for u under the session's settings, or nil.
local function proxy_for(sess, u)
    local p = sess.proxy
    if not p then return nil end
    local target = u.scheme == "https" and p.https or p.http
    if not target or dial.bypass(p.no, u.host) then return nil end
    return target
end

-- Everything about u that does not change between requests: cached per session.
local function url_info(sess, s)
    local u = sess.urls[s]
    if u then return u end
    local err
    u, err = parse_url(s)
    if not u then return nil, err end
    u.proxy = proxy_for(sess, u)
    if sess.nurls >= MAX_CACHED_URLS then sess.urls, sess.nurls = {}, 0 end
    sess.urls[s] = u
    sess.nurls = sess.nurls + 1
    return u
end

local multipart -- loom.multipart, loaded on first use

-- The request's body from its options: body (a string or a function), plus its length when
-- known ahead for a function (multipart: Content-Length, not chunked) | nil, nil, err
local function body_of(opts, h, fname)
    local body = opts.body
    if opts.multipart ~= nil then
        for _, k in ipairs({ "body", "json", "form" }) do
            if opts[k] ~= nil then args.fail(fname, 2, "option 'multipart': not with option '" .. k .. "'", 3) end
        end
        for k in pairs(opts.headers or {}) do
            if type(k) == "string" and lower(k) == "content-type" then
                args.fail(fname, 2, "option 'multipart': the client sets Content-Type (with the boundary)", 3)
            end
        end
        multipart = multipart or require "loom.multipart"
        local ctype, length, fn = multipart.encode(opts.multipart, fname, 2)
        if not ctype then return nil, nil, length end
        hset(h, "Content-Type", ctype)
        return fn, length
    end
    if opts.json ~= nil then
        body = json.encode(opts.json)
        if not hget(h, "content-type") then hset(h, "Content-Type", "application/json") end
    elseif opts.form ~= nil then
        body = url.encode_query(opts.form)
        if not hget(h, "content-type") then hset(h, "Content-Type", "application/x-www-form-urlencoded") end
    elseif type(body) == "string" then
        if not hget(h, "content-type") then hset(h, "Content-Type", "text/plain; charset=utf-8") end
    end
    return body
end

-- The request head for one hop.
local function build_head(sess, req, u)
    local h = header_set()
    hset(h, "Host", u.hostport)
    hset(h, "User-Agent", USER_AGENT)
    hset(h, "Accept", "*/*")
    if req.decode then hset(h, "Accept-Encoding", ACCEPT_ENCODING) end
    hmerge(h, sess.headers)
    hmerge(h, req.headers)
    if u.user and not hget(h, "authorization") then
        hset(h, "Authorization", "Basic " .. dial.base64(u.user .. ":" .. (u.password or "")))
    end
    if req.drop_auth then -- credentials the caller set are not for another origin (curl, undici)
        h.values.authorization, h.values.cookie, h.values["proxy-authorization"] = false, false, false
    end
    local jar = sess.jar
    local cookie = jar and jar:header(u)
    if cookie then
        local given = hget(h, "cookie")
        hset(h, "Cookie", given and (given .. "; " .. cookie) or cookie)
    end
    local body = req.body
    if type(body) == "string" then
        if req.body_headers then for k, v in pairs(req.body_headers) do if not hget(h, k) then hset(h, k, v) end end end
        hset(h, "Content-Length", tostring(#body))
        h.values["transfer-encoding"] = false
    elseif type(body) == "function" and req.body_length then
        hset(h, "Content-Length", tostring(req.body_length))
        h.values["transfer-encoding"] = false
        if req.body_headers then for k, v in pairs(req.body_headers) do if not hget(h, k) then hset(h, k, v) end end end
    elseif type(body) == "function" then
        hset(h, "Transfer-Encoding", "chunked")
        h.values["content-length"] = false
        if req.body_headers then for k, v in pairs(req.body_headers) do if not hget(h, k) then hset(h, k, v) end end end
    else
        h.values["transfer-encoding"] = false
        h.values["content-length"] = false
        if req.method == "POST" or req.method == "PUT" or req.method == "PATCH" then
            hset(h, "Content-Length", "0")
        end
    end
    local target = u.target
    if u.proxy and u.scheme == "http" then
        target = u.scheme .. "://" .. u.hostport .. u.target
        local p = u.proxy
        if p.user and not hget(h, "proxy-authorization") then
            hset(h, "Proxy-Authorization", "Basic " .. dial.base64(p.user .. ":" .. (p.password or "")))
        end
    end
    local out = { req.method, " ", target, " HTTP/1.1\r\n" }
    hrender(h, out)
    out[#out + 1] = "\r\n"
    return concat(out)
end

local IDEMPOTENT = { GET = true, HEAD = true, OPTIONS = true, TRACE = true, PUT = true, DELETE = true }

-- Trace hooks -----------------------------------------------------------------------

local TRACE_HOOKS = { on_request_start = true, on_dns = true, on_connect = true, on_tls = true,
    on_reuse = true, on_response_headers = true, on_request_end = true, on_request_error = true,
    on_upload_progress = true }
local NO_HOOKS = {}

local function check_trace(t, fname, n)
    for k, v in pairs(t) do
        if not TRACE_HOOKS[k] then args.fail(fname, n, format("unknown option 'trace.%s'", tostring(k)), 3) end
        if type(v) ~= "function" then
            args.fail(fname, n, format("option 'trace.%s': function expected, got %s", k, type(v)), 3)
        end
    end
end

-- Hooks are code watching requests, not part of them: one that raises is printed with its
-- traceback (as a failed task nobody joins is) and the request goes on. A cancel goes through.
local function hook_traceback(e)
    if e == "cancelled" then return e end
    return debug.traceback(tostring(e), 2)
end

local function call_hook(name, fn, ...)
    local ok, e = xpcall(fn, hook_traceback, ...)
    if not ok then
        if e == "cancelled" then error(e, 0) end
        io.stderr:write(format("loom: error in client hook %s: %s\n", name, tostring(e)))
        io.stderr:flush()
    end
end

-- Tells the hook `name` of ev, adding what every event carries.
local function emit(tc, name, ev)
    local fn = tc.hooks[name]
    if not fn then return end
    ev.method, ev.url, ev.attempt = tc.method, tc.url, tc.attempt
    call_hook(name, fn, ev)
end

-- The trace of one call, or nil when nothing listens (then tracing costs one test).
local function trace_of(sess, opts, method, s)
    local hooks, progress = sess.trace, opts and opts.progress
    if not hooks and not progress then return nil end
    hooks = hooks or NO_HOOKS
    local tc = { hooks = hooks, progress = progress or hooks.on_upload_progress, method = method, url = s,
        attempt = 1 }
    tc.on = function(name, ev) emit(tc, name, ev) end
    return tc
end

local function progress(tc, sent, total)
    if tc and tc.progress then call_hook("progress", tc.progress, sent, total) end
end

-- Retries ---------------------------------------------------------------------------

local RETRY_OPTS = { attempts = "number", backoff = "number", max_backoff = "number", statuses = "table",
    methods = { "string", "table" }, on = "table", jitter = "boolean" }
local RETRY_ON = { connect = true, timeout = true, closed = true, dns = true, tls = true, http = true }

-- The retry policy of the option `r` (true, false or a table), checked and with defaults.
local function retry_policy(r, fname, n)
    if r == nil or r == false then return false end
    if r == true then r = {} end
    local function bad(k, msg) args.fail(fname, n, format("option 'retry.%s': %s", k, msg), 4) end
    for k, v in pairs(r) do
        local want = RETRY_OPTS[k]
        if not want then args.fail(fname, n, format("unknown option 'retry.%s'", tostring(k)), 3) end
        local ok = type(want) == "table" and (type(v) == want[1] or type(v) == want[2]) or type(v) == want
        if not ok then
            bad(k, format("%s expected, got %s", type(want) == "table" and concat(want, " or ") or want, type(v)))
        end
    end
    local p = { attempts = r.attempts or 3, backoff = r.backoff or 0.2, max_backoff = r.max_backoff or 10,
        jitter = r.jitter ~= false, statuses = {}, methods = {}, on = {} }
    if math.type(p.attempts) ~= "integer" or p.attempts < 1 then bad("attempts", "positive integer expected") end
    if p.backoff < 0 or p.backoff ~= p.backoff then bad("backoff", "must not be negative") end
    if p.max_backoff < 0 or p.max_backoff ~= p.max_backoff then bad("max_backoff", "must not be negative") end
    for _, st in ipairs(r.statuses or { 429, 503 }) do
        if math.type(st) ~= "integer" or st < 100 or st > 599 then bad("statuses", "status codes expected") end
        p.statuses[st] = true
    end
    local m = r.methods
    if m == "all" then
        p.methods = true
    elseif type(m) == "string" then
        bad("methods", "\"all\" or a list of methods expected")
    else
        for _, name in ipairs(m or { "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE" }) do
            if type(name) ~= "string" or not name:find(TOKEN) then bad("methods", "a list of methods expected") end
            p.methods[name:upper()] = true
        end
    end
    for _, kind in ipairs(r.on or { "connect", "timeout", "closed" }) do
        if not RETRY_ON[kind] then bad("on", format("unknown error kind '%s'", tostring(kind))) end
        p.on[kind] = true
    end
    return p
end

-- Retry-After (RFC 9110 10.2.3): seconds to wait, from delay-seconds or an HTTP-date.
local function retry_after(v)
    if not v then return nil end
    local secs = v:match("^%s*(%d+)%s*$")
    if secs then return tonumber(secs) end
    local t = cookies.parse_date(v)
    if not t then return nil end
    local w = t - os.time()
    return w > 0 and w or 0
end

-- Seconds to wait before attempt n + 1: Retry-After when the response gives one, else
-- exponential backoff with full jitter (a random wait up to backoff * 2^(n-1)); both capped
-- by max_backoff.
local function backoff(p, n, res)
    local cap = p.max_backoff
    local ra = res and retry_after(res.headers["retry-after"])
    if ra then return ra < cap and ra or cap end
    local d = p.backoff * 2 ^ (n - 1)
    if d > cap then d = cap end
    if p.jitter then d = d * math.random() end
    return d
end

-- The pool key of u: origin, TLS settings, proxy.
local function key_of(sess, req, u, alpn)
    local key = u.origin
    local conf, tkey, server_name
    if u.scheme == "https" then
        conf, tkey, server_name = tls_for(sess, req.tls, alpn)
        if not conf then return nil, tkey or "tls: configuration failed" end
        key = key .. "|" .. tkey
    end
    if req.unix then
        key = key .. "|unix " .. req.unix -- a pool of its own: no proxy, the socket's peer
    elseif u.proxy then
        key = key .. "|via " .. u.proxy.host .. ":" .. u.proxy.port
    end
    return key, conf, server_name
end

local function upload(x, fn, tc, length)
    local sent = 0
    while true do
        local chunk = fn()
        if chunk == nil then break end
        if type(chunk) ~= "string" then
            x:close()
            error("body function returned a " .. type(chunk) .. " (string or nil expected)", 0)
        end
        if chunk ~= "" then
            if length and sent + #chunk > length then chunk = chunk:sub(1, length - sent) end
            local ok, err = x:write(chunk)
            if not ok then return nil, err end
            sent = sent + #chunk
            if tc then progress(tc, sent, length) end
        end
        if length and sent >= length then break end
    end
    if length and sent ~= length then -- a file shrank while it was sent: the framing is broken
        x:close()
        return nil, format("http: request body ended after %d of its %d bytes (Content-Length)", sent, length)
    end
    return x:finish()
end

-- A connection to the unix socket req.unix (with TLS for https), within the connect timeout.
local function dial_unix(req, u, conf, server_name, timeout)
    timeout = timeout or req.connect_timeout
    if req.deadline then
        local left = math.max(req.deadline - now(), 0)
        if not timeout or left < timeout then timeout = left end
    end
    local deadline = timeout and now() + timeout
    local st, err = core.pipe_connect(req.unix, timeout)
    if st and u.scheme == "https" then
        return core.tls_wrap(st, server_name or u.host, conf, deadline and math.max(deadline - now(), 0))
    end
    return st, err
end

-- HTTP/2 ----------------------------------------------------------------------------
-- sess.h2[key] = { conns = {conn, ...}, connecting = event }: the h2 connections of an
-- origin (src/http2/h2_client.c), apart from the HTTP/1 pool; sess.h1only[key]: the server
-- answered ALPN with http/1.1 (or none), so that origin goes the HTTP/1 way from then on.

-- The fields of an HTTP/2 request from the HTTP/1 head build_head made (one place builds
-- the headers: cookies, auth, body headers): pseudo-headers first, no Host (:authority),
-- no connection-specific fields.
local H2_DROP = { host = true, connection = true, ["keep-alive"] = true, ["transfer-encoding"] = true,
    upgrade = true, ["proxy-connection"] = true, te = true }
local function h2_fields(req, u, head)
    local f = { ":method", req.method, ":scheme", u.scheme, ":authority", u.hostport, ":path", u.target }
    local n = #f
    for name, value in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
        local lname = lower(name)
        if not H2_DROP[lname] then
            f[n + 1], f[n + 2] = lname, value
            n = n + 2
        end
    end
    return f
end

-- The body of an h2 response as the HTTP/1 exchange offers it to Response (read_all, read,
-- close, done), decoded (gzip, deflate, br: core.body_decoder) and max_body counted here.
local H2X = {}
H2X.__index = H2X
-- The next decoded piece ("" when a coded piece decoded to nothing) | nil at the end | nil, err
local function h2_piece(self, cap)
    local piece, err = self.rq:read()
    local d = self.decoder
    if not d then return piece, err end
    if piece then return d:feed(piece, cap) end
    if err then return nil, err end
    local ok, ferr = d:finish()
    if not ok then return nil, ferr end
    return nil
end
function H2X:read()
    while true do
        local piece, err = h2_piece(self, self.max_body)
        if piece == "" then goto again end
        if piece then
            self.total = self.total + #piece
            if self.total > self.max_body and not self.stream then
                return nil, format("limit: response body over %d bytes (max_body)", self.max_body)
            end
        end
        do return piece, err end
        ::again::
    end
end
function H2X:read_all()
    local parts, n = {}, 0
    while true do
        local piece, err = h2_piece(self, self.max_body - n + 1)
        if not piece then
            if err then
                self.rq:close()
                if err:find("^limit") then
                    return nil, format("limit: response body over %d bytes (max_body)", self.max_body)
                end
                return nil, err
            end
            break
        end
        n = n + #piece
        if n > self.max_body then
            self.rq:close()
            return nil, format("limit: response body over %d bytes (max_body)", self.max_body)
        end
        parts[#parts + 1] = piece
    end
    return concat(parts)
end
function H2X:close() self.rq:close() end
function H2X:done() return self.rq:done() end

-- Waits, until cdl (the end of the request's own connect_timeout, and of its timeout),
-- for the connection another task is making to the same origin: true | nil, err.
-- pool.connecting is that task's list of waiters (tickets), woken when it is done.
local function wait_connecting(pool, cdl, u)
    local list = pool.connecting
    local t, serial = ticket()
    list[#list + 1] = t
    list[#list + 1] = serial
    if park(cdl and math.max(cdl - now(), 0)) then return true end
    -- as the request's own connect would say (dial.connect)
    return nil, format(u.host:find(":", 1, true) and "timeout: connect to [%s]:%d" or "timeout: connect to %s:%d",
        u.host, u.port)
end

-- A new connection for the h2 path: through u.proxy's CONNECT tunnel (https), over the
-- unix socket req.unix, or straight to the origin; TLS with the conf's ALPN.
-- timeout: what is left of connect_timeout after a wait for another's connection, or nil.
local function h2_dial(req, u, conf, server_name, tc, timeout)
    timeout = timeout or req.connect_timeout
    if req.unix then return dial_unix(req, u, conf, server_name, timeout) end
    return dial.open(u, { tls = conf, server_name = server_name, proxy = u.proxy,
        timeout = timeout, deadline = req.deadline, on = tc and tc.on })
end

-- An h2 connection to u with a free stream, or a new one: conn | nil, err | false, stream
-- (the server chose HTTP/1.1: the connected stream goes to the HTTP/1 pool).
local function h2_conn(sess, req, u, key, conf, server_name, fresh, tc)
    local pools = sess.h2
    if not pools then pools = {}; sess.h2 = pools end
    local pool = pools[key]
    if not pool then pool = { conns = {} }; pools[key] = pool end
    local cdl = false -- once it has waited: the end of its connect_timeout / timeout, or nil
    while true do
        local conns = pool.conns
        for i = #conns, 1, -1 do
            local cap = conns[i]:capacity()
            if cap < 0 then table.remove(conns, i)
            elseif cap > 0 and not fresh then
                sess.h2_reused = (sess.h2_reused or 0) + 1
                if tc then emit(tc, "on_reuse", { key = key }) end
                return conns[i]
            end
        end
        if not pool.connecting then break end
        -- one connection is made at a time: its streams are shared
        if cdl == false then
            cdl = req.connect_timeout and now() + req.connect_timeout
            if req.deadline and (not cdl or req.deadline < cdl) then cdl = req.deadline end
        end
        local ok, werr = wait_connecting(pool, cdl, u)
        if not ok then return nil, werr end
        fresh = false
        -- that connection found an HTTP/1.1 server: this request goes the HTTP/1 way too
        if sess.h1only and sess.h1only[key] then return false end
    end
    local waiters = {}
    pool.connecting = waiters
    -- the waiters are woken however this task leaves (an error raised, cancelled too)
    local _ <close> = setmetatable({}, { __close = function()
        if pool.connecting == waiters then pool.connecting = nil end
        for i = 1, #waiters, 2 do wake(waiters[i], waiters[i + 1]) end
    end })
    local st, err = h2_dial(req, u, conf, server_name, tc, cdl and math.max(cdl - now(), 0) or nil)
    if not st then return nil, err end
    if u.scheme == "https" and core.tls_alpn(st) ~= "h2" then
        sess.h1only = sess.h1only or {}
        sess.h1only[key] = true
        return false, st
    end
    local conn
    conn, err = core.h2_session(st)
    if conn then
        pool.conns[#pool.conns + 1] = conn
        sess.h2_opened = (sess.h2_opened or 0) + 1
    end
    return conn, err
end

-- One request over HTTP/2: x, status, reason, raw, version | nil, err, retryable, or
-- false, stream when the server speaks HTTP/1.1 only.
local function h2_send(sess, req, u, head, fresh, tc)
    if sess.closed then return nil, "closed: session closed" end
    local key, conf, server_name = key_of(sess, req, u, "h2,http/1.1")
    if not key then return nil, conf end
    local conn, err = h2_conn(sess, req, u, key, conf, server_name, fresh, tc)
    if conn == false then return false, err end
    if not conn then return nil, err end
    local body = req.body
    -- each wait gets read_timeout, bounded by what is left of the total timeout
    local wait = req.read_timeout
    if req.deadline then
        local left = math.max(req.deadline - now(), 0)
        if not wait or left < wait then wait = left end
    end
    local rq, rerr, retry = conn:request(h2_fields(req, u, head),
        type(body) == "function" and true or (type(body) == "string" and body ~= "" and body) or nil,
        wait)
    if not rq then return nil, rerr, retry end
    if type(body) == "function" then
        local ok, uerr = upload(rq, body, tc, req.body_length) -- rq:write / rq:finish
        if not ok then
            rq:close()
            return nil, uerr
        end
    end
    local status, raw, hretry = rq:head()
    if not status then
        rq:close()
        return nil, raw, hretry
    end
    local x = setmetatable({ rq = rq, total = 0, max_body = req.max_body, stream = req.stream }, H2X)
    if req.decode and req.method ~= "HEAD" then
        for i = 1, #raw, 2 do
            if raw[i] == "content-encoding" then
                x.decoder = core.body_decoder(lower(raw[i + 1]):match("^%s*(.-)%s*$"))
                break
            end
        end
    end
    return x, status, "", raw, "2"
end

-- Whether u's origin chose HTTP/1.1 in ALPN; a yes is remembered in u (cached per URL)
-- unless the request has TLS settings of its own or goes over a unix socket.
local function h1_only(sess, req, u)
    local own = req.tls or req.unix -- a unix socket's peer is not the URL's
    if u.h1only and not own then return true end
    local v = sess.h1only[key_of(sess, req, u)]
    if v and not own then u.h1only = true end
    return v
end

-- One request on the wire: x, status, reason, raw, version | nil, err, retryable
local function send(sess, req, u, head, fresh, tc)
    if u.proxy and u.proxy.invalid and not req.unix then return nil, "connect: " .. u.proxy.invalid end
    local h2 = req.http2
    local h1st -- a stream the h2 path connected, for HTTP/1.1 (the server chose it in ALPN)
    -- https goes h2 through a proxy's CONNECT tunnel too; http:// through a forward proxy
    -- stays HTTP/1.1 (absolute-form, as curl and browsers send it). req.unix: no proxy.
    if h2 and (u.scheme == "https" or h2 == "prior_knowledge" and (req.unix or not u.proxy))
        and not (sess.h1only and h1_only(sess, req, u)) then
        local x, a, b, c, d = h2_send(sess, req, u, head, fresh, tc)
        if x ~= false then return x, a, b, c, d end
        h1st = a
    end
    local key, conf, server_name = key_of(sess, req, u)
    if not key then return nil, conf end
    local body = req.body
    local flags = req.flags | (fresh and F_FRESH or 0)
    if type(body) == "function" then
        flags, body = flags | F_UPLOAD | (req.body_length and F_SIZED or 0), nil
    end
    if h1st then flags = flags | F_FRESH end
    local x, a, b, c, d = http_request(sess.pool, key, head, body, flags, req.max_body,
        req.connect_timeout, req.read_timeout, req.deadline)
    if h1st and not (x and a == false) then h1st:close() end
    if x and a == false then
        local st, err
        if h1st then
            st = h1st
        elseif req.unix then
            st, err = dial_unix(req, u, conf, server_name)
        else
            st, err = dial.open(u, { tls = conf, server_name = server_name, proxy = u.proxy,
                timeout = req.connect_timeout, deadline = req.deadline, on = tc and tc.on })
        end
        if not st then
            x:close()
            return nil, err
        end
        x, a, b, c, d = x:attach(st)
    elseif tc and x then
        emit(tc, "on_reuse", { key = key })
    end
    if x and a == true then
        x, a, b, c, d = upload(x, req.body, tc, req.body_length)
    elseif x and tc and type(body) == "string" and #body > 0 then
        progress(tc, #body, #body) -- written whole with the head, which has now been answered
    end
    return x, a, b, c, d
end

local function new_response(x, status, reason, raw, version, u)
    return setmetatable({ status = status, reason = reason, ok = status >= 200 and status < 300,
        _raw = raw, version = version, url = u.href, _x = x, _trace = false }, Response)
end

local REDIRECT = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

-- The next hop of a redirect, or nil when the response is final.
local function follow(req, res, u)
    local loc = res.headers.location
    if not REDIRECT[res.status] or not loc then return nil end
    local status = res.status
    if status == 303 and req.method ~= "HEAD" or (status == 301 or status == 302) and req.method == "POST" then
        req.method = "GET"
        req.body, req.body_headers, req.body_length = nil, nil, nil
        req.flags = req.flags & ~F_HEAD
    elseif type(req.body) == "function" then
        return nil -- a streamed body cannot be sent again: the redirect is the answer
    end
    local next_url = join(u.href, loc)
    return next_url
end

local function check_limits(fname, opts)
    if opts.max_body and opts.max_body < 0 then args.fail(fname, 2, "option 'max_body': must not be negative", 2) end
    local h2 = opts.http2
    if type(h2) == "string" and h2 ~= "prior_knowledge" then
        args.fail(fname, 2, "option 'http2': true, false or \"prior_knowledge\" expected", 2)
    end
    local r = opts.redirects
    if type(r) == "number" and (r < 0 or math.type(r) ~= "integer") then
        args.fail(fname, 2, "option 'redirects': true, false or a non-negative integer expected", 2)
    end
end

-- The settings of one call: the request's options over the session's.
local function make_req(sess, method, opts, fname)
    local function pick(k, default)
        local v = opts[k]
        if v == nil then v = sess[k] end
        if v == nil then return default end
        return v
    end
    local req = {
        method = (opts.method and opts.method:upper()) or method or "GET",
        headers = opts.headers,
        tls = opts.tls,
        max_body = pick("max_body", MAX_BODY),
        stream = opts.stream,
        decode = pick("decode", true),
        unix = pick("unix", nil),
        http2 = pick("http2", true),
    }
    local timeout = pick("timeout", false)
    req.deadline = timeout and now() + timeout or nil
    req.connect_timeout = pick("connect_timeout", 10) or nil
    req.read_timeout = pick("read_timeout", 30) or nil
    local r = pick("redirects", 10)
    req.redirects = r == true and 10 or r == false and 0 or r
    local h = header_set()
    req.body, req.body_length, req.body_err = body_of(opts, h, fname or "fetch")
    if next(h.values) then req.body_headers = h.values end
    req.flags = (req.method == "HEAD" and F_HEAD or 0) | (req.decode and F_DECODE or 0)
        | (req.stream and F_STREAM or 0)
    return req
end

-- Adds opts.query to a URL string.
local function with_query(s, q)
    if not q or next(q) == nil then return s end
    local frag = s:match("#.*$") or ""
    s = s:gsub("#.*$", "")
    return s .. (s:find("?", 1, true) and "&" or "?") .. url.encode_query(q) .. frag
end

local function absolute(sess, s)
    if sess.base_url and not s:match("^%a[%w+.-]*://") then return join(sess.base_url, s) end
    return s
end

-- One hop, retried once on a fresh connection when a kept-alive one turned out stale.
local function hop(sess, req, u, tc)
    local head
    if req.shared and not (sess.jar and sess.jar.count > 0) then
        -- a call without options and no cookies to send: the head is the same every time
        local cache = u.heads
        if not cache then cache = {}; u.heads = cache end
        head = cache[req.method]
        if not head then
            head = build_head(sess, req, u)
            cache[req.method] = head
        end
    else
        head = build_head(sess, req, u)
    end
    local t0 = tc and now()
    if tc then tc.url = u.href end
    local x, status, reason, raw, version = send(sess, req, u, head, false, tc)
    if not x and reason and IDEMPOTENT[req.method] and type(req.body) ~= "function" then
        x, status, reason, raw, version = send(sess, req, u, head, true, tc)
    end
    if not x then return nil, status end
    if sess.jar then sess.jar:store(raw, u) end
    local res = new_response(x, status, reason, raw, version, u)
    if tc then emit(tc, "on_response_headers", { status = status, headers = res.headers, ttfb = now() - t0 }) end
    return res
end

local function copy(t)
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    c.shared = nil
    return c
end

-- The hops of one attempt, redirects followed: the final response, its body unread | nil, err
local function attempt(sess, req, u, tc)
    local res, err
    for n = 0, req.redirects do
        res, err = hop(sess, req, u, tc)
        if not res then return nil, err end
        if req.redirects == 0 or not REDIRECT[res.status] then break end
        if req.shared then req = copy(req) end
        local next_url = follow(req, res, u)
        if not next_url then break end
        res:close()
        if n == req.redirects then return nil, "http: too many redirects" end
        local nu
        nu, err = url_info(sess, next_url)
        if not nu then return nil, "http: bad redirect to " .. next_url .. " (" .. err .. ")" end
        if nu.origin ~= u.origin then req.drop_auth = true end
        u = nu
        if tc then tc.method = req.method end
    end
    return res
end

-- Reads the whole body into res: res | nil, err
local function read_body(res)
    local x = res._x
    local body, err = x:read_all()
    res._x = nil
    if not body then
        x:close()
        return nil, err
    end
    res._body = body
    return res
end

-- A wait of w seconds, or nil when it would end past the call's total timeout.
local function within(req, w)
    if w and req.deadline and now() + w >= req.deadline then return nil end
    return w
end

-- Attempts under a retry policy and/or a trace: the response | nil, the last error.
local function attempts(sess, req, u, s, policy, tc)
    local n, res, err = 1, nil, nil
    while true do
        local r = policy and copy(req) or req -- a redirect changes the request it follows
        local t0
        if tc then
            tc.attempt, tc.method, tc.url = n, req.method, s
            t0 = now()
            emit(tc, "on_request_start", { headers = req.headers })
        end
        res, err = attempt(sess, r, u, tc)
        local more = policy and n < policy.attempts
        local wait
        if res and more and policy.statuses[res.status] then wait = within(req, backoff(policy, n, res)) end
        if res and not wait and not r.stream then
            local ok
            ok, err = read_body(res)
            if not ok then res = nil end
        end
        if not res and more and policy.on[err:match("^(%a+):") or ""] then wait = within(req, backoff(policy, n)) end
        if tc and res and r.stream and not wait then
            res._trace = { tc = tc, t0 = t0, bytes = 0 } -- told when the body has been read
        elseif tc then
            if res then
                emit(tc, "on_request_end", { status = res.status, duration = now() - t0,
                    bytes = res._body and #res._body or nil, retry = wait })
            else
                emit(tc, "on_request_error", { error = err, duration = now() - t0, retry = wait })
            end
        end
        if not wait then break end
        if res then res:close() end
        core.sleep(wait)
        n = n + 1
    end
    if not res then return nil, err end
    return res
end

local function request(sess, method, s, opts, fname)
    if type(s) ~= "string" then args.check(s, "string", fname, 1) end
    local req
    if opts == nil then
        req = sess.plain[method or "GET"]
        if req.deadline ~= nil then req = nil end
    else
        args.check(opts, "table", fname, 2)
        check_opts(opts, REQUEST_OPTS, fname, 2)
        check_limits(fname, opts)
        s = with_query(s, opts.query)
    end
    req = req or make_req(sess, method, opts or {}, fname)
    if req.body_err then return nil, req.body_err end
    if opts and opts.headers then check_framing(opts.headers, req.body, "headers", fname, 2) end
    s = absolute(sess, s)
    local u, err = url_info(sess, s)
    if not u then args.fail(fname, 1, err .. ": " .. s, 2) end
    local policy = sess.retry
    if opts and opts.retry ~= nil then policy = retry_policy(opts.retry, fname, 2) end
    if policy and (type(req.body) == "function" or policy.methods ~= true and not policy.methods[req.method]) then
        policy = false -- not this method's, or a streamed body that cannot be sent again
    end
    local tc = (sess.trace or opts and opts.progress) and trace_of(sess, opts, req.method, s)
    if policy or tc then return attempts(sess, req, u, s, policy, tc) end
    local res
    res, err = attempt(sess, req, u, nil)
    if not res then return nil, err end
    if not req.stream then return read_body(res) end
    return res
end

-- Runs the session's middleware, outermost first, around one call. req: {method, url (absolute,
-- with the query), headers (a copy), body, json, form, opts (the other options)}; next(req)
-- makes the call (redirects and retries happen inside it) and returns what s:fetch does.
local function through(sess, method, s, opts, fname)
    if type(s) ~= "string" then args.check(s, "string", fname, 1) end
    opts = args.opts(opts, fname, 2)
    check_opts(opts, REQUEST_OPTS, fname, 2) -- misuse raises at the call, before any middleware
    check_limits(fname, opts)
    local req = { method = (opts.method or method or "GET"):upper(), headers = {}, opts = {} }
    req.url = absolute(sess, with_query(s, opts.query))
    if type(opts.headers) == "table" then for k, v in pairs(opts.headers) do req.headers[k] = v end end
    for k, v in pairs(opts) do
        if k == "body" or k == "json" or k == "form" or k == "multipart" then
            req[k] = v
        elseif k ~= "headers" and k ~= "query" and k ~= "method" then
            req.opts[k] = v
        end
    end
    local chain = sess.mw
    local function at(i, r)
        local fn = chain[i]
        if fn then return fn(r, function(nr) return at(i + 1, nr or r) end) end
        local o = {}
        for k, v in pairs(r.opts or {}) do o[k] = v end
        o.headers, o.body, o.json, o.form, o.method = r.headers, r.body, r.json, r.form, r.method
        o.multipart = r.multipart
        return request(sess, nil, r.url, o, fname)
    end
    return at(1, req)
end

-- Responses -------------------------------------------------------------------------

-- The end of a streamed response's body (read to its end, failed, or closed before it),
-- told to on_request_end or on_request_error once.
local function trace_done(res, err)
    local tr = res._trace
    res._trace = false
    if err then
        emit(tr.tc, "on_request_error", { error = err, duration = now() - tr.t0 })
    else
        emit(tr.tc, "on_request_end", { status = res.status, duration = now() - tr.t0, bytes = tr.bytes })
    end
end

-- res.headers and res.raw_headers are made from the raw list when first read.
local lazy = {
    headers = function(raw)
        local h = {}
        for i = 1, #raw, 2 do
            local k, v = raw[i], raw[i + 1]
            local old = h[k]
            h[k] = old and (old .. ", " .. v) or v
        end
        return setmetatable(h, headers_mt)
    end,
    raw_headers = function(raw)
        local list = {}
        for i = 1, #raw, 2 do list[#list + 1] = { raw[i], raw[i + 1] } end
        return list
    end,
}

function Response.__index(t, k)
    local m = Response[k]
    if m ~= nil then return m end
    local make = lazy[k]
    if not make then return nil end
    local v = make(t._raw)
    rawset(t, k, v)
    return v
end

-- res:text() -> the body | nil, err (a streamed response reads what is left of it).
function Response:text()
    if self._body then return self._body end
    local x = self._x
    if not x then return nil, "closed: response closed" end
    local body, err = x:read_all()
    if not body then
        if self._trace then trace_done(self, err) end
        self:close()
        return nil, err
    end
    self._body = body
    self._x = nil
    local tr = self._trace
    if tr then
        tr.bytes = tr.bytes + #body
        trace_done(self)
    end
    return self._body
end

-- res:json() -> the decoded body | nil, err
function Response:json()
    local text, err = self:text()
    if not text then return nil, err end
    local ok, v = pcall(json.decode, text)
    if not ok then return nil, "http: invalid JSON body (" .. tostring(v):gsub("^.-:%d+: ", "") .. ")" end
    return v
end

-- The next piece of a streamed body: piece | nil at its end | nil, err.
local function next_piece(self)
    local x = self._x
    if not x then return nil end
    local piece, err = x:read()
    if piece then
        local tr = self._trace
        if tr then tr.bytes = tr.bytes + #piece end
        return piece
    end
    if self._trace then trace_done(self, err) end
    self:close()
    return nil, err
end

-- res:chunks() -> iterator over the body's pieces as they arrive. Like io.lines, it raises
-- when reading fails.
function Response:chunks()
    if self._body then
        local done = false
        return function()
            if done or self._body == "" then return nil end
            done = true
            return self._body
        end
    end
    return function()
        local piece, err = next_piece(self)
        if err then error(err, 0) end -- the kind stays the first word, as in nil, err
        return piece
    end
end

-- res:save(path) -> bytes written | nil, err. Streams to the file as the body arrives. The
-- error is the read's own ("closed: ...", "timeout: ..."), and a cancel goes through.
function Response:save(path)
    args.check(path, "string", "save", 1)
    local f <close>, ferr = io.open(path, "wb")
    if not f then return nil, "closed: " .. ferr end
    local n, whole, err = 0, self._body, nil
    while true do
        local piece
        if whole then
            piece, whole = whole ~= "" and whole or nil, nil
        else
            piece, err = next_piece(self)
        end
        if not piece then break end
        local ok, werr = f:write(piece)
        if not ok then
            err = "closed: " .. werr
            self:close()
            break
        end
        n = n + #piece
    end
    if err then return nil, err end
    return n
end

-- res:close(): lets the connection go (an unread body is drained if small, else closed).
function Response:close()
    if self._trace then trace_done(self) end
    local x = self._x
    if x then
        self._x = nil
        x:close()
    end
end

Response.__close = Response.close

function Response:__tostring()
    return format("loom.response (%d %s)", self.status, self.url)
end

-- Sessions --------------------------------------------------------------------------

-- The session's proxies. A proxy URL that does not parse raises: ignoring it would send the
-- requests past the proxy, straight to the origin.
local function proxy_settings(p, fname)
    if p == false then return nil end
    if p == nil or p == true then return dial.env_proxy() end
    local function one(v, name)
        if v == nil or v == false then return nil end
        if type(v) ~= "string" then
            args.fail(fname, 1, format("option '%s': string expected, got %s", name, type(v)), 3)
        end
        local u, err = url.split(v:find("://", 1, true) and v or "http://" .. v)
        if not u then args.fail(fname, 1, format("option '%s': %s: %s", name, err, shown(v)), 3) end
        return u
    end
    if type(p) == "string" then
        local u = one(p, "proxy")
        return { http = u, https = u, no = {} }
    end
    for k in pairs(p) do
        if k ~= "http" and k ~= "https" and k ~= "no_proxy" then
            args.fail(fname, 1, format("unknown option 'proxy.%s'", tostring(k)), 2)
        end
    end
    local env = dial.env_proxy()
    local no = {}
    if p.no_proxy ~= nil and type(p.no_proxy) ~= "string" then
        args.fail(fname, 1, "option 'proxy.no_proxy': string expected, got " .. type(p.no_proxy), 2)
    end
    for item in (p.no_proxy or ""):gmatch("[^,%s]+") do no[#no + 1] = lower((item:gsub("^%*?%.", ""))) end
    return { http = one(p.http, "proxy.http") or (p.http == nil and env.http or nil),
        https = one(p.https, "proxy.https") or (p.https == nil and env.https or nil), no = no }
end

-- Every session not yet collected, loom.fetch's own included (loom.metrics reads their pools).
M.sessions = setmetatable({}, { __mode = "k" })

local function new_session(opts, fname, keep_cookies_default)
    opts = args.opts(opts, fname, 1)
    check_opts(opts, SESSION_OPTS, fname, 1)
    for _, k in ipairs({ "max_per_host", "idle_timeout", "max_body" }) do
        local v = opts[k]
        if v and v < 0 then args.fail(fname, 1, format("option '%s': must not be negative", k), 2) end
    end
    if opts.max_per_host and (opts.max_per_host < 1 or math.type(opts.max_per_host) ~= "integer") then
        args.fail(fname, 1, "option 'max_per_host': positive integer expected", 2)
    end
    if opts.trace then check_trace(opts.trace, fname, 1) end
    if opts.base_url and not url.split(opts.base_url) then
        args.fail(fname, 1, "option 'base_url': absolute URL expected", 2)
    end
    local keep = opts.cookies
    if keep == nil then keep = keep_cookies_default end
    local headers
    if opts.headers then
        check_framing(opts.headers, false, "headers", fname, 1)
        headers = {}
        for k, v in pairs(opts.headers) do headers[k] = v end
    end
    local sess = setmetatable({
        pool = http_pool{ max_per_host = opts.max_per_host or 10, idle_timeout = opts.idle_timeout or 30 },
        base_url = opts.base_url, headers = headers, timeout = opts.timeout,
        connect_timeout = opts.connect_timeout, read_timeout = opts.read_timeout,
        redirects = opts.redirects, max_body = opts.max_body, decode = opts.decode,
        tls = opts.tls, tlsconfs = {}, jar = keep and cookies.new() or nil, unix = opts.unix,
        http2 = opts.http2,
        proxy = proxy_settings(opts.proxy, fname), urls = {}, nurls = 0,
        trace = opts.trace, retry = retry_policy(opts.retry, fname, 1), mw = nil,
    }, Session)
    -- settings of a call without options, made once (a total timeout needs its own)
    sess.plain = setmetatable({}, { __index = function(t, method)
        local req = make_req(sess, method, {})
        req.shared = true
        t[method] = req
        return req
    end })
    M.sessions[sess] = true
    return sess
end

-- loom.session{ base_url, headers, timeout, connect_timeout, read_timeout, max_per_host,
-- idle_timeout, cookies = true, tls, redirects, max_body, proxy, decode, trace, retry } -> session
function M.session(opts)
    return new_session(opts, "session", true)
end

function Session:fetch(s, opts)
    if self.mw then return through(self, nil, s, opts, "fetch") end
    return request(self, nil, s, opts, "fetch")
end

for _, m in ipairs({ "get", "post", "put", "patch", "delete", "head", "options" }) do
    local method = m:upper()
    Session[m] = function(self, s, opts)
        if opts and type(opts) == "table" and opts.method then
            args.fail(m, 2, "option 'method' is set by '" .. m .. "'")
        end
        if self.mw then return through(self, method, s, opts, m) end
        return request(self, method, s, opts, m)
    end
end

-- s:use(function(req, next) ... return next(req) end) -> s: adds a client middleware, inside
-- those added before it (the first added runs first).
function Session:use(fn)
    args.check(fn, "function", "use", 1)
    local mw = self.mw or {}
    mw[#mw + 1] = fn
    self.mw = mw
    return self
end

-- s:close(): closes every pooled connection; requests in flight fail with `closed`.
function Session:close()
    self.pool:close()
    self.closed = true
    for _, pool in pairs(self.h2 or {}) do
        for _, conn in ipairs(pool.conns) do conn:close(true) end
        pool.conns = {}
    end
end

Session.__close = Session.close

-- s.cookies: the jar (jar:get(name), jar:clear()), or nil when the session keeps none.
function Session:cookie_jar()
    return self.jar
end

-- s:stats() -> {idle, active, opened, reused}: the pool's connections (opened and reused
-- count HTTP/2 connections and the streams that reused one too).
function Session:stats()
    local st = self.pool:stats()
    if self.h2_opened then
        st.opened = st.opened + self.h2_opened
        st.reused = st.reused + (self.h2_reused or 0)
    end
    return st
end

function Session:__tostring()
    return "loom.session"
end

-- loom.fetch(url, opts): through one default session per Lua state, keeping no cookies.
local default_session
function M.fetch(s, opts)
    if not default_session then default_session = new_session(nil, "fetch", false) end
    return request(default_session, nil, s, opts, "fetch")
end

return M
