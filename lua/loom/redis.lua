-- loom.redis: a Redis client (RESP2) on loom streams. Replies are parsed in C straight from
-- the stream's buffer (src/db/resp.c through a framed read); commands go out as arrays of bulk
-- strings (core.resp_command), never as text built from the values. A pool of connections
-- (loom.pool: max, waiters served in order), AUTH and SELECT on connect, pipelines, pub/sub on a
-- connection of its own, per-command timeouts, and cancellation: a connection that still
-- owes a reply is closed, never handed out again. See docs/databases.md.
local core = require "loom.core"
local args = require "loom.args"
local net = require "loom.net"
local url = require "loom.url"
local connpool = require "loom.pool"

local resp_read, resp_command, resp_reader, resp_idle = core.resp_read, core.resp_command, core.resp_reader,
    core.resp_idle
local now = core.now
local null = core.null
local format, mtype, concat, select, type = string.format, math.type, table.concat, select, type

local M = { null = null }

local OPTIONS = {
    host = "string", port = "number", username = "string", password = "string", db = "number",
    max = "number", connect_timeout = "number", timeout = "number", tls = "table",
    max_bulk = "number", max_elements = "number", max_depth = "number",
}

local function fail(msg, level) args.fail("redis", 1, msg, (level or 1) + 1) end

-- redis://[user[:password]@]host[:port][/db], rediss:// for TLS.
local function parse_url(s)
    local scheme, rest = s:match("^(%a[%w+.-]*)://(.*)$")
    if scheme ~= "redis" and scheme ~= "rediss" then
        fail("redis:// URL expected, got '" .. s .. "'", 3)
    end
    local o = {}
    if scheme == "rediss" then o.tls = {} end
    rest = rest:match("^([^?#]*)")
    local authority, path = rest:match("^([^/]*)(.*)$")
    local userinfo, hostport = authority:match("^(.*)@(.*)$")
    if not userinfo then hostport = authority end
    if userinfo then
        local u, p = userinfo:match("^([^:]*):(.*)$")
        if u then
            o.username, o.password = url.decode(u), url.decode(p)
        else
            o.password = url.decode(userinfo) -- redis://secret@host: a password alone
        end
        if o.username == "" then o.username = nil end
    end
    local host, port = hostport:match("^%[([^%]]+)%]:?(%d*)$")
    if not host then host, port = hostport:match("^([^:]*):?(%d*)$") end
    if not host then fail("bad host in '" .. s .. "'", 3) end
    if host ~= "" then o.host = url.decode(host) end
    if port ~= "" then o.port = math.tointeger(tonumber(port)) end
    if #path > 1 then
        local db = math.tointeger(tonumber(path:sub(2)))
        if not db then fail("bad database number in '" .. s .. "'", 3) end
        o.db = db
    end
    return o
end

local function check_options(o)
    for k, v in pairs(o) do
        local t = OPTIONS[k]
        if not t then fail("unknown option '" .. tostring(k) .. "'", 3) end
        if type(v) ~= t then fail(format("option '%s': %s expected, got %s", k, t, type(v)), 3) end
    end
    for _, k in ipairs { "max", "max_bulk", "max_elements", "max_depth", "db" } do
        if o[k] ~= nil and (mtype(o[k]) ~= "integer" or o[k] < (k == "db" and 0 or 1)) then
            fail(format("option '%s': %s integer expected", k, k == "db" and "non-negative" or "positive"), 3)
        end
    end
    if o.max_depth and o.max_depth > 64 then fail("option 'max_depth': at most 64", 3) end
    for _, k in ipairs { "connect_timeout", "timeout" } do
        if o[k] and o[k] < 0 then fail("option '" .. k .. "': non-negative number expected", 3) end
    end
    if o.port and (mtype(o.port) ~= "integer" or o.port < 1 or o.port > 65535) then
        fail("option 'port': integer 1-65535 expected", 3)
    end
end

-- ---------------------------------------------------------------- connections

local Conn = {}
Conn.__index = Conn

-- One round trip on a connection: the encoded commands out, n replies in. Returns the
-- replies as an array (an error reply as {err = "redis: ..."}) or nil, err when the
-- connection failed (closed, timeout, a protocol error): it is then closed. A single
-- command (n == 1 and single) returns its value, or nil, "redis: ERR ..." for an error reply.
function Conn:roundtrip(payload, n, single)
    local st = self.st
    self.busy = true -- a reply is owed until every one is read
    local ok, err = st:write(payload)
    if not ok then
        self:close()
        return nil, err
    end
    local reader = self.reader
    if single then
        local v, rerr, fatal = resp_read(st, reader)
        if v == nil and (fatal or not rerr or not rerr:find("^redis: ")) then
            self:close()
            return nil, rerr
        end
        self.busy = false
        if v == nil then return nil, rerr end
        return v
    end
    local out = {}
    for i = 1, n do
        local v, rerr, fatal = resp_read(st, reader)
        if v == nil then
            if fatal or not rerr or not rerr:find("^redis: ") then
                self:close()
                return nil, rerr
            end
            v = { err = rerr }
        end
        out[i] = v
    end
    self.busy = false
    return out
end

function Conn:close()
    if not self.closed then
        self.closed = true
        self.st:close()
    end
end

-- Opens a connection: TCP (TLS), then AUTH and SELECT, all within connect_timeout.
local function open(o)
    local budget = o.connect_timeout or 10
    local deadline = now() + budget
    local st, err = net.connect(o.host or "127.0.0.1", o.port or 6379, { timeout = budget, tls = o.tls })
    if not st then return nil, err end
    local c = setmetatable({
        st = st,
        reader = resp_reader(o.max_bulk or 512 * 1024 * 1024, o.max_elements or 16777216, o.max_depth or 32),
        closed = false, busy = false, reused = 0,
    }, Conn)
    local hello = {}
    if o.password then
        if o.username then
            hello[#hello + 1] = resp_command("redis", 1, "AUTH", o.username, o.password)
        else
            hello[#hello + 1] = resp_command("redis", 1, "AUTH", o.password)
        end
    end
    if o.db and o.db ~= 0 then hello[#hello + 1] = resp_command("redis", 1, "SELECT", o.db) end
    if #hello > 0 then
        local left = deadline - now()
        st:settimeout(left > 0 and left or 0)
        local ok, res, rerr = pcall(c.roundtrip, c, concat(hello), #hello)
        if not ok then -- cancelled while connecting: not left open until collected
            c:close()
            error(res, 0)
        end
        if not res then
            c:close()
            if rerr and rerr:find("^timeout") then
                rerr = format("timeout: connect to %s:%d (AUTH/SELECT)", o.host or "127.0.0.1", o.port or 6379)
            end
            return nil, rerr
        end
        for _, v in ipairs(res) do
            if type(v) == "table" and v.err then
                c:close()
                return nil, v.err
            end
        end
    end
    st:settimeout(o.timeout or -1)
    return c
end

-- ---------------------------------------------------------------- the pool

-- The pool's bookkeeping (max, waiters served in order, idle list, slots) is loom.pool's;
-- an idle connection is fit while the server has not closed it (a restart, its timeout).
local conns = connpool.kind {
    open = function(p) return open(p.opts) end,
    check = function(c)
        if not resp_idle(c.st, false) then return false end
        c.reused = c.reused + 1
        return true
    end,
    close = function(c) c:close() end,
    rest = function(_, c) resp_idle(c.st, true) end,
}

-- waiting for a free connection counts against connect_timeout
local function acquire(p)
    return conns.acquire(p, p.opts.connect_timeout or 10)
end

-- Gives a connection back; one that failed, owes a reply or whose pool closed is closed.
local function release(pool, c, failed)
    conns.release(pool, c, not (failed or c.busy or c.closed))
end

-- Releases however the block ends: an error (a cancellation too) closes the connection.
local guard_mt = { __close = function(g, err) release(g[1], g[2], err ~= nil) end }

local Pool = {}
local Pipe = {}

local function check_pool(self, fname)
    if getmetatable(self) ~= Pool then
        args.fail(fname, 1, "loom.redis expected (use r:" .. fname .. ")", 2)
    end
end

-- One encoded command on a pooled connection -> reply | nil, err
local function exec(self, payload)
    local c, err = acquire(self)
    if not c then return nil, err end
    local _ <close> = setmetatable({ self, c }, guard_mt)
    return c:roundtrip(payload, 1, true)
end

-- r:call(name, ...) -> reply | nil, err
local function call(self, ...)
    check_pool(self, "call")
    if type((...)) ~= "string" then
        args.fail("call", 1, "command name (string) expected, got " .. type((...)), 1)
    end
    return exec(self, resp_command("call", 1, ...))
end

-- r:pipeline(function(p) p:incr("a"); p:get("b") end) -> {reply | {err = "redis: ..."}, ...}
-- | nil, err. Every command in one write, the replies in one go.
local function pipeline(self, fn)
    check_pool(self, "pipeline")
    if type(fn) ~= "function" then args.fail("pipeline", 1, "function expected, got " .. type(fn), 1) end
    local p = setmetatable({ n = 0, cmds = {}, done = false }, Pipe)
    fn(p)
    p.done = true
    if p.n == 0 then return {} end
    local c, err = acquire(self)
    if not c then return nil, err end
    local _ <close> = setmetatable({ self, c }, guard_mt)
    return c:roundtrip(concat(p.cmds, "", 1, p.n), p.n)
end

local Sub = {}
Sub.__index = Sub
Sub.__name = "loom.redis.subscription"

-- A pub/sub connection of its own (not counted in max): SUBSCRIBE (or PSUBSCRIBE), the
-- confirmations read before it returns, so a PUBLISH after it is seen.
local function subscribe(self, verb, fname, ...)
    check_pool(self, fname)
    local n = select("#", ...)
    if n == 0 then args.fail(fname, 2, "channel expected", 2) end
    for i = 1, n do
        if type((select(i, ...))) ~= "string" then
            args.fail(fname, i + 1, "channel (string) expected, got " .. type((select(i, ...))), 2)
        end
    end
    if self.closed then return connpool.closed_err() end
    local c, err = open(self.opts)
    if not c then return nil, err end
    local ok, res, rerr = pcall(c.roundtrip, c, resp_command(fname, 2, verb, ...), n)
    if not ok then
        c:close()
        error(res, 0)
    end
    if not res then return nil, rerr end
    for _, v in ipairs(res) do
        if type(v) ~= "table" or v.err then
            c:close()
            return nil, type(v) == "table" and v.err or "redis: protocol error: unexpected reply to " .. verb
        end
    end
    c.st:settimeout(-1)
    return setmetatable({ c = c }, Sub)
end

-- sub:receive([timeout]) -> channel, message (, pattern for a PSUBSCRIBE) | nil, err
function Sub:receive(timeout)
    if getmetatable(self) ~= Sub then args.fail("receive", 1, "subscription expected", 1) end
    if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
        args.fail("receive", 1, "non-negative number expected for the timeout", 1)
    end
    local c = self.c
    if c.closed then return nil, "closed: the subscription is closed" end
    c.st:settimeout(timeout or -1)
    while true do
        -- (cancelled mid-read, the partly read message stays for the next receive)
        local v, err, fatal = resp_read(c.st, c.reader)
        if v == nil then
            if fatal or (err and not err:find("^redis: ") and not err:find("^timeout")) then c:close() end
            return nil, err
        end
        if type(v) == "table" then
            local kind = v[1]
            if kind == "message" then return v[2], v[3] end
            if kind == "pmessage" then return v[3], v[4], v[2] end
        end
        -- (un)subscribe confirmations, a pong: not messages
    end
end

-- sub:subscribe(ch, ...), sub:psubscribe(pattern, ...), sub:unsubscribe(...), sub:punsubscribe(...):
-- sent at once; their confirmations are skipped by receive.
for _, verb in ipairs { "subscribe", "psubscribe", "unsubscribe", "punsubscribe" } do
    Sub[verb] = function(self, ...)
        if getmetatable(self) ~= Sub then args.fail(verb, 1, "subscription expected", 1) end
        local c = self.c
        if c.closed then return nil, "closed: the subscription is closed" end
        local ok, err = c.st:write(resp_command(verb, 2, verb:upper(), ...))
        if not ok then
            c:close()
            return nil, err
        end
        return true
    end
end

function Sub:close()
    self.c:close()
end
Sub.__close = Sub.close

-- r:close(): closes the idle connections now and those in use when they come back.
local function close(self)
    check_pool(self, "close")
    conns.close(self)
end

-- The store of loom.cookie_session{ store = r }: "loom:session:<id>" keys, SET EX ttl.
local Store = {}
Store.__index = Store
function Store:get(id)
    local v, err = call(self.r, "GET", "loom:session:" .. id)
    if v == null then return nil end
    return v, err
end
function Store:set(id, data, ttl)
    if ttl and ttl > 0 then
        return call(self.r, "SET", "loom:session:" .. id, data, "EX", math.ceil(ttl))
    end
    return call(self.r, "SET", "loom:session:" .. id, data)
end
function Store:delete(id)
    return call(self.r, "DEL", "loom:session:" .. id)
end

local METHODS = {
    call = call, pipeline = pipeline, close = close,
    subscribe = function(self, ...) return subscribe(self, "SUBSCRIBE", "subscribe", ...) end,
    psubscribe = function(self, ...) return subscribe(self, "PSUBSCRIBE", "psubscribe", ...) end,
}

-- Any other name is the command of that name: r:hset(...) is r:call("HSET", ...); the
-- closures are made once per name.
local commands = setmetatable({}, { __mode = "v" })
Pool.__name = "loom.redis"
Pool.__index = function(_, name)
    local m = METHODS[name]
    if m then return m end
    if type(name) ~= "string" then return nil end
    local f = commands[name]
    if not f then
        local cmd = name:upper()
        f = function(self, ...)
            check_pool(self, name)
            return exec(self, resp_command(name, 0, cmd, ...))
        end
        commands[name] = f
    end
    return f
end
Pool.__tostring = function(self) return format("loom.redis (%d open, %d idle)", self.nopen, #self.idle) end
-- loom.cookie_session{ store = r } takes this adapter (keys "loom:session:<id>", SET EX):
-- r:get/r:set are Redis's own commands, so the pool itself cannot be the store.
Pool.__session_store = function(self) return setmetatable({ r = self }, Store) end

local pipe_commands = setmetatable({}, { __mode = "v" })
local function pipe_add(p, fname, first, ...)
    if p.done then error("pipeline: the pipeline function has returned", 3) end
    local n = p.n + 1
    p.cmds[n] = resp_command(fname, first, ...)
    p.n = n
    return p
end
Pipe.__name = "loom.redis.pipeline"
Pipe.__index = function(_, name)
    if name == "call" then
        return function(p, ...) return pipe_add(p, "call", 1, ...) end
    end
    if type(name) ~= "string" then return nil end
    local f = pipe_commands[name]
    if not f then
        local cmd = name:upper()
        f = function(p, ...) return pipe_add(p, name, 0, cmd, ...) end
        pipe_commands[name] = f
    end
    return f
end

-- loom.redis(url | opts) -> pool. Lazy: nothing connects before the first command.
function M.new(spec)
    local o
    if type(spec) == "string" then
        o = parse_url(spec)
    elseif type(spec) == "table" then
        o = {}
        for k, v in pairs(spec) do o[k] = v end
    elseif spec == nil then
        o = {}
    else
        args.fail("redis", 1, "URL string or options table expected, got " .. type(spec), 1)
    end
    check_options(o)
    return setmetatable(connpool.init({ opts = o }, o.max or 10), Pool)
end

M.Store = Store
setmetatable(M, { __call = function(_, spec) return M.new(spec) end })

return M
