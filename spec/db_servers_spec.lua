-- The test servers of spec/support: pg_server and redis_server start a real server on a
-- free loopback port, and stop it by its PID, leaving nothing behind.
local loom = require "loom"
local run = require "support.run"
local pg_server = require "support.pg_server"
local redis_server = require "support.redis_server"

local function alive(pid)
    return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

local function exists(path)
    local f = io.open(path)
    if f then f:close() end
    return f ~= nil
end

-- Sends a RESP command on a fresh connection, returns the first reply line.
local function resp(port, ...)
    local c <close> = assert(loom.connect("127.0.0.1", port))
    local parts = { "*" .. select("#", ...) .. "\r\n" }
    for _, a in ipairs { ... } do parts[#parts + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n" end
    assert(c:write(table.concat(parts)))
    return (assert(c:read("l")))
end

describe("spec/support test servers", function()
    it("pg_server: a postgres with the test role, stopped by its PID", function()
        local srv = pg_server.start()
        local ok, err = pcall(function()
            assert.is_true(srv.port > 0)
            assert.is_true(alive(srv.pid))
            run(function()
                local db = loom.pg(srv:opts())
                local r = assert(db:query("select current_user as u, inet_server_port() as p"))
                assert.same({ u = "loom", p = srv.port }, r[1])
                db:close()
            end)
        end)
        local pid, dir = srv.pid, srv.dir
        pg_server.stop(srv)
        assert(ok, err)
        assert.is_false(alive(pid))
        assert.is_false(exists(dir))
    end)

    it("redis_server: a redis-server with requirepass, stopped by its PID", function()
        local srv = redis_server.start("s3cret")
        local ok, err = pcall(function()
            assert.is_true(alive(srv.pid))
            run(function()
                assert.matches("^%-NOAUTH", resp(srv.port, "PING"))
                local c <close> = assert(loom.connect("127.0.0.1", srv.port))
                assert(c:write("*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n*1\r\n$4\r\nPING\r\n"))
                assert.equal("+OK", c:read("l"))
                assert.equal("+PONG", c:read("l"))
            end)
        end)
        local pid, dir = srv.pid, srv.dir
        redis_server.stop(srv)
        assert(ok, err)
        assert.is_false(alive(pid))
        assert.is_false(exists(dir))
    end)
end)
