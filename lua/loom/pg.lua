-- loom.pg: PostgreSQL pools over src/db/pg.c (one libpq connection driven by the loop, every
-- batch of commands in one pipeline round trip). This file holds what users configure and
-- what a pool decides: connection strings, how a connection opens and when it is fit to
-- reuse (the pool and its waiters are loom.pool's), the statement cache, parameter
-- encoding by the types the server reports, transactions, pipelines and LISTEN.
-- Plain db:query calls of every task share one connection (automatic pipelining, as the
-- redis client does): each query goes out as soon as it is made, with a sync point of its
-- own (its own implicit transaction: one failing cannot abort or roll back another's), the
-- socket corked so that what one turn of the scheduler sends leaves together, and the
-- results come back in order to the task of each. docs/databases.md is the user's page.
local core = require "loom.core"
local args = require "loom.args"
local resolver = require "loom.resolver"
local url = require "loom.url"
local connpool = require "loom.pool"

local pg_connect, spawn, now = core.pg_connect, core.spawn, core.now
local ticket, park, wake = core.ticket, core.park, core.wake
local null = core.null
local type, select, tostring, setmetatable, error, pcall = type, select, tostring,
    setmetatable, error, pcall
local mtype, format, pack, unpack, find, lower = math.type, string.format, table.pack, table.unpack,
    string.find, string.lower

local M = { null = null }

local OID_BOOL, OID_BYTEA, OID_JSON, OID_JSONB = 16, 17, 114, 3802
local CACHE_MAX = 256 -- prepared statements kept per connection

-- JSON through loom.json when lua-cjson is there; json/jsonb columns stay text otherwise.
local json, json_decode
local function get_json()
    if json == nil then
        local ok, j = pcall(require, "loom.json")
        json = ok and pcall(j.encode, {}) and j or false
        if json then json_decode = json.decode end
    end
    return json
end

-- ---------------------------------------------------------------- options

local OPTIONS = {
    host = "string", port = "number", user = "string", password = "string",
    database = "string", sslmode = "string", sslrootcert = "string", sslcert = "string",
    sslkey = "string", application_name = "string", gssencmode = "string", max = "number",
    connect_timeout = "number", idle_timeout = "number", timeout = "number",
    auto_pipeline = "boolean",
}
-- URL query keys taken as options (libpq's names; dbname and the timeouts too)
local URL_KEYS = {
    sslmode = "sslmode", sslrootcert = "sslrootcert", sslcert = "sslcert", sslkey = "sslkey",
    application_name = "application_name", gssencmode = "gssencmode", host = "host", port = "port", user = "user",
    password = "password", dbname = "database", connect_timeout = "connect_timeout",
    idle_timeout = "idle_timeout", timeout = "timeout", max = "max",
    auto_pipeline = "auto_pipeline",
}
local NUMERIC = { port = true, max = true, connect_timeout = true, idle_timeout = true,
    timeout = true }

-- "postgresql://user:pw@host:port/db?sslmode=require" -> options
local function parse_url(s)
    local scheme, rest = s:match("^(%a[%w+.-]*)://(.*)$")
    if scheme ~= "postgresql" and scheme ~= "postgres" then
        args.fail("pg", 1, "postgresql:// URL expected, got '" .. s .. "'", 2)
    end
    local o = {}
    local query
    rest, query = rest:match("^([^?#]*)%??([^#]*)")
    local authority, path = rest:match("^([^/]*)(.*)$")
    local userinfo, hostport = authority:match("^(.*)@(.*)$")
    if not userinfo then hostport = authority end
    if userinfo then
        local u, p = userinfo:match("^([^:]*):(.*)$")
        if u then
            o.user, o.password = url.decode(u), url.decode(p)
        else
            o.user = url.decode(userinfo)
        end
        if o.user == "" then o.user = nil end
    end
    local host, port = hostport:match("^%[([^%]]+)%]:?(%d*)$")
    if not host then host, port = hostport:match("^([^:]*):?(%d*)$") end
    if not host then args.fail("pg", 1, "bad host in '" .. s .. "'", 2) end
    if host ~= "" then o.host = url.decode(host) end
    if port ~= "" then o.port = tonumber(port) end
    if #path > 1 then o.database = url.decode(path:sub(2)) end
    for k, v in pairs((url.parse_query(query))) do
        local name = URL_KEYS[k]
        if not name then args.fail("pg", 1, "unknown URL parameter '" .. k .. "'", 2) end
        if NUMERIC[name] then
            local n = tonumber(v)
            if not n then args.fail("pg", 1, "URL parameter '" .. k .. "': number expected", 2) end
            v = n
        elseif name == "auto_pipeline" then
            if v ~= "true" and v ~= "false" then
                args.fail("pg", 1, "URL parameter 'auto_pipeline': true or false expected", 2)
            end
            v = v == "true"
        end
        o[name] = v
    end
    return o
end

local function check_options(o)
    for k, v in pairs(o) do
        local t = OPTIONS[k]
        if not t then args.fail("pg", 1, "unknown option '" .. tostring(k) .. "'", 3) end
        if type(v) ~= t then
            args.fail("pg", 1, format("option '%s': %s expected, got %s", k, t, type(v)), 3)
        end
    end
    if o.max ~= nil and (mtype(o.max) ~= "integer" or o.max < 1) then
        args.fail("pg", 1, "option 'max': positive integer expected", 3)
    end
    for _, k in ipairs { "connect_timeout", "idle_timeout", "timeout" } do
        if o[k] and o[k] < 0 then
            args.fail("pg", 1, "option '" .. k .. "': non-negative number expected", 3)
        end
    end
    if o.port and (mtype(o.port) ~= "integer" or o.port < 1 or o.port > 65535) then
        args.fail("pg", 1, "option 'port': integer 1-65535 expected", 3)
    end
end

-- ---------------------------------------------------------------- connections

-- Opens one connection: the host name resolved by loom's resolver (libpq would call a
-- blocking getaddrinfo), passed as hostaddr with host kept for TLS name checks.
local function open(pool)
    local o = pool.opts
    local kw = {
        user = o.user, password = o.password, dbname = o.database,
        sslmode = o.sslmode, sslrootcert = o.sslrootcert, sslcert = o.sslcert,
        sslkey = o.sslkey, application_name = o.application_name or "loom",
        -- libpq's default (prefer) asks Kerberos for credentials on the loop, which can
        -- block; off unless asked for
        gssencmode = o.gssencmode or "disable",
        client_encoding = "UTF8",
    }
    if o.port then kw.port = tostring(o.port) end
    local budget = o.connect_timeout or 10
    local deadline = now() + budget
    local host = o.host
    if host and host:sub(1, 1) ~= "/" then
        local addrs, err = resolver.resolve(host, budget)
        if not addrs then return nil, err end
        -- every address, tried in turn by libpq (lists of the same length: host repeats)
        local n = math.min(#addrs, 8)
        local hosts = {}
        for i = 1, n do hosts[i] = host end
        kw.host, kw.hostaddr = table.concat(hosts, ","), table.concat(addrs, ",", 1, n)
    elseif host then
        kw.host = host -- a unix socket directory
    end
    local left = deadline - now()
    if left < 0 then left = 0 end
    return pg_connect(kw, left)
end

-- The pool's bookkeeping (max, waiters served in order, idle list, slots) is loom.pool's;
-- an idle connection is fit when libpq says so (idle_timeout or the server may close it).
local conns = connpool.kind {
    open = open,
    check = function(c) return c:status(true) == "idle" end, -- probe: closed while idle?
    close = function(c) c:close() end,
    rest = function(p, c) c:idle(p.idle_timeout) end,
}

-- waiting for a free connection counts against connect_timeout, as in loom.fetch
local function acquire(p)
    return conns.acquire(p, p.opts.connect_timeout or 10)
end

local release

-- A batch left running by a waiter that timed out or was cancelled: wait for it to end
-- (the server got a cancel request), then give the connection back or close it.
local function drain(pool, c)
    if not c:wait_idle(10) then c:close() end
    release(pool, c)
end

-- Gives a connection back: to the first waiter, or to the idle list. One that failed, or
-- is inside a transaction (a failed one too), is closed instead: never handed out.
release = function(pool, c)
    local state, tx = c:status()
    if state == "busy" then
        spawn(drain, pool, c)
        return
    end
    -- closed when not fit (the first waiter may then open a new one)
    conns.release(pool, c, state == "idle" and tx == "idle")
end

-- A to-be-closed guard that releases a connection however the block ends.
local guard_mt = { __close = function(g) release(g[1], g[2]) end }

-- ---------------------------------------------------------------- statements

local function cache_of(pool, c)
    local cache = pool.stmts[c]
    if not cache then
        cache = { map = {}, order = {}, first = 1, last = 0, seq = 0, stale = {} }
        pool.stmts[c] = cache
    end
    return cache
end

local function fmt_float(v)
    if v ~= v then return "NaN" end
    if v == math.huge then return "Infinity" end
    if v == -math.huge then return "-Infinity" end
    return format("%.17g", v)
end

-- What a text parameter with a NUL byte gives: libpq sends text parameters as C strings,
-- so the value would arrive cut at the NUL (PostgreSQL's text cannot hold one anyway).
local NUL_PARAM = 'pg: 22021 invalid byte sequence for encoding "UTF8": 0x00 (parameter $%d; send bytes as bytea)'

-- Encodes the n parameters by the types the server reports: a string for bytea goes in
-- binary (byte exact); tables for json/jsonb as JSON; nil or loom.null as NULL. Returns
-- nil, err for a text value holding a NUL byte (nothing is sent).
local function encode(fname, lvl, types, n, ...)
    if n ~= #types then
        error(format("%s: the statement takes %d parameter(s), got %d", fname, #types, n), lvl)
    end
    local params, bin = {}, false
    for i = 1, n do
        local v = select(i, ...)
        local oid, tv = types[i], type(v)
        if v == nil or v == null then
            params[i] = false
        elseif oid == OID_BYTEA and tv == "string" then
            params[i] = v
            bin = bin or {}
            bin[i] = true
        elseif (oid == OID_JSON or oid == OID_JSONB) and tv ~= "string" then
            local j = get_json()
            if not j then error(fname .. ": json parameters need lua-cjson", lvl) end
            params[i] = j.encode(v)
        elseif tv == "string" then
            if find(v, "\0", 1, true) then return nil, format(NUL_PARAM, i) end
            params[i] = v
        elseif tv == "number" then
            params[i] = mtype(v) == "integer" and format("%d", v) or fmt_float(v)
        elseif tv == "boolean" then
            params[i] = v and "t" or "f"
        else
            error(format("bad argument #%d to '%s' (cannot send a %s as a parameter of type %d)",
                i + 1, fname, tv, oid), lvl)
        end
    end
    return params, bin
end

-- Prepares the statements of `sqls` not yet in the connection's cache, in one round trip
-- (a failed one aborts those after it in the pipeline: they are tried again). Returns
-- {sql = error} for those that failed, or nil, err when the connection did.
local function prepare(pool, c, sqls)
    local cache = cache_of(pool, c)
    local failed = {}
    local todo = {}
    for _, sql in ipairs(sqls) do
        if not cache.map[sql] and not todo[sql] then
            todo[sql] = true
            todo[#todo + 1] = sql
        end
    end
    while #todo > 0 do
        local ops, names = {}, {}
        for k, name in ipairs(cache.stale) do -- statements forgotten by run()
            ops[#ops + 1] = { "query", "DEALLOCATE " .. name }
            cache.stale[k] = nil
        end
        for _, sql in ipairs(todo) do
            if cache.last - cache.first + 1 >= CACHE_MAX then -- forget the oldest
                local old = cache.order[cache.first]
                cache.order[cache.first] = nil
                cache.first = cache.first + 1
                local st = cache.map[old]
                cache.map[old] = nil
                if st then ops[#ops + 1] = { "query", "DEALLOCATE " .. st.name } end
            end
            cache.seq = cache.seq + 1
            local name = "loom_" .. cache.seq
            names[sql] = name
            ops[#ops + 1] = { "prepare", name, sql, sql = sql }
            ops[#ops + 1] = { "describe", name, sql = sql }
        end
        local res, err = c:batch(ops, pool.timeout, null, json_decode)
        if not res then return nil, err end
        local again = {}
        for i, op in ipairs(ops) do
            local r = res[i]
            if op[1] == "describe" and type(r) == "table" then
                local st = { name = names[op.sql], types = r }
                cache.map[op.sql] = st
                cache.last = cache.last + 1
                cache.order[cache.last] = op.sql
            elseif op[1] == "prepare" and type(r) == "string" then
                if r:find("^pg: aborted") then
                    again[#again + 1] = op.sql
                else
                    failed[op.sql] = r
                end
            end
        end
        if #again == #todo then -- nothing got through (an eviction failed?): give up
            for _, sql in ipairs(again) do failed[sql] = failed[sql] or "pg: aborted" end
            break
        end
        todo = again
    end
    return failed
end

-- Prepares `sql` on the shared connection c once, however many tasks want it at the same
-- time: the first prepares, the others wait for it. -> true | nil, err
local function prepare_shared(pool, c, cache, sql)
    local pending = cache.pending
    if not pending then
        pending = {}
        cache.pending = pending
    end
    local w = pending[sql]
    if w then
        w[#w + 1], w[#w + 2] = ticket()
        local ok, err = park(pool.timeout >= 0 and pool.timeout or nil)
        if not ok then return nil, format("timeout: query ran longer than %g s", pool.timeout) end
        if cache.map[sql] then return true end
        return nil, err or "pg: prepare failed"
    end
    w = {}
    pending[sql] = w
    local ok, failed, err = pcall(prepare, pool, c, { sql })
    pending[sql] = nil
    if ok and failed then err = failed[sql] end
    for i = 1, #w, 2 do wake(w[i], w[i + 1], err) end
    if not ok then error(failed, 0) end -- cancelled
    if not failed then return nil, err end
    if err then return nil, err end
    return true
end

-- Runs one statement on c: rows | nil, err. `retry`: prepare again once when the
-- statement's result type changed.
local function exec_stmt(pool, c, fname, sql, retry, n, ...)
    local cache = cache_of(pool, c)
    local st = cache.map[sql]
    local shared = pool.mux and pool.mux.c == c
    if not st then
        if shared then
            local ok, err = prepare_shared(pool, c, cache, sql)
            if not ok then return nil, err end
        else
            local failed, err = prepare(pool, c, { sql })
            if not failed then return nil, err end
            if failed[sql] then return nil, failed[sql] end
        end
        st = cache.map[sql]
        if not st then return nil, "pg: statement evicted" end
    end
    -- levels: encode, exec_stmt, run, db:query or tx:query, the caller
    local params, bin = encode(fname, 5, st.types, n, ...)
    if not params then return nil, bin end
    local res, err = c:batch({ { "exec", st.name, params, bin } }, pool.timeout, null, json_decode)
    if not res then return nil, err end
    local r = res[1]
    if type(r) == "string" then
        -- The table changed under the cached statement (ALTER TABLE, a column added to a
        -- `select *`): forget it; outside a transaction, prepare it again and retry once.
        if r:find("^pg: 0A000 cached plan must not change result type") and cache.map[sql] == st then
            cache.map[sql] = nil
            cache.stale[#cache.stale + 1] = st.name
            local _, tx = c:status()
            if (tx == "idle" or shared) and retry then
                return exec_stmt(pool, c, fname, sql, false, n, ...)
            end
        end
        return nil, r
    end
    return r
end

local function run(pool, c, fname, sql, n, ...)
    local rows, err = exec_stmt(pool, c, fname, sql, true, n, ...) -- not a tail call: see encode's level
    return rows, err
end

-- ---------------------------------------------------------------- the shared connection

-- Statements that change the state of their connection, or need a transaction of their own,
-- would change it for every task on the shared connection: they take a pooled one. Keyed by
-- the first word of the SQL; SQL that starts with a comment goes there too.
local DEDICATED = {}
for w in ([[begin start commit end rollback abort savepoint release prepare set reset listen
    unlisten notify declare fetch move close lock discard copy call load]]):gmatch("%S+") do
    DEDICATED[w] = true
end
local routes, nroutes = {}, 0 -- sql -> true (dedicated) | false (shared), a bounded memo

local function dedicated(sql)
    local d = routes[sql]
    if d == nil then
        local word = sql:match("^%s*(%a+)")
        d = not word or DEDICATED[lower(word)] == true
        if nroutes >= 1000 then routes, nroutes = {}, 0 end
        routes[sql], nroutes = d, nroutes + 1
    end
    return d
end

-- The shared connection of `pool`, opened by the first task that needs it (the others wait
-- for that one) -> c | nil, err. A connection the server closed while idle is noticed (the
-- probe reads the socket) and replaced.
local shared_conn
shared_conn = function(pool)
    local m = pool.mux
    local c = m.c
    if c then
        if c:status(true) ~= "closed" then return c end
        m.c = nil
        pool.stmts[c] = nil
    end
    if pool.closed then return connpool.closed_err() end
    local budget = pool.opts.connect_timeout or 10
    if m.opening then
        local w = m.waiters
        w[#w + 1], w[#w + 2] = ticket()
        local ok, c2, err = park(budget)
        if not ok then return nil, format("timeout: connecting to the database took over %g s", budget) end
        if c2 == nil and err == nil then return shared_conn(pool) end -- the opener was cancelled
        return c2, err
    end
    m.opening = true
    local ok, err
    ok, c, err = pcall(open, pool)
    m.opening = false
    local w = m.waiters
    m.waiters = {}
    if ok and c then
        c:share()
        c:idle(pool.idle_timeout)
        if pool.closed then
            c:close()
            c, err = connpool.closed_err()
        else
            m.c = c
        end
    end
    for i = 1, #w, 2 do
        if ok then wake(w[i], w[i + 1], c or false, err) else wake(w[i], w[i + 1]) end
    end
    if not ok then error(c, 0) end -- cancelled while connecting: a waiter opens it instead
    return c, err
end

-- Closes the shared connection once nothing is in flight on it (db:close).
local function close_shared(pool)
    local c = pool.mux and pool.mux.c
    if c and c:status() ~= "busy" then
        pool.mux.c = nil
        c:close()
    end
end

-- ---------------------------------------------------------------- the pool

local Pool = {}
Pool.__index = Pool
Pool.__name = "loom.pg"

-- loom.pg(url | opts) -> pool. Lazy: nothing connects before the first query.
function M.new(spec)
    local o
    if type(spec) == "string" then
        o = parse_url(spec)
        check_options(o)
    elseif type(spec) == "table" then
        o = {}
        for k, v in pairs(spec) do o[k] = v end
        check_options(o)
    else
        args.fail("pg", 1, "URL string or options table expected, got " .. type(spec), 1)
    end
    get_json()
    return setmetatable(connpool.init({
        opts = o,
        idle_timeout = o.idle_timeout or 60,
        timeout = o.timeout or -1,
        stmts = setmetatable({}, { __mode = "k" }),
        -- the shared connection (automatic pipelining): c, and the tasks waiting for it to open
        mux = o.auto_pipeline == true and { c = nil, opening = false, waiters = {} },
    }, o.max or 10), Pool)
end

local function check_pool(self, fname)
    if getmetatable(self) ~= Pool then
        args.fail(fname, 1, "loom.pg expected (use db:" .. fname .. ")", 2)
    end
end

-- db:query(sql, ...) -> rows | nil, err
function Pool:query(sql, ...)
    check_pool(self, "query")
    args.check(sql, "string", "query", 1)
    if find(sql, "\0", 1, true) then args.fail("query", 1, "SQL text with a NUL byte", 1) end
    if self.mux and not dedicated(sql) then
        local c, err = shared_conn(self)
        if not c then return nil, err end
        local rows
        rows, err = run(self, c, "query", sql, select("#", ...), ...)
        if self.closed then close_shared(self) end
        return rows, err
    end
    local c, err = acquire(self)
    if not c then return nil, err end
    local _ <close> = setmetatable({ self, c }, guard_mt)
    return run(self, c, "query", sql, select("#", ...), ...)
end

-- db:pipeline{ {sql, ...}, ... } -> {rows | {err = "pg: ..."}, ...} | nil, err
-- One round trip once the statements are prepared on the connection (a first use adds
-- one for all the new ones). The commands form one implicit transaction, as libpq's
-- pipeline mode makes them: when one fails, those before it are rolled back and those
-- after it report "pg: aborted: ...". Parameters: as many as the statement declares,
-- taken from the entry by index (use loom.null for NULL there).
function Pool:pipeline(list)
    check_pool(self, "pipeline")
    args.check(list, "table", "pipeline", 1)
    local sqls = {}
    for i, q in ipairs(list) do
        if type(q) ~= "table" or type(q[1]) ~= "string" then
            args.fail("pipeline", 1, "entry " .. i .. ": {sql, ...} expected", 1)
        end
        if find(q[1], "\0", 1, true) then
            args.fail("pipeline", 1, "entry " .. i .. ": SQL text with a NUL byte", 1)
        end
        sqls[i] = q[1]
    end
    if #sqls == 0 then return {} end
    local c, err = acquire(self)
    if not c then return nil, err end
    local _ <close> = setmetatable({ self, c }, guard_mt)
    local failed
    failed, err = prepare(self, c, sqls)
    if not failed then return nil, err end
    local cache = cache_of(self, c)
    local ops, where, out = {}, {}, {}
    for i, q in ipairs(list) do
        local f = failed[q[1]]
        local st = not f and cache.map[q[1]]
        if st then
            if #q - 1 > #st.types then
                args.fail("pipeline", 1, format("entry %d: the statement takes %d parameter(s), got %d",
                    i, #st.types, #q - 1), 1)
            end
            local params, bin = encode("pipeline", 3, st.types, #st.types,
                unpack(q, 2, #st.types + 1))
            if not params then return nil, bin .. " in entry " .. i end
            ops[#ops + 1] = { "exec", st.name, params, bin }
            where[#ops] = i
        else
            out[i] = { err = f or "pg: statement evicted" }
        end
    end
    if #ops > 0 then
        local res
        res, err = c:batch(ops, self.timeout, null, json_decode)
        if not res then return nil, err end
        for k, r in ipairs(res) do
            out[where[k]] = type(r) == "string" and { err = r } or r
        end
    end
    return out
end

-- The transaction object: tx:query on the transaction's own connection.
local Tx = {}
Tx.__index = Tx
Tx.__name = "loom.pg.tx"

function Tx:query(sql, ...)
    if getmetatable(self) ~= Tx then args.fail("query", 1, "loom.pg.tx expected", 1) end
    args.check(sql, "string", "query", 1)
    if find(sql, "\0", 1, true) then args.fail("query", 1, "SQL text with a NUL byte", 1) end
    if not self.conn then error("query: the transaction is over", 2) end
    local rows, err = run(self.pool, self.conn, "query", sql, select("#", ...), ...)
    return rows, err
end

-- Ends a transaction that must not commit. A connection still busy (a query cancelled
-- mid-way) is closed instead: the server rolls back when it goes.
local function rollback(pool, c)
    if c:status() ~= "idle" then
        c:close()
        return
    end
    local ok = run(pool, c, "transaction", "ROLLBACK", 0)
    if not ok then c:close() end
end

-- db:transaction(fn) -> fn's results | nil, err. BEGIN, fn(tx), COMMIT. When fn raises
-- (a cancellation too) the transaction rolls back and the error goes on; when fn returns
-- nil, err it rolls back and returns nil, err.
function Pool:transaction(fn)
    check_pool(self, "transaction")
    args.check(fn, "function", "transaction", 1)
    local c, err = acquire(self)
    if not c then return nil, err end
    local _ <close> = setmetatable({ self, c }, guard_mt)
    local ok
    ok, err = run(self, c, "transaction", "BEGIN", 0)
    if not ok then return nil, err end
    local tx = setmetatable({ pool = self, conn = c }, Tx)
    local r = pack(pcall(fn, tx))
    tx.conn = false
    if not r[1] then
        rollback(self, c)
        error(r[2], 0)
    end
    if r[2] == nil and r.n >= 3 and r[3] ~= nil then
        rollback(self, c)
        return nil, r[3]
    end
    local _, txs = c:status()
    if txs == "inerror" then -- fn swallowed a failed query: COMMIT would roll back quietly
        rollback(self, c)
        return nil, "pg: 25P02 the transaction failed and was rolled back"
    end
    ok, err = run(self, c, "transaction", "COMMIT", 0)
    if not ok then return nil, err end
    return unpack(r, 2, r.n)
end

-- LISTEN ---------------------------------------------------------------------------------

local Listener = {}
Listener.__index = Listener
Listener.__name = "loom.pg.listener"

-- l:close(): UNLISTEN by closing the dedicated connection. A loop over db:listen closes it
-- when it ends (break, error): the listener is the loop's to-be-closed value.
function Listener:close()
    if not self.closed then
        self.closed = true
        self.conn:close()
    end
end
Listener.__close = Listener.close
Listener.__gc = Listener.close

-- l:receive([timeout]) -> note | nil, err
function Listener:receive(timeout)
    if self.closed then return nil, "closed: the listener is closed" end
    return self.conn:notification(timeout)
end

-- for note in db:listen(channel) do ... end: notifications on a connection of its own
-- (not counted in max). note.channel, note.payload, note.pid. Returns the iterator, the
-- listener (l:receive(timeout), l:close()) and, for the generic for, the listener again
-- as its to-be-closed value. Failures (connect, the connection lost) raise.
function Pool:listen(channel)
    check_pool(self, "listen")
    args.check(channel, "string", "listen", 1)
    if self.closed then error("closed: the pool is closed", 2) end
    local c, err = open(self)
    if not c then error(err, 2) end
    local ok, res
    ok, res, err = pcall(c.batch, c, { { "query", "LISTEN " .. c:escape_identifier(channel) } },
        self.timeout, null, json_decode)
    if not ok or not res or type(res[1]) == "string" then
        c:close() -- cancelled or failed: not left open until collected
        if not ok then error(res, 0) end
        error(err or res[1], 2)
    end
    local l = setmetatable({ conn = c, closed = false }, Listener)
    local function iter()
        if l.closed then return nil end
        local note, e = c:notification()
        if note then return note end
        if l.closed then return nil end
        error(e, 0)
    end
    return iter, l, nil, l
end

-- db:close(): closes the idle connections now and those in use when they come back;
-- queries after it (and waiters) get "closed: the pool is closed".
function Pool:close()
    check_pool(self, "close")
    conns.close(self)
    close_shared(self)
end

function Pool:__tostring()
    return format("loom.pg (%d open, %d idle)", self.nopen, #self.idle)
end

setmetatable(M, { __call = function(_, spec) return M.new(spec) end })

return M
