-- loom.redis: a Redis client (RESP2) on loom streams. Replies are parsed in C straight from
-- the stream's buffer (src/db/resp.c through a framed read); commands go out as arrays of bulk
-- strings (core.resp_command), never as text built from the values. Plain commands of all
-- tasks share one connection (automatic pipelining, as ioredis does; src/db/resp_mux.c): the
-- commands queued during one turn of the loop leave in one write, and the replies are handed
-- out in order, each to the task that sent its command. Commands that block or change the
-- connection's state (BLPOP, MULTI, SELECT, CLIENT, ...) take a connection of their own from a
-- pool (loom.pool: max, waiters served in order), where a connection that still owes a reply
-- is closed, never handed out again. AUTH and SELECT on connect, pipelines, pub/sub on a
-- connection of its own, per-command timeouts, cancellation. See docs/databases.md.
local core = require "loom.core"
local args = require "loom.args"
local net = require "loom.net"
local url = require "loom.url"
local connpool = require "loom.pool"

local resp_read, resp_command, resp_reader, resp_idle = core.resp_read, core.resp_command, core.resp_reader,
    core.resp_idle
local resp_mux_new, resp_mux_call, resp_mux_send = core.resp_mux_new, core.resp_mux_call, core.resp_mux_send
local resp_mux_bind, resp_mux_fail, resp_mux_close = core.resp_mux_bind, core.resp_mux_fail, core.resp_mux_close
local now = core.now
local null = core.null
local format, mtype, concat, select, type = string.format, math.type, table.concat, select, type
local upper, pcall = string.upper, pcall

local M = { null = null }

local OPTIONS = {
    host = "string", port = "number", username = "string", password = "string", db = "number",
    max = "number", connect_timeout = "number", timeout = "number", tls = "table",
    max_bulk = "number", max_elements = "number", max_depth = "number", auto_pipeline = "boolean",
}

-- Commands that block or change the state of their connection: never on the shared one.
-- (XREAD and XREADGROUP only with BLOCK: see dedicated.)
local DEDICATED = {}
for w in ([[SUBSCRIBE PSUBSCRIBE SSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE SUNSUBSCRIBE MULTI EXEC
    DISCARD WATCH UNWATCH BLPOP BRPOP BRPOPLPUSH BLMOVE BLMPOP BZPOPMIN BZPOPMAX BZMPOP WAIT
    WAITAOF SELECT AUTH HELLO CLIENT MONITOR RESET QUIT SHUTDOWN SYNC PSYNC REPLCONF READONLY
    READWRITE ASKING]]):gmatch("%S+") do
    DEDICATED[w] = true
end
DEDICATED.XREAD, DEDICATED.XREADGROUP = "block", "block"

-- Whether command `cmd` (upper case) with arguments ... needs a connection of its own.
local function dedicated(cmd, ...)
    local d = DEDICATED[cmd]
    if d ~= "block" then return d == true end
    for i = 1, select("#", ...) do
        local a = select(i, ...)
        if type(a) == "string" and #a == 5 and upper(a) == "BLOCK" then return true end
    end
    return false
end

-- The upper-case names of the names r:call was given (a few distinct names in practice;
-- forgotten when there are too many).
local call_names, ncall_names = {}, 0
local function upper_name(name)
    local u = call_names[name]
    if not u then
        if ncall_names >= 1000 then call_names, ncall_names = {}, 0 end
        u = upper(name)
        call_names[name], ncall_names = u, ncall_names + 1
    end
    return u
end

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

local function check_options(o, argn)
    local function bad(msg) args.fail("redis", argn, msg, 4) end
    for k, v in pairs(o) do
        local t = OPTIONS[k]
        if not t then bad("unknown option '" .. tostring(k) .. "'") end
        if type(v) ~= t then bad(format("option '%s': %s expected, got %s", k, t, type(v))) end
    end
    for _, k in ipairs { "max", "max_bulk", "max_elements", "max_depth", "db" } do
        if o[k] ~= nil and (mtype(o[k]) ~= "integer" or o[k] < (k == "db" and 0 or 1)) then
            bad(format("option '%s': %s integer expected", k, k == "db" and "non-negative" or "positive"))
        end
    end
    if o.max_depth and o.max_depth > 64 then bad("option 'max_depth': at most 64") end
    for _, k in ipairs { "connect_timeout", "timeout" } do
        if o[k] and o[k] < 0 then bad("option '" .. k .. "': non-negative number expected") end
    end
    if o.port and (mtype(o.port) ~= "integer" or o.port < 1 or o.port > 65535) then
        bad("option 'port': integer 1-65535 expected")
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
local muxes = setmetatable({}, { __mode = "k" }) -- pool -> its shared connection (C's)

local function check_pool(self, fname)
    if getmetatable(self) ~= Pool then
        args.fail(fname, 1, "loom.redis expected (use r:" .. fname .. ")", 2)
    end
end

-- ---------------------------------------------------------------- the shared connection

-- The connection the plain commands of every task share (ioredis's model) is C's
-- (src/db/resp_mux.c): a command is encoded into the shared buffer and its task parks; what
-- the turn queued leaves in one write in the loop's prepare phase, and the replies are
-- handed out in order as they arrive. A waiter that gave up (a timeout, a cancellation)
-- keeps its place: its reply is read and dropped. A failed connection (closed, a protocol
-- error, the reader's timeout) fails every waiter and is dropped; the next command opens a
-- new one, in a task running `connect` below. With nothing owed the connection is idle as a
-- pooled one is (it keeps nothing alive, and its close is noticed).
local function new_mux(o)
    local function connect(m)
        local ok, c, err = pcall(open, o)
        if not ok then return resp_mux_fail(m, "closed: " .. tostring(c)) end
        if not c then return resp_mux_fail(m, err) end
        resp_mux_bind(m, c.st)
    end
    return resp_mux_new(connect, format("%s:%d", o.host or "127.0.0.1", o.port or 6379), o.timeout or -1,
        o.max_bulk or 512 * 1024 * 1024, o.max_elements or 16777216, o.max_depth or 32)
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
    local name = ...
    if type(name) ~= "string" then
        args.fail("call", 1, "command name (string) expected, got " .. type(name), 1)
    end
    local m = muxes[self]
    if m and not dedicated(upper_name(name), select(2, ...)) then
        return resp_mux_call(m, "call", 1, ...)
    end
    return exec(self, resp_command("call", 1, ...))
end

-- r:pipeline(function(p) p:incr("a"); p:get("b") end) -> {reply | {err = "redis: ..."}, ...}
-- | nil, err. Every command in one write, the replies in one go.
local function pipeline(self, fn)
    check_pool(self, "pipeline")
    if type(fn) ~= "function" then args.fail("pipeline", 1, "function expected, got " .. type(fn), 1) end
    local p = setmetatable({ n = 0, cmds = {}, done = false, dedicated = false }, Pipe)
    fn(p)
    p.done = true
    if p.n == 0 then return {} end
    local m = self.mux
    if m and not p.dedicated then -- the batch goes whole, its replies come back in a row
        return resp_mux_send(m, concat(p.cmds, "", 1, p.n), p.n)
    end
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
    if self.mux then resp_mux_close(self.mux) end
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

-- Any other name is the command of that name: r:hset(...) is r:call("HSET", ...). The
-- closures are made once per name and kept in the table Pool.__index is (weak values: one
-- that is no longer used goes), so r:get finds its closure without a call.
local function command_closure(name)
    local cmd = name:upper()
    local d = DEDICATED[cmd]
    if d == true then
        return function(self, ...)
            check_pool(self, name)
            return exec(self, resp_command(name, 0, cmd, ...))
        end
    elseif d then -- XREAD, XREADGROUP: shared unless with BLOCK
        return function(self, ...)
            local m = muxes[self]
            if m and not dedicated(cmd, ...) then return resp_mux_call(m, name, 0, cmd, ...) end
            check_pool(self, name)
            return exec(self, resp_command(name, 0, cmd, ...))
        end
    end
    -- the common case (GET, SET, HSET, ...): straight to the shared connection (muxes[self]
    -- is nil for anything but a pool, which check_pool then refuses)
    return function(self, ...)
        local m = muxes[self]
        if m then return resp_mux_call(m, name, 0, cmd, ...) end
        check_pool(self, name)
        return exec(self, resp_command(name, 0, cmd, ...))
    end
end

Pool.__name = "loom.redis"
Pool.__index = setmetatable({}, {
    __mode = "v",
    __index = function(methods, name)
        local f = METHODS[name] -- (the weak table may have let go of a method)
        if not f then
            if type(name) ~= "string" then return nil end
            f = command_closure(name)
        end
        methods[name] = f
        return f
    end,
})
Pool.__tostring = function(self) return format("loom.redis (%d open, %d idle)", self.nopen, #self.idle) end
-- loom.cookie_session{ store = r } takes this adapter (keys "loom:session:<id>", SET EX):
-- r:get/r:set are Redis's own commands, so the pool itself cannot be the store.
Pool.__session_store = function(self) return setmetatable({ r = self }, Store) end

local pipe_commands = setmetatable({}, { __mode = "v" })
-- (a batch with a command that blocks or changes the connection's state goes on a
-- connection of its own: a MULTI ... EXEC, a SELECT)
local function pipe_add(p, fname, first, cmd, ...)
    if p.done then error("pipeline: the pipeline function has returned", 3) end
    local n = p.n + 1
    p.cmds[n] = resp_command(fname, first, ...)
    p.n = n
    if not p.dedicated and dedicated(cmd, select(2, ...)) then p.dedicated = true end
    return p
end
local function pipe_call(p, ...)
    local name = ...
    return pipe_add(p, "call", 1, type(name) == "string" and upper_name(name) or "", ...)
end
Pipe.__name = "loom.redis.pipeline"
Pipe.__index = function(_, name)
    if name == "call" then return pipe_call end
    if type(name) ~= "string" then return nil end
    local f = pipe_commands[name]
    if not f then
        local cmd = name:upper()
        f = function(p, ...) return pipe_add(p, name, 0, cmd, cmd, ...) end
        pipe_commands[name] = f
    end
    return f
end

-- loom.redis(url | opts [, opts]) -> pool. Lazy: nothing connects before the first command.
-- The options of a second table go over those of the URL (or the first table).
function M.new(spec, more)
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
    check_options(o, 1)
    if more ~= nil then
        if type(more) ~= "table" then args.fail("redis", 2, "options table expected, got " .. type(more), 1) end
        check_options(more, 2)
        for k, v in pairs(more) do o[k] = v end
    end
    local p = connpool.init({ opts = o }, o.max or 10)
    p.mux = o.auto_pipeline ~= false and new_mux(o) -- (false: set, so not a command name)
    if p.mux then muxes[p] = p.mux end
    return setmetatable(p, Pool)
end

M.Store = Store
setmetatable(M, { __call = function(_, spec) return M.new(spec) end })

return M
