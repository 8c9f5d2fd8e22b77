-- loom.socket: the OpenResty cosocket interface (ngx.socket.tcp) on loom streams, so that
-- drivers written for OpenResty (lua-resty-redis, lua-resty-mysql, pgmoon, ...) run
-- unmodified (with loom.ngx's `ngx`). Results and errors are OpenResty's: 1 for success,
-- nil and the bare "timeout" / "closed" (drivers compare them), with the partial data of a
-- receive that failed. Timeouts are in milliseconds. See docs/databases.md.
local core = require "loom.core"
local net = require "loom.net"

local resp_idle, now = core.resp_idle, core.now
local find, sub, concat, type, tostring = string.find, string.sub, table.concat, type, tostring
local mtype, floor = math.type, math.floor

local M = {}

local DEFAULT_TIMEOUT = 60 -- s, OpenResty's lua_socket_*_timeout

-- Idle connections put away by setkeepalive, per pool name ("host:port" unless named).
local pools = {}

local Sock = {}
Sock.__index = Sock
Sock.__name = "loom.socket.tcp"

-- sock = loom.socket.tcp()
function M.tcp()
    return setmetatable({
        st = nil, buf = "", pos = 1, reused = 0,
        ct = DEFAULT_TIMEOUT, sto = DEFAULT_TIMEOUT, rto = DEFAULT_TIMEOUT,
    }, Sock)
end

local function check(self, fname)
    if getmetatable(self) ~= Sock then
        error(("bad argument #1 to '%s' (loom.socket.tcp expected, use sock:%s)"):format(fname, fname), 3)
    end
end

-- ms -> seconds; nil and 0 keep OpenResty's meaning: the default.
local function ms(v, fname)
    if v == nil then return DEFAULT_TIMEOUT end
    if type(v) ~= "number" or v < 0 then
        error(("bad argument #1 to '%s' (non-negative number of milliseconds expected, got %s)")
            :format(fname, tostring(v)), 3)
    end
    if v == 0 then return DEFAULT_TIMEOUT end
    return v / 1000
end

-- OpenResty's bare error for a loom one: "timeout", else "closed" for what ends the
-- stream, else the detail without loom's kind ("connection refused ...").
local function bare(err)
    if not err then return "closed" end
    if find(err, "^timeout") then return "timeout" end
    if find(err, "^closed") then return "closed" end
    return (err:gsub("^%a+: ", ""))
end

local function drop(self)
    local st = self.st
    self.st, self.buf, self.pos = nil, "", 1
    if st then st:close() end
end

-- sock:settimeout(ms): connect, send and receive.
function Sock:settimeout(t)
    check(self, "settimeout")
    local s = ms(t, "settimeout")
    self.ct, self.sto, self.rto = s, s, s
end

-- sock:settimeouts(connect_ms, send_ms, read_ms)
function Sock:settimeouts(c, s, r)
    check(self, "settimeouts")
    self.ct, self.sto, self.rto = ms(c, "settimeouts"), ms(s, "settimeouts"), ms(r, "settimeouts")
end

-- sock:connect(host, port [, {pool = name, pool_size, backlog}]) -> 1 | nil, err. An idle
-- connection of the same pool (setkeepalive) is taken first. sock:connect("unix:/path"
-- [, opts]): a unix-domain socket, as OpenResty's.
function Sock:connect(host, port, opts)
    check(self, "connect")
    if type(host) ~= "string" then
        error("bad argument #1 to 'connect' (string expected, got " .. type(host) .. ")", 2)
    end
    if type(port) == "table" and opts == nil then opts, port = port, nil end
    local path = port == nil and find(host, "^unix:") and host:sub(6) -- "unix:/run/x.sock"
    if port == nil and not path then error("bad argument #2 to 'connect' (port expected)", 2) end
    if not path then port = net.check_port(port, "connect", 2) end
    if opts ~= nil and type(opts) ~= "table" then
        error("bad argument #3 to 'connect' (table expected, got " .. type(opts) .. ")", 2)
    end
    if self.st then drop(self) end
    local name = opts and opts.pool or (path and host or host .. ":" .. port)
    self.pool = name
    local idle = pools[name]
    local t = now()
    while idle and #idle > 0 do
        local e = idle[#idle]
        idle[#idle] = nil
        if (e.expires == 0 or e.expires > t) and resp_idle(e.st, false) then
            self.st, self.reused = e.st, e.reused + 1
            self.buf, self.pos = "", 1
            return 1
        end
        e.st:close()
    end
    local st, err
    if path then
        st, err = net.connect{ path = path, timeout = self.ct }
    else
        st, err = net.connect(host, port, { timeout = self.ct })
    end
    if not st then return nil, bare(err) end
    self.st, self.reused, self.host = st, 0, path and "localhost" or host
    self.buf, self.pos = "", 1
    return 1
end

-- sock:sslhandshake(reused_session, server_name, verify) -> session | true | nil, err.
-- The certificate is checked unless verify is false (OpenResty checks only when it is
-- true: loom checks by default; pass false where the driver's caller asked for none).
function Sock:sslhandshake(reused, server_name, verify)
    check(self, "sslhandshake")
    local st = self.st
    if not st then return nil, "closed" end
    local tls, err = core.tls_wrap(st, server_name or self.host or "", { verify = verify ~= false }, self.ct)
    if not tls then
        drop(self)
        return nil, (err and err:gsub("^%a+: ", "")) or "handshake failed"
    end
    self.st = tls
    if reused == false then return true end
    return setmetatable({}, { __name = "loom.socket.session" }) -- opaque: no resumption
end

-- The strings of a nested table of strings and numbers (booleans too, as OpenResty does).
local function flatten(t, out, n, depth)
    if depth > 100 then error("bad argument #1 to 'send' (table nested too deep)", 4) end
    for i = 1, #t do
        local v = t[i]
        local tv = type(v)
        if tv == "string" then
            n = n + 1
            out[n] = v
        elseif tv == "number" then
            n = n + 1
            out[n] = mtype(v) == "integer" and tostring(v) or (v == floor(v) and v > -2^53 and v < 2^53
                and tostring(floor(v)) or ("%.17g"):format(v))
        elseif tv == "boolean" then
            n = n + 1
            out[n] = v and "true" or "false"
        elseif tv == "table" then
            n = flatten(v, out, n, depth + 1)
        else
            error("bad argument #1 to 'send' (bad data type " .. tv .. " found)", 4)
        end
    end
    return n
end

-- sock:send(data) -> bytes | nil, err
function Sock:send(data)
    check(self, "send")
    local td = type(data)
    if td == "table" then
        local parts = {}
        local n = flatten(data, parts, 0, 1)
        data = concat(parts, "", 1, n)
    elseif td == "number" then
        data = tostring(data)
    elseif td ~= "string" then
        error("bad argument #1 to 'send' (string, number or table expected, got " .. td .. ")", 2)
    end
    local st = self.st
    if not st then return nil, "closed" end
    st:settimeout(self.sto)
    local ok, err = st:write(data)
    if not ok then
        drop(self)
        return nil, bare(err)
    end
    return #data
end

-- Reads more into the buffer: true, or nil and the bare error (the stream dropped unless
-- it was a timeout).
local function fill(self)
    local st = self.st
    st:settimeout(self.rto)
    local data, err = st:read()
    if not data then
        err = bare(err)
        if err ~= "timeout" then
            self.st = nil
            st:close()
        end
        return nil, err
    end
    local buf, pos = self.buf, self.pos
    if pos > #buf then
        self.buf = data
    else
        self.buf = sub(buf, pos) .. data
    end
    self.pos = 1
    return true
end

-- Takes n bytes from the buffer.
local function take(self, n)
    local pos = self.pos
    local s = sub(self.buf, pos, pos + n - 1)
    pos = pos + n
    if pos > #self.buf then self.buf, pos = "", 1 end
    self.pos = pos
    return s
end

-- What is left in the buffer, taken (the partial data of a failed receive).
local function rest(self)
    local s = sub(self.buf, self.pos)
    self.buf, self.pos = "", 1
    return s
end

-- sock:receive(n | "*l" | "*a") -> data | nil, err, partial. receive() is "*l": a line
-- without its LF, its CRs dropped.
function Sock:receive(pattern)
    check(self, "receive")
    local tp = type(pattern)
    if pattern ~= nil and tp ~= "number" and not (tp == "string" and (pattern == "*l" or pattern == "l"
        or pattern == "*a" or pattern == "a" or tonumber(pattern))) then
        error("bad argument #1 to 'receive' (bad pattern argument: " .. tostring(pattern) .. ")", 2)
    end
    if not self.st and self.pos > #self.buf then return nil, "closed", "" end
    if pattern == nil or pattern == "*l" or pattern == "l" then
        while true do
            local i = find(self.buf, "\n", self.pos, true)
            if i then
                local line = take(self, i - self.pos + 1)
                line = sub(line, 1, -2)
                if find(line, "\r", 1, true) then line = line:gsub("\r", "") end
                return line
            end
            if not self.st then return nil, "closed", rest(self) end
            local ok, err = fill(self)
            if not ok then return nil, err, rest(self) end
        end
    elseif pattern == "*a" or pattern == "a" then
        while self.st do
            local ok, err = fill(self)
            if not ok then
                if err ~= "closed" then return nil, err, rest(self) end
            end
        end
        return rest(self)
    end
    local n = type(pattern) == "string" and tonumber(pattern) or pattern
    if type(n) ~= "number" or n < 0 then
        error("bad argument #1 to 'receive' (bad pattern argument: " .. tostring(pattern) .. ")", 2)
    end
    n = floor(n)
    if n == 0 then return "" end
    while #self.buf - self.pos + 1 < n do
        if not self.st then return nil, "closed", rest(self) end
        local ok, err = fill(self)
        if not ok then return nil, err, rest(self) end
    end
    return take(self, n)
end

-- sock:receiveuntil(pattern [, {inclusive = bool}]) -> iterator([size]): the data before
-- the next `pattern` (with it when inclusive). With a size, the iterator returns that data
-- in pieces of at most size bytes, then nil once at the pattern (consumed), and then goes
-- on to the next occurrence.
function Sock:receiveuntil(pat, opts)
    check(self, "receiveuntil")
    if type(pat) ~= "string" or pat == "" then
        error("bad argument #1 to 'receiveuntil' (non-empty string expected)", 2)
    end
    local inclusive = type(opts) == "table" and opts.inclusive == true
    local plen = #pat
    local left -- in size mode: bytes before the boundary's end still to hand out, when known
    local skip -- ...then the pattern bytes to drop (0 when inclusive)
    local function find_pat()
        local from = self.pos
        while true do
            local i = find(self.buf, pat, from, true)
            if i then return i end
            if not self.st then return nil, "closed" end
            local before = #self.buf - self.pos + 1
            local ok, err = fill(self)
            if not ok then return nil, err end
            from = self.pos + (before > plen and before - plen + 1 or 0)
        end
    end
    return function(size)
        if size ~= nil and (type(size) ~= "number" or size <= 0) then
            error("bad argument #1 to the receiveuntil iterator (positive size expected)", 2)
        end
        if not size then
            local i, err = find_pat()
            if not i then return nil, err, rest(self) end
            local data = take(self, i - self.pos + (inclusive and plen or 0))
            if not inclusive then take(self, plen) end
            return data
        end
        size = floor(size)
        if not left then
            -- hand out what cannot be the start of the pattern without waiting for it
            while true do
                local i = find(self.buf, pat, self.pos, true)
                if i then
                    left = i - self.pos + (inclusive and plen or 0)
                    skip = inclusive and 0 or plen
                    break
                end
                local safe = #self.buf - self.pos + 1 - (plen - 1)
                if safe >= size then return take(self, size) end
                if not self.st then return nil, "closed", rest(self) end
                local ok, err = fill(self)
                if not ok then
                    if safe > 0 and err == "timeout" then return take(self, safe) end
                    return nil, err, rest(self)
                end
            end
        end
        if left > 0 then
            local n = left < size and left or size
            left = left - n
            return take(self, n)
        end
        take(self, skip)
        left, skip = nil, nil
        return nil
    end
end

-- sock:setkeepalive([idle_ms [, pool_size]]) -> 1 | nil, err: the connection goes to the
-- pool of its connect (host:port, or opts.pool) for a later connect to take; at most
-- pool_size (default 30) are kept, the oldest closed first. It is closed instead when
-- data is left unread.
function Sock:setkeepalive(idle_ms, size)
    check(self, "setkeepalive")
    local st = self.st
    if not st then return nil, "closed" end
    if self.pos <= #self.buf then
        drop(self)
        return nil, "connection in dubious state"
    end
    if idle_ms ~= nil and (type(idle_ms) ~= "number" or idle_ms < 0) then
        error("bad argument #1 to 'setkeepalive' (non-negative number expected)", 2)
    end
    size = size or 30
    if mtype(size) ~= "integer" and not (type(size) == "number" and size == floor(size)) or size < 1 then
        error("bad argument #2 to 'setkeepalive' (positive integer expected)", 2)
    end
    self.st = nil
    if not resp_idle(st, true) then
        st:close()
        return nil, "closed"
    end
    local name = self.pool
    local idle = pools[name]
    if not idle then
        idle = {}
        pools[name] = idle
    end
    while #idle >= size do
        table.remove(idle, 1).st:close()
    end
    local ttl = (idle_ms == nil or idle_ms == 0) and 0 or idle_ms / 1000
    idle[#idle + 1] = { st = st, reused = self.reused, expires = ttl == 0 and 0 or now() + ttl }
    return 1
end

-- sock:getreusedtimes() -> how many times this connection came from the pool
function Sock:getreusedtimes()
    check(self, "getreusedtimes")
    if not self.st then return nil, "closed" end
    return self.reused
end

-- sock:close() -> 1 | nil, "closed"
function Sock:close()
    check(self, "close")
    if not self.st then return nil, "closed" end
    drop(self)
    return 1
end

-- sock:setoption(...): accepted and ignored (keepalive, reuseaddr, tcp-nodelay: libuv
-- sets TCP_NODELAY already).
function Sock:setoption()
    return true
end

return M
