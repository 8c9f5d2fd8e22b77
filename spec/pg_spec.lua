-- loom.pg against a real PostgreSQL (spec/support/pg_server.sh starts one per run of this
-- file: initdb into a temp dir, postgres on a free loopback port; the spec fails with the
-- reason when it cannot). Types both ways, NULL, bytea, floats, json, affected counts,
-- errors and the connection afterwards, the pool's bound and order, transactions,
-- cancellation and timeouts on the server, pipelines, LISTEN/NOTIFY, a backend killed
-- mid-query, connect failures and password auth. Where a case is about the pool (its bound,
-- its order, a cancel sent to the server) it sets auto_pipeline = false; the shared
-- connection of automatic pipelining has spec/pg_auto_spec.lua.
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"
local pg_server = require "support.pg_server"
local timing = require "support.timing"

local srv

-- Polls `check` (a function returning truthy when done) every 20 ms for at most `secs`
-- seconds: for what PostgreSQL does on its own time (a backend going away).
local function eventually(check, secs)
    local deadline = loom.now() + (secs or 10)
    local v = check()
    while not v and loom.now() < deadline do
        loom.sleep(0.02)
        v = check()
    end
    return v
end

-- Backends of the test database with this application_name, as seen from `db`.
local function backends(db, app)
    local rows = assert(db:query(
        "select count(*)::int as n from pg_stat_activity where datname = 'loom' and application_name = $1",
        app))
    return rows[1].n
end

describe("loom.pg", function()
    setup(function()
        srv = pg_server.start()
    end)
    teardown(function()
        pg_server.stop(srv)
    end)

    it("is lazy: no connection before the first query, none kept alive after", function()
        run(function()
            local db = loom.pg(srv:opts { application_name = "lazy" })
            local probe = loom.pg(srv:opts())
            assert.equal(0, backends(probe, "lazy"))
            assert.same({ { one = 1 } }, (assert(db:query("select 1 as one"))))
            assert.equal(1, backends(probe, "lazy"))
            assert.equal(0, core.stats().alive) -- idle pooled connections: unreferenced
            db:close()
            probe:close()
        end)
    end)

    it("accepts a postgresql:// URL", function()
        run(function()
            local db = loom.pg(srv:url())
            local rows = assert(db:query("select current_user as u, current_database() as d"))
            assert.same({ u = "loom", d = "loom" }, rows[1])
            db:close()
        end)
    end)

    it("converts result types", function()
        run(function()
            local db = loom.pg(srv:opts())
            local r = assert(db:query([[select 1::int2 as i2, 2::int4 as i4,
                9007199254740993::int8 as i8, 1.5::float4 as f4, 0.1::float8 as f8,
                true as t, false as f, 'héllo'::text as txt, 'v'::varchar as vc,
                '\x00ff41'::bytea as b, '{"a":[1,2,{"b":null}]}'::json as j,
                '{"k":"v"}'::jsonb as jb, 12.30::numeric as n,
                '2024-01-02 03:04:05'::timestamp as ts, '2024-01-02'::date as d,
                null::int as nul, 'a1b2c3d4-0000-0000-0000-000000000000'::uuid as u]]))[1]
            assert.equal(1, r.i2)
            assert.equal("integer", math.type(r.i2))
            assert.equal(2, r.i4)
            assert.equal(9007199254740993, r.i8)
            assert.equal("integer", math.type(r.i8))
            assert.equal(1.5, r.f4)
            assert.equal(0.1, r.f8)
            assert.equal("float", math.type(r.f8))
            assert.is_true(r.t)
            assert.is_false(r.f)
            assert.equal("héllo", r.txt)
            assert.equal("v", r.vc)
            assert.equal("\0\255A", r.b)
            assert.same({ a = { 1, 2, { b = loom.null } } }, r.j)
            assert.same({ k = "v" }, r.jb)
            assert.equal("12.30", r.n)
            assert.equal("2024-01-02 03:04:05", r.ts)
            assert.equal("2024-01-02", r.d)
            assert.equal(loom.null, r.nul)
            assert.equal("a1b2c3d4-0000-0000-0000-000000000000", r.u)
            db:close()
        end)
    end)

    it("sends parameters apart from the SQL, typed as the server says", function()
        run(function()
            local db = loom.pg(srv:opts())
            local r = assert(db:query([[select $1::int8 as i, $2::float8 as f, $3::bool as b,
                $4::text as t, $5::jsonb as j, $6::numeric as n, $7::int as nul, $8::text as nul2,
                $9::json as js]], math.maxinteger, 1 / 3, true, "it's \"x\"; drop table t; --",
                { list = { 1, 2 } }, "123.456", loom.null, nil, '{"raw":true}'))[1]
            assert.equal(math.maxinteger, r.i)
            assert.equal(1 / 3, r.f)
            assert.is_true(r.b)
            assert.equal("it's \"x\"; drop table t; --", r.t)
            assert.same({ list = { 1, 2 } }, r.j)
            assert.equal("123.456", r.n)
            assert.equal(loom.null, r.nul)
            assert.equal(loom.null, r.nul2)
            assert.same({ raw = true }, r.js)
            db:close()
        end)
    end)

    it("refuses a text parameter with a NUL byte instead of sending it cut", function()
        -- libpq sends text parameters as C strings: "a\0b" would arrive as "a"
        run(function()
            local db = loom.pg(srv:opts { max = 1 })
            assert(db:query("create table if not exists nul1 (t text)"))
            assert(db:query("truncate nul1"))
            local rows, err = db:query("insert into nul1 values ($1)", "a\0b")
            assert.is_nil(rows)
            assert.equal('pg: 22021 invalid byte sequence for encoding "UTF8": 0x00 (parameter $1; send bytes as bytea)', err)
            local res
            res, err = db:pipeline { { "select 1 as one" }, { "insert into nul1 values ($1)", "x\0" } }
            assert.is_nil(res)
            assert.matches("^pg: 22021 .* in entry 2$", err)
            assert.same({}, (assert(db:query("select t from nul1"))))  -- nothing was sent
            -- bytea takes the byte as it is
            assert.equal("a\0b", assert(db:query("select $1::bytea as b", "a\0b"))[1].b)
            db:close()
        end)
    end)

    it("round-trips floats exactly, and special values", function()
        run(function()
            local db = loom.pg(srv:opts())
            for _, v in ipairs { 0.1, 1 / 3, 2 ^ -1074, 1.7976931348623157e308, -123.456e-200,
                math.pi, math.huge, -math.huge } do
                local r = assert(db:query("select $1::float8 as v", v))
                assert.equal(v, r[1].v)
            end
            local r = assert(db:query("select $1::float8 as v", 0 / 0))
            assert.is_true(r[1].v ~= r[1].v)
            db:close()
        end)
    end)

    it("sends and receives bytea byte-exact, every byte value", function()
        run(function()
            local db = loom.pg(srv:opts())
            local all = {}
            for i = 0, 255 do all[#all + 1] = string.char(i) end
            all = table.concat(all)
            local r = assert(db:query("select $1::bytea as b, length($1::bytea) as n", all))
            assert.equal(256, r[1].n)
            assert.equal(all, r[1].b)
            assert.equal("", assert(db:query("select $1::bytea as b", ""))[1].b)
            -- bigger than the socket buffers both ways: PQflush returns 1 for a while
            local big = all:rep(32 * 1024) -- 8 MiB
            r = assert(db:query("select $1::bytea as b, md5($1::bytea) as h", big))
            assert.equal(#big, #r[1].b)
            assert.is_true(r[1].b == big)
            db:close()
        end)
    end)

    it("reports affected rows, and errors with SQLSTATE on a reusable connection", function()
        run(function()
            local db = loom.pg(srv:opts { max = 1 })
            assert(db:query("create table if not exists items (id int primary key, name text)"))
            assert(db:query("truncate items"))
            local pid = assert(db:query("select pg_backend_pid() as p"))[1].p
            local r = assert(db:query(
                "insert into items values (1, 'a'), (2, 'b'), ($1, $2)", 3, "c"))
            assert.equal(3, r.affected)
            assert.equal(2, assert(db:query("update items set name = 'z' where id < 3")).affected)
            local rows, err = db:query("insert into items values (1, 'dup')")
            assert.is_nil(rows)
            assert.matches("^pg: 23505 duplicate key value violates unique constraint", err)
            rows, err = db:query("selec 1")
            assert.is_nil(rows)
            assert.matches("^pg: 42601 syntax error", err)
            -- the same (only) connection serves the next query
            assert.equal(pid, assert(db:query("select pg_backend_pid() as p"))[1].p)
            assert.equal(1, assert(db:query("delete from items where id = $1", 3)).affected)
            assert.same({ { id = 1, name = "z" }, { id = 2, name = "z" } },
                (assert(db:query("select id, name from items order by id"))))
            db:close()
        end)
    end)

    it("prepares a statement again when its table changed under it", function()
        run(function()
            local db = loom.pg(srv:opts { max = 1 })
            assert(db:query("drop table if exists shape"))
            assert(db:query("create table shape (a int)"))
            assert(db:query("insert into shape values (1)"))
            assert.same({ { a = 1 } }, (assert(db:query("select * from shape"))))
            assert(db:query("alter table shape add column b text default 'x'"))
            assert.same({ { a = 1, b = "x" } }, (assert(db:query("select * from shape"))))
            db:close()
        end)
    end)

    it("waits for a free connection at most connect_timeout", function()
        run(function()
            -- connect_timeout also bounds the holder's own connect: 1 s leaves a loaded
            -- sanitizer build room to connect, and the wait starts once it holds the connection
            local db = loom.pg(srv:opts { max = 1, connect_timeout = 1, auto_pipeline = false })
            local gate, holding = loom.event(), loom.event()
            local holder = loom.spawn(function()
                return db:transaction(function(tx)
                    assert(tx:query("select 1"))
                    holding:set()
                    gate:wait()
                    return "held"
                end)
            end)
            holding:wait()
            local t0 = loom.now()
            local rows, err = db:query("select 1")
            assert.is_nil(rows)
            assert.matches("^timeout: waiting for a free connection %(max 1%)", err)
            assert.is_true(loom.now() - t0 >= 0.95)
            gate:set()
            assert.same({ true, "held" }, { holder:join() })
            assert(db:query("select 1"))
            db:close()
        end)
    end)

    it("keeps at most 256 prepared statements per connection", function()
        run(function()
            local db = loom.pg(srv:opts { max = 1 })
            for i = 1, 300 do
                local r = assert(db:query("select $1::int + " .. i .. " as v", 1))
                assert.equal(i + 1, r[1].v)
            end
            local n = assert(db:query("select count(*)::int as n from pg_prepared_statements"))
            assert.is_true(n[1].n <= 256 and n[1].n >= 200)
            -- an evicted statement is prepared again when it comes back
            assert.equal(2, assert(db:query("select $1::int + 1 as v", 1))[1].v)
            db:close()
        end, { timeout = 30 })
    end)

    it("raises on misuse, naming the argument", function()
        run(function()
            assert.error_matches(function() loom.pg(42) end, "bad argument #1 to 'pg'")
            assert.error_matches(function() loom.pg { hots = "x" } end, "unknown option 'hots'")
            assert.error_matches(function() loom.pg { max = 0 } end, "option 'max'")
            assert.error_matches(function() loom.pg("mysql://x") end, "postgresql:// URL")
            local db = loom.pg(srv:opts())
            assert.error_matches(function() db:query(1) end, "bad argument #1 to 'query'")
            assert.error_matches(function() db:query("select 1\0; drop table t") end,
                "bad argument #1 to 'query' %(SQL text with a NUL byte%)")
            assert.error_matches(function() db:pipeline { { "select 1\0" } } end,
                "entry 1: SQL text with a NUL byte")
            assert.error_matches(function() db:query("select $1::int", {}) end,
                "cannot send a table")
            assert.error_matches(function() db:query("select $1::int, $2::int", 1) end,
                "takes 2 parameter")
            assert.error_matches(function() db:pipeline { { "select $1::int", 1, 2 } } end,
                "entry 1: the statement takes 1 parameter%(s%), got 2")
            -- the error points at the caller's line
            local ok, e = pcall(function() db:query("select $1::int", {}) end)
            assert.is_false(ok)
            assert.matches("pg_spec.lua:%d+: bad argument #2 to 'query'", e)
            ok, e = pcall(db.transaction, db, function(tx) tx:query("select $1::int", {}) end)
            assert.is_false(ok)
            assert.matches("pg_spec.lua:%d+: bad argument #2 to 'query'", e)
            db:close()
            assert.equal(loom.json.null, loom.null)
        end)
    end)

    it("never opens more than max connections; waiters are served in order", function()
        run(function()
            local db = loom.pg(srv:opts { max = 3, application_name = "maxed", auto_pipeline = false })
            local probe = loom.pg(srv:opts())
            local seen, tasks = 0, {}
            for i = 1, 8 do
                tasks[i] = loom.spawn(function()
                    local r = assert(db:query([[select pg_sleep(0.05), (select count(*)::int
                        from pg_stat_activity where application_name = 'maxed') as n]]))
                    if r[1].n > seen then seen = r[1].n end
                end)
            end
            for _, t in ipairs(tasks) do assert(t:join()) end
            assert.is_true(seen >= 1 and seen <= 3)
            assert.is_true(backends(probe, "maxed") <= 3)
            db:close()

            -- order: one connection held in a transaction; five waiters queue behind it
            local one = loom.pg(srv:opts { max = 1, auto_pipeline = false })
            local order, gate = {}, loom.event()
            local holder = loom.spawn(function()
                return one:transaction(function(tx)
                    assert(tx:query("select 1"))
                    gate:wait()
                    return "held"
                end)
            end)
            loom.sleep(0)
            local waiters = {}
            for i = 1, 5 do
                waiters[i] = loom.spawn(function()
                    assert(one:query("select $1::int as i", i))
                    order[#order + 1] = i
                end)
                loom.sleep(0) -- each is queued before the next starts
            end
            gate:set()
            assert.same({ true, "held" }, { holder:join() })
            for _, t in ipairs(waiters) do assert(t:join()) end
            assert.same({ 1, 2, 3, 4, 5 }, order)
            one:close()
            probe:close()
        end)
    end)

    it("commits a transaction and returns fn's results", function()
        run(function()
            local db = loom.pg(srv:opts())
            assert(db:query("create table if not exists tx (v int)"))
            assert(db:query("truncate tx"))
            local a, b = db:transaction(function(tx)
                assert(tx:query("insert into tx values (1)"))
                assert(tx:query("insert into tx values ($1)", 2))
                return "done", 2
            end)
            assert.same({ "done", 2 }, { a, b })
            assert.same({ { v = 1 }, { v = 2 } }, (assert(db:query("select v from tx order by v"))))
            db:close()
        end)
    end)

    it("rolls back when fn raises, returns nil, err, or a query failed", function()
        run(function()
            local db = loom.pg(srv:opts { max = 1 })
            assert(db:query("create table if not exists tx2 (v int primary key)"))
            assert(db:query("truncate tx2"))
            local ok, err = pcall(db.transaction, db, function(tx)
                assert(tx:query("insert into tx2 values (1)"))
                error("boom", 0)
            end)
            assert.same({ false, "boom" }, { ok, err })
            assert.same({ nil, "nope" }, { db:transaction(function(tx)
                assert(tx:query("insert into tx2 values (2)"))
                return nil, "nope"
            end) })
            local r, e = db:transaction(function(tx)
                assert(tx:query("insert into tx2 values (3)"))
                tx:query("insert into tx2 values (3)") -- fails; fn ignores it
                return "ignored"
            end)
            assert.is_nil(r)
            assert.matches("^pg: 25P02", e)
            assert.same({}, (assert(db:query("select v from tx2"))))
            -- the connection came back out of its transaction
            assert(db:query("insert into tx2 values (9)"))
            assert.same({ { v = 9 } }, (assert(db:query("select v from tx2"))))
            db:close()
        end)
    end)

    it("rolls back a transaction whose task is cancelled", function()
        run(function()
            local db = loom.pg(srv:opts { max = 1, application_name = "txcancel" })
            local probe = loom.pg(srv:opts())
            assert(db:query("create table if not exists tx3 (v int)"))
            assert(db:query("truncate tx3"))
            local t = loom.spawn(function()
                return db:transaction(function(tx)
                    assert(tx:query("insert into tx3 values (1)"))
                    tx:query("select pg_sleep(60)") -- far past the hang guard
                    return "not reached"
                end)
            end)
            assert.is_true(eventually(function()
                local r = assert(probe:query([[select count(*)::int as n from pg_stat_activity
                    where application_name = 'txcancel' and query like '%pg_sleep(60)%'
                    and state = 'active']]))
                return r[1].n == 1
            end))
            local t0 = loom.now()
            t:cancel()
            local ok, err = t:join()
            assert.is_false(ok)
            assert.matches("cancelled", err)
            assert.same({}, (assert(db:query("select v from tx3"))))
            assert.is_true(loom.now() - t0 < timing.guard(1)) -- not the 60 s of pg_sleep
            db:close()
            probe:close()
        end)
    end)

    it("cancels a query on the server when the task is cancelled or times out", function()
        run(function()
            local db = loom.pg(srv:opts { max = 1, application_name = "cancelme", auto_pipeline = false })
            local probe = loom.pg(srv:opts())
            local pid = assert(db:query("select pg_backend_pid() as p"))[1].p
            local t0 = loom.now()
            -- pg_sleep(60): far past the hang guards, so a query left running cannot pass
            assert.same({ nil, "timeout" }, { loom.timeout(0.2, function()
                return db:query("select pg_sleep(60)")
            end) })
            -- the next query gets the same connection, clean, once the cancel is through
            local r = assert(db:query("select pg_backend_pid() as p, 1 as one"))
            assert.same({ p = pid, one = 1 }, r[1])
            assert.is_true(loom.now() - t0 < timing.guard(1))
            local active = assert(probe:query([[select count(*)::int as n from pg_stat_activity
                where application_name = 'cancelme' and query like '%pg_sleep(60)%'
                and state = 'active']]))
            assert.equal(0, active[1].n)

            -- the per-query timeout option
            local slow = loom.pg(srv:opts { max = 1, timeout = 0.2, auto_pipeline = false })
            local rows, err = slow:query("select pg_sleep(60)")
            assert.is_nil(rows)
            assert.matches("^timeout: ", err)
            assert.same({ { one = 1 } }, (assert(slow:query("select 1 as one"))))
            assert.is_true(loom.now() - t0 < 2 * timing.guard(1))
            slow:close()
            db:close()
            probe:close()
        end, { timeout = 30 })
    end)

    it("hands a cancelled query's connection out again only once the cancel is through", function()
        -- A cancel request reaches the backend through the postmaster, whenever it gets to
        -- it. If the connection went back to the pool as soon as the cancelled query ended
        -- (on its own), a late cancel would hit the next query on it. The postmaster is
        -- stopped (SIGSTOP) so that the cancel stays in flight while the first query ends.
        run(function()
            local db = loom.pg(srv:opts { max = 1, application_name = "latecancel", auto_pipeline = false })
            local probe = loom.pg(srv:opts { max = 1 })
            assert(db:query("select 1"))
            assert(probe:query("select 1")) -- both connected before the postmaster stops
            local function active(pattern)
                return assert(probe:query([[select count(*)::int as n from pg_stat_activity
                    where application_name = 'latecancel' and state = 'active'
                    and query like $1]], pattern))[1].n > 0
            end
            assert(os.execute("kill -STOP " .. srv.pid))
            local stopped = true
            local ok, err = pcall(function()
                assert.same({ nil, "timeout" }, { loom.timeout(0.1, function()
                    return db:query("select pg_sleep(0.4)")
                end) })
                -- the next query waits for the connection (max 1)
                local t = loom.spawn(function() return db:query("select pg_sleep(0.5), 1 as one") end)
                -- the first query ends on its own: its cancel is still at the postmaster
                assert.is_true(eventually(function() return not active("%pg_sleep(0.4)%") end))
                -- before the fix the second query now ran (and the cancel then hit it);
                -- now it waits for the cancel: give it the time a round trip takes, a few times
                eventually(function() return active("%pg_sleep(0.5)%") end, 0.5)
                assert(os.execute("kill -CONT " .. srv.pid))
                stopped = false
                local tok, rows, qerr = t:join()
                assert.is_true(tok)
                assert.is_nil(qerr)
                assert.same({ { pg_sleep = "", one = 1 } }, rows)
            end)
            if stopped then os.execute("kill -CONT " .. srv.pid) end
            assert(ok, err)
            db:close()
            probe:close()
        end, { timeout = 30 })
    end)

    it("runs a pipeline in one round trip: an array of results", function()
        run(function()
            local db = loom.pg(srv:opts())
            local res = assert(db:pipeline {
                { "select 1 as a" },
                { "select $1::int as b", 2 },
                { "select $1::text || $2::text as c", "x", "y" },
            })
            assert.same({ { { a = 1 } }, { { b = 2 } }, { { c = "xy" } } }, res)
            -- a failing entry: {err = ...}; the others of the same pipeline are aborted
            res = assert(db:pipeline {
                { "select 1 as a" },
                { "select 1 / $1::int as b", 0 },
                { "select 3 as c" },
                { "selec 4" },
            })
            assert.matches("^pg: 22012 division by zero", res[2].err)
            assert.matches("^pg: aborted", res[3].err)
            assert.matches("^pg: 42601", res[4].err)
            assert.same({}, db:pipeline {})
            -- cached statements: the same pipeline again
            res = assert(db:pipeline { { "select $1::int as b", 5 }, { "select 1 as a" } })
            assert.same({ { { b = 5 } }, { { a = 1 } } }, res)
            db:close()
        end)
    end)

    it("delivers notifications to `for note in db:listen(ch)`, and break releases it", function()
        run(function()
            local db = loom.pg(srv:opts { application_name = "listener" })
            local probe = loom.pg(srv:opts())
            local got, ready = {}, loom.event()
            local t = loom.spawn(function()
                local first = true
                for note in db:listen("my chan") do
                    got[#got + 1] = note.channel .. "=" .. note.payload
                    if #got == 3 then break end
                    if first then first = false end
                end
                return "out"
            end)
            -- LISTEN done (not only connected): its backend is idle after it
            assert.is_true(eventually(function()
                return assert(probe:query([[select count(*)::int as n from pg_stat_activity
                    where application_name = 'listener' and query like 'LISTEN%'
                    and state = 'idle']]))[1].n == 1
            end))
            ready:set()
            for i = 1, 3 do
                assert(probe:query("select pg_notify($1, $2)", "my chan", "m" .. i))
            end
            assert.same({ true, "out" }, { t:join() })
            assert.same({ "my chan=m1", "my chan=m2", "my chan=m3" }, got)
            -- the listener's connection went with the loop
            assert.is_true(eventually(function() return backends(probe, "listener") == 0 end))
            -- l:close() from elsewhere ends a waiting loop
            local iter, l = db:listen("other")
            local none, terr = l:receive(0.05)
            assert.is_nil(none)
            assert.matches("^timeout: ", terr)
            local w = loom.spawn(function()
                local n = 0
                for _ in iter, l do n = n + 1 end
                return n
            end)
            loom.sleep(0)
            l:close()
            assert.same({ true, 0 }, { w:join() })
            db:close()
            probe:close()
        end)
    end)

    it("gives closed: when the backend dies mid-query, then recovers", function()
        run(function()
            local db = loom.pg(srv:opts { max = 1, application_name = "victim" })
            local probe = loom.pg(srv:opts())
            local pid = assert(db:query("select pg_backend_pid() as p"))[1].p
            local t = loom.spawn(function() return db:query("select pg_sleep(10)") end)
            assert.is_true(eventually(function()
                local r = assert(probe:query([[select count(*)::int as n from pg_stat_activity
                    where pid = $1 and query like '%pg_sleep(10)%']], pid))
                return r[1].n == 1
            end))
            assert(probe:query("select pg_terminate_backend($1)", pid))
            local ok, rows, err = t:join()
            assert.is_true(ok)
            assert.is_nil(rows)
            assert.matches("^closed: ", err)
            assert.is_nil(err:find("\n", 1, true)) -- libpq's lines joined
            local r = assert(db:query("select pg_backend_pid() as p"))
            assert.is_true(r[1].p ~= pid)
            db:close()
            probe:close()
        end)
    end)

    it("replaces an idle connection the server closed", function()
        run(function()
            local db = loom.pg(srv:opts { max = 1 })
            local probe = loom.pg(srv:opts())
            local pid = assert(db:query("select pg_backend_pid() as p"))[1].p
            assert(probe:query("select pg_terminate_backend($1)", pid))
            assert.is_true(eventually(function()
                return assert(probe:query("select count(*)::int as n from pg_stat_activity where pid = $1",
                    pid))[1].n == 0
            end))
            -- the backend's socket may close a moment after it left pg_stat_activity: the
            -- pool may or may not have seen it go; a query meanwhile fails with closed:
            local r, err = db:query("select pg_backend_pid() as p")
            if not r then
                assert.matches("^closed: server closed the connection unexpectedly", err)
                r = assert(db:query("select pg_backend_pid() as p"))
            end
            assert.is_true(r[1].p ~= pid)
            db:close()
            probe:close()
        end)
    end)

    it("tries each address in turn: a new socket during the connect", function()
        run(function()
            -- 127.0.0.2 is loopback too, where nothing listens: refused, then 127.0.0.1
            local c = assert(core.pg_connect({ host = "db,db", hostaddr = "127.0.0.2,127.0.0.1",
                port = tostring(srv.port), user = srv.user, password = srv.password,
                dbname = srv.database, gssencmode = "disable" }, 10))
            local res = assert(c:batch({ { "query", "select inet_server_addr()::text as a" } }, -1,
                loom.null))
            assert.equal("127.0.0.1/32", res[1][1].a)
            c:close()
        end)
    end)

    it("fails with connect: on a closed port and on a wrong password", function()
        run(function()
            -- a port nothing listens on: bind one and close it
            local l = assert(loom.listen { host = "127.0.0.1", port = 0, handler = function() end })
            local port = l.port
            l:close()
            local db = loom.pg(srv:opts { port = port })
            local rows, err = db:query("select 1")
            assert.is_nil(rows)
            assert.matches("^connect: .*[Cc]onnection refused", err)
            db:close()
            db = loom.pg(srv:opts { password = "wrong" })
            rows, err = db:query("select 1")
            assert.is_nil(rows)
            assert.matches("^connect: .*password authentication failed", err)
            db:close()
        end)
    end)

    it("connects by name, over the unix socket, and passes sslmode to libpq", function()
        run(function()
            local db = loom.pg(("postgresql://loom:loom-secret@localhost:%d/loom"):format(srv.port))
            assert.same({ { one = 1 } }, (assert(db:query("select 1 as one"))))
            db:close()
            db = loom.pg(srv:opts { host = srv.dir })
            local r = assert(db:query("select inet_server_addr() as a"))
            assert.equal(loom.null, r[1].a) -- a unix-socket connection has no address
            db:close()
            -- the test server has no TLS: libpq refuses when it is required
            db = loom.pg(srv:url() .. "?sslmode=require")
            local rows, err = db:query("select 1")
            assert.is_nil(rows)
            assert.matches("^connect: .*SSL", err)
            db:close()
        end)
    end)

    it("gives timeout: when the server never answers within connect_timeout", function()
        run(function()
            -- a listener that accepts and then says nothing
            local held = {}
            local mute = assert(loom.listen { host = "127.0.0.1", port = 0, handler = function(st)
                held[#held + 1] = st
                st:read() -- until the client goes
            end })
            local db = loom.pg(srv:opts { port = mute.port, connect_timeout = 0.3 })
            local t0 = loom.now()
            local rows, err = db:query("select 1")
            assert.is_nil(rows)
            assert.matches("^timeout: ", err)
            assert.is_true(loom.now() - t0 >= 0.25)
            db:close()
            mute:close()
            for _, st in ipairs(held) do st:close() end
        end)
    end)

    it("frees the pool's slot of a task cancelled while connecting", function()
        run(function()
            local held = {}
            local mute = assert(loom.listen { host = "127.0.0.1", port = 0, handler = function(st)
                held[#held + 1] = st
                st:read()
            end })
            local db = loom.pg(srv:opts { port = mute.port, max = 1, connect_timeout = 0.3, auto_pipeline = false })
            local t = loom.spawn(function() return db:query("select 1") end)
            assert.is_true(eventually(function() return #held == 1 end)) -- it is connecting
            t:cancel()
            assert.is_false((t:join()))
            -- the slot is free again: the next query connects (and times out connecting),
            -- rather than waiting for a connection that will never come back
            local rows, err = db:query("select 1")
            assert.is_nil(rows)
            assert.equal("timeout: connecting to the database", err)
            db:close()
            mute:close()
            for _, st in ipairs(held) do st:close() end
        end)
    end)

    it("closes idle connections after idle_timeout; db:close() ends the pool", function()
        run(function()
            local db = loom.pg(srv:opts { idle_timeout = 0.1, application_name = "idler" })
            local probe = loom.pg(srv:opts())
            assert(db:query("select 1"))
            assert.is_true(eventually(function() return backends(probe, "idler") == 0 end))
            assert(db:query("select 1")) -- a new connection replaces the closed one
            db:close()
            assert.is_true(eventually(function() return backends(probe, "idler") == 0 end))
            local rows, err = db:query("select 1")
            assert.is_nil(rows)
            assert.matches("^closed: ", err)
            probe:close()
        end)
    end)
end)
