-- loom.dial: how the client makes a new connection, off its hot path: resolve the name
-- (loom.resolver: cached, capped), try each address in turn within the connect timeout,
-- go through a proxy when one applies (a CONNECT tunnel for https), then TLS. Returns a
-- connected loom stream for the pool (src/http_client.c) to own.
local core = require "loom.core"
local resolver = require "loom.resolver"
local url = require "loom.url"

local M = {}

local now, tcp_connect, tls_wrap = core.now, core.tcp_connect, core.tls_wrap
local format, lower = string.format, string.lower
local b64 -- base64 encoder, shared with the client

-- Base64 for Basic credentials.
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function M.base64(s)
    local out = {}
    for i = 1, #s, 3 do
        local a, b, c = s:byte(i, i + 2)
        local n = a << 16 | (b or 0) << 8 | (c or 0)
        local function at(k) return B64:sub(k + 1, k + 1) end
        out[#out + 1] = at(n >> 18 & 63) .. at(n >> 12 & 63) .. (b and at(n >> 6 & 63) or "=")
            .. (c and at(n & 63) or "=")
    end
    return table.concat(out)
end
b64 = M.base64

local function left(deadline)
    if not deadline then return nil end
    local l = deadline - now()
    return l > 0 and l or 0
end

-- A name that is an address already: no lookup to trace.
local function numeric(host)
    return host:find("^[%d.]+$") or host:find(":", 1, true)
end

-- Connects to host:port, each resolved address in turn, within `timeout` seconds overall.
-- on(name, event), when given, hears of the lookup and of the connection made (trace hooks).
local function connect(host, port, timeout, on)
    local deadline = timeout and now() + timeout
    local t0 = on and now()
    local addrs, err = resolver.resolve(host, timeout)
    if not addrs then return nil, err end
    if on and not numeric(host) then
        local copy = {}
        for i, a in ipairs(addrs) do copy[i] = a end
        on("on_dns", { host = host, addresses = copy, duration = now() - t0 })
    end
    for _, ip in ipairs(addrs) do
        local l = left(deadline)
        if l and l <= 0 then break end
        local st
        t0 = on and now()
        st, err = tcp_connect(ip, port, l)
        if st then
            if on then on("on_connect", { host = host, address = ip, port = port, duration = now() - t0 }) end
            return st
        end
        if err:find("^timeout") then break end
    end
    if deadline and now() >= deadline then
        return nil, format("timeout: connect to %s:%d", host, port)
    end
    return nil, err
end

-- Reads a response head off a stream (the proxy's answer to CONNECT): status, or nil, err.
local function read_connect_answer(st, proxy)
    local line, err = st:read_line()
    if not line then return nil, "connect: proxy " .. proxy.host .. " closed: " .. tostring(err) end
    local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
    if not status then return nil, "http: malformed answer from proxy " .. proxy.host end
    repeat
        line, err = st:read_line()
        if not line then return nil, "connect: proxy " .. proxy.host .. " closed: " .. tostring(err) end
    until line == ""
    return status
end

-- A tunnel to u.host:u.port through the proxy's CONNECT.
local function tunnel(st, u, proxy, timeout)
    local target = u.host:find(":", 1, true) and ("[" .. u.host .. "]:" .. u.port) or (u.host .. ":" .. u.port)
    local auth = ""
    if proxy.user then
        auth = "Proxy-Authorization: Basic " .. b64(proxy.user .. ":" .. (proxy.password or "")) .. "\r\n"
    end
    st:settimeout(timeout)
    local ok, err = st:write("CONNECT " .. target .. " HTTP/1.1\r\nHost: " .. target .. "\r\n" .. auth .. "\r\n")
    if not ok then return nil, err end
    local status
    status, err = read_connect_answer(st, proxy)
    st:settimeout(nil)
    if not status then return nil, err end
    if status ~= 200 then
        return nil, format("connect: proxy %s:%d answered %d to CONNECT %s", proxy.host, proxy.port, status, target)
    end
    return st
end

-- dial.open(u, opts) -> stream | nil, err
-- u: the request URL's parts; opts: tls (a core.tls_config, for https), server_name,
-- proxy (parts of the proxy URL, or nil), timeout (connect timeout, seconds or nil),
-- deadline (loom.now() of the total timeout, or nil), on (function(name, event) told of
-- on_dns, on_connect and on_tls, or nil).
function M.open(u, opts)
    local timeout = opts.timeout
    local dl = opts.deadline
    if dl then
        local l = left(dl)
        if not timeout or l < timeout then timeout = l end
    end
    local deadline = timeout and now() + timeout
    local proxy = opts.proxy
    local st, err
    if proxy then
        st, err = connect(proxy.host, proxy.port, timeout, opts.on)
        if st and u.scheme == "https" then
            local s2
            s2, err = tunnel(st, u, proxy, left(deadline))
            if not s2 then st:close(); st = nil end
        end
    else
        st, err = connect(u.host, u.port, timeout, opts.on)
    end
    if not st then return nil, err end
    if u.scheme == "https" then
        local on = opts.on
        if not on then return tls_wrap(st, opts.server_name or u.host, opts.tls, left(deadline)) end
        local t0 = now()
        local name = opts.server_name or u.host
        st, err = tls_wrap(st, name, opts.tls, left(deadline))
        if st then on("on_tls", { host = u.host, server_name = name, duration = now() - t0 }) end
        return st, err
    end
    return st
end

-- The proxy settings of the environment: {http = parts, https = parts, no = {suffixes}}.
-- Lowercase names first, as curl reads them. A value that is not a URL gives
-- {invalid = "why"}: the requests it would carry fail (as curl's do) rather than go
-- straight to the origin.
function M.env_proxy(getenv)
    getenv = getenv or os.getenv
    local function get(name) return getenv(lower(name)) or getenv(name) end
    local function parse(name)
        local v = get(name)
        if not v or v == "" then return nil end
        if not v:find("://", 1, true) then v = "http://" .. v end
        local u, err = url.split(v)
        return u or { invalid = format("%s is not a proxy URL (%s)", getenv(lower(name)) and lower(name) or name, err) }
    end
    local no = {}
    for item in (get("NO_PROXY") or ""):gmatch("[^,%s]+") do
        no[#no + 1] = lower((item:gsub("^%*?%.", ""):gsub(":%d+$", "")))
    end
    return { http = parse("HTTP_PROXY"), https = parse("HTTPS_PROXY"), no = no }
end

-- Whether NO_PROXY (a list of names; "*" for all) exempts host.
function M.bypass(no, host)
    for _, d in ipairs(no) do
        if d == "*" or host == d or host:sub(-#d - 1) == "." .. d then return true end
    end
    return false
end

return M
