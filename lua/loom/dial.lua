-- loom.dial: how the client makes a new connection, off its hot path: resolve the name
-- (loom.resolver: cached, capped), race its addresses (Happy Eyeballs, RFC 8305) within
-- the connect timeout, go through a proxy when one applies (a CONNECT tunnel for https),
-- then TLS. Returns a connected loom stream for the pool (src/http1/http_client.c) to own.
-- loom.connect (loom.net) races the same way.
local core = require "loom.core"
local resolver = require "loom.resolver"
local url = require "loom.url"

local M = {}

local now, tcp_connect, tls_wrap = core.now, core.tcp_connect, core.tls_wrap
local spawn, park, ticket, watch = core.spawn, core.park, core.ticket, core.watch
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

-- RFC 8305's Connection Attempt Delay: how long an attempt runs alone before the next
-- address is tried too (seconds).
M.ATTEMPT_DELAY = 0.25

-- The addresses in the order they are tried: the families interleaved (RFC 8305 section 4),
-- starting with the family of the first address (getaddrinfo sorts by RFC 6724: IPv6
-- first where the host has IPv6 to use), each family in its own order.
function M.interleave(addrs)
    local v6, v4 = {}, {}
    for _, a in ipairs(addrs) do
        local l = a:find(":", 1, true) and v6 or v4
        l[#l + 1] = a
    end
    local first, second = v6, v4
    if addrs[1] and not addrs[1]:find(":", 1, true) then first, second = v4, v6 end
    local out = {}
    for i = 1, math.max(#first, #second) do
        out[#out + 1] = first[i]
        out[#out + 1] = second[i]
    end
    return out
end

-- One attempt, in a task of its own. A stream that connects after the race is over (the
-- attempt was woken before its cancel arrived) is closed here.
local function attempt(race, ip, port, timeout)
    local t0 = now()
    local st, err = tcp_connect(ip, port, timeout)
    if st and race.over then
        st:close()
        return nil, "closed: connect race already over"
    end
    return st, err, now() - t0
end

-- Ends a race however the caller leaves it (a winner, all failed, the deadline, or the
-- dialing task cancelled): the attempts still running are cancelled (their sockets closed
-- by the connect's abort hook) and streams that won too late are closed.
local race_mt = {
    __close = function(race)
        race.over = true
        for i = 1, race.n do
            local t = race[i]
            if t:done() then
                local ok, st = t:result()
                if ok and st and st ~= race.winner then st:close() end
            else
                t:cancel()
            end
        end
    end,
}

-- dial.race(addrs, port, deadline) -> stream, ip, seconds | nil, err
-- Happy Eyeballs (RFC 8305): the addresses, interleaved by family, are tried one after
-- another, each started ATTEMPT_DELAY after the one before or as soon as it failed; the
-- first to connect wins and the others are cancelled. deadline (a core.now() value, or nil)
-- bounds the whole race: when it ends the race, the error is just "timeout" (the caller
-- names the host). When every address fails before it, the error is the first attempt's
-- (the preferred address's). `seconds`: how long the winning attempt took.
function M.race(addrs, port, deadline)
    if #addrs == 1 then -- nothing to race: no task of its own
        local l = left(deadline)
        if l and l <= 0 then return nil, "timeout" end
        local t0 = now()
        local st, err = tcp_connect(addrs[1], port, l)
        if st then return st, addrs[1], now() - t0 end
        return nil, err:find("^timeout") and "timeout" or err
    end
    local order = M.interleave(addrs)
    local race <close> = setmetatable({ n = 0, over = false }, race_mt)
    local box, seen, running, nexti = {}, 0, 0, 1
    local first_err, next_at, timed_out
    local function start()
        local ip = order[nexti]
        nexti = nexti + 1
        local t = spawn(attempt, race, ip, port, left(deadline))
        race.n = race.n + 1
        race[race.n], race[t] = t, ip
        running = running + 1
        if t:done() then box[#box + 1] = t else watch(t, box) end
        next_at = now() + M.ATTEMPT_DELAY
    end
    while true do
        while seen < #box do
            seen = seen + 1
            local t = box[seen]
            running = running - 1
            local ok, st, err, secs = t:result()
            if not ok then error(st, 0) end -- the attempt raised: misuse, not a failure
            if st then
                race.winner = st
                return st, race[t], secs
            end
            if err:find("^timeout") then timed_out = true end
            first_err = first_err or err
            next_at = nil -- a failure starts the next address at once
        end
        local l = left(deadline)
        if timed_out or l and l <= 0 then return nil, "timeout" end
        if nexti > #order and running == 0 then return nil, first_err end
        if nexti <= #order and (not next_at or now() >= next_at) then
            start()
        else
            local wait = nexti <= #order and next_at - now() or nil
            if l and (not wait or l < wait) then wait = l end
            box.task, box.serial = ticket()
            if seen == #box then park(wait) end
        end
    end
end

-- Connects to host:port, its resolved addresses raced (M.race), within `timeout` seconds
-- overall. on(name, event), when given, hears of the lookup and of the connection made
-- (trace hooks).
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
    local st, ip, secs = M.race(addrs, port, deadline)
    if st then
        if on then on("on_connect", { host = host, address = ip, port = port, duration = secs }) end
        return st
    end
    if ip == "timeout" then
        return nil, format(host:find(":", 1, true) and "timeout: connect to [%s]:%d" or "timeout: connect to %s:%d",
            host, port)
    end
    return nil, ip
end
M.connect = connect

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
