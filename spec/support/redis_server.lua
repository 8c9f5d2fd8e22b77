-- spec/support/redis_server.lua: a real redis-server for a spec (spec/support/redis_server.sh:
-- a free loopback port, no persistence, bounded wait for PING, stopped by its PID).
--
--   local redis_server = require "support.redis_server"
--   setup(function() srv = redis_server.start("secret") end)  -- raises with the reason
--   teardown(function() redis_server.stop(srv) end)
--   srv.host, srv.port, srv.password, srv.pid, srv.dir
local pg_server = require "support.pg_server"

local M = {}

function M.start(password)
    return pg_server.launch("redis_server.sh", password)
end

function M.stop(srv)
    pg_server.halt("redis_server.sh", srv)
end

return M
