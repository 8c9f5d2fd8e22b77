-- loom.ngx: a small `ngx` for drivers written for OpenResty's cosockets. loom.ngx.install()
-- (or require "loom.ngx") sets the global `ngx`; loom.ngx.ngx is the same table, for an
-- environment of one's own (loadfile(path, "t", setmetatable({ ngx = loom.ngx.ngx }, ...))).
-- What it holds is what socket drivers touch; everything else of OpenResty's API is absent
-- (an index of it gives nil, as a typo would). The list is in docs/databases.md.
local core = require "loom.core"
local socket = require "loom.socket"

local crypto = core.crypto
local null = core.null

local LEVELS = { "EMERG", "ALERT", "CRIT", "ERR", "WARN", "NOTICE", "INFO", "DEBUG" }

local ngx = {
    null = null,
    socket = { tcp = socket.tcp, stream = socket.tcp },
    config = { ngx_lua_version = 10025, nginx_version = 1025003, subsystem = "http", debug = false,
        prefix = function() return "./" end },
    STDERR = 0,
    OK = 0, ERROR = -1, AGAIN = -2, DONE = -4, DECLINED = -5,
    ctx = {},
    worker = { pid = function() return core.getpid and core.getpid() or 0 end, id = function() return 0 end,
        count = function() return 1 end, exiting = function() return false end },
}
for i, name in ipairs(LEVELS) do ngx[name] = i end
local level_name = { [0] = "STDERR" }
for i, name in ipairs(LEVELS) do level_name[i] = name end

-- ngx.log(level, ...): to stderr, "[level] ..." (arguments through tostring, nil as "nil").
function ngx.log(level, ...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do
        local v = select(i, ...)
        parts[i] = v == nil and "nil" or tostring(v)
    end
    io.stderr:write("[", (level_name[level] or tostring(level)):lower(), "] ", table.concat(parts), "\n")
end

function ngx.now() return core.now() end
function ngx.time() return os.time() end
function ngx.update_time() end
function ngx.sleep(s) return core.sleep(s) end

function ngx.sha1_bin(s) return crypto.sha1(s) end
if crypto.md5 then
    function ngx.md5_bin(s) return crypto.md5(s) end
    function ngx.md5(s) return crypto.hex(crypto.md5(s)) end
end
function ngx.encode_base64(s, no_padding)
    local b = crypto.base64(s)
    if no_padding then b = b:gsub("=+$", "") end
    return b
end
function ngx.decode_base64(s)
    if #s % 4 ~= 0 then s = s .. ("="):rep(4 - #s % 4) end
    return (crypto.unbase64(s))
end

-- ngx.timer.at(delay, fn, ...): fn(premature = false, ...) in a task after delay seconds.
ngx.timer = {
    at = function(delay, fn, ...)
        local n, a = select("#", ...), { ... }
        core.spawn(function()
            if delay > 0 then core.sleep(delay) end
            fn(false, table.unpack(a, 1, n))
        end)
        return true
    end,
}

-- ngx.thread.spawn / wait: loom tasks.
ngx.thread = {
    spawn = function(fn, ...) return core.spawn(fn, ...) end,
    wait = function(t) return t:join() end,
    kill = function(t) t:cancel() return true end,
}

local M = { ngx = ngx }

-- loom.ngx.install() -> ngx: sets the global `ngx` (and returns it).
function M.install()
    _G.ngx = ngx
    return ngx
end

M.install()

return M
