-- loom.net: TCP streams and the raw TCP server, over the C stream type (src/io/stream.c);
-- loom.connect resolves and races the addresses as the client does (loom.dial: Happy
-- Eyeballs over loom.resolver).
local core = require "loom.core"
local args = require "loom.args"
local dial = require "loom.dial"

local M = {}
local now = core.now
local format = string.format

-- A port number (or a string of one); `opt` names the option it came from, if any.
local function check_port(port, fname, n, allow_zero, opt)
    local what = opt and format("option '%s': ", opt) or ""
    if math.type(port) ~= "integer" then
        if type(port) == "string" and tonumber(port) then
            port = math.tointeger(tonumber(port))
        end
        if math.type(port) ~= "integer" then
            args.fail(fname, n, what .. "integer port expected, got " .. type(port), 2)
        end
    end
    if port < (allow_zero and 0 or 1) or port > 65535 then
        args.fail(fname, n, what .. "port out of range", 2)
    end
    return port
end
M.check_port = check_port

local CONNECT_OPTS = { timeout = true, read_timeout = true, tls = true }
local LISTEN_OPTS = { host = true, port = true, handler = true, backlog = true }

-- loom.connect(host, port [, opts]) -> stream | nil, err
-- opts: timeout (whole connect, default 10), read_timeout (each later read and write; none)
function M.connect(host, port, opts)
    args.check(host, "string", "connect", 1)
    port = check_port(port, "connect", 2)
    opts = args.known(args.opts(opts, "connect", 3), CONNECT_OPTS, "connect", 3)
    local timeout = args.timeout(opts, "timeout", 10, "connect", 3)
    local io_timeout = args.timeout(opts, "read_timeout", nil, "connect", 3)
    if opts.tls ~= nil and opts.tls ~= false then
        args.opt(opts, "tls", "table", nil, "connect", 3)
        if not core.tls_wrap then return nil, "tls: TLS is not available in this build" end
    end
    args.need_task("connect", 1)
    local deadline = timeout and now() + timeout
    local st, err = dial.connect(host, port, timeout)
    if not st then return nil, err end
    if io_timeout then st:settimeout(io_timeout) end
    if opts.tls and core.tls_wrap then
        return core.tls_wrap(st, host, opts.tls, deadline and deadline - now())
    end
    return st
end

-- loom.listen{ host = "0.0.0.0", port, handler = function(stream) ... end, backlog = 511 }
-- -> listener (listener.port, listener:close()) | nil, err. Each connection runs
-- handler(stream) in a task of its own.
function M.listen(opts)
    args.check(opts, "table", "listen", 1)
    args.known(opts, LISTEN_OPTS, "listen", 1)
    local host = args.opt(opts, "host", "string", "0.0.0.0", "listen", 1)
    local port = opts.port
    if port == nil then args.fail("listen", 1, "option 'port': integer expected, got nil") end
    port = check_port(port, "listen", 1, true, "port")
    local handler = opts.handler
    if type(handler) ~= "function" then
        args.fail("listen", 1, "option 'handler': function expected, got " .. type(handler))
    end
    local backlog = args.opt(opts, "backlog", "number", 511, "listen", 1)
    if math.type(backlog) ~= "integer" or backlog < 0 then
        args.fail("listen", 1, "option 'backlog': non-negative integer expected, got " .. tostring(backlog))
    end
    if host == "localhost" then host = "127.0.0.1" end
    return core.tcp_listen(host, port, handler, backlog)
end

return M
