-- loom.redis against a real redis-server (spec/support/redis_server.sh starts one with a
-- password per run of this file; the spec fails with the reason when it cannot), and
-- against fake servers (loom.listen) for what a real one never sends: reply types both
-- ways, binary values, error replies and the connection afterwards, method names,
-- pipelines, pub/sub, AUTH and SELECT from the URL, a connection killed mid-command, a
-- server killed, malformed and oversized replies (nil, "redis: ..." at once, the
-- connection closed), timeouts, cancellation, the pool's bound, idle connections that
-- keep nothing alive, and the session store.
local loom = require "loom"
local core = require "loom.core"
local run = require "support.run"
local timing = require "support.timing"
local redis_server = require "support.redis_server"

local PW = "s3cret pw"
local srv

local function url(db)
    return ("redis://:%s@127.0.0.1:%d/%d"):format(PW:gsub(" ", "%%20"), srv.port, db or 0)
end

local function opts(extra)
    local o = { host = "127.0.0.1", port = srv.port, password = PW }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
end

-- Connections of the server whose name is `name` (CLIENT SETNAME is not used by loom:
-- counted by the database they selected instead).
local function clients(r, db)
    local list = assert(r:client("list"))
    local n = 0
    for line in list:gmatch("[^\n]+") do
        if line:find(" db=" .. db .. " ", 1, true) then n = n + 1 end
    end
    return n
end

-- A fake server: for each connection, reads one command (any bytes) and answers with
-- `answer` (a string, or a function(stream) doing the talking). Returns the listener and
-- an event set when a connection it served ends (the client closed it).
local function fake(answer)
    local closed = loom.event()
    local ln = assert(loom.listen { host = "127.0.0.1", port = 0, handler = function(st)
        if type(answer) == "function" then
            answer(st)
        else
            assert(st:read())
            st:write(answer)
        end
        while st:read() do end -- until the client hangs up
        closed:set()
        st:close()
    end })
    return ln, closed
end

describe("loom.redis", function()
    setup(function()
        srv = redis_server.start(PW)
    end)
    teardown(function()
        redis_server.stop(srv)
    end)

    it("is lazy, and its idle connections keep nothing alive", function()
        run(function()
            local r = loom.redis(url(1))
            local probe = loom.redis(url(0))
            assert.equal(0, clients(probe, 1))
            assert.same({ ok = "OK" }, r:set("lazy", "1"))
            assert.equal(1, clients(probe, 1))
            assert.equal(0, core.stats().alive) -- idle pooled connections: unreferenced
            r:close()
            probe:close()
        end)
    end)

    it("converts reply types and sends values as bulk strings", function()
        run(function()
            local r = loom.redis(url())
            assert.same({ ok = "OK" }, r:call("SET", "k", "v"))
            assert.equal("v", r:get("k"))
            assert.equal(loom.null, r:get("no such key"))
            assert.equal(loom.null, r:call("GET", "no such key"))
            local bin = "a\r\nb\0c $3\r\n*1\r\n"
            assert.same({ ok = "OK" }, r:set("bin", bin))
            assert.equal(bin, r:get("bin"))
            assert.equal(3, r:hset("h", "a", 1, "b", 0.1, "c", "x y"))
            assert.equal("integer", math.type(r:hlen("h")))
            local flat = r:hgetall("h")
            local got = {}
            for i = 1, #flat, 2 do got[flat[i]] = flat[i + 1] end
            assert.same({ a = "1", b = "0.10000000000000001", c = "x y" }, got) -- %.17g
            assert.equal(0.1, tonumber(got.b))
            assert.equal(-5, r:incrby("n", -5))
            assert.same({}, r:lrange("empty", 0, -1))
            assert(r:set("k2", "x"))
            assert.same({ "x", loom.null, "v" }, r:mget("k2", "nokey", "k"))
            assert.equal(loom.null, r:blpop("empty", 0.01)) -- a nil array
            assert.same({ ok = "PONG" }, r:ping())
            -- nested arrays
            assert(r:rpush("l", "a", "b"))
            local nested = r:call("EVAL", "return {1, {'x', {2}}, redis.status_reply('S')}", 0)
            assert.same({ 1, { "x", { 2 } }, { ok = "S" } }, nested)
            -- large values and arrays
            local big = ("0123456789abcdef"):rep(65536) -- 1 MiB
            assert(r:set("big", big))
            assert.equal(big, r:get("big"))
            local many = {}
            for i = 1, 10000 do many[i] = tostring(i) end
            assert.equal(10000, r:rpush("many", table.unpack(many)))
            assert.same(many, r:lrange("many", 0, -1))
            r:close()
        end)
    end)

    it("gives an error reply as nil, 'redis: ...' and reuses the connection", function()
        run(function()
            local r = loom.redis(opts { max = 1 })
            local id = r:client("id")
            local v, err = r:incr("k")
            assert.is_nil(v)
            assert.equal("redis: ERR value is not an integer or out of range", err)
            v, err = r:call("NOSUCHCOMMAND", "x")
            assert.is_nil(v)
            assert.matches("^redis: ERR unknown command", err)
            v, err = r:call("GET")
            assert.is_nil(v)
            assert.matches("^redis: ERR wrong number of arguments", err)
            assert.equal(id, r:client("id"))
            r:close()
        end)
    end)

    it("makes one closure per command name", function()
        local r = loom.redis(opts())
        assert.equal(r.hset, r.hset)
        assert.equal(r.get, loom.redis(opts()).get)
        assert.is_function(r.any_name)
    end)

    it("raises for misuse, naming the argument", function()
        assert.has_error(function() loom.redis(5) end,
            "bad argument #1 to 'redis' (URL string or options table expected, got number)")
        assert.has_error(function() loom.redis { nope = 1 } end, "bad argument #1 to 'redis' (unknown option 'nope')")
        assert.has_error(function() loom.redis { max = 0 } end,
            "bad argument #1 to 'redis' (option 'max': positive integer expected)")
        assert.has_error(function() loom.redis("http://x") end,
            "bad argument #1 to 'redis' (redis:// URL expected, got 'http://x')")
        local r = loom.redis(opts())
        run(function()
            assert.has_error(function() r:set("k", {}) end,
                "bad argument #2 to 'set' (string or number expected, got table)")
            assert.has_error(function() r:call("SET", "k", {}) end,
                "bad argument #3 to 'call' (string or number expected, got table)")
            assert.has_error(function() r:pipeline(function(p) p:hset("h", "f", print) end) end,
                "bad argument #3 to 'hset' (string or number expected, got function)")
            assert.has_error(function() r:call(7) end,
                "bad argument #1 to 'call' (command name (string) expected, got number)")
            assert.has_error(function() r:pipeline(5) end,
                "bad argument #1 to 'pipeline' (function expected, got number)")
        end)
    end)

    it("pipelines commands in one write, replies and error entries in order", function()
        run(function()
            local r = loom.redis(opts { max = 1 })
            assert(r:del("pa", "pb"))
            local res = assert(r:pipeline(function(p)
                p:incr("pa")
                p:incr("pa")
                p:set("pb", "x")
                p:get("pb")
                p:incr("pb")
                p:get("nokey")
                p:call("HSET", "ph", "f", "v")
            end))
            assert.same({ 1, 2, { ok = "OK" }, "x", { err = "redis: ERR value is not an integer or out of range" },
                loom.null, 1 }, res)
            assert.same({}, r:pipeline(function() end))
            local n = 0
            local many = assert(r:pipeline(function(p)
                for i = 1, 1000 do p:rpush("plist", i) n = n + 1 end
            end))
            assert.equal(1000, #many)
            assert.equal(1000, many[1000])
            assert.equal(1000, n)
            -- a pipeline object used after its function returned raises
            local kept
            r:pipeline(function(p) kept = p end)
            assert.has_error(function() kept:get("x") end)
            r:close()
        end)
    end)

    it("sends a pipeline in one write (a fake server sees every command before answering)", function()
        run(function()
            local got = {}
            local ln = fake(function(st)
                local buf = ""
                while select(2, buf:gsub("%*1\r\n", "")) < 3 do buf = buf .. assert(st:read()) end
                got[#got + 1] = buf
                st:write("+A\r\n:2\r\n$1\r\nc\r\n")
            end)
            local r = loom.redis { port = ln.port }
            local res = assert(r:pipeline(function(p) p:a() p:b() p:c() end))
            assert.same({ { ok = "A" }, 2, "c" }, res)
            assert.equal("*1\r\n$1\r\nA\r\n*1\r\n$1\r\nB\r\n*1\r\n$1\r\nC\r\n", got[1])
            r:close()
            ln:close()
        end)
    end)

    it("subscribes on a connection of its own: messages, patterns, close", function()
        run(function()
            local r = loom.redis(opts { max = 1 })
            local sub = assert(r:subscribe("news", "sport"))
            assert.equal(1, r:publish("news", "hello"))
            assert.equal(1, r:publish("sport", "goal\r\n\0"))
            assert.same({ "news", "hello" }, { sub:receive() })
            assert.same({ "sport", "goal\r\n\0" }, { sub:receive() })
            local ch, msg = sub:receive(0.05)
            assert.is_nil(ch)
            assert.matches("^timeout", msg)
            -- a message published while a task waits
            local t = loom.spawn(function() return sub:receive() end)
            loom.sleep(0)
            assert.equal(1, r:publish("news", "later"))
            assert.same({ true, "news", "later" }, { t:join() })
            sub:close()
            local psub = assert(r:psubscribe("user.*"))
            assert.equal(1, r:publish("user.7", "hi"))
            assert.same({ "user.7", "hi", "user.*" }, { psub:receive() })
            psub:close()
            local _, err = psub:receive()
            assert.matches("^closed", err)
            assert.has_error(function() r:subscribe() end)
            r:close()
        end)
    end)

    it("authenticates and selects the database from the URL", function()
        run(function()
            local r3 = loom.redis(url(3))
            local r0 = loom.redis(url(0))
            assert(r3:set("only3", "x"))
            assert.equal("x", r3:get("only3"))
            assert.equal(loom.null, r0:get("only3"))
            local wrong = loom.redis(("redis://:wrong@127.0.0.1:%d"):format(srv.port))
            local v, err = wrong:get("k")
            assert.is_nil(v)
            assert.matches("^redis: WRONGPASS", err)
            local none = loom.redis { port = srv.port }
            v, err = none:get("k")
            assert.is_nil(v)
            assert.matches("^redis: NOAUTH", err)
            local acl = loom.redis(opts { username = "default", db = 3 })
            assert.equal("x", acl:get("only3"))
            for _, r in ipairs { r3, r0, wrong, none, acl } do r:close() end
        end)
    end)

    it("a connection killed mid-command gives closed:, and the pool recovers", function()
        run(function()
            local r = loom.redis(opts { max = 1, db = 5 })
            local admin = loom.redis(opts())
            assert(r:ping())
            local t = loom.spawn(function() return r:blpop("never", 0) end)
            while true do -- until the BLPOP is blocked on the server
                local list = assert(admin:client("list"))
                if list:find("cmd=blpop", 1, true) then break end
                loom.sleep(0.01)
            end
            assert.equal(1, admin:client("kill", "type", "normal", "skipme", "yes") >= 1 and 1 or 0)
            local ok, v, err = t:join()
            assert.is_true(ok)
            assert.is_nil(v)
            assert.matches("^closed", err)
            assert.same({ ok = "OK" }, r:set("after", "1"))
            assert.equal("1", r:get("after"))
            r:close()
            admin:close()
        end)
    end)

    it("a server killed mid-command gives closed:, never a hang", function()
        local own = redis_server.start()
        local ok, e = pcall(run, function()
            local r = loom.redis { port = own.port, max = 1 }
            assert(r:ping())
            local t = loom.spawn(function() return r:blpop("never", 0) end)
            local admin = loom.redis { port = own.port }
            while not assert(admin:client("list")):find("cmd=blpop", 1, true) do loom.sleep(0.01) end
            admin:close()
            os.execute("kill -9 " .. own.pid)
            local ok, v, err = t:join()
            assert.is_true(ok)
            assert.is_nil(v)
            assert.matches("^closed", err)
            v, err = r:ping() -- the pool opens a new connection: refused (or reset, when
            assert.is_nil(v) -- the dying server's socket still took it)
            assert.is_truthy(err:find("^connect") or err:find("^closed"), err)
            r:close()
        end)
        redis_server.stop(own)
        assert(ok, e)
    end)

    it("a server that closed an idle connection: the next command gets a new one", function()
        run(function()
            local r = loom.redis(opts { max = 1, db = 6 })
            local admin = loom.redis(opts())
            assert(r:set("x", "1"))
            -- the server closes the idle connection before it answers the kill: by then
            -- its FIN is in, and the pool sees it before it sends on that connection
            assert.equal(1, admin:client("kill", "type", "normal", "skipme", "yes"))
            assert.equal("1", r:get("x"))
            r:close()
            admin:close()
        end)
    end)

    it("a malformed reply is nil, 'redis: protocol error: ...' with the connection closed", function()
        run(function()
            for _, case in ipairs {
                { "!3\r\nabc\r\n", "unknown reply type" },
                { "$3\r\nabcd\r\n", "bulk string not ended by CRLF" },
                { ":12a\r\n", "bad integer" },
                { "$-7\r\n", "bad bulk string length" },
                { "+OK\n", "not ended by CRLF" },
                { "*2\r\n:1\r\n?\r\n", "unknown reply type" },
            } do
                local ln, closed = fake(case[1])
                local r = loom.redis { port = ln.port }
                local v, err = r:get("k")
                assert.is_nil(v)
                assert.matches("^redis: protocol error: .*" .. case[2], err)
                closed:wait() -- the connection was closed by the client
                assert.equal(0, r.nopen)
                r:close()
                ln:close()
            end
        end)
    end)

    it("a reply over the limits is refused at its header, without waiting for it", function()
        run(function()
            local cases = {
                { "$536870913\r\n", {}, "bulk string of 536870913 bytes over the limit of 536870912" },
                { "$11\r\n", { max_bulk = 10 }, "over the limit of 10" },
                { "*5\r\n", { max_elements = 4 }, "array of 5 elements over the limit of 4" },
                { "*1\r\n*1\r\n*1\r\n", { max_depth = 2 }, "nested deeper than 2" },
                { "*3\r\n*2\r\n", { max_elements = 4 }, "more than 4 array elements" },
                { "+" .. ("x"):rep(70000), {}, "line longer than 65536" },
            }
            for _, case in ipairs(cases) do
                local ln, closed = fake(case[1]) -- the payload never comes
                local o = { port = ln.port }
                for k, v in pairs(case[2]) do o[k] = v end
                local r = loom.redis(o)
                local v, err = r:get("k")
                assert.is_nil(v)
                assert.matches(case[3], err, 1, true)
                closed:wait()
                r:close()
                ln:close()
            end
        end)
    end)

    it("a reply cut by the server's close is closed:, a stalled one a timeout", function()
        run(function()
            local ln = assert(loom.listen { host = "127.0.0.1", port = 0, handler = function(st)
                assert(st:read())
                st:write("$10\r\nabc")
                st:close()
            end })
            local r = loom.redis { port = ln.port }
            local v, err = r:get("k")
            assert.is_nil(v)
            assert.matches("^closed", err)
            ln:close()
            local stall, closed = fake("*2\r\n$3\r\nabc\r\n")
            r = loom.redis { port = stall.port, timeout = 0.2 }
            local t0 = loom.now()
            v, err = r:get("k")
            timing.within(loom.now() - t0, 0.19, 0.2, "timeout")
            assert.is_nil(v)
            assert.matches("^timeout", err)
            closed:wait()
            r:close()
            stall:close()
        end)
    end)

    it("a server that never answers AUTH: timeout after connect_timeout, nothing left open", function()
        run(function()
            local ln, closed = fake(function(st) st:read() end) -- reads AUTH, says nothing
            local r = loom.redis { port = ln.port, password = "x", connect_timeout = 0.2 }
            local t0 = loom.now()
            local v, err = r:get("k")
            timing.within(loom.now() - t0, 0.19, 0.2, "connect timeout")
            assert.is_nil(v)
            assert.matches("^timeout: connect to 127.0.0.1:%d+ %(AUTH/SELECT%)", err)
            closed:wait()
            assert.equal(0, r.nopen)
            r:close()
            ln:close()
        end)
    end)

    it("times a command out and closes its connection (the late reply never reaches another)", function()
        run(function()
            local r = loom.redis(opts { max = 1, timeout = 0.2, db = 7 })
            local admin = loom.redis(opts())
            assert(r:del("tq"))
            local t0 = loom.now()
            local v, err = r:blpop("tq", 5)
            timing.within(loom.now() - t0, 0.19, 0.2, "timeout")
            assert.is_nil(v)
            assert.matches("^timeout", err)
            -- the server drops the BLPOP's connection when it reads its FIN, which a loaded
            -- machine can put after the RPUSH below (the item then goes to the dead client):
            -- wait until only the shared connection is left on db 7
            timing.poll(function() return clients(admin, 7) == 1 end, 0.1, "one client left on db 7")
            admin:close()
            assert.equal(1, r:rpush("tq", "item"))
            loom.sleep(0.05)
            assert.equal(1, r:llen("tq")) -- no BLPOP of a kept connection took it
            assert.equal("item", r:lpop("tq"))
            r:close()
        end)
    end)

    it("a task cancelled mid-command closes the connection; the pool goes on", function()
        run(function()
            local r = loom.redis(opts { max = 1, db = 8 })
            assert(r:del("cq"))
            local v, err = loom.timeout(0.1, function() return r:blpop("cq", 5) end)
            assert.is_nil(v)
            assert.matches("^timeout", err)
            local t = loom.spawn(function() return r:blpop("cq", 5) end)
            loom.sleep(0.02)
            t:cancel()
            assert.is_false((t:join()))
            -- the cancelled BLPOPs' connections are closed: the server drops them when it
            -- reads their FIN (on a loaded machine, maybe after a command sent later on
            -- another connection), within the hang guard; then only the shared one is left
            local admin = loom.redis(opts())
            timing.poll(function() return clients(admin, 8) == 1 end, 0.1, "one client left on db 8")
            admin:close()
            assert.equal(1, r:rpush("cq", "item"))
            loom.sleep(0.05)
            assert.equal(1, r:llen("cq")) -- no cancelled BLPOP took it
            -- (RPUSH and LLEN went on the shared connection: no pooled one is open)
            assert.equal(0, r.nopen)
            r:close()
        end)
    end)

    it("bounds the pool at max, waiters served in order", function()
        run(function()
            local admin = loom.redis(opts())
            -- max = 2: six blocking commands at once never use more than two connections
            local r = loom.redis(opts { max = 2, db = 9 })
            local busy, most = 0, 0
            local tasks = {}
            for i = 1, 6 do
                tasks[i] = loom.spawn(function()
                    busy = busy + 1
                    most = math.max(most, busy)
                    assert(r:blpop("wq" .. i, 0.05))
                    busy = busy - 1
                end)
            end
            for i = 1, 6 do assert(tasks[i]:join()) end
            assert.equal(6, most) -- all six were waiting at once...
            assert.equal(2, r.nopen) -- ...on two connections
            assert.equal(2, clients(admin, 9))
            r:close()
            local _, err = r:get("x")
            assert.matches("^closed", err)
            -- max = 1: the waiters get the connection in the order they came
            local one = loom.redis(opts { max = 1, db = 9 })
            assert(one:del("seq"))
            local got = {}
            for i = 1, 5 do
                tasks[i] = loom.spawn(function() got[i] = one:incr("seq") end)
            end
            for i = 1, 5 do assert(tasks[i]:join()) end
            assert.same({ 1, 2, 3, 4, 5 }, got)
            one:close()
            admin:close()
        end)
    end)

    -- Automatic pipelining: the plain commands of every task share one connection.

    it("shares one connection between 100 tasks, each getting its own replies", function()
        run(function()
            local admin = loom.redis(opts())
            local r = loom.redis(opts { db = 11 })
            assert(r:flushdb())
            local tasks = {}
            for i = 1, 100 do
                tasks[i] = loom.spawn(function()
                    local key, val = "mk" .. i, "value " .. i .. (" "):rep(i % 7)
                    assert.same({ ok = "OK" }, r:set(key, val))
                    local got = {}
                    for j = 1, 5 do got[j] = r:get(key) end
                    local n = r:incrby("mn" .. i, i)
                    local _, err = r:incr(key) -- an error reply amid the others' replies
                    local batch = assert(r:pipeline(function(p)
                        p:get(key)
                        p:incr(key)
                        p:incrby("mn" .. i, 1)
                    end))
                    return val, got, n, err, batch
                end)
            end
            for i = 1, 100 do
                local ok, val, got, n, err, batch = tasks[i]:join()
                assert(ok, val)
                assert.same({ val, val, val, val, val }, got)
                assert.equal(i, n)
                assert.equal("redis: ERR value is not an integer or out of range", err)
                assert.same({ val, { err = "redis: ERR value is not an integer or out of range" }, i + 1 }, batch)
            end
            -- every command went on one connection: the server sees one client on db 11
            assert.equal(1, clients(admin, 11))
            assert.equal(0, r.nopen)
            r:close()
            admin:close()
        end)
    end)

    it("a reply nobody asked for drops the shared connection; the next command gets a new one", function()
        run(function()
            local conns = 0
            local ln, closed = fake(function(st)
                conns = conns + 1
                assert(st:read())
                st:write("+first\r\n+stray\r\n") -- one reply too many: out of step
            end)
            local r = loom.redis { port = ln.port }
            assert.same({ ok = "first" }, r:ping())
            closed:wait() -- the client closed the connection the stray reply came on
            assert.same({ ok = "first" }, r:ping())
            assert.equal(2, conns)
            r:close()
            ln:close()
        end)
    end)

    it("a pool collected with its shared connection open closes it", function()
        run(function()
            local ln, closed = fake("+PONG\r\n")
            local r = loom.redis { port = ln.port }
            assert.same({ ok = "PONG" }, r:ping())
            r = nil
            collectgarbage()
            collectgarbage()
            closed:wait()
            ln:close()
        end)
    end)

    it("sends the commands of one turn in one write, each reply to its own task", function()
        run(function()
            local reads, got = 0, nil
            local ln = fake(function(st)
                st:settimeout(10)
                local buf = ""
                while select(2, buf:gsub("%*%d+\r\n", "")) < 5 do
                    local data = st:read()
                    if not data then break end
                    reads = reads + 1
                    buf = buf .. data
                end
                got = buf
                -- an error reply in the middle of the batch
                st:write("$1\r\na\r\n-ERR boom\r\n:3\r\n$-1\r\n+OK\r\n")
            end)
            local r = loom.redis { port = ln.port }
            local tasks = {
                loom.spawn(function() return r:get("a") end),
                loom.spawn(function() return r:incr("b") end),
                loom.spawn(function() return r:call("INCR", "c") end),
                loom.spawn(function() return r:get("d") end),
                loom.spawn(function() return r:set("e", "x") end),
            }
            local want = { { "a" }, { nil, "redis: ERR boom" }, { 3 }, { loom.null }, { { ok = "OK" } } }
            for i, t in ipairs(tasks) do
                assert.same({ true, table.unpack(want[i], 1, 2) }, { t:join() })
            end
            assert.equal(1, reads) -- the five commands came in one read
            assert.equal("*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$4\r\nINCR\r\n$1\r\nb\r\n"
                .. "*2\r\n$4\r\nINCR\r\n$1\r\nc\r\n*2\r\n$3\r\nGET\r\n$1\r\nd\r\n"
                .. "*3\r\n$3\r\nSET\r\n$1\r\ne\r\n$1\r\nx\r\n", got)
            r:close()
            ln:close()
        end)
    end)

    it("a task cancelled while its command waits to be sent leaves the others' replies in place", function()
        run(function()
            local admin = loom.redis(opts())
            local r = loom.redis(opts { db = 12 })
            assert(r:mset("ka", "A", "kb", "B", "kc", "C", "kd", "D"))
            local a = loom.spawn(function() return r:get("ka") end)
            local b = loom.spawn(function() return r:get("kb") end)
            local c = loom.spawn(function() return r:get("kc") end)
            loom.sleep(0) -- a, b and c queue their commands; none is sent yet
            b:cancel()
            assert.same({ true, "A" }, { a:join() })
            assert.same({ false, "cancelled" }, { b:join() })
            assert.same({ true, "C" }, { c:join() })
            assert.equal("D", r:get("kd"))
            assert.equal(1, clients(admin, 12)) -- the connection was kept: it is in step
            r:close()
            admin:close()
        end)
    end)

    it("a task cancelled while its reply is owed: the reply is dropped, the others' are theirs", function()
        run(function()
            local have, go = loom.event(), loom.event()
            local conns = 0
            local ln = fake(function(st)
                conns = conns + 1
                st:settimeout(10)
                local buf = ""
                while select(2, buf:gsub("%*%d+\r\n", "")) < 3 do
                    local data = st:read()
                    if not data then break end
                    buf = buf .. data
                end
                have:set()
                go:wait()
                st:write("$1\r\nA\r\n$1\r\nB\r\n$1\r\nC\r\n")
                assert(st:read())
                st:write("$1\r\nD\r\n")
            end)
            local r = loom.redis { port = ln.port }
            local a = loom.spawn(function() return r:get("ka") end)
            local b = loom.spawn(function() return r:get("kb") end)
            local c = loom.spawn(function() return r:get("kc") end)
            have:wait() -- the server has the three commands
            b:cancel()
            assert.same({ false, "cancelled" }, { b:join() })
            go:set()
            assert.same({ true, "A" }, { a:join() })
            assert.same({ true, "C" }, { c:join() })
            assert.equal("D", r:get("kd")) -- B's reply was read and dropped
            assert.equal(1, conns)
            r:close()
            ln:close()
        end)
    end)

    it("a connection lost mid-batch fails every waiter with closed:, the next command reconnects", function()
        run(function()
            local conns = 0
            local ln = fake(function(st)
                conns = conns + 1
                if conns == 1 then -- ten commands in, three replies out, then it goes
                    st:settimeout(10)
                    local buf = ""
                    while select(2, buf:gsub("%*%d+\r\n", "")) < 10 do
                        local data = st:read()
                        if not data then break end
                        buf = buf .. data
                    end
                    st:write(":1\r\n:2\r\n:3\r\n")
                    st:close()
                else
                    assert(st:read())
                    st:write("+back\r\n")
                end
            end)
            local r = loom.redis { port = ln.port }
            local tasks = {}
            for i = 1, 10 do tasks[i] = loom.spawn(function() return r:incr("n") end) end
            for i = 1, 10 do
                local ok, v, err = tasks[i]:join()
                assert.is_true(ok)
                if i <= 3 then
                    assert.equal(i, v)
                else
                    assert.is_nil(v)
                    assert.matches("^closed: ", err)
                end
            end
            assert.same({ ok = "back" }, r:ping())
            assert.equal(2, conns)
            r:close()
            ln:close()
        end)
    end)

    it("a server killed with commands owed fails every waiter with closed:", function()
        local own = redis_server.start()
        local ok, e = pcall(run, function()
            local r = loom.redis { port = own.port }
            local admin = loom.redis { port = own.port }
            assert(r:ping())
            assert(admin:client("pause", 10000)) -- the server holds the GETs below
            local tasks = {}
            for i = 1, 50 do tasks[i] = loom.spawn(function() return r:get("k" .. i) end) end
            repeat loom.sleep(0.01) until core.resp_mux_state(r.mux) == 0 -- they are sent
            os.execute("kill -9 " .. own.pid)
            for i = 1, 50 do
                local tok, v, err = tasks[i]:join()
                assert.is_true(tok)
                assert.is_nil(v)
                assert.matches("^closed: ", err)
            end
            local v, err = r:ping() -- a new connection: refused (or reset by the dying server)
            assert.is_nil(v)
            assert.is_truthy(err:find("^connect") or err:find("^closed"), err)
            r:close()
            admin:close()
        end)
        redis_server.stop(own)
        assert(ok, e)
    end)

    it("blocking commands and transactions take a connection of their own beside the shared one", function()
        run(function()
            local admin = loom.redis(opts())
            local r = loom.redis(opts { db = 13 })
            assert(r:del("bq", "bn"))
            local blocked = loom.spawn(function() return r:blpop("bq", 60) end) -- until the RPUSH
            while not assert(admin:client("list")):find("cmd=blpop", 1, true) do loom.sleep(0.01) end
            local tasks = {}
            for i = 1, 20 do tasks[i] = loom.spawn(function() return r:incr("bn") end) end
            for i = 1, 20 do assert(tasks[i]:join()) end
            assert.equal("20", r:get("bn"))
            assert.is_false(blocked:done()) -- still blocked: the INCRs did not wait behind it
            assert.equal(2, clients(admin, 13)) -- the BLPOP's connection and the shared one
            assert.equal(1, r:rpush("bq", "x"))
            assert.same({ true, { "bq", "x" } }, { blocked:join() })
            -- MULTI ... EXEC in a pipeline: on a pooled connection, the shared one untouched
            local res = assert(r:pipeline(function(p)
                p:multi()
                p:incr("bn")
                p:call("incr", "bn")
                p:exec()
            end))
            assert.same({ { ok = "OK" }, { ok = "QUEUED" }, { ok = "QUEUED" }, { 21, 22 } }, res)
            assert.equal("22", r:get("bn"))
            -- an XREAD with BLOCK too
            local reader = loom.spawn(function() return r:xread("BLOCK", 60000, "STREAMS", "bs", "$") end)
            while not assert(admin:client("list")):find("cmd=xread", 1, true) do loom.sleep(0.01) end
            assert(r:xadd("bs", "*", "f", "v"))
            local rok, got = reader:join()
            assert.is_true(rok)
            assert.equal("bs", got[1][1])
            assert.same({ "f", "v" }, got[1][2][1][2])
            r:close()
            admin:close()
        end)
    end)

    it("auto_pipeline = false (in the options or a second table) keeps a connection per command", function()
        run(function()
            local admin = loom.redis(opts())
            local r = loom.redis(url(14), { auto_pipeline = false, max = 3 })
            local tasks = {}
            for i = 1, 12 do tasks[i] = loom.spawn(function() return r:blpop("none" .. i, 0.05) end) end
            for i = 1, 12 do assert(tasks[i]:join()) end
            for i = 1, 12 do tasks[i] = loom.spawn(function() return r:get("k") end) end
            for i = 1, 12 do assert(tasks[i]:join()) end
            assert.equal(3, r.nopen)
            assert.equal(3, clients(admin, 14))
            r:close()
            assert.is_false(loom.redis(opts { auto_pipeline = false }).mux)
            assert.has_error(function() loom.redis(url(), { auto_pipeline = 1 }) end,
                "bad argument #2 to 'redis' (option 'auto_pipeline': boolean expected, got number)")
            assert.has_error(function() loom.redis(url(), 5) end,
                "bad argument #2 to 'redis' (options table expected, got number)")
            admin:close()
        end)
    end)

    it("keeps loom.cookie_session's sessions in Redis (store = r)", function()
        run(function()
            local r = loom.redis(opts { db = 10 })
            local app = loom.app()
            app:use(loom.cookie_session { secret = "k", store = r, max_age = 100 })
            app:get("/set", function(req)
                req.session.user = "ann"
                return { text = "ok" }
            end)
            app:get("/get", function(req) return { text = tostring(req.session.user) } end)
            local s <close> = assert(app:listen { host = "127.0.0.1", port = 0 })
            local base = "http://127.0.0.1:" .. s.port
            local res = assert(loom.fetch(base .. "/set"))
            local cookie = res.headers["set-cookie"]:match("^([^;]+)")
            local id = cookie:match("=([^.]+)%.")
            local keys = assert(r:keys("loom:session:*"))
            assert.same({ "loom:session:" .. id }, keys)
            local ttl = r:ttl("loom:session:" .. id)
            assert.is_true(ttl > 90 and ttl <= 100)
            assert.matches('"user":"ann"', r:get("loom:session:" .. id))
            res = assert(loom.fetch(base .. "/get", { headers = { cookie = cookie } }))
            assert.equal("ann", res:text())
            res = assert(loom.fetch(base .. "/get"))
            assert.equal("nil", res:text())
            r:close()
        end)
    end)
end)
