-- loom.net: TCP and unix-domain streams and the raw server, over the C stream type
-- (src/io/stream.c); loom.connect resolves and races the addresses as the client does
-- (loom.dial: Happy Eyeballs over loom.resolver).
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
local PATH_OPTS = { path = true, timeout = true, read_timeout = true, tls = true }
local LISTEN_OPTS = { host = true, port = true, handler = true, backlog = true }
local LISTEN_PATH_OPTS = { path = true, mode = true, handler = true, backlog = true }

-- The end of a connect: read_timeout, then TLS when asked (name: what the certificate must
-- show, unless opts.tls.server_name says otherwise).
local function finish(st, opts, name, timeout, deadline, n)
    local io_timeout = args.timeout(opts, "read_timeout", nil, "connect", n)
    if io_timeout then st:settimeout(io_timeout) end
    if opts.tls then
        return core.tls_wrap(st, name, opts.tls, deadline and deadline - now())
    end
    return st
end

local function check_tls(opts, n)
    if opts.tls ~= nil and opts.tls ~= false then args.opt(opts, "tls", "table", nil, "connect", n) end
end

-- loom.connect{ path = "/run/x.sock", timeout, read_timeout, tls } -> stream | nil, err: a
-- unix-domain socket.
local function connect_path(opts)
    args.known(opts, PATH_OPTS, "connect", 1)
    local path = opts.path
    if type(path) ~= "string" or path == "" then
        args.fail("connect", 1, "option 'path': non-empty string expected, got " .. type(path))
    end
    local timeout = args.timeout(opts, "timeout", 10, "connect", 1)
    args.timeout(opts, "read_timeout", nil, "connect", 1)
    check_tls(opts, 1)
    args.need_task("connect", 1)
    local deadline = timeout and now() + timeout
    local st, err = core.pipe_connect(path, timeout)
    if not st then return nil, err end
    return finish(st, opts, opts.tls and opts.tls.server_name or "localhost", timeout, deadline, 1)
end

-- loom.connect(host, port [, opts]) -> stream | nil, err
-- opts: timeout (whole connect, default 10), read_timeout (each later read and write; none)
-- loom.connect{ path = "/run/x.sock", ... }: a unix-domain socket, the same options.
function M.connect(host, port, opts)
    if type(host) == "table" and port == nil and opts == nil then return connect_path(host) end
    args.check(host, "string", "connect", 1)
    port = check_port(port, "connect", 2)
    opts = args.known(args.opts(opts, "connect", 3), CONNECT_OPTS, "connect", 3)
    local timeout = args.timeout(opts, "timeout", 10, "connect", 3)
    args.timeout(opts, "read_timeout", nil, "connect", 3)
    check_tls(opts, 3)
    args.need_task("connect", 1)
    local deadline = timeout and now() + timeout
    local st, err = dial.connect(host, port, timeout)
    if not st then return nil, err end
    return finish(st, opts, host, timeout, deadline, 3)
end

local function check_handler(opts)
    local handler = opts.handler
    if type(handler) ~= "function" then
        args.fail("listen", 1, "option 'handler': function expected, got " .. type(handler))
    end
    local backlog = args.opt(opts, "backlog", "number", 511, "listen", 1)
    if math.type(backlog) ~= "integer" or backlog < 0 then
        args.fail("listen", 1, "option 'backlog': non-negative integer expected, got " .. tostring(backlog))
    end
    return handler, backlog
end

-- loom.listen{ path = "/run/x.sock", mode = "0660", handler, backlog }: a unix-domain socket
-- (a stale socket file is replaced, a live one is nil, "listen: ..."; close removes it).
local function listen_path(opts)
    args.known(opts, LISTEN_PATH_OPTS, "listen", 1)
    local path = opts.path
    if type(path) ~= "string" or path == "" then
        args.fail("listen", 1, "option 'path': non-empty string expected, got " .. type(path))
    end
    local mode = opts.mode
    if mode ~= nil then
        local m = type(mode) == "string" and mode:find("^0?[0-7][0-7][0-7]$") and tonumber(mode, 8)
        if not m then args.fail("listen", 1, "option 'mode': octal string expected (\"0660\"), got " .. tostring(mode)) end
        mode = m
    end
    local handler, backlog = check_handler(opts)
    return core.pipe_listen(path, handler, backlog, mode)
end

-- loom.listen{ host = "0.0.0.0", port, handler = function(stream) ... end, backlog = 511 }
-- -> listener (listener.port, listener:close()) | nil, err. Each connection runs
-- handler(stream) in a task of its own. loom.listen{ path, mode, handler }: a unix socket
-- (listener.path).
function M.listen(opts)
    args.check(opts, "table", "listen", 1)
    if opts.path ~= nil then return listen_path(opts) end
    args.known(opts, LISTEN_OPTS, "listen", 1)
    local host = args.opt(opts, "host", "string", "0.0.0.0", "listen", 1)
    local port = opts.port
    if port == nil then args.fail("listen", 1, "option 'port': integer expected, got nil") end
    port = check_port(port, "listen", 1, true, "port")
    local handler, backlog = check_handler(opts)
    if host == "localhost" then host = "127.0.0.1" end
    return core.tcp_listen(host, port, handler, backlog)
end

return M
