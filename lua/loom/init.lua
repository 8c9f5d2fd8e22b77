-- loom: asynchronous HTTP for Lua 5.4. `require "loom"` returns this table; in the loom
-- host it is also the global `loom`. The C core is loom.core; this file assembles the
-- public API from the Lua modules beside it.
local core = require "loom.core"
local tasks = require "loom.tasks"
local sync = require "loom.sync"
local net = require "loom.net"
local json = require "loom.json"
local app = require "loom.app"
local url = require "loom.url"
local client = require "loom.client"
local runtime = require "loom.runtime"

local loom = {
    version = core.version,
    spawn = core.spawn,
    sleep = core.sleep,
    now = core.now,
    current = core.current,
    gather = tasks.gather,
    timeout = tasks.timeout,
    queue = sync.queue,
    semaphore = sync.semaphore,
    event = sync.event,
    connect = net.connect,
    listen = net.listen,
    json = json,
    app = app.new,
    websocket = function(...) return require("loom.websocket").connect(...) end,
    url = url,
    fetch = client.fetch,
    session = client.session,
    pg = function(...) return require("loom.pg").new(...) end,
    redis = function(...) return require("loom.redis").new(...) end,
    socket = setmetatable({}, { __index = function(_, k) return require("loom.socket")[k] end }),
    ngx = setmetatable({}, { __index = function(_, k) return require("loom.ngx")[k] end }),
    null = core.null, -- the one null value: the same as loom.json.null (cjson.null)
    crypto = core.crypto,
    cookie_session = function(...) return require("loom.cookie_session")(...) end,
    csrf = function(...) return require("loom.csrf")(...) end,
    cors = function(...) return require("loom.cors")(...) end,
    secure_headers = function(...) return require("loom.secure_headers")(...) end,
    every = runtime.every,
    fs = runtime.fs,
    process = runtime.process,
    signal = runtime.signal,
    udp = runtime.udp,
    shared = runtime.shared,
    limit = function(...) return require("loom.limit")(...) end,
}

-- loom.run(fn, ...) -> fn's results. Runs fn as the main task and drives the loop until
-- no work is left (for stock lua; the loom host does this for its script).
function loom.run(fn, ...)
    if type(fn) ~= "function" then
        error("bad argument #1 to 'run' (function expected, got " .. type(fn) .. ")", 2)
    end
    local r = table.pack(core.run(fn, ...))
    local exiting, code = core.exit_status()
    if exiting then os.exit(code, true) end
    return table.unpack(r, 1, r.n)
end

-- loom.exit([code]): ends the process with code (default 0) once the loop stops.
function loom.exit(code)
    if code ~= nil and math.type(code) ~= "integer" and type(code) ~= "boolean" then
        error("bad argument #1 to 'exit' (integer expected, got " .. type(code) .. ")", 2)
    end
    if core.in_task() then
        return core.exit(code)
    end
    os.exit(code, true)
end

return loom
