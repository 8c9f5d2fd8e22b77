-- spec/support/pg_server.lua: a real PostgreSQL server for a spec (spec/support/pg_server.sh
-- does the work: initdb into a temp dir, postgres on a free loopback port, bounded waits).
--
--   local pg_server = require "support.pg_server"
--   local srv
--   setup(function() srv = pg_server.start() end)   -- raises with the reason when it cannot
--   teardown(function() pg_server.stop(srv) end)
--   srv.port, srv.host, srv.user, srv.password, srv.database, srv.dir, srv.pid
--   srv:opts{max = 2} -> options for loom.pg (the test role), with the given ones added
--   srv:url() -> "postgresql://loom:loom-secret@127.0.0.1:PORT/loom"
local M = {}

-- The scripts sit beside this file.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/support"

local function script(name)
    return here .. "/" .. name
end

local function shell_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs `sh start ...`, parses its key=value lines; raises with its stderr on failure.
function M.launch(name, ...)
    local err = os.tmpname()
    local cmd = shell_quote(script(name)) .. " start"
    for _, a in ipairs { ... } do cmd = cmd .. " " .. shell_quote(a) end
    local p = assert(io.popen(cmd .. " 2>" .. shell_quote(err)))
    local out = p:read("a")
    local ok = p:close()
    local f = io.open(err)
    local why = f and f:read("a") or ""
    if f then f:close() end
    os.remove(err)
    if not ok then
        error(name .. " could not start a server: " .. why, 0)
    end
    local t = {}
    for k, v in out:gmatch("([%w_]+)=([^\n]*)") do t[k] = v end
    t.port = tonumber(t.port)
    t.pid = tonumber(t.pid)
    return t
end

function M.halt(name, srv)
    if srv and srv.dir then
        os.execute(shell_quote(script(name)) .. " stop " .. shell_quote(srv.dir))
        srv.dir = nil
    end
end

local Server = {}
Server.__index = Server

function Server:opts(extra)
    local o = { host = self.host, port = self.port, user = self.user,
        password = self.password, database = self.database }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
end

function Server:url()
    return ("postgresql://%s:%s@%s:%d/%s"):format(self.user, self.password, self.host,
        self.port, self.database)
end

function M.start()
    return setmetatable(M.launch("pg_server.sh"), Server)
end

function M.stop(srv)
    M.halt("pg_server.sh", srv)
end

return M
