-- loom.pg's automatic pipelining against a real PostgreSQL (spec/support/pg_server.sh): the
-- plain queries of many tasks share one connection, each with a sync point of its own, the
-- results handed to the task of each in order. An error, a timeout, a cancellation or a
-- failed connection among them touches only what the contract says; statements that change
-- their connection's state take a pooled connection; auto_pipeline = false goes back to one
-- pooled connection per query in flight.
local loom = require "loom"
local run = require "support.run"
local pg_server = require "support.pg_server"

local srv

local function eventually(check, secs)
    local deadline = loom.now() + (secs or 10)
    local v = check()
    while not v and loom.now() < deadline do
        loom.sleep(0.02)
        v = check()
    end
    return v
end

local function backends(db, app)
    return assert(db:query(
        "select count(*)::int as n from pg_stat_activity where datname = 'loom' and application_name = $1",
        app))[1].n
end

-- Starts fn(i) in n tasks at once; returns their results: {ok, ...} each.
local function fan(n, fn)
    local tasks = {}
    for i = 1, n do tasks[i] = loom.spawn(fn, i) end
    local out = {}
    for i = 1, n do out[i] = table.pack(tasks[i]:join()) end
    return out
end

describe("loom.pg automatic pipelining", function()
    setup(function()
        srv = pg_server.start()
    end)
    teardown(function()
        pg_server.stop(srv)
    end)

    it("puts the queries of many tasks on one connection, each result to its own task", function()
        run(function()
            local db = loom.pg(srv:opts { auto_pipeline = true, max = 4, application_name = "auto" })
            local probe = loom.pg(srv:opts { auto_pipeline = false })
            local out = fan(200, function(i)
                local a = assert(db:query("select $1::int as i, $2::text as s", i, "t" .. i))
                local b = assert(db:query("select $1::int * 2 as d", i)) -- a second, after the first
                return a[1].i, a[1].s, b[1].d
            end)
            for i = 1, 200 do assert.same({ true, i, "t" .. i, 2 * i, n = 4 }, out[i]) end
            assert.equal(0, db.nopen) -- no pooled connection was opened
            assert.equal(1, backends(probe, "auto"))
            -- one prepared statement per SQL text, though 200 tasks asked for it at once
            local pid = assert(db:query("select pg_backend_pid() as p"))[1].p
            local n = assert(db:query(
                "select count(*)::int as n from pg_prepared_statements where statement like 'select $1::int as i%'"))
            assert.equal(1, n[1].n)
            assert.equal(pid, assert(db:query("select pg_backend_pid() as p"))[1].p)
            db:close()
            probe:close()
        end)
    end)

    it("keeps an error to its own query: the others in flight succeed and stay committed", function()
        run(function()
            local db = loom.pg(srv:opts { auto_pipeline = true })
            assert(db:query("create table if not exists auto_isol (i int primary key)"))
            assert(db:query("delete from auto_isol"))
            local out = fan(50, function(i)
                if i == 25 then return db:query("select 1 / ($1::int - 25) as x", i) end
                if i == 30 then return db:query("select * from no_such_table_auto") end
                return db:query("insert into auto_isol values ($1) returning i", i)
            end)
            for i = 1, 50 do
                if i == 25 then
                    assert.same({ true, nil, "pg: 22012 division by zero", n = 3 }, out[i])
                elseif i == 30 then
                    assert.is_nil(out[i][2])
                    assert.matches("^pg: 42P01 ", out[i][3])
                else
                    assert.is_true(out[i][1])
                    assert.same({ { i = i }, affected = 1 }, out[i][2])
                end
            end
            -- the inserts around the failures were not rolled back with them
            assert.equal(48, assert(db:query("select count(*)::int as n from auto_isol"))[1].n)
            -- a unique violation among inserts of the same turn: only that one fails
            out = fan(10, function(i)
                return db:query("insert into auto_isol values ($1)", i == 5 and 1 or 100 + i)
            end)
            for i = 1, 10 do
                if i == 5 then
                    assert.matches("^pg: 23505 ", out[i][3])
                else
                    assert.equal(1, out[i][2].affected)
                end
            end
            assert.equal(57, assert(db:query("select count(*)::int as n from auto_isol"))[1].n)
            db:close()
        end)
    end)

    it("drops the result of a query that timed out or was cancelled, not another's", function()
        run(function()
            local db = loom.pg(srv:opts { auto_pipeline = true, application_name = "autotime" })
            local probe = loom.pg(srv:opts { auto_pipeline = false })
            local SLEEP = "select pg_sleep($1::float8), $2::int as i"
            assert(db:query(SLEEP, 0, 0)) -- connected, the statements prepared
            assert(db:query("select $1::int as i", 0))
            local t0 = loom.now()
            local out = fan(30, function(i)
                if i == 10 then
                    return loom.timeout(0.1, function()
                        return db:query(SLEEP, 0.4, i)
                    end)
                end
                if i == 20 then
                    return db:query(SLEEP, 0.3, i)
                end
                return db:query("select $1::int as i", i)
            end)
            for i = 1, 30 do
                if i == 10 then
                    assert.same({ true, nil, "timeout", n = 3 }, out[i])
                elseif i == 20 then
                    assert.equal(20, out[i][2][1].i)
                else
                    assert.is_true(out[i][1])
                    assert.same({ { i = i } }, out[i][2])
                end
            end
            -- the slow query was not cancelled on the server (a cancel on a shared
            -- connection could hit another task's query): a query after it waits for it
            assert(db:query("select $1::int as i", 0))
            assert.is_true(loom.now() - t0 >= 0.35)
            -- a cancelled task: its result is dropped when it comes
            local gate = loom.spawn(function() return db:query("select pg_sleep(0.2), 7 as seven") end)
            local victim = loom.spawn(function() return db:query("select 'victim' as who") end)
            local after = loom.spawn(function() return db:query("select 'after' as who") end)
            loom.sleep(0.05)
            victim:cancel()
            assert.is_false((victim:join()))
            assert.same({ true, { { who = "after" } } }, { after:join() })
            assert.equal(7, select(2, gate:join())[1].seven)
            -- per-query timeout option on the shared connection
            local slow = loom.pg(srv:opts { auto_pipeline = true, timeout = 0.1, application_name = "autotime" })
            local rows, err = slow:query("select pg_sleep(0.3)")
            assert.is_nil(rows)
            assert.matches("^timeout: ", err)
            -- the queries behind it time out while it runs (their results dropped), then
            -- the connection answers again, each its own
            local rows2 = eventually(function() return slow:query("select 2 as two") end)
            assert.same({ { two = 2 } }, rows2)
            slow:close()
            assert.same({ { one = 1 } }, (assert(db:query("select 1 as one"))))
            assert.is_true(eventually(function() return backends(probe, "autotime") == 1 end))
            db:close()
            probe:close()
        end, { timeout = 30 })
    end)

    it("fails every query in flight with closed: when the connection dies, then recovers", function()
        run(function()
            local db = loom.pg(srv:opts { auto_pipeline = true, application_name = "autodie" })
            local probe = loom.pg(srv:opts { auto_pipeline = false })
            local pid = assert(db:query("select pg_backend_pid() as p"))[1].p
            local tasks = {}
            tasks[1] = loom.spawn(function() return db:query("select pg_sleep(10)") end)
            for i = 2, 10 do tasks[i] = loom.spawn(function() return db:query("select $1::int as i", i) end) end
            assert.is_true(eventually(function()
                return assert(probe:query([[select count(*)::int as n from pg_stat_activity
                    where pid = $1 and query like '%pg_sleep(10)%']], pid))[1].n == 1
            end))
            assert(probe:query("select pg_terminate_backend($1)", pid))
            for i = 1, 10 do
                local ok, rows, err = tasks[i]:join()
                assert.is_true(ok)
                assert.is_nil(rows)
                assert.matches("^closed: ", err)
            end
            local r = assert(db:query("select pg_backend_pid() as p"))
            assert.is_true(r[1].p ~= pid)
            db:close()
            probe:close()
        end)
    end)

    it("sends statements that change the connection's state on a pooled one", function()
        run(function()
            local db = loom.pg(srv:opts { auto_pipeline = true, max = 2, application_name = "autostate" })
            local shared_pid = assert(db:query("select pg_backend_pid() as p"))[1].p
            -- SET on the shared connection would change it for every task
            assert(db:query("set application_name = 'changed'"))
            assert.equal("autostate", assert(db:query("select current_setting('application_name') as a"))[1].a)
            -- BEGIN left open goes with its (pooled) connection, which is closed, not reused
            assert(db:query("begin"))
            local function xid() return assert(db:query("select pg_current_xact_id()::text as x"))[1].x end
            assert.are_not.equal(xid(), xid()) -- the shared connection is in no transaction
            assert.equal(shared_pid, assert(db:query("select pg_backend_pid() as p"))[1].p)
            -- transactions keep a connection of their own, beside the shared one
            local v = assert(db:transaction(function(tx)
                local p = assert(tx:query("select pg_backend_pid() as p"))[1].p
                assert.is_true(p ~= shared_pid)
                assert.equal(shared_pid, assert(db:query("select pg_backend_pid() as p"))[1].p)
                return "done"
            end))
            assert.equal("done", v)
            -- db:pipeline too
            local res = assert(db:pipeline { { "select pg_backend_pid() as p" } })
            assert.is_true(res[1][1].p ~= shared_pid)
            db:close()
        end)
    end)

    it("is off with auto_pipeline = false (also in the URL): a pooled connection per query", function()
        run(function()
            local db = loom.pg(srv:url() .. "?auto_pipeline=false&max=3&application_name=autooff")
            local probe = loom.pg(srv:opts { auto_pipeline = false })
            local out = fan(6, function(i) return db:query("select pg_sleep(0.05), $1::int as i", i) end)
            for i = 1, 6 do assert.equal(i, out[i][2][1].i) end
            assert.equal(3, db.nopen)
            assert.equal(3, backends(probe, "autooff"))
            assert.error_matches(function() loom.pg { auto_pipeline = 1 } end, "option 'auto_pipeline'")
            assert.error_matches(function() loom.pg(srv:url() .. "?auto_pipeline=yes") end, "auto_pipeline")
            db:close()
            probe:close()
        end)
    end)

    it("opens the shared connection once; a cancelled opener leaves it to a waiter", function()
        run(function()
            local held = {}
            local mute = assert(loom.listen { host = "127.0.0.1", port = 0, handler = function(st)
                held[#held + 1] = st
                st:read()
            end })
            local db = loom.pg(srv:opts { auto_pipeline = true, port = mute.port, connect_timeout = 0.3 })
            local opener = loom.spawn(function() return db:query("select 1") end)
            local waiter = loom.spawn(function() return db:query("select 2") end)
            assert.is_true(eventually(function() return #held == 1 end)) -- one connect only
            loom.sleep(0.05)
            assert.equal(1, #held)
            opener:cancel()
            assert.is_false((opener:join()))
            -- the waiter connects in its turn (and times out connecting, to a mute server)
            local ok, rows, err = waiter:join()
            assert.is_true(ok)
            assert.is_nil(rows)
            assert.equal("timeout: connecting to the database", err)
            assert.equal(2, #held)
            db:close()
            mute:close()
            for _, st in ipairs(held) do st:close() end
        end)
    end)

    it("closes the shared connection when idle, and after idle_timeout", function()
        run(function()
            local db = loom.pg(srv:opts { auto_pipeline = true, idle_timeout = 0.1, application_name = "autoidle" })
            local probe = loom.pg(srv:opts { auto_pipeline = false })
            assert(db:query("select 1"))
            assert.equal(0, require("loom.core").stats().alive) -- idle: keeps nothing alive
            assert.is_true(eventually(function() return backends(probe, "autoidle") == 0 end))
            assert(db:query("select 1")) -- a new shared connection
            db:close()
            assert.is_true(eventually(function() return backends(probe, "autoidle") == 0 end))
            local rows, err = db:query("select 1")
            assert.is_nil(rows)
            assert.matches("^closed: ", err)
            probe:close()
        end)
    end)
end)
